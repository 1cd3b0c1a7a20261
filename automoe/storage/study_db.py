"""Opening Optuna RDB storages (SQLite by default, any SQLAlchemy URL) with clear errors."""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from automoe.errors import StorageError
from automoe.storage._retry import RetryingRDBStorage

DEFAULT_STORAGE = "sqlite:///studies/automoe.db"
# Seconds a SQLite writer waits for another process's lock before failing.
_SQLITE_BUSY_TIMEOUT = 30
_SCHEMA_RACE_RETRIES = 5
# how long a call waits for a lost database to come back, unless the caller says
_DEFAULT_DB_RETRY_SECONDS = 60.0


def db_retry_seconds() -> float:
    """``$AUTOMOE_DB_RETRY_SECONDS`` (seconds a storage call waits out a lost database),
    else 60.

    Raises:
        StorageError: the variable is not a number >= 0.
    """
    raw = os.environ.get("AUTOMOE_DB_RETRY_SECONDS")
    if raw is None:
        return _DEFAULT_DB_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise StorageError(f"AUTOMOE_DB_RETRY_SECONDS must be a number >= 0, got {raw!r}")
    return value


def _make_url(url: str) -> URL:
    """``make_url`` with a malformed URL as a StorageError, whichever caller meets it first."""
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"invalid storage URL {url!r}; expected e.g. {DEFAULT_STORAGE} or "
                           "postgresql://user:password@host/dbname") from None


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL and check its driver is installed.

    Raises:
        StorageError: malformed URL, unknown database or missing driver.
    """
    parsed = _make_url(url)
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


def describe_location(url: str) -> str:
    """Where a study DB is, for messages: a SQLite file's absolute path, else the URL with
    its password hidden."""
    path = sqlite_path(url)
    return str(path.resolve()) if path is not None else describe_url(url)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for other databases and in-memory SQLite."""
    parsed = _make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_storage(url: str, *, create: bool = True, heartbeat_interval: int | None = None,
                 max_retry: int = 2, make_folder: bool = False,
                 retry_seconds: float | None = None) -> optuna.storages.RDBStorage:
    """Open (and with ``create``, initialise) an Optuna RDB storage.

    SQLite files get WAL journaling and a busy timeout, so a dashboard or a second worker
    can read while a study writes. With ``heartbeat_interval`` (seconds), running trials
    send heartbeats; a trial whose worker died (no heartbeat for 3 intervals) is marked
    failed by the next worker and retried up to ``max_retry`` times with the same
    parameters. Two processes creating a fresh PostgreSQL schema at once can collide
    (duplicate ``CREATE TYPE``); that is retried a few times.

    With ``make_folder`` (and ``create``), a new SQLite file's missing folder is created:
    right for the default ``studies/`` folder, while a typo in a URL the user gave should
    stay an error.

    Once open, a call that loses the database (a server restart) is retried for up to
    ``retry_seconds`` (default: ``$AUTOMOE_DB_RETRY_SECONDS``, else 60), then raises
    StorageError (:mod:`automoe.storage._retry`).

    Raises:
        StorageError: bad URL, missing driver, missing SQLite file (``create=False``) or an
            unreachable database.
    """
    if retry_seconds is None:
        retry_seconds = db_retry_seconds()
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
            if make_folder and not path.parent.exists():
                path.parent.mkdir(parents=True)
            if not path.parent.is_dir():
                raise StorageError(f"folder {str(path.parent)!r} of storage {url} does not exist")
        try:
            with sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite file {str(path)!r}: {exc}") from None
    heartbeat: dict = {}
    if heartbeat_interval:
        with warnings.catch_warnings():  # "experimental since v2.8" is noise in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        heartbeat = dict(heartbeat_interval=heartbeat_interval,
                         grace_period=3 * heartbeat_interval,
                         heartbeat_stale_trial_callback=retry)
    for attempt in range(_SCHEMA_RACE_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RetryingRDBStorage(url, engine_kwargs=engine_kwargs,
                                          retry_seconds=retry_seconds,
                                          describe=f"study DB {describe_url(url)}", **heartbeat)
        except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as exc:
            if not _schema_race(exc):
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise StorageError(f"cannot open storage {describe_url(url)}: {reason}") from None
            if attempt == _SCHEMA_RACE_RETRIES - 1:
                raise StorageError(f"cannot create the schema of {describe_url(url)}: another "
                                   "process keeps creating it") from None
            time.sleep(0.5 * (attempt + 1))  # another worker is creating the schema
    raise AssertionError("unreachable")


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same fresh schema at the same time:
    PostgreSQL's duplicate ``CREATE TYPE``, or SQLite's "table ... already exists" when
    both checked for the table before either created it."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError):
        return True
    return isinstance(exc, sqlalchemy.exc.OperationalError) and "already exists" in str(exc)


def load_study(storage: optuna.storages.BaseStorage, study_name: str | None, *,
               most_recent: bool = False) -> optuna.Study:
    """Load a study by name; with no name, the storage's only study, or with
    ``most_recent`` the one that ran a trial last (see :func:`most_recent_study`).

    Raises:
        StorageError: no such study, or several studies, no name and not ``most_recent``.
    """
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name is None:
        if len(names) == 1:
            study_name = names[0]
        elif not names:
            raise StorageError("the storage holds no study yet; run `automoe search` first")
        elif most_recent:
            study_name = most_recent_study(storage)
        else:
            raise StorageError(f"the storage holds several studies, pick one with --study: "
                               f"{', '.join(sorted(names))}")
    if study_name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study named {study_name!r} in this storage (studies: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)


def most_recent_study(storage: optuna.storages.BaseStorage) -> str:
    """The name of the study whose latest trial started or finished last; studies without
    trials rank below those with, the newest first."""
    studies = storage.get_all_studies()
    last: dict[int, str] = {}
    engine = getattr(storage, "engine", None)
    if engine is not None:  # one query, not every trial of every study
        query = sqlalchemy.text(
            "SELECT study_id, MAX(COALESCE(datetime_complete, datetime_start)) FROM trials "
            "GROUP BY study_id")
        with engine.connect() as connection:
            last = {row[0]: str(row[1]) for row in connection.execute(query) if row[1]}
    else:
        for study in studies:
            times = [t.datetime_complete or t.datetime_start for t in storage.get_all_trials(
                study._study_id, deepcopy=False)]
            times = [t for t in times if t is not None]
            if times:
                last[study._study_id] = str(max(times))
    return max(studies, key=lambda s: (last.get(s._study_id, ""), s._study_id)).study_name
