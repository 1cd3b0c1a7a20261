"""Weight-sharing supernet vs stand-alone training on digits: rank agreement and cost.

    python bench/supernet.py [--subnets 24] [--supernet-epochs 12] [--epochs 6]

Trains one supernet over the default space's placement x experts x top-k (MoE ResNet-8,
width 0.5, digits 16x16) with the sandwich rule (4 sub-networks per step, in-place
distillation), then, for ``--subnets`` distinct sub-networks, measures validation accuracy

* with inherited weights: extracted from the supernet, BatchNorm recalibrated on 10
  training batches;
* stand-alone: the same architecture trained from scratch for ``--epochs`` (the recipe of
  a normal trial), once per seed of ``--standalone-seeds``.

Prints Kendall's tau (and Spearman's rho) between the two accuracies, the tau between two
stand-alone seeds (how well stand-alone accuracy ranks itself), and the cost of one
inherited-weight evaluation against one stand-alone trial, without and with the supernet's
training amortised over the sub-networks evaluated.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau, spearmanr

from automoe.data import load_dataset
from automoe.search import SearchSpace, resolve_space_path
from automoe.search.supernet import Supernet, recalibrate_batchnorm
from automoe.training import TrainConfig, evaluate_accuracy, train


def bench_space(epochs: int) -> SearchSpace:
    raw = SearchSpace.from_file(resolve_space_path("default")).raw
    params = raw["params"]
    raw = {**raw, "params": {"placement": params["placement"], "experts": params["experts"],
                             "top_k": params["top_k"], "width_multiplier": 0.5,
                             "balance_weight": 0.01, "lr": 0.08, "epochs": epochs,
                             "batch_size": 64}}
    return SearchSpace.from_dict(raw, source="bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subnets", type=int, default=24)
    parser.add_argument("--supernet-epochs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6, help="stand-alone training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--standalone-seeds", type=int, default=2,
                        help="stand-alone trainings per sub-network (their mean is compared; "
                             "two or more also give the seed-to-seed tau: the noise ceiling)")
    args = parser.parse_args()
    console = Console(width=150)
    space = bench_space(args.epochs)
    train_set = load_dataset("digits", "train", image_size=16)
    val_set = load_dataset("digits", "val", image_size=16)
    torch.manual_seed(args.seed)
    net = Supernet(space, train_set.info)
    recipe = TrainConfig(epochs=args.epochs, lr=0.08, batch_size=64, seed=args.seed)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
                  f"{len(net.placements)} placements x experts {net.expert_choices} x top-k "
                  f"{net.k_choices}")

    start = time.perf_counter()
    history = net.train(train_set, TrainConfig(epochs=args.supernet_epochs, lr=0.08,
                                               batch_size=64, seed=args.seed),
                        subnets_per_step=4, distill=True)
    supernet_seconds = time.perf_counter() - start
    console.print(f"supernet: {args.supernet_epochs} epochs in {supernet_seconds:.0f}s, "
                  f"last loss {history[-1]['loss']:.3f}")

    rng = random.Random(args.seed)
    specs = []
    while len(specs) < args.subnets:
        spec = net.sample(rng)
        if spec.is_dense:  # every dense spec is the same network
            spec = type(spec)(spec.placement, min(net.expert_choices), min(net.k_choices))
        if spec not in specs:
            specs.append(spec)

    rows = []
    inherit_seconds = standalone_seconds = 0.0
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        sub = recalibrate_batchnorm(net.extract(spec), train_set, batches=10, seed=args.seed)
        inherited = 100 * evaluate_accuracy(sub, val_set)
        t1 = time.perf_counter()
        alone_runs = []
        for seed in range(args.seed, args.seed + args.standalone_seeds):
            torch.manual_seed(seed)
            model = net.build(spec.placement, spec.experts, spec.top_k)
            train(model, train_set, replace(recipe, seed=seed))
            alone_runs.append(100 * evaluate_accuracy(model, val_set))
        alone = sum(alone_runs) / len(alone_runs)
        t2 = time.perf_counter()
        inherit_seconds += t1 - t0
        standalone_seconds += (t2 - t1) / args.standalone_seeds
        rows.append((spec, inherited, alone, alone_runs))
        console.print(f"{i + 1:>3}/{len(specs)} {spec.placement} E{spec.experts} "
                      f"k{spec.top_k}: inherited {inherited:5.1f} %, stand-alone "
                      + " ".join(f"{a:5.1f}" for a in alone_runs) + " %")

    tau = kendalltau([r[1] for r in rows], [r[2] for r in rows])
    rho = spearmanr([r[1] for r in rows], [r[2] for r in rows])
    n = len(rows)
    per_inherit = inherit_seconds / n
    per_alone = standalone_seconds / n
    table = Table(title=f"{n} sub-networks", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("Kendall tau (inherited vs mean stand-alone val accuracy)",
                  f"{tau.statistic:.3f} (p {tau.pvalue:.2g})")
    table.add_row("Spearman rho", f"{rho.statistic:.3f}")
    if args.standalone_seeds >= 2:
        ceiling = kendalltau([r[3][0] for r in rows], [r[3][1] for r in rows])
        table.add_row("Kendall tau between two stand-alone seeds (noise ceiling)",
                      f"{ceiling.statistic:.3f} (p {ceiling.pvalue:.2g})")
    table.add_row("seconds per inherited-weight evaluation", f"{per_inherit:.2f}")
    table.add_row("seconds per stand-alone trial (train + eval)", f"{per_alone:.2f}")
    table.add_row("candidates per CPU-hour, inherited", f"{3600 / per_inherit:,.0f}")
    table.add_row("candidates per CPU-hour, stand-alone", f"{3600 / per_alone:,.0f}")
    table.add_row("speed-up per candidate", f"{per_alone / per_inherit:.1f}x")
    for count in (n, 1000):
        amortised = (supernet_seconds + count * per_inherit) / count
        table.add_row(f"speed-up with the supernet's training over {count} candidates",
                      f"{per_alone / amortised:.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
