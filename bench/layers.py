"""Conv experts: sparse dispatch vs compute-all-then-mask, forward + backward, side by side.

    python bench/layers.py [--device cpu|cuda] [--batch 64] [--repeats 7] [--quick]

For E in {4, 8}, k in {1, 2}, C in {32, 64, 128} and 16x16 / 32x32 maps: the median time
of both paths over repeated runs, their ratio, and the target 0.7 * E / k. Both paths run in
the same process on the same inputs and routing, so the ratio holds across machines.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from automoe.ops import moe_conv2d_reference, moe_conv2d_sparse


def median_ms(fn, inputs, repeats: int, device: str) -> float:
    """Median wall time of forward + backward, after two warm-up runs."""
    x, weight, index, gates = inputs

    def once():
        x.grad = weight.grad = gates.grad = None
        fn(x, weight, None, index, gates, 1, 1).sum().backward()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        once()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="C = 32 and 64 at 16x16 only")
    args = parser.parse_args()
    torch.manual_seed(0)
    channels = (32, 64) if args.quick else (32, 64, 128)
    sizes = (16,) if args.quick else (16, 32)
    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} threads")
    table = Table(title=f"MoE conv 3x3, batch {args.batch}, forward+backward, median of "
                        f"{args.repeats} ({device_name}, torch {torch.__version__})")
    for col in ("C", "map", "E", "k", "compute-all ms", "sparse ms", "speed-up",
                "target 0.7E/k"):
        table.add_column(col, justify="right")
    for c in channels:
        for size in sizes:
            for num_experts in (4, 8):
                for k in (1, 2):
                    # the input needs a gradient too: inside a network dX is computed
                    x = torch.randn(args.batch, c, size, size, device=args.device,
                                    requires_grad=True)
                    weight = torch.randn(num_experts, c, c, 3, 3, device=args.device,
                                         requires_grad=True)
                    scores = torch.rand(args.batch, num_experts, device=args.device)
                    index = scores.topk(k, dim=1).indices  # balanced on average
                    gates = torch.rand(args.batch, k, device=args.device, requires_grad=True)
                    inputs = (x, weight, index, gates)
                    dense = median_ms(moe_conv2d_reference, inputs, args.repeats, args.device)
                    sparse = median_ms(moe_conv2d_sparse, inputs, args.repeats, args.device)
                    target = 0.7 * num_experts / k
                    ratio = dense / sparse
                    mark = "" if c < 64 else (" ok" if ratio >= target else " below")
                    table.add_row(str(c), f"{size}x{size}", str(num_experts), str(k),
                                  f"{dense:.1f}", f"{sparse:.1f}", f"{ratio:.2f}x{mark}",
                                  f"{target:.1f}x")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
