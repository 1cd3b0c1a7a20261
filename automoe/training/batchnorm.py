"""BatchNorm statistics recomputed for a model whose weights it did not train with."""

from __future__ import annotations

import torch
from torch import nn

from automoe.data import make_loader


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset, batches: int = 10, batch_size: int = 128,
                          device: str = "cpu", seed: int = 0) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches`` training batches
    (cumulative averages), as weight-sharing NAS does before evaluating a sub-network.
    Only the norms run in training mode: routers route as they will when evaluated."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    # a noisy router adds noise in training mode: the statistics would be of other routes
    model.to(device).eval()
    for m in norms:
        m.train()
    for i, (images, _) in enumerate(make_loader(dataset, batch_size, shuffle=True, seed=seed,
                                                device=device)):
        if i >= batches:
            break
        model(images.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    return model.eval()
