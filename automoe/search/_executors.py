"""Running a study's workers: local processes, or tasks on a Ray cluster.

The study DB stays the single source of truth (Optuna's model): every worker is exactly
the :func:`~automoe.search.run_worker` loop of `automoe worker`, and the workers
coordinate through the DB alone. An executor only places the workers, gives each its
resources, device and seed stream, restarts one that died (a bounded number of times; the
heartbeat fails and retries its trial), and stops them all on Ctrl-C.

- ``processes``: N worker processes on this machine, each with its own
  ``CUDA_VISIBLE_DEVICES`` when there are GPUs (one machine, several GPUs).
- ``ray``: N Ray tasks with ``num_gpus`` / ``num_cpus`` each, on a local cluster that Ray
  starts or on an existing one (``ray_address``); Ray retries a task whose process died.
"""

from __future__ import annotations

import _thread
import ipaddress
import math
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import optuna
import torch

from automoe.data import load_dataset
from automoe.errors import AutomoeError, ConfigError
from automoe.search._record import TrialRecord, fail_stored_trial
from automoe.search._study import create_or_resume_study, training_seed
from automoe.search._workers import WorkerConfig, count_trials, run_worker
from automoe.search.space import SearchSpace
from automoe.storage import load_study, open_storage, parse_url

EXECUTORS = ("local", "processes", "ray")
_STATES = optuna.trial.TrialState


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
        if self.executor not in EXECUTORS:
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


def worker_seed(base_seed: int, trials_so_far: int, index: int) -> int:
    """Sampler seed of worker ``index`` of a run starting at ``trials_so_far`` trials:
    reproducible, and different for every worker and every run."""
    return int(np.random.SeedSequence([base_seed, trials_so_far, index]).generate_state(1)[0])


def run_workers(worker: WorkerConfig, cluster: ClusterConfig, *,
                on_progress: Callable[[int, int, int], None] | None = None,
                poll_seconds: float = 1.0) -> None:
    """Run ``cluster.workers`` worker loops on the study until it has ``worker.until``
    complete trials. ``on_progress(complete, running, failed)`` is called as they move.

    Ctrl-C stops every worker; trials they left running are failed with the reason.

    Raises:
        AutomoeError: a worker failed on bad input (every worker would), or died more often
            than ``cluster.max_restarts``.
    """
    if cluster.executor == "local":
        raise ConfigError("run_workers places workers elsewhere; the local executor is "
                          "run_worker in this process")
    study = load_study(open_storage(worker.storage_url, create=False), worker.study_name)
    base = training_seed(study)
    start = len(study.get_trials(deepcopy=False))
    run = uuid.uuid4().hex[:8]  # tells this run's workers from any other run's
    configs = [replace(worker, seed=worker_seed(base, start, i),
                       identity={**worker.identity, "executor": cluster.executor, "run": run,
                                 "index": i})
               for i in range(cluster.workers)]

    def progress() -> None:
        if on_progress is not None:
            trials = study.get_trials(deepcopy=False)
            on_progress(sum(t.state == _STATES.COMPLETE for t in trials),
                        sum(t.state == _STATES.RUNNING for t in trials),
                        sum(t.state == _STATES.FAIL for t in trials))

    runner = _run_processes if cluster.executor == "processes" else _run_ray
    try:
        runner(configs, cluster, progress, poll_seconds)
    except (KeyboardInterrupt, AutomoeError) as exc:
        reason = ("interrupted: the search was stopped with Ctrl-C"
                  if isinstance(exc, KeyboardInterrupt) else f"the search stopped: {exc}")
        fail_running_trials(study, run, reason)
        raise
    progress()


def search_with_workers(space: SearchSpace, study_name: str, sampler_name: str, seed: int,
                        n_trials: int, worker: WorkerConfig, cluster: ClusterConfig, *,
                        make_folder: bool = False,
                        on_start: Callable[[optuna.Study, bool, int, int], None] | None = None,
                        on_progress: Callable[[int, int, int], None] | None = None
                        ) -> optuna.Study:
    """Create or resume the study here and run the cluster's workers on it until it has
    ``n_trials`` more complete trials.

    ``worker`` gives every worker's settings (its ``until`` is replaced). With local
    processes the dataset is loaded here first, so that missing data fails once, before
    any worker starts. ``on_start(study, resumed, complete, until)`` is called once the
    study is open; ``on_progress`` as in :func:`run_workers`.
    """
    if cluster.executor == "processes":  # the workers run here: check their data now
        load_dataset(space.dataset["name"], "train", worker.data_root,
                     image_size=space.dataset["image_size"], download=worker.download)
    storage = open_storage(worker.storage_url, create=True,
                           heartbeat_interval=worker.heartbeat or None, make_folder=make_folder)
    study, resumed = create_or_resume_study(storage, study_name, space, sampler_name, seed)
    complete = count_trials(study)[0]
    worker = replace(worker, study_name=study.study_name, until=complete + n_trials)
    if on_start is not None:
        on_start(study, resumed, complete, worker.until)
    run_workers(worker, cluster, on_progress=on_progress)
    return study


