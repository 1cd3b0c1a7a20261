"""Precision, memory layout and compilation of training runs, on CPU."""

import pytest
import torch
from torch._dynamo.utils import counters

from automoe.data import TensorImages, load_dataset
from automoe.errors import ConfigError
from automoe.models import create_model
from automoe.ops import (
    moe_conv2d_grouped,
    moe_conv2d_padded,
    moe_conv2d_reference,
    moe_conv2d_sparse,
)
from automoe.training import TrainConfig, evaluate_accuracy, train


@pytest.fixture(scope="module")
def digits():
    train_set = load_dataset("digits", "train")
    val_set = load_dataset("digits", "val")
    return train_set, val_set


def _moe_resnet8(info, placement="all", **cfg):
    torch.manual_seed(0)
    return create_model("resnet8", in_channels=1, num_classes=10, image_size=info.image_size,
                        input_mean=info.mean, input_std=info.std, width_multiplier=0.5,
                        placement=placement, num_experts=4, top_k=1, **cfg)


def test_precision_is_checked():
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="use bf16"):
        TrainConfig(precision="fp16", scheme="advmoe")


@pytest.mark.parametrize("path", [moe_conv2d_sparse, moe_conv2d_grouped, moe_conv2d_padded],
                         ids=lambda fn: fn.__name__.rsplit("_", 1)[1])
def test_bf16_autocast_runs_the_pytorch_paths_in_bf16(path):
    torch.manual_seed(0)
    x = torch.randn(6, 5, 7, 7, requires_grad=True)
    weight = torch.randn(3, 4, 5, 3, 3, requires_grad=True)
    index = torch.randn(6, 3).topk(2, 1).indices
    index[0, 1] = -1  # a dropped assignment
    gates = torch.rand(6, 2, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = path(x, weight, None, index, gates, 1, 1)
    assert y.dtype == torch.bfloat16
    y_ref = moe_conv2d_reference(x, weight, None, index, gates, 1, 1)
    torch.testing.assert_close(y.float(), y_ref, rtol=3e-2, atol=3e-2 * float(y_ref.detach().abs().max()))
    grads = torch.autograd.grad(y.float().sum(), [x, weight, gates])
    grads_ref = torch.autograd.grad(y_ref.sum(), [x, weight, gates])
    for got, want in zip(grads, grads_ref, strict=True):
        assert got.dtype == torch.float32  # the parameters stay fp32
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * float(want.detach().abs().max()))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_learns_like_fp32(digits, precision):
    train_set, val_set = digits
    runs = {}
    for name in ("fp32", precision):
        model = _moe_resnet8(train_set.info)
        history = train(model, train_set, TrainConfig(epochs=2, lr=0.1, precision=name)).history
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[name] = (history[-1]["loss"], evaluate_accuracy(model, val_set))
    (loss32, acc32), (loss, acc) = runs["fp32"], runs[precision]
    assert loss != loss32  # it really ran in the lower precision
    assert abs(loss - loss32) < 0.15 and acc > acc32 - 0.08, runs


def test_tf32_switches_hold_during_training_and_are_restored(digits):
    train_set, _ = digits
    seen = []

    def record(step, total):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    for precision, expected in (("tf32", (True, True)), ("fp32", (False, False))):
        seen.clear()
        train(_moe_resnet8(train_set.info, placement="last_stage"), train_set,
              TrainConfig(epochs=1, batch_size=512, precision=precision), on_step=record)
        assert set(seen) == {expected}
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_channels_last_training_matches_the_default_layout(digits):
    train_set, _ = digits
    histories = []
    for channels_last in (False, True):
        model = _moe_resnet8(train_set.info, placement="last_stage")
        histories.append(train(model, train_set, TrainConfig(epochs=1, lr=0.1,
                                                             channels_last=channels_last)).history)
        # a dense 3x3 conv of the first stages, and one expert of the last stage's
        weights = [m.weight for m in model.modules()
                   if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                   and m.kernel_size[0] > 1]  # other weights are both layouts at once
        weights.append(next(p for p in model.parameters() if p.dim() == 5)[0])
        for weight in weights:
            assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert histories[1][0]["loss"] == pytest.approx(histories[0][0]["loss"], rel=1e-3)


def test_compiled_moe_resnet8_trains_like_eager(digits):
    train_set, _ = digits
    subset = TensorImages(train_set.images[:256], train_set.labels[:256], train_set.info,
                          "train", train_set.indices[:256])
    histories = []
    for compile_model in (False, True):
        # a gate without noise: compiled code draws random numbers in its own way
        model = _moe_resnet8(train_set.info, placement="last_stage", gate="topk")
        torch._dynamo.reset()
        counters.clear()
        histories.append(train(model, subset, TrainConfig(epochs=2, batch_size=64, lr=0.1,
                                                          compile=compile_model, upcycle=0)).history)
        assert (counters["stats"]["unique_graphs"] > 0) == compile_model
    for eager, compiled in zip(*histories, strict=True):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-3)
        assert compiled["expert_use"] == pytest.approx(eager["expert_use"], abs=1e-6)


def test_compile_runs_auto_dispatch_across_models_and_batch_sizes():
    # one process compiling several MoE models and batch sizes (a worker running trials)
    # turns batch and map sizes symbolic; "auto" must still give a model Inductor lowers
    # (grouped convs over a symbolic batch did not)
    torch._dynamo.reset()
    for width, batch in ((0.5, 64), (0.5, 48), (1.0, 64)):
        torch.manual_seed(0)
        model = create_model("resnet8", in_channels=1, num_classes=10, image_size=16,
                             width_multiplier=width, num_experts=8, top_k=1,
                             placement="all", dispatch="auto").train()
        x, y = torch.randn(batch, 1, 16, 16), torch.randint(0, 10, (batch,))
        loss = torch.nn.functional.cross_entropy(torch.compile(model)(x), y)
        (loss + model.aux_loss(y)).backward()
        assert torch.isfinite(loss)
