"""The user's loop on one study: status, pareto CSV, plots, studies, retention, export
with each --pick, the model card, and optuna-dashboard serving the study."""

import csv
import io
import json
import os
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

from automoe.storage import open_storage

from .conftest import TINY_SPACE, run_cli


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("loop")
    (path / "tiny.yaml").write_text(TINY_SPACE)
    (path / "studies").mkdir()
    run_cli("search", "--space", "tiny.yaml", "--trials", "8", "-q", cwd=path, check=0)
    return path


def _study(path):
    return optuna.load_study(study_name="tiny", storage=open_storage(
        "sqlite:///" + str(path / "studies" / "automoe.db"), create=False))


def test_status_studies_and_csv(study_dir):
    status = run_cli("status", "--once", cwd=study_dir, check=0, process=True).stdout
    assert "complete 8" in status and "hypervolume" in status and "best per objective" in status
    assert "verified" in status and "front trials" in status
    listing = run_cli("studies", cwd=study_dir, check=0, process=True).stdout
    assert "tiny" in listing and "val_accuracy, mmacs, robust_accuracy" in listing
    rows = list(csv.DictReader(io.StringIO(run_cli("pareto", "--csv", cwd=study_dir,
                                                   check=0, process=True).stdout)))
    front = json.loads(run_cli("pareto", "--json", cwd=study_dir, check=0, process=True).stdout)
    assert [int(r["trial"]) for r in rows] == [r["trial"] for r in front]
    assert {"val_accuracy", "mmacs", "robust_accuracy", "test_accuracy", "experts"} <= set(rows[0])
    # the table shows the test split only when asked: selection is on validation
    assert "test %" not in run_cli("pareto", cwd=study_dir, check=0, process=True).stdout
    assert "test %" in run_cli("pareto", "--with-test", cwd=study_dir, check=0, process=True).stdout


def test_retention_keeps_front_checkpoints_only(study_dir):
    study = _study(study_dir)
    front = {r["trial"] for r in json.loads(run_cli("pareto", "--json", cwd=study_dir,
                                                    check=0).stdout)}
    artifacts = study_dir / "studies" / "artifacts"
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        present = (artifacts / t.user_attrs["checkpoint"]["artifact_id"]).exists()
        assert present == (t.number in front), t.number
    dominated = [t.number for t in study.trials if t.number not in front]
    if dominated:
        proc = run_cli("export", "--trial", str(dominated[0]), "--out", "x", cwd=study_dir,
                       check=1)
        assert "off the Pareto front and its checkpoint was removed" in proc.stderr
    assert "removed 0 checkpoints" in run_cli("studies", "gc", cwd=study_dir, check=0).stdout


@pytest.mark.parametrize("kind,suffix", [("pareto", "png"), ("pareto", "html"),
                                         ("history", "png"), ("importance", "svg"),
                                         ("curves", "html"), ("usage", "png")])
def test_plots(study_dir, kind, suffix):
    out = study_dir / "plots" / f"{kind}.{suffix}"
    extra = []
    if kind == "usage":  # a routed trial's usage (the front may hold dense trials only)
        routed = [t.number for t in _study(study_dir).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,)) if t.user_attrs.get("expert_class_usage")]
        assert routed
        extra = ["--trial", str(routed[0])]
    run_cli("plot", kind, "--out", str(out), *extra, cwd=study_dir, check=0)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else len(data) > 1000
    assert not list(out.parent.glob(".*tmp*"))


