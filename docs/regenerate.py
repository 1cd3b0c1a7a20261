"""Regenerate the example sessions and the figures in docs/images from a real run.

    python docs/regenerate.py [--check]

Runs the loop on the default study in a fresh temporary folder (`automoe search`,
`status --once`, `plot`, `export --pick knee`, `eval`), then writes what the commands
printed between the `<!-- example:loop -->` markers of the loop guide (the whole session)
and of the README (the search, the picture, the export and the evaluation), and the
figures into docs/images. Every number in those blocks comes from this run; nothing is
typed by hand. With --check, nothing is written: it exits 1 if a block differs from a fresh
run (on another machine the numbers may differ with the CPU and thread count; the run
records its thread count).
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
GUIDE = REPO / "docs" / "guides" / "loop.md"
# commands the README's shorter session leaves to the guide
GUIDE_ONLY = ("automoe status", "automoe dashboard", "automoe plot usage")
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


def shorter(session_text: str) -> str:
    """The README's session: the guide's without the commands in GUIDE_ONLY and what they
    printed."""
    kept, skipping = [], False
    for line in session_text.splitlines():
        if line.startswith("$ "):
            skipping = line[2:].startswith(GUIDE_ONLY)
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the run")
    parser.add_argument("--workdir", default=None,
                        help="run in this new folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="automoe-readme-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        text, figures = session(workdir, args.threads)
        blocks = {GUIDE: text, README: shorter(text)}
        stale = []
        for path, block_text in blocks.items():
            current = path.read_text()
            if BEGIN not in current or END not in current:
                sys.exit(f"{path.name} has no {BEGIN} ... {END} block")
            block = f"{BEGIN}\n```\n{block_text}\n```\n{END}"
            updated = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _, b=block: b,
                             current, flags=re.S)
            if updated != current:
                stale.append(path.name)
            if not args.check:
                partial = path.with_suffix(".md.tmp")
                partial.write_text(updated)
                partial.replace(path)
        if args.check:
            print("example sessions are current" if not stale else
                  f"example session differs from a fresh run: {', '.join(stale)}")
            return 1 if stale else 0
        for kind, path in figures.items():
            target = REPO / "docs" / "images" / FIGURES[kind]
            shutil.copyfile(path, target.with_suffix(".tmp.png"))
            target.with_suffix(".tmp.png").replace(target)
    print(f"example sessions and docs/images/{', docs/images/'.join(FIGURES.values())} "
          "regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
