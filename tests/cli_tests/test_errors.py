"""Bad input: non-zero exit, one line naming the problem, no traceback, nothing written."""

import pytest

from .conftest import TINY_SPACE, run_cli

BAD_YAML = "name: x\nparams: {experts: [1, 2\n"
TOP_K_OVER = "name: x\nparams:\n  experts: 2\n  top_k: 3\n"


@pytest.mark.parametrize("files,args,message", [
    ({"bad.yaml": BAD_YAML}, ["search", "--space", "bad.yaml"], "bad.yaml: line"),
    ({"k.yaml": TOP_K_OVER}, ["search", "--space", "k.yaml"], "top-k 3 exceeds 2 experts"),
    ({}, ["search", "--space", "tiny.yaml", "--sampler", "annealing"], "unknown sampler"),
    ({}, ["search", "--space", "tiny.yaml", "--storage", "nosuchdb://x/y"], "unknown database"),
    ({}, ["search", "--space", "tiny.yaml", "--storage", "::"], "invalid storage URL"),
    ({}, ["search", "--space", "tiny.yaml", "--dataset", "cifar10"], "--data-root"),
    ({}, ["search", "--space", "tiny.yaml", "--dataset", "cifar10", "--data-root", "nope"],
     "is not a directory"),
    ({}, ["search", "--space", "missing.yaml"], "does not exist"),
    ({}, ["search", "--space", "tiny.yaml", "--study", "../../x"], "study name '../../x'"),
    ({}, ["search", "--space", "tiny.yaml", "--device", "cuda:0"], "no CUDA device"),
    ({}, ["search", "--space", "tiny.yaml", "--verify-steps", "0"],
     "verification needs steps >= 1"),  # before any trial runs
    ({}, ["pareto"], "no study database"),
    ({}, ["eval", "nowhere"], "is not an exported model"),
])
def test_bad_input_is_one_line_and_writes_nothing(workdir, files, args, message):
    for name, text in files.items():
        (workdir / name).write_text(text)
    proc = run_cli(*args, cwd=workdir)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("automoe: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert list((workdir / "studies").iterdir()) == []  # no DB, no artifacts


def test_debug_shows_the_traceback(workdir):
    # a real process: with --debug the error escapes main() and the interpreter prints it
    proc = run_cli("search", "--space", "tiny.yaml", "--sampler", "annealing", "--debug",
                   cwd=workdir, process=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_usage_errors_exit_2(workdir):
    proc = run_cli("search", "--trials", "many", cwd=workdir)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("export", "--out", "x", cwd=workdir)
    assert proc.returncode == 2 and "--trial --pick" in proc.stderr
    for args in (["search", "--verify-jobs", "0"], ["verify", "--jobs", "-1"]):
        proc = run_cli(*args, cwd=workdir)
        assert proc.returncode == 2 and "must be >= 1" in proc.stderr


def test_export_refuses_bad_trials_and_overwrites(workdir):
    run_cli("search", "--space", "tiny.yaml", "--trials", "1", "-q", cwd=workdir, check=0)
    out = workdir / "out"
    run_cli("export", "--trial", "0", "--out", str(out), cwd=workdir, check=0)
    proc = run_cli("export", "--trial", "0", "--out", str(out), cwd=workdir, check=1)
    assert "already exists; pass --force" in proc.stderr
    run_cli("export", "--trial", "0", "--out", str(out), "--force", cwd=workdir, check=0)
    proc = run_cli("export", "--trial", "7", "--out", str(workdir / "o7"), cwd=workdir, check=1)
    assert "has no trial 7" in proc.stderr
    assert not (workdir / "o7").exists()
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".out")) == []


def test_version_and_help(workdir):
    assert run_cli("--version", cwd=workdir, check=0).stdout.startswith("automoe ")
    help_text = run_cli("search", "--help", cwd=workdir, check=0).stdout
    for flag in ("--space", "--study", "--storage", "--trials", "--sampler", "--dataset",
                 "--data-root", "--device", "--seed"):
        assert flag in help_text


def test_spaces_list_validate_show(workdir):
    listing = run_cli("spaces", cwd=workdir, check=0).stdout
    for name in ("default", "cifar10_resnet18", "cifar100_last_stage", "deepmoe_channel"):
        assert name in listing
    assert "valid" in run_cli("spaces", "validate", "tiny.yaml", cwd=workdir, check=0).stdout
    shown = run_cli("spaces", "show", "default", cwd=workdir, check=0).stdout
    assert "capped at experts" in shown and "fingerprint" in shown
    (workdir / "bad.yaml").write_text("name: x\nparams: {experts: 2, top_k: 3}\n")
    proc = run_cli("spaces", "validate", "bad.yaml", cwd=workdir, check=1)
    assert proc.stderr.strip().count("\n") == 0 and "top-k 3 exceeds 2 experts" in proc.stderr


def test_config_file_fills_flags_and_the_command_line_wins(workdir):
    (workdir / "studies" / "run.toml").write_text(
        'space = "tiny.yaml"\ntrials = 3\nsampler = "random"\nstudy = "from-config"\n')
    proc = run_cli("search", "--config", "studies/run.toml", "--trials", "1", cwd=workdir,
                   check=0)
    assert "Pareto front of 'from-config' (1 trials" in proc.stdout  # --trials beat the file
    assert "sampler random" in proc.stderr
    (workdir / "studies" / "bad.toml").write_text('trials = "many"\n')
    proc = run_cli("search", "--config", "studies/bad.toml", cwd=workdir, check=1)
    assert proc.stderr.startswith("automoe: error: studies/bad.toml: trials: invalid value")
    (workdir / "studies" / "unknown.toml").write_text("epochz = 3\n")
    proc = run_cli("search", "--config", "studies/unknown.toml", cwd=workdir, check=1)
    assert "epochz: not a flag of any automoe command" in proc.stderr
    # a key of another command is named and skipped
    (workdir / "studies" / "other.toml").write_text('until = 3\nspace = "tiny.yaml"\n')
    proc = run_cli("search", "--config", "studies/other.toml", "--trials", "1", "--no-verify",
                   "--study", "other", cwd=workdir, check=0)
    assert "automoe: note: studies/other.toml: until not used by `automoe search`" in proc.stderr


def test_search_runs_from_any_folder(tmp_path):
    # the default storage's folder is created, and the message says where the DB is
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    proc = run_cli("search", "--space", "tiny.yaml", "--trials", "1", "--no-verify",
                   cwd=tmp_path, check=0)
    db = tmp_path / "studies" / "automoe.db"
    assert db.is_file()
    assert str(db) in proc.stderr.replace("\n", "")


def test_a_given_storage_folder_must_exist(tmp_path):
    # a typo in a URL the user gave is not silently made into a new folder
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    proc = run_cli("search", "--space", "tiny.yaml", "--storage", "sqlite:///runs/x.db",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("sampler", ["nsga3", "gp", "nni-tpe"])
def test_samplers_are_quiet_with_q(workdir, sampler):
    # no experimental-feature warnings, no NNI log lines with raw colour codes
    proc = run_cli("search", "--space", "tiny.yaml", "--sampler", sampler, "--trials", "2",
                   "--no-verify", "-q", "--study", sampler.replace("-", ""), cwd=workdir,
                   check=0)
    assert proc.stderr == ""
