"""MoE against the dense backbone of the same active MACs, with router health.

    python bench/moe_quality.py [--seeds 3] [--epochs 10] [--task cluttered|digits]
    python bench/moe_quality.py --adversarial --epochs 6 --configs dense conv-e4 ...

Trains each configuration of ResNet-8 (width 1, MoE in the last two stages) with the same
recipe (SGD, Nesterov, cosine, lr 0.1, batch 64) for every seed, and prints per
configuration: active MMACs, mean ± std (over seeds) of validation accuracy and of the
router health (expert use: the fewest effective experts of any MoE layer on the val
split, as a fraction of E), and the difference to the dense backbone. ``--adversarial``
trains with PGD-AT (the ``--adv-steps``-step L∞ PGD at 8/255) and also reports PGD-10
robust accuracy on the val split; the ``advmoe`` configuration runs AdvMoE's recipe
(``st_top1`` gate, supervised router loss, the ``advmoe`` scheme), and ``dense-trades`` the
dense backbone under TRADES, the loss of AdvMoE's expert step.

``--task cluttered`` (the default) is the capacity-bound task of ``bench/supernet.py``:
digits at random places of a 16 px canvas under clutter and noise, where a wider or
deeper net is more accurate; on plain digits every net reaches 97-99 %.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from automoe.data import load_dataset
from automoe.errors import TrainingDivergedError
from automoe.layers import expert_use, track_expert_usage
from automoe.models import count_flops, create_model
from automoe.results._verify import VerifyConfig
from automoe.robustness import (
    AttackConfig,
    robust_accuracy,
    transfer_examples,
    worst_case_accuracy,
)
from automoe.training import TrainConfig, evaluate_accuracy, train

# name -> model-config fields on top of ResNet-8 (every MoE config: placement last_two).
# A config with no `train` fields gets the library's recipe (routed experts upcycle at
# 0.5); "-scratch" configs turn upcycling off, "-up" ones set it explicitly.
CONFIGS = {
    "dense": dict(placement="none"),
    "conv-e4": dict(granularity="conv", num_experts=4, top_k=1),
    "conv-e8": dict(granularity="conv", num_experts=8, top_k=1),
    "block-e4": dict(granularity="block", num_experts=4, top_k=1),
    "block-e8": dict(granularity="block", num_experts=8, top_k=1),
    "conv-e4-scratch": dict(granularity="conv", num_experts=4, top_k=1, train=dict(upcycle=0)),
    "conv-e8-scratch": dict(granularity="conv", num_experts=8, top_k=1, train=dict(upcycle=0)),
    "block-e4-scratch": dict(granularity="block", num_experts=4, top_k=1,
                             train=dict(upcycle=0)),
    "block-e8-scratch": dict(granularity="block", num_experts=8, top_k=1,
                             train=dict(upcycle=0)),
    "condconv-e4": dict(granularity="condconv", num_experts=4),
    # the pre-fix defaults: zero-initialised router on raw pooled features, softmax-over-E
    # gates, independent expert draws, no z-loss
    "conv-e4-old": dict(granularity="conv", num_experts=4, top_k=1, router_norm="none",
                        router_init=0.0, gate_softmax="all", expert_init="independent",
                        router_z_loss=0.0),
    "advmoe-e4": dict(granularity="conv", num_experts=4, top_k=1, gate="st_top1",
                      balance_loss="supervised", balance_weight=1.0, router="global"),
    # the dense backbone under TRADES: the loss AdvMoE's expert step uses (CE + beta KL)
    "dense-trades": dict(placement="none"),
    # sparse upcycling: the first half of the epochs train the dense twin (train fields
    # after "train")
    "conv-e4-up": dict(granularity="conv", num_experts=4, top_k=1, train=dict(upcycle=0.5)),
    "conv-e8-up": dict(granularity="conv", num_experts=8, top_k=1, train=dict(upcycle=0.5)),
    "block-e4-up": dict(granularity="block", num_experts=4, top_k=1, train=dict(upcycle=0.5)),
    "block-e8-up": dict(granularity="block", num_experts=8, top_k=1, train=dict(upcycle=0.5)),
    # gates and router learning rates, upcycled conv E8 (the default is noisy top-k gates
    # under the top-k softmax, router lr = lr)
    "conv-e8-up-topk": dict(granularity="conv", num_experts=8, top_k=1, gate="topk",
                            train=dict(upcycle=0.5)),
    "conv-e8-up-topk-st": dict(granularity="conv", num_experts=8, top_k=1,
                               gate_softmax="topk_st", train=dict(upcycle=0.5)),
    "conv-e8-up-all": dict(granularity="conv", num_experts=8, top_k=1, gate_softmax="all",
                           train=dict(upcycle=0.5)),
    "conv-e8-up-st": dict(granularity="conv", num_experts=8, top_k=1, gate="st_top1",
                          train=dict(upcycle=0.5)),
    **{f"conv-e8-up-rlr{mult:g}": dict(granularity="conv", num_experts=8, top_k=1,
                                        train=dict(upcycle=0.5, router_lr_mult=mult))
       for mult in (0.01, 0.1, 10.0)},
    # Pavlitska et al.'s robust ConvMoE: straight-through top-1, entropy loss 0.5, upcycled
    "pavlitska-e4": dict(granularity="conv", num_experts=4, top_k=1, gate="st_top1",
                         balance_loss="entropy", balance_weight=0.5, train=dict(upcycle=0.5)),
    # the same, its training examples crafted through fixed routing (BPDA), so the
    # straight-through gate's gradient does not weaken them; "-trades": under TRADES
    **{name: dict(granularity="conv", num_experts=4, top_k=1, gate="st_top1",
                  balance_loss="entropy", balance_weight=0.5,
                  train=dict(upcycle=0.5, adv_fixed_routing=True))
       for name in ("pavlitska-e4-fixed", "pavlitska-e4-fixed-trades")},
    # upcycled conv experts with the default top-k gate under TRADES
    "conv-e4-up-trades": dict(granularity="conv", num_experts=4, top_k=1,
                              train=dict(upcycle=0.5)),
    # AdvMoE with a per-layer router (its MACs are the dense net's), upcycled
    "advmoe-layer-e4": dict(granularity="conv", num_experts=4, top_k=1, gate="st_top1",
                            balance_loss="supervised", balance_weight=1.0,
                            train=dict(upcycle=0.5)),
}


def data(task: str):
    if task == "cluttered":
        train_set = load_dataset("cluttered_digits", "train")
        val_set = load_dataset("cluttered_digits", "val")
        info = train_set.info
        return train_set, val_set, (info.in_channels, info.num_classes, info.image_size,
                                    info.mean, info.std)
    train_set = load_dataset("digits", "train", image_size=16)
    val_set = load_dataset("digits", "val", image_size=16)
    info = train_set.info
    return train_set, val_set, (info.in_channels, info.num_classes, 16, info.mean, info.std)


def run(name: str, lr: float, seed: int, args, train_set, val_set, shape,
        surrogate=None) -> dict:
    channels, classes, size, mean, std = shape
    fields = {"placement": args.placement, **CONFIGS[name]}
    train_fields = fields.pop("train", {})
    torch.manual_seed(seed)
    model = create_model("resnet8", in_channels=channels, num_classes=classes,
                         image_size=size, input_mean=mean, input_std=std, **fields)
    scheme = "standard"
    if args.adversarial:
        scheme = ("advmoe" if name.startswith("advmoe") else
                  "trades" if name.endswith("-trades") else "pgd_at")
    config = TrainConfig(epochs=args.epochs, lr=lr, seed=seed, scheme=scheme,
                         adv_steps=args.adv_steps,
                         adv_step_size=(5 if scheme == "advmoe" else 2.5) / 255,
                         grad_clip=args.grad_clip, **train_fields)
    start = time.perf_counter()
    try:
        result = train(model, train_set, config)
    except TrainingDivergedError as error:
        # a diverged run is a result of this benchmark, not a crash of it
        return {"val": math.nan, "use": None, "seconds": time.perf_counter() - start,
                "mmacs": count_flops(model, (channels, size, size))["active"] / 1e6,
                "final_loss": math.nan, "finite": False, "diverged": str(error),
                **({"robust": math.nan} if args.adversarial else {})}
    with track_expert_usage(model) as usage:
        val = 100 * evaluate_accuracy(model, val_set)
    row = {"val": val, "use": expert_use(usage.health()), "seconds": time.perf_counter() - start,
           "mmacs": count_flops(model, (channels, size, size))["active"] / 1e6,
           "final_loss": result.history[-1]["loss"],
           "finite": True}
    if args.adversarial:
        row["robust"] = 100 * robust_accuracy(model, val_set, AttackConfig(steps=10))
    if args.verify:
        row.update(verified(model, val_set, args, surrogate))
    row["model"] = model
    return row


def verified(model, val_set, args, surrogate) -> dict:
    """The worst case of the verifying attacks (`automoe verify`'s: APGD-CE, APGD-DLR,
    router-PGD, APGD-CE through fixed routing, Square) and of PGD transferred from the dense
    model of the same seed."""
    proxy = AttackConfig(steps=10)
    attacks = VerifyConfig(steps=args.verify_steps, restarts=1,
                           square_queries=args.square_queries).attacks(proxy)
    transfer = ({} if surrogate is None else
                {"transfer": transfer_examples(surrogate, val_set, VerifyConfig(
                    steps=args.verify_steps).transfer_attack(proxy))})
    report = worst_case_accuracy(model, val_set, attacks, transfer=transfer)
    square = next(100 * v for k, v in report.per_attack.items() if k.startswith("square"))
    fixed = next(100 * v for k, v in report.per_attack.items()
                 if k.startswith("apgd-fixed-routing"))
    return {"verified": 100 * report.worst, "white_box": 100 * report.white_box,
            "square": square, "fixed_routing": fixed,
            "transfer": 100 * report.per_attack.get("transfer", math.nan)}


def mean_std(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]  # diverged runs are counted apart
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["cluttered", "digits"], default="cluttered")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.1],
                        help="one or more learning rates; each config runs at each")
    parser.add_argument("--adversarial", action="store_true", help="PGD-AT (advmoe: AdvMoE)")
    parser.add_argument("--adv-steps", type=int, default=3, help="PGD steps in training")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        default=["dense", "conv-e4", "conv-e8", "block-e4", "block-e8",
                                 "condconv-e4", "conv-e4-old"])
    parser.add_argument("--grad-clip", type=float, default=None,
                        help="TrainConfig.grad_clip (default: the scheme's default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--placement", default="last_two", help="MoE placement of every config")
    parser.add_argument("--verify", action="store_true",
                        help="also the verified worst case (APGD-CE, APGD-DLR, router-PGD, "
                             "fixed-routing APGD, Square, transfer from the same seed's dense "
                             "model)")
    parser.add_argument("--verify-steps", type=int, default=20)
    parser.add_argument("--square-queries", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    train_set, val_set, shape = data(args.task)
    rows: dict[tuple[str, float], list[dict]] = {}
    # dense first: its model of each seed is the transfer attack's surrogate
    names = sorted(args.configs, key=lambda n: n != "dense")
    for lr in args.lr:
        for name in names:
            for seed in range(args.seeds):
                dense = rows.get(("dense", lr), [])
                surrogate = dense[seed]["model"] if len(dense) > seed else None
                row = run(name, lr, seed, args, train_set, val_set, shape, surrogate)
                rows.setdefault((name, lr), []).append(row)
                use = "-" if row["use"] is None else f"{row['use']:.2f}"
                console.print(f"{name:12s} lr {lr:g} seed {seed} val {row['val']:.2f}"
                              + (f" robust {row['robust']:.2f}" if "robust" in row else "")
                              + (f" verified {row['verified']:.2f} (white-box "
                                 f"{row['white_box']:.2f}, fixed routing "
                                 f"{row['fixed_routing']:.2f}, square {row['square']:.2f}, "
                                 f"transfer {row['transfer']:.2f})" if "verified" in row
                                 else "")
                              + f" expert use {use} final loss {row['final_loss']:.4g}"
                              + f" ({row['seconds']:.0f} s)")
    lrs = ", ".join(f"{lr:g}" for lr in args.lr)
    title = (f"ResNet-8 on {args.task} digits, MoE {args.placement}, {args.epochs} epochs "
             f"(upcycled: the dense phase counts), lr {lrs}, "
             f"{'PGD-AT ' + str(args.adv_steps) + '-step' if args.adversarial else 'standard'}"
             f" training, seeds 0..{args.seeds - 1} (mean ± std)")
    table = Table(title=title, title_justify="left")
    for col in ("config", "lr", "active MMACs", "val %", "val - dense",
                *(("robust % (PGD-10)", "robust - dense") if args.adversarial else ()),
                *(("verified %", "verified - dense", "white-box %", "fixed routing %",
                   "square %", "transfer %")
                  if args.verify else ()),
                "expert use", "finite loss", "s / run"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for (name, lr), runs in rows.items():
        dense_runs = rows.get(("dense", lr), [])
        dense = [r["val"] for r in dense_runs]
        dense_robust = [r["robust"] for r in dense_runs if "robust" in r]
        vals = [r["val"] for r in runs]
        uses = [r["use"] for r in runs if r["use"] is not None]
        diff = ([v - d for v, d in zip(vals, dense, strict=False)] if dense and name != "dense"
                else [])
        cells = [name, f"{lr:g}", f"{runs[0]['mmacs']:.3f}", mean_std(vals), mean_std(diff)]
        if args.adversarial:
            robust = [r["robust"] for r in runs]
            rdiff = ([v - d for v, d in zip(robust, dense_robust, strict=False)]
                     if dense_robust and name != "dense" else [])
            cells += [mean_std(robust), mean_std(rdiff)]
        if args.verify:
            ver = [r["verified"] for r in runs]
            dense_ver = [r["verified"] for r in dense_runs]
            vdiff = ([v - d for v, d in zip(ver, dense_ver, strict=False)]
                     if dense_ver and name != "dense" else [])
            cells += [mean_std(ver), mean_std(vdiff),
                      *(mean_std([r[key] for r in runs])
                        for key in ("white_box", "fixed_routing", "square", "transfer"))]
        cells += [mean_std(uses), f"{sum(r['finite'] for r in runs)}/{len(runs)}",
                  f"{statistics.mean(r['seconds'] for r in runs):.0f}"]
        table.add_row(*cells)
    console.print(table)
    console.print("val - dense: paired by seed and lr (same data order and seed as the dense "
                  "run). finite loss: runs whose training loss stayed finite in every epoch.")


if __name__ == "__main__":
    main()
