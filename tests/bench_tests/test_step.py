"""bench/step.py: one round of its digits table, with the router variants and the op split."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_step_bench_times_every_dispatch_and_variant(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step.py"), "--only", "digits",
                           "--steps", "1", "--rounds", "1", "--dispatch", "sparse", "auto",
                           "--variants", "--ops"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    timing, split = proc.stdout.split("ATen ops", 1)
    rows = [line for line in timing.splitlines() if "digits" in line]
    # two placements x (sparse, auto and auto's three variants)
    assert len(rows) == 2 * 5
    for label in ("no losses", "topk gate", "topk gate, no losses"):
        assert sum(f"auto, {label} " in row for row in rows) == 2
    # the op split: the dense model once, then every MoE configuration; a MoE step runs
    # the dense step's ops plus its routers' and dispatch's
    split_rows = [line.split("│") for line in split.splitlines() if "digits" in line]
    assert len(split_rows) == 1 + 2 * 5
    ops = {(row[2].strip(), row[3].strip()): int(row[4]) for row in split_rows}
    dense_ops = ops[("none", "dense")]
    assert all(count > dense_ops for key, count in ops.items() if key[0] != "none")
    assert all(float(row[5]) > 0 and float(row[6]) > 0 for row in split_rows)
