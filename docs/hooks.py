"""MkDocs hook: the reference pages are generated from the code on every build.

- ``reference/parameters.md``: every parameter a space may set under ``params``, read from
  the space schema's table (``automoe.space.PARAMS``, itself derived from the model and
  training config dataclasses): its config, type, default and the comment written beside
  the field in the dataclass.
- ``reference/cli.md``: every command's ``--help``, from the CLI's parser.

Nothing here is typed by hand, so the pages cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import re
import textwrap
import tokenize

from mkdocs.structure.files import File


def field_comments(config_class: type) -> dict[str, str]:
    """``field -> comment`` of a dataclass: the comment on the field's line, or else the
    block of comment lines right above it."""
    source = textwrap.dedent(inspect.getsource(config_class))
    comments: dict[str, str] = {}
    above: list[str] = []
    line_comment: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line_comment[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            above = [] if text.startswith("---") else [*above, text]
            continue
        match = re.match(r"^\s{4}(\w+)\s*:", line)
        if match and not stripped.startswith(("def ", "@")):
            comments[match.group(1)] = line_comment.get(number) or " ".join(above)
        above = []
    return comments


def _type_name(value_type: type) -> str:
    return getattr(value_type, "__name__", str(value_type))


def parameters_page() -> str:
    from automoe.models import MoENetConfig
    from automoe.space import MOE_PARAMS, PARAMS
    from automoe.training import TrainConfig

    classes = {"model": MoENetConfig, "train": TrainConfig}
    defaults = {target: {f.name: f.default for f in dataclasses.fields(cls)}
                for target, cls in classes.items()}
    notes = {target: field_comments(cls) for target, cls in classes.items()}
    lines = [
        "# Space parameters",
        "",
        "Every key a space may set under `params:`, fixed (`lr: 0.05`) or searched "
        "(`lr: {low: 0.02, high: 0.2, log: true}`, `placement: {choices: [...]}`). Generated "
        "from the model config (`MoENetConfig`) and the training config (`TrainConfig`) on "
        "every build of these pages. *MoE only*: ignored, and recorded as unused, in a trial "
        "whose placement has no MoE unit. Backbones add their own fields (see "
        "[Models](../guides/models.md)).",
        "",
        "| parameter | sets | type | default | MoE only | what it is |",
        "|---|---|---|---|---|---|",
    ]
    for name, (target, field_name, value_type) in PARAMS.items():
        default = defaults[target].get(field_name, "")
        note = notes[target].get(field_name, "").replace("|", "\\|")
        lines.append(f"| `{name}` | {target}.{field_name} | {_type_name(value_type)} | "
                     f"`{default!r}` | {'yes' if name in MOE_PARAMS else ''} | {note} |")
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    from automoe.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["# Command line", "",
             "Every `automoe` command's `--help`, generated from the CLI's parser on every "
             "build of these pages.", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in sub.choices.items():
        lines += [f"## automoe {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


# Packages of the API reference, bottom to top (the CLI is in the command-line page).
API_PACKAGES = ("automoe", "automoe.data", "automoe.ops", "automoe.layers", "automoe.models",
                "automoe.training", "automoe.robustness", "automoe.space", "automoe.search",
                "automoe.results", "automoe.storage", "automoe.export")


def api_page() -> str:
    """One section per package: each public class and function, documented from its
    docstring where it is defined (the packages export lazily, which static analysis
    cannot follow, so the hook resolves each name once)."""
    import importlib

    lines = ["# Python API", "",
             "The public names of each package, from their docstrings (generated on every "
             "build of these pages). Import them from the package: `from automoe.search "
             "import run_search`.", ""]
    for package_name in API_PACKAGES:
        package = importlib.import_module(package_name)
        names = [n for n in getattr(package, "__all__", []) if not n.startswith("_")]
        objects = [(n, getattr(package, n)) for n in sorted(names)]
        objects = [(n, o) for n, o in objects
                   if (inspect.isclass(o) or inspect.isfunction(o))
                   and o.__module__.startswith("automoe")]
        if not objects:
            continue
        summary = (package.__doc__ or "").strip().split("\n\n")[0]
        lines += [f"## `{package_name}`", "", summary, ""]
        for name, obj in objects:
            lines += [f"::: {obj.__module__}.{obj.__qualname__}",
                      "    options:",
                      "      heading_level: 3",
                      f"      toc_label: {name}",
                      ""]
    return "\n".join(lines)


def on_files(files, config):
    for path, page in (("reference/parameters.md", parameters_page),
                       ("reference/cli.md", cli_page), ("reference/api.md", api_page)):
        files.append(File.generated(config, path, content=page()))
    return files
