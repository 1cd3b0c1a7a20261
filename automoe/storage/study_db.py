"""Opening Optuna RDB storages (SQLite by default, any SQLAlchemy URL) with clear errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from automoe.errors import StorageError

DEFAULT_STORAGE = "sqlite:///studies/automoe.db"
# Seconds a SQLite writer waits for another process's lock before failing.
_SQLITE_BUSY_TIMEOUT = 30


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL and check its driver is installed.

    Raises:
        StorageError: malformed URL, unknown database or missing driver.
    """
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"invalid storage URL {url!r}; expected e.g. {DEFAULT_STORAGE} or "
                           "postgresql://user:password@host/dbname") from None
    try:
        parsed.get_dialect().import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"unknown database {parsed.drivername!r} in storage URL "
                           f"{describe_url(url)}; use sqlite:///FILE or postgresql://...") from None
    except ImportError as exc:
        is_postgres = parsed.get_backend_name() == "postgresql"
        hint = " (pip install 'automoe[postgres]')" if is_postgres else ""
        raise StorageError(f"the driver for {parsed.drivername!r} is not installed{hint}: "
                           f"{exc}") from None
    return parsed


def describe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return repr(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Open (and with ``create``, initialise) an Optuna RDB storage.

    SQLite files get WAL journaling and a busy timeout, so a dashboard or a second worker
    can read while a study writes.

    Raises:
        StorageError: bad URL, missing driver, missing SQLite file (``create=False``) or an
            unreachable database.
    """
    parsed = parse_url(url)
    engine_kwargs: dict = {}
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT}
    else:
        engine_kwargs["pool_pre_ping"] = True
    if path is not None:
        if not path.exists():
            if not create:
                raise StorageError(f"no study database at {str(path)!r} (storage {url})")
            if not path.parent.is_dir():
                raise StorageError(f"folder {str(path.parent)!r} of storage {url} does not exist")
        try:
            with sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite file {str(path)!r}: {exc}") from None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {describe_url(url)}: {reason}") from None


def load_study(storage: optuna.storages.BaseStorage, study_name: str | None) -> optuna.Study:
    """Load a study by name; with no name, the storage's only study.

    Raises:
        StorageError: no such study, or several studies and no name given.
    """
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name is None:
        if len(names) == 1:
            study_name = names[0]
        elif not names:
            raise StorageError("the storage holds no study yet; run `automoe search` first")
        else:
            raise StorageError(f"the storage holds several studies, pick one with --study: "
                               f"{', '.join(sorted(names))}")
    if study_name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study named {study_name!r} in this storage (studies: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)
