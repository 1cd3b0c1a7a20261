"""Regenerate the README's example session and the figures in docs/ from a real run.

    python docs/regenerate.py [--check]

Runs the README's loop on the default study in a fresh temporary folder (`automoe search`,
`status --once`, `plot`, `export --pick knee`, `eval`), then writes what the commands
printed between the README's `<!-- example:loop -->` markers and the figures into docs/.
Every number in that part of the README comes from this run; nothing is typed by hand.
With --check, nothing is written: it exits 1 if the README's example session differs from
a fresh run (on another machine the numbers may differ with the CPU and thread count; the
run records its thread count).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN, END = "<!-- example:loop -->", "<!-- /example:loop -->"
FIGURES = {"pareto": "pareto_front.png", "usage": "usage.png", "curves": "curves.png"}


def run(command: list[str], cwd: Path) -> tuple[str, str]:
    """Run an automoe command as a user would; ``(stdout, stderr)``."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    proc = subprocess.run(["automoe", *command], cwd=cwd, capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"`automoe {' '.join(command)}` failed: {proc.stderr.strip()}")
    return proc.stdout, proc.stderr


def session(workdir: Path, threads: int) -> tuple[str, dict[str, Path]]:
    lines = []

    def show(command: list[str], comment: str = "", output: str = "") -> None:
        shown = " ".join(["automoe", *command])
        lines.append(f"$ {shown:<38}{'  # ' + comment if comment else ''}".rstrip())
        lines.extend(line.rstrip() for line in output.strip("\n").splitlines())

    started = time.perf_counter()
    stdout, _ = run(["search", "--threads", str(threads)], workdir)
    minutes = (time.perf_counter() - started) / 60
    show(["search"], f"12 trials on digits, {minutes:.0f} min on {threads} CPU threads",
         stdout)
    stdout, _ = run(["status", "--once"], workdir)
    show(["status", "--once"], "live without --once", stdout)
    figures = {}
    for kind, name in FIGURES.items():
        path = workdir / name
        run(["plot", kind, "--out", str(path)], workdir)
        figures[kind] = path
    show(["plot", "pareto", "--out", "pareto_front.png"])
    show(["plot", "usage", "--out", "usage.png"], "experts x classes of the knee MoE")
    show(["dashboard"], "optuna-dashboard on the study")
    _, stderr = run(["export", "--pick", "knee", "--out", "best-knee"], workdir)
    show(["export", "--pick", "knee", "--out", "best-knee"], "", stderr)
    stdout, _ = run(["eval", "best-knee"], workdir)
    show(["eval", "best-knee"], "", stdout)
    text = "\n".join(lines)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # no colour codes in the README
    text = text.replace(str(workdir), ".")
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the run")
    parser.add_argument("--workdir", default=None,
                        help="run in this new folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"README.md has no {BEGIN} ... {END} block")
    with tempfile.TemporaryDirectory(prefix="automoe-readme-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        text, figures = session(workdir, args.threads)
        block = f"{BEGIN}\n```\n{text}\n```\n{END}"
        updated = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, readme,
                         flags=re.S)
        if args.check:
            same = updated == readme
            print("README example session is current" if same else
                  "README example session differs from a fresh run")
            return 0 if same else 1
        partial = README.with_suffix(".md.tmp")
        partial.write_text(updated)
        partial.replace(README)
        for kind, path in figures.items():
            target = REPO / "docs" / FIGURES[kind]
            shutil.copyfile(path, target.with_suffix(".tmp.png"))
            target.with_suffix(".tmp.png").replace(target)
    print(f"README.md example session and docs/{', docs/'.join(FIGURES.values())} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
