"""The docs site builds with every warning an error, and its reference pages are generated
from the code (a new parameter or command appears without anyone writing it down)."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs"))

import hooks  # noqa: E402  (the docs' hook module, beside the pages)


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("reference/parameters", "reference/cli", "reference/api", "guides/loop"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_every_space_parameter_is_in_the_reference_with_its_default():
    from automoe.space import PARAMS
    from automoe.training import TrainConfig

    page = hooks.parameters_page()
    for name in PARAMS:
        assert f"| `{name}` |" in page, name
    # the default shown is the dataclass's, and so is the comment
    row = next(line for line in page.splitlines() if line.startswith("| `upcycle` |"))
    assert f"`{TrainConfig.upcycle!r}`" in row and "Sparse upcycling" in row


def test_every_command_is_in_the_cli_reference():
    from automoe.cli import build_parser

    page = hooks.cli_page()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        assert f"## automoe {name}\n" in page and f"usage: automoe {name}" in page, name


def test_field_comments_read_the_line_and_the_block_above():
    from dataclasses import dataclass

    @dataclass
    class Example:
        a: int = 1  # on the line
        # above, first line
        # and the second
        b: float = 2.0
        # --- a section header is not a field's comment
        c: str = "x"

    assert hooks.field_comments(Example) == {"a": "on the line",
                                             "b": "above, first line and the second",
                                             "c": ""}


def test_the_readme_session_is_the_guides_without_the_guide_only_commands():
    import re

    import regenerate

    def session(path):
        text = (REPO / path).read_text()
        return re.search(r"<!-- example:loop -->\n```\n(.*?)\n```\n<!-- /example:loop -->",
                         text, re.S).group(1)

    guide, readme = session("docs/guides/loop.md"), session("README.md")
    assert readme == regenerate.shorter(guide)
    assert "$ automoe status" in guide and "$ automoe status" not in readme