def test_export_each_pick_with_a_model_card(study_dir):
    front = json.loads(run_cli("pareto", "--json", cwd=study_dir, check=0).stdout)
    best = {
        "accuracy": max(front, key=lambda r: (r["values"]["val_accuracy"], -r["trial"])),
        "flops": min(front, key=lambda r: (r["values"]["mmacs"], -r["values"]["val_accuracy"])),
        "robust": max(front, key=lambda r: (r["values"]["robust_accuracy"],
                                            r["values"]["val_accuracy"])),
    }
    import automoe

    for pick in ("accuracy", "flops", "robust", "knee"):
        out = study_dir / f"pick-{pick}"
        proc = run_cli("export", "--pick", pick, "--out", str(out), cwd=study_dir, check=0)
        number = int(proc.stderr.split("exported trial ")[1].split()[0])
        assert number in {r["trial"] for r in front}
        if pick in best:
            assert number == best[pick]["trial"]
        card = (out / "MODEL_CARD.md").read_text()
        assert f"Trial {number} of study `tiny`" in card and "## Training recipe" in card
        assert "60/20/20 % train/val/test split" in card  # how digits is split, not CIFAR's
        model = automoe.load(out)
        result = json.loads(run_cli("eval", str(out), "--json", cwd=study_dir, check=0).stdout)
        row = next(r for r in front if r["trial"] == number)
        if row["moe"]:  # each routed layer's health with its expert-class NMI
            assert "| dropped | specialisation |" in card
        assert abs(result["val_accuracy"] - row["values"]["val_accuracy"]) <= 0.5
        assert model.config.num_classes == 10
    # bounds that nothing meets: one line naming them
    proc = run_cli("export", "--pick", "knee", "--max-mmacs", "0.000001", "--out", "none",
                   cwd=study_dir, check=1)
    assert "no trial of the Pareto front of 'tiny' has <= 1e-06 MMACs" in proc.stderr


def test_kernels_command(study_dir):
    table = run_cli("kernels", cwd=study_dir, check=0, process=True).stdout
    assert "conv experts" in table and "channel gating" in table
    assert "padded" in table and "grouped" in table  # the CPU's per-layer choice


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_and_its_artifacts(study_dir):
    port = _free_port()
    server = subprocess.Popen(["automoe", "dashboard", "--port", str(port), "-q"],
                              cwd=study_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=5))
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.5)
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "tiny"
        detail = json.load(urllib.request.urlopen(
            f"{base}/api/studies/{summary['study_id']}?after=0", timeout=10))
        assert detail["objective_names"] == ["val_accuracy", "mmacs", "robust_accuracy"]
        trials = detail["trials"]
        assert len(trials) == 8
        front = {r["trial"] for r in json.loads(run_cli("pareto", "--json", cwd=study_dir,
                                                        check=0).stdout)}
        with_artifacts = [t for t in trials if t["artifacts"]]
        assert {t["number"] for t in with_artifacts} >= front
        trial = next(t for t in with_artifacts if t["number"] in front)
        attrs = {a["key"] for a in trial["user_attrs"]}
        assert {"val_accuracy", "architecture", "macs", "attack"} <= attrs
        # the front's verified robust accuracy (a finished trial takes no new attribute)
        # is shown in the study's note and in each front trial's note
        assert "Front verified with a strong attack" in detail["note"]["body"]
        assert "Verified robust accuracy" in trial["note"]["body"]
        names = {a["filename"] for a in trial["artifacts"]}
        n = trial["number"]
        assert {f"trial-{n}.safetensors", f"trial-{n}-config.json"} <= names
        for artifact in trial["artifacts"]:  # each served byte for byte
            url = (f"{base}/artifacts/{summary['study_id']}/{trial['trial_id']}/"
                   f"{artifact['artifact_id']}")
            body = urllib.request.urlopen(url, timeout=10).read()
            stored = study_dir / "studies" / "artifacts" / artifact["artifact_id"]
            assert body == stored.read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_closed_pipe_ends_quietly(study_dir):
    # `automoe pareto --json | head -c 20`: the reader leaves early; no error, no traceback
    proc = subprocess.Popen(["automoe", "pareto", "--json"], cwd=study_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.read(20)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert stderr == "" and proc.returncode in (0, 141)


def test_help_states_each_default_once():
    for command in ("search", "worker", "pareto", "export", "robustness", "verify"):
        text = subprocess.run(["automoe", command, "--help"], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "400"}).stdout
        assert "(default: None)" not in text and "(default: False)" not in text
        for line in text.splitlines():
            assert line.count("(default:") + line.count("(default ") <= 1, line


def test_status_piped_prints_snapshots_and_fits_80_columns(study_dir):
    proc = subprocess.Popen(["automoe", "status", "--interval", "0.5"], cwd=study_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        snapshots = 0
        while snapshots < 2:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            snapshots += line.startswith("--- ")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    from rich.console import Console

    from automoe.cli.study import _status_view

    console = Console(width=80, record=True, file=io.StringIO())
    console.print(_status_view(_study(study_dir)))
    head = console.export_text().splitlines()
    hypervolume = [line for line in head if "hypervolume" in line]
    assert len(hypervolume) == 1 and "trials, hypervolume" in hypervolume[0]
    assert all(len(line.rstrip()) <= 80 for line in head)
