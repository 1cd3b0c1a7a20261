"""Per-trial overhead of a study as it grows: everything outside the objective.

    python bench/overhead.py [--trials 10000] [--sampler nsga2] [--storage URL]

Runs a study of the default space on SQLite (a fresh file unless ``--storage``) through
what ``automoe search`` runs around every trial: the sampler's ``ask``, ``tell``, the
progress line of each finished trial and checkpoint retention (``--keep pareto``). The
objective stands in for an evaluation: it samples the candidate, stores user attributes of
a real trial's size and a small checkpoint artifact, and returns three values. Prints the
median time between two trials (one objective's end to the next one's start), in wall
time and in this process's CPU time (which other load on the machine does not inflate),
at ``--windows`` points of the study's size, and the ratios to the first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.artifacts import upload_artifact
from rich.console import Console
from rich.table import Table

from automoe.results import TrialWriter, trial_row
from automoe.search import run_search
from automoe.space import SearchSpace, resolve_space_path
from automoe.storage import AtomicFileSystemArtifactStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--sampler", default="nsga2")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--windows", type=int, nargs="+", default=[100, 1000, 10000],
                        help="study sizes to report at (median over the 50 trials before)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="automoe-overhead-"))
    url = args.storage or f"sqlite:///{workdir / 'overhead.db'}"
    store = AtomicFileSystemArtifactStore(workdir / "artifacts")
    space = SearchSpace.from_file(resolve_space_path("default"))
    names = space.objectives
    rng = random.Random(0)
    weights = workdir / "weights.bin"
    weights.write_bytes(b"\0" * 4096)
    starts: list[tuple[float, float]] = []  # (wall, CPU time of this process)
    ends: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        starts.append((time.perf_counter(), time.process_time()))
        candidate = space.suggest(trial)
        # what a real trial writes, through the same record
        record = TrialWriter(trial)
        record.started(candidate.to_dict(), candidate.architecture(), {"name": "digits"},
                       {"host": "bench"}, supernet=False)
        record.training([{"epoch": e, "loss": rng.random(), "aux_loss": 0.0,
                          "train_accuracy": rng.random(), "expert_use": 0.9}
                         for e in range(8)], 8)
        record.costs({"active": 3e6, "dense": 9e6}, {})
        record.routers({f"layer{i}": {"effective_experts": 3.9} for i in range(4)}, {}, None)
        artifact = upload_artifact(artifact_store=store, file_path=str(weights),
                                   study_or_trial=trial)
        record.checkpoint(artifact, "0")
        experts = candidate.model["num_experts"]
        values = (90 + 5 * rng.random() - experts / 4, 0.5 * experts + rng.random(),
                  50 * rng.random())
        ends.append((time.perf_counter(), time.process_time()))
        return values

    def progress(study, trial):  # what the progress bar does with each finished trial
        if trial.values is not None:
            trial_row(trial, names)

    console = Console()
    done = 0
    with console.status("running trials") as status:
        while done < args.trials:
            chunk = min(500, args.trials - done)
            # one study, resumed per chunk; keep=pareto adds the checkpoint retention
            run_search(space, url, study_name="overhead", trials=chunk, sampler=args.sampler,
                       artifact_store=store, keep="pareto", objective=objective,
                       callbacks=[progress])
            done += chunk
            status.update(f"{done} trials")
    wall = [starts[i + 1][0] - ends[i][0] for i in range(len(ends) - 1)]
    cpu = [starts[i + 1][1] - ends[i][1] for i in range(len(ends) - 1)]
    table = Table(title=f"time between trials, {args.sampler}, {url.split(':')[0]}, "
                        f"{args.trials} trials", title_justify="left")
    for col in ("trials in the study", "wall ms (median)", "vs first", "CPU ms (median)",
                "vs first"):
        table.add_column(col, justify="right")
    first = None
    for window in args.windows:
        if window > len(wall) + 1:
            continue
        part = slice(max(0, window - 50), window)
        medians = (1e3 * statistics.median(wall[part]), 1e3 * statistics.median(cpu[part]))
        first = first or medians
        table.add_row(f"{part.start}-{window}", f"{medians[0]:.1f}",
                      f"{medians[0] / first[0]:.2f}x", f"{medians[1]:.1f}",
                      f"{medians[1] / first[1]:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
