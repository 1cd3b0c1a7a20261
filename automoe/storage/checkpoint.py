"""Model checkpoints: one safetensors file whose metadata rebuilds the model.

The metadata also holds a SHA-256 of everything that makes the model (its name, config and
extra metadata, then every tensor's name, dtype, shape and bytes), checked on every load:
a flipped bit anywhere that still parses would otherwise load as a silently different
model. Checkpoints written before the checksum existed still load, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from automoe.errors import AutomoeError
from automoe.models import create_model
from automoe.storage._atomic import atomic_write

FORMAT = "automoe.checkpoint.v1"
_CHECKSUM = "sha256"  # the metadata key of the checksum (absent in older checkpoints)
_OLD_KEYS = {"format", "model_name", "model_config", "extra"}  # all an older one has

_logger = logging.getLogger(__name__)


def _checksum(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata that rebuilds the model, then of the tensors by name."""
    digest = hashlib.sha256()
    for key in ("model_name", "model_config", "extra"):
        digest.update(f"{key}={metadata.get(key, '')}\n".encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
    metadata[_CHECKSUM] = _checksum(metadata, tensors)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> dict:
    """``{"model_name", "model_config", "extra"}`` of a checkpoint, without loading weights."""
    raw = _stored_metadata(path)
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


def _stored_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors metadata of ``path`` as stored (strings)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (OSError, Exception) as exc:  # safetensors raises its own error types
        raise AutomoeError(f"cannot read checkpoint {str(path)!r}: {exc}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint and load its weights (strictly), its
    checksum checked.

    Raises:
        AutomoeError: not a checkpoint, damaged metadata, a checksum that does not match,
            or weights that do not fit the model.
    """
    meta = read_checkpoint_metadata(path)
    model = create_model(meta["model_name"], **meta["model_config"])
    load_weights(model, path, meta["model_name"], metadata=_stored_metadata(path))
    model.eval()
    return model, meta


def load_weights(model: nn.Module, path: str | os.PathLike[str], model_name: str, *,
                 metadata: dict[str, str] | None = None) -> None:
    """Load a safetensors file into ``model`` strictly, or raise one clear error. With
    ``metadata`` (a checkpoint's, as stored) its checksum is checked first; one without a
    checksum (written by an older automoe) loads with a warning.

    Raises:
        AutomoeError: unreadable weights, a checksum that does not match, or weights of
            another architecture or config.
    """
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on damaged data
        raise AutomoeError(f"cannot read the weights of {str(path)!r}: {exc}") from None
    if metadata is not None:
        stored = metadata.get(_CHECKSUM)
        if stored is None and set(metadata) != _OLD_KEYS:  # e.g. the checksum's key damaged
            raise AutomoeError(f"checkpoint {str(path)!r} is damaged: unknown metadata "
                               f"{sorted(set(metadata) - _OLD_KEYS)}")
        if stored is None:
            _logger.warning("checkpoint %r has no checksum (written by an older automoe); "
                            "its weights are loaded unchecked", str(path))
        elif stored != _checksum(metadata, weights):
            raise AutomoeError(f"checkpoint {str(path)!r} is damaged: its weights and config "
                               "do not match the checksum stored with them")
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
