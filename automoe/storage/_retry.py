"""A study DB that rides out a database restart: each storage call is retried with bounded
backoff while the server is unreachable.

A long search on a cluster meets database restarts (maintenance, fail-over, a crashed
server brought back). Optuna's RDB storage fails the call on the first lost connection, and
its optimise loop then loses even that error (its ``finally`` block reads a result the
failed call never set). Here every call that fails for a connection reason is retried,
0.5 s, 1 s, 2 s, ... apart, capped at 8 s, for up to ``retry_seconds`` in all; then it
raises :class:`~automoe.errors.StorageError` with one line, and the worker exits with it.
``pool_pre_ping`` replaces the pooled connections the restart killed.

Writes are retried only where a repeat cannot double them: Optuna's attribute, parameter
and intermediate-value writes are upserts, and a finishing write (``set_trial_state_values``)
that did commit before its connection broke is recognised on the retry, not repeated. A new
trial row whose commit landed but whose reply was lost would be created twice; Optuna gives
no way to tell, and the heartbeat fails the orphan as for a dead worker.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import optuna
import sqlalchemy

from automoe.errors import StorageError, exception_chain

_logger = logging.getLogger(__name__)

# substrings of driver errors that mean "the server is not there (yet)", not a bad query
_CONNECTION_ERRORS = (
    "could not connect", "connection refused", "connection reset", "server closed the "
    "connection", "terminating connection", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "connection to server", "ssl connection has been closed", "database is locked",
    "connection is closed", "no connection to the server", "broken pipe",
)
# the storage methods wrapped: every public method of Optuna's storage interface, read from
# its base class so that a method Optuna adds is covered too, and the stale-trial query. The
# finishing write and the heartbeat have their own methods below; the other two are local
# (a state check on a trial already read, and closing a session) and never touch the server.
_NOT_RETRIED = ("set_trial_state_values", "check_trial_is_updatable", "remove_session")
_RETRIED = tuple(sorted(
    name for name in vars(optuna.storages.BaseStorage)
    if not name.startswith("_") and callable(getattr(optuna.storages.BaseStorage, name))
    and name not in _NOT_RETRIED)) + ("_get_stale_trial_ids",)
_FIRST_WAIT, _LONGEST_WAIT = 0.5, 8.0


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the database being unreachable."""
    for error in exception_chain(exc):
        if isinstance(error, (sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and (
                error.connection_invalidated
                or any(needle in str(error).lower() for needle in _CONNECTION_ERRORS)):
            return True
    return False


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose calls wait out a lost database (see the module)."""

    def __init__(self, *args, retry_seconds: float = 60.0, describe: str = "the database",
                 **kwargs):
        # set first: the parent's constructor already queries the DB through these methods
        self.retry_seconds = retry_seconds
        self._describe = describe
        self.retries = 0  # calls that failed for a connection reason and were repeated
        super().__init__(*args, **kwargs)

    def _with_retry(self, call: Callable, name: str, *args, **kwargs):
        deadline = time.monotonic() + self.retry_seconds
        wait = _FIRST_WAIT
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(
                        exc).__name__
                    raise StorageError(
                        f"{self._describe} unreachable for {self.retry_seconds:.0f} s "
                        f"({name}): {reason}") from None
                self.retries += 1
                time.sleep(min(wait, left))
                wait = min(2 * wait, _LONGEST_WAIT)

    def record_heartbeat(self, trial_id: int) -> None:
        # runs in Optuna's heartbeat thread, where an exception would print a traceback and
        # end the beats for good: past the budget, say so in one line and beat again later
        try:
            self._with_retry(super().record_heartbeat, "record_heartbeat", trial_id)
        except StorageError as exc:
            _logger.warning("heartbeat of trial id %d not recorded: %s", trial_id, exc)

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        attempts = []

        def finish():
            if attempts and state.is_finished():  # a retry: did the broken attempt commit?
                trial = super(RetryingRDBStorage, self).get_trial(trial_id)
                if trial.state == state and (values is None or trial.values == list(values)):
                    return True
            attempts.append(1)
            return super(RetryingRDBStorage, self).set_trial_state_values(trial_id, state,
                                                                            values)

        return self._with_retry(finish, "set_trial_state_values")


def _retried(name: str) -> Callable:
    parent = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(parent)
    def method(self, *args, **kwargs):
        return self._with_retry(functools.partial(parent, self), name, *args, **kwargs)

    return method


for _name in _RETRIED:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name))
