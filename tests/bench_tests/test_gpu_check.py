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
    for heading in ("## Predicted Triton compiles", "## Environment", "## pytest -m gpu",
                    "## Kernels", "## ResNet-18 epoch", "## 3-trial search"):
        assert heading in report
    assert "tests/kernels_tests/test_gpu.py" in report  # the GPU tests were collected
    predicted = report.split("## Predicted Triton compiles")[1].split("## ")[0]
    assert predicted.count(" ok |") == 4 and "OVER" not in predicted
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


@pytest.mark.slow
def test_the_report_grows_part_by_part_and_is_cut_at_the_budget(tmp_path):
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run",
                           "--budget", "30", "--skip", "environment", "compiles", "--out",
                           str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    report = out.read_text()
    assert not list(tmp_path.glob("*.tmp"))
    kernels = report.split("## Kernels")[1].split("## ")[0]
    # the kernel part takes 20-40 s in a dry run on 2 cores, so it ends or is cut at the
    # budget, keeping the rows measured by then; every later part is cut or skipped
    assert "| precision |" in kernels
    later = [report.split(h)[1].split("## ")[0]
             for h in ("## pytest -m gpu", "## ResNet-18 epoch", "## 3-trial search")]
    assert all("\nSKIPPED: " in part or "CUT at" in part for part in later)
    assert sum("\nSKIPPED: " in part for part in later) >= 2
    assert proc.returncode == 1  # what was cut or skipped is reported as not done
    assert proc.stdout.index("## Kernels") < proc.stdout.index("## pytest -m gpu")


def test_the_gpu_command_fits_one_device_call():
    guide = (ROOT / "docs" / "guides" / "benchmarks.md").read_text()
    block = guide.split("<!-- gpu-command -->")[1].split("<!-- /gpu-command -->")[0]
    command = block.split("```bash")[1].split("```")[0].strip()
    assert "gpu_check.py --budget" in command and "--no-index" in command
    assert len(command) < 2000
    assert ".whl/" in (ROOT / ".gitignore").read_text()
