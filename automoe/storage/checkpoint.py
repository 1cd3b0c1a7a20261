"""Model checkpoints: one safetensors file whose metadata rebuilds the model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from automoe.errors import AutomoeError
from automoe.models import create_model
from automoe.storage._atomic import atomic_write

FORMAT = "automoe.checkpoint.v1"


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], extra: dict | None = None) -> Path:
    """Write weights and the model's name and config to ``path`` atomically.

    Args:
        model: a registry model (has ``model_name`` and ``config.to_dict()``).
        extra: JSON-serialisable metadata stored beside the config (metrics, data spec).
    """
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "model_name": model.model_name,
        "model_config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict:
    """``{"model_name", "model_config", "extra"}`` of a checkpoint, without loading weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (OSError, Exception) as exc:  # safetensors raises its own error types
        raise AutomoeError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
    if raw.get("format") != FORMAT:
        raise AutomoeError(f"{str(path)!r} is not an automoe checkpoint")
    try:
        meta = {
            "model_name": raw["model_name"],
            "model_config": json.loads(raw["model_config"]),
            "extra": json.loads(raw.get("extra", "{}")),
        }
        if not isinstance(meta["model_config"], dict) or not isinstance(meta["extra"], dict):
            raise ValueError("model_config and extra must be JSON objects")
    except (KeyError, ValueError) as exc:  # a damaged header: missing key or broken JSON
        raise AutomoeError(f"checkpoint {str(path)!r} has damaged metadata "
                           f"({type(exc).__name__}: {exc})") from None
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint and load its weights (strictly)."""
    meta = read_checkpoint_metadata(path)
    model = create_model(meta["model_name"], **meta["model_config"])
    load_weights(model, path, meta["model_name"])
    model.eval()
    return model, meta


def load_weights(model: nn.Module, path: str | os.PathLike[str], model_name: str) -> None:
    """Load a safetensors file into ``model`` strictly, or raise one clear error.

    Raises:
        AutomoeError: unreadable weights, or weights of another architecture or config.
    """
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on damaged data
        raise AutomoeError(f"cannot read the weights of {str(path)!r}: {exc}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:  # weights of another architecture or config
        first = str(exc).strip().splitlines()[0]
        raise AutomoeError(f"the weights of {str(path)!r} do not fit its model "
                           f"{model_name!r}: {first}") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
