"""What several commands share: the storage and study a command works on, the device,
progress bars, and the Pareto table with its hypervolume."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import optuna
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from automoe import results
from automoe.cli._output import err, out, pareto_table, print_note, trial_line
from automoe.errors import ConfigError
from automoe.results import (
    TrialRecord,
    checkpoint_retention,
    front_hypervolume,
    pareto_trials,
    study_objectives,
    trial_row,
    verified_results,
)
from automoe.space import METRICS, parse_reference
from automoe.storage import (
    DEFAULT_STORAGE,
    AtomicFileSystemArtifactStore,
    default_artifact_dir,
    describe_url,
    load_study,
    open_storage,
)


def set_threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's CPU threads in this process."""
    if getattr(args, "threads", None) is None:
        return
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    # deferred: only commands that compute load torch
    import torch

    torch.set_num_threads(args.threads)


def quiet_optuna(args: argparse.Namespace | None = None) -> None:
    """Optuna's own log: errors only, or its INFO lines with ``-v``."""
    verbose = bool(getattr(args, "verbose", False))
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)


def storage_url(args: argparse.Namespace) -> str:
    return args.storage or DEFAULT_STORAGE


def describe_storage(args: argparse.Namespace) -> str:
    return describe_url(storage_url(args))


def artifact_dir(args: argparse.Namespace) -> Path:
    return (Path(args.artifact_dir) if args.artifact_dir
            else default_artifact_dir(storage_url(args)))


def artifact_store(args: argparse.Namespace) -> AtomicFileSystemArtifactStore:
    return AtomicFileSystemArtifactStore(artifact_dir(args))


def retention(args: argparse.Namespace):
    """The after-trial callback of ``--keep``."""
    if args.keep != "pareto":
        return lambda study, trial: None
    return checkpoint_retention(artifact_store(args))


def resume_dir(args: argparse.Namespace) -> Path:
    """Per-epoch training states, so a retried trial continues where its worker died."""
    return artifact_dir(args) / "resume"


def existing_study(args: argparse.Namespace) -> optuna.Study:
    """The study named by --study in an existing storage; without it, the only one, or the
    one that ran a trial last (named in a note, so that the choice is never silent)."""
    storage = open_storage(storage_url(args), create=False)
    study = load_study(storage, args.study, most_recent=True)
    if args.study is None and not getattr(args, "quiet", False):
        others = len(storage.get_all_studies()) - 1
        if others:
            print_note(f"study {study.study_name!r}, the most recently active of "
                       f"{others + 1} in this storage (pick another with --study)")
    return study


def print_front(study: optuna.Study, note: str = "", reference: str | None = None,
                with_test: bool = False) -> None:
    """The Pareto table of a study, its trial counts and its hypervolume."""
    names = study_objectives(study)
    verified = verified_results(study)
    rows = [trial_row(t, names, verified.get(t.number)) for t in pareto_trials(study)]
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL")
                       if states.count(s))
    table = pareto_table(rows, names, f"Pareto front of {study.study_name!r} "
                                      f"({len(states)} trials: {counts}{note})", with_test)
    hv, ref = front_hypervolume(study, parse_reference(reference, names) if reference else None)
    units = " x ".join(METRICS[n].label.split()[-1] for n in names)
    table.caption = (f"hypervolume {hv:,.6g} ({units}) against the reference "
                     + ", ".join(f"{n} {r:g}" for n, r in zip(names, ref, strict=True)))
    out.print(table)


def bar(quiet: bool, transient: bool = False) -> Progress:
    """The CLI's progress bar on stderr: description, bar, n of total, time elapsed."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, disable=quiet, transient=transient)


class TrialProgress:
    """Rich progress for a run of trials: a bar of trials, a bar of the current trial's
    training steps, and one line per finished trial."""

    def __init__(self, quiet: bool, total: int | None):
        self.quiet = quiet
        self.objectives: tuple[str, ...] = ()  # the study's metric names, read on first use
        self.progress = bar(quiet)
        self.trials = self.progress.add_task("trials", total=total)
        self.steps = self.progress.add_task("  trial", total=1, visible=False)

    def on_step(self, number: int, step: int, total: int) -> None:
        self.progress.update(self.steps, description=f"  trial {number} (train steps)",
                             completed=step, total=total, visible=True)

    def after_trial(self, study: optuna.Study, trial) -> None:
        self.progress.advance(self.trials)
        self.progress.update(self.steps, visible=False)
        if self.quiet:
            return
        record = TrialRecord(trial)
        if trial.state.name == "PRUNED":
            self.progress.console.print(
                f"trial {trial.number:>3} [blue]pruned[/]: {record.prune_reason or ''}")
            return
        if trial.values is None or trial.state.name != "COMPLETE":
            reason = record.fail_reason or trial.state.name.lower()
            self.progress.console.print(f"trial {trial.number:>3} [red]failed[/]: {reason}")
            return
        # read once per search: a study's system attributes grow with NSGA-II's generations
        self.objectives = self.objectives or study_objectives(study)
        row = trial_row(trial, self.objectives)
        infeasible = "" if record.feasible else " [yellow]infeasible[/]"
        self.progress.console.print(f"{trial_line(row, self.objectives)} "
                                    f"{record.seconds:.0f}s{infeasible}")


def verify(study: optuna.Study, args: argparse.Namespace, steps: int, restarts: int,
           max_samples: int | None, on_device: str, jobs: int | None = None) -> dict:
    """Re-attack the front (what is not yet verified with these settings) with progress."""
    config = results.VerifyConfig(steps=steps, restarts=restarts, max_samples=max_samples)
    status = (contextlib.nullcontext() if args.quiet else err.status(
        "verifying the front's robust accuracy (worst case of APGD-CE, APGD-DLR, "
        f"router-PGD, fixed-routing APGD, Square and transfer; {steps} steps, {restarts} "
        "restarts)"))

    def on_trial(number: int, record: dict) -> None:
        if not args.quiet:
            proxy = record.get("robust_accuracy_proxy")
            err.print(f"trial {number:>3} robust % proxy "
                      f"{'-' if proxy is None else f'{proxy:.2f}'}, verified "
                      f"{record['robust_accuracy_verified']:.2f}")

    with status:
        return results.verify_front(study, artifact_store(args), config, device=on_device,
                            data_root=getattr(args, "data_root", None),
                            download=getattr(args, "download", False), on_trial=on_trial,
                            jobs=jobs)


@contextlib.contextmanager
def attack_progress(quiet: bool):
    """A progress bar over samples x attacks, gone when done; yields the callback."""
    progress = bar(quiet, transient=True)
    task = progress.add_task("attacking", total=None)

    def on_progress(done: int, total: int, attack: str) -> None:
        progress.update(task, completed=done, total=total, description=f"attacking: {attack}")

    with progress:
        yield on_progress
