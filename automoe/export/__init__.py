"""Exporting chosen trials, loading them back, evaluating and attacking them."""

from __future__ import annotations

from automoe.export._export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    evaluate_export,
    export_trial,
    load,
    read_export_config,
)
from automoe.export._report import attack_export
from automoe.export.pick import PICKS, pick_trial

__all__ = ["CONFIG_FILE", "PICKS", "WEIGHTS_FILE", "attack_export", "evaluate_export",
           "export_trial", "load", "pick_trial", "read_export_config"]
