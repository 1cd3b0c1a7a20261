"""Measuring a model: the one place that turns a model and its data into the metrics of
:data:`~automoe.space.METRICS` (and the rest a trial records).

Search trials (at every rung and at the end) and ``automoe eval`` of an export both call
:func:`measure`, so a value means the same wherever it is printed: accuracy in %, MACs of
the active path per sample averaged over a fixed probe of val images (channel gates depend
on the image; routers included), parameters and latency, robust accuracy under the
evaluation's attack, router health and the expert-class specialisation of the val pass.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from automoe.layers import expert_use, specialisation, track_expert_usage
from automoe.models import count_flops, count_params, measure_latency
from automoe.robustness import AttackConfig, robust_accuracy
from automoe.training import evaluate_accuracy

PROBE_IMAGES = 256  # val images the active MACs are averaged over


@dataclass
class Splits:
    """The data a model is measured on; built once per study (or export) and reused."""

    val: Dataset
    test: Dataset | None = None  # None: no test accuracy
    probe: torch.Tensor = field(init=False)  # (N, C, H, W): the first val images, for MACs
    val_labels: torch.Tensor = field(init=False)  # (len(val),): for per-class expert usage

    def __post_init__(self):
        n_probe = min(len(self.val), PROBE_IMAGES)
        self.probe = torch.stack([self.val[i][0] for i in range(n_probe)])
        self.val_labels = torch.tensor([self.val[i][1] for i in range(len(self.val))])

    @property
    def info(self):
        return self.val.info


@dataclass(frozen=True)
class Evaluation:
    """How a model is measured (a space's ``evaluation`` section, or an export's)."""

    batch_size: int = 256  # evaluation batch
    attack: AttackConfig | None = None  # robust accuracy under it (None: not measured)
    latency: dict | None = None  # {batch_size, warmup, repeats} (None: not measured)
    test: bool = True  # also the test split's accuracy
    device: str = "cpu"


@dataclass
class Measurement:
    """What :func:`measure` found."""

    metrics: dict[str, float]  # metric name -> value (%, millions, ms)
    macs: dict[str, float]  # MACs per sample: active, dense, executed
    params: int
    router_health: dict  # MoE layer -> RouterHealth of the val pass
    specialisation: dict[str, float]  # top-k routed layer -> expert-class NMI in [0, 1]
    usage: object  # the val pass's ExpertUsage: counts and per-class matrices

    def costs(self) -> dict[str, float]:
        """The cost metrics measured: ``mmacs``, ``mparams`` and ``latency_ms``."""
        return {k: v for k, v in self.metrics.items() if k in ("mmacs", "mparams", "latency_ms")}

    def class_usage(self, splits: Splits) -> dict | None:
        """Per MoE layer, the experts x classes counts of the val pass (None: no router)."""
        if not self.usage.assignments:
            return None
        return self.usage.per_class(splits.val_labels, splits.info.num_classes)


def measure(model: torch.nn.Module, splits: Splits, evaluation: Evaluation) -> Measurement:
    """Measure ``model`` as it is now (a channel-gated model's cost changes with training).

    Metrics: ``val_accuracy``, ``mmacs``, ``mparams``, ``specialisation`` (mean over the
    routed layers, 0 without one: a dense model sends every class one way), and when asked
    for ``latency_ms``, ``robust_accuracy`` (on val) and ``test_accuracy``; ``expert_use``
    for a model with routers.
    """
    batch, device = evaluation.batch_size, evaluation.device
    with track_expert_usage(model) as usage:  # the routing of the val pass only
        val_accuracy = evaluate_accuracy(model, splits.val, batch, device)
    info = splits.info
    shape = (info.in_channels, info.image_size, info.image_size)
    macs = count_flops(model, shape, inputs=splits.probe)
    params = count_params(model)
    metrics = {"mmacs": macs["active"] / 1e6, "mparams": params / 1e6}
    if evaluation.latency is not None:
        lat = evaluation.latency
        metrics["latency_ms"] = measure_latency(model, shape, device, lat["batch_size"],
                                                lat["warmup"], lat["repeats"])
    health = usage.health()
    layer_nmi = {}
    if usage.assignments:
        matrices = usage.per_class(splits.val_labels, info.num_classes)
        layer_nmi = {name: specialisation(m) for name, m in matrices.items() if name in health}
    metrics["val_accuracy"] = 100 * val_accuracy
    metrics["specialisation"] = statistics.fmean(layer_nmi.values()) if layer_nmi else 0.0
    if evaluation.attack is not None:
        metrics["robust_accuracy"] = 100 * robust_accuracy(model, splits.val, evaluation.attack,
                                                           batch, device)
    if evaluation.test and splits.test is not None:
        metrics["test_accuracy"] = 100 * evaluate_accuracy(model, splits.test, batch, device)
    if health:
        metrics["expert_use"] = expert_use(health)
    return Measurement(metrics=metrics, macs=macs, params=params, router_health=health,
                       specialisation=layer_nmi, usage=usage)
