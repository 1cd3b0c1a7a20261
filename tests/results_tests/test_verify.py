"""Verifying the front's robust accuracy with the strong worst case."""

import multiprocessing
import os
import signal
import threading
import time

import optuna
import pytest
import torch

from automoe.errors import AutomoeError, ConfigError
from automoe.export.pick import pick_trial
from automoe.results import _verify as verify_module
from automoe.results import pareto_trials
from automoe.results._verify import VerifyConfig, default_jobs, verified_results, verify_front
from automoe.search import TrialRunner, create_or_resume_study
from automoe.space import SearchSpace
from automoe.storage import AtomicFileSystemArtifactStore

SPACE = {
    "name": "ver",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["last_stage", "none"]}, "experts": 2,
               "width_multiplier": {"choices": [0.25, 0.5]}, "epochs": 1, "batch_size": 128,
               "lr": {"low": 0.05, "high": 0.2, "log": True}},
    # a weak proxy (one PGD step) that the verification must not report above
    "evaluation": {"attack": {"steps": 1, "max_samples": 64}},
}


@pytest.fixture(scope="module")
def study_and_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace.from_dict(SPACE)
    study, _ = create_or_resume_study(optuna.storages.InMemoryStorage(), "ver", space,
                                      "random", seed=0)
    store = AtomicFileSystemArtifactStore(path)
    study.optimize(TrialRunner(space, store), n_trials=4)
    return study, store


@pytest.mark.slow
def test_every_front_trial_is_verified_once_per_setting(study_and_store, monkeypatch):
    study, store = study_and_store
    config = VerifyConfig(steps=5, restarts=1)
    records = verify_front(study, store, config)
    front = [t.number for t in pareto_trials(study)]
    assert sorted(records) == sorted(front) and verified_results(study) == records
    for number, record in records.items():
        trial = study.trials[number]
        assert record["robust_accuracy_proxy"] == trial.user_attrs["robust_accuracy"]
        assert record["samples"] == 64
        # three white-box attacks and Square; transfer from the best other dense trial
        surrogate = verify_module.dense_surrogate(study, trial, store)
        assert record["transfer_from"] == (None if surrogate is None else surrogate.number)
        assert record["transfer_from"] != number
        names = ["apgd-ce", "apgd-dlr", "router-pgd", "apgd-fixed-routing", "square"]
        names += [] if surrogate is None else ["transfer"]
        assert list(record["attacks"]) == names
        assert len(record["per_attack"]) == len(names)
        assert record["robust_accuracy_verified"] <= record["white_box_worst"]
        assert record["masking_suspected"] == any(
            record["attacks"][a] < record["white_box_worst"] for a in ("square", "transfer")
            if a in record["attacks"])
        # the worst case is at most each attack's and at most the clean accuracy
        assert record["robust_accuracy_verified"] <= min(record["per_attack"].values())
        assert max(record["per_attack"].values()) <= record["clean"]
        # stronger than the one-step proxy on the same samples and budget
        assert record["robust_accuracy_verified"] <= record["robust_accuracy_proxy"] + 1e-9
    # a second call with the same settings re-attacks nothing; other settings re-attack all
    calls = []
    real = verify_module.worst_case_accuracy
    monkeypatch.setattr(verify_module, "worst_case_accuracy",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    assert verify_front(study, store, config) == records
    assert calls == []
    crafted = []  # transfer images are crafted once per surrogate, not once per trial
    real_crafting = verify_module.transfer_examples
    monkeypatch.setattr(verify_module, "transfer_examples",
                        lambda *a, **k: crafted.append(1) or real_crafting(*a, **k))
    verify_front(study, store, VerifyConfig(steps=6, restarts=1))
    assert len(calls) == len(front)
    surrogates = [verify_module.dense_surrogate(study, t, store) for t in pareto_trials(study)]
    assert len(crafted) == len({s.number for s in surrogates if s is not None})


def test_the_surrogate_is_the_best_other_dense_trial_of_the_same_width(study_and_store,
                                                                       tmp_path):
    study, store = study_and_store
    for trial in study.trials:
        surrogate = verify_module.dense_surrogate(study, trial, store)
        dense = [t for t in study.trials if t.number != trial.number
                 and not t.user_attrs["architecture"]["moe"]]
        if not dense:
            assert surrogate is None
            continue
        width = trial.user_attrs["architecture"]["width_multiplier"]
        same = [t for t in dense if t.user_attrs["architecture"]["width_multiplier"] == width]
        best = max(same or dense, key=lambda t: t.user_attrs["val_accuracy"])
        assert surrogate.number == best.number
    # a surrogate whose checkpoint retention removed is passed over for the next best
    from automoe.storage import AtomicFileSystemArtifactStore

    class Without(AtomicFileSystemArtifactStore):  # the store with one checkpoint gone
        def __init__(self, base, missing):
            super().__init__(base)
            self.missing = missing

        def open_reader(self, artifact_id):
            if artifact_id == self.missing:
                raise FileNotFoundError(artifact_id)
            return super().open_reader(artifact_id)

    for trial in study.trials:
        first = verify_module.dense_surrogate(study, trial, store)
        if first is None:
            continue
        gone = Without(store.base_path, first.user_attrs["checkpoint"]["artifact_id"])
        second = verify_module.dense_surrogate(study, trial, gone)
        assert second is None or second.number != first.number
        others = [t for t in study.trials if t.number not in (trial.number, first.number)
                  and not t.user_attrs["architecture"]["moe"]]
        assert (second is None) == (not others)
    empty = AtomicFileSystemArtifactStore(tmp_path)
    assert all(verify_module.dense_surrogate(study, t, empty) is None for t in study.trials)


def test_picks_use_the_verified_robust_accuracy(study_and_store):
    study, store = study_and_store
    verify_front(study, store, VerifyConfig(steps=5, restarts=1))
    front = pareto_trials(study)
    if len(front) < 2:
        pytest.skip("the front has one trial")
    # make the front trial with the worst proxy the best verified one
    worst_proxy = min(front, key=lambda t: t.user_attrs["robust_accuracy"])
    record = dict(verified_results(study)[worst_proxy.number], robust_accuracy_verified=100.0)
    study.set_user_attr(f"verified:{worst_proxy.number}", record)
    assert pick_trial(study, "robust").number == worst_proxy.number
    assert pick_trial(study, "accuracy", min_robust=99.0).number == worst_proxy.number


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(restarts=0), dict(max_samples=0)])
def test_bad_verify_settings(kwargs):
    with pytest.raises(ConfigError):
        VerifyConfig(**kwargs)


