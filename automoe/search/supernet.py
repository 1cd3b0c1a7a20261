"""A weight-sharing MoE supernet: train once, evaluate many sub-networks with inherited
weights.

The supernet is the space's backbone at its largest: every placement unit in MoE form
(granularity ``conv``), the most experts, the widest width multiplier. A sub-network
(:class:`SubnetSpec`) picks the MoE units (placement), the experts E, the top-k and the
width multiplier, and is the stand-alone model ``create_model`` builds for those values,
its tensors taken from the supernet's:

* every tensor is the leading slice of the supernet's tensor of the same name (the first
  channels of each conv, BN and linear; an MoE conv's first E experts; a router's first E
  scorer rows), so sub-networks of every width share the leading channels (as in
  once-for-all networks);
* a unit the sub-network keeps dense runs the supernet's expert 0 of each conv as a plain
  conv (no router);
* training may instead run a step's sub-networks on a random subset of the experts
  (``expert_sampling="subset"``), so that expert 0 is not the only one trained as a dense
  conv; evaluation always takes the first E.

A sub-network runs as its stand-alone model's code (built once on the ``meta`` device)
called on those slices (:func:`torch.func.functional_call`), so gradients flow into the
supernet, and :meth:`Supernet.extract` (the slices copied into a real model) computes
exactly what the supernet computes, and is measured (accuracy, FLOPs, robustness) like any
trial's model. Training samples several sub-networks per step (the sandwich rule: the
largest, the smallest and random ones, or the largest and random ones; their gradients
summed), by default with progressive shrinking of the width (the widest alone for the
first half of the steps, then each narrower width added in turn), optionally distilling
the largest one's predictions into the others (in-place distillation), optionally on PGD
examples (the space's ``scheme: pgd_at``). BatchNorm statistics are shared by all
sub-networks while training, so they are recomputed for each sub-network
(:func:`recalibrate_batchnorm`) before it is evaluated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from automoe.errors import AutomoeError, ConfigError
from automoe.layers import MoEConv2d
from automoe.models import create_model, resolve_placement
from automoe.robustness import AttackConfig, attack_batch
from automoe.search.space import PARAMS, SearchSpace
from automoe.training import TrainConfig, check_finite, make_loader

SUPERNET_FORMAT = "automoe.supernet.v2"
# the model parameters a supernet's sub-networks differ in; every other one is shared
SUBNET_PARAMS = ("placement", "experts", "top_k", "width_multiplier")
# training schemes the supernet runs: clean, or Madry's PGD-AT through the largest
SUPERNET_SCHEMES = ("standard", "pgd_at")
# which of the supernet's experts a training step's sub-network runs: the first E (what
# every sub-network is evaluated on), or the first E of a random order of all of them
EXPERT_SAMPLING = ("first", "subset")
# the sub-networks of a training step: the sandwich rule (the largest, the smallest and
# random ones; BigNAS), or the largest and random ones, drawn as a search draws them. A
# narrow sub-network's tensors are the leading slices of every wider one's, so every step
# trains them even without the smallest; which rule ranks sub-networks better is measured
# in bench/RESULTS.md
STEP_RULES = ("sandwich", "largest_random")
# which widths a training step draws from: all of them from the start, or progressive
# shrinking (once-for-all networks): the widest alone for the first half of the steps,
# then each narrower width added in turn. Trained on every width from the start, narrow
# sub-networks inherit more than they train to stand-alone, which crowds the widths
# together and blurs the ranking across them; bench/RESULTS.md measures both
WIDTH_SCHEDULES = ("all", "progressive")
# a supernet's default epochs, in units of the space's stand-alone recipe: it trains many
# sub-networks on shared weights, so it gets longer than one of them would
RECIPE_EPOCHS_FACTOR = 4


@dataclass(frozen=True)
class SubnetSpec:
    """One sub-network of the supernet."""

    placement: str  # one 0/1 bit per placement unit
    experts: int  # E of every MoE unit
    top_k: int  # k of every MoE unit
    width: float  # the backbone's width multiplier

    @property
    def is_dense(self) -> bool:
        return "1" not in self.placement

    def describe(self) -> str:
        return f"{self.placement} E{self.experts} k{self.top_k} w{self.width:g}"


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
        self.space = space
        self.info = info
        self.units = sum(space.units_per_stage())
        self.placements = self._placements()
        self.expert_choices = _values(space, "experts", 2, int)
        self.max_experts = max(self.expert_choices)
        self.k_choices = _values(space, "top_k", 1, int)
        self.width_choices = _values(space, "width_multiplier", 1.0, float)
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

    def spec_for(self, model_fields: dict) -> SubnetSpec:
        """The (canonical) sub-network of a candidate's model fields."""
        spec = SubnetSpec(placement_bits(model_fields.get("placement", "none"),
                                         self.space.units_per_stage()),
                          int(model_fields.get("num_experts", 1)),
                          int(model_fields.get("top_k", 1)),
                          float(model_fields.get("width_multiplier", 1.0)))
        spec = self.canonical(spec)
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

    def extract(self, spec: SubnetSpec) -> nn.Module:
        """The stand-alone model of ``spec`` with the supernet's weights (and its BN
        statistics: recalibrate before evaluating)."""
        sub = self.build(spec)
        tensors = self.subnet_tensors(spec)
        sub.load_state_dict({name: tensors[name].detach().clone()
                             for name in sub.state_dict()})
        return sub

    # ------------------------------------------------------------ training

    def train(self, train_set, config: TrainConfig, *, subnets_per_step: int = 4,
              distill: bool = False, expert_sampling: str = "first",
              step_rule: str = "sandwich", width_schedule: str = "progressive",
              device: str = "cpu", on_step=None) -> list[dict]:
        """Train the supernet on several sub-networks per step (``step_rule``: the sandwich
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
        for name, value, choices in (("step_rule", step_rule, STEP_RULES),
                                     ("width_schedule", width_schedule, WIDTH_SCHEDULES),
                                     ("expert_sampling", expert_sampling, EXPERT_SAMPLING)):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if subnets_per_step < 2:
            raise ConfigError("subnets_per_step must be >= 2 (the largest and one more)")
        if config.scheme not in SUPERNET_SCHEMES:
            raise ConfigError(f"the supernet trains with scheme {' or '.join(SUPERNET_SCHEMES)}"
                              f", not {config.scheme!r}")
        attack = None
        if config.scheme == "pgd_at":
            attack = AttackConfig(eps=config.adv_eps, step_size=config.adv_step_size,
                                  steps=config.adv_steps)
        model = self.model.to(device).train()
        torch.manual_seed(config.seed)
        rng = random.Random(config.seed)
        order_rng = random.Random(config.seed + 1)  # expert orders, apart from the specs
        loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                             device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0,
                                    weight_decay=config.weight_decay)
        total = config.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
        history, step = [], 0
        for epoch in range(config.epochs):
            sums = torch.zeros(2, dtype=torch.float64)  # largest's CE, others' loss
            seen = 0
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad(set_to_none=True)
                specs = self.step_subnets(rng, subnets_per_step, step_rule,
                                          self.step_widths(step, total, width_schedule))
                if attack is not None:  # examples against the largest, in eval mode
                    images = attack_batch(self.subnet(specs[0]).eval(), images, labels, attack)
                teacher = None
                for i, spec in enumerate(specs):
                    experts = None
                    if expert_sampling == "subset":
                        experts = tuple(order_rng.sample(range(self.max_experts),
                                                         self.max_experts))
                    logits, aux = self.subnet(spec, experts)(images, labels)
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
        self.history = history
        self.trained_with = {"recipe": config.to_dict(), "subnets_per_step": subnets_per_step,
                             "distill": distill, "expert_sampling": expert_sampling,
                             "step_rule": step_rule, "width_schedule": width_schedule}
        return history

    # ------------------------------------------------------------ files

    def save(self, path, history: list[dict] | None = None) -> None:
        """Write the supernet's weights with its space and dataset (atomic)."""
        from dataclasses import asdict

        from automoe.storage import save_checkpoint

        save_checkpoint(self.model, path, {"supernet": {
            "format": SUPERNET_FORMAT, "space": self.space.raw, "info": asdict(self.info),
            "history": self.history if history is None else history,
            "trained_with": self.trained_with}})

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


def _values(space: SearchSpace, name: str, default, cast) -> list:
    """The values a searched dimension takes (its grid), or its fixed value."""
    if name not in space.dimensions:
        return [cast(space.fixed.get(name, default))]
    return sorted(cast(v) for v in space.grid()[name])


def placement_bits(placement: str, units_per_stage: tuple[int, ...]) -> str:
    """A placement preset or mask as one 0/1 character per unit."""
    return "".join("1" if b else "0" for b in resolve_placement(placement, units_per_stage))
