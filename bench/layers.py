"""Conv experts: sparse dispatch vs compute-all-then-mask, forward + backward, side by side.

    python bench/layers.py [--device cpu|cuda] [--batch 64] [--repeats 7] [--quick]
    python bench/layers.py --cpu-paths [--repeats 20]

For E in {4, 8}, k in {1, 2}, C in {32, 64, 128} and 16x16 / 32x32 maps: the median time
of both paths over repeated runs, their ratio, and the target 0.7 * E / k. Both paths run in
the same process on the same inputs and routing, so the ratio holds across machines.

``--cpu-paths`` times the PyTorch paths that ``dispatch: auto`` chooses between on the CPU
(a conv per expert, one grouped conv over per-sample filters, one conv over experts'
padded runs) against one dense conv, for B in {64, 128}, E in {4, 8}, k = 1, C in
{8, ..., 128} and 4x4-32x32 maps, and marks the one ``auto`` picks: the data behind
``automoe.ops.resolve_dispatch``'s rule.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from automoe.ops import (
    moe_conv2d_grouped,
    moe_conv2d_padded,
    moe_conv2d_reference,
    moe_conv2d_sparse,
    resolve_dispatch,
)

CPU_PATHS = {"sparse": moe_conv2d_sparse, "grouped": moe_conv2d_grouped,
             "padded": moe_conv2d_padded}


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
    parser.add_argument("--cpu-paths", action="store_true",
                        help="the CPU's conv-expert paths against a dense conv")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.cpu_paths:
        cpu_paths(args.repeats)
        return
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


def cpu_paths(repeats: int) -> None:
    """Each CPU path and one dense conv of the same shape, forward + backward (k = 1)."""
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    table = Table(title=f"conv experts on the CPU, 3x3, k = 1, forward+backward, median ms "
                        f"of {repeats} ({where}, torch {torch.__version__}); * = auto's pick")
    for col in ("B", "E", "C", "map", "dense", *CPU_PATHS, "auto / dense", "best / dense"):
        table.add_column(col, justify="right")
    for batch in (64, 128):
        for num_experts in (4, 8):
            for c in (8, 16, 32, 64, 128):
                for size in (4, 8, 16, 32):
                    if batch * c * size * size > 128 * 64 * 32 * 32:
                        continue
                    x = torch.randn(batch, c, size, size, requires_grad=True)
                    weight = torch.randn(num_experts, c, c, 3, 3, requires_grad=True)
                    index = torch.rand(batch, num_experts).topk(1, dim=1).indices
                    gates = torch.rand(batch, 1, requires_grad=True)
                    inputs = (x, weight, index, gates)
                    one = weight[0].detach().clone().requires_grad_(True)
                    dense = median_ms(
                        lambda x, w, b, i, g, s, p, one=one: torch.nn.functional.conv2d(
                            x, one, b, s, p), inputs, repeats, "cpu")
                    times = {name: median_ms(fn, inputs, repeats, "cpu")
                             for name, fn in CPU_PATHS.items()}
                    pick = resolve_dispatch("auto", x, weight, expert_index=index)
                    table.add_row(str(batch), str(num_experts), str(c), f"{size}x{size}",
                                  f"{dense:.2f}",
                                  *(f"{t:.2f}" + ("*" if name == pick else "")
                                    for name, t in times.items()),
                                  f"{times[pick] / dense:.2f}x",
                                  f"{min(times.values()) / dense:.2f}x")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
