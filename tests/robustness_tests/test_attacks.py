import copy

import pytest
import torch
import torch.nn.functional as F

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.layers import TopKRouter
from automoe.models import create_model
from automoe.robustness import (
    AttackConfig,
    Normalized,
    attack_batch,
    dlr_loss,
    robust_accuracy,
    square_attack,
    transfer_examples,
    worst_case_accuracy,
)
from automoe.robustness import evaluate as evaluate_module
from automoe.robustness.attacks import routing_held_fixed, routing_passes_gradient
from automoe.training import TrainConfig, train


def _batch(dataset, n=64):
    return (torch.stack([dataset[i][0] for i in range(n)]),
            torch.tensor([dataset[i][1] for i in range(n)]))


@pytest.mark.parametrize("cfg", [
    AttackConfig(attack="fgsm", eps=0.1),
    AttackConfig(attack="pgd", eps=0.1, step_size=0.03, steps=5),
    AttackConfig(attack="pgd", norm="l2", eps=0.5, step_size=0.2, steps=5),
    AttackConfig(attack="apgd-ce", eps=0.1, steps=8),
    AttackConfig(attack="apgd-dlr", eps=0.1, steps=8),
    AttackConfig(attack="router-pgd", eps=0.1, step_size=0.03, steps=5),
    AttackConfig(attack="apgd-fixed-routing", eps=0.1, steps=8),
    AttackConfig(attack="square", eps=0.1, steps=50),
], ids=lambda c: f"{c.attack}-{c.norm}")
def test_attacks_stay_in_the_ball_and_the_pixel_range(trained, cfg):
    model, val_set = trained
    x, y = _batch(val_set)
    adv = attack_batch(model, x, y, cfg, torch.Generator().manual_seed(0))
    delta = (adv - x).flatten(1)
    bound = delta.abs().max(1).values if cfg.norm == "linf" else delta.norm(dim=1)
    assert (bound <= cfg.eps + 1e-5).all()
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert (model(adv).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


@pytest.fixture(scope="module")
def trained_st_top1():
    """A model whose routing decision gets no gradient at all (straight-through top-1)."""
    torch.manual_seed(0)
    train_set = load_dataset("digits", "train")
    info = train_set.info
    model = create_model("resnet8", in_channels=1, num_classes=10, image_size=8,
                         input_mean=info.mean, input_std=info.std, placement="last_stage",
                         num_experts=4, top_k=1, width_multiplier=0.5, gate="st_top1")
    train(model, train_set, TrainConfig(epochs=4, lr=0.1))
    return model.eval(), load_dataset("digits", "val")


def _noise_accuracy(model, dataset, eps: float) -> float:
    """Accuracy under uniform random noise in the same L-inf ball: what an attack whose
    gradients are masked (zero, or pointing nowhere) would reach from its random start."""
    x, y = _batch(dataset, len(dataset))
    noise = torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model((x + noise).clamp(0, 1)).argmax(1) == y).float().mean().item()


# `trained` routes with top-k gates renormalised over the chosen k (gate_softmax: topk, the
# default), so at k = 1 the gate is 1 and the routing decision has no gradient either.
@pytest.mark.parametrize("model_kind", ["trained", "trained_st_top1"])
@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-dlr", "router-pgd", "fgsm",
                                    "apgd-fixed-routing"])
def test_safety_checks_against_gradient_masking(request, model_kind, attack):
    model, val_set = request.getfixturevalue(model_kind)
    eps = 0.1
    # the attack must beat random noise of its own budget by a wide margin ...
    attacked = robust_accuracy(model, val_set, AttackConfig(attack=attack, eps=eps,
                                                            step_size=eps / 4, steps=10))
    assert attacked < _noise_accuracy(model, val_set, eps) - 0.2
    # ... accuracy must fall as the budget grows, to about nothing when it is large
    small = robust_accuracy(model, val_set, AttackConfig(attack=attack, eps=eps / 4,
                                                         step_size=eps / 16, steps=10))
    big = AttackConfig(attack=attack, eps=0.5, step_size=0.1, steps=10, max_samples=200)
    assert small >= attacked - 0.02
    # one FGSM step of a large budget overshoots (pixels saturate) and does not reach zero
    # the way iterative attacks do; it must still end far below noise of that budget
    assert robust_accuracy(model, val_set, big) < (0.25 if attack == "fgsm" else 0.1)
    assert robust_accuracy(model, val_set, big) < _noise_accuracy(model, val_set, 0.5) - 0.25
    if attack == "fgsm":
        return
    weak = robust_accuracy(model, val_set, AttackConfig(attack=attack, steps=2, max_samples=200))
    strong = robust_accuracy(model, val_set, AttackConfig(attack=attack, steps=20,
                                                          max_samples=200))
    assert strong <= weak + 0.02  # more steps never help the model beyond noise


