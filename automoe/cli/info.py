"""Commands about this installation: ``kernels`` and ``spaces``."""

from __future__ import annotations

import argparse

from rich.table import Table

from automoe import space as spaces
from automoe.cli._output import out
from automoe.cli._parser import Commands
from automoe.errors import ConfigError
from automoe.space import METRICS, list_spaces, resolve_space_path


def cmd_kernels(args: argparse.Namespace) -> int:
    """Which backend each MoE op runs with ``dispatch: auto`` on this machine, and why."""
    # deferred: torch and the ops load for this command only (the CLI starts without them)
    import torch

    # (the ops' dispatch thresholds, printed below)
    from automoe.ops import GROUPED_MAX_CHANNELS, PADDED_FILTER_TO_MAPS, PADDED_MAX_RUN_MACS

    cuda = torch.cuda.is_available()
    try:
        # optional: triton ships with CUDA builds of torch only
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    table = Table(title="MoE ops with dispatch: auto", title_justify="left")
    for col in ("op", "on CPU tensors", "on CUDA tensors"):
        table.add_column(col)
    gpu = ("Triton kernel" if triton_version else "PyTorch sparse (no Triton)")
    table.add_row("conv experts (conv, pathway)",
                  f"PyTorch, per layer: if batch x channels > {GROUPED_MAX_CHANNELS}, "
                  "padded (a conv over experts) if the busiest expert's run is <= "
                  f"{PADDED_MAX_RUN_MACS / 1e6:g}M MACs, else sparse (a conv per expert); "
                  f"below it, padded if a sample's filter > {PADDED_FILTER_TO_MAPS}x its "
                  "maps x the padding's overhead (E x busiest expert's count / B x k), else "
                  "grouped (a conv over samples)",
                  gpu if cuda else f"{gpu} [dim](no CUDA device here)[/]")
    table.add_row("channel gating (channel)", "PyTorch sparse (batch union of channels)",
                  gpu if cuda else f"{gpu} [dim](no CUDA device here)[/]")
    table.add_row("block experts (block)", "PyTorch gather/scatter", "PyTorch gather/scatter")
    table.caption = (f"torch {torch.__version__}; triton {triton_version or 'not installed'}; "
                     + (f"CUDA device: {torch.cuda.get_device_name()}" if cuda
                        else "no CUDA device"))
    out.print(table)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    """List the shipped search spaces, validate a space file, or show its dimensions."""
    if args.action == "list":
        table = Table(title="search spaces", title_justify="left")
        for col in ("name", "dataset", "model", "searched", "trials", "description"):
            table.add_column(col)
        for name, path in list_spaces().items():
            try:
                space = spaces.SearchSpace.from_file(path)
            except ConfigError as exc:
                table.add_row(name, "-", "-", "-", "-", f"[red]invalid[/]: {exc}")
                continue
            table.add_row(name, space.dataset["name"], space.model_name,
                          ", ".join(space.dimensions), str(space.trials), space.description)
        out.print(table)
        return 0
    if args.space is None:
        raise ConfigError(f"`automoe spaces {args.action}` needs a space file or name")
    space = spaces.SearchSpace.from_file(resolve_space_path(args.space))
    if args.action == "validate":
        out.print(f"{space.source}: valid ({len(space.dimensions)} searched, "
                  f"{len(space.fixed)} fixed parameters; fingerprint {space.fingerprint()})")
        return 0
    out.print(_space_table(space))
    return 0


def _space_table(space: spaces.SearchSpace) -> Table:
    table = Table(title=f"{space.name}: {space.description}", title_justify="left")
    table.add_column("parameter")
    table.add_column("values")
    for name, dim in space.dimensions.items():
        if dim.kind == "categorical":
            values = ", ".join(map(str, dim.choices))
        else:
            values = (f"{dim.kind} [{dim.low}, {dim.high}]" + (f" step {dim.step}" if dim.step
                                                               else "")
                      + (" log" if dim.log else ""))
            if name == "top_k":
                values += ", capped at experts"
        table.add_row(name, values)
    for name, value in space.fixed.items():
        table.add_row(name, f"{value} (fixed)")
    table.add_row("dataset", f"{space.dataset['name']} (image_size {space.dataset['image_size']})")
    table.add_row("model", f"{space.model_name} {space.model_fixed or ''}")
    table.add_row("objectives", ", ".join(f"{n} ({METRICS[n].direction})"
                                          for n in space.objectives))
    if "robust_accuracy" in space.measured_metrics():
        table.add_row("robust accuracy attack", space.attack.describe())
    if "latency_ms" in space.measured_metrics():
        table.add_row("latency", ", ".join(f"{k} {v}" for k, v in space.latency.items()))
    if space.fidelity:
        table.add_row("fidelity", f"successive halving, rungs at epochs "
                      f"{', '.join(map(str, space.rungs())) or 'none'}, reduction factor "
                      f"{space.fidelity['reduction_factor']}")
    if space.constraints:
        table.add_row("constraints", ", ".join(f"{k} {v:g}" for k, v in space.constraints.items()))
    options = ", ".join(f"{k} {v}" for k, v in space.sampler.items() if k != "name")
    table.add_row("sampler", space.sampler["name"] + (f" ({options})" if options else ""))
    table.add_row("fingerprint", space.fingerprint())
    return table


def register(commands: Commands) -> None:
    f = commands.flags
    commands.add("kernels", cmd_kernels, [f.common],
                 "which backend each MoE op uses on this machine")
    p = commands.add("spaces", cmd_spaces, [f.common], "list, validate or show search spaces")
    p.add_argument("action", nargs="?", default="list", choices=["list", "validate", "show"],
                   help="list the shipped spaces, validate a file, or show its dimensions")
    p.add_argument("space", nargs="?", default=None, metavar="FILE|NAME",
                   help="space file or name (validate, show)")
