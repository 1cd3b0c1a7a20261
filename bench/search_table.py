"""Search strategies on the tabular benchmark of automoe's own space (bench/moe_table.py):
hypervolume against compute, many seeds, in minutes.

    python bench/search_table.py [--seeds 30] [--budgets 24,100] [--workers 1]
                                 [--strategies random,tpe,...] [--bootstrap 2000]

A strategy "trains" a configuration by reading its table row (the training seed drawn per
trial from the row's seeds) and is charged the seconds the row measured for everything it
ran: the epochs it trained, each evaluation and attack, the MACs count, and the epochs of
runs it stopped early. Compute is those seconds summed (over workers too).

**Speed-up.** Random search's full-fidelity trials cost, on average, C(B) after B trials.
A strategy's speed-up at B is C(B) divided by the compute at which the strategy's mean
hypervolume curve (over seeds) first reaches random's mean hypervolume at B; its 95 %
interval comes from resampling the seeds of both arms (bootstrap). Also printed: the share
of the strategy's seeds that reach random's mean hypervolume at B within C(B) / 5.

**Strategies** are a sampler (Optuna's, through ``automoe.search.make_sampler``, over the
table's grid) plus any of these ways to spend less per useful answer:

- ``ladder``: rungs at epochs 2 and 4 (or as given) where a run goes on only if it is in
  the top 1/eta of the runs at that rung by non-dominated sorting of (val accuracy, MMACs,
  PGD-1 robust accuracy at the rung); the others stop there (charged what they ran);
- ``skip``: the final attack (PGD-10) only for a run that could still reach the front:
  robust accuracy is at most clean accuracy, so a run whose (val, MMACs, robust = val) is
  dominated by the front is dominated whatever its robust value, and is not attacked;
- ``cheap-first``: PGD-1 on every run at the end, PGD-10 only where (val, MMACs, PGD-1)
  is not dominated: PGD-1 accuracy stands for an upper bound of PGD-10's, which is the
  rule but not a guarantee, so a run not attacked is left off the front;
- ``share``: an upcycled MoE's dense phase depends on width, lr and seed only; trained
  once, it is charged once (the table shows whether the twins are indeed identical).

Hypervolume is over the complete runs' table values (val accuracy at the last epoch,
active MMACs, PGD-10 robust accuracy) against one reference point: 0 %, the table's
largest MMACs x 1.1, 0 %. A run that ``skip`` did not attack adds no volume whatever its
value, so its table value can be used.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from moe_table import GRID, MOE_ONLY, ROBUST_STEPS, configurations, read_table  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from automoe.results._hypervolume import hypervolume  # noqa: E402
from automoe.search import make_sampler  # noqa: E402

FINAL = f"robust_pgd{ROBUST_STEPS[-1]}"
CHEAP = f"robust_pgd{ROBUST_STEPS[0]}"

# name -> (sampler spec, options)
STRATEGIES: dict[str, tuple[dict, dict]] = {
    "random": ({"name": "random"}, {}),
    "nsga2": ({"name": "nsga2", "population_size": 8}, {}),
    "tpe": ({"name": "tpe"}, {}),
    "tpe-mv": ({"name": "tpe", "multivariate": True}, {}),
    "tpe-mv-s5": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5}, {}),
    "random+skip": ({"name": "random"}, {"skip": True}),
    "random+cheap-first": ({"name": "random"}, {"skip": True, "cheap": True}),
    "random+share": ({"name": "random"}, {"share": True}),
    "random+ladder": ({"name": "random"}, {"ladder": (2, 4)}),
    "tpe-mv-s5+skip+share": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5},
                             {"skip": True, "share": True}),
    "tpe-mv-s5+share": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5},
                        {"share": True}),
    "tpe-mv-s5+cheap-first+share": ({"name": "tpe", "multivariate": True,
                                     "n_startup_trials": 5},
                                    {"skip": True, "cheap": True, "share": True}),
    "random+ladder6": ({"name": "random"}, {"ladder": (6,)}),
    "tpe-mv-s5+all": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5},
                      {"skip": True, "share": True, "ladder": (2, 4)}),
    "tpe-mv-s5+all6": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5},
                       {"skip": True, "share": True, "ladder": (6,)}),
    # for asynchronous workers: the running trials' values are assumed bad (constant liar)
    "tpe-mv-s5-cl+skip+share": ({"name": "tpe", "multivariate": True, "n_startup_trials": 5,
                                 "constant_liar": True}, {"skip": True, "share": True}),
}


def canonical(config: dict) -> dict:
    """A dense placement's MoE fields at the table's values (it ignores them)."""
    if config["placement"] == "none":
        return {**config, **{name: GRID[name][0] for name in MOE_ONLY}}
    return config


def _key(config: dict) -> str:
    return json.dumps(canonical(config), sort_keys=True)


class TableLookup:
    """The table's rows by configuration and seed."""

    def __init__(self, rows: list[dict]):
        self.rows: dict[str, dict[int, dict]] = {}
        for row in rows:
            self.rows.setdefault(_key(row["config"]), {})[row["seed"]] = row
        self.max_mmacs = max(row["mmacs"] for row in rows)
        self.reference = (0.0, 1.1 * self.max_mmacs, 0.0)

    def expected_full_cost(self) -> float:
        """Seconds of a full run of a uniformly drawn grid point (seeds alike)."""
        costs = []
        for values in itertools.product(*GRID.values()):
            seeds = self.rows.get(_key(dict(zip(GRID, values, strict=True))))
            if seeds:  # a table still being built lacks some
                costs.append(np.mean([full_cost(row) for row in seeds.values()]))
        return float(np.mean(costs))

    def missing(self) -> int:
        """Configurations of the grid with no row yet."""
        return sum(_key(c) not in self.rows for c in configurations())

    def row(self, config: dict, rng: np.random.Generator) -> dict | None:
        seeds = self.rows.get(_key(config))
        if not seeds:
            return None
        return seeds[sorted(seeds)[int(rng.integers(len(seeds)))]]


