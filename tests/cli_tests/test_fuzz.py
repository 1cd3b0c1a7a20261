"""Property-based input fuzzing: every generated space file, CLI argument list and damaged
checkpoint either works or ends in one line with exit 1/2, no traceback, nothing written.

A valid space is taken one step further than validation: a candidate is sampled from it and
its model built and run on one image of the space's size (a full trial per example would
take the suite's whole time). The number of cases each property tried is printed.
"""

import contextlib
import copy
import io
import os
import random
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import optuna
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings

from automoe.cli import main
from automoe.errors import AutomoeError
from automoe.models import create_model
from automoe.space import SearchSpace
from automoe.storage import save_checkpoint

from .conftest import TINY_SPACE

BASE = yaml.safe_load(TINY_SPACE)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "../../etc", "a/b", "ünïcødé", "0", "-1", "1e400", "nan", "k > E",
                     "{}", "[]"]),
    st.lists(st.integers(-3, 9), max_size=3), st.just([]), st.just({}),
    st.dictionaries(st.sampled_from(["low", "high", "choices", "log", "step"]),
                    st.one_of(st.integers(-5, 10), st.floats(-1, 2), st.booleans(),
                              st.just([])), max_size=3))
KEYS = sorted(BASE["params"]) + ["name", "dataset", "model", "trials", "evaluation",
                                  "sampler", "objectives", "constraints", "bogus_key"]
COUNT = {"spaces": 0, "argv": 0, "checkpoints": 0, "exports": 0}
OUTCOMES = {"spaces": {}, "argv": {}, "checkpoints": {}, "exports": {}}  # exit code (or outcome) -> cases


def _tally(kind: str, outcome) -> None:
    OUTCOMES[kind][outcome] = OUTCOMES[kind].get(outcome, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _no_db_retry():
    # a fuzzed URL of an unreachable server fails at once, not after a minute of retries
    old = os.environ.get("AUTOMOE_DB_RETRY_SECONDS")
    os.environ["AUTOMOE_DB_RETRY_SECONDS"] = "0"
    yield
    if old is None:
        del os.environ["AUTOMOE_DB_RETRY_SECONDS"]
    else:
        os.environ["AUTOMOE_DB_RETRY_SECONDS"] = old


def _one_line_or_ok(code: int, err: str) -> None:
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines and lines[-1].startswith(("automoe: error:", "usage:", "automoe ")), err
        assert len([ln for ln in lines if "error" in ln]) == 1, err


def _run(argv: list[str], cwd: Path) -> tuple[int, str]:
    err = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        os.chdir(old)
    return code, err.getvalue()


@st.composite
def mutated_spaces(draw):
    raw = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "delete", "top_k_over_experts", "empty"]))
        target = raw["params"] if key in BASE["params"] else raw
        if action == "delete":
            target.pop(key, None)
        elif action == "top_k_over_experts":
            raw["params"]["experts"], raw["params"]["top_k"] = 2, draw(st.integers(3, 9))
        elif action == "empty":
            target[key] = {"choices": []}
        else:
            target[key] = draw(WEIRD)
    return raw


@FUZZ
@given(raw=mutated_spaces())
def test_a_fuzzed_space_validates_and_builds_or_is_one_line(raw):
    COUNT["spaces"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        code, err = _run(["spaces", "validate", str(path)], Path(tmp))
        _one_line_or_ok(code, err)
        _tally("spaces", code)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["space.yaml"]  # nothing written
        if code == 0:  # valid: a candidate of it builds and runs
            space = SearchSpace.from_dict(raw, str(path))
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            trial = optuna.create_study().ask()
            try:
                candidate = space.suggest(trial)
            except AutomoeError:
                return  # a draw the space check cannot rule out; the trial fails with it
            if space.dataset["name"] != "digits":
                return  # the fields below are digits' (no other dataset is on disk here)
            size = space.dataset.get("image_size") or 8  # digits: 8x8 by default, 1 channel
            model = create_model(candidate.model_name, **candidate.model, in_channels=1,
                                 num_classes=10, image_size=size)
            model(torch.rand(1, 1, size, size))


# Flags whose valid values keep a run tiny and in this process's limits: no --workers,
# --executor or --threads (a valid draw would start processes or Ray, or change this
# process's torch threads for the tests after it), and numbers of at most 3.
ARGV = st.lists(st.one_of(
    st.sampled_from(["--trials", "--storage", "--study", "--seed", "--space", "--sampler",
                     "--repeats", "--heartbeat", "--until", "--debug-not", "-q"]),
    st.integers(-3, 3).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=8),
    st.sampled_from(["", "../../etc", "a/b", "ünïcødé", "1e400", "nan", "sqlite://",
                     "postgresql://nobody@127.0.0.1:1/x", "mysql://x", "tiny.yaml"])),
    max_size=6)


