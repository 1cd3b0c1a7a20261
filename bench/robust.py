"""Robust training schemes on digits: dense vs MoE, each trained standard, PGD-AT, TRADES
and AdvMoE, then attacked.

    python bench/robust.py [--epochs 6] [--eps 8/255]

Prints clean accuracy and robust accuracy under PGD-20, router-aware PGD-20, APGD-CE and
APGD-DLR (L-inf, on the test split), and the worst case over the attacks. Every model is
trained from the same seed on the same data in one run.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from automoe.data import load_dataset
from automoe.models import create_model
from automoe.robustness import AttackConfig, attack_batch
from automoe.training import TrainConfig, evaluate_accuracy, make_loader, train


def robust_table_row(model, test_set, eps: float) -> list[float]:
    attacks = [AttackConfig(attack=a, eps=eps, step_size=eps / 4, steps=20)
               for a in ("pgd", "router-pgd", "apgd-ce", "apgd-dlr")]
    model.eval()
    generator = torch.Generator().manual_seed(0)
    ok = {cfg.attack: [] for cfg in attacks}
    for images, labels in make_loader(test_set, 512):
        for cfg in attacks:
            adv = attack_batch(model, images, labels, cfg, generator)
            with torch.no_grad():
                ok[cfg.attack].append(model(adv).argmax(1) == labels)
    per_attack = {k: torch.cat(v) for k, v in ok.items()}
    worst = torch.stack(list(per_attack.values())).all(0)
    return [100 * evaluate_accuracy(model, test_set)] + [
        100 * v.float().mean().item() for v in per_attack.values()] + [
        100 * worst.float().mean().item()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--eps", default="8/255")
    args = parser.parse_args()
    num, _, den = args.eps.partition("/")
    eps = float(num) / float(den or 1)
    train_set = load_dataset("digits", "train", image_size=16)
    test_set = load_dataset("digits", "test", image_size=16)
    info = train_set.info
    table = Table(title=f"digits 16x16, ResNet-8, {args.epochs} epochs, L-inf eps={args.eps}, "
                        f"test split ({len(test_set)} images), torch {torch.__version__}")
    for col in ("model", "training", "clean %", "PGD-20 %", "router PGD-20 %", "APGD-CE %",
                "APGD-DLR %", "worst %", "train s"):
        table.add_column(col, justify="right" if col.endswith(("%", "s")) else "left")
    models = {"dense": dict(placement="none"),
              "MoE last_stage E4 k1": dict(placement="last_stage", num_experts=4, top_k=1,
                                           gate="topk")}
    for model_name, cfg in models.items():
        for scheme in ("standard", "pgd_at", "trades", "advmoe"):
            if scheme == "advmoe" and cfg["placement"] == "none":
                continue  # AdvMoE alternates routers and experts: MoE only
            torch.manual_seed(0)
            model = create_model("resnet8", in_channels=1, image_size=16,
                                 input_mean=info.mean, input_std=info.std, **cfg)
            recipe = TrainConfig(epochs=args.epochs, lr=0.1, scheme=scheme, adv_eps=eps,
                                 adv_step_size=eps / 4, adv_steps=5)
            start = time.perf_counter()
            train(model, train_set, recipe)
            seconds = time.perf_counter() - start
            row = robust_table_row(model, test_set, eps)
            table.add_row(model_name, scheme, *(f"{v:.2f}" for v in row), f"{seconds:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
