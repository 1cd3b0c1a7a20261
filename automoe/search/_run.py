"""Running a search: :func:`run_search`, the one entry point, and its executors.

Every way of running trials goes through :func:`run_search`: the CLI (``automoe search``),
the supernet's screening and finalists, and the benchmarks. It creates or resumes the study
and hands it to an executor of :data:`EXECUTORS`, a ``{name: executor}`` table that
plug-ins extend with :func:`register_executor`:

- ``local``: trials one after another in this process (:func:`run_trials`);
- ``processes`` / ``ray``: worker loops placed on this machine or a Ray cluster
  (:mod:`automoe.search._executors`), coordinating through the study DB alone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from automoe.errors import AutomoeError, ConfigError
from automoe.results import checkpoint_retention
from automoe.search._study import count_trials, create_or_resume_study, run_trials, training_seed
from automoe.search._warm import enqueue_warm_start, warm_start_configs
from automoe.storage import AtomicFileSystemArtifactStore, open_storage, parse_url

if TYPE_CHECKING:  # annotations only: the executors' table loads without torch
    from automoe.search._workers import WorkerConfig
    from automoe.space import SearchSpace


@dataclass
class SearchRun:
    """What an executor gets: the open study and everything its trials need."""

    study: optuna.Study
    space: SearchSpace
    trials: int  # trials to run (local), or more complete trials to reach (workers)
    worker: WorkerConfig | None  # the workers' settings (None: not reachable by workers)
    cluster: ClusterConfig
    artifact_store: object  # an Optuna artifact store
    trial_options: dict = field(default_factory=dict)  # TrialRunner keyword arguments
    objective: Callable | None = None  # the local trial (None: a TrialRunner of the options)
    callbacks: list[Callable] = field(default_factory=list)  # after each trial (local)
    on_progress: Callable[[int, int, int], None] | None = None  # (complete, running, failed)


Executor = Callable[[SearchRun], None]


def _run_here(run: SearchRun) -> None:
    """``local``: the trials one after another in this process."""
    # deferred: the trial loads torch; the executors' table (--executor) must not
    from automoe.search._trial import TrialRunner

    objective = run.objective
    if objective is None:
        objective = _trial_runner(run.space, run.artifact_store, run.trial_options)
    if isinstance(objective, TrialRunner):
        objective.seed = training_seed(run.study)  # a resumed study keeps its seed
    run_trials(run.study, objective, run.trials, callbacks=run.callbacks)


def _trial_runner(space: SearchSpace, artifact_store, options: dict):
    # deferred: the trial loads torch; the executors' table (--executor) must not
    from automoe.search._trial import TrialRunner
    from automoe.search._workers import resolve_device

    options = dict(options)
    options["device"] = resolve_device(options.get("device", "cpu"))
    return TrialRunner(options.pop("space", space), artifact_store, **options)


def _place_workers(run: SearchRun) -> None:
    """``processes`` / ``ray``: worker loops until the study has ``trials`` more complete."""
    if run.worker is None:
        raise ConfigError(f"--executor {run.cluster.executor} needs a storage URL and an "
                          "artifact folder that its workers can open")
    if run.objective is not None:
        raise ConfigError("a custom objective runs with --executor local only")
    # deferred: the worker placements load torch; the executors' table must not
    from automoe.search._executors import run_workers

    until = count_trials(run.study)[0] + run.trials
    run_workers(replace(run.worker, study_name=run.study.study_name, until=until),
                run.cluster, on_progress=run.on_progress)


# executor name -> how it runs a search's trials
EXECUTORS: dict[str, Executor] = {"local": _run_here, "processes": _place_workers,
                                  "ray": _place_workers}


def register_executor(name: str, executor: Executor) -> None:
    """Make ``name`` usable as ``--executor`` and as :class:`ClusterConfig`'s executor."""
    if name in EXECUTORS:
        raise ConfigError(f"executor {name!r} is already registered")
    EXECUTORS[name] = executor


