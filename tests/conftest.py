import os
import signal

import pytest
import torch

# Two cores: keep torch from oversubscribing them; determinism for gradient checks.
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _sigint_handler_kept():
    """Each test leaves SIGINT's handler as it found it. Code under test ignores or
    replaces it in the process that runs it (job and worker processes, the interrupt
    hold); run inside the pytest process, a leak would change how the next test's Ctrl-C
    behaves (seen: the interrupt tests failed after the CLI tests, and passed alone)."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture
def postgres_url():
    """URL of a fresh, empty PostgreSQL database, dropped afterwards.

    The server comes from ``AUTOMOE_TEST_POSTGRES_URL`` (``.ci/run`` starts one with
    ``.ci/postgres.sh``); without it, or when it cannot be reached, the test is skipped.
    """
    import uuid

    import sqlalchemy

    base = os.environ.get("AUTOMOE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("no PostgreSQL server: set AUTOMOE_TEST_POSTGRES_URL "
                    "(export AUTOMOE_TEST_POSTGRES_URL=\"$(.ci/postgres.sh)\")")
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"automoe_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at AUTOMOE_TEST_POSTGRES_URL is not reachable: {exc.orig}")
    url = sqlalchemy.engine.make_url(base).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
