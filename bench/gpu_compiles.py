"""The Triton autotune sessions and compiles each part of the GPU check will cost, predicted
on the CPU by replaying the part's kernel launches (shapes, dtypes, layouts) without running
them (automoe.kernels.launches), against a budget per part.

    python bench/gpu_compiles.py        # the table; exit 1 if a part is over its budget

A compile of one config took 0.6-5.8 s for sm_90, so a part's compiles bound its start-up.
The kernel part tries every config (it measures the kernels' best); the others run with
``AUTOMOE_TRITON_CONFIGS`` set to gpu_check's ``PART_CONFIGS``: one
config where only correctness is checked (no autotuning at all), two for the timed epoch.
All parts share compiled kernels and autotune results through Triton's disk caches
(``TRITON_CACHE_AUTOTUNING=1``), so these per-part counts, each on empty caches, are upper
bounds.

Batch sizes are replayed smaller than the GPU runs them where a part would be slow on the
CPU: the batch changes no autotune key and, with ``SPLITS`` unspecialised, no compile.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from gpu_check import KERNEL_SHAPES, PART_CONFIGS, PRECISIONS  # noqa: E402

from automoe.kernels import CONFIGS  # noqa: E402
from automoe.kernels.launches import record_launches  # noqa: E402

# The most compiles a part may cost (a change past one fails tests/bench_tests): at ~1-2 s
# a compile, the kernel part's 27 sessions x 8 configs fill most of its 180 s (its rows
# come in order of value, so a cut keeps bf16 and TF32), the others a minute or two each.
COMPILE_BUDGET = {"pytest": 60, "kernels": 240, "epoch": 100, "search": 50}


def _op_step(dtype, batch, channels_in, channels_out, size, stride, experts, k,
             allow_tf32=False, channels_last=False):
    from automoe.ops.moe_conv_triton import moe_conv2d_triton

    x = torch.randn(batch, channels_in, size, size, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(experts, channels_out, channels_in, 3, 3, dtype=dtype,
                         requires_grad=True)
    index = torch.randn(batch, experts).topk(k, 1).indices
    gates = torch.rand(batch, k, dtype=dtype, requires_grad=True)
    y = moe_conv2d_triton(x, weight, None, index, gates, stride, 1, allow_tf32=allow_tf32)
    torch.autograd.grad(y.float().sum(), [x, weight, gates])


def _resnet18(**fields):
    from automoe.models import create_model

    torch.manual_seed(0)
    return create_model("resnet18", in_channels=3, num_classes=10, image_size=32,
                        dispatch="triton", **fields)


def _train_step(model, batch: int, precision: str, channels_last: bool) -> None:
    """One real training step of :func:`automoe.training.train` on ``batch`` images."""
    import numpy as np

    from automoe.data import DatasetInfo, TensorImages
    from automoe.training import TrainConfig, train

    info = DatasetInfo("cifar10", 10, 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    images = TensorImages(torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8),
                          torch.randint(0, 10, (batch,)), info, "train", np.arange(batch))
    train(model, images, TrainConfig(epochs=1, batch_size=batch, lr=0.01, precision=precision,
                                     channels_last=channels_last), device="cpu")


def replay_pytest() -> None:
    spec = importlib.util.spec_from_file_location(
        "automoe_gpu_tests", ROOT / "tests" / "kernels_tests" / "test_gpu.py")
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    for dtype, _, size, stride, experts, k in tests.OP_CASES:
        _op_step(dtype, 8, tests.OP_IN, tests.OP_OUT, size, stride, experts, k)
    _op_step(torch.float32, 16, 8, 8, 16, 1, 4, 2)  # the torch.compile test
    model = _resnet18(placement="all", num_experts=4, top_k=2, gate="topk")
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    (torch.nn.functional.cross_entropy(model(x), y) + model.aux_loss(y)).backward()
    from automoe.ops.channel_gate_triton import channel_gated_conv2d_triton

    for dtype in (torch.float32, torch.float16):
        x = torch.randn(8, 64, 16, 16, dtype=dtype, requires_grad=True)
        weight = torch.randn(128, 64, 3, 3, dtype=dtype, requires_grad=True)
        gates = torch.rand(8, 128, dtype=dtype)
        y = channel_gated_conv2d_triton(x, weight, gates, 1, 1, 16)
        torch.autograd.grad(y.float().sum(), [x, weight])


def replay_kernels() -> None:
    for dtype, tf32 in PRECISIONS.values():
        for batch, size, channels, experts, k in KERNEL_SHAPES:
            _op_step(dtype, batch, channels, channels, size, 1, experts, k, allow_tf32=tf32)


def replay_epoch() -> None:
    for precision in ("bf16", "fp32"):  # the sparse MoE; dense and compute-all launch none
        _train_step(_resnet18(placement="all", num_experts=4, top_k=1), 8, precision, True)


def replay_search() -> None:
    """Every MoE design the check's space can sample (its 3 trials draw among these):
    training in bf16, then the fp32 evaluation and the PGD attack's backward."""
    from automoe.robustness.attacks import attack_batch
    from automoe.robustness.config import AttackConfig

    for placement in ("last_stage", "all"):
        for experts in (2, 4):
            model = _resnet18(placement=placement, num_experts=experts, top_k=1)
            _train_step(model, 8, "bf16", False)
            model.eval()
            images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
            with torch.no_grad():
                model(images)
            attack_batch(model, images, labels, AttackConfig(steps=1))


REPLAYS = {"pytest": replay_pytest, "kernels": replay_kernels, "epoch": replay_epoch,
           "search": replay_search}


def predict(part: str) -> dict[str, int]:
    """The part's replayed launches: ``{"launches", "sessions", "specialisations",
    "compiles"}``."""
    configs = PART_CONFIGS[part] or len(CONFIGS)
    with torch.random.fork_rng(), record_launches(configs=configs, execute=False) as record:
        REPLAYS[part]()
    return record.summary()


def report() -> tuple[str, bool]:
    """The Markdown table of every part, and whether all fit their budgets."""
    rows, fits = [], True
    for part in REPLAYS:
        counts = predict(part)
        ok = counts["compiles"] <= COMPILE_BUDGET[part]
        fits &= ok
        rows.append(f"| {part} | {counts['launches']} | {PART_CONFIGS[part] or len(CONFIGS)} | "
                    f"{counts['sessions']} | {counts['compiles']} | {COMPILE_BUDGET[part]} "
                    f"{'ok' if ok else 'OVER'} |")
    header = ("| part | launches replayed | configs per session | autotune sessions | "
              "compiles | budget |\n|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(rows), fits


if __name__ == "__main__":
    text, fits = report()
    print(text)
    sys.exit(0 if fits else 1)
