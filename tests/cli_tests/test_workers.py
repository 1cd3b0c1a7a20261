"""Concurrent workers on one study DB, one killed with SIGKILL mid-trial: nothing is lost
(real SQLite file, real PostgreSQL server, real processes)."""

import signal
import subprocess
import time

import optuna
import pytest
import torch

from automoe.storage import open_storage

from .conftest import TINY_SPACE, run_cli


def _trials(url):
    storage = open_storage(url, create=False)
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    return trials


def _saved_progress(path):
    """(repeat, epochs done) of a saved training state; None if it is gone or being replaced
    right now."""
    try:
        state = torch.load(path, weights_only=False)
    except Exception:
        return None
    return state.get("repeat", 0), state["epochs_done"]


def _still_running(url, number):
    """Whether a trial is running; False also when the DB cannot be read now (a worker frozen
    while it holds SQLite's write lock)."""
    try:
        return next(t for t in _trials(url) if t.number == number).state.name == "RUNNING"
    except Exception:
        return False


def _kill_one_worker_mid_trial(workdir, url, workers, target, repeats=1, kill_repeat=None):
    kill_repeat = repeats - 1 if kill_repeat is None else kill_repeat
    # slower trials, so that a worker can be killed in the middle of one
    space = TINY_SPACE.replace("epochs: 1", "epochs: 6")
    if repeats > 1:
        space = space.replace("evaluation:\n", f"evaluation:\n  repeats: {repeats}\n")
    (workdir / "slow.yaml").write_text(space)
    artifacts = workdir / "store"
    common = ["--storage", url, "--artifact-dir", str(artifacts), "--heartbeat", "1", "-q",
              "--threads", "1"]
    # the study (and a fresh DB's schema) is created once, before the workers start
    run_cli("search", "--space", "slow.yaml", "--trials", "1", *common, cwd=workdir, check=0)
    procs = [subprocess.Popen(["automoe", "worker", "--study", "tiny", "--until", str(target),
                               *common], cwd=workdir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    pids = {p.pid: p for p in procs}
    try:
        # kill the worker of a trial that has saved an early epoch's training state (of seed
        # kill_repeat, with repeats: the retry must keep the seeds measured before)
        deadline = time.monotonic() + 300
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "no trial got past its first epoch"
            progress = {int(p.stem.split("-")[1]): _saved_progress(p)
                        for p in (artifacts / "resume").rglob("trial-*.pt")}
            saved = {n for n, done in progress.items()
                     if done is not None and done[0] == kill_repeat and done[1] <= 3}
            for t in _trials(url):
                pid = t.user_attrs.get("worker", {}).get("pid")
                if t.state.name == "RUNNING" and t.number in saved and pid in pids:
                    # freeze the worker, then make sure its trial did not end in between:
                    # only a trial that is still running when its worker dies is one to check
                    pids[pid].send_signal(signal.SIGSTOP)
                    if _still_running(url, t.number):
                        victim = t
                        pids[pid].send_signal(signal.SIGKILL)
                        break
                    pids[pid].send_signal(signal.SIGCONT)
            time.sleep(0.1)
        for proc in procs:
            _, stderr = proc.communicate(timeout=600)
            assert proc.returncode in (0, -signal.SIGKILL), stderr
    finally:
        for proc in procs:
            proc.kill()

    trials = _trials(url)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == target and "RUNNING" not in states
    assert len({t.number for t in trials}) == len(trials)  # no duplicate trial numbers
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL"
    retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    (retry,) = [t for t in trials if retry_of(t) == victim.number]
    assert retry.params == victim.params and retry.state.name == "COMPLETE"
    # the retry continued from the dead worker's last saved epoch, with the same seed
    assert retry.user_attrs["resumed_from"]["trial"] == victim.number
    assert retry.user_attrs["resumed_from"]["epochs_done"] >= 1
    assert retry.user_attrs["config"]["train"]["seed"] == victim.user_attrs["config"]["train"][
        "seed"]
    assert len(retry.user_attrs["history"]) == 6
    fresh = [t for t in trials if t.state.name == "COMPLETE" and "resumed_from" not in t.user_attrs]
    assert all(t.user_attrs["epochs_trained"] == 6 * repeats for t in fresh)
    if repeats > 1:
        # it resumed inside the killed seed, kept the seeds measured before, trained none twice
        assert retry.user_attrs["resumed_from"]["repeat"] == kill_repeat
        # the retry trained the rest of that seed and the seeds after it, no seed before
        done = retry.user_attrs["resumed_from"]["epochs_done"]
        assert retry.user_attrs["epochs_trained"] == 6 - done + 6 * (repeats - 1 - kill_repeat)
        seeds = [r["seed"] for r in retry.user_attrs["repeats"]]
        assert len(seeds) == repeats and seeds[0] == retry.user_attrs["config"]["train"]["seed"]
        assert len(set(seeds)) == repeats
        assert set(retry.user_attrs["objective_std"]) == {"val_accuracy", "mmacs",
                                                          "robust_accuracy"}
    # states, and temp files of a worker killed mid-write, are removed once trials end
    assert not list((artifacts / "resume").rglob("*.pt"))
    assert not list(artifacts.glob(".*.tmp-*"))  # no half-written checkpoint


@pytest.mark.slow
def test_sqlite_two_workers_one_killed(workdir):
    _kill_one_worker_mid_trial(workdir, f"sqlite:///{workdir / 'w.db'}", workers=2, target=6)


@pytest.mark.slow
def test_sqlite_worker_killed_in_the_second_of_three_repeats_keeps_the_first(workdir):
    _kill_one_worker_mid_trial(workdir, f"sqlite:///{workdir / 'w.db'}", workers=2, target=3,
                               repeats=3, kill_repeat=1)


@pytest.mark.slow
def test_postgresql_three_workers_one_killed(workdir, postgres_url):
    _kill_one_worker_mid_trial(workdir, postgres_url, workers=3, target=12)


def test_workers_opening_a_fresh_postgresql_db_at_once(postgres_url):
    # the schema race (duplicate CREATE TYPE) is retried, not raised
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(lambda _: open_storage(postgres_url), range(4)))
    assert all(s.get_all_studies() == [] for s in storages)
    for s in storages:
        s.engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgres://u@h/db"])
def test_unsupported_urls_fail_before_any_worker_starts(workdir, url):
    proc = run_cli("worker", "--study", "tiny", "--storage", url, "--until", "2", cwd=workdir)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