def test_the_masking_check_catches_a_masked_model(trained):
    model, val_set = trained

    class Quantised(torch.nn.Module):  # rounding to 8 bits: zero input gradient everywhere
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(torch.round(x * 255) / 255)

    masked = Quantised(model).eval()
    attacked = robust_accuracy(masked, val_set, AttackConfig(eps=0.1, step_size=0.025, steps=10))
    assert attacked >= _noise_accuracy(masked, val_set, 0.1) - 0.2


class _Quantised(torch.nn.Module):
    """Rounds its input to 8 bits: zero input gradient everywhere (masked gradients)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 255) / 255)


def test_square_and_transfer_see_through_masked_gradients(trained):
    model, val_set = trained
    masked = _Quantised(model).eval()
    data = torch.utils.data.Subset(val_set, range(200))
    pgd = AttackConfig(eps=0.1, step_size=0.025, steps=10)
    square = AttackConfig(attack="square", eps=0.1, steps=200)
    # PGD on the unmasked twin, scored on the masked model
    report = worst_case_accuracy(masked, data, [pgd, square],
                                 transfer={"transfer": transfer_examples(model, data, pgd)})
    white, black = report.per_attack[pgd.describe()], report.per_attack[square.describe()]
    assert black < white - 0.2 and report.per_attack["transfer"] < white - 0.2
    assert report.white_box == pytest.approx(white)  # Square and transfer are not white-box
    assert report.worst <= min(report.per_attack.values())
    # on the unmasked model the gradient attack is at least as strong as the black-box one
    plain = worst_case_accuracy(model, data, [pgd, square])
    assert plain.per_attack[pgd.describe()] <= plain.per_attack[square.describe()] + 0.05


def test_square_is_repeatable_and_uses_no_gradient(trained):
    model, val_set = trained
    x, y = _batch(val_set)
    runs = [square_attack(model, x.requires_grad_(False), y, 0.1, 30,
                          torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*runs) and not runs[0].requires_grad


def test_restarts_never_increase_robust_accuracy(trained):
    model, val_set = trained
    one = robust_accuracy(model, val_set, AttackConfig(steps=5, max_samples=200, restarts=1))
    five = robust_accuracy(model, val_set, AttackConfig(steps=5, max_samples=200, restarts=5))
    assert five <= one
    cfg = AttackConfig(steps=3, max_samples=100, seed=7)
    assert robust_accuracy(model, val_set, cfg) == robust_accuracy(model, val_set, cfg)


def test_pgd_agrees_with_foolbox(trained):
    foolbox = pytest.importorskip("foolbox")
    model, val_set = trained
    eps, step, steps = 8 / 255, 2 / 255, 20
    ours = robust_accuracy(model, val_set, AttackConfig(eps=eps, step_size=step, steps=steps))
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    attack = foolbox.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=True)
    x, y = _batch(val_set, len(val_set))
    _, _, success = attack(fmodel, x, y, epsilons=eps)
    theirs = 1 - success.float().mean().item()
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_normalised_models_are_attacked_in_pixel_units(trained):
    model, val_set = trained
    mean, std = model.input_mean.flatten().tolist(), model.input_std.flatten().tolist()
    # the same network, but taking normalised inputs, wrapped back to pixels
    inner = create_model("resnet8", **{**model.config.to_dict(), "input_mean": (0.0,),
                                       "input_std": (1.0,)})
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("input_")}
    inner.load_state_dict(weights, strict=False)
    wrapped = Normalized(inner.eval(), mean, std)
    cfg = AttackConfig(steps=5, max_samples=128)
    assert robust_accuracy(wrapped, val_set, cfg) == robust_accuracy(model, val_set, cfg)


def test_router_aware_attack_moves_the_routing(trained):
    model, val_set = trained
    x, y = _batch(val_set, 128)
    layer = model.moe_layers()[0]

    def routes(images):
        layer.keep_routing = True
        with torch.no_grad():
            model(images)
        route = layer.last_routing.expert_index[:, 0].clone()
        layer.keep_routing = False
        return route

    clean = routes(x)
    budget = dict(eps=0.1, step_size=0.03, steps=10)
    plain = attack_batch(model, x, y, AttackConfig(**budget), torch.Generator().manual_seed(0))
    aware = attack_batch(model, x, y, AttackConfig(attack="router-pgd", router_weight=10.0,
                                                   **budget), torch.Generator().manual_seed(0))
    assert (routes(aware) != clean).float().mean() >= (routes(plain) != clean).float().mean()
    model(x)
    assert layer.last_routing is None and not layer.keep_routing


def test_dlr_loss_matches_its_definition():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
    labels = torch.tensor([0, 1])
    # sample 0 is correct: -(3 - 1) / (3 - 0); sample 1 is wrong: -(2 - 5) / (5 - 1)
    torch.testing.assert_close(dlr_loss(logits, labels), torch.tensor([-2 / 3, 3 / 4]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(attack="cw"), "attack must be one of"),
    (dict(norm="l1"), "norm must be one of"),
    (dict(attack="apgd-ce", norm="l2"), "not implemented for the l2 norm"),
    (dict(attack="fgsm", norm="l2"), "not implemented for the l2 norm"),
    (dict(eps=-1), "eps and step_size"),
    (dict(restarts=0), "restarts >= 1"),
])
def test_invalid_attack_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)


def test_worst_case_reports_progress_over_samples_and_attacks(trained):
    from automoe.robustness import worst_case_accuracy

    model, val_set = trained
    subset = torch.utils.data.Subset(val_set, range(70))
    configs = [AttackConfig(attack="fgsm", eps=0.05), AttackConfig(attack="pgd", eps=0.05,
                                                                   step_size=0.02, steps=2)]
    calls = []
    report = worst_case_accuracy(model, subset, configs, batch_size=32,
                                 on_progress=lambda *a: calls.append(a))
    # 3 batches x 2 attacks; done counts samples x attacks, up to 70 x 2
    assert len(calls) == 6 and calls[-1][:2] == (140, 140)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert {c[2] for c in calls} == {c.describe() for c in configs}
    assert report.samples == 70


def test_fixed_routing_routes_as_the_model_and_differentiates_as_a_constant_gate(
        trained_st_top1):
    """Through fixed routing, the straight-through model's gradient is that of the same
    model whose top-1 gate is a constant 1 (the top-k softmax of one logit): the experts'
    path alone. Without it, the straight-through gate adds its own term."""
    model, val_set = trained_st_top1
    x, y = _batch(val_set)
    constant = copy.deepcopy(model)
    routers = [m for m in constant.modules() if isinstance(m, TopKRouter)]
    for router in routers:
        router.gate = "topk"
    assert routing_passes_gradient(model) and not routing_passes_gradient(constant)

    def output_and_gradient(net, fixed):
        point = x.clone().requires_grad_(True)
        with routing_held_fixed(net, fixed):
            logits = net(point)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), point)
        return logits.detach(), grad

    free, free_grad = output_and_gradient(model, False)
    fixed, fixed_grad = output_and_gradient(model, True)
    same, same_grad = output_and_gradient(constant, False)
    torch.testing.assert_close(fixed, free)  # the forward is the model's own
    torch.testing.assert_close(same, free)
    torch.testing.assert_close(fixed_grad, same_grad)
    assert (fixed_grad - free_grad).abs().max() > 1e-3 * free_grad.abs().max()
    assert not any(m.fixed_routing for m in model.modules() if isinstance(m, TopKRouter))


@pytest.mark.parametrize("model_kind", ["trained", "trained_st_top1"])
def test_fixed_routing_is_not_run_again_where_it_is_apgd_ce(request, model_kind, monkeypatch):
    model, val_set = request.getfixturevalue(model_kind)
    data = torch.utils.data.Subset(val_set, range(64))
    configs = [AttackConfig(attack=name, eps=0.05, steps=5)
               for name in ("apgd-ce", "apgd-dlr", "apgd-fixed-routing")]
    attacked = []
    real = evaluate_module.attack_batch
    monkeypatch.setattr(evaluate_module, "attack_batch",
                        lambda m, x, y, cfg, g: attacked.append(cfg.attack) or real(m, x, y, cfg, g))
    report = worst_case_accuracy(model, data, configs)
    ce, fixed = (report.per_attack[c.describe()] for c in (configs[0], configs[2]))
    if model_kind == "trained":  # top-1 under the top-k softmax: no routing gradient
        assert "apgd-fixed-routing" not in attacked and fixed == ce
    else:
        assert "apgd-fixed-routing" in attacked
