"""Upcycling as a training schedule, and the routers' own learning rate."""

import copy

import pytest
import torch

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.models import create_model, dense_twin
from automoe.training import TrainConfig, param_groups, train
from automoe.training.robust import router_parameters


@pytest.fixture(scope="module")
def data():
    return torch.utils.data.Subset(load_dataset("digits", "train", image_size=16), range(192))


def _model(**fields):
    torch.manual_seed(0)
    return create_model("resnet8", in_channels=1, num_classes=10, image_size=16,
                        width_multiplier=0.25, **{"placement": "last_two", "num_experts": 3,
                                                  **fields})


def test_dense_phase_then_moe_phase(data):
    model = _model()
    seen = {}

    def on_epoch(epoch, result, state):
        if epoch == 2:  # the switch: the MoE must compute what the twin computes now
            seen["state"] = copy.deepcopy(state())

    result = train(model, data, TrainConfig(epochs=4, upcycle=0.5, seed=1, batch_size=32),
                   on_epoch=on_epoch)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]  # epochs are the total
    assert [row.get("dense_phase", 0.0) for row in result.history] == [1, 1, 0, 0]
    assert "expert_use" in result.history[-1] and "expert_use" not in result.history[0]
    assert result.seconds > 0
    twin = dense_twin(model)
    twin.load_state_dict(seen["state"]["model"])  # the state saved at the switch is the twin's
    assert seen["state"]["phase"] == 0


def test_the_moe_starts_where_the_twin_ended(data):
    """At the switch the MoE's outputs equal the trained twin's (k = 1 and k = 2)."""
    for top_k in (1, 2):
        model = _model(top_k=top_k)
        twins = {}

        def on_epoch(epoch, result, state, model=model, twins=twins):
            if epoch == 2:
                twin = dense_twin(model)
                twin.load_state_dict(state()["model"])
                x = torch.rand(9, 1, 16, 16)
                model.eval(), twin.eval()
                twins["diff"] = (model(x) - twin(x)).abs().max().item()
                model.train()

        train(model, data, TrainConfig(epochs=3, upcycle=0.5, seed=2, batch_size=32),
              on_epoch=on_epoch)
        assert twins["diff"] < 1e-5


@pytest.mark.parametrize("resume_after", [1, 2, 3])
def test_resume_across_the_switch_matches_an_unbroken_run(data, resume_after):
    config = TrainConfig(epochs=4, upcycle=0.5, upcycle_noise=0.05, seed=3, batch_size=32)
    unbroken = _model()
    train(unbroken, data, config)
    saved = {}

    def on_epoch(epoch, result, state):
        if epoch == resume_after:
            saved["state"] = copy.deepcopy(state())
        torch.rand(5)  # an evaluation that draws random numbers changes nothing

    train(_model(), data, config, on_epoch=on_epoch)
    resumed = _model()
    result = train(resumed, data, config, resume=saved["state"])
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    for a, b in zip(unbroken.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_continue_schedule_follows_one_cosine(data):
    lrs = {}
    for schedule in ("continue", "restart"):
        model, rates = _model(), []
        config = TrainConfig(epochs=4, upcycle=0.5, upcycle_schedule=schedule, lr=0.1,
                             batch_size=32, seed=0)
        single = TrainConfig(epochs=4, lr=0.1, batch_size=32, seed=0)
        original = torch.optim.SGD.step

        def step(self, *args, rates=rates, original=original, **kwargs):
            rates.append(self.param_groups[0]["lr"])
            return original(self, *args, **kwargs)

        torch.optim.SGD.step = step
        try:
            train(model, data, config)
            if schedule == "continue":
                train(_model(placement="none"), data, single)
        finally:
            torch.optim.SGD.step = original
        lrs[schedule] = rates
    steps = len(lrs["restart"])
    continued, reference = lrs["continue"][:steps], lrs["continue"][steps:]
    assert continued == pytest.approx(reference, rel=1e-6)  # the dense run's one cosine
    half = steps // 2
    assert lrs["restart"][half] == pytest.approx(0.1)  # a fresh cosine from the peak
    assert lrs["continue"][half] < 0.06


def test_dense_models_ignore_upcycle(data):
    a, b = _model(placement="none"), _model(placement="none")
    train(a, data, TrainConfig(epochs=2, upcycle=0.5, batch_size=32))
    train(b, data, TrainConfig(epochs=2, batch_size=32))
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("granularity,epochs,share", [
    ("conv", 4, 0.5), ("block", 4, 0.5),  # the recipe: routed experts upcycle
    ("conv", 1, 0.0),  # one epoch has no room for a dense phase
    ("condconv", 4, 0.0), ("pathway", 4, 0.0), ("channel", 4, 0.0),  # not measured / no copy
])
def test_an_unset_upcycle_is_the_recipe(granularity, epochs, share):
    config = _model(granularity=granularity).config
    recipe = TrainConfig(epochs=epochs)
    assert recipe.upcycle is None
    assert recipe.upcycle_share(config) == share
    assert recipe.upcycle_share(_model(placement="none").config) == 0.0
    assert TrainConfig(epochs=epochs, upcycle=0).upcycle_share(config) == 0.0  # off, as asked


def test_the_default_recipe_trains_the_dense_twin_first(data):
    # nothing set: conv experts upcycle at the default share, the same run as upcycle=0.5
    default, explicit = _model(), _model()
    history = train(default, data, TrainConfig(epochs=4, batch_size=32)).history
    train(explicit, data, TrainConfig(epochs=4, batch_size=32, upcycle=0.5))
    assert [row.get("dense_phase", 0) for row in history] == [1, 1, 0, 0]
    for x, y in zip(default.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_pathway_upcycling_is_refused_in_one_line(data):
    with pytest.raises(ConfigError, match="granularity 'pathway'"):
        train(_model(granularity="pathway"), data, TrainConfig(epochs=2, upcycle=0.5))


@pytest.mark.parametrize("fields", [dict(upcycle=1.0), dict(upcycle=-0.1),
                                    dict(upcycle=0.5, epochs=1), dict(upcycle_noise=-1),
                                    dict(upcycle_schedule="linear"), dict(router_lr_mult=-1)])
def test_invalid_recipe_fields(fields):
    with pytest.raises(ConfigError):
        TrainConfig(**fields)


def test_router_lr_mult_is_a_parameter_group(data):
    model = _model()
    groups = param_groups(model, TrainConfig(lr=0.1, router_lr_mult=0.01))
    routers = {id(p) for p in router_parameters(model)}
    assert {id(p) for p in groups[1]["params"]} == routers and groups[1]["lr"] == 0.001
    assert len(param_groups(model, TrainConfig(lr=0.1))) == 1
    # at 0 the routers do not move (decay included); everything else trains
    frozen = _model()
    before = [p.detach().clone() for p in router_parameters(frozen)]
    expert = frozen.features[2][0].conv1.weight.detach().clone()
    train(frozen, data, TrainConfig(epochs=1, batch_size=32, router_lr_mult=0.0))
    assert all(torch.equal(a, b) for a, b in zip(before, router_parameters(frozen), strict=True))
    assert not torch.equal(expert, frozen.features[2][0].conv1.weight)
