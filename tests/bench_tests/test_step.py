"""bench/step.py: one round of its digits table, with the router variants."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_step_bench_times_every_dispatch_and_variant(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step.py"), "--only", "digits",
                           "--steps", "1", "--rounds", "1", "--dispatch", "sparse", "auto",
                           "--variants"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "digits" in line]
    # two placements x (sparse, auto and auto's three variants)
    assert len(rows) == 2 * 5
    for label in ("no losses", "topk gate", "topk gate, no losses"):
        assert sum(f"auto, {label} " in row for row in rows) == 2
