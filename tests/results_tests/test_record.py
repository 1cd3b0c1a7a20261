"""The trial record: what a trial stores, read back with one set of defaults."""

from pathlib import Path

import optuna
import pytest

import automoe
from automoe.models import MoENetConfig
from automoe.results import StudyRecord, TrialRecord, TrialWriter
from automoe.space import SearchSpace

SPACE = {
    "name": "rec",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["last_stage", "none"]}, "width_multiplier": 0.5,
               "epochs": 1},
}


def test_architecture_is_the_built_models_not_the_sampled_dict():
    space = SearchSpace.from_dict(SPACE)  # no `experts` parameter: the config default
    moe = space.suggest(optuna.trial.FixedTrial({"placement": "last_stage"})).architecture()
    assert moe["moe"] is True
    assert moe["experts"] == MoENetConfig.num_experts and moe["top_k"] == MoENetConfig.top_k
    dense = space.suggest(optuna.trial.FixedTrial({"placement": "none"})).architecture()
    assert (dense["moe"], dense["experts"], dense["top_k"]) == (False, 1, 1)
    capped = SearchSpace.from_dict({**SPACE, "params": {
        **SPACE["params"], "experts": 2, "top_k": {"low": 1, "high": 3}}})
    arch = capped.suggest(optuna.trial.FixedTrial({"placement": "last_stage", "top_k": 3}))
    assert arch.architecture()["top_k"] == 2  # k <= E by construction


def test_writer_and_record_round_trip_with_defaults():
    study = optuna.create_study(directions=["maximize", "minimize"])
    empty = study.ask()
    study.tell(empty, [1.0, 2.0])
    record = TrialRecord(study.trials[0])
    assert (record.config, record.architecture, record.history, record.rungs) == ({}, {}, [], {})
    assert record.feasible and record.fidelity == "trained" and record.seconds == 0
    assert record.metric("val_accuracy") is None and not record.is_moe

    trial = study.ask()
    writer = TrialWriter(trial)
    writer.started({"model": {"placement": "all"}}, {"moe": True, "experts": 4},
                   {"name": "digits"}, {"host": "h"}, supernet=True)
    writer.metrics({"val_accuracy": 90.0, "test_accuracy": 88.0, "expert_use": 0.75})
    writer.costs({"active": 1e6}, {"mmacs": 1.0})
    writer.training([{"epoch": 1, "loss": 0.5}], 1, train_seconds=1.25, eval_seconds=0.5)
    writer.constraints({"mmacs_max": 0.5})
    writer.checkpoint("abc", "f00")
    study.tell(trial, [90.0, 1.0])
    record = TrialRecord(study.trials[1])
    assert record.is_moe and record.fidelity == "supernet" and record.worker == {"host": "h"}
    assert record.metrics == {"val_accuracy": 90.0, "mmacs": 1.0, "expert_use": 0.75,
                              "test_accuracy": 88.0}
    assert record.seconds == pytest.approx(1.75) and not record.feasible
    assert record.checkpoint == {"artifact_id": "abc", "sha256": "f00"}
    assert study.trials[1].constraints == {"mmacs_max": 0.5}

    studies = StudyRecord(study)
    studies.write_verified(1, {"robust_accuracy_verified": 12.5})
    assert studies.verified == {1: {"robust_accuracy_verified": 12.5}}
    assert studies.seed == 0 and studies.fidelity == "trained"


def test_only_the_record_module_touches_user_attrs():
    package = Path(automoe.__file__).parent
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name != "_record.py" and "user_attr" in p.read_text()]
    assert offenders == []
