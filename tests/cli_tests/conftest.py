import os
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


def run_cli(*args, cwd, binary=True, check=None):
    """Run the installed `automoe` (or `python cli.py`) and return the CompletedProcess."""
    cmd = (["automoe"] if binary else [sys.executable, str(REPO / "cli.py")]) + list(args)
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_SPACE)
    (tmp_path / "studies").mkdir()
    return tmp_path
