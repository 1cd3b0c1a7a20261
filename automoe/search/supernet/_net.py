"""The supernet: one model at the space's largest, and its sub-networks as views on it."""

from __future__ import annotations

import random
from dataclasses import asdict
from itertools import chain

import torch
from safetensors.torch import load_file
from torch import nn
from torch.func import functional_call

from automoe.data import DatasetInfo
from automoe.errors import AutomoeError, ConfigError
from automoe.layers import MoEConv2d
from automoe.models import create_model, default_config
from automoe.search.supernet._options import SUBNET_PARAMS, SUPERNET_FORMAT, SupernetTrainConfig
from automoe.search.supernet._spec import (
    SubnetSpec,
    placement_bits,
    space_values,
)
from automoe.search.supernet._train import train_supernet
from automoe.space import PARAMS, SearchSpace
from automoe.storage import read_checkpoint_metadata, save_checkpoint
from automoe.training import TrainConfig, recalibrate_batchnorm


class _WithAux(nn.Module):
    """A model whose forward also returns its balancing loss, so that both are computed
    inside one functional call on the supernet's tensors."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(images)
        if labels is None:
            return logits
        return logits, self.net.aux_loss(labels)


class SubnetView(nn.Module):
    """A sub-network as a module that computes on the supernet's live tensors (no copy;
    gradients reach the supernet). Its own modules are shape-only (``meta``)."""

    def __init__(self, supernet: Supernet, spec: SubnetSpec, skeleton: _WithAux,
                 experts: tuple[int, ...] | None = None):
        super().__init__()
        self.spec = spec
        self.experts = experts
        # plain attributes, not children: the skeleton's meta parameters are not ours
        self._supernet, self._skeleton = supernet, skeleton

    def train(self, mode: bool = True) -> SubnetView:
        self._skeleton.train(mode)
        return super().train(mode)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """Logits, or (logits, balancing loss) when ``labels`` are given."""
        tensors = self._supernet.subnet_tensors(self.spec, prefix="net.", experts=self.experts)
        args = (images,) if labels is None else (images, labels)
        return functional_call(self._skeleton, tensors, args)


class Supernet:
    """The supernet of a search space over placement, experts, top-k and width.

    Args:
        space: the search space. Its ``placement``, ``experts``, ``top_k`` and
            ``width_multiplier`` may be searched; every other model and training field is
            fixed (router, gate, lr, ...), and the granularity must be ``conv``.
        info: the dataset's :class:`~automoe.data.DatasetInfo` (channels, classes, size).
    """

    def __init__(self, space: SearchSpace, info):
        others = set(space.dimensions) - set(SUBNET_PARAMS)
        if others:
            raise ConfigError(f"the supernet searches {', '.join(SUBNET_PARAMS)} with one "
                              f"set of shared weights and one training recipe; fix "
                              f"{', '.join(sorted(others))} in the space")
        if space.fixed.get("granularity", "conv") != "conv":
            raise ConfigError("the supernet needs granularity conv")
        if space.fixed.get("upcycle", 0) or space.fixed.get("router_lr_mult", 1) != 1:
            # its sub-networks share one set of weights that trains as one MoE from the start
            raise ConfigError("the supernet trains shared expert weights from the start; "
                              "remove upcycle and router_lr_mult from the space")
        self.space = space
        self.info = info
        self.units = sum(space.units_per_stage())
        self.placements = self._placements()
        # a dimension the space leaves unset takes the model config's default, as in the
        # trials' own models (SubnetSpec.from_config)
        defaults = default_config(space.model_name, **space.model_fixed)
        self.expert_choices = space_values(space, "experts", defaults.num_experts, int)
        self.max_experts = max(self.expert_choices)
        self.k_choices = space_values(space, "top_k", defaults.top_k, int)
        self.width_choices = space_values(space, "width_multiplier",
                                          defaults.width_multiplier, float)
        self.fixed_model = self._fixed_model_fields()
        self.model = self.build(SubnetSpec("1" * self.units, self.max_experts,
                                           min(max(self.k_choices), self.max_experts),
                                           max(self.width_choices)))
        # which MoE layers belong to which placement unit, found by building the model with
        # one unit in MoE form at a time (works for every registered backbone)
        self.unit_layers: list[list[str]] = []
        for unit in range(self.units):
            bits = "".join("1" if u == unit else "0" for u in range(self.units))
            with torch.device("meta"):
                one = self.build(SubnetSpec(bits, 2, 1, max(self.width_choices)))
            self.unit_layers.append([n for n, m in one.named_modules()
                                     if isinstance(m, MoEConv2d)])
        self.moe_layers = {name for names in self.unit_layers for name in names}
        self.expert_tensors = _expert_tensor_names(self.model)
        self._skeletons: dict[SubnetSpec, _WithAux] = {}
        self.history: list[dict] = []
        self.trained_with: dict = {}  # its recipe and sampling options, kept in its file

    def _fixed_model_fields(self) -> dict:
        fields = dict(self.space.model_fixed)
        for name, value in self.space.fixed.items():
            target, field_name, _ = PARAMS[name]
            if target == "model" and name not in SUBNET_PARAMS:
                fields[field_name] = value
        return fields

    def _placements(self) -> list[str]:
        dim = self.space.dimensions.get("placement")
        choices = dim.choices if dim is not None else (self.space.fixed.get("placement",
                                                                           "none"),)
        return [placement_bits(p, self.space.units_per_stage()) for p in choices]

    def build(self, spec: SubnetSpec) -> nn.Module:
        """The stand-alone model of ``spec`` (fresh weights)."""
        info = self.info
        kwargs = {**self.fixed_model, "placement": spec.placement,
                  "width_multiplier": spec.width}
        if spec.is_dense:
            kwargs.update(num_experts=1, top_k=1)
        else:
            kwargs.update(num_experts=spec.experts, top_k=spec.top_k)
        return create_model(self.space.model_name, **kwargs, in_channels=info.in_channels,
                            num_classes=info.num_classes, image_size=info.image_size,
                            input_mean=info.mean, input_std=info.std)

    def recipe(self) -> TrainConfig:
        """The space's fixed training recipe (lr, epochs, batch size, scheme, ...)."""
        return TrainConfig(**{PARAMS[name][1]: value for name, value in self.space.fixed.items()
                              if PARAMS[name][0] == "train"})

    # ------------------------------------------------------------ sub-networks

    def largest(self) -> SubnetSpec:
        placement = max(self.placements, key=lambda p: p.count("1"))
        return SubnetSpec(placement, self.max_experts, min(max(self.k_choices),
                                                           self.max_experts),
                          max(self.width_choices))

    def smallest(self, widths: tuple[float, ...] | None = None) -> SubnetSpec:
        """The smallest sub-network, at the narrowest of ``widths`` (default: all)."""
        placement = min(self.placements, key=lambda p: p.count("1"))
        return SubnetSpec(placement, min(self.expert_choices), min(self.k_choices),
                          min(widths or self.width_choices))

    def sample(self, rng: random.Random, widths: tuple[float, ...] | None = None) -> SubnetSpec:
        """A sub-network drawn uniformly per dimension (the width from ``widths``, default
        all), k <= E by construction."""
        experts = rng.choice(self.expert_choices)
        k = rng.choice([k for k in self.k_choices if k <= experts])
        return SubnetSpec(rng.choice(self.placements), experts, k,
                          rng.choice(widths or self.width_choices))

    def step_subnets(self, rng: random.Random, count: int, rule: str = "sandwich",
                     widths: tuple[float, ...] | None = None) -> list[SubnetSpec]:
        """The ``count`` sub-networks of one training step, the largest first, then with
        ``rule="sandwich"`` the smallest, then random ones; the smallest and the random
        ones at ``widths`` (default: all)."""
        fixed = [self.largest()]
        if rule == "sandwich":
            fixed.append(self.smallest(widths))
        return fixed + [self.sample(rng, widths) for _ in range(count - len(fixed))]

    def step_widths(self, step: int, total: int, schedule: str) -> tuple[float, ...]:
        """The widths training step ``step`` of ``total`` draws from: all of them, or with
        ``schedule="progressive"`` the widest alone for the first half of the steps and
        then one narrower width more at each equal share of the rest (every width in the
        last share)."""
        widths = tuple(sorted(self.width_choices, reverse=True))
        if schedule == "all" or len(widths) == 1:
            return widths
        # phase p >= 1 starts at (1/2 + (p - 1) / (2 (W - 1))) of the steps; floor keeps
        # the last phase non-empty for any total >= 1
        starts = [0] + [int(total * (0.5 + (p - 1) / (2 * (len(widths) - 1))))
                        for p in range(1, len(widths))]
        return widths[:sum(step >= start for start in starts)]

    def canonical(self, spec: SubnetSpec) -> SubnetSpec:
        """``spec``, or for a dense one (the same network whatever its E and k) the one
        dense spec of its placement and width."""
        if spec.is_dense:
            return SubnetSpec(spec.placement, min(self.expert_choices), 1, spec.width)
        return spec

    def spec_for(self, candidate) -> SubnetSpec:
        """The (canonical) sub-network of a :class:`~automoe.space.Candidate`, from its
        resolved config."""
        if candidate.config is None:
            raise ConfigError("the candidate has no resolved config; sample it with "
                              "SearchSpace.suggest")
        spec = self.canonical(SubnetSpec.from_config(candidate.config,
                                                     self.space.units_per_stage()))
        if spec.width not in self.width_choices or (
                not spec.is_dense and spec.experts not in self.expert_choices):
            raise ConfigError(f"sub-network {spec.describe()} is not in the supernet")
        return spec

    def _skeleton(self, spec: SubnetSpec) -> _WithAux:
        skeleton = self._skeletons.get(spec)
        if skeleton is None:
            with torch.device("meta"):  # code and shapes only; the tensors are the supernet's
                skeleton = _WithAux(self.build(spec))
            self._skeletons[spec] = skeleton
        return skeleton

    def subnet_tensors(self, spec: SubnetSpec, prefix: str = "",
                       experts: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
        """Every parameter and buffer of ``spec``'s model, by name, from the supernet's
        tensor of that name: its leading slice (a view), or with ``experts`` (an order of
        the supernet's experts) the first E experts of that order and the matching router
        rows (a gather), a dense unit running the order's first expert."""
        source = dict(chain(self.model.named_parameters(), self.model.named_buffers()))
        skeleton = self._skeleton(spec).net
        tensors = {}
        for name, meta in chain(skeleton.named_parameters(), skeleton.named_buffers()):
            shape = meta.shape
            tensor = source[name]
            layer = name.rpartition(".")[0]
            by_expert = name in self.expert_tensors
            if layer in self.moe_layers and tensor.dim() == len(shape) + 1:
                # (E, O, C, kh, kw) -> the order's first expert as the dense conv
                tensor = tensor[0 if experts is None else experts[0]]
                by_expert = False
            if tensor.dim() != len(shape) or any(
                    n > m for n, m in zip(shape, tensor.shape, strict=True)):
                raise RuntimeError(f"cannot inherit {name}: {tuple(tensor.shape)} -> "
                                   f"{tuple(shape)}")
            if by_expert and experts is not None:  # (E_max, ...) -> (E, ...) in that order
                index = torch.tensor(experts[:shape[0]], device=tensor.device)
                tensor = tensor.index_select(0, index)
            if tensor.dim():
                tensor = tensor[tuple(slice(0, n) for n in shape)]
            tensors[prefix + name] = tensor
        return tensors

    def subnet(self, spec: SubnetSpec, experts: tuple[int, ...] | None = None) -> SubnetView:
        """``spec`` as a module on the supernet's live tensors (training, attacks), on the
        first E experts or on the first E of the order ``experts``."""
        return SubnetView(self, spec, self._skeleton(spec), experts).train(self.model.training)

    def inherit(self, candidate, train_set, *, batches: int, device: str = "cpu",
                seed: int = 0) -> tuple[nn.Module, SubnetSpec]:
        """A candidate's sub-network with the supernet's weights, its BatchNorm statistics
        recalibrated on ``batches`` training batches (drawn with ``seed``)."""
        spec = self.spec_for(candidate)
        model = recalibrate_batchnorm(self.extract(spec), train_set, batches=batches,
                                      device=device, seed=seed)
        return model, spec

    def extract(self, spec: SubnetSpec) -> nn.Module:
        """The stand-alone model of ``spec`` with the supernet's weights (and its BN
        statistics: recalibrate before evaluating)."""
        sub = self.build(spec)
        tensors = self.subnet_tensors(spec)
        sub.load_state_dict({name: tensors[name].detach().clone()
                             for name in sub.state_dict()})
        return sub

    def train(self, train_set, config: TrainConfig, options: SupernetTrainConfig | None = None,
              *, device: str = "cpu", on_step=None) -> list[dict]:
        """Train the supernet with the recipe ``config`` (its epochs as given) on several
        sub-networks per step (:class:`SupernetTrainConfig`; ``step_rule``: the sandwich
        rule, or ``"largest_random"``: the largest and random ones; ``width_schedule``:
        ``"progressive"`` shrinking, see :meth:`step_widths`, or ``"all"`` widths from the
        start); returns a per-epoch history of the largest sub-network's cross-entropy
        (``loss``) and the mean loss of the others (``subnet_loss``: KL to the largest with
        ``distill``, else cross-entropy).

        With ``config.scheme == "pgd_at"`` every step first crafts PGD examples
        (``adv_eps``, ``adv_step_size``, ``adv_steps``) against the largest sub-network, and
        all the step's sub-networks train on them: one attack per step, not one per
        sub-network.

        ``expert_sampling="subset"`` runs each step's sub-network of E experts on the first
        E of a random order of the supernet's experts (router rows in the same order), and
        a dense unit on that order's first expert, instead of always the first E and
        expert 0: every expert is trained as the dense conv and in every position.
        Sub-networks are still evaluated on the first E."""
        return train_supernet(self, train_set, config, options or SupernetTrainConfig(),
                              device=device, on_step=on_step)

    # ------------------------------------------------------------ files

    def save(self, path, history: list[dict] | None = None) -> None:
        """Write the supernet's weights with its space and dataset (atomic)."""


        save_checkpoint(self.model, path, {"supernet": {
            "format": SUPERNET_FORMAT, "space": self.space.raw, "info": asdict(self.info),
            "history": self.history if history is None else history,
            "trained_with": self.trained_with}})

    @classmethod
    def load(cls, path) -> Supernet:
        """A supernet written by :meth:`save`."""


        try:
            meta = read_checkpoint_metadata(path)["extra"].get("supernet")
        except (OSError, AutomoeError, ValueError) as exc:
            raise ConfigError(f"cannot read supernet {str(path)!r}: {exc}") from None
        if not meta or not str(meta.get("format", "")).startswith("automoe.supernet."):
            raise ConfigError(f"{str(path)!r} is not a supernet written by "
                              "`automoe supernet train`")
        if meta["format"] != SUPERNET_FORMAT:
            raise ConfigError(f"{str(path)!r} is a supernet of format {meta['format']}; this "
                              f"automoe reads {SUPERNET_FORMAT}: train it again")
        info = meta["info"]
        info = DatasetInfo(**{**info, "mean": tuple(info["mean"]), "std": tuple(info["std"])})
        net = cls(SearchSpace.from_dict(meta["space"], source=str(path)), info)
        net.model.load_state_dict(load_file(str(path)))
        net.history = meta.get("history", [])
        net.trained_with = meta.get("trained_with", {})
        return net


def _expert_tensor_names(model: nn.Module) -> set[str]:
    """The names of ``model``'s tensors whose first dimension indexes the experts: each
    MoE conv's expert weights, its router's last scorer layer and noise layer, and the
    global router's head."""
    names = set()
    for layer_name, layer in model.named_modules():
        if not isinstance(layer, MoEConv2d):
            continue
        names.add(f"{layer_name}.weight")  # (E, O, C, kh, kw)
        router = layer.router
        by_expert = []  # the router's modules with one output row per expert
        if router.scorer is not None:  # per-layer scorer: its last layer, (E, ...)
            by_expert.append("scorer." + [n for n, m in router.scorer.named_children()
                                          if isinstance(m, nn.Linear | nn.Conv2d)][-1])
        if router.w_noise is not None:  # learned gate noise, (E, C)
            by_expert.append("w_noise")
        for module_name in by_expert:
            names.update(f"{layer_name}.router.{module_name}.{p}"
                         for p, _ in router.get_submodule(module_name).named_parameters())
    head = getattr(getattr(model, "global_router", None), "head", None)
    if head is not None:
        names.update(f"global_router.head.{p}" for p, _ in head.named_parameters())
    return names
