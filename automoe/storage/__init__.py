"""Study databases, artifact stores and model checkpoints."""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "atomic_write": "._atomic",
    "DISK_ERRORS": ".artifacts", "AtomicFileSystemArtifactStore": ".artifacts",
    "default_artifact_dir": ".artifacts",
    "load_checkpoint": ".checkpoint", "load_weights": ".checkpoint",
    "read_checkpoint_metadata": ".checkpoint", "save_checkpoint": ".checkpoint",
    "sha256_file": ".checkpoint",
    "DEFAULT_STORAGE": ".study_db", "describe_location": ".study_db",
    "describe_url": ".study_db", "load_study": ".study_db", "open_storage": ".study_db",
    "parse_url": ".study_db", "sqlite_path": ".study_db",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
