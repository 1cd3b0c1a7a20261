"""Weight-sharing supernet vs stand-alone training: rank agreement and cost.

    python bench/supernet.py [--subnets 24] [--supernet-epochs 24] [--recal-batches 2 10]
    python bench/supernet.py --task cluttered --recipe-epochs 10 --standalone-seeds 4

Part 1 (digits, measured end to end). Trains one supernet of the ``supernet_digits`` space
(MoE ResNet-8 over placement x experts x top-k x width) with the sandwich rule (4
sub-networks per step) and progressive shrinking of the width (``--width-schedule all``
for every width from the first step; ``--step-rule largest_random`` for the largest and
random ones, ``--distill`` for in-place distillation, ``--expert-sampling subset`` for
random expert subsets), then, for ``--subnets`` distinct sub-networks, measures
validation accuracy

* with inherited weights: extracted from the supernet, BatchNorm recalibrated on each of
  ``--recal-batches`` training batches of 128 (the first is the one that is timed);
* stand-alone: the same architecture trained from scratch with the space's recipe, once
  per seed of ``--standalone-seeds``.

Prints Kendall's tau (and Spearman's rho) between the two accuracies over all
sub-networks and within each width, the tau of a proxy that needs no training (ranking by
active MACs, the bigger the better), the tau between two stand-alone seeds and, with four
or more seeds, between the means of two halves of them (how well stand-alone accuracy
ranks itself: the ceiling any proxy can reach), and the cost of one
inherited-weight evaluation against one stand-alone trial, without and with the
supernet's training amortised over the sub-networks evaluated.

``--task cluttered`` runs part 1 on a harder task built from the same digits, where
accuracy depends on capacity: each digit (11 px) at a random place of the 16 px canvas
under two fragments of other digits and Gaussian noise, three renderings of each train and
val image (``--recipe-epochs`` sets the stand-alone epochs; the supernet trains 4x them).

With ``--trial-cost N`` it also times N of those sub-networks as whole search trials, once
as `automoe supernet search` runs them (inherited weights) and once as `automoe search`
does (trained): every objective of the space measured, PGD included, and the checkpoint
stored. The robustness objective costs the same either way, so it bounds this ratio.

Part 2 (``--cifar-cost``, timed, CIFAR-10 shapes on random tensors). Digits' recipe trains
6 epochs on 1,077 images, so a stand-alone trial costs only ~20x the images an inherited
evaluation touches. This part times, on 3x32x32 inputs and the widest sub-network, one
training step and one inherited evaluation (extract, BN recalibration on 2,048 images,
accuracy on 10,000), and prints the candidates per CPU-hour of each for CIFAR-10 recipes
(50,000 training images) of 30 and 200 epochs: the epochs are step time x steps, not run.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau, spearmanr

from automoe.data import DatasetInfo, load_dataset
from automoe.models import count_flops
from automoe.search.supernet import (
    EXPERT_SAMPLING,
    STEP_RULES,
    WIDTH_SCHEDULES,
    SubnetSpec,
    Supernet,
    SupernetTrainConfig,
)
from automoe.space import SearchSpace, resolve_space_path
from automoe.training import evaluate_accuracy, recalibrate_batchnorm, train


def distinct_subnets(net: Supernet, count: int, seed: int) -> list[SubnetSpec]:
    """``count`` distinct sub-networks, drawn uniformly per dimension (a dense one is the
    same network whatever its E and k, so it is drawn once per width)."""
    rng = random.Random(seed)
    specs: list[SubnetSpec] = []
    for _ in range(100 * count):
        if len(specs) == count:
            break
        spec = net.canonical(net.sample(rng))
        if spec not in specs:
            specs.append(spec)
    return specs


def tau(a: list[float], b: list[float]) -> str:
    result = kendalltau(a, b)
    return f"{result.statistic:.3f} (p {result.pvalue:.2g})"


def ranking_part(args, console: Console) -> tuple[Supernet, list[SubnetSpec]]:
    space = SearchSpace.from_file(resolve_space_path(args.space))
    if args.widths:
        raw = dict(space.raw)
        raw["params"] = {**raw["params"], "width_multiplier": {"choices": args.widths}}
        space = SearchSpace.from_dict(raw, source="bench")
    size = space.dataset["image_size"]
    task = "cluttered_digits" if args.task == "cluttered" else space.dataset["name"]
    train_set = load_dataset(task, "train", image_size=size)
    val_set = load_dataset(task, "val", image_size=size)
    info = train_set.info
    torch.manual_seed(args.seed)
    net = Supernet(space, info)
    recipe = replace(net.recipe(), seed=args.seed)
    if args.recipe_epochs:
        recipe = replace(recipe, epochs=args.recipe_epochs)
    console.print(f"task {info.name} ({len(train_set)} train, {len(val_set)} val images); "
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads; space "
                  f"{space.name}: {len(net.placements)} placements x experts "
                  f"{net.expert_choices} x top-k {net.k_choices} x width {net.width_choices}; "
                  f"stand-alone recipe {recipe.epochs} epochs, lr {recipe.lr}, batch "
                  f"{recipe.batch_size}")

    options = SupernetTrainConfig(subnets_per_step=args.subnets_per_step, distill=args.distill,
                                  expert_sampling=args.expert_sampling,
                                  step_rule=args.step_rule, width_schedule=args.width_schedule,
                                  epochs=args.supernet_epochs)
    supernet_epochs = options.epochs_for(recipe.epochs)
    start = time.perf_counter()
    supernet_seed = args.seed if args.supernet_seed is None else args.supernet_seed
    history = net.train(train_set, replace(recipe, epochs=supernet_epochs, seed=supernet_seed),
                        options)
    supernet_seconds = time.perf_counter() - start
    console.print(f"supernet: {supernet_epochs} epochs in {supernet_seconds:.0f}s, "
                  f"last loss {history[-1]['loss']:.3f}")

    # stand-alone accuracies by sub-network, space (its fixed model fields), recipe and
    # seed, kept across runs with --standalone-cache (they do not depend on the supernet)
    cache = {}
    if args.standalone_cache:
        try:
            with open(args.standalone_cache) as f:
                cache = json.load(f)
        except FileNotFoundError:
            pass
    rows = []
    inherit_seconds = standalone_seconds = 0.0
    timed_alone = 0
    specs = distinct_subnets(net, args.subnets, args.seed)
    for i, spec in enumerate(specs):
        inherited = []
        for j, batches in enumerate(args.recal_batches):
            t0 = time.perf_counter()
            sub = recalibrate_batchnorm(net.extract(spec), train_set, batches=batches,
                                        seed=args.seed)
            inherited.append(100 * evaluate_accuracy(sub, val_set))
            if j == 0:
                inherit_seconds += time.perf_counter() - t0
        alone_runs = []
        for seed in range(args.seed, args.seed + args.standalone_seeds):
            key = json.dumps([spec.describe(), space.raw, replace(recipe, seed=seed).to_dict()]
                             + ([] if args.task == "digits" else [args.task]), sort_keys=True)
            if key not in cache:
                t1 = time.perf_counter()
                torch.manual_seed(seed)
                model = net.build(spec)
                train(model, train_set, replace(recipe, seed=seed))
                cache[key] = 100 * evaluate_accuracy(model, val_set)
                standalone_seconds += time.perf_counter() - t1
                timed_alone += 1
            alone_runs.append(cache[key])
        macs = count_flops(sub, (info.in_channels, info.image_size, info.image_size))["active"]
        rows.append((spec, inherited, sum(alone_runs) / len(alone_runs), alone_runs, macs))
        console.print(f"{i + 1:>3}/{len(specs)} {spec.describe():<16} inherited "
                      + " ".join(f"{a:5.1f}" for a in inherited) + " %, stand-alone "
                      + " ".join(f"{a:5.1f}" for a in alone_runs) + " %")

    if args.standalone_cache:
        with open(args.standalone_cache, "w") as f:
            json.dump(cache, f)
    n = len(rows)
    table = Table(title=f"{n} sub-networks on {info.name}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    alone = [r[2] for r in rows]
    for j, batches in enumerate(args.recal_batches):
        inherited = [r[1][j] for r in rows]
        table.add_row(f"Kendall tau, inherited (BN on {batches} batches) vs mean stand-alone",
                      tau(inherited, alone))
        table.add_row(f"Spearman rho, inherited (BN on {batches} batches) vs stand-alone",
                      f"{spearmanr(inherited, alone).statistic:.3f}")
    # a proxy that costs nothing: a bigger sub-network is a better one
    table.add_row("Kendall tau, active MACs (no training) vs mean stand-alone",
                  tau([r[4] for r in rows], alone))
    if args.standalone_seeds >= 2:
        table.add_row("Kendall tau between two stand-alone seeds (noise ceiling)",
                      tau([r[3][0] for r in rows], [r[3][1] for r in rows]))
    if args.standalone_seeds >= 4:
        half = [(sum(r[3][0::2]) / len(r[3][0::2]), sum(r[3][1::2]) / len(r[3][1::2]))
                for r in rows]
        table.add_row("Kendall tau between the means of two halves of the seeds",
                      tau([h[0] for h in half], [h[1] for h in half]))
    for width in net.width_choices:
        group = [r for r in rows if r[0].width == width]
        if len(group) >= 4:
            line = tau([r[1][0] for r in group], [r[2] for r in group])
            if args.standalone_seeds >= 2:
                line += ", seeds " + tau([r[3][0] for r in group], [r[3][1] for r in group])
            table.add_row(f"  within width {width:g} ({len(group)} sub-networks): tau "
                          "inherited, seeds", line)
    per_inherit = inherit_seconds / n
    per_alone = standalone_seconds / max(timed_alone, 1)
    table.add_row(f"seconds per inherited-weight evaluation (BN on {args.recal_batches[0]} "
                  "batches)", f"{per_inherit:.3f}")
    if not timed_alone:  # every stand-alone result came from the cache
        console.print(table)
        return net, specs
    table.add_row(f"seconds per stand-alone trial (train + eval; {timed_alone} timed)",
                  f"{per_alone:.2f}")
    table.add_row("candidates per CPU-hour, inherited", f"{3600 / per_inherit:,.0f}")
    table.add_row("candidates per CPU-hour, stand-alone", f"{3600 / per_alone:,.0f}")
    table.add_row("speed-up per candidate", f"{per_alone / per_inherit:.1f}x")
    for count in (n, 1000, 10000):
        amortised = (supernet_seconds + count * per_inherit) / count
        table.add_row(f"speed-up with the supernet's training over {count} candidates",
                      f"{per_alone / amortised:.1f}x")
    console.print(table)
    return net, specs


def trial_cost_part(args, console: Console, net: Supernet, specs: list[SubnetSpec]) -> None:
    """Whole search trials, as `automoe supernet search` and `automoe search` run them:
    the same candidates once with inherited weights and once trained stand-alone, each
    measured on every objective of the space (clean and PGD accuracy on val, MACs, test
    accuracy, checkpoint stored)."""
    import tempfile

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from automoe.results import TrialRecord
    from automoe.search import make_sampler, run_search

    space = net.space
    names = list(space.dimensions["placement"].choices)
    seconds = {}
    runs = [("inherited", net, space)]
    if args.attack_samples:  # `supernet search --attack-samples`: PGD on the first N only
        runs.append((f"inherited, PGD on {args.attack_samples} val images", net,
                     replace(space, attack=replace(space.attack,
                                                   max_samples=args.attack_samples))))
    runs.append(("stand-alone", None, space))
    with tempfile.TemporaryDirectory(prefix="bench-supernet-") as tmp:
        for i, (label, supernet, trial_space) in enumerate(runs):
            sampler = make_sampler("random", args.seed, space)

            def enqueue(study, resumed, complete):
                for spec in specs:
                    study.enqueue_trial({
                        "placement": names[net.placements.index(spec.placement)],
                        "experts": spec.experts, "top_k": spec.top_k,
                        "width_multiplier": spec.width})

            study = run_search(trial_space, optuna.storages.InMemoryStorage(),
                               study_name=label, trials=len(specs), sampler=sampler,
                               seed=args.seed, artifact_dir=f"{tmp}/{i}", resume=False,
                               on_start=enqueue,
                               trial_options={"supernet": supernet, "usage_plots": False,
                                              "recalibration_batches": args.recal_batches[0]})
            seconds[label] = sum((t.datetime_complete - t.datetime_start).total_seconds()
                                 for t in study.trials) / len(study.trials)
            seconds[label + " eval"] = sum(TrialRecord(t).eval_seconds
                                           for t in study.trials) / len(study.trials)
    table = Table(title=f"whole trials, {len(specs)} sub-networks each way (objectives "
                        f"{', '.join(space.objectives)}; PGD-{space.attack.steps} on val)",
                  title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, _, _ in runs:
        table.add_row(f"seconds per trial, {label} (of which measuring)",
                      f"{seconds[label]:.2f} ({seconds[label + ' eval']:.2f})")
    for label, _, _ in runs[:-1]:
        table.add_row(f"speed-up per trial, {label}",
                      f"{seconds['stand-alone'] / seconds[label]:.1f}x")
    console.print(table)


def cifar_cost_part(args, console: Console) -> None:
    """Time one training step and one inherited evaluation at CIFAR-10 shapes."""
    space = SearchSpace.from_file(resolve_space_path(args.space))
    info = DatasetInfo(name="cifar10-shaped", in_channels=3, num_classes=10, image_size=32,
                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    net = Supernet(space, info)
    spec = net.largest()
    images = torch.rand(2048, 3, 32, 32)
    labels = torch.randint(0, 10, (2048,))
    recal_set = torch.utils.data.TensorDataset(images, labels)
    val_set = torch.utils.data.TensorDataset(torch.rand(10000, 3, 32, 32),
                                             torch.randint(0, 10, (10000,)))
    recipe = net.recipe()
    batch = 128
    model = net.build(spec).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9)
    start = None
    for i in range(args.cifar_steps + 3):
        if i == 3:  # after 3 warm-up steps
            start = time.perf_counter()
        x, y = images[(i * batch) % 2048:][:batch], labels[(i * batch) % 2048:][:batch]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + model.aux_loss(y)
        loss.backward()
        optimizer.step()
    step_seconds = (time.perf_counter() - start) / args.cifar_steps
    t0 = time.perf_counter()
    sub = recalibrate_batchnorm(net.extract(spec), recal_set, batches=16, batch_size=128)
    evaluate_accuracy(sub, val_set, 256)
    inherit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_accuracy(model.eval(), val_set, 256)
    eval_seconds = time.perf_counter() - t0
    table = Table(title=f"cost at CIFAR-10 shapes, sub-network {spec.describe()} "
                        f"({args.cifar_steps} timed steps of {batch})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("seconds per training step (batch 128)", f"{step_seconds:.3f}")
    table.add_row("seconds per inherited evaluation (BN 2,048 + val 10,000 images)",
                  f"{inherit_seconds:.1f}")
    steps_per_epoch = -(-50000 // batch)
    for epochs in (30, 200):
        alone = epochs * steps_per_epoch * step_seconds + eval_seconds
        table.add_row(f"{epochs}-epoch recipe: seconds per stand-alone trial",
                      f"{alone:,.0f}")
        table.add_row(f"{epochs}-epoch recipe: candidates per CPU-hour, inherited vs "
                      "stand-alone", f"{3600 / inherit_seconds:,.0f} vs {3600 / alone:.2f} "
                                     f"({alone / inherit_seconds:,.0f}x)")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="supernet_digits")
    parser.add_argument("--widths", type=float, nargs="*", default=None,
                        help="override the space's width_multiplier choices")
    parser.add_argument("--subnets", type=int, default=24)
    parser.add_argument("--supernet-epochs", type=int, default=None,
                        help="supernet epochs (default: 4 x the recipe's, as `supernet train`)")
    defaults = SupernetTrainConfig()  # the library's defaults, declared once
    parser.add_argument("--subnets-per-step", type=int, default=defaults.subnets_per_step)
    parser.add_argument("--step-rule", choices=STEP_RULES, default=defaults.step_rule,
                        help="a step's sub-networks: the largest, the smallest and random ones "
                             "(sandwich), or the largest and random ones")
    parser.add_argument("--width-schedule", choices=WIDTH_SCHEDULES,
                        default=defaults.width_schedule,
                        help="widths a step draws from: progressive shrinking (the widest "
                             "alone for half the steps, then narrower ones added), or all")
    parser.add_argument("--distill", action="store_true",
                        help="in-place distillation from the largest sub-network")
    parser.add_argument("--expert-sampling", choices=EXPERT_SAMPLING,
                        default=defaults.expert_sampling,
                        help="experts a training step's sub-network runs: the first E, or "
                             "the first E of a random order of all")
    parser.add_argument("--recal-batches", type=int, nargs="+", default=[2, 10],
                        help="BN recalibration batches of 128 (the first is timed)")
    parser.add_argument("--task", choices=["digits", "cluttered"], default="digits",
                        help="digits: the space's dataset; cluttered: digits at random places "
                             "under clutter and noise, a task where capacity matters")
    parser.add_argument("--recipe-epochs", type=int, default=None,
                        help="stand-alone epochs (default: the space's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet-seed", type=int, default=None,
                        help="seed of the supernet's training: its batches and sub-networks "
                             "(default: --seed); the sub-networks compared stay the same")
    parser.add_argument("--standalone-seeds", type=int, default=2,
                        help="stand-alone trainings per sub-network (their mean is compared; "
                             "two or more also give the seed-to-seed tau: the noise ceiling)")
    parser.add_argument("--standalone-cache", default=None, metavar="FILE",
                        help="JSON file that keeps stand-alone accuracies across runs")
    parser.add_argument("--trial-cost", type=int, default=0, metavar="N",
                        help="also time N whole search trials each way (objectives measured, "
                             "checkpoint stored)")
    parser.add_argument("--attack-samples", type=int, default=None, metavar="N",
                        help="with --trial-cost: also time inherited trials that attack only "
                             "the first N val images (`supernet search --attack-samples`)")
    parser.add_argument("--cifar-cost", action="store_true",
                        help="also time the cost at CIFAR-10 shapes (part 2)")
    parser.add_argument("--cifar-steps", type=int, default=20)
    parser.add_argument("--skip-ranking", action="store_true",
                        help="skip part 1 (the rank agreement on --task)")
    args = parser.parse_args()
    if args.trial_cost and args.task != "digits":
        parser.error("--trial-cost runs search trials on the space's own dataset: --task digits")
    console = Console(width=150)
    if not args.skip_ranking:
        net, specs = ranking_part(args, console)
        if args.trial_cost:
            trial_cost_part(args, console, net, specs[:args.trial_cost])
    if args.cifar_cost:
        cifar_cost_part(args, console)


if __name__ == "__main__":
    main()
