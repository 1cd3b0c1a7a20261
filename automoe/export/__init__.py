"""Exporting chosen trials, loading them back, evaluating and attacking them."""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "CONFIG_FILE": "._export", "WEIGHTS_FILE": "._export", "evaluate_export": "._export",
    "export_trial": "._export", "load": "._export", "read_export_config": "._export",
    "attack_export": "._report",
    "PICKS": ".pick", "pick_trial": ".pick",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
