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

Losing the database is not dying. During a restart no worker can send a heartbeat, so
when the server is back every running trial looks silent for longer than the grace
period; judged at once, live trials would be failed and trained again from scratch. A
trial is therefore failed as stale only when its heartbeat is still the same one after
a further grace period of database contact from the judging worker (see
:meth:`RetryingRDBStorage._get_stale_trial_ids`), while a live worker beats again within
an interval of the server's return (its heartbeat's retries wait at most that long).
"""

from __future__ import annotations

import datetime
import functools
import logging
import time
from collections.abc import Callable

import optuna
import sqlalchemy
from optuna.storages._rdb import models

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
    and name not in _NOT_RETRIED)) + (
    # what Optuna's cache (which wraps every RDB storage a study opens) calls directly
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials")
_FIRST_WAIT, _LONGEST_WAIT = 0.5, 8.0


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the database being unreachable."""
    return _connection_error_in(exc) is not None


def _connection_error_in(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain that says the database is unreachable, if any."""
    for error in exception_chain(exc):
        if isinstance(error, (sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.InterfaceError)):
            return error
        if isinstance(error, sqlalchemy.exc.DBAPIError) and (
                error.connection_invalidated
                or any(needle in str(error).lower() for needle in _CONNECTION_ERRORS)):
            return error
    return None


def connection_failure_reason(exc: BaseException) -> str:
    """One line that names why the database could not be reached: the driver's own words
    (a refused connection, a server shutting down), not a wrapper's such as Optuna's "An
    exception is raised during the commit"."""
    error = _connection_error_in(exc) or exc
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.orig is not None:
        error = error.orig  # the driver's message, without SQLAlchemy's statement dump
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # psycopg writes "connection failed: connection to server at ... failed: Connection
    # refused" and on a second line "Is the server running ...": the first says it all
    return lines[0] if lines else type(error).__name__


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose calls wait out a lost database (see the module)."""

    def __init__(self, *args, retry_seconds: float = 60.0, describe: str = "the database",
                 **kwargs):
        # set first: the parent's constructor already queries the DB through these methods
        self.retry_seconds = retry_seconds
        self._describe = describe
        self.retries = 0  # calls that failed for a connection reason and were repeated
        # study id -> trial id -> (its silent heartbeat, when first seen silent, and
        # self.retries then)
        self._suspects: dict[int, dict[int, tuple]] = {}
        super().__init__(*args, **kwargs)

    def _with_retry(self, call: Callable, name: str, *args, longest_wait: float = _LONGEST_WAIT,
                    **kwargs):
        deadline = time.monotonic() + self.retry_seconds
        wait = min(_FIRST_WAIT, longest_wait)
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageError(
                        f"{self._describe} unreachable for {self.retry_seconds:.0f} s "
                        f"({name}): {connection_failure_reason(exc)}") from None
                self.retries += 1
                time.sleep(min(wait, left))
                wait = min(2 * wait, longest_wait)

    def record_heartbeat(self, trial_id: int) -> None:
        # runs in Optuna's heartbeat thread, where an exception would print a traceback and
        # end the beats for good: past the budget, say so in one line and beat again later.
        # Its retries wait at most one interval, so that a live trial beats again within an
        # interval of the server's return, before another worker can judge it dead
        try:
            self._with_retry(super().record_heartbeat, "record_heartbeat", trial_id,
                             longest_wait=self.heartbeat_interval or _LONGEST_WAIT)
        except StorageError as exc:
            _logger.warning("heartbeat of trial id %d not recorded: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The running trials whose heartbeat is older than the grace period *and* has not
        moved since this process first saw it so, at least a grace period ago, with no lost
        connection of its own in between. A trial that looks stale only because nobody
        could reach the database is seen beating again instead of being failed; a dead
        worker's trial is failed one grace period later than at first sight."""
        silent = self._with_retry(self._silent_heartbeats, "_get_stale_trial_ids", study_id)
        now = time.monotonic()
        suspects, stale = {}, []
        watched = self._suspects.get(study_id, {})
        for trial_id, beat in silent.items():
            seen = watched.get(trial_id)
            if seen is None or seen[0] != beat or seen[2] != self.retries:
                suspects[trial_id] = (beat, now, self.retries)  # (re)start watching it
            elif now - seen[1] >= self._grace_seconds():
                stale.append(trial_id)
            else:
                suspects[trial_id] = seen
        self._suspects[study_id] = suspects
        return stale

    def _grace_seconds(self) -> float:
        return float(self.grace_period or 2 * (self.heartbeat_interval or 0))

    def _silent_heartbeats(self, study_id: int) -> dict[int, datetime.datetime]:
        """Running trials of the study whose last heartbeat is older than the grace period,
        by the database's clock: trial id -> that heartbeat."""
        grace = datetime.timedelta(seconds=self._grace_seconds())
        with self.engine.connect() as connection:
            now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
            now = now.replace(tzinfo=None)  # PostgreSQL's is aware, the stored beats naive
            rows = connection.execute(
                sqlalchemy.select(models.TrialModel.trial_id,
                                  models.TrialHeartbeatModel.heartbeat)
                .join(models.TrialHeartbeatModel,
                      models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .where(models.TrialModel.study_id == study_id,
                       models.TrialModel.state == optuna.trial.TrialState.RUNNING)).all()
        return {trial_id: beat for trial_id, beat in rows if now - beat > grace}

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
