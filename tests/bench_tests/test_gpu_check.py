"""The prepared GPU acceptance run, checked by its CPU dry run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_one_report(tmp_path):
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = out.read_text()
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then renamed
    assert "FAILED" not in report and "MISS" not in report.split("## Kernels")[0]
    for heading in ("## Environment", "## pytest -m gpu", "## Kernels", "## ResNet-18 epoch",
                    "## 3-trial search"):
        assert heading in report
    assert "tests/kernels_tests/test_gpu.py" in report  # the GPU tests were collected
    kernels = report.split("## Kernels")[1].split("## ")[0]
    assert kernels.count("| fp32 |") == 2 and kernels.count("| tf32 |") == 2
    epoch = report.split("## ResNet-18 epoch")[1].split("## ")[0]
    for model in ("dense", "MoE sparse", "MoE compute-all"):
        assert epoch.count(f"| {model} |") == 2  # bf16 and fp32
    search = report.split("## 3-trial search")[1]
    assert "exit code 0" in search


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA it runs the whole check")
def test_without_cuda_or_dry_run_it_says_what_to_do(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out",
                           str(tmp_path / "r.md")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "needs a CUDA device; use --dry-run" in proc.stderr
    assert not (tmp_path / "r.md").exists()
