"""Write a file whole or not at all: to a temp file beside it, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; when the block ends without error the temp
    file replaces ``path`` in one rename, and on any error it is removed.

    A process killed mid-write therefore leaves the previous file (or none), never a
    truncated one. The temp name is ``.{stem}.tmp-*{suffix}``: the suffix keeps writers
    that pick a format by extension working, and the prefix lets the owner of ``path``
    sweep what a killed writer left behind. ``fsync`` flushes the data to disk before the
    rename (for files other processes read back, e.g. trial artifacts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates it private; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
