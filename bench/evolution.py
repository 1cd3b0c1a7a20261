"""Does the sampler evolve the MoE dimensions? A synthetic objective on the default space.

    python bench/evolution.py [--seeds 5] [--trials 120] [--population 12]

The first objective rewards exactly one MoE design (E = 8, k = 1, as built); the second is
the sampled lr, so the front is not a single point. No training: each trial only samples
its candidate. Prints, per sampler, the share of the second half of the study that built
E = 8, k = 1 (mean ± std over seeds, and each seed). Random search hits it in about 10 %
of trials (4/5 MoE placements x 1/4 experts x 1/2 top-k).
"""

from __future__ import annotations

import argparse
import statistics

import optuna
from rich.console import Console
from rich.table import Table

from automoe.search import make_sampler
from automoe.space import SearchSpace, resolve_space_path


def rewarded_share(sampler: str, seed: int, trials: int, population: int) -> float:
    space = SearchSpace.from_file(resolve_space_path("default"))
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler({"name": sampler, "population_size": population}
                                                     if sampler.startswith("nsga") else sampler,
                                                     seed, space))

    def objective(trial):
        model = space.suggest(trial).model
        return -abs(model["num_experts"] - 8) / 2 - 3 * (model["top_k"] - 1), trial.params["lr"]

    study.optimize(objective, n_trials=trials)
    late = [t for t in study.trials if t.number >= trials // 2]
    return sum(t.values[0] == 0 for t in late) / len(late)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = Table(title=f"share of trials {args.trials // 2}-{args.trials - 1} that built "
                        f"E = 8, k = 1 (default space, population {args.population}, seeds "
                        f"0..{args.seeds - 1})", title_justify="left")
    for col in ("sampler", "mean ± std", "per seed"):
        table.add_column(col, justify="left" if col == "sampler" else "right")
    for sampler in args.samplers:
        shares = [rewarded_share(sampler, s, args.trials, args.population)
                  for s in range(args.seeds)]
        spread = statistics.stdev(shares) if len(shares) > 1 else 0.0
        table.add_row(sampler, f"{statistics.mean(shares):.2f} ± {spread:.2f}",
                      " ".join(f"{v:.2f}" for v in shares))
    Console().print(table)


if __name__ == "__main__":
    main()
