"""Wall time of one search run by 1 worker against N workers on this machine.

    python bench/scaleout.py [--trials 9] [--workers 3] [--repeats 2]

Each configuration runs `automoe search` on the default space (epochs fixed at 4, so that
every trial costs the same; no verification) into a fresh SQLite study, as a user would,
and the whole command is timed (start-up, Ray's cluster start and the workers' imports
included). Repeats use different study seeds (0, 1, ...); printed: mean ± std of the wall
time, trials per minute and the speed-up against one worker with all the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def configurations(workers: int, cores: int) -> dict[str, list[str]]:
    per_worker = max(1, cores // workers)
    return {
        f"1 worker, {cores} threads": ["--threads", str(cores)],
        "1 worker, 1 thread": ["--threads", "1"],
        f"{workers} processes, {per_worker} thread each": [
            "--workers", str(workers), "--executor", "processes", "--threads", str(per_worker)],
        f"{workers} Ray workers, {per_worker} thread each": [
            "--workers", str(workers), "--executor", "ray", "--threads", str(per_worker),
            "--cpus-per-worker", f"{cores / workers:.2f}"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    space = yaml.safe_load((REPO / "search_spaces" / "default.yaml").read_text())
    space["params"]["epochs"] = 4
    console = Console(width=140)
    console.print(f"{cores} CPUs; {args.trials} trials of the default space (4 epochs); "
                  f"repeats {args.repeats} (study seeds 0..{args.repeats - 1})")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "space.yaml").write_text(yaml.safe_dump(space))
        for name, flags in configurations(args.workers, cores).items():
            results[name] = []
            for seed in range(args.repeats):
                workdir = Path(tmp) / f"{len(results)}-{seed}"
                workdir.mkdir()
                command = ["automoe", "search", "--space", str(Path(tmp) / "space.yaml"),
                           "--trials", str(args.trials), "--seed", str(seed), "--no-verify",
                           "-q", *flags]
                start = time.perf_counter()
                subprocess.run(command, cwd=workdir, check=True, capture_output=True)
                results[name].append(time.perf_counter() - start)
                console.print(f"{name}, seed {seed}: {results[name][-1]:.1f} s")
    base = statistics.mean(next(iter(results.values())))
    table = Table(title=f"{args.trials} trials, whole `automoe search` wall time")
    for col in ("configuration", "wall s", "trials / min", "speed-up vs the first"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for name, times in results.items():
        mean = statistics.mean(times)
        std = statistics.stdev(times) if len(times) > 1 else 0.0
        table.add_row(name, f"{mean:.1f} ± {std:.1f}", f"{60 * args.trials / mean:.2f}",
                      f"{base / mean:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
