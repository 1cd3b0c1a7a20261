"""Jobs run in worker processes, each process holding one job at a time.

``concurrent.futures.ProcessPoolExecutor`` queues jobs for its processes through a shared
pipe fed by a thread. A process killed while a large job (a model and a val split) sat in
that queue could leave the feeding thread and ``shutdown`` waiting forever: ``verify``
hung with no end. Here every process has a pipe of its own, a job is sent only to an idle
process, and the parent waits on each busy process's pipe *and* its sentinel, so a process
that dies is seen at once, whatever it was doing, and nothing is ever waited on after.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait

from automoe.errors import AutomoeError

_OK, _RAISED = "ok", "raised"


class WorkerDied(AutomoeError):
    """A worker process ended (killed, out of memory) before returning its job's result."""


def _serve(connection: Connection, setup: Callable[[], None] | None,
           function: Callable) -> None:
    """A worker process: ``function(job)`` for each job received, until the pipe closes."""
    # Ctrl-C reaches the whole process group: the parent stops its workers itself, so a
    # worker does not print a KeyboardInterrupt traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if setup is not None:
        setup()
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or is gone
            return
        try:
            result = (_OK, function(job))
        except Exception as exc:  # noqa: BLE001 - the parent re-raises it
            result = (_RAISED, exc)
        try:
            connection.send(result)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            connection.send((_RAISED, AutomoeError(f"{type(exc).__name__}: {exc}")))


class _Worker:
    def __init__(self, context, setup, function):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, setup, function),
                                       daemon=True, name="automoe-job")
        self.process.start()
        child.close()  # so that the parent's sends fail at once if the process dies


def run_in_processes(function: Callable, jobs: Iterator, processes: int, *,
                     setup: Callable[[], None] | None = None) -> Iterator:
    """``function(job)`` for every job, computed in up to ``processes`` spawned processes,
    yielded in job order.

    A job is taken from ``jobs`` only when a process is free for it, so a long iterator of
    big jobs is never held at once. ``setup()`` runs once in each process before its first
    job. Closing the generator (or an exception) ends every process at once.

    Raises:
        WorkerDied: a process ended before returning its job's result.
        Exception: whatever ``function`` raised in a process, re-raised here.
    """
    context = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    idle: list[_Worker] = []
    busy: dict[_Worker, int] = {}  # worker -> index of the job it holds
    done: dict[int, object] = {}  # results that wait for those before them
    taken = yielded = 0
    more = True
    try:
        while more or busy or done:
            while more and (idle or len(workers) < processes):
                job = next(jobs, None)
                if job is None:
                    more = False
                    break
                if not idle:
                    workers.append(_Worker(context, setup, function))
                    idle.append(workers[-1])
                worker = idle.pop()
                try:
                    worker.connection.send(job)
                except (BrokenPipeError, EOFError, OSError) as exc:
                    raise _died(worker) from exc
                busy[worker] = taken
                taken += 1
            while yielded in done:
                yield done.pop(yielded)
                yielded += 1
            if not busy:
                continue
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for worker in list(busy):
                if worker.connection in ready or worker.connection.poll():
                    try:
                        status, value = worker.connection.recv()
                    except (EOFError, OSError) as exc:  # died while sending its result
                        raise _died(worker) from exc
                    if status == _RAISED:
                        raise value
                    done[busy.pop(worker)] = value
                    idle.append(worker)
                elif worker.process.sentinel in ready:
                    raise _died(worker)
    finally:
        _stop(workers)


def _died(worker: _Worker) -> WorkerDied:
    worker.process.join(1)
    code = worker.process.exitcode
    how = "was killed" if code is None or code < 0 else f"exited with code {code}"
    return WorkerDied(f"a worker process {how} before returning its result")


def _stop(workers: list[_Worker], grace: float = 0.5) -> None:
    """Close every pipe (an idle process then exits); end what is still running."""
    for worker in workers:
        worker.connection.close()
    for worker in workers:
        worker.process.join(grace)
        if worker.process.is_alive():
            worker.process.kill()  # a busy process: its job's result is not wanted
            worker.process.join()
