"""Sparse dispatch vs compute-all-then-mask for one MoE conv layer, side by side.

    python bench/moe_conv.py [--device cpu|cuda] [--batch 64] [--repeats 10]

Prints forward+backward milliseconds (median) of both paths and their ratio. Both run in
the same process on the same inputs, so the ratio is comparable across machines.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from automoe.ops import moe_conv2d_reference, moe_conv2d_sparse


def time_fwd_bwd(fn, args, repeats: int, device: str) -> float:
    def once():
        x = args[0].detach().requires_grad_(True)
        y = fn(x, *args[1:])
        y.sum().backward()

    for _ in range(2):  # warm-up
        once()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        once()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    table = Table(title=f"MoE conv 3x3, batch {args.batch}, fwd+bwd ms (median of "
                        f"{args.repeats}), device {args.device}")
    for col in ("C", "HxW", "E", "k", "compute-all", "sparse", "speed-up", "E/k"):
        table.add_column(col, justify="right")
    for channels, size in ((32, 16), (64, 16), (64, 32)):
        for num_experts, k in ((4, 1), (4, 2), (8, 1), (8, 2)):
            x = torch.randn(args.batch, channels, size, size, device=args.device)
            weight = torch.randn(num_experts, channels, channels, 3, 3, device=args.device,
                                 requires_grad=True)
            index = torch.rand(args.batch, num_experts, device=args.device).topk(k, 1).indices
            gates = torch.rand(args.batch, k, device=args.device, requires_grad=True)
            inputs = (x, weight, None, index, gates, 1, 1)
            dense = time_fwd_bwd(moe_conv2d_reference, inputs, args.repeats, args.device)
            sparse = time_fwd_bwd(moe_conv2d_sparse, inputs, args.repeats, args.device)
            table.add_row(str(channels), f"{size}x{size}", str(num_experts), str(k),
                          f"{dense:.1f}", f"{sparse:.1f}", f"{dense / sparse:.2f}x",
                          f"{num_experts / k:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
