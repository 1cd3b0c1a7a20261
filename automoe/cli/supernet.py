"""``supernet train | search | finalize``: weight-sharing search from the command line."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rich.table import Table

from automoe import data, search
from automoe import space as spaces
from automoe.cli import _context as ctx
from automoe.cli._output import err, out
from automoe.cli._parser import Commands, HelpFormatter, Parser, verify_budget
from automoe.errors import ConfigError
from automoe.results import KEEP
from automoe.search import supernet
from automoe.search.supernet import (
    EXPERT_SAMPLING,
    RECIPE_EPOCHS_FACTOR,
    STEP_RULES,
    WIDTH_SCHEDULES,
    SupernetTrainConfig,
)
from automoe.space import METRICS, resolve_space_path
from automoe.storage import open_storage


def cmd_supernet(args: argparse.Namespace) -> int:
    """Weight-sharing search in three steps. ``train`` trains one supernet over the space's
    placement x experts x top-k x width (sandwich rule, progressive shrinking of the width,
    optionally in-place distillation and PGD adversarial training). ``search`` runs NSGA-II
    over its sub-networks, each evaluated with inherited weights (BatchNorm recalibrated)
    and stored as a trial with ``fidelity = "supernet"``. ``finalize`` retrains the best
    sub-networks of that front stand-alone, as normal trials that record their supernet
    values beside their own."""
    ctx.quiet_optuna(args)
    on_device = search.resolve_device(args.device)
    ctx.set_threads(args)
    if args.action == "train":
        return _supernet_train(args, on_device)
    storage = open_storage(ctx.storage_url(args), create=args.action == "search")
    if args.action == "search":
        return _supernet_search(args, storage, on_device)
    return _supernet_finalize(args, storage, on_device)


def _supernet_train(args: argparse.Namespace, on_device: str) -> int:
    if not args.out:
        raise ConfigError("`supernet train` needs --out FILE")
    if Path(args.out).exists() and not args.force:
        raise ConfigError(f"{args.out!r} already exists; pass --force to replace it")
    space = spaces.SearchSpace.from_file(resolve_space_path(args.space))
    train_set = data.load_dataset(space.dataset["name"], "train", args.data_root,
                             image_size=space.dataset["image_size"],
                             augment=space.dataset["augment"], download=args.download,
                             cache=space.dataset["cache"])
    options = SupernetTrainConfig(
        subnets_per_step=args.subnets_per_step, distill=args.distill,
        expert_sampling=args.expert_sampling, step_rule=args.step_rule,
        width_schedule=args.width_schedule, epochs=args.epochs)
    # deferred: torch loads for the commands that compute
    import torch

    torch.manual_seed(args.seed)
    net = supernet.Supernet(space, train_set.info)
    epochs = options.epochs_for(net.recipe().epochs)
    recipe = replace(net.recipe(), epochs=epochs, seed=args.seed)
    if args.adversarial:
        recipe = replace(recipe, scheme="pgd_at")
    progress = ctx.TrialProgress(args.quiet, None)
    progress.progress.update(progress.trials, visible=False)

    def on_step(step: int, total: int) -> None:
        progress.progress.update(progress.steps, description="supernet (train steps)",
                                 completed=step, total=total, visible=True)

    with progress.progress:
        history = net.train(train_set, recipe, options, device=on_device, on_step=on_step)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    net.save(args.out, history)
    if not args.quiet:
        adversarial = " of PGD-AT" if recipe.scheme == "pgd_at" else ""
        err.print(f"supernet of {space.name}: {epochs} epochs{adversarial}, largest "
                  f"sub-network loss {history[-1]['loss']:.3f}; wrote {args.out}")
    return 0


def _supernet_search(args: argparse.Namespace, storage, on_device: str) -> int:
    if not args.supernet:
        raise ConfigError("`supernet search` needs --supernet FILE")
    if args.recal_batches < 1:
        raise ConfigError(f"--recal-batches must be >= 1, got {args.recal_batches}")
    if args.attack_samples is not None and args.attack_samples < 1:
        raise ConfigError(f"--attack-samples must be >= 1, got {args.attack_samples}")
    net = supernet.Supernet.load(args.supernet)
    progress = ctx.TrialProgress(args.quiet, args.trials)
    with progress.progress:
        study = supernet.screen_subnets(
            net, storage, args.study or f"{net.space.name}-supernet", args.trials,
            ctx.artifact_store(args), seed=args.seed, device=on_device,
            data_root=args.data_root, download=args.download,
            recalibration_batches=args.recal_batches, attack_samples=args.attack_samples,
            callbacks=[progress.after_trial, ctx.retention(args)])
    ctx.print_front(study, ", inherited weights")
    return 0


def _supernet_finalize(args: argparse.Namespace, storage, on_device: str) -> int:
    if args.top < 1:  # checked before the source study is opened
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    source = ctx.existing_study(args)
    progress = ctx.TrialProgress(args.quiet, args.top)
    with progress.progress:
        done = supernet.finalize_front(source, storage, args.target_study, args.top,
                              ctx.artifact_store(args), seed=args.seed, device=on_device,
                              data_root=args.data_root, download=args.download,
                              resume_dir=ctx.resume_dir(args),
                              callbacks=[progress.after_trial])
    target = done.target
    if not args.no_verify and "robust_accuracy" in done.objectives:
        ctx.verify(target, args, args.verify_steps, args.verify_restarts, None, on_device,
                   args.verify_jobs)
    table = Table(title=f"finalists of {source.study_name!r}: inherited weights vs trained "
                        f"stand-alone in {target.study_name!r}", title_justify="left")
    table.add_column("sub-network")
    table.add_column("trial")
    for name in done.objectives:
        table.add_column(f"{METRICS[name].label} inherited", justify="right")
        table.add_column(f"{METRICS[name].label} stand-alone", justify="right")
    for finalist in done.finalists:
        cells = []
        for name in done.objectives:
            cells.append(METRICS[name].format(finalist.inherited.get(name)))
            cells.append(METRICS[name].format((finalist.standalone or {}).get(name)))
        table.add_row(str("-" if finalist.subnet_trial is None else finalist.subnet_trial),
                      str(finalist.trial), *cells)
    out.print(table)
    if "robust_accuracy" in done.objectives and done.screened_samples != done.full_samples:
        full = done.full_samples
        out.print(f"robust % inherited was screened on the first {done.screened_samples} val "
                  f"samples (--attack-samples); stand-alone on "
                  f"{'every val sample' if full is None else f'the first {full}'}: the "
                  "two columns are not on the same samples")
    return 0


def register(commands: Commands) -> None:
    """``supernet train | search | finalize``: each step with its own options."""
    f = commands.flags
    p = commands.add("supernet", cmd_supernet, [],
                     "weight-sharing search: train one supernet, search its sub-networks, "
                     "retrain the best stand-alone")
    steps = p.add_subparsers(dest="action", metavar="ACTION", required=True,
                             parser_class=Parser)
    seed = argparse.ArgumentParser(add_help=False)
    seed.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    seed.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch CPU threads")

    def step(name, parents, help_text):
        return steps.add_parser(name, parents=[f.common, *parents, f.data, f.device, seed],
                                help=help_text, description=help_text,
                                formatter_class=HelpFormatter)

    t = step("train", [], "train the supernet of --space into --out")
    t.add_argument("--space", default="supernet_digits", metavar="FILE|NAME",
                   help="a space that searches only placement, experts, top_k and "
                        "width_multiplier")
    t.add_argument("--out", default=None, metavar="FILE", help="the supernet file (required)")
    t.add_argument("--force", action="store_true", help="replace an existing --out file")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"supernet epochs (default: {RECIPE_EPOCHS_FACTOR} x the space's "
                        "epochs)")
    defaults = SupernetTrainConfig()  # the flags' defaults are the library's
    t.add_argument("--subnets-per-step", type=int, default=defaults.subnets_per_step,
                   help="sub-networks per step (the largest first)")
    t.add_argument("--step-rule", choices=STEP_RULES, default=defaults.step_rule,
                   help="a step's sub-networks: the largest, the smallest and random ones "
                        "(sandwich), or the largest and random ones")
    t.add_argument("--width-schedule", choices=WIDTH_SCHEDULES,
                   default=defaults.width_schedule,
                   help="the widths a step draws from: progressive shrinking (the widest alone "
                        "for the first half of the steps, then each narrower width added in "
                        "turn), or all of them from the start")
    t.add_argument("--distill", action="store_true",
                   help="the sub-networks other than the largest learn its predictions "
                        "(in-place distillation; otherwise cross-entropy on the labels)")
    t.add_argument("--expert-sampling", choices=EXPERT_SAMPLING,
                   default=defaults.expert_sampling,
                   help="the experts a step's sub-network of E experts runs: the first E (as "
                        "evaluated), or the first E of a random order of all, a dense unit "
                        "the order's first (every expert trains in every role)")
    t.add_argument("--adversarial", action="store_true",
                   help="PGD adversarial training through the supernet (examples crafted "
                        "against the largest sub-network with the space's adv_eps, "
                        "adv_step_size and adv_steps); the same as `scheme: pgd_at` in the "
                        "space")

    s = step("search", [f.storage], "evaluate sub-networks of --supernet with inherited "
             "weights, each a trial of --study (default: SPACE-supernet)")
    s.add_argument("--supernet", default=None, metavar="FILE",
                   help="the file `supernet train` wrote (required)")
    s.add_argument("--trials", type=int, default=200, metavar="N",
                   help="sub-networks to evaluate")
    s.add_argument("--recal-batches", type=int, default=4, metavar="N",
                   help="training batches of 128 that recompute a sub-network's BatchNorm "
                        "statistics before it is evaluated")
    s.add_argument("--attack-samples", type=int, default=None, metavar="N",
                   help="attack only the first N val samples when measuring robust accuracy, "
                        "a cheaper screen of many candidates (default: the space's "
                        "evaluation.attack; finalize measures finalists with it)")
    s.add_argument("--keep", choices=KEEP, default="pareto",
                   help="checkpoints to keep (front trials only, or all)")

    fin = step("finalize", [f.storage], "retrain the --top N front sub-networks of --study "
               "stand-alone, as trials of the space's normal study (--target-study)")
    fin.add_argument("--top", type=int, default=3, metavar="N",
                     help="front sub-networks to retrain")
    fin.add_argument("--no-verify", action="store_true",
                     help="skip re-attacking the retrained front (`automoe verify`)")
    verify_budget(fin, "verify-")
    fin.add_argument("--target-study", default=None, metavar="NAME",
                     help="the study of the stand-alone trials (default: the space's name)")
