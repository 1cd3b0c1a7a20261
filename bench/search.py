"""Search strategies at equal compute on digits: hypervolume vs trials and vs compute.

    python bench/search.py [--seeds 5] [--budget 24] [--strategies random,nsga2,...]

Every strategy searches the default space (MoE ResNet-8 on digits; epochs fixed at 6 so
that successive halving can cut them) with the same budget of training epochs:
``--budget`` full trials' worth. Full-fidelity strategies run ``--budget`` trials; the
multi-fidelity one (NSGA-II proposing, successive halving on epochs with Pareto promotion,
rungs at 2 epochs, reduction factor 3) runs trials until it has spent the same epochs.

Printed per strategy, mean ± std over seeds: the hypervolume of the front (val accuracy %,
active MMACs, robust accuracy %) against one reference point for all runs, after a
quarter, half, three quarters and all of the epochs budget, of ``--budget`` trials, and of
the mean wall time of the runs (each trial's whole wall time: building, FLOPs, training,
rung and final evaluation, saving), then what each strategy spent. The last table gives,
for each strategy, the share of the budget it needed to reach the final hypervolume of
full-fidelity NSGA-II of the same seed (or "-" if it never did).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from automoe.results import TrialRecord, pareto_trials, study_hypervolume
from automoe.search import TrialRunner, make_sampler, run_search
from automoe.space import SearchSpace, resolve_space_path
from automoe.storage import AtomicFileSystemArtifactStore

EPOCHS = 6
STRATEGIES = {  # name -> (sampler, successive halving)
    "random": ("random", False),
    "nsga2": ("nsga2", False),
    "tpe": ("tpe", False),
    "nni-evolution": ("nni-evolution", False),
    "nsga2+sh": ("nsga2", True),
}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def bench_space(fidelity: bool, name: str = "default") -> SearchSpace:
    raw = SearchSpace.from_file(resolve_space_path(name)).raw
    raw = {**raw, "params": {**raw["params"], "epochs": EPOCHS}}
    raw["fidelity"] = {"min_epochs": 2, "reduction_factor": 3} if fidelity else None
    return SearchSpace.from_dict(raw, source="bench")


def run(strategy: str, seed: int, budget_epochs: int, workdir: Path,
        space_name: str = "default") -> list[dict]:
    """One search; returns one row per finished trial with the cumulative cost and front."""
    sampler_name, fidelity = STRATEGIES[strategy]
    space = bench_space(fidelity, space_name)
    sampler = make_sampler({**space.sampler, "name": sampler_name}
                           if sampler_name == space.sampler["name"] else sampler_name, seed, space)
    storage = optuna.storages.InMemoryStorage()
    store = AtomicFileSystemArtifactStore(workdir / f"{strategy}-{seed}")
    runner = TrialRunner(space, store)  # built once: its data is loaded once
    epochs = 0
    seconds = 0.0
    rows = []
    while epochs < budget_epochs:
        study = run_search(space, storage, study_name=strategy.replace("+", "-"), trials=1,
                           sampler=sampler, seed=seed, artifact_store=store, objective=runner)
        trial = study.trials[-1]
        record = TrialRecord(trial)
        epochs += record.epochs_trained or len(record.history)
        # wall time of the whole trial: building, FLOPs, training, rungs, evaluation, saving
        seconds += (trial.datetime_complete - trial.datetime_start).total_seconds()
        front = [tuple(t.values) for t in pareto_trials(study)]
        rows.append({"trials": len(study.trials), "epochs": epochs, "seconds": seconds,
                     "front": front, "state": trial.state.name})
    return rows


def hv_at(rows: list[dict], key: str, limit: float, reference) -> float:
    """Hypervolume of the front once ``key`` (trials, epochs, seconds) reached ``limit``."""
    front = []
    for row in rows:
        if row[key] <= limit + 1e-9:
            front = row["front"]
    return study_hypervolume(front, reference)


def mean_std(values: list[float], fmt: str = "{:,.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=24, help="full-fidelity trials of budget")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--overhead", action="store_true",
                        help="only time each strategy's sampler: --budget trials of the space "
                             "with a stand-in objective (no training), per seed")
    parser.add_argument("--space", default="default",
                        help="a shipped space's name or a file, e.g. cluttered_digits")
    parser.add_argument("--cache", default=None, metavar="JSON",
                        help="keep each finished run here and reuse it on a rerun (a long "
                             "benchmark that stops halfway loses nothing)")
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    console = Console(width=150)
    if args.overhead:
        console.print(sampler_overhead(strategies, args.space, args.budget, args.seeds))
        return
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; space "
                  f"{args.space}; budget {args.budget} x {EPOCHS} epochs; seeds {args.seeds}")
    budget = args.budget * EPOCHS
    results: dict[str, list[list[dict]]] = {}
    started = time.perf_counter()
    cache_path = Path(args.cache) if args.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            results[strategy] = []
            for seed in range(args.seeds):
                key = f"{strategy}/{seed}/{args.budget}"
                if args.space != "default":
                    key = f"{args.space}/{key}"
                if key not in cache:
                    cache[key] = run(strategy, seed, budget, Path(tmp), args.space)
                    if cache_path:
                        partial = cache_path.with_suffix(".tmp")
                        partial.write_text(json.dumps(cache))
                        partial.replace(cache_path)
                results[strategy].append(cache[key])
                console.print(f"{strategy} seed {seed}: {len(results[strategy][-1])} trials, "
                              f"{time.perf_counter() - started:.0f}s so far")
    all_points = [p for runs in results.values() for rows in runs for p in rows[-1]["front"]]
    reference = (0.0, 1.1 * max(p[1] for p in all_points), 0.0)

    ref_text = f"reference val 0 %, {reference[1]:.3f} MMACs, robust 0 %"
    full_seconds = statistics.mean(rows[-1]["seconds"] for runs in results.values()
                                   for rows in runs)
    axes = [("epochs", "epochs trained", [f * budget for f in FRACTIONS], "{:.0f} ep"),
            ("trials", "trials run", [f * args.budget for f in FRACTIONS], "{:.0f} trials"),
            ("seconds", "wall seconds of the trials",
             [f * full_seconds for f in FRACTIONS], "{:.0f} s")]
    limits_epochs = axes[0][2]
    for key, label, limits, fmt in axes:
        console.print(f"\n[bold]hypervolume vs {label}[/] ({ref_text}), mean ± std over "
                      f"{args.seeds} seeds")
        table = Table()
        table.add_column("strategy")
        for limit in limits:
            table.add_column(fmt.format(limit), justify="right")
        for strategy, runs in results.items():
            table.add_row(strategy, *(mean_std([hv_at(rows, key, limit, reference)
                                                for rows in runs]) for limit in limits))
        console.print(table)
    console.print("\n[bold]spent at the end of the epochs budget[/]")
    table = Table()
    for col in ("strategy", "trials", "pruned", "epochs", "wall s"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for strategy, runs in results.items():
        table.add_row(strategy, mean_std([len(rows) for rows in runs], "{:.1f}"),
                      mean_std([sum(r["state"] == "PRUNED" for r in rows) for rows in runs],
                               "{:.1f}"),
                      mean_std([rows[-1]["epochs"] for rows in runs], "{:.1f}"),
                      mean_std([rows[-1]["seconds"] for rows in runs], "{:.0f}"))
    console.print(table)

    for baseline in ("random", "nsga2"):
        if baseline not in results or args.seeds < 2:
            continue
        console.print(f"\n[bold]hypervolume minus {baseline}'s at equal epochs, paired by seed[/] "
                      "(mean ± std of the per-seed differences; a mean inside its std is no "
                      "measurable difference)")
        table = Table()
        table.add_column("strategy")
        for limit in limits_epochs:
            table.add_column(f"{limit:.0f} ep", justify="right")
        for strategy, runs in results.items():
            if strategy == baseline:
                continue
            table.add_row(strategy, *(mean_std([
                hv_at(rows, "epochs", limit, reference)
                - hv_at(results[baseline][seed], "epochs", limit, reference)
                for seed, rows in enumerate(runs)]) for limit in limits_epochs))
        console.print(table)

    if "nsga2" in results:
        console.print("\n[bold]share of the budget needed to reach full-fidelity NSGA-II's "
                      "final hypervolume[/] (same seed; one value per seed)")
        table = Table()
        table.add_column("strategy")
        table.add_column("epochs", justify="right")
        table.add_column("wall seconds", justify="right")
        for strategy, runs in results.items():
            epoch_shares, second_shares = [], []
            for seed, rows in enumerate(runs):
                target = study_hypervolume(results["nsga2"][seed][-1]["front"], reference)
                full_seconds = results["nsga2"][seed][-1]["seconds"]
                hit = next((r for r in rows if study_hypervolume(r["front"], reference)
                            >= target - 1e-9), None)
                epoch_shares.append(math.nan if hit is None else hit["epochs"] / budget)
                second_shares.append(math.nan if hit is None else hit["seconds"] / full_seconds)
            table.add_row(strategy, *(" ".join("-" if math.isnan(v) else f"{v:.2f}"
                                               for v in shares)
                                      for shares in (epoch_shares, second_shares)))
        console.print(table)
    if "random" in results and args.seeds > 1:
        for key in ("epochs", "seconds"):
            console.print(speedup_table(results, reference, args.seeds, key))
    console.print(f"total {time.perf_counter() - started:.0f}s")


def sampler_overhead(strategies: list[str], space_name: str, budget: int, seeds: int) -> Table:
    """Milliseconds a strategy's sampler takes per trial over ``budget`` trials (ask and
    tell around a stand-in objective that draws the space's parameters and returns
    numbers), mean ± std over seeds: what the sampler adds to a search whose trials train."""
    import random as _random

    space = bench_space(False, space_name)
    table = Table(title=f"sampler time per trial over {budget} trials of {space_name}, "
                        f"{seeds} seeds (ms, mean ± std)")
    table.add_column("strategy")
    table.add_column("ms per trial", justify="right")
    for strategy in strategies:
        per_trial = []
        for seed in range(seeds):
            sampler_name, _ = STRATEGIES[strategy]
            sampler = make_sampler({**space.sampler, "name": sampler_name}
                                   if sampler_name == space.sampler["name"] else sampler_name,
                                   seed, space)
            study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                        sampler=sampler)
            rng = _random.Random(seed)
            started = time.perf_counter()
            for _ in range(budget):
                trial = study.ask()
                space.suggest(trial)
                study.tell(trial, [rng.random(), rng.random(), rng.random()])
            per_trial.append(1000 * (time.perf_counter() - started) / budget)
        table.add_row(strategy, mean_std(per_trial, "{:.1f}"))
    return table


def _volume_curve(rows: list[dict], reference, grid: list[float], key: str) -> list[float]:
    """The run's hypervolume at each compute value of ``grid`` (its latest before it)."""
    volumes = [study_hypervolume(r["front"], reference) for r in rows]
    out, i = [], -1
    for compute in grid:
        while i + 1 < len(rows) and rows[i + 1][key] <= compute + 1e-9:
            i += 1
        out.append(volumes[i] if i >= 0 else 0.0)
    return out


