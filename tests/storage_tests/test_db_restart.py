"""A study DB call waits out a database restart, and gives up in one line past its budget.

These tests run their own PostgreSQL server (``.ci/postgres.sh`` on another port), because
they stop and start it.
"""

import os
import subprocess
import threading
from pathlib import Path

import optuna
import pytest

from automoe.errors import StorageError
from automoe.storage import open_storage
from automoe.storage._retry import (
    RetryingRDBStorage,
    connection_failure_reason,
    is_connection_error,
)

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"
PORT = "54341"


def _server(*args: str) -> str:
    env = {**os.environ, "AUTOMOE_PG_PORT": PORT, "AUTOMOE_PG_DATA": f"/tmp/automoe-pg-{PORT}"}
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def server_url():
    if not os.environ.get("AUTOMOE_TEST_POSTGRES_URL"):
        pytest.skip("no PostgreSQL for the tests (export AUTOMOE_TEST_POSTGRES_URL=$(.ci/postgres.sh))")
    url = _server()
    yield url
    _server("stop")


def test_a_call_during_a_restart_waits_for_the_server(server_url):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(server_url, retry_seconds=60)
    study = optuna.create_study(storage=storage, study_name="restart", load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    _server("down")
    coming_back = threading.Timer(3.0, _server, args=("up",))
    coming_back.start()
    try:
        trials = storage.get_all_trials(study._study_id)  # the server is down here
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    finally:
        coming_back.join()
    assert len(trials) == 2 and storage.retries > 0  # it waited for the server
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3


def test_a_server_down_past_the_budget_is_one_line(server_url):
    storage = open_storage(server_url, retry_seconds=2)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])
    _server("down")
    try:
        with pytest.raises(StorageError, match=r"unreachable for 2 s") as error:
            storage.get_all_studies()
        # a write: Optuna wraps its failed commit in "An exception is raised during the
        # commit"; the line must name the refused connection under it
        with pytest.raises(StorageError, match=r"unreachable for 2 s") as write_error:
            storage.set_study_user_attr(study_id, "k", 1)
        # in Optuna's heartbeat thread an exception would print a traceback: it logs instead
        storage.record_heartbeat(1)
    finally:
        _server("up")
    for message in (str(error.value), str(write_error.value)):
        assert "\n" not in message and "during the commit" not in message, message
        assert "refused" in message.lower() or "connection" in message.lower(), message
    assert storage.get_all_studies() is not None  # and it works again once it is back


def test_only_connection_losses_are_retried(server_url, tmp_path):
    # a bad query fails at once: its error is not mistaken for a lost server
    storage = open_storage(server_url, retry_seconds=30)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("no such study")
    assert storage.retries == 0
    import sqlalchemy
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(
        "connection to server at 127.0.0.1 failed: Connection refused"))
    assert is_connection_error(lost)
    assert not is_connection_error(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(
        "no such table: studies")))


def test_a_reason_names_the_driver_error_not_its_wrapper():
    import sqlalchemy
    refused = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception(
        "connection failed: connection to server at 127.0.0.1 failed: Connection refused\n"
        "Is the server running on that host?"))
    try:
        try:
            raise refused
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens ...") from exc
    except optuna.exceptions.StorageInternalError as wrapped:
        reason = connection_failure_reason(wrapped)
    assert reason == "connection failed: connection to server at 127.0.0.1 failed: Connection refused"


def test_every_server_call_of_the_storage_interface_is_retried():
    # a method Optuna adds to its storage interface must not bypass the retry loop
    base = optuna.storages.BaseStorage
    public = {name for name in vars(base) if not name.startswith("_")
              and callable(getattr(base, name))}
    retried = {name for name in public
               if getattr(RetryingRDBStorage, name) is not getattr(optuna.storages.RDBStorage,
                                                                   name)}
    local = {"check_trial_is_updatable", "remove_session"}
    assert public - retried == local
    assert RetryingRDBStorage._get_stale_trial_ids is not (
        optuna.storages.RDBStorage._get_stale_trial_ids)
    # Optuna's cache wraps the storage of every study and calls some private methods of
    # its backend directly: those must be retried too
    import inspect
    import re

    from optuna.storages import _cached_storage
    private = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_cached_storage)))
    assert private and all(getattr(RetryingRDBStorage, name) is not getattr(
        optuna.storages.RDBStorage, name) for name in private), private
