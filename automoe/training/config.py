"""The training recipe: what a run trains with, checked on creation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from automoe.errors import ConfigError
from automoe.models.upcycle import UPCYCLED_BY_DEFAULT
from automoe.training.robust import SCHEMES

# Numerics of a training run. fp32: IEEE fp32 matmuls and convs everywhere (cuDNN and the
# Triton kernels alike); tf32: fp32 tensors on TF32 tensor cores (CUDA); bf16 / fp16:
# autocast of the training forward passes, fp16 with a gradient scaler. Evaluation and
# attacks run without autocast.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
UPCYCLE_SCHEDULES = ("continue", "restart")
# The MoE recipe's dense share when a config leaves `upcycle` unset (bench/results/
# moe_quality.md, "Clean accuracy"); the shipped spaces and the library share it.
DEFAULT_UPCYCLE = 0.5


@dataclass
class TrainConfig:
    """Training recipe."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # samples per SGD step
    lr: float = 0.05  # peak learning rate, cosine-annealed to 0 over all steps
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 5e-4  # L2 on every parameter
    seed: int = 0  # seeds batch order and gate noise
    num_workers: int = 0  # DataLoader workers for splits read image by image (not cached)
    precision: str = "fp32"  # one of PRECISIONS
    channels_last: bool = False  # NHWC layout for the model and its inputs
    compile: bool = False  # torch.compile the model for the training steps (not advmoe's)
    # --- robust training
    scheme: str = "standard"  # "standard", "pgd_at", "trades" or "advmoe"
    adv_eps: float = 8 / 255  # training attack budget, [0, 1] pixel units
    adv_step_size: float = 2 / 255  # training attack step (advmoe uses 5/255)
    adv_steps: int = 7  # training attack steps (advmoe uses 2)
    trades_beta: float = 6.0  # TRADES / AdvMoE weight of the KL term
    advmoe_alpha: float = 6.0  # AdvMoE weight of the routers' y-mod-E cross-entropy
    # pgd_at / trades: craft the training examples through fixed routing (BPDA), so that a
    # gate whose gradient misleads attacks (straight-through top-1) does not weaken them
    adv_fixed_routing: bool = False
    # Largest global gradient norm of each optimiser step (0: no clipping). Unset: 1 for
    # advmoe, which diverged to NaN early at lr >= 0.063 without clipping and at lr 0.2
    # with a bound of 5 (cluttered digits; docs/decisions/moe-quality-from-scratch.md, "The
    # AdvMoE recipe over the spaces' learning rates"), off for the other schemes.
    grad_clip: float | None = None
    # --- MoE recipe
    # Sparse upcycling: the fraction of the epochs trained as the model's dense twin (same
    # backbone and widths, no MoE unit) before every MoE conv or block starts as a copy of
    # the trained dense one (automoe.models.upcycle); 0 trains the MoE from scratch. The
    # epochs are the total: the dense phase counts. Ignored for a dense model. None (unset)
    # is the recipe: DEFAULT_UPCYCLE for routed conv and block experts, which trailed dense
    # nets of equal active MACs by 3-9 points from scratch and by about one upcycled, and 0
    # for the granularities the recipe did not measure or cannot copy (see upcycle_share).
    upcycle: float | None = None
    upcycle_noise: float = 0.0  # std of the noise on each expert's copy, relative to the weight's
    # lr schedule of the MoE phase: "continue" the one cosine over all epochs, or "restart"
    # a fresh cosine from the peak lr over the MoE epochs
    upcycle_schedule: str = "continue"
    router_lr_mult: float = 1.0  # the routers' lr (and CondConv's mixers') / the lr

    def __post_init__(self):
        if self.grad_clip is not None and not (self.grad_clip >= 0
                                               and math.isfinite(self.grad_clip)):
            raise ConfigError(f"grad_clip must be a number >= 0, got {self.grad_clip}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp16" and self.scheme == "advmoe":
            raise ConfigError("precision fp16 needs a gradient scaler, which advmoe's two "
                              "optimiser steps do not use; use bf16")
        if self.adv_eps < 0 or self.adv_step_size < 0 or self.adv_steps < 1:
            raise ConfigError("adv_eps and adv_step_size must be >= 0 and adv_steps >= 1")
        if self.adv_fixed_routing and self.scheme not in ("pgd_at", "trades"):
            raise ConfigError(f"adv_fixed_routing applies to the pgd_at and trades schemes, "
                              f"not {self.scheme!r}")
        if self.trades_beta < 0 or self.advmoe_alpha < 0:
            raise ConfigError("trades_beta and advmoe_alpha must be >= 0")
        if self.upcycle is not None and not 0 <= self.upcycle < 1:
            raise ConfigError(f"upcycle must be in [0, 1) (the dense phase's share of the "
                              f"epochs), got {self.upcycle}")
        if self.upcycle and self.epochs < 2:
            raise ConfigError("upcycle needs at least 2 epochs: one dense, one MoE")
        if not (self.upcycle_noise >= 0 and math.isfinite(self.upcycle_noise)):
            raise ConfigError(f"upcycle_noise must be >= 0, got {self.upcycle_noise}")
        if self.upcycle_schedule not in UPCYCLE_SCHEDULES:
            raise ConfigError(f"upcycle_schedule must be one of {UPCYCLE_SCHEDULES}, got "
                              f"{self.upcycle_schedule!r}")
        if not (self.router_lr_mult >= 0 and math.isfinite(self.router_lr_mult)):
            raise ConfigError(f"router_lr_mult must be >= 0, got {self.router_lr_mult}")

    def upcycle_share(self, model_config=None) -> float:
        """The dense phase's share of the epochs in force for a model: ``upcycle`` when
        set, else the recipe's: :data:`DEFAULT_UPCYCLE` for a MoE of routed conv or block
        experts trained for at least 2 epochs, 0 for anything else (dense, CondConv,
        pathway or channel experts, no model config)."""
        if self.upcycle is not None:
            return self.upcycle
        if (model_config is None or not model_config.is_moe or self.epochs < 2
                or model_config.granularity not in UPCYCLED_BY_DEFAULT):
            return 0.0
        return DEFAULT_UPCYCLE

    def dense_epochs(self, model_config=None) -> int:
        """Epochs of the dense phase when upcycling (at least 1, at most epochs - 1); 0
        without."""
        share = self.upcycle_share(model_config)
        if share == 0:
            return 0
        return min(self.epochs - 1, max(1, round(share * self.epochs)))

    @property
    def clip_norm(self) -> float:
        """The gradient-norm bound in force: ``grad_clip``, or the scheme's default when
        unset (resolved here, not stored, so a config copied with another scheme gets that
        scheme's default)."""
        if self.grad_clip is not None:
            return self.grad_clip
        return 1.0 if self.scheme == "advmoe" else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


