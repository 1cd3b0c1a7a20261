import copy
import math
from dataclasses import replace

import pytest
import torch

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.layers import TopKRouter
from automoe.models import create_model
from automoe.training import TrainConfig, train
from automoe.training.robust import SCHEMES, AdvMoEStep, pgd_at_loss, router_parameters, trades_loss


def _model(**cfg):
    return create_model("resnet8", in_channels=1, image_size=8, width_multiplier=0.5,
                        **{"placement": "last_stage", "num_experts": 3, "top_k": 1,
                           "gate": "topk", **cfg})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_trains(digits, scheme):
    torch.manual_seed(0)
    subset = torch.utils.data.Subset(digits, range(256))
    result = train(_model(), subset, TrainConfig(epochs=2, lr=0.1, scheme=scheme, adv_steps=2))
    losses = [h["loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[1] < losses[0]


def _sgd(params, lr):
    return torch.optim.SGD(params, lr=lr)


def test_advmoe_alternates_experts_and_routers():
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for main_lr, router_lr in ((0.1, 0.0), (0.0, 0.1)):
        model = _model()
        routers = {id(p) for p in router_parameters(model)}
        others = [p for p in model.parameters() if id(p) not in routers]
        step = AdvMoEStep(model, _sgd(others, main_lr),
                          _sgd([p for p in model.parameters() if id(p) in routers], router_lr),
                          eps=8 / 255, alpha=6.0, beta=6.0)
        before = copy.deepcopy(model.state_dict())
        model.train()
        step(x, y, model.aux_loss)
        changed = {name for name, v in model.state_dict().items()
                   if v.dtype.is_floating_point and not torch.equal(v, before[name])}
        # a router's input statistics follow every training forward; its weights must not
        router_changed = {n for n in changed if ".router." in n
                          and not n.endswith(("running_mean", "running_var"))}
        weights_changed = {n for n in changed if ".router." not in n
                           and not n.endswith(("running_mean", "running_var"))}
        if router_lr == 0.0:  # step A only: experts and backbone move, routers stay
            assert weights_changed and not router_changed
        else:  # step B only: routers move
            assert router_changed and not weights_changed


def test_advmoe_needs_routed_experts(digits):
    with pytest.raises(ConfigError, match="routed experts"):
        train(_model(placement="none"), digits, TrainConfig(epochs=1, scheme="advmoe"))


@pytest.mark.parametrize("kwargs,message", [(dict(scheme="free"), "scheme must be one of"),
                                            (dict(adv_steps=0), "adv_steps"),
                                            (dict(trades_beta=-1), "trades_beta"),
                                            (dict(adv_fixed_routing=True), "pgd_at and trades"),
                                            (dict(adv_fixed_routing=True, scheme="advmoe"),
                                             "pgd_at and trades")])
def test_invalid_robust_training_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("loss_fn", [pgd_at_loss, lambda *a, **k: trades_loss(*a, 6.0, **k)],
                         ids=["pgd_at", "trades"])
def test_fixed_routing_crafts_the_examples_of_a_constant_gate(digits, loss_fn):
    """Through fixed routing, a straight-through model's training examples are those of the
    same model whose top-1 gate is the constant 1 (top-k softmax); without it they are not,
    since the straight-through gate adds its gradient to the attack's."""
    torch.manual_seed(0)
    model = _model(gate="st_top1")
    train(model, torch.utils.data.Subset(digits, range(512)), TrainConfig(epochs=2, lr=0.1))
    model.eval()
    constant = copy.deepcopy(model)
    for router in (m for m in constant.modules() if isinstance(m, TopKRouter)):
        router.gate = "topk"
    x, y = (torch.stack([digits[i][0] for i in range(64)]),
            torch.tensor([digits[i][1] for i in range(64)]))

    def loss(net, **kwargs):
        torch.manual_seed(1)  # the same random start
        return loss_fn(net, x, y, 8 / 255, 2 / 255, 3, **kwargs)[0]

    fixed, same, free = loss(model, fixed_routing=True), loss(constant), loss(model)
    # within float rounding (the straight-through gate's forward is 1 + s - s) ...
    torch.testing.assert_close(fixed, same, rtol=0, atol=1e-6)
    # ... and far outside it for the straight-through gradient (about 1e-5 for TRADES,
    # whose examples start next to x, where the KL's own gradient is tiny)
    assert (fixed - free).abs() > 5e-6


def _advmoe_net(seed: int, info):
    torch.manual_seed(seed)
    return create_model("resnet8", in_channels=1, num_classes=10, image_size=16,
                        input_mean=info.mean, input_std=info.std, placement="last_two",
                        granularity="conv", num_experts=4, top_k=1, gate="st_top1",
                        balance_loss="supervised", balance_weight=1.0, router="global",
                        width_multiplier=0.5)


@pytest.mark.slow
def test_the_advmoe_recipe_trains_at_the_largest_lr_the_spaces_sample():
    from automoe.errors import TrainingDivergedError

    train_set = load_dataset("digits", "train", image_size=16)
    subset = torch.utils.data.Subset(train_set, range(640))
    # from scratch (upcycle=0), where the divergence without clipping was seen
    recipe = dict(epochs=3, lr=0.2, scheme="advmoe", adv_steps=2, adv_step_size=5 / 255,
                  upcycle=0)
    assert TrainConfig(**recipe).clip_norm == 1.0  # the scheme's default
    assert replace(TrainConfig(**recipe), scheme="pgd_at").clip_norm == 0.0
    for seed in (0, 1):
        result = train(_advmoe_net(seed, train_set.info), subset,
                       TrainConfig(**recipe, seed=seed))
        assert all(math.isfinite(row["loss"]) for row in result.history)
    # without the clipping, the same runs diverge: what the default is there for
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        train(_advmoe_net(0, train_set.info), subset,
              TrainConfig(**recipe, seed=0, grad_clip=0.0))