def full_cost(row: dict) -> float:
    """A full-fidelity trial: every epoch, the final val pass and attack, the MACs count."""
    last = row["curve"][-1]
    return (sum(e["train_seconds"] for e in row["curve"]) + last["val_seconds"]
            + last[f"{FINAL}_seconds"] + row["macs_seconds"])


def minimised(point) -> tuple[float, float, float]:
    val, mmacs, robust = point
    return (-val, mmacs, -robust)


def front_volume(points: list[tuple], reference) -> float:
    if not points:
        return 0.0
    return hypervolume([minimised(p) for p in points], minimised(reference))


def dominated(point, front: list[tuple]) -> bool:
    a = minimised(point)
    return any(all(x <= y for x, y in zip(minimised(q), a, strict=True))
               and any(x < y for x, y in zip(minimised(q), a, strict=True)) for q in front)


def nondominated(points: list[tuple]) -> list[tuple]:
    return [p for p in points if not dominated(p, points)]


def front_rank(points: list[tuple]) -> np.ndarray:
    """Non-dominated sorting: each point's front index (0 = the first front)."""
    p = np.asarray([minimised(q) for q in points])
    # beats[i, j]: point j dominates point i
    beats = (p[None, :, :] <= p[:, None, :]).all(-1) & (p[None, :, :] < p[:, None, :]).any(-1)
    ranks = np.full(len(p), -1)
    left = np.ones(len(p), dtype=bool)
    level = 0
    while left.any():
        current = left & ~(beats & left[None, :]).any(1)
        ranks[current] = level
        left &= ~current
        level += 1
    return ranks


@dataclass
class Run:
    """One strategy run: its compute and front as runs finish."""

    compute: list[float] = field(default_factory=list)  # cumulative seconds at each event
    volume: list[float] = field(default_factory=list)  # hypervolume then
    trials: int = 0
    complete: int = 0
    attacks_skipped: int = 0
    stopped: int = 0
    shared_seconds: float = 0.0


