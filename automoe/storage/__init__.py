"""Study databases, artifact stores and model checkpoints."""

from __future__ import annotations

from automoe.storage._atomic import atomic_write
from automoe.storage.artifacts import (
    DISK_ERRORS,
    AtomicFileSystemArtifactStore,
    default_artifact_dir,
)
from automoe.storage.checkpoint import (
    load_checkpoint,
    load_weights,
    read_checkpoint_metadata,
    save_checkpoint,
    sha256_file,
)
from automoe.storage.study_db import (
    DEFAULT_STORAGE,
    describe_location,
    describe_url,
    load_study,
    open_storage,
    parse_url,
    sqlite_path,
)

__all__ = [
    "DEFAULT_STORAGE",
    "AtomicFileSystemArtifactStore",
    "DISK_ERRORS",
    "atomic_write",
    "default_artifact_dir",
    "describe_location",
    "describe_url",
    "load_checkpoint",
    "load_weights",
    "load_study",
    "open_storage",
    "parse_url",
    "read_checkpoint_metadata",
    "save_checkpoint",
    "sha256_file",
    "sqlite_path",
]
