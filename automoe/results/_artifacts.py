"""A trial's files in the artifact store: stored once by the trial, fetched (and their
sha256 checked) in one place for every reader (verification, export).

Beside the checkpoint, a trial stores what optuna-dashboard shows as its artifacts: its
config and metrics as JSON and, for an MoE trial, its expert-usage heatmap.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.artifacts import download_artifact, upload_artifact

from automoe.errors import AutomoeError, StorageError
from automoe.results._record import TrialRecord, TrialWriter
from automoe.storage import DISK_ERRORS, save_checkpoint, sha256_file


@contextlib.contextmanager
def failing_on_disk_errors(trial: optuna.Trial) -> Iterator[None]:
    """A full, read-only or quota-bound disk while a trial writes its files fails the trial
    with the reason and stops the search in one line (every later trial would fail the
    same way); what the trial wrote went to temp names, now gone."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        reason = f"its files could not be written: {exc.strerror}" + (
            f" ({exc.filename})" if exc.filename else "")
        TrialWriter(trial).failed(reason)
        raise StorageError(f"trial {trial.number} failed, {reason}; free space or point "
                           "--artifact-dir elsewhere, then rerun to continue the study"
                           ) from None


class CheckpointMissing(AutomoeError):
    """The trial's checkpoint is not in the artifact store (retention, or a wrong folder)."""


def store_trial_files(trial: optuna.Trial, artifact_store, model, extra: dict, config: dict,
                      class_usage: dict | None = None, usage_plot: bool = True) -> None:
    """Store the trained ``model`` (checkpoint with ``extra`` metadata; its artifact id and
    sha256 go into the record), ``config`` as JSON and, with ``class_usage`` and
    ``usage_plot``, the expert-usage heatmap."""
    with tempfile.TemporaryDirectory(prefix="automoe-ckpt-") as tmp:
        path = Path(tmp) / f"trial-{trial.number}.safetensors"
        model.cpu()
        save_checkpoint(model, path, extra)
        digest = sha256_file(path)
        artifact_id = upload_artifact(artifact_store=artifact_store, file_path=str(path),
                                      study_or_trial=trial)
        TrialWriter(trial).checkpoint(artifact_id, digest)
        config_path = Path(tmp) / f"trial-{trial.number}-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        upload_artifact(artifact_store=artifact_store, file_path=str(config_path),
                        study_or_trial=trial, mimetype="application/json")
        if usage_plot and class_usage:
            # deferred: matplotlib loads only where a heatmap is drawn
            from automoe.results._plots import usage_figure

            figure = Path(tmp) / f"trial-{trial.number}-expert-usage.png"
            usage_figure(class_usage, f"trial {trial.number}: val samples per expert "
                                      "(experts x classes)").savefig(figure, dpi=100)
            upload_artifact(artifact_store=artifact_store, file_path=str(figure),
                            study_or_trial=trial, mimetype="image/png")


def fetch_checkpoint(trial, artifact_store, path: str | Path) -> str:
    """Download the trial's checkpoint to ``path`` and check it; returns its sha256.

    Raises:
        AutomoeError: the trial stored no checkpoint, or the file does not match its sha256.
        CheckpointMissing: the checkpoint is not in the store.
    """
    checkpoint = TrialRecord(trial).checkpoint
    if not checkpoint:
        raise AutomoeError(f"trial {trial.number} stored no checkpoint")
    try:
        download_artifact(artifact_store=artifact_store, file_path=str(path),
                          artifact_id=checkpoint["artifact_id"])
    except Exception as exc:  # the stores raise their own not-found error types
        raise CheckpointMissing(f"checkpoint of trial {trial.number} is missing from the "
                                f"artifact store ({exc}); check --artifact-dir") from None
    digest = sha256_file(path)
    if digest != checkpoint["sha256"]:
        raise AutomoeError(f"checkpoint of trial {trial.number} is corrupted (sha256 "
                           f"{digest[:12]}..., expected {checkpoint['sha256'][:12]}...)")
    return digest
