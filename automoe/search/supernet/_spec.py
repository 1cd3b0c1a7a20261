"""What a supernet's sub-networks are."""

from __future__ import annotations

from dataclasses import dataclass

from automoe.models import resolve_placement
from automoe.space import SearchSpace


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

    def to_record(self) -> dict:
        """The trial record's ``subnet`` entry."""
        return {"placement": self.placement, "experts": self.experts, "top_k": self.top_k,
                "width_multiplier": self.width}

    @classmethod
    def from_config(cls, config, units_per_stage: tuple[int, ...]) -> SubnetSpec:
        """The sub-network of a resolved model config (a candidate's ``config``: every
        field, defaults included, as the trial builds it); a dense config has no MoE unit,
        E 1 and k 1."""
        if not config.is_moe:
            return cls("0" * sum(units_per_stage), 1, 1, float(config.width_multiplier))
        return cls(placement_bits(config.placement, units_per_stage), int(config.num_experts),
                   int(config.top_k), float(config.width_multiplier))


def space_values(space: SearchSpace, name: str, default, cast) -> list:
    """The values a searched dimension takes (its grid), or its fixed value."""
    if name not in space.dimensions:
        return [cast(space.fixed.get(name, default))]
    return sorted(cast(v) for v in space.grid()[name])


def placement_bits(placement: str, units_per_stage: tuple[int, ...]) -> str:
    """A placement preset or mask as one 0/1 character per unit."""
    return "".join("1" if b else "0" for b in resolve_placement(placement, units_per_stage))