@FUZZ
@given(command=st.sampled_from(["search", "pareto", "status", "studies", "worker", "verify",
                                "spaces"]), rest=ARGV)
def test_fuzzed_cli_arguments_run_or_end_in_one_line(command, rest):
    COUNT["argv"] += 1
    if command == "search":  # a valid draw runs at most one tiny trial
        rest = ["--space", "tiny.yaml", "--no-verify", "--trials", "1", "-q", *rest]
    if command == "status":
        rest = [*rest, "--once"] if "--once" not in rest else rest
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tiny.yaml").write_text(TINY_SPACE)
        code, err = _run([command, *rest], Path(tmp))
        _one_line_or_ok(code, err)
        _tally("argv", code)
        if code:
            assert sorted(p.name for p in Path(tmp).rglob("*")) in (
                ["tiny.yaml"], ["studies", "tiny.yaml"]), err  # no half-written DB or files


def _load_and_tally(kind: str, path) -> None:
    """``automoe.load(path)`` either loads or raises one clear one-line error."""
    import automoe

    try:
        automoe.load(path)
        _tally(kind, "loaded")
    except AutomoeError as exc:
        assert "\n" not in str(exc) and str(exc)
        _tally(kind, "refused")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    torch.manual_seed(0)  # the same bytes whatever ran before: the same cases each run
    save_checkpoint(create_model("resnet8", image_size=8, placement="last_stage",
                                 num_experts=2, width_multiplier=0.25), path)
    return path.read_bytes()


@FUZZ
@given(damage=st.sampled_from(["truncate", "flip", "empty", "rename_model"]),
       where=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_a_damaged_checkpoint_loads_or_is_one_clear_error(checkpoint, damage, where, seed):

    COUNT["checkpoints"] += 1
    data = bytearray(checkpoint)
    at = int(where * (len(data) - 1))
    if damage == "truncate":
        data = data[:at]
    elif damage == "flip":
        data[at] ^= 1 << random.Random(seed).randrange(8)
    elif damage == "empty":
        data = bytearray()
    else:  # the metadata names another architecture
        data = bytearray(bytes(data).replace(b'"resnet8"', b'"vgg11"', 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(bytes(data))
        _load_and_tally("checkpoints", path)


@pytest.fixture(scope="module")
def export_files(checkpoint):
    """The two files ``automoe.load`` reads of an export folder: the weights and a
    ``config.json`` naming their model and checksum (as ``automoe export`` writes them)."""
    import hashlib
    import json

    from automoe.export._export import EXPORT_FORMAT
    from automoe.storage import read_checkpoint_metadata

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(checkpoint)
        meta = read_checkpoint_metadata(path)
    config = {"format": EXPORT_FORMAT, "model_name": meta["model_name"],
              "model_config": meta["model_config"],
              "weights_sha256": hashlib.sha256(checkpoint).hexdigest()}
    return {"model.safetensors": checkpoint, "config.json": json.dumps(config).encode()}


@FUZZ
@given(target=st.sampled_from(["model.safetensors", "config.json"]),
       damage=st.sampled_from(["truncate", "flip", "missing", "other_model", "wrong_types"]),
       where=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_a_damaged_export_folder_loads_or_is_one_clear_error(export_files, target, damage,
                                                              where, seed):
    import json


    COUNT["exports"] += 1
    files = dict(export_files)
    data = bytearray(files[target])
    at = int(where * max(len(data) - 1, 0))
    if damage == "truncate":
        files[target] = bytes(data[:at])
    elif damage == "flip":
        data[at] ^= 1 << random.Random(seed).randrange(8)
        files[target] = bytes(data)
    elif damage == "missing":
        del files[target]
    else:  # the config names another architecture, or holds values of the wrong type
        config = json.loads(files["config.json"])
        if damage == "other_model":
            config["model_name"] = "vgg11"
        else:
            config[random.Random(seed).choice(sorted(config))] = [1, "x"]
        files["config.json"] = json.dumps(config).encode()
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        _load_and_tally("exports", tmp)


def test_report_the_number_of_cases():
    print(f"fuzzed cases: {COUNT}; outcomes: {OUTCOMES}")
    if all(COUNT.values()):  # the whole module ran: the properties saw both outcomes
        assert all(len(OUTCOMES[kind]) >= 2 for kind in ("spaces", "argv")), OUTCOMES
        # a checkpoint's checksum covers its metadata and weights: no damage loads
        assert OUTCOMES["checkpoints"] == {"refused": COUNT["checkpoints"]}, OUTCOMES
        assert OUTCOMES["exports"].get("refused"), OUTCOMES  # (nearly) every damage is
