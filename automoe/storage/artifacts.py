"""Artifact store for per-trial files (checkpoints), readable by optuna-dashboard."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from optuna.artifacts import FileSystemArtifactStore

from automoe.errors import StorageError
from automoe.storage._atomic import atomic_write
from automoe.storage.study_db import sqlite_path

# errors of the disk under a folder, not of the program: full, read-only, over quota, denied
DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM)


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """``FileSystemArtifactStore`` whose writes land whole or not at all.

    Optuna's store copies straight into the final file, so a worker killed mid-copy leaves
    a truncated artifact under a valid id; here the copy goes to a temp file first.
    """

    def __init__(self, base_path: str | os.PathLike[str]):
        super().__init__(Path(base_path))
        self.base_path = Path(base_path)

    def check_writable(self) -> None:
        """Write and remove a probe file, so that a read-only or full folder is refused
        before a trial runs rather than after it trained. Folders the probe had to create
        are removed again: a search that then fails on other input leaves nothing behind.

        Raises:
            StorageError: the folder cannot be created or written.
        """
        created = [p for p in (self.base_path, *self.base_path.parents) if not p.exists()]
        try:
            self.base_path.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.base_path / ".write-probe") as tmp:
                tmp.write_bytes(b"probe")
            (self.base_path / ".write-probe").unlink()
        except OSError as exc:  # any: a folder that fails a probe would fail a trial
            raise StorageError(f"artifact dir {self.base_path} is not writable: "
                               f"{exc.strerror or exc}") from None
        finally:
            for folder in created:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        # Created on first write, so a search that fails validation leaves no folder behind.
        self.base_path.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.base_path / artifact_id, fsync=True) as tmp, open(tmp, "wb") as f:
            shutil.copyfileobj(content_body, f)


def default_artifact_dir(storage_url: str) -> Path:
    """``artifacts/`` beside a SQLite study file, else ``studies/artifacts``."""
    path = sqlite_path(storage_url)
    return (path.parent if path is not None else Path("studies")) / "artifacts"
