"""A weight-sharing MoE supernet: train once, evaluate many sub-networks with inherited
weights.

The supernet is the space's backbone with every placement unit in MoE form (granularity
``conv``) and the largest number of experts the space allows. A sub-network
(:class:`SubnetSpec`) picks the MoE units (placement), the experts E and the top-k:

* an MoE unit of the sub-network routes among the supernet's first E experts (its router's
  first E scorer rows) and keeps the top k;
* a unit the sub-network keeps dense runs the supernet's expert 0 of each conv as a plain
  conv (no router).

:func:`extract_subnet` copies a sub-network's weights into the stand-alone model that
``create_model`` builds for that placement, E and k, so an extracted sub-network computes
exactly what the supernet computes in that configuration, and is measured (accuracy,
FLOPs, robustness) like any trial's model. Training samples several sub-networks per step
(the sandwich rule: the largest, the smallest and random ones, their gradients summed),
optionally distilling the largest one's predictions into the others (in-place
distillation). BatchNorm statistics are shared by all sub-networks while training, so
they are recomputed for each sub-network (:func:`recalibrate_batchnorm`) before it is
evaluated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from automoe.errors import AutomoeError, ConfigError
from automoe.layers import MoEConv2d
from automoe.models import create_model, resolve_placement
from automoe.search.space import PARAMS, SearchSpace
from automoe.training import TrainConfig, make_loader

SUPERNET_FORMAT = "automoe.supernet.v1"


@dataclass(frozen=True)
class SubnetSpec:
    """One sub-network of the supernet."""

    placement: str  # one 0/1 bit per placement unit
    experts: int  # E of every MoE unit
    top_k: int  # k of every MoE unit

    @property
    def is_dense(self) -> bool:
        return "1" not in self.placement

    def to_params(self) -> dict:
        """As search-space parameters (a dense sub-network has no MoE parameters)."""
        if self.is_dense:
            return {"placement": self.placement}
        return {"placement": self.placement, "experts": self.experts, "top_k": self.top_k}


class Supernet:
    """The supernet of a search space over placement, experts and top-k.

    Args:
        space: the search space. Its ``placement``, ``experts`` and ``top_k`` may be
            searched; every other model field is fixed (width, router, gate, ...), and the
            granularity must be ``conv``.
        info: the dataset's :class:`~automoe.data.DatasetInfo` (channels, classes, size).
    """

    def __init__(self, space: SearchSpace, info):
        others = set(space.dimensions) - {"placement", "experts", "top_k"}
        if others:
            raise ConfigError(f"the supernet searches placement, experts and top_k with one "
                              f"set of shared weights and one training recipe; fix "
                              f"{', '.join(sorted(others))} in the space")
        if space.fixed.get("granularity", "conv") != "conv":
            raise ConfigError("the supernet needs granularity conv")
        self.space = space
        self.info = info
        self.units = sum(space.units_per_stage())
        self.placements = self._placements()
        self.expert_choices = _values(space, "experts", 2)
        self.max_experts = max(self.expert_choices)
        self.k_choices = _values(space, "top_k", 1)
        self.fixed_model = self._fixed_model_fields()
        self.model = self.build("1" * self.units, self.max_experts, min(max(self.k_choices),
                                                                         self.max_experts))
        # which MoE layers belong to which placement unit, found by building the model with
        # one unit in MoE form at a time (works for every registered backbone)
        self.unit_layers: list[list[str]] = []
        for unit in range(self.units):
            bits = "".join("1" if u == unit else "0" for u in range(self.units))
            one = self.build(bits, 2, 1)
            self.unit_layers.append([n for n, m in one.named_modules()
                                     if isinstance(m, MoEConv2d)])
        self.layers = dict(self.model.named_modules())

    def _fixed_model_fields(self) -> dict:
        fields = dict(self.space.model_fixed)
        for name, value in self.space.fixed.items():
            target, field_name, _ = PARAMS[name]
            if target == "model" and name not in ("placement", "experts", "top_k"):
                fields[field_name] = value
        return fields

    def _placements(self) -> list[str]:
        dim = self.space.dimensions.get("placement")
        choices = dim.choices if dim is not None else (self.space.fixed.get("placement",
                                                                           "none"),)
        return [placement_bits(p, self.space.units_per_stage()) for p in choices]

    def build(self, placement: str, experts: int, top_k: int) -> nn.Module:
        """A stand-alone model of the space's backbone (fresh weights)."""
        info = self.info
        kwargs = {**self.fixed_model, "placement": placement}
        if "1" in placement:
            kwargs.update(num_experts=experts, top_k=top_k)
        else:
            kwargs.update(num_experts=1, top_k=1)
        return create_model(self.space.model_name, **kwargs, in_channels=info.in_channels,
                            num_classes=info.num_classes, image_size=info.image_size,
                            input_mean=info.mean, input_std=info.std)

    def recipe(self) -> TrainConfig:
        """The space's fixed training recipe (lr, epochs, batch size, ...)."""
        return TrainConfig(**{PARAMS[name][1]: value for name, value in self.space.fixed.items()
                              if PARAMS[name][0] == "train"})

    # ------------------------------------------------------------ sub-networks

    def largest(self) -> SubnetSpec:
        placement = max(self.placements, key=lambda p: p.count("1"))
        return SubnetSpec(placement, self.max_experts, min(max(self.k_choices),
                                                           self.max_experts))

    def smallest(self) -> SubnetSpec:
        placement = min(self.placements, key=lambda p: p.count("1"))
        experts = min(self.expert_choices)
        return SubnetSpec(placement, experts, min(self.k_choices))

    def sample(self, rng: random.Random) -> SubnetSpec:
        """A sub-network drawn uniformly per dimension, k <= E by construction."""
        experts = rng.choice(self.expert_choices)
        k = rng.choice([k for k in self.k_choices if k <= experts])
        return SubnetSpec(rng.choice(self.placements), experts, k)

    def configure(self, spec: SubnetSpec) -> nn.Module:
        """Set the supernet to run ``spec``; returns the supernet model."""
        for unit, names in enumerate(self.unit_layers):
            moe = spec.placement[unit] == "1"
            for name in names:
                layer = self.layers[name]
                layer.dense_expert = not moe
                layer.router.active_experts = spec.experts
                layer.router.top_k = layer.top_k = spec.top_k
        return self.model

    def extract(self, spec: SubnetSpec) -> nn.Module:
        """The stand-alone model of ``spec`` with the supernet's weights (and its BN
        statistics: recalibrate before evaluating)."""
        sub = self.build(spec.placement, spec.experts, spec.top_k)
        source = self.model.state_dict()
        target = sub.state_dict()
        moe_layers = {n for names in self.unit_layers for n in names}
        for key, value in target.items():
            layer = next((n for n in moe_layers if key.startswith(n + ".")), None)
            weight = source[key]
            if layer is not None and key == f"{layer}.weight":
                # (E_max, O, C, kh, kw) -> the first E experts, or expert 0 as a dense conv
                weight = weight[:spec.experts] if value.dim() == 5 else weight[0]
            elif layer is not None and ".router." in key and weight.shape != value.shape:
                weight = weight[:value.shape[0]]  # scorer / noise rows of the first E experts
            if weight.shape != value.shape:
                raise RuntimeError(f"cannot inherit {key}: {tuple(weight.shape)} -> "
                                   f"{tuple(value.shape)}")
            target[key] = weight.clone()
        sub.load_state_dict(target)
        return sub

    # ------------------------------------------------------------ training

    def train(self, train_set, config: TrainConfig, *, subnets_per_step: int = 4,
              distill: bool = True, device: str = "cpu", on_step=None) -> list[dict]:
        """Train the supernet with the sandwich rule; returns a per-epoch history of the
        largest sub-network's cross-entropy (``loss``) and the mean loss of the others
        (``subnet_loss``: KL to the largest with ``distill``, else cross-entropy)."""
        if subnets_per_step < 2:
            raise ConfigError("subnets_per_step must be >= 2 (the largest and the smallest)")
        model = self.model.to(device)
        torch.manual_seed(config.seed)
        rng = random.Random(config.seed)
        loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0,
                                    weight_decay=config.weight_decay)
        total = config.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
        history, step = [], 0
        for epoch in range(config.epochs):
            model.train()
            sums = torch.zeros(2, dtype=torch.float64)  # largest's CE, others' loss
            seen = 0
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                specs = [self.largest(), self.smallest()] + [
                    self.sample(rng) for _ in range(subnets_per_step - 2)]
                teacher = None
                for i, spec in enumerate(specs):
                    self.configure(spec)
                    logits = model(images)
                    if i == 0 or not distill:
                        loss = F.cross_entropy(logits, labels)
                    else:  # in-place distillation from the largest sub-network
                        loss = F.kl_div(logits.log_softmax(1), teacher, reduction="batchmean")
                    if i == 0:
                        teacher = logits.detach().softmax(1)
                    aux = model.aux_loss(labels)
                    if aux is not None:
                        loss = loss + aux
                    if not torch.isfinite(loss):
                        from automoe.errors import TrainingDivergedError

                        raise TrainingDivergedError(f"supernet loss became {loss.item()} at "
                                                    f"epoch {epoch + 1}; lower the lr")
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
        self.configure(self.largest())
        return history


    # ------------------------------------------------------------ files

    def save(self, path, history: list[dict] | None = None) -> None:
        """Write the supernet's weights with its space and dataset (atomic)."""
        from dataclasses import asdict

        from automoe.storage import save_checkpoint

        self.configure(self.largest())
        save_checkpoint(self.model, path, {"supernet": {
            "format": SUPERNET_FORMAT, "space": self.space.raw, "info": asdict(self.info),
            "history": history or []}})

    @classmethod
    def load(cls, path) -> Supernet:
        """A supernet written by :meth:`save`."""
        from safetensors.torch import load_file

        from automoe.data import DatasetInfo
        from automoe.storage import read_checkpoint_metadata

        try:
            meta = read_checkpoint_metadata(path)["extra"].get("supernet")
        except (OSError, AutomoeError, ValueError) as exc:
            raise ConfigError(f"cannot read supernet {str(path)!r}: {exc}") from None
        if not meta or meta.get("format") != SUPERNET_FORMAT:
            raise ConfigError(f"{str(path)!r} is not a supernet written by "
                              "`automoe supernet train`")
        info = meta["info"]
        info = DatasetInfo(**{**info, "mean": tuple(info["mean"]), "std": tuple(info["std"])})
        net = cls(SearchSpace.from_dict(meta["space"], source=str(path)), info)
        net.model.load_state_dict(load_file(str(path)))
        net.history = meta.get("history", [])
        return net


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset, batches: int = 10, batch_size: int = 128,
                          device: str = "cpu", seed: int = 0) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches`` training batches
    (cumulative averages), as weight-sharing NAS does before evaluating a sub-network."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    model.to(device).train()
    for i, (images, _) in enumerate(make_loader(dataset, batch_size, shuffle=True, seed=seed)):
        if i >= batches:
            break
        model(images.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    return model.eval()


def _values(space: SearchSpace, name: str, default: int) -> list[int]:
    """The values a searched int dimension takes (its grid), or its fixed value."""
    if name not in space.dimensions:
        return [int(space.fixed.get(name, default))]
    return sorted(int(v) for v in space.grid()[name])


def placement_bits(placement: str, units_per_stage: tuple[int, ...]) -> str:
    """A placement preset or mask as one 0/1 character per unit."""
    return "".join("1" if b else "0" for b in resolve_placement(placement, units_per_stage))
