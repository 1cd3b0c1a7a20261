"""Triton conv-expert kernels vs the alternatives, on a CUDA GPU.

    python bench/kernels.py [--dtype fp16|bf16|tf32|fp32] [--repeats 20] [--quick]

For batch 128 and 256, maps 32x32 / 16x16 / 8x8, C in {64, 128, 256, 512}, E in {4, 8},
k in {1, 2}, forward and forward+backward, one table of ms and TFLOP/s (active FLOPs =
2 x MACs of k experts) for
  (1) compute-all-then-mask (the AdvMoE way),
  (2) the per-expert gather loop in PyTorch (automoe's CPU path),
  (3) the Triton kernels,
  (4) one dense cuDNN conv with the same active FLOPs (k x C output channels),
and the ratios the kernel issue targets: Triton vs (1) against 0.8 E/k, and Triton
TFLOP/s vs cuDNN's against 0.7. All variants run in one process on the same inputs, timed
with CUDA events, and at one precision: ``tf32`` lets cuDNN, the matmuls and the Triton dots
all use TF32; ``fp32`` keeps every one of them in IEEE fp32 (cuDNN and Triton both).
Runs from a plain checkout (no install needed).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's library

from automoe.ops import moe_conv2d_reference, moe_conv2d_sparse  # noqa: E402


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure(batch: int, size: int, c: int, num_experts: int, k: int, dtype: torch.dtype,
            repeats: int, tf32: bool = False) -> list[list[str]]:
    """Rows (forward, forward+backward) of the table for one configuration."""
    from automoe.ops.moe_conv_triton import moe_conv2d_triton

    x = torch.randn(batch, c, size, size, device="cuda", dtype=dtype, requires_grad=True)
    weight = (0.05 * torch.randn(num_experts, c, c, 3, 3, device="cuda", dtype=dtype)
              ).requires_grad_()
    index = torch.randn(batch, num_experts, device="cuda").topk(k, 1).indices
    gates = torch.rand(batch, k, device="cuda", dtype=dtype, requires_grad=True)
    dense_w = (0.05 * torch.randn(k * c, c, 3, 3, device="cuda", dtype=dtype)).requires_grad_()
    variants = {
        "all": lambda: moe_conv2d_reference(x, weight, None, index, gates, 1, 1),
        "gather": lambda: moe_conv2d_sparse(x, weight, None, index, gates, 1, 1),
        "triton": lambda: moe_conv2d_triton(x, weight, None, index, gates, 1, 1,
                                            allow_tf32=tf32),
        "cudnn": lambda: F.conv2d(x, dense_w, None, 1, 1),
    }
    flops = 2 * batch * k * c * c * 9 * size * size  # active FLOPs of the forward
    rows = []
    for name, factor in (("fwd", 1), ("fwd+bwd", 3)):
        ms = {}
        for key, fn in variants.items():
            if name == "fwd":
                with torch.no_grad():
                    ms[key] = time_ms(fn, repeats)
            else:
                ms[key] = time_ms(lambda fn=fn: fn().sum().backward(), repeats)
        tflops = factor * flops / ms["triton"] / 1e9
        rows.append([str(batch), f"{size}x{size}", str(c), str(num_experts), str(k), name,
                     f"{ms['all']:.3f}", f"{ms['gather']:.3f}", f"{ms['triton']:.3f}",
                     f"{ms['cudnn']:.3f}", f"{tflops:.1f}",
                     f"{ms['all'] / ms['triton']:.2f}x ({0.8 * num_experts / k:.1f})",
                     f"{ms['cudnn'] / ms['triton']:.2f}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "tf32", "fp32"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="batch 128, C 128/256 only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA GPU; none is available here.", file=sys.stderr)
        return 1
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32,
             "fp32": torch.float32}[args.dtype]
    tf32 = args.dtype == "tf32"  # the same for cuDNN, matmuls and the Triton dots
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    batches = (128,) if args.quick else (128, 256)
    channels = (128, 256) if args.quick else (64, 128, 256, 512)
    title = (f"{torch.cuda.get_device_name()}, {args.dtype}, torch {torch.__version__}, "
             f"{datetime.date.today()}, median of {args.repeats}")
    table = Table(title=title)
    for col in ("B", "map", "C", "E", "k", "pass", "all+mask ms", "gather ms", "triton ms",
                "cuDNN ms", "triton TFLOP/s", "vs all+mask (0.8E/k)", "vs cuDNN TFLOP/s (0.7)"):
        table.add_column(col, justify="right")
    for batch in batches:
        for size in (32, 16, 8):
            for c in channels:
                for num_experts in (4, 8):
                    for k in (1, 2):
                        for row in measure(batch, size, c, num_experts, k, dtype, args.repeats,
                                           tf32):
                            table.add_row(*row)
    Console(width=220).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
