"""What a supernet's sub-networks are, and the options of its training."""

from __future__ import annotations

from dataclasses import dataclass

from automoe.models import resolve_placement
from automoe.space import SearchSpace

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
