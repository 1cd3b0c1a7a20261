"""Commands on a chosen model: ``export``, ``eval`` and ``robustness``."""

from __future__ import annotations

import argparse

from rich.table import Table

from automoe import export, search, space
from automoe.cli import _context as ctx
from automoe.cli._output import err, out, print_json
from automoe.cli._parser import Commands
from automoe.errors import ConfigError
from automoe.export import PICKS, pick_trial
from automoe.robustness import ATTACKS, NORMS, STRONG_ATTACKS, strong_attacks


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trial's model: model.safetensors, config.json that rebuilds it, and a model
    card (MODEL_CARD.md). Pick the trial by number or off the Pareto front with --pick."""
    ctx.quiet_optuna(args)
    study = ctx.existing_study(args)
    if args.pick is None and (args.max_mmacs is not None or args.min_robust is not None):
        raise ConfigError("--max-mmacs and --min-robust go with --pick")
    number = args.trial
    if args.pick is not None:
        number = pick_trial(study, args.pick, max_mmacs=args.max_mmacs,
                            min_robust=args.min_robust).number
    path = export.export_trial(study, number, args.out, ctx.artifact_store(args), force=args.force,
                        torchscript=args.torchscript, onnx=args.onnx)
    if not args.quiet:
        how = f" (--pick {args.pick})" if args.pick else ""
        err.print(f"exported trial {number}{how} of {study.study_name!r} to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate an exported model: accuracy, PGD robust accuracy and FLOPs."""
    result = export.evaluate_export(args.path, data_root=args.data_root, dataset=args.dataset,
                             device=search.resolve_device(args.device), download=args.download)
    if args.json:
        print_json(result)
        return 0
    stored = result.get("stored") or {}
    table = Table(title=f"{args.path}: {result['model']} on {result['dataset']}",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("now", justify="right")
    table.add_column("at search time", justify="right")
    for key, label in [("val_accuracy", "val accuracy %"), ("test_accuracy", "test accuracy %"),
                       ("robust_accuracy", "robust accuracy % (PGD, val)"),
                       ("mmacs", "active MMACs / sample"),
                       ("expert_use", "expert use (fewest effective experts / E)")]:
        now, then = result.get(key), stored.get(key)
        table.add_row(label, "-" if now is None else f"{now:.3f}",
                      "-" if then is None else f"{then:.3f}")
    table.add_row("MMACs, all experts computed", f"{result['mmacs_dense']:.3f}", "")
    table.add_row("MMACs, as executed", f"{result['mmacs_executed']:.3f}", "")
    table.add_row("params", f"{result['params']:,}", "")
    out.print(table)
    return 0


def _budget(value: str, flag: str) -> float:
    """A budget given as a number or a fraction like 8/255."""
    try:
        return space.parse_number(value)
    except ValueError:
        raise ConfigError(f"{flag} must be a number or a fraction like 8/255, got "
                          f"{value!r}") from None


def cmd_robustness(args: argparse.Namespace) -> int:
    """Attack an exported model with strong attacks and report robust accuracy per attack.

    Every attack runs on the same samples; the last row is the worst case over all of them
    (a sample counts as robust only if no attack fooled it).
    """
    eps = _budget(args.eps, "--eps")
    step = _budget(args.step_size, "--step-size") if args.step_size else None
    attacks = strong_attacks(args.norm, eps, step, args.steps, args.restarts, args.attack)
    with ctx.attack_progress(args.quiet) as on_progress:
        report, dataset = export.attack_export(
            args.path, attacks, split=args.split, data_root=args.data_root,
            download=args.download, max_samples=args.max_samples,
            device=search.resolve_device(args.device), on_progress=on_progress)
    rows = {"clean": 100 * report.clean,
            **{name: 100 * value for name, value in report.per_attack.items()},
            "worst case over the attacks": 100 * report.worst}
    if args.json:
        print_json({"model": args.path, "split": args.split, "samples": report.samples,
                    "accuracy": rows})
        return 0
    table = Table(title=f"{args.path}: robust accuracy on {dataset} {args.split} "
                        f"({report.samples} samples)", title_justify="left")
    table.add_column("attack")
    table.add_column("accuracy %", justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:.2f}")
    out.print(table)
    return 0


def register(commands: Commands) -> None:
    f = commands.flags
    p = commands.add("export", cmd_export, [f.common, f.storage],
                     "export a trial's model to a directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="trial number")
    which.add_argument("--pick", choices=PICKS,
                       help="a trial of the feasible Pareto front: best val accuracy, fewest "
                            "active MACs, best robust accuracy, or the knee (nearest the ideal "
                            "point with each objective scaled over the front)")
    p.add_argument("--max-mmacs", "--max-flops", type=float, default=None, metavar="X",
                   dest="max_mmacs",
                   help="with --pick: only trials with at most X active MMACs per sample")
    p.add_argument("--min-robust", type=float, default=None, metavar="Y",
                   help="with --pick: only trials with at least Y %% robust accuracy")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--torchscript", action="store_true",
                   help="also write model.torchscript.pt, verified against the eager model")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx, verified with onnxruntime (needs the onnx "
                        "extra)")

    p = commands.add("robustness", cmd_robustness, [f.common, f.data, f.device, f.json],
                     "attack an exported model: a report")
    p.add_argument("path", metavar="DIR", help="directory written by `automoe export`")
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help=f"{', '.join(ATTACKS)}; repeat for several (default: "
                        f"{', '.join(STRONG_ATTACKS['linf'])})")
    p.add_argument("--norm", default="linf", choices=NORMS,
                   help="threat model of every attack: linf (every attack) or l2 (pgd, "
                        "router-pgd); an attack not implemented in the norm is refused")
    p.add_argument("--eps", default="8/255", help="budget in [0, 1] pixel units, e.g. 8/255")
    p.add_argument("--step-size", default=None,
                   help="PGD step in pixel units (default: eps/4; APGD adapts its own)")
    p.add_argument("--steps", type=int, default=50, help="gradient steps per restart")
    p.add_argument("--restarts", type=int, default=1, help="random restarts")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to attack")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="attack only the first N samples")

    p = commands.add("eval", cmd_eval, [f.common, f.data, f.device, f.json],
                     "evaluate an exported model")
    p.add_argument("path", metavar="DIR", help="directory written by `automoe export`")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="dataset to evaluate on (default: the one it was trained on)")
