"""Attack names, norms and :class:`AttackConfig`: what an attack is, without torch (the
spaces, the CLI's flags and the trial record read these; :mod:`.attacks` runs them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from automoe.errors import ConfigError

ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "router-pgd", "apgd-fixed-routing", "square")
# apgd-fixed-routing: APGD-CE whose backward treats every top-k router's decision and gates as
# constants (BPDA). A gate whose gradient misleads attacks (the straight-through top-1
# gate's) masks the others; this one follows the experts' gradient alone.
# attacks that read only the logits: no gradient, so gradient masking cannot fool them
BLACK_BOX_ATTACKS = ("square",)
NORMS = ("linf", "l2")
# norm -> the attacks implemented in it (FGSM, our APGD and Square are L-inf only)
ATTACKS_BY_NORM = {"linf": ATTACKS, "l2": ("pgd", "router-pgd")}
# what a strong evaluation runs by default, per norm
STRONG_ATTACKS = {"linf": ("pgd", "router-pgd", "apgd-ce", "apgd-dlr", "apgd-fixed-routing"),
                  "l2": ("pgd", "router-pgd")}


@dataclass
class AttackConfig:
    """An attack and its budget."""

    attack: str = "pgd"  # one of ATTACKS
    norm: str = "linf"  # "linf" or "l2" (APGD and FGSM: linf)
    eps: float = 8 / 255  # radius of the ball, [0, 1] pixel units
    step_size: float = 2 / 255  # PGD step (APGD adapts its own, starting at 2 eps)
    steps: int = 10  # gradient steps per restart (square: queries)
    restarts: int = 1  # independent random starts; a sample is robust only if all fail
    random_start: bool = True  # start from a random point in the ball
    router_weight: float = 1.0  # router-pgd: weight of the routers' loss
    router_target: str = "clean"  # router-pgd: "clean" routing decision or "label" (y mod E)
    max_samples: int | None = None  # attack only the first N samples of a dataset
    seed: int = 0  # seeds the random starts

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ConfigError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.attack not in ATTACKS_BY_NORM[self.norm]:
            raise ConfigError(f"{self.attack} is not implemented for the {self.norm} norm; "
                              f"{self.norm} attacks: {', '.join(ATTACKS_BY_NORM[self.norm])}")
        if self.eps < 0 or self.step_size < 0:
            raise ConfigError(f"eps and step_size must be >= 0, got {self.eps}, {self.step_size}")
        if self.steps < 0 or self.restarts < 1:
            raise ConfigError(f"steps must be >= 0 and restarts >= 1, got {self.steps}, "
                              f"{self.restarts}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.router_target not in ("clean", "label"):
            raise ConfigError(f"router_target must be 'clean' or 'label', got {self.router_target!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.attack == "fgsm":
            return f"fgsm linf eps={self.eps:.4g}"
        extra = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return f"{self.attack} {self.norm} eps={self.eps:.4g}, {self.steps} steps{extra}"


def strong_attacks(norm: str = "linf", eps: float = 8 / 255, step_size: float | None = None,
                   steps: int = 50, restarts: int = 1,
                   attacks: list[str] | None = None) -> list[AttackConfig]:
    """The attacks of a robustness report, every one in ``norm`` so that their worst case
    is over one threat model: ``attacks`` or by default :data:`STRONG_ATTACKS` of the
    norm, with PGD steps of ``step_size`` (default ``eps / 4``; APGD adapts its own).

    Raises:
        ConfigError: an unknown norm, or an attack not implemented in it.
    """
    if norm not in STRONG_ATTACKS:
        raise ConfigError(f"norm must be one of {', '.join(STRONG_ATTACKS)}, got {norm!r}")
    step_size = eps / 4 if step_size is None else step_size
    return [AttackConfig(attack=a, norm=norm, eps=eps, step_size=step_size, steps=steps,
                         restarts=restarts) for a in attacks or STRONG_ATTACKS[norm]]
