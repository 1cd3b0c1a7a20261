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
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import numpy as np
import optuna
import torch

from automoe.errors import AutomoeError, ConfigError
from automoe.results import TrialRecord, fail_stored_trial
from automoe.search._interrupt import interrupt_once
from automoe.search._study import training_seed
from automoe.search._workers import WorkerConfig, run_worker
from automoe.storage import load_study, open_storage, parse_url

_STATES = optuna.trial.TrialState


def worker_seed(base_seed: int, trials_so_far: int, index: int) -> int:
    """Sampler seed of worker ``index`` of a run starting at ``trials_so_far`` trials:
    reproducible, and different for every worker and every run."""
    return int(np.random.SeedSequence([base_seed, trials_so_far, index]).generate_state(1)[0])


def run_workers(worker: WorkerConfig, cluster, *,
                on_progress: Callable[[int, int, int], None] | None = None,
                poll_seconds: float = 1.0) -> None:
    """Run ``cluster.workers`` worker loops (``cluster``: a
    :class:`~automoe.search.ClusterConfig`) on the study until it has ``worker.until``
    complete trials. ``on_progress(complete, running, failed)`` is called as they move.

    Ctrl-C stops every worker; trials they left running are failed with the reason.

    Raises:
        AutomoeError: a worker failed on bad input (every worker would), or died more often
            than ``cluster.max_restarts``.
    """
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

    runner = PLACEMENTS[cluster.executor]
    started = datetime.now()  # Optuna stamps trials with naive local time
    try:
        runner(configs, cluster, progress, poll_seconds)
    except (KeyboardInterrupt, AutomoeError) as exc:
        reason = ("interrupted: the search was stopped with Ctrl-C"
                  if isinstance(exc, KeyboardInterrupt) else f"the search stopped: {exc}")
        fail_running_trials(study, run, reason, since=started)
        raise
    progress()


def fail_running_trials(study: optuna.Study, run: str, reason: str,
                        since: datetime | None = None, grace: float = 2.0) -> list[int]:
    """Fail the RUNNING trials of the workers of one run of :func:`run_workers`, with
    ``reason``; the numbers of those failed.

    A worker stopped by force (a Ray task cancelled after its grace period, a process
    killed) can leave a trial it created before writing its worker record. With ``since``,
    a RUNNING trial with no record that started after ``since`` and still has none
    ``grace`` seconds later is failed too: a live worker of any run writes its record
    within milliseconds of creating the trial."""
    storage = study._storage
    ours, unclaimed = [], []
    for trial in study.get_trials(deepcopy=False, states=(_STATES.RUNNING,)):
        owner = TrialRecord(trial).worker.get("run")
        if owner == run:
            ours.append(trial)
        elif (owner is None and since is not None and trial.datetime_start is not None
              and trial.datetime_start >= since):
            unclaimed.append(trial._trial_id)
    if unclaimed:
        time.sleep(grace)
        ours += [trial for trial in map(storage.get_trial, unclaimed)
                 if trial.state == _STATES.RUNNING and not TrialRecord(trial).worker]
    failed = []
    for trial in ours:
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
    # SIGINT ignored (nohup, a background job), which a new process would inherit; once
    # (the driver repeats it while the worker fails its trial and exits)
    signal.signal(signal.SIGINT, interrupt_once)
    _stop_when_orphaned(parent)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        run_worker(config)
    except AutomoeError as exc:
        errors.put(str(exc))
        sys.exit(_BAD_INPUT)
    except KeyboardInterrupt:  # Optuna has failed the running trial already
        sys.exit(130)


def _run_processes(configs: list[WorkerConfig], cluster, progress,
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
        with _sigint_ignored_by_children():
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


@contextlib.contextmanager
def _sigint_ignored_by_children():
    """Start processes with SIGINT ignored: a Ctrl-C while a worker is still starting
    (importing torch) would print a KeyboardInterrupt traceback from its bootstrap, where
    nothing can catch it. ``_process_main`` takes SIGINT back once it runs, and
    :func:`_stop_processes` repeats its SIGINT until then."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_processes(processes, grace: float = 30.0, every: float = 1.0) -> None:
    """SIGINT (the worker fails its trial and exits), once a second, as a worker still
    starting ignores it; then kill what is left after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [process for process in processes if process.is_alive()]
        if not alive:
            return
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
        wait = min(every, max(deadline - time.monotonic(), 0.01))
        multiprocessing.connection.wait([p.sentinel for p in alive], timeout=wait)
    for process in processes:
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


def _connect_ray(cluster) -> None:
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


def _run_ray(configs: list[WorkerConfig], cluster, progress,
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


def _ray_result(ref, cluster) -> None:
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


# executor name -> how it places the worker loops: (configs, cluster, progress, poll s)
PLACEMENTS = {"processes": _run_processes, "ray": _run_ray}
