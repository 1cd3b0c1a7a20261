"""One training step of a top-1 MoE model against the dense model of the same active MACs.

    python bench/step.py [--device cpu|cuda] [--steps 12] [--rounds 3] [--only digits|cifar]
                         [--dispatch sparse auto ...] [--variants] [--ops]

A step is forward, loss (cross-entropy + balancing), backward and the trials' SGD update
(``make_optimizer`` with the default training config), on random inputs of the task's
shape. Every configuration's step is timed in the same process, in
interleaved rounds (dense, MoE with each dispatch, dense, ...) so that the machine's load
changes hit all alike; the table gives the median step of each and the ratio MoE / dense
with its min-max over the rounds. With top-1 routing an MoE model has the dense model's
MACs plus its routers', so the ratio is what routing and the sparse dispatch cost. On the
CPU ``auto`` picks the grouped, padded or per-expert path per layer; ``sparse`` is a conv
call per expert in every layer. ``--variants`` adds the last dispatch without the router's
balancing and z-losses, without its learned gate noise (``gate="topk"``), and without both:
what those parts of the default router cost per step. ``--ops`` (CPU) adds a second table:
per configuration, the ATen ops one step dispatches, and under the profiler the step's
time in PyTorch's conv kernels against the rest (every other op, autograd and Python):
where a MoE step's extra time goes.

* digits: ResNet-8 at width 0.5, batch 64, 16x16 x 1 channel, E = 8 conv experts;
* cifar: ResNet-18, batch 128, 32x32 x 3 channels, E = 4 conv experts;

each with MoE in every block (``all``) and in the last stage (``last_stage``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from automoe.models import count_flops, create_model
from automoe.ops import DISPATCH_MODES
from automoe.training import TrainConfig, make_optimizer

TASKS = {
    "digits": dict(model="resnet8", batch=64, channels=1, size=16, experts=8,
                   extra=dict(width_multiplier=0.5)),
    "cifar": dict(model="resnet18", batch=128, channels=3, size=32, experts=4, extra={}),
}


# --variants: the default router without parts of its cost (real configurations, each one a
# user can pick), so the table shows what the routers' noise net and losses cost per step
VARIANTS = {
    "no losses": dict(balance_weight=0.0, router_z_loss=0.0),
    "topk gate": dict(gate="topk"),
    "topk gate, no losses": dict(gate="topk", balance_weight=0.0, router_z_loss=0.0),
}


def build(task: dict, placement: str, device: torch.device, dispatch: str = "auto",
          **overrides):
    torch.manual_seed(0)
    moe = {} if placement == "none" else dict(num_experts=task["experts"], top_k=1,
                                               granularity="conv", dispatch=dispatch,
                                               **overrides)
    model = create_model(task["model"], in_channels=task["channels"], num_classes=10,
                         image_size=task["size"], placement=placement, **moe,
                         **task["extra"]).to(device).train()
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    images = torch.randn(task["batch"], task["channels"], task["size"], task["size"],
                         device=device)
    labels = torch.randint(0, 10, (task["batch"],), device=device)
    aux = getattr(model, "aux_loss", None)

    def step():
        loss = F.cross_entropy(model(images), labels)
        if aux is not None:
            loss = loss + aux(labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def timed(step, steps: int, device: torch.device) -> float:
    """Median seconds of ``steps`` steps."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# PyTorch's CPU conv kernels, forward and backward (their wrappers' dispatch counts as "rest")
CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward",
                "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward")


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched while it is active (forward, backward, update)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def op_split(step, steps: int) -> tuple[int, float, float]:
    """``(ops per step, conv ms, rest ms)``: the ATen ops of one step, and the mean step
    under the profiler split into PyTorch's conv kernels (self time) and everything else."""
    with _OpCounter() as counter:
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - start
    conv = sum(event.self_cpu_time_total for event in prof.key_averages()
               if event.key in CONV_KERNELS) / 1e6  # microseconds -> seconds
    return counter.count, 1e3 * conv / steps, 1e3 * (total - conv) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(TASKS))
    parser.add_argument("--dispatch", nargs="+", default=["sparse", "auto"],
                        choices=DISPATCH_MODES,
                        help="MoE dispatch paths to time (default: sparse auto)")
    parser.add_argument("--variants", action="store_true",
                        help="also time the last dispatch's MoE with the router's losses, "
                             "its noise net, or both turned off")
    parser.add_argument("--ops", action="store_true",
                        help="also print each configuration's ATen ops per step and, under "
                             "the profiler, its conv kernels' time against the rest (CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.ops and device.type != "cpu":
        parser.error("--ops splits the CPU's kernels; run it with --device cpu")
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads")
    table = Table(title=f"training step, top-1 MoE vs dense, median of {args.steps} steps x "
                        f"{args.rounds} rounds ({where}, torch {torch.__version__})")
    for col in ("task", "placement", "E", "MoE", "MMACs dense / MoE", "dense ms",
                "MoE ms", "MoE / dense (min-max)"):
        table.add_column(col, justify="right")
    ops_table = Table(title=f"one training step's ATen ops; mean step under the profiler, "
                            f"{args.steps} steps ({where})")
    for col in ("task", "placement", "model", "ATen ops / step", "conv kernels ms",
                "rest ms"):
        ops_table.add_column(col, justify="right")

    def add_ops_row(task_name: str, placement: str, label: str, step) -> None:
        ops, conv_ms, rest_ms = op_split(step, args.steps)
        ops_table.add_row(task_name, placement, label, str(ops), f"{conv_ms:.2f}",
                          f"{rest_ms:.2f}")

    for name, task in TASKS.items():
        if args.only and name != args.only:
            continue
        dense_model, dense_step = build(task, "none", device)
        shape = (task["channels"], task["size"], task["size"])
        dense_macs = count_flops(dense_model.eval(), shape)["active"] / 1e6
        dense_model.train()
        if args.ops:
            dense_step()  # warm
            add_ops_row(name, "none", "dense", dense_step)
        for placement in ("all", "last_stage"):
            steps = {"dense": dense_step}
            moe_macs = 0.0
            configs = {dispatch: (dispatch, {}) for dispatch in args.dispatch}
            if args.variants:
                configs.update({f"{args.dispatch[-1]}, {label}": (args.dispatch[-1], overrides)
                                for label, overrides in VARIANTS.items()})
            for key, (dispatch, overrides) in configs.items():
                moe_model, steps[key] = build(task, placement, device, dispatch, **overrides)
                if not overrides:
                    moe_macs = count_flops(moe_model.eval(), shape)["active"] / 1e6
                moe_model.train()
            for warm in steps.values():
                warm()
                warm()
            times = {key: [] for key in steps}
            for _ in range(args.rounds):
                for key, step in steps.items():
                    times[key].append(timed(step, args.steps, device))
            for key in configs:
                ratios = [m / d for m, d in zip(times[key], times["dense"], strict=True)]
                table.add_row(name, placement, str(task["experts"]), key,
                              f"{dense_macs:.1f} / {moe_macs:.1f}",
                              f"{1e3 * statistics.median(times['dense']):.1f}",
                              f"{1e3 * statistics.median(times[key]):.1f}",
                              f"{statistics.median(ratios):.2f}x "
                              f"({min(ratios):.2f}-{max(ratios):.2f})")
                if args.ops:
                    add_ops_row(name, placement, key, steps[key])
    console = Console(width=120)
    console.print(table)
    if args.ops:
        console.print(ops_table)


if __name__ == "__main__":
    main()
