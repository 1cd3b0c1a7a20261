"""The fault scenarios of bench/faults.py that fit the suite's time, as tests: a full or
read-only artifact disk (tmpfs mounts: root only), a driver killed with SIGKILL, a verifying
process killed, and a two-node Ray cluster losing its worker node."""

import os
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import faults  # noqa: E402

needs_mount = pytest.mark.skipif(not faults.can_mount(), reason="mounting a tmpfs needs root")


@needs_mount
def test_a_read_only_artifact_folder_is_refused_before_any_trial():
    row = faults.run_scenario("read_only")
    assert row.error.startswith("automoe: error: artifact dir ")
    assert row.error.endswith("is not writable: Read-only file system")
    assert "exit 1; 0 trials in the DB" in row.notes, row.notes


@needs_mount
def test_a_full_artifact_disk_fails_the_trial_in_one_line_and_a_rerun_completes():
    row = faults.run_scenario("disk_full")
    assert "No space left on device" in row.error and "Traceback" not in row.error
    assert "exit 1, rerun 0; 0 temp files left" in row.notes, row.notes
    assert row.ok, row.cells()  # exact count, none RUNNING, every checkpoint intact


@pytest.mark.slow
def test_workers_of_a_killed_driver_stop_and_a_rerun_completes():
    row = faults.run_scenario("driver_sigkill")
    assert row.ok, row.cells()
    assert any(" child processes gone " in note for note in row.notes), row.notes
    assert row.error == "-"


@pytest.mark.slow
def test_a_killed_verifying_process_is_one_line_and_a_rerun_verifies():
    row = faults.run_scenario("verify_killed")
    assert row.error.startswith("automoe: error: a verifying process died"), row.error
    (note,) = [n for n in row.notes if n.startswith("exit ")]
    assert note.startswith("exit 1 ") and "HUNG" not in note, note
    assert "rerun exit 0" in note, note


@pytest.mark.slow
def test_a_two_node_ray_cluster_loses_its_worker_node_and_completes():
    pytest.importorskip("ray")
    if not os.environ.get("AUTOMOE_TEST_POSTGRES_URL"):
        pytest.skip("no PostgreSQL for the tests (export AUTOMOE_TEST_POSTGRES_URL=$(.ci/postgres.sh))")
    row = faults.run_scenario("ray_two_nodes")
    assert row.ok, row.cells()  # exact count, none RUNNING, every checkpoint intact
    assert row.error == "-", row.error
    assert any("trials ran on 2 nodes before the kill" in n for n in row.notes), row.notes
    assert any("SQLite on 2 nodes: exit 1" in n for n in row.notes), row.notes
