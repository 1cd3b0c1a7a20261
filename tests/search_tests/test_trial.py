"""One real study in memory: constraints, user attrs, checkpoints."""

import optuna
import pytest

from automoe.search import TrialRunner
from automoe.space import SearchSpace
from automoe.storage import AtomicFileSystemArtifactStore

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["last_stage", "none"]}, "experts": 2,
               "width_multiplier": 0.5, "epochs": 1, "batch_size": 256},
    "evaluation": {"attack": {"steps": 1, "max_samples": 32}},
}


@pytest.mark.parametrize("bound,feasible", [(1000.0, True), (0.001, False)])
def test_constraints_mark_trials_feasible_or_not(tmp_path, bound, feasible):
    space = SearchSpace.from_dict({**TINY, "constraints": {"mmacs_max": bound,
                                                           "val_accuracy_min": 0.0}})
    runner = TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path))
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(runner, n_trials=2)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        assert set(trial.constraints) == {"mmacs_max", "val_accuracy_min"}
        assert trial.user_attrs["feasible"] is feasible
        mmacs = trial.user_attrs["macs"]["active"] / 1e6
        assert trial.user_attrs["constraints"]["mmacs_max"] == pytest.approx(mmacs - bound)
    # Optuna 5: the front holds feasible trials only
    assert bool(study.best_trials) is feasible


def test_unknown_constraint_is_rejected():
    from automoe.errors import ConfigError

    with pytest.raises(ConfigError, match="constraints.latency_max: unknown constraint"):
        SearchSpace.from_dict({**TINY, "constraints": {"latency_max": 3}})


def test_objectives_come_from_the_space(tmp_path):
    from automoe.search import create_or_resume_study, make_sampler

    space = SearchSpace.from_dict({**TINY, "objectives": {"val_accuracy": "maximize",
                                                          "mparams": "minimize",
                                                          "latency_ms": "minimize"},
                                   "evaluation": {"latency": {"repeats": 3, "warmup": 1}}})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, _ = create_or_resume_study(optuna.storages.InMemoryStorage(), "o", space,
                                      make_sampler("random", 0))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "mparams", "latency_ms"]
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=2)
    for t in study.trials:
        acc, mparams, latency = t.values
        assert acc == t.user_attrs["val_accuracy"]
        assert mparams == pytest.approx(t.user_attrs["params"] / 1e6)
        assert latency > 0
        # robust accuracy is neither an objective nor constrained: not measured
        assert "robust_accuracy" not in t.user_attrs


def test_grid_sampler_enumerates_the_space(tmp_path):
    from automoe.search import create_or_resume_study, make_sampler

    space = SearchSpace.from_dict({**TINY, "params": {
        **TINY["params"], "experts": {"choices": [2, 3]}, "top_k": {"low": 1, "high": 3},
        "placement": "last_stage"}, "objectives": ["val_accuracy", "mmacs"]})
    assert space.grid() == {"experts": [2, 3], "top_k": [1, 2, 3]}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, _ = create_or_resume_study(optuna.storages.InMemoryStorage(), "g", space,
                                      make_sampler("grid", 0, space=space))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=6)
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    # k <= E holds even where the grid proposes k = 3 with 2 experts
    pairs = {(t.user_attrs["config"]["model"]["num_experts"],
              t.user_attrs["config"]["model"]["top_k"]) for t in study.trials}
    assert pairs == {(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)}


def test_a_stale_training_state_is_never_resumed(tmp_path):
    # a state left by an earlier run under the same study name and trial number (a
    # Ctrl-C'd search whose DB was then deleted) belongs to no retry: it is ignored
    import torch

    space = SearchSpace.from_dict(TINY)
    stale = tmp_path / "resume" / "s" / "trial-0.pt"
    stale.parent.mkdir(parents=True)
    torch.save({"epochs_done": 1, "candidate": "another"}, stale)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", directions=["maximize", "minimize", "maximize"])
    runner = TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path / "a"),
                         resume_dir=tmp_path / "resume")
    study.optimize(runner, n_trials=1)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and "resumed_from" not in trial.user_attrs
    assert not stale.exists()


def test_resume_state_written_atomically_and_swept(tmp_path):
    from automoe.search._resume import load_resume as _load_resume
    from automoe.search._resume import remove_resume as _remove
    from automoe.search._resume import save_resume as _save_resume

    path = tmp_path / "resume" / "trial-3.pt"
    _save_resume(path, {"candidate": "k", "epochs_done": 2})
    assert _load_resume(path, "k")["epochs_done"] == 2
    assert _load_resume(path, "other") is None  # saved for another candidate
    # a worker SIGKILLed mid-write leaves its temp file; the trial's next owner sweeps it
    orphan = path.parent / ".trial-3.tmp-abc123.pt"
    orphan.write_bytes(b"half")
    neighbour = path.parent / ".trial-30.tmp-def456.pt"  # another trial's write in flight
    neighbour.write_bytes(b"busy")
    _remove(path)
    assert not path.exists() and not orphan.exists() and neighbour.exists()


