"""The GPU check's Triton compiles, predicted on the CPU, stay within each part's budget: a
change that multiplies compiles (a new specialisation, more configs, a wider test matrix)
fails here, not on a lent GPU."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import gpu_compiles  # noqa: E402


@pytest.mark.parametrize("part", list(gpu_compiles.REPLAYS))
def test_each_part_compiles_within_its_budget(part):
    counts = gpu_compiles.predict(part)
    assert counts["launches"] > 0 and counts["sessions"] > 0  # the replay reached Triton
    assert counts["compiles"] <= gpu_compiles.COMPILE_BUDGET[part], counts