def _speedup(base_finals: list[tuple[float, float]], curves: list[list[float]], grid) -> float:
    """C / the wall seconds at which the mean of ``curves`` (hypervolume on ``grid``) reaches
    random's mean final hypervolume, C being random's mean final wall seconds
    (``base_finals``: random's (seconds, hypervolume) per seed; the definition of
    bench/search_table.py, on measured seconds); NaN if it never does."""
    compute = statistics.mean(c for c, _ in base_finals)
    target = statistics.mean(v for _, v in base_finals)
    mean = [statistics.mean(column) for column in zip(*curves, strict=True)]
    reached = next((g for g, v in zip(grid, mean, strict=True) if v >= target - 1e-9), None)
    return compute / reached if reached else math.nan


def speedup_table(results: dict, reference, seeds: int, key: str,
                  bootstrap: int = 1000) -> Table:
    """Each strategy's speed-up over random at random's final hypervolume, on ``key``
    ("epochs" trained, or measured wall "seconds"), with a 95 % bootstrap interval (seeds
    resampled in both arms), and the share of seeds whose own run reaches random's mean
    final hypervolume within C/5."""
    import random as _random

    longest = max(rows[-1][key] for runs in results.values() for rows in runs)
    grid = [longest * (i + 1) / 200 for i in range(200)]
    curves = {s: [_volume_curve(rows, reference, grid, key) for rows in runs]
              for s, runs in results.items()}
    finals = [(rows[-1][key], study_hypervolume(rows[-1]["front"], reference))
              for rows in results["random"]]
    compute = statistics.mean(c for c, _ in finals)
    target = statistics.mean(v for _, v in finals)
    rng = _random.Random(0)
    unit = "epochs trained" if key == "epochs" else "wall seconds of the trials"
    table = Table(title=f"speed-up over random at random's final hypervolume ({unit}), "
                        f"{seeds} seeds, 95 % bootstrap interval")
    for column in ("strategy", "speed-up", "95 % interval", "seeds within C/5"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for strategy, runs in results.items():
        value = _speedup(finals, curves[strategy], grid)
        # a resample whose mean curve never reaches random's counts as 0 (below any ratio)
        boots = sorted(0.0 if math.isnan(v) else v for v in (
            _speedup([rng.choice(finals) for _ in finals],
                     [rng.choice(curves[strategy]) for _ in runs], grid)
            for _ in range(bootstrap)))
        low, high = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
        reached = sum(v > 0 for v in boots)
        interval = escape(f"[{'never' if low == 0 else f'{low:.2f}'}, {high:.2f}]")
        within = sum(any(study_hypervolume(r["front"], reference) >= target - 1e-9
                         for r in rows if r[key] <= compute / 5) for rows in runs)
        table.add_row(strategy, "-" if math.isnan(value) else f"{value:.2f}x",
                      f"{interval} ({reached} of {bootstrap} resamples reach it)",
                      f"{within}/{len(runs)}")
    return table


if __name__ == "__main__":
    main()