def test_min_expert_use_marks_a_collapsed_trial_infeasible(tmp_path):
    # Zero router weights on raw features, no noise, no router gradient at k = 1 and no
    # balancing: every sample ties, so every one goes to the same expert (use 1/E).
    collapsed = {**TINY["params"], "placement": "last_stage", "experts": 4, "top_k": 1,
                 "router_norm": "none", "router_init": 0.0, "gate": "topk",
                 "gate_softmax": "topk", "balance_weight": 0.0, "router_z_loss": 0.0}
    dense = {**TINY["params"], "placement": "none"}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for params, feasible in ((collapsed, False), (dense, True)):
        space = SearchSpace.from_dict({**TINY, "params": params,
                                       "constraints": {"min_expert_use": 0.5}})
        study = optuna.create_study(directions=["maximize", "minimize", "maximize"])
        study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=1)
        trial = study.trials[0]
        assert trial.user_attrs["feasible"] is feasible
        if feasible:  # a dense trial has no router to judge
            assert "expert_use" not in trial.user_attrs
            assert trial.user_attrs["constraints"]["min_expert_use"] == 0.0
        else:
            assert trial.user_attrs["expert_use"] == pytest.approx(0.25)
            health = trial.user_attrs["router_health"]
            assert health and all(h["effective_experts"] == pytest.approx(1.0)
                                  for h in health.values())


def _one_complete_trial(space, tmp_path) -> optuna.trial.FrozenTrial:
    """One trial of ``space`` (random sampler, seed 0), which must complete."""
    from automoe.search import create_or_resume_study, make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, _ = create_or_resume_study(optuna.storages.InMemoryStorage(), "one", space,
                                      make_sampler("random", 0))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    return trial


def test_an_upcycling_trial_trains_both_phases_and_measures_specialisation(tmp_path):
    space = SearchSpace.from_dict({**TINY, "params": {
        **TINY["params"], "placement": "last_stage", "epochs": 2, "upcycle": 0.5,
        "router_lr_mult": 0.5}, "objectives": ["val_accuracy", "mmacs", "specialisation"],
        "constraints": {"min_specialisation": 0.0}})
    trial = _one_complete_trial(space, tmp_path)
    attrs = trial.user_attrs
    assert attrs["config"]["train"]["upcycle"] == 0.5
    # the dense phase counts: its epoch is in the curve, the epoch count and the time
    assert [row.get("dense_phase", 0) for row in attrs["history"]] == [1, 0]
    assert attrs["epochs_trained"] == 2
    special = trial.values[2]
    assert 0 <= special <= 1 and special == attrs["specialisation"]
    layers = attrs["router_health"]
    assert layers and all(0 <= h["specialisation"] <= 1 for h in layers.values())
    assert special == pytest.approx(sum(h["specialisation"] for h in layers.values())
                                    / len(layers))
    assert attrs["constraints"]["min_specialisation"] == pytest.approx(-special)


def test_a_space_that_names_no_recipe_field_upcycles_its_moe(tmp_path):
    # the library's default is the recipe, not only the shipped default space's
    space = SearchSpace.from_dict({**TINY, "params": {
        **TINY["params"], "placement": "last_stage", "epochs": 2}})
    assert "upcycle" not in space.raw["params"]
    attrs = _one_complete_trial(space, tmp_path).user_attrs
    assert [row.get("dense_phase", 0) for row in attrs["history"]] == [1, 0]


def test_the_robust_space_trains_and_measures_through_fixed_routing(tmp_path):
    """robust_moe.yaml: a straight-through trial crafts its PGD-AT examples and its robust
    proxy through fixed routing (the straight-through gate's gradient misleads both)."""
    import yaml

    from automoe.space import resolve_space_path

    raw = yaml.safe_load(resolve_space_path("robust_moe").read_text())
    raw["params"].update(placement="last_stage", gate="st_top1", experts=2, epochs=2,
                         width_multiplier=0.5)
    raw["evaluation"]["attack"]["max_samples"] = 32
    space = SearchSpace.from_dict(raw)
    trial = _one_complete_trial(space, tmp_path)
    train = trial.user_attrs["config"]["train"]
    assert train["scheme"] == "pgd_at" and train["adv_fixed_routing"] is True
    assert trial.user_attrs["attack"]["attack"] == "apgd-fixed-routing"
    assert 0 <= trial.user_attrs["robust_accuracy"] <= trial.user_attrs["val_accuracy"]


def test_the_cluttered_digits_space_runs_a_trial(tmp_path):
    # the capacity-bound task is one --space away: the shipped space, with a short recipe
    from automoe.space import resolve_space_path

    raw = SearchSpace.from_file(resolve_space_path("cluttered_digits")).raw
    raw = {**raw, "params": {**raw["params"], "epochs": 2, "width_multiplier": 0.5},
           "evaluation": TINY["evaluation"]}
    space = SearchSpace.from_dict(raw, source="cluttered_digits.yaml")
    assert space.dataset["name"] == "cluttered_digits"
    trial = _one_complete_trial(space, tmp_path)
    assert 0 < trial.values[0] <= 100
