"""A worker killed with SIGKILL mid-trial loses nothing (real SQLite, real processes)."""

import signal
import subprocess
import time

import optuna

from automoe.storage import open_storage

from .conftest import TINY_SPACE, run_cli


def _trials(db):
    storage = open_storage(db, create=False)
    return optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)


def test_killed_worker_is_failed_retried_and_the_study_completes(workdir):
    db = f"sqlite:///{workdir / 'w.db'}"
    # slower trials, so that the worker can be killed in the middle of one
    (workdir / "slow.yaml").write_text(TINY_SPACE.replace("epochs: 1", "epochs: 6"))
    run_cli("search", "--space", "slow.yaml", "--storage", db, "--trials", "1", "-q",
            "--heartbeat", "1", cwd=workdir, check=0)

    worker = subprocess.Popen(["automoe", "worker", "--study", "tiny", "--storage", db,
                               "--until", "5", "--heartbeat", "1", "-q"], cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(t.state.name == "RUNNING" for t in _trials(db)):
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    (stuck,) = [t for t in _trials(db) if t.state.name == "RUNNING"]

    time.sleep(4)  # past the grace period (3 heartbeats) of the dead worker's trial
    run_cli("worker", "--study", "tiny", "--storage", db, "--until", "5", "--heartbeat", "1",
            "-q", cwd=workdir, check=0)
    trials = _trials(db)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 5 and "RUNNING" not in states
    assert len({t.number for t in trials}) == len(trials)
    failed = next(t for t in trials if t.number == stuck.number)
    assert failed.state.name == "FAIL"
    retries = [t for t in trials
               if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               == stuck.number]
    assert retries and retries[0].params == stuck.params  # same candidate, trained again
    artifacts = workdir / "artifacts"  # beside the SQLite file
    assert artifacts.is_dir() and not list(artifacts.glob(".tmp-*"))  # no half-written file


def test_concurrent_workers_reach_exactly_the_target(workdir):
    db = f"sqlite:///{workdir / 'c.db'}"
    run_cli("search", "--space", "tiny.yaml", "--storage", db, "--trials", "1", "-q",
            cwd=workdir, check=0)
    cmd = ["automoe", "worker", "--study", "tiny", "--storage", db, "--until", "7", "-q"]
    workers = [subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    trials = _trials(db)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 7 and "RUNNING" not in states
    assert len({t.number for t in trials}) == len(trials)
