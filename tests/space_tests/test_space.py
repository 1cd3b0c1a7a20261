from pathlib import Path

import optuna
import pytest

from automoe.errors import ConfigError
from automoe.space import SearchSpace, resolve_space_path

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "name": "t",
    "params": {
        "placement": {"choices": ["none", "last_stage", "all"]},
        "experts": {"low": 1, "high": 4},
        "top_k": {"low": 1, "high": 3},
        "lr": {"low": 0.01, "high": 0.1, "log": True},
        "epochs": 2,
    },
}


def _space(**overrides):
    raw = {**BASE, **overrides}
    raw["params"] = {**BASE["params"], **overrides.get("params", {})}
    return SearchSpace.from_dict(raw, source="t.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    space = SearchSpace.from_file(path)
    assert space.trials >= 1 and space.dimensions


def test_every_parameter_is_sampled_with_one_distribution_and_k_is_capped_at_e():
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_dense = seen_capped = False
    for _ in range(60):
        trial = study.ask()
        candidate = space.suggest(trial)
        model = candidate.model
        # every searched parameter is drawn in every trial, dense or not
        assert set(trial.params) == {"placement", "experts", "top_k", "lr"}
        assert 1 <= model["top_k"] <= model["num_experts"]
        if model["placement"] == "none":
            seen_dense = True
            assert model["num_experts"] == 1 and model["top_k"] == 1
            assert set(candidate.unused) == {"experts", "top_k"}
        else:
            assert candidate.unused == ()
            assert model["top_k"] == min(trial.params["top_k"], trial.params["experts"])
            seen_capped |= trial.params["top_k"] > trial.params["experts"]
        study.tell(trial, 0.0)
    assert seen_dense and seen_capped
    # the same distribution in every trial: all of them are in the intersection space
    # that NSGA-II crosses over
    space_of_all = optuna.search_space.intersection_search_space(study.get_trials())
    assert set(space_of_all) == {"placement", "experts", "top_k", "lr"}


def test_fingerprint_tracks_meaning_not_run_settings():
    a = _space()
    assert a.fingerprint() == _space(trials=99, sampler={"name": "tpe"}).fingerprint()
    assert a.fingerprint() != _space(params={"epochs": 3}).fingerprint()
    assert a.fingerprint() != a.with_dataset("mnist").fingerprint()


def test_every_granularity_router_and_gate_can_be_searched():
    space = _space(params={
        "granularity": {"choices": ["conv", "pathway", "block", "channel"]},
        "router": {"choices": ["linear", "conv", "mlp", "global"]},
        "gate": {"choices": ["topk", "vmoe"]},
        "balance_loss": {"choices": ["importance", "switch", "entropy", "supervised"]},
        "capacity_factor": {"low": 0.5, "high": 2.0},
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        space.suggest(trial)  # never raises
        study.tell(trial, 0.0)


def test_robust_training_and_attacks_are_search_dimensions():
    space = _space(params={"placement": {"choices": ["last_stage", "all"]},
                           "scheme": {"choices": ["standard", "pgd_at", "trades", "advmoe"]},
                           "trades_beta": {"low": 1.0, "high": 6.0}},
                   evaluation={"attack": {"attack": "apgd-ce", "steps": 5, "max_samples": 64}})
    assert space.attack.attack == "apgd-ce"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    schemes = set()
    for _ in range(20):
        trial = study.ask()
        schemes.add(space.suggest(trial).train.scheme)
        study.tell(trial, 0.0)
    assert schemes == {"standard", "pgd_at", "trades", "advmoe"}
    # the attack defines the objective: another attack is another study
    other = _space(params={"placement": {"choices": ["last_stage", "all"]},
                           "scheme": {"choices": ["standard", "pgd_at", "trades", "advmoe"]},
                           "trades_beta": {"low": 1.0, "high": 6.0}},
                   evaluation={"attack": {"attack": "pgd", "steps": 5, "max_samples": 64}})
    assert other.fingerprint() != space.fingerprint()


def test_fractions_and_fixed_values():
    space = _space(evaluation={"attack": {"eps": "8/255", "steps": 3}})
    assert space.attack.eps == pytest.approx(8 / 255) and space.attack.steps == 3
    assert space.fixed == {"epochs": 2}


@pytest.mark.parametrize("overrides,message", [
    ({"params": {"top_k": 5, "experts": 4}}, "top-k 5 exceeds 4 experts"),
    ({"params": {"top_k": {"low": 3, "high": 4}, "experts": {"low": 2, "high": 8}}},
     "top-k 3 exceeds 2 experts"),
    ({"params": {"experts": {"low": 4, "high": 2}}}, "low 4 is greater than high 2"),
    ({"params": {"lr": {"low": 0, "high": 1, "log": True}}}, "log scale needs low > 0"),
    ({"params": {"epochs": 2.5}}, "params.epochs: must be an integer"),
    ({"params": {"depth": 3}}, "params.depth: unknown parameter"),
    ({"params": {"placement": {"choices": ["middle"]}}}, "params.placement: placement 'middle'"),
    ({"params": {"placement": {"choices": []}}}, "non-empty list"),
    ({"params": {"balance_weight": -1.0}}, "balance_weight must be >= 0"),
    ({"model": {"name": "vgg99"}}, "model.name: unknown model"),
    ({"model": {"in_channels": 3}}, "is set from the dataset"),
    ({"model": {"num_experts": 3}}, "is a search parameter"),
    ({"trials": 0}, "trials: must be a positive integer"),
    ({"colour": "blue"}, "colour: unknown key"),
    ({"evaluation": {"attack": {"eps": "eight"}}}, "evaluation.attack.eps: must be a number"),
    ({"params": {"router": {"choices": ["linear", "global"]}}},
     "global router takes gate 'topk', 'vmoe' or 'st_top1' (with placement=last_stage, "
     "router=global)"),
    ({"params": {"gate": "st_top1"}}, "gate 'st_top1' routes to one expert"),
    ({"params": {"granularity": {"choices": ["conv", "rows"]}}}, "granularity must be one of"),
    ({"params": {"scheme": "advmoe"}}, "(with placement=none); remove a choice"),
    ({"params": {"scheme": "madry"}}, "scheme must be one of"),
    ({"evaluation": {"attack": {"attack": "apgd-ce", "norm": "l2"}}}, "not implemented for the l2 norm"),
])
def test_invalid_spaces_name_file_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as info:
        _space(**overrides)
    assert str(info.value).startswith("t.yaml: ")
    assert message in str(info.value)


def test_yaml_errors_give_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparams: {experts: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+"):
        SearchSpace.from_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_space_path(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no search space named"):
        resolve_space_path("no-such-space")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        SearchSpace.from_file(tmp_path / "list.yaml")


def test_space_names_resolve_to_the_shipped_files():
    assert resolve_space_path("default").name == "default.yaml"


@pytest.mark.parametrize("objectives,message", [
    (["accuracy"], "objectives: unknown metric 'accuracy'"),
    ({"mmacs": "maximize"}, "objectives.mmacs: mmacs can only be minimized"),
    ([], "objectives: needs at least one metric"),
    (["mmacs", "mmacs"], "objectives: repeats a metric"),
])
def test_invalid_objectives_are_named(objectives, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict({"name": "s", "objectives": objectives})


def test_objectives_change_the_fingerprint():
    a = SearchSpace.from_dict({"name": "s"})
    b = SearchSpace.from_dict({"name": "s", "objectives": ["val_accuracy", "mmacs"]})
    assert a.objectives == ("val_accuracy", "mmacs", "robust_accuracy")
    assert a.fingerprint() != b.fingerprint()


def test_grid_needs_steps():
    space = SearchSpace.from_dict({"name": "s", "params": {"lr": {"low": 0.01, "high": 0.1}}})
    with pytest.raises(ConfigError, match="params.lr: the grid sampler needs"):
        space.grid()


def test_the_shipped_spaces_are_found_from_any_folder(tmp_path, monkeypatch):
    from automoe.space import list_spaces, resolve_space_path

    monkeypatch.chdir(tmp_path)  # no search_spaces/ here: the package's own are found
    assert resolve_space_path("default").name == "default.yaml"
    assert {"default", "robust_moe"} <= set(list_spaces())
