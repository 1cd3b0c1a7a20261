"""Configuration shared by every backbone: data, width, and the mixture of experts."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from automoe.errors import ConfigError
from automoe.layers import SCORER_TYPES, check_routing

PLACEMENT_PRESETS = ("none", "all", "last_stage", "last_two", "every_other", "all_but_first")
GRANULARITIES = ("conv", "pathway", "block", "channel", "condconv")
ROUTERS = (*SCORER_TYPES, "global")


@dataclass
class MoENetConfig:
    """Fields every model config has; a backbone's config adds its architecture.

    A config round-trips through JSON (:meth:`to_dict`) and rebuilds the same model.
    """

    # --- data
    in_channels: int = 3  # image channels
    num_classes: int = 10  # classifier outputs
    image_size: int = 32  # input side, used for FLOPs accounting
    input_mean: tuple[float, ...] = (0.0,)  # per-channel mean of [0, 1] inputs, normalised inside
    input_std: tuple[float, ...] = (1.0,)  # per-channel std of [0, 1] inputs
    width_multiplier: float = 1.0  # scales every channel count (rounded, at least 1)
    # --- where the experts go and what an expert is
    placement: str = "none"  # preset in PLACEMENT_PRESETS or a 0/1 string, one bit per unit
    granularity: str = "conv"  # "conv", "pathway", "block", "channel" or "condconv" (soft mixture)
    expert_ratio: float = 0.5  # pathway: an expert is this fraction of the unit's width
    num_experts: int = 4  # E, experts per MoE layer (channel: every output channel is one)
    expert_init: str = "shared"  # "shared" (experts start as copies) or "independent" draws
    top_k: int = 1  # experts per sample, 1 <= k <= E
    # --- routing
    router: str = "linear"  # per-layer "linear", "conv", "mlp", "cosine" or one "global" router
    router_norm: str = "batch"  # "batch" standardises the router input over the batch, or "none"
    router_init: float = 0.1  # std of the initial router logits; 0 = zeros (ties -> expert 0)
    router_z_loss: float = 1e-3  # weight of the router z-loss (ST-MoE), keeps gates unsaturated
    # Whether the routers' losses reach the backbone through the router input. Off: the
    # balancing gradient reshaped the features to balance the routers and wrecked accuracy
    # (digits, last_two E8, balance_weight 0.3, seed 0: 36 % with it, 92 % without;
    # docs/decisions/moe-recipe.md, "What was wrong"). Training only: attacks still get the
    # router's input gradient.
    router_input_grad: bool = False
    global_router_blocks: int = 3  # blocks per stage of the global router (3: ResNet-20-like)
    gate: str = "noisy_topk"  # "noisy_topk", "topk", "vmoe" or "st_top1" (see TopKRouter)
    gate_softmax: str = "topk"  # "topk" (Shazeer), "topk_st" or "all" (Switch/V-MoE), see TopKRouter
    gate_noise_init: float = 1e-2  # initial std of the learned gate noise (noisy_topk)
    capacity_factor: float | None = None  # per-expert capacity while training; None = off
    overflow: str = "reassign"  # over-capacity assignments: "reassign" or "drop"
    batch_priority: bool = False  # Batch Priority Routing under a capacity limit
    # --- balancing
    balance_loss: str = "importance_load"  # one of BALANCE_LOSSES
    balance_weight: float = 0.01  # its weight w
    # --- DeepMoE channel gating (granularity "channel")
    gate_l1: float = 1e-3  # lambda: L1 penalty on the channel gates (sparsity vs accuracy)
    embedding_ce: float = 0.1  # mu: cross-entropy of a classifier on the gating embedding
    embedding_width: int = 64  # channels of the gating embedding network
    channel_group: int = 16  # channels per group of the Triton channel-gating kernel
    # --- CondConv / DynamicConv soft mixtures (granularity "condconv")
    condconv_temperature: float = 30.0  # mixture softmax temperature at the start (DynamicConv)
    condconv_anneal: float = 0.3  # fraction of training steps over which it falls to 1
    # --- execution
    # "auto" (Triton on CUDA; on the CPU grouped, padded or sparse by the layer's shape, see
    # ops.resolve_dispatch), "sparse", "grouped", "padded", "triton" or "reference"
    dispatch: str = "auto"
    units: tuple[bool, ...] = field(init=False, repr=False)  # resolved placement per unit

    def __post_init__(self):
        # JSON gives lists; keep tuples so configs compare equal after a round trip.
        self.input_mean = tuple(float(v) for v in self.input_mean)
        self.input_std = tuple(float(v) for v in self.input_std)
        if self.in_channels < 1 or self.num_classes < 1 or self.image_size < 1:
            raise ConfigError("in_channels, num_classes and image_size must be positive")
        if len(self.input_mean) not in (1, self.in_channels) or len(self.input_std) != len(
                self.input_mean):
            raise ConfigError(f"input_mean/input_std need 1 or {self.in_channels} values")
        if min(self.input_std) <= 0:
            raise ConfigError(f"input_std must be positive, got {self.input_std}")
        if not self.width_multiplier > 0:
            raise ConfigError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not 0 < self.expert_ratio <= 1:
            raise ConfigError(f"expert_ratio must be in (0, 1], got {self.expert_ratio}")
        if self.router not in ROUTERS:
            raise ConfigError(f"router must be one of {ROUTERS}, got {self.router!r}")
        check_routing(num_experts=self.num_experts, top_k=self.top_k, gate=self.gate,
                      global_routing=self.router == "global",
                      gate_noise_init=self.gate_noise_init, gate_softmax=self.gate_softmax,
                      overflow=self.overflow, capacity_factor=self.capacity_factor,
                      balance_loss=self.balance_loss, balance_weight=self.balance_weight,
                      router_z_loss=self.router_z_loss, router_norm=self.router_norm,
                      expert_init=self.expert_init, dispatch=self.dispatch)
        for name in ("gate_l1", "embedding_ce", "router_init"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.condconv_temperature >= 1 or not 0 <= self.condconv_anneal <= 1:
            raise ConfigError("condconv_temperature must be >= 1 and condconv_anneal in [0, 1]")
        if min(self.global_router_blocks, self.embedding_width, self.channel_group) < 1:
            raise ConfigError("global_router_blocks, embedding_width and channel_group must be >= 1")
        self.units = resolve_placement(self.placement, self.units_per_stage())

    @property
    def is_moe(self) -> bool:
        """Whether the model has MoE units (the one test of "is this model dense?")."""
        return any(self.units)

    def units_per_stage(self) -> tuple[int, ...]:
        """Placement units (blocks or convs) per stage; defined by each backbone."""
        raise TypeError(f"{type(self).__name__} does not define its placement units")

    def scaled(self, width: int) -> int:
        """A channel count after the width multiplier."""
        return max(1, round(width * self.width_multiplier))

    def expert_width(self, width: int) -> int:
        """Width of a pathway expert in a unit of ``width`` (already scaled) channels."""
        return max(1, round(width * self.expert_ratio))

    def moe_kwargs(self) -> dict:
        """Keyword arguments of the MoE layers (router, gate, balancing, dispatch)."""
        is_global = self.router == "global"
        return dict(num_experts=self.num_experts, top_k=self.top_k,
                    balance_loss=self.balance_loss, balance_weight=self.balance_weight,
                    dispatch=self.dispatch, global_routing=is_global,
                    z_loss_weight=self.router_z_loss, expert_init=self.expert_init,
                    scorer="linear" if is_global else self.router, norm=self.router_norm,
                    init_std=self.router_init, gate=self.gate,
                    gate_softmax=self.gate_softmax, noise_init=self.gate_noise_init,
                    capacity_factor=self.capacity_factor, overflow=self.overflow,
                    batch_priority=self.batch_priority, input_grad=self.router_input_grad)

    def to_dict(self) -> dict:
        """JSON-ready dict of the init fields."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init}


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def resolve_placement(placement: str, units_per_stage: tuple[int, ...]) -> tuple[bool, ...]:
    """Which units (blocks or convs) are MoE: a preset or an explicit 0/1 string.

    Presets: ``none``; ``all``; ``last_stage`` (every unit of the last stage); ``last_two``
    (the last two stages); ``every_other`` (units 1, 3, 5, ... counted from 0);
    ``all_but_first`` (AdvMoE's VGG: every unit but the first).
    """
    stage_of_unit = [s for s, n in enumerate(units_per_stage) for _ in range(n)]
    n_units, n_stages = len(stage_of_unit), len(units_per_stage)
    if placement == "none":
        return (False,) * n_units
    if placement == "all":
        return (True,) * n_units
    if placement == "last_stage":
        return tuple(s == n_stages - 1 for s in stage_of_unit)
    if placement == "last_two":
        return tuple(s >= n_stages - 2 for s in stage_of_unit)
    if placement == "every_other":
        return tuple(i % 2 == 1 for i in range(n_units))
    if placement == "all_but_first":
        return tuple(i > 0 for i in range(n_units))
    if set(placement) <= {"0", "1"} and len(placement) == n_units:
        return tuple(c == "1" for c in placement)
    raise ConfigError(f"placement {placement!r} is neither a preset ({', '.join(PLACEMENT_PRESETS)}) "
                      f"nor a 0/1 string of length {n_units} (one bit per unit)")