def fail_running_trials(study: optuna.Study, run: str, reason: str) -> list[int]:
    """Fail the RUNNING trials of the workers of one run of :func:`run_workers`, with
    ``reason``; the numbers of those failed."""
    failed = []
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(_STATES.RUNNING,)):
        if TrialRecord(trial).worker.get("run") != run:
            continue
        try:
            fail_stored_trial(storage, trial._trial_id, reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it meanwhile
        failed.append(trial.number)
    return failed


# ---------------------------------------------------------------------------- processes

_BAD_INPUT = 3  # exit code of a worker process stopped by bad input: not restarted


def _stop_when_orphaned(parent: int, poll_seconds: float = 1.0) -> None:
    """Interrupt this worker (as the driver's SIGINT would) once its driver is gone.

    A driver killed with SIGKILL cannot stop its workers, and daemon processes outlive a
    parent that did not exit normally: left alone they would go on training and writing
    to the study. Polling the parent id is portable (no ``PR_SET_PDEATHSIG``)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        _thread.interrupt_main()

    threading.Thread(target=watch, name="automoe-driver-watch", daemon=True).start()


def _process_main(config: WorkerConfig, env: dict, errors, parent: int) -> None:
    os.environ.update(env)  # before CUDA is first touched, so that it sees only its GPU
    # the driver stops a worker with SIGINT: take it even where the parent was started with
    # SIGINT ignored (nohup, a background job), which a new process would inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _stop_when_orphaned(parent)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        run_worker(config)
    except AutomoeError as exc:
        errors.put(str(exc))
        sys.exit(_BAD_INPUT)
    except KeyboardInterrupt:  # Optuna has failed the running trial already
        sys.exit(130)


def _run_processes(configs: list[WorkerConfig], cluster: ClusterConfig, progress,
                   poll_seconds: float) -> None:
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    gpus = _visible_gpus() if cluster.gpus_per_worker else []
    if cluster.gpus_per_worker and len(gpus) < len(configs):
        raise ConfigError(f"{len(configs)} workers with one GPU each, but {len(gpus)} GPUs "
                          "are visible")

    def start(i: int):
        # with --gpus-per-worker 1 each worker sees its own GPU; otherwise all see the same
        env = {"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus else {}
        process = context.Process(target=_process_main,
                                  args=(configs[i], env, errors, os.getpid()),
                                  name=f"automoe-worker-{i}", daemon=True)
        process.start()
        return process

    processes = {i: start(i) for i in range(len(configs))}
    restarts = dict.fromkeys(processes, 0)
    try:
        while processes:
            progress()
            time.sleep(poll_seconds)
            for i, process in list(processes.items()):
                if process.is_alive():
                    continue
                if process.exitcode == 0:
                    del processes[i]
                elif process.exitcode == _BAD_INPUT:
                    try:
                        message = errors.get(timeout=10)
                    except queue.Empty:
                        message = f"worker {i} stopped on bad input"
                    raise AutomoeError(message)
                elif restarts[i] < cluster.max_restarts:
                    restarts[i] += 1
                    processes[i] = start(i)
                else:
                    raise AutomoeError(f"worker {i} died {restarts[i] + 1} times (last exit "
                                       f"code {process.exitcode}); stopping the search")
    finally:
        _stop_processes(list(processes.values()))


def _stop_processes(processes, grace: float = 30.0) -> None:
    """SIGINT first (the worker fails its trial and exits), then kill what is left."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.1))
        if process.is_alive():
            process.kill()
            process.join()


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------------------- Ray

def _ray_main(config: WorkerConfig) -> int:
    # optional extra: automoe[ray]
    import ray

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    node = ray.get_runtime_context().get_node_id()
    return run_worker(replace(config, identity={**config.identity, "ray_node": node}))


def _connect_ray(cluster: ClusterConfig) -> None:
    # optional extra: automoe[ray]
    import ray

    cluster.check_reachable()
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                  configure_logging=True)
    if cluster.ray_address is None:
        # a local cluster sized to the workers, so that all of them run at once
        kwargs["num_cpus"] = max(os.cpu_count() or 1,
                                 math.ceil(cluster.workers * cluster.cpus_per_worker))
    try:
        ray.init(address=cluster.ray_address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AutomoeError(f"cannot join the Ray cluster at {cluster.ray_address}: "
                           f"{str(exc).splitlines()[0]}") from None


def _run_ray(configs: list[WorkerConfig], cluster: ClusterConfig, progress,
             poll_seconds: float) -> None:
    # optional extra: automoe[ray]
    import ray

    _connect_ray(cluster)
    try:
        alive = [node for node in ray.nodes() if node.get("Alive")]
        if parse_url(configs[0].storage_url).drivername.startswith("sqlite") and len(alive) > 1:
            raise ConfigError(f"SQLite cannot be shared by the {len(alive)} nodes of this Ray "
                              "cluster; use a PostgreSQL --storage that every node reaches")
        # Ray reruns a task whose worker process died (max_retries), not one that raised
        task = ray.remote(num_cpus=cluster.cpus_per_worker,
                          num_gpus=cluster.gpus_per_worker or None,
                          max_retries=cluster.max_restarts, retry_exceptions=False)(_ray_main)
        pending = [task.remote(config) for config in configs]
        try:
            while pending:
                progress()
                ready, pending = ray.wait(pending, num_returns=1, timeout=poll_seconds)
                for ref in ready:
                    _ray_result(ref, cluster)
        except BaseException:
            for ref in pending:  # KeyboardInterrupt in each task: Optuna fails its trial
                ray.cancel(ref)
            deadline = time.monotonic() + 15
            while pending and time.monotonic() < deadline:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1)
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        ray.shutdown()


def _ray_result(ref, cluster: ClusterConfig) -> None:
    # optional extra: automoe[ray]
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, AutomoeError):
            raise AutomoeError(str(cause).splitlines()[0]) from None
        raise AutomoeError(f"a worker failed: {type(cause).__name__}: "
                           f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
    except RayError as exc:  # its process died more often than Ray retries
        raise AutomoeError(f"a worker died {cluster.max_restarts + 1} times; stopping the "
                           f"search ({type(exc).__name__})") from None
