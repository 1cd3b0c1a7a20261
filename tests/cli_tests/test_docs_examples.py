"""The README and the docs are a contract: their example space, config files, Python
snippets, command table and command lines are run or checked against the real program."""

import argparse
import re
import tomllib
from pathlib import Path

import yaml

from automoe.cli import build_parser
from automoe.space import SearchSpace

from .conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
# every page a reader sees: the README, then the docs' pages in a fixed order
PAGES = {"README.md": README, **{str(p.relative_to(REPO)): p.read_text()
                                 for p in sorted((REPO / "docs").rglob("*.md"))}}


def _blocks(lang: str, page: str | None = None) -> list[str]:
    """The ``lang`` code blocks of one page, or of every page."""
    texts = [PAGES[page]] if page else PAGES.values()
    return [b for text in texts for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def test_the_docs_have_pages_and_blocks():
    # a guard for the tests below: they find their blocks where the pages are
    assert "docs/guides/loop.md" in PAGES and "docs/guides/python-api.md" in PAGES
    assert len(_blocks("bash")) >= 8 and len(_blocks("python")) >= 2


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_example_space_is_valid():
    (block,) = _blocks("yaml")
    space = SearchSpace.from_dict(yaml.safe_load(block), source="README")
    assert space.fidelity is not None and space.constraints == {"mmacs_max": 2.5}


def _number(text) -> float:
    numerator, _, denominator = str(text).partition("/")
    return float(numerator) / float(denominator or 1)


def _same(default, stated: str) -> bool:
    if str(default) == stated:
        return True
    try:
        return abs(_number(default) - _number(stated)) < 1e-12
    except ValueError:
        return False


def test_the_command_table_names_real_flags_with_their_real_defaults():
    commands = _commands()
    rows = re.findall(r"^\| `automoe (\w+)([^`]*)` \|", PAGES["docs/guides/loop.md"], re.M)
    assert len(rows) >= 15
    checked = 0
    for command, rest in rows:
        assert command in commands, command
        actions = {opt: a for a in commands[command]._actions for opt in a.option_strings}
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", rest):
            assert flag in actions, f"automoe {command}: no flag {flag}"
        # `[--flag VALUE]` with a literal value states the default
        for flag, value in re.findall(r"\[(--[a-z][a-z0-9-]*) ([0-9][0-9./]*|127\.0\.0\.1)\]",
                                      rest):
            default = actions[flag].default
            assert _same(default, value), (
                f"automoe {command} {flag}: the docs say {value}, the default is {default}")
            checked += 1
    assert checked >= 5


def test_the_plugin_entry_point_names_the_group_automoe_reads():
    from automoe.search._samplers import ENTRY_POINT_GROUP

    (block,) = [b for b in _blocks("toml") if "entry-points" in b]
    assert ENTRY_POINT_GROUP in tomllib.loads(block)["project"]["entry-points"]


def test_one_config_file_drives_search_and_worker(workdir):
    (block,) = [b for b in _blocks("toml") if "[worker]" in b]  # not the entry-point one
    values = tomllib.loads(block)
    assert {"space", "trials", "worker"} <= set(values)
    (workdir / "x.toml").write_text(block)
    url = f"sqlite:///{workdir / 'c.db'}"
    # the machine-specific values (PostgreSQL, a CIFAR space and its data) are overridden
    # on the command line, which wins over the file; the rest comes from the file
    search = run_cli("search", "--config", "x.toml", "--space", "tiny.yaml", "--storage", url,
                     "--trials", "2", "--study", "readme", "--threads", "1", "--no-verify",
                     cwd=workdir, check=0)
    assert "automoe: note: x.toml" not in search.stderr  # every top-level key is search's
    worker = run_cli("worker", "--config", "x.toml", "--storage", url, "--study", "readme",
                     "--until", "3", "--threads", "1", "-q", cwd=workdir, check=0)
    assert worker.returncode == 0
    # without --until on the command line, the [worker] table gives it (100 trials here:
    # not run); a missing one is asked for in one line
    (workdir / "no-until.toml").write_text('threads = 1\n')
    proc = run_cli("worker", "--config", "no-until.toml", "--storage", url, cwd=workdir)
    assert proc.returncode == 2 and "--until" in proc.stderr and proc.stderr.count("\n") == 1
    (workdir / "typo.toml").write_text('trails = 3\n')
    proc = run_cli("search", "--config", "typo.toml", cwd=workdir)
    assert proc.returncode == 1 and "trails: not a flag of any automoe command" in proc.stderr


def test_the_python_api_snippet_runs(workdir):
    snippet = _blocks("python", "docs/guides/python-api.md")[0]
    run_cli("search", "--space", "tiny.yaml", "--trials", "1", "--no-verify", "-q",
            cwd=workdir, check=0)
    run_cli("export", "--trial", "0", "--out", "exports/trial-5", cwd=workdir, check=0)
    # lines that need a dataset folder are left out
    code = "\n".join(line for line in snippet.splitlines() if "root=" not in line)
    assert "automoe.load(" in code and "create_model(" in code
    import os

    here = os.getcwd()
    try:
        os.chdir(workdir)
        exec(compile(code, "python-api.md", "exec"), {})
    finally:
        os.chdir(here)


def test_the_run_search_snippet_runs(workdir):
    snippet = _blocks("python", "docs/guides/python-api.md")[1]
    assert "run_search(" in snippet and 'executor="processes"' in snippet
    # the tiny space, two trials, in this process (the snippet's two worker processes are
    # the workers tests' subject)
    code = (snippet.replace('resolve_space_path("default")', 'resolve_space_path("tiny.yaml")')
            .replace("trials=12", "trials=2")
            .replace('ClusterConfig(executor="processes", workers=2)', "ClusterConfig()"))
    import os

    here = os.getcwd()
    try:
        os.chdir(workdir)
        scope = {}
        exec(compile(code, "python-api.md", "exec"), scope)
        assert len(scope["study"].trials) >= 2 and scope["study"].study_name == "tiny"
    finally:
        os.chdir(here)


def test_every_command_has_help():
    for name, command in _commands().items():
        assert f"usage: automoe {name}" in command.format_help()


def test_every_documented_command_line_parses():
    import shlex

    parser = build_parser()
    lines = []
    example = README.split("<!-- example:loop -->")[1].split("<!-- /example:loop -->")[0]
    for block in [*_blocks("bash"), example]:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("automoe ") and "[" not in line:  # not a usage synopsis
                lines.append(line.split("  #")[0].split(" # ")[0])
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"docs: `{line}` does not parse") from exc
