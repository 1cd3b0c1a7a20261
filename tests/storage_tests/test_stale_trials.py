"""Losing the database is not dying: a trial silent through an outage that beats again is
not failed, and a dead worker's trial still is."""

import time

import optuna

from automoe.storage import open_storage


def test_a_trial_silent_through_an_outage_keeps_its_claim_if_it_beats_again(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    owner = open_storage(url, heartbeat_interval=1)  # grace period: 3 s
    judge = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(storage=owner, study_name="s")
    trial_id = owner.create_new_trial(study._study_id)
    owner.record_heartbeat(trial_id)
    judged = optuna.load_study(study_name="s", storage=judge)

    def state():
        return judge.get_trial(trial_id).state.name

    # no beat for longer than the grace period, as through a DB restart (SQLite's clock
    # counts whole seconds, so 4.5 s reads as at least 4 > 3)
    time.sleep(4.5)
    optuna.storages.fail_stale_trials(judged)
    assert state() == "RUNNING"  # first sight of a silent trial: watched, not failed
    owner.record_heartbeat(trial_id)  # the owner reaches the database again
    optuna.storages.fail_stale_trials(judged)
    assert state() == "RUNNING"
    # now the owner dies: seen silent, and still silent a grace period later, it is failed
    deadline = time.monotonic() + 30
    while state() == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
        optuna.storages.fail_stale_trials(judged)
    assert state() == "FAIL"