def test_verified_values_go_into_the_dashboard_notes_keeping_the_users_text(study_and_store):
    from optuna_dashboard import get_note, save_note

    from automoe.results._notes import note_section

    study, store = study_and_store
    save_note(study, "my own remarks on this study")
    records = verify_front(study, store, VerifyConfig(steps=5, restarts=1))
    table = note_section(study, None, "verified")
    for number, record in records.items():
        assert f"| {number} | " in table
        assert f"{record['robust_accuracy_verified']:.1f} %" in table
        trial_note = note_section(study, number, "verified")
        assert trial_note.startswith(
            f"**Verified robust accuracy: {record['robust_accuracy_verified']:.1f} %**")
        assert all(name in trial_note for name in record["per_attack"])
    # new settings replace automoe's section; the user's text stays, once
    verify_front(study, store, VerifyConfig(steps=6, restarts=1))
    note = get_note(study)
    assert note.startswith("my own remarks on this study")
    assert note.count("<!-- automoe:verified -->") == 1
    assert all("6 steps" in note_section(study, n, "verified") for n in records)


def _forget_verification(study):
    """Mark every stored verification as made with other settings, so the next call
    attacks the whole front again."""
    for number in verified_results(study):
        study.set_user_attr(f"verified:{number}", {"settings": None})


@pytest.fixture
def one_thread():
    """One torch thread here, so a pool of processes (one thread each) sums in the same
    order as this process and must give the same numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_verifying_in_processes_gives_the_records_of_one_process(study_and_store, one_thread):
    study, store = study_and_store
    config = VerifyConfig(steps=4, restarts=2, square_queries=30)
    _forget_verification(study)
    here = verify_front(study, store, config, jobs=1)
    _forget_verification(study)
    pooled = verify_front(study, store, config, jobs=2)
    assert list(pooled) == list(here)  # in front order
    for number, record in here.items():
        assert record["worker"]["pid"] == os.getpid()
        other = pooled[number]
        assert other["worker"]["pid"] != os.getpid() and other["worker"]["threads"] == 1
        # the same numbers, each on its own trial (a mixed-up order would swap them)
        assert ({k: v for k, v in other.items() if k != "worker"}
                == {k: v for k, v in record.items() if k != "worker"})
        assert verified_results(study)[number] == other
    assert len({record["worker"]["pid"] for record in pooled.values()}) <= 2


def test_a_killed_verifying_process_is_one_clear_error(study_and_store):
    study, store = study_and_store
    _forget_verification(study)
    before = verified_results(study)
    outcome = []

    def run():
        try:
            verify_front(study, store, VerifyConfig(steps=50, restarts=2), jobs=2)
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - the test looks at which it is
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    # the pool's processes import torch before they take a job: killed now, none is done
    while thread.is_alive() and not multiprocessing.active_children():
        time.sleep(0.01)
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive()
    (error,) = outcome
    assert isinstance(error, AutomoeError) and "verifying process died" in str(error)
    assert verified_results(study) == before  # nothing half-written


@pytest.mark.parametrize("jobs", [0, -1])
def test_bad_jobs(study_and_store, jobs):
    study, store = study_and_store
    _forget_verification(study)
    with pytest.raises(ConfigError, match="jobs >= 1"):
        verify_front(study, store, VerifyConfig(steps=1, restarts=1), jobs=jobs)


def test_default_jobs():
    threads = torch.get_num_threads()
    assert default_jobs(1) == 1  # never more processes than trials
    assert default_jobs(100) == threads
    assert default_jobs(100, "cuda") == 1  # the processes would share one device