def simulate(table: TableLookup, spec: dict, options: dict, seed: int, compute_budget: float,
             workers: int = 1, eta: int = 3) -> Run:
    """One run of a strategy until ``compute_budget`` seconds are spent, ``workers`` runs
    at once (asynchronous: a free worker asks for the next candidate at once)."""
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = make_sampler(spec, seed)
        study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                    sampler=sampler)
    distributions = {name: optuna.distributions.CategoricalDistribution(values)
                     for name, values in GRID.items()}
    rungs = tuple(options.get("ladder", ())) + (8,)
    at_rung: dict[int, list[tuple]] = {r: [] for r in rungs[:-1]}
    dense_done: dict[tuple, int] = {}  # (width, lr, seed) -> dense epochs already trained
    front: list[tuple] = []
    run = Run()
    spent = 0.0
    clock = 0.0
    events: list = []  # (finish time, order, trial, row, stage)
    order = 0

    def stage_cost(row: dict, start: int, end: int, final: bool, attack: bool) -> float:
        curve = row["curve"]
        seconds = 0.0
        dense_key = (row["config"]["width_multiplier"], row["config"]["lr"], row["seed"])
        moe = row["config"]["placement"] != "none"
        for epoch in range(start + 1, end + 1):
            entry = curve[epoch - 1]
            if options.get("share") and moe and entry["dense_phase"] and \
                    epoch <= dense_done.get(dense_key, 0):
                run.shared_seconds += entry["train_seconds"]
                continue
            seconds += entry["train_seconds"]
        if options.get("share") and moe:
            dense_epochs = sum(e["dense_phase"] for e in curve[:end])
            dense_done[dense_key] = max(dense_done.get(dense_key, 0), dense_epochs)
        entry = curve[end - 1]
        seconds += entry["val_seconds"]
        if not final or options.get("cheap"):
            seconds += entry[f"{CHEAP}_seconds"]
        if final and attack:
            seconds += entry[f"{FINAL}_seconds"]
        if start == 0:
            seconds += row["macs_seconds"]
        return seconds

    def start_trial() -> None:
        nonlocal order, spent
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(distributions)
        row = table.row(canonical(trial.params), rng)
        while row is None:  # not in a table still being built: as if it were not in the grid
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask(distributions)
            row = table.row(canonical(trial.params), rng)
        run.trials += 1
        schedule(trial, row, 0)

    def schedule(trial, row, stage: int) -> None:
        nonlocal order, spent
        start = 0 if stage == 0 else rungs[stage - 1]
        end = rungs[stage]
        final = stage == len(rungs) - 1
        attack = True
        if final and options.get("skip"):
            last = row["curve"][-1]
            # robust accuracy is at most clean accuracy; or, with "cheap", at most (as a
            # rule, not a bound) the PGD-1 accuracy, which is then measured first
            bound = last[CHEAP] if options.get("cheap") else last["val_accuracy"]
            attack = not dominated((last["val_accuracy"], row["mmacs"], bound), front)
        cost = stage_cost(row, start, end, final, attack)
        spent += cost
        heapq.heappush(events, (clock + cost, order, trial, row, stage, attack))
        order += 1

    for _ in range(workers):
        start_trial()
    while events:
        clock, _, trial, row, stage, attack = heapq.heappop(events)
        final = stage == len(rungs) - 1
        curve = row["curve"]
        if not final:
            rung = rungs[stage]
            point = (curve[rung - 1]["val_accuracy"], row["mmacs"], curve[rung - 1][CHEAP])
            at_rung[rung].append(point)
            ranks = front_rank(at_rung[rung])
            mine = ranks[-1]
            keep = math.ceil(len(ranks) / eta)
            better = sorted(ranks)
            if mine <= better[keep - 1]:
                schedule(trial, row, stage + 1)
                continue
            run.stopped += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            last = curve[-1]
            values = (last["val_accuracy"], row["mmacs"], last[FINAL])
            told = values if attack else (values[0], values[1], values[0])
            run.attacks_skipped += not attack
            study.tell(trial, list(told))
            run.complete += 1
            if attack:  # a run not attacked has no robust value: not on the front
                front = nondominated([*front, values])
        run.compute.append(spent)
        run.volume.append(front_volume(front, table.reference))
        if spent < compute_budget:
            start_trial()
    return run


def volume_at(run: Run, compute: np.ndarray) -> np.ndarray:
    """The run's hypervolume at each compute value (its latest before it)."""
    spent = np.asarray(run.compute)
    volume = np.asarray(run.volume)
    index = np.searchsorted(spent, compute, side="right") - 1
    return np.where(index >= 0, volume[np.clip(index, 0, None)], 0.0)


def speedup(base: list[Run], other: list[Run], target_compute: float, grid: np.ndarray
            ) -> float:
    """C(B) / the compute at which ``other``'s mean curve reaches ``base``'s mean volume
    at ``target_compute``; NaN if it never does within the grid."""
    target = np.mean([volume_at(r, np.array([target_compute]))[0] for r in base])
    mean = np.mean([volume_at(r, grid) for r in other], axis=0)
    reached = np.nonzero(mean >= target - 1e-9)[0]
    return target_compute / grid[reached[0]] if len(reached) else float("nan")


