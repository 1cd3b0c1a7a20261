"""Exporting chosen trials, loading them back, evaluating them."""

from __future__ import annotations

from automoe.export._export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    evaluate_export,
    export_trial,
    load,
    read_export_config,
)

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "evaluate_export", "export_trial", "load",
           "read_export_config"]
