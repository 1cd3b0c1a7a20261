"""Training a supernet: several sub-networks per step on its shared weights."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from automoe.errors import ConfigError
from automoe.robustness import AttackConfig, attack_batch
from automoe.search.supernet._options import SUPERNET_SCHEMES, SupernetTrainConfig
from automoe.training import (
    TrainConfig,
    check_finite,
    cosine_schedule,
    make_loader,
    make_optimizer,
)


def train_supernet(net, train_set, config: TrainConfig, options: SupernetTrainConfig, *,
                   device: str = "cpu", on_step=None) -> list[dict]:
    """Train the :class:`~automoe.search.supernet.Supernet` ``net`` in place with the
    recipe ``config`` (its epochs as given) and ``options``; see :meth:`Supernet.train
    <automoe.search.supernet.Supernet.train>`. Returns the per-epoch history and keeps it,
    with the options, on ``net``."""
    subnets_per_step, distill = options.subnets_per_step, options.distill
    expert_sampling, step_rule = options.expert_sampling, options.step_rule
    width_schedule = options.width_schedule
    if config.scheme not in SUPERNET_SCHEMES:
        raise ConfigError(f"the supernet trains with scheme {' or '.join(SUPERNET_SCHEMES)}"
                          f", not {config.scheme!r}")
    attack = None
    if config.scheme == "pgd_at":
        attack = AttackConfig(eps=config.adv_eps, step_size=config.adv_step_size,
                              steps=config.adv_steps)
    model = net.model.to(device).train()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    order_rng = random.Random(config.seed + 1)  # expert orders, apart from the specs
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                         device=device)
    optimizer = make_optimizer(model.parameters(), config)
    total = config.epochs * len(loader)
    scheduler = cosine_schedule(optimizer, total)
    history, step = [], 0
    for epoch in range(config.epochs):
        sums = torch.zeros(2, dtype=torch.float64)  # largest's CE, others' loss
        seen = 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            specs = net.step_subnets(rng, subnets_per_step, step_rule,
                                      net.step_widths(step, total, width_schedule))
            if attack is not None:  # examples against the largest, in eval mode
                images = attack_batch(net.subnet(specs[0]).eval(), images, labels, attack)
            teacher = None
            for i, spec in enumerate(specs):
                experts = None
                if expert_sampling == "subset":
                    experts = tuple(order_rng.sample(range(net.max_experts),
                                                     net.max_experts))
                logits, aux = net.subnet(spec, experts)(images, labels)
                if i == 0 or not distill:
                    loss = F.cross_entropy(logits, labels)
                else:  # in-place distillation from the largest sub-network
                    loss = F.kl_div(logits.log_softmax(1), teacher, reduction="batchmean")
                if i == 0:
                    teacher = logits.detach().softmax(1)
                loss = loss + aux
                check_finite(loss, epoch, step, config)
                loss.backward()
                share = 1.0 if i == 0 else 1.0 / (len(specs) - 1)
                sums[0 if i == 0 else 1] += loss.item() * labels.shape[0] * share
            optimizer.step()
            scheduler.step()
            seen += labels.shape[0]
            step += 1
            if on_step is not None:
                on_step(step, total)
        largest, others = (sums / max(seen, 1)).tolist()
        # the largest sub-network's cross-entropy, and the others' (distillation) loss
        history.append({"epoch": epoch + 1, "loss": largest, "subnet_loss": others})
    net.history = history
    options = {k: v for k, v in options.to_dict().items() if k != "epochs"}  # in the recipe
    net.trained_with = {"recipe": config.to_dict(), **options}
    return history