def rank_correlations(rows: list[dict]) -> Table:
    """Spearman correlation, across the table's configurations, between a rung's value and
    the full run's (epoch 8): val accuracy, and the rung's PGD-1 against the final PGD-10;
    for all rows and for the MoE rows alone, per training seed (the fidelity ladder's
    precondition: a rung can only rank what it correlates with)."""
    from scipy.stats import spearmanr

    table = Table(title="rung-to-full rank correlation (Spearman) over the configurations")
    for column in ("rows", "seed", "epoch", "val acc -> final val acc",
                   "PGD-1 -> final PGD-10"):
        table.add_column(column, justify="left" if column == "rows" else "right")
    last = max(point["epoch"] for row in rows for point in row["curve"])
    for label, keep in (("all", lambda r: True),
                        ("MoE only", lambda r: r["config"]["placement"] != "none")):
        for seed in sorted({r["seed"] for r in rows}):
            chosen = [r for r in rows if r["seed"] == seed and keep(r)]
            final = {id(r): r["curve"][last - 1] for r in chosen}
            for epoch in sorted({p["epoch"] for r in chosen for p in r["curve"]
                                 if "robust_pgd1" in p and p["epoch"] < last}):
                rung = [r["curve"][epoch - 1] for r in chosen]
                val = spearmanr([p["val_accuracy"] for p in rung],
                                [final[id(r)]["val_accuracy"] for r in chosen]).statistic
                rob = spearmanr([p["robust_pgd1"] for p in rung],
                                [final[id(r)]["robust_pgd10"] for r in chosen]).statistic
                table.add_row(label, str(seed), str(epoch), f"{val:.2f}", f"{rob:.2f}")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budgets", default="24,100", help="full-trial equivalents B")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--workers", default="1", help="e.g. 1,4,8: simulated workers")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--rank-correlations", action="store_true",
                        help="only print the rung-to-full rank correlations of the table")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = read_table()
    if not rows:
        print("the table is empty: run `python bench/moe_table.py build` first")
        return 1
    if args.rank_correlations:
        Console(width=200).print(rank_correlations(rows))
        return 0
    table = TableLookup(rows)
    budgets = [int(b) for b in args.budgets.split(",")]
    strategies = args.strategies.split(",")
    workers_list = [int(w) for w in args.workers.split(",")]
    # random's expected full-trial cost (the grid drawn uniformly, both seeds alike): the
    # compute of B trials is B times it
    per_trial = table.expected_full_cost()
    max_compute = 1.05 * max(budgets) * per_trial
    grid = np.linspace(0, max_compute, 2000)[1:]
    console = Console(width=200)
    console.print(f"table: {len(rows)} rows, {len(table.rows)} configurations "
                  f"({table.missing()} of the grid missing), seeds "
                  f"{sorted({r['seed'] for r in rows})}; a full "
                  f"random trial costs {per_trial:.2f} s on average; seeds {args.seeds} per "
                  f"strategy; compute grid up to {max_compute:.0f} s")
    runs: dict[tuple[str, int], list[Run]] = {}
    for workers in workers_list:
        for name in strategies:
            spec, options = STRATEGIES[name]
            runs[name, workers] = [simulate(table, spec, options, seed, max_compute, workers)
                                   for seed in range(args.seeds)]
    figures = {}
    rng = np.random.default_rng(0)
    for workers in workers_list:
        out = Table(title=f"speed-up over random at equal hypervolume, {workers} worker(s), "
                          f"{args.seeds} seeds (95 % bootstrap interval)")
        out.add_column("strategy")
        for budget in budgets:
            out.add_column(f"B = {budget}")
            out.add_column(f"seeds within C/5 at {budget}")
        out.add_column("attacks skipped / runs stopped / shared s per run")
        base = runs["random", 1]
        for name in strategies:
            mine = runs[name, workers]
            cells = [name]
            for budget in budgets:
                c = budget * per_trial
                value = speedup(base, mine, c, grid)
                boot = []
                for _ in range(args.bootstrap):
                    b = [base[i] for i in rng.integers(len(base), size=len(base))]
                    m = [mine[i] for i in rng.integers(len(mine), size=len(mine))]
                    boot.append(speedup(b, m, c, grid))
                boot = np.asarray(boot)
                low, high = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(
                    boot).any() else (float("nan"), float("nan"))
                target = np.mean([volume_at(r, np.array([c]))[0] for r in base])
                within = np.mean([volume_at(r, np.array([c / 5]))[0] >= target - 1e-9
                                  for r in mine])
                cells += [f"{value:.2f}x [{low:.2f}, {high:.2f}]", f"{100 * within:.0f} %"]
                figures[f"{name}|{workers}|{budget}"] = {
                    "speedup": value, "low": low, "high": high, "within_fifth": within}
            cells.append(f"{np.mean([r.attacks_skipped for r in mine]):.1f} / "
                         f"{np.mean([r.stopped for r in mine]):.1f} / "
                         f"{np.mean([r.shared_seconds for r in mine]):.0f}")
            out.add_row(*cells)
        console.print(out)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