@dataclass(frozen=True)
class ClusterConfig:
    """How many workers run a study, and where."""

    executor: str = "local"  # local: this process; processes: N local ones; ray: Ray tasks
    workers: int = 1  # worker loops running at once
    ray_address: str | None = None  # an existing cluster's address; None: a local one
    gpus_per_worker: float = 0.0  # GPUs each worker holds (Ray's num_gpus; processes: 0 or 1)
    cpus_per_worker: float = 1.0  # CPUs each worker holds (Ray's num_cpus)
    max_restarts: int = 3  # times one worker is restarted after its process died
    connect_timeout: float = 20.0  # seconds to reach a Ray address before giving up

    def __post_init__(self):
        if self.executor not in EXECUTORS:  # the table above, which plug-ins extend
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got "
                              f"{self.executor!r}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.executor == "local" and self.workers > 1:
            raise ConfigError("--workers > 1 needs --executor processes (this machine) or "
                              "--executor ray (a Ray cluster)")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("--ray-address needs --executor ray")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0 and --cpus-per-worker > 0, got "
                              f"{self.gpus_per_worker:g} and {self.cpus_per_worker:g}")
        if self.executor == "processes" and self.gpus_per_worker not in (0, 1):
            raise ConfigError("--executor processes gives each worker one GPU or none "
                              "(--gpus-per-worker 0 or 1)")
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts must be >= 0, got {self.max_restarts}")

    def check_storage(self, url: str) -> None:
        """Refuse a storage that the workers cannot all reach: SQLite is one machine's file,
        so it serves a local cluster only."""
        if self.executor != "ray" or self.ray_address is None:
            return
        if parse_url(url).drivername.startswith("sqlite") and not _is_local(self.ray_address):
            raise ConfigError(f"SQLite cannot be shared by the nodes of the Ray cluster at "
                              f"{self.ray_address}; use a PostgreSQL --storage that every node "
                              "reaches")


    def check_reachable(self) -> None:
        """Fail at once on a Ray address nobody answers (``ray.init`` would wait long)."""
        if self.executor != "ray" or self.ray_address in (None, "auto"):
            return
        host, port = _host_port(self.ray_address)
        try:
            socket.create_connection((host, port or 10001), timeout=self.connect_timeout).close()
        except OSError as exc:
            raise AutomoeError(f"cannot reach the Ray cluster at {self.ray_address} "
                               f"({exc})") from None


def _host_port(address: str) -> tuple[str, int | None]:
    address = address.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    if not host:
        return address, None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"invalid --ray-address {address!r}; expected HOST:PORT, "
                          "ray://HOST:PORT or auto") from None


