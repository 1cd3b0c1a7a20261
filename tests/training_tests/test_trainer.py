import pytest
import torch

from automoe.data import load_dataset
from automoe.errors import ConfigError, TrainingDivergedError
from automoe.layers import expert_use, track_expert_usage
from automoe.models import create_model
from automoe.training import TrainConfig, evaluate_accuracy, make_optimizer, train


def _model(info, **cfg):
    return create_model("resnet8", in_channels=1, num_classes=10, image_size=info.image_size,
                        input_mean=info.mean, input_std=info.std, width_multiplier=0.5, **cfg)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val")


def test_training_learns_digits_and_is_reproducible(digits):
    train_set, val_set = digits
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        model = _model(train_set.info, placement="last_stage", num_experts=4, top_k=2)
        result = train(model, train_set, TrainConfig(epochs=3, lr=0.1, seed=3))
        results.append((result.history, evaluate_accuracy(model, val_set)))
    (history, accuracy), (history2, accuracy2) = results
    assert history == history2 and accuracy == accuracy2  # same seed, same run
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["aux_loss"] > 0  # balancing loss is part of the objective
    assert accuracy > 0.8


def test_nan_loss_raises_a_clear_error(digits):
    train_set, _ = digits
    model = _model(train_set.info)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 1, step 1"):
        train(model, train_set, TrainConfig(epochs=1))


def test_on_step_reports_progress(digits):
    train_set, _ = digits
    steps = []
    train(_model(train_set.info), train_set, TrainConfig(epochs=1, batch_size=256),
          on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(i, 5) for i in range(1, 6)]  # ceil(1077 / 256) = 5


@pytest.mark.parametrize("field,value", [("epochs", 0), ("lr", -1.0), ("lr", float("nan")),
                                         ("batch_size", 0), ("momentum", 1.0)])
def test_invalid_train_config(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_resume_from_an_epoch_state_matches_an_unbroken_run():
    import copy

    import torch

    from automoe.data import load_dataset
    from automoe.models import create_model
    from automoe.training import TrainConfig, train

    data = torch.utils.data.Subset(load_dataset("digits", "train", image_size=16), range(200))

    def model():
        torch.manual_seed(0)
        return create_model("resnet8", placement="all", num_experts=3, top_k=2, in_channels=1,
                            num_classes=10, image_size=16, width_multiplier=0.25)

    config = TrainConfig(epochs=3, seed=5, batch_size=32)
    unbroken = model()
    train(unbroken, data, config)
    saved = {}

    def on_epoch(epoch, result, state):
        if epoch == 1:
            saved["state"] = copy.deepcopy(state())
        torch.rand(10)  # an evaluation drawing random numbers changes nothing

    with_callback = model()
    train(with_callback, data, config, on_epoch=on_epoch)
    resumed = model()
    result = train(resumed, data, config, resume=saved["state"])
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for a, b, c in zip(unbroken.state_dict().values(), with_callback.state_dict().values(),
                       resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def _routing_run(seed: int = 0, **fields):
    """ResNet-8 with top-1 conv experts in the last two stages, 4 epochs on digits 16x16;
    returns (history, expert use on the val split)."""
    train_set = load_dataset("digits", "train", image_size=16)
    val_set = load_dataset("digits", "val", image_size=16)
    torch.manual_seed(seed)
    model = create_model("resnet8", in_channels=1, image_size=16, placement="last_two",
                         num_experts=4, top_k=1, width_multiplier=0.5, **fields)
    result = train(model, train_set, TrainConfig(epochs=4, lr=0.1, seed=seed))
    with track_expert_usage(model) as usage:
        evaluate_accuracy(model, val_set)
    return result.history, expert_use(usage.health())


def test_default_moe_config_keeps_its_routers_spread():
    # A property of the defaults, not a timing: every MoE layer uses at least half of its
    # experts' worth on the val split, and the learning curve logs it every epoch.
    # The defaults upcycle: the first half of the epochs train the dense twin, which has no
    # router to judge.
    history, use = _routing_run()
    assert use >= 0.5
    assert [bool(row.get("dense_phase")) for row in history] == [True, True, False, False]
    moe_rows = [row for row in history if not row.get("dense_phase")]
    assert all(0 < row["expert_use"] <= 1 for row in moe_rows)
    assert history[-1]["expert_use"] >= 0.5


def test_the_old_router_defaults_collapse():
    # What the defaults fix: a zero-initialised router on raw pooled features, softmax-over-E
    # gates and independent expert draws sent every val image to one expert per layer.
    history, use = _routing_run(router_norm="none", router_init=0.0, gate_softmax="all",
                                expert_init="independent", router_z_loss=0.0)
    assert use < 0.5
    assert history[-1]["expert_use"] < 0.5


def test_fused_optimizer_updates_as_plain_sgd():
    # the trials' SGD runs fused; the same steps of PyTorch's per-parameter loop must agree
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = make_optimizer(params, config)
    plain = torch.optim.SGD(twins, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                            foreach=False)
    assert fused.defaults["fused"]
    for _ in range(4):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)


def test_fused_optimizer_takes_parameters_that_miss_the_first_step():
    # an expert that no sample reached in the first step has no gradient there; the fused
    # step must still update it later, as PyTorch's per-parameter loop does
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = make_optimizer(params, config)
    plain = torch.optim.SGD(twins, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                            foreach=False)
    for step in range(4):
        for i, (p, q) in enumerate(zip(params, twins, strict=True)):
            missed = i == 1 and step in (0, 2)  # no sample reached it in steps 1 and 3
            g = None if missed else torch.randn_like(p)
            p.grad, q.grad = g, (None if g is None else g.clone())
        fused.step()
        plain.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)
