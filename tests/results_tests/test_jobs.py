"""Jobs in worker processes: results in order, errors re-raised, a killed process one
error at once (never a hang), whenever it dies."""

import math
import multiprocessing
import os
import signal
import threading
import time

import pytest

from automoe.results._jobs import WorkerDied, run_in_processes


def test_results_come_in_job_order_whichever_process_finishes_first():
    # the first job sleeps longest, so the later ones finish first
    jobs = iter([0.6, 0.0, 0.2, 0.0, 0.1])
    assert list(run_in_processes(time.sleep, jobs, 3)) == [None] * 5
    assert list(run_in_processes(math.sqrt, iter([4.0, 9.0, 16.0, 25.0]), 2)) == [2, 3, 4, 5]
    assert not multiprocessing.active_children()  # every process ended


def test_an_exception_in_a_job_is_raised_here():
    with pytest.raises(ValueError, match="math domain error"):
        list(run_in_processes(math.sqrt, iter([4.0, -1.0, 9.0]), 2))
    assert not multiprocessing.active_children()


def test_jobs_are_taken_only_when_a_process_is_free():
    taken = []

    def jobs():
        for i in range(20):
            taken.append(i)
            yield 0.05

    results = run_in_processes(time.sleep, jobs(), 2)
    try:
        next(results)
        # at most one job per process beyond those whose results are in: both processes
        # may have finished before the first result is handed out
        assert len(taken) <= 4
    finally:
        results.close()
    assert not multiprocessing.active_children()


def _kill_children_after(seconds: float) -> threading.Thread:
    """Kill this process's new children ``seconds`` after the first of them starts."""
    before = {child.pid for child in multiprocessing.active_children()}

    def new_children():
        return [c for c in multiprocessing.active_children() if c.pid not in before]

    def kill():
        deadline = time.monotonic() + 60
        while not new_children() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(seconds)
        for child in new_children():
            os.kill(child.pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("after", [0.0, 0.05, 1.5], ids=["at-start", "taking-job", "mid-job"])
def test_a_killed_process_is_one_error_at_once(after):
    # at-start: before the process has imported anything (its job not read yet); mid-job:
    # while it sleeps on a job that would take a minute
    killer = _kill_children_after(after)
    with pytest.raises(WorkerDied, match="was killed"):
        list(run_in_processes(time.sleep, iter([60.0, 60.0, 60.0]), 2))
    killer.join()
    assert not multiprocessing.active_children()
