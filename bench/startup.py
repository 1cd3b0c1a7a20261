"""Start-up of the commands that only read a study, against Optuna's own CLI.

    python bench/startup.py [--pairs 5]

Creates a 2-trial study of a tiny space in a temporary SQLite DB, then runs each automoe
command and its yardstick as whole processes, alternating (A B A B ..., one warm-up pair
first), and prints the median wall seconds and peak resident memory of each and the ratio
of the medians. The ratios are the figures: absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TINY_SPACE = """\
name: tiny
trials: 2
dataset: {name: digits, image_size: 8}
model: {name: resnet8}
params:
  placement: {choices: [none, last_stage]}
  experts: 2
  width_multiplier: 0.25
  epochs: 1
  batch_size: 256
evaluation:
  attack: {steps: 1, max_samples: 32}
"""


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one whole process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(argv)}` failed: {proc.stderr.read().decode().strip()}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed A/B pairs per command")
    args = parser.parse_args()
    automoe = shutil.which("automoe")
    optuna = shutil.which("optuna")
    if not automoe or not optuna:
        sys.exit("needs the automoe and optuna commands on PATH (pip install -e .)")
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="automoe-startup-") as tmp:
        workdir = Path(tmp)
        (workdir / "tiny.yaml").write_text(TINY_SPACE)
        (workdir / "studies").mkdir()
        url = f"sqlite:///{workdir / 'studies' / 'automoe.db'}"
        subprocess.run([automoe, "search", "--space", "tiny.yaml", "--storage", url,
                        "--no-verify", "--threads", "1", "-q"], cwd=workdir, check=True,
                       capture_output=True)
        pairs = [
            ([automoe, "--help"], [optuna, "--help"]),
            ([automoe, "pareto", "--json", "--storage", url],
             [optuna, "best-trials", "--study-name", "tiny", "--storage", url]),
        ]
        table = Table(title=f"whole processes, {args.pairs} A/B pairs after one warm-up, "
                            f"median")
        for column in ("command", "wall s", "peak MiB", "yardstick", "its wall s",
                       "its peak MiB", "ratio of wall s"):
            table.add_column(column, justify="left" if "command" in column
                             or column == "yardstick" else "right")
        for ours, theirs in pairs:
            timed(ours, workdir), timed(theirs, workdir)  # warm-up: page cache, .pyc files
            a, b = [], []
            for _ in range(args.pairs):
                a.append(timed(ours, workdir))
                b.append(timed(theirs, workdir))
            a_s, b_s = statistics.median(s for s, _ in a), statistics.median(s for s, _ in b)
            table.add_row(" ".join(["automoe", *ours[1:3]]), f"{a_s:.2f}",
                          f"{statistics.median(m for _, m in a):.0f}",
                          " ".join(["optuna", *theirs[1:2]]), f"{b_s:.2f}",
                          f"{statistics.median(m for _, m in b):.0f}", f"{a_s / b_s:.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
