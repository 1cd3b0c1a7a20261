"""What a stopped run fails: its own trials, and a trial a force-stopped worker created
before it could write its record, but never another run's or a live worker's."""

import threading
from datetime import datetime

import optuna

from automoe.search._executors import fail_running_trials


def _running(study, worker=None):
    trial = study.ask()
    if worker is not None:
        trial.set_user_attr("worker", worker)
    return trial


def test_a_stopped_run_fails_its_trials_and_unclaimed_new_ones():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize"])
    before = _running(study)  # no record, but older than the run: not the run's
    since = datetime.now()
    ours = _running(study, {"run": "r1", "pid": 1})
    theirs = _running(study, {"run": "r2", "pid": 2})  # another run's worker
    orphan = _running(study)  # created by a worker killed before it wrote its record
    late = _running(study)  # a live worker that writes its record within the grace
    writer = threading.Timer(0.2, late.set_user_attr, ("worker", {"run": "r3", "pid": 3}))
    writer.start()
    failed = fail_running_trials(study, "r1", "interrupted", since=since, grace=1.0)
    writer.join()
    assert sorted(failed) == sorted([ours.number, orphan.number])
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {before.number: "RUNNING", ours.number: "FAIL", theirs.number: "RUNNING",
                      orphan.number: "FAIL", late.number: "RUNNING"}
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in study.get_trials()}
    assert reasons[orphan.number] == "interrupted"


def test_without_since_only_the_runs_own_trials_fail():
    study = optuna.create_study(directions=["maximize"])
    ours = _running(study, {"run": "r1"})
    _running(study)
    assert fail_running_trials(study, "r1", "stopped") == [ours.number]