def _is_local(address: str) -> bool:
    if address == "auto":  # the cluster started on this machine by `ray start`
        return True
    host, _ = _host_port(address)
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_search(space: SearchSpace, storage: str | optuna.storages.BaseStorage, *,
               study_name: str | None = None, trials: int | None = None,
               sampler: str | dict | optuna.samplers.BaseSampler | None = None, seed: int = 0,
               cluster: ClusterConfig | None = None, artifact_dir: str | Path | None = None,
               artifact_store=None, device: str = "cpu", threads: int | None = None,
               data_root: str | None = None, download: bool = False, heartbeat: int = 0,
               keep: str = "all", resume: bool = True, make_folder: bool = False,
               trial_options: dict | None = None, objective: Callable | None = None,
               callbacks: list[Callable] | None = None,
               warm_start: optuna.Study | None = None,
               on_start: Callable[[optuna.Study, bool, int], None] | None = None,
               on_step: Callable[[int, int, int], None] | None = None,
               on_progress: Callable[[int, int, int], None] | None = None) -> optuna.Study:
    """Create (or resume) the study ``study_name`` (default: the space's name) and run
    ``trials`` trials of it (default: the space's) on ``cluster``'s executor.

    Args:
        storage: a storage URL (``sqlite:///...``, ``postgresql://...``; workers elsewhere
            open it themselves) or an Optuna storage (this process only).
        sampler: a name of :data:`automoe.search.SAMPLERS` or a spec ``{"name",
            **options}`` (default: the space's), seeded from the study's seed and trial
            count and stored with the study for its workers; or a sampler (local only).
        seed: the study's seed when it is created (a resumed study keeps its own).
        cluster: the executor and its workers (default: ``local``, this process).
        artifact_dir / artifact_store: where checkpoints go (a folder, or a store).
        device, threads, data_root, download: the trials' (workers resolve ``auto``
            themselves; ``threads`` applies to workers, the caller sets its own).
        heartbeat: seconds between trial heartbeats (0: off); a trial silent for three is
            failed and retried, from its last epoch when ``resume``.
        keep: ``pareto`` removes the checkpoints of trials that leave the front.
        trial_options: more keyword arguments of :class:`TrialRunner` (local only): a
            ``supernet``, ``usage_plots``, ``recalibration_batches``, ``resume_dir``, and
            ``space``, a variant of the study's space that the trials measure with (a
            cheaper screen).
        objective: an objective that replaces the trial (local only; benchmarks of the
            study machinery).
        callbacks: Optuna callbacks after each local trial.
        warm_start: an earlier study (of this space, or another with the same parameters,
            e.g. on another data set) whose Pareto front a new study runs first; ignored
            when the study is resumed.
        on_start: ``(study, resumed, complete trials)`` once the study is open.
        on_step: ``(trial, step, steps)`` as a local trial trains.
        on_progress: ``(complete, running, failed)`` as workers elsewhere move.
    """
    # deferred: the data and the workers' settings load torch; the executors' table must not
    from automoe.data import load_dataset
    from automoe.search._workers import WorkerConfig

    cluster = cluster or ClusterConfig()
    trials = space.trials if trials is None else trials
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if artifact_store is None:
        if artifact_dir is None:
            raise ConfigError("run_search needs an artifact_dir or an artifact_store")
        artifact_store = AtomicFileSystemArtifactStore(artifact_dir)
    url = storage if isinstance(storage, str) else None
    if url is not None:
        parse_url(url)
        cluster.check_storage(url)
    cluster.check_reachable()
    options = {"device": device, "data_root": data_root, "download": download,
               "on_step": on_step, **(trial_options or {})}
    if resume and artifact_dir is not None:
        options.setdefault("resume_dir", Path(artifact_dir) / "resume")
    if cluster.executor == "local" and objective is None:
        # built before the study DB is touched: missing data or an unwritable artifact
        # folder then writes nothing
        objective = _trial_runner(space, artifact_store, options)
    if cluster.executor == "processes":  # the workers run here: check their data now
        load_dataset(space.dataset["name"], "train", data_root,
                     image_size=space.dataset["image_size"], download=download)
    if url is not None:
        storage = open_storage(url, create=True, heartbeat_interval=heartbeat or None,
                               make_folder=make_folder)
    if isinstance(sampler, optuna.samplers.BaseSampler) and cluster.executor != "local":
        raise ConfigError("a sampler object cannot travel to workers: name a registered "
                          "sampler (or a spec with its options) for --executor "
                          f"{cluster.executor}")
    # read (and checked) before the study is written
    warm = warm_start_configs(warm_start, space) if warm_start is not None else None
    study, resumed = create_or_resume_study(storage, study_name or space.name, space, sampler,
                                            seed)
    if warm is not None and not resumed:
        enqueue_warm_start(study, warm_start.study_name, warm)
    worker = None
    if url is not None and artifact_dir is not None:
        worker = WorkerConfig(storage_url=url, study_name=study.study_name, until=1,
                              artifact_dir=str(artifact_dir), device=device, threads=threads,
                              data_root=data_root, download=download, heartbeat=heartbeat,
                              keep=keep)
    after = list(callbacks or [])
    if keep == "pareto":
        after.append(checkpoint_retention(artifact_store))
    if on_start is not None:
        on_start(study, resumed, count_trials(study)[0])
    EXECUTORS[cluster.executor](SearchRun(
        study=study, space=space, trials=trials, worker=worker, cluster=cluster,
        artifact_store=artifact_store, trial_options=options, objective=objective,
        callbacks=after, on_progress=on_progress))
    return study
