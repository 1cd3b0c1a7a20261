import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A space that trains in about a second per trial.
TINY_SPACE = """
name: tiny
trials: 6
dataset: {name: digits, image_size: 8}
model: {name: resnet8, embedding_width: 8, global_router_blocks: 1}
params:
  placement: {choices: [none, last_stage, all]}
  granularity: {choices: [conv, pathway, block, channel]}
  router: {choices: [linear, global]}
  gate: topk
  experts: {low: 2, high: 4}
  top_k: {low: 1, high: 2}
  balance_weight: {low: 1.0e-3, high: 0.1, log: true}
  lr: {low: 0.05, high: 0.2, log: true}
  epochs: 1
  batch_size: 128
  width_multiplier: 0.5
evaluation:
  attack: {eps: 8/255, step_size: 2/255, steps: 2, max_samples: 64}
sampler: {name: nsga2, population_size: 2}
"""


def run_cli(*args, cwd, binary=True, check=None, process=False):
    """Run ``automoe ARGS`` in ``cwd`` and return a CompletedProcess.

    By default the command runs in this process through :func:`automoe.cli.main`, with its
    output captured: a new process per call (torch's import alone) cost the suite minutes
    and proves nothing more for most behaviour. ``process=True`` runs the installed
    ``automoe`` as a user would (one such test per command stays), ``binary=False`` runs
    ``python cli.py``. An exception the CLI lets escape fails the test here, as its
    traceback would in a terminal.
    """
    if process or not binary:
        cmd = (["automoe"] if binary else [sys.executable, str(REPO / "cli.py")]) + list(args)
        env = {**os.environ, "COLUMNS": "200"}
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env,
                              timeout=600)
    else:
        proc = _run_in_process([str(a) for a in args], cwd)
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


def _run_in_process(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """``automoe.cli.main(argv)`` with cwd, COLUMNS, stdout and stderr as a process would
    have them, and what a command changes in this process (torch threads, the SIGINT
    handler, Optuna's verbosity) put back afterwards."""
    import optuna

    from automoe.cli import main

    out, err = io.StringIO(), io.StringIO()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    handler = signal.getsignal(signal.SIGINT)
    verbosity = optuna.logging.get_verbosity()
    columns = os.environ.get("COLUMNS")
    here = os.getcwd()
    os.environ["COLUMNS"] = "200"
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(here)
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
        signal.signal(signal.SIGINT, handler)
        optuna.logging.set_verbosity(verbosity)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads or os.cpu_count() or 1)
    return subprocess.CompletedProcess(["automoe", *argv], code, out.getvalue(), err.getvalue())


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    (tmp_path / "studies").mkdir()
    return tmp_path
