"""Seeds of a trial's repeats, and the per-epoch training state a retried trial resumes
from (its worker died: the heartbeat failed the trial and queued a retry of it)."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import optuna
import torch

from automoe.results import study_folder_name
from automoe.storage import atomic_write


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """The training seeds of a candidate trained ``repeats`` times: ``seed`` first (the
    seed of a single run), then seeds far from every other trial's ``base + n``."""
    return [seed + 1_000_003 * r for r in range(repeats)]


def mean_metrics(runs: list[dict]) -> dict[str, float]:
    """Per metric, the mean over the runs that measured it (dense nets have no expert use)."""
    names = [k for k in runs[0] if k != "seed"]
    return {name: statistics.fmean(r[name] for r in runs if r.get(name) is not None)
            for name in names if any(r.get(name) is not None for r in runs)}


def origin_trial(trial: optuna.Trial) -> int:
    """The first trial of a chain of heartbeat retries (itself when not a retry)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)  # Trial hides system attrs
    with warnings.catch_warnings():  # experimental API warnings are noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else trial.number


def resume_path(resume_dir: Path | None, trial: optuna.Trial, origin: int) -> Path | None:
    """Where the states of ``origin``'s chain of retries are saved (None: no resuming)."""
    if resume_dir is None:
        return None
    return resume_dir / study_folder_name(trial.study.study_name) / f"trial-{origin}.pt"


def load_resume(path: Path | None, key: str) -> dict | None:
    """The saved training state at ``path`` if it was saved for the candidate ``key``."""
    if path is None or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("candidate") == key else None


def save_resume(path: Path, state: dict) -> None:
    """Write then rename: a worker killed mid-write leaves the previous epoch's state."""
    # the temp name carries the trial's, so that whoever owns the trial next can sweep
    # a temp file that a worker killed mid-write left behind (see remove_resume)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def remove_resume(path: Path | None) -> None:
    """Remove a trial's saved state and any temp file a killed writer of it left behind.

    Safe: only one worker runs a trial (or its retry) at a time, and this one is it.
    """
    if path is not None:
        path.unlink(missing_ok=True)
        for orphan in path.parent.glob(f".{path.stem}.tmp-*"):
            orphan.unlink(missing_ok=True)
