"""The supernet's training options: one dataclass, declared once and read by the library,
the CLI and the benchmarks, and the tables of their choices (torch-free, so the CLI's flags
load nothing heavy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from automoe.errors import ConfigError

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
# in docs/decisions/supernet-variants.md, "Cluttered digits: the largest and random
# sub-networks per step, eight supernet seeds"
STEP_RULES = ("sandwich", "largest_random")
# which widths a training step draws from: all of them from the start, or progressive
# shrinking (once-for-all networks): the widest alone for the first half of the steps,
# then each narrower width added in turn. Trained on every width from the start, narrow
# sub-networks inherit more than they train to stand-alone, which crowds the widths
# together and blurs the ranking across them; docs/decisions/supernet-variants.md,
# "Progressive shrinking of the width", measures both
WIDTH_SCHEDULES = ("all", "progressive")
# a supernet's default epochs, in units of the space's stand-alone recipe: it trains many
# sub-networks on shared weights, so it gets longer than one of them would
RECIPE_EPOCHS_FACTOR = 4


@dataclass(frozen=True)
class SupernetTrainConfig:
    """How a supernet trains on top of the space's recipe (its lr, batch and scheme)."""

    subnets_per_step: int = 4  # sub-networks whose gradients each step sums (>= 2)
    distill: bool = False  # the others learn the largest one's predictions (in-place KD)
    expert_sampling: str = "first"  # one of EXPERT_SAMPLING
    step_rule: str = "sandwich"  # one of STEP_RULES
    width_schedule: str = "progressive"  # one of WIDTH_SCHEDULES
    # epochs; None: RECIPE_EPOCHS_FACTOR x the space's stand-alone recipe
    epochs: int | None = None

    def __post_init__(self):
        for name, choices in (("step_rule", STEP_RULES), ("width_schedule", WIDTH_SCHEDULES),
                              ("expert_sampling", EXPERT_SAMPLING)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not "
                                  f"{getattr(self, name)!r}")
        if self.subnets_per_step < 2:
            raise ConfigError("subnets_per_step must be >= 2 (the largest and one more)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"supernet epochs must be >= 1, got {self.epochs}")

    def epochs_for(self, recipe_epochs: int) -> int:
        """The epochs to train, given the space's stand-alone recipe's."""
        return self.epochs or RECIPE_EPOCHS_FACTOR * recipe_epochs

    def to_dict(self) -> dict:
        return asdict(self)
