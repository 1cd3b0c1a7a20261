"""Measured inference latency of a model on a device."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], device: str = "cpu",
                    batch_size: int = 1, warmup: int = 3, repeats: int = 20) -> float:
    """Median wall time of one eval forward, in milliseconds per sample.

    Timed on ``device`` with random inputs of ``(batch_size, *input_shape)``; CUDA work is
    synchronised around each run. The figure depends on the machine and on what else runs
    on it: compare latencies measured on one machine only.
    """
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    x = torch.rand(batch_size, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1e3 * statistics.median(times) / batch_size
