"""The worker loop: one process joins a study and runs trials until it has enough.

Optuna's model of scale-out: any number of processes, on any number of machines, share one
study DB; each asks the study for a trial, trains it, tells the result. A worker that dies
leaves a RUNNING trial whose heartbeat stops; the others fail it and retry its candidate
(resuming from its last saved epoch). `automoe worker` runs one :func:`run_worker`; the
executors in :mod:`automoe.search._executors` run many of them, as local processes or as
tasks on a Ray cluster.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch

from automoe.errors import ConfigError
from automoe.results import KEEP, StudyRecord, TrialWriter, checkpoint_retention, space_of_study
from automoe.search._samplers import make_sampler
from automoe.search._study import count_trials, run_one_trial, training_seed
from automoe.search._trial import TrialRunner
from automoe.storage import AtomicFileSystemArtifactStore, load_study, open_storage

_STATES = optuna.trial.TrialState


def resolve_device(name: str) -> str:
    """``auto`` (CUDA when there is one, else CPU) or a torch device name, checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"invalid --device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA device is available")
    return name


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker needs; plain values, so that it travels to other processes."""

    storage_url: str  # the study DB every worker shares
    study_name: str
    until: int  # stop once the study has this many complete trials
    artifact_dir: str  # checkpoints (and per-epoch training states under resume/)
    device: str = "auto"  # resolved in the worker's own process (its CUDA_VISIBLE_DEVICES)
    seed: int | None = None  # sampler seed; None: random, so that workers propose differently
    threads: int | None = None  # torch CPU threads; None: torch's default (all cores)
    data_root: str | None = None  # dataset folder (not needed for digits)
    download: bool = False  # let torchvision download a missing dataset
    heartbeat: int = 10  # seconds; a trial silent for 3 beats is failed and retried (0: off)
    keep: str = "pareto"  # checkpoints kept: of Pareto-front trials, or all
    # added to each trial's `worker` attribute (beside host, pid and device): the executor,
    # the worker's index, the Ray node
    identity: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.until < 1:
            raise ConfigError(f"--until must be >= 1, got {self.until}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.keep not in KEEP:
            raise ConfigError(f"--keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.heartbeat < 0:
            raise ConfigError(f"--heartbeat must be >= 0, got {self.heartbeat}")


def fits_target(study: optuna.Study, number: int, until: int) -> bool:
    """Whether running trial ``number`` is among those that may finish: workers that start
    together can overshoot the target, so only the lowest-numbered running trials that fit
    under it go on (the same rule in every worker)."""
    complete, running = count_trials(study)
    return number in running[:max(until - complete, 0)]


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and so retry) the running trials of workers whose heartbeat stopped."""
    with warnings.catch_warnings():  # "experimental since v2.9" is noise in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def should_start(study: optuna.Study, until: int, poll_seconds: float = 1.0) -> bool:
    """Whether to start another trial so the study ends with exactly ``until`` complete
    ones; waits while other workers' running trials would reach it (any may still fail)."""
    while True:
        fail_stale_trials(study)  # a dead worker's trial is not running
        complete, running = count_trials(study)
        if complete >= until:
            return False
        if complete + len(running) < until:
            return True
        time.sleep(poll_seconds)


def run_worker(config: WorkerConfig, *, on_step: Callable | None = None,
               callbacks: list[Callable] | None = None,
               on_start: Callable[[optuna.Study, int], None] | None = None) -> int:
    """Run trials of ``config.study_name`` until the study has ``config.until`` complete
    ones; returns the number of trials this worker finished (complete or not).

    ``on_start(study, complete)`` is called once the study is open; ``callbacks`` after
    each trial, as Optuna's.
    """
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    storage = open_storage(config.storage_url, create=False,
                           heartbeat_interval=config.heartbeat or None)
    study = load_study(storage, config.study_name)
    space = space_of_study(study)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(4), "little")
    # the spec the search was started with (its --sampler and options), the same in every
    # worker; a study of an older automoe stored none: the space's
    study.sampler = make_sampler(StudyRecord(study).sampler or space.sampler, seed, space)
    store = AtomicFileSystemArtifactStore(config.artifact_dir)
    runner = TrialRunner(space, store, on_step=on_step, device=device,
                         seed=training_seed(study), data_root=config.data_root,
                         download=config.download,
                         resume_dir=os.path.join(config.artifact_dir, "resume"),
                         worker=config.identity)
    if on_start is not None:
        on_start(study, count_trials(study)[0])

    def within_target(trial: optuna.Trial):
        if not fits_target(study, trial.number, config.until):
            raise optuna.TrialPruned("the study reached its target with other workers' trials")
        try:
            return runner(trial)
        except KeyboardInterrupt:  # Optuna fails the trial; say why
            TrialWriter(trial).failed("interrupted: its worker was stopped")
            raise

    after = list(callbacks or [])
    if config.keep == "pareto":
        after.append(checkpoint_retention(store))
    finished = 0
    while should_start(study, config.until):
        # one trial at a time, so heartbeats (and the failing and retrying of dead
        # workers' trials) run while the count is checked between trials
        run_one_trial(study, within_target, after)
        finished += 1
    return finished
