"""The parser's pieces: one-line usage errors, help defaults, and every shared flag,
declared once and added to a command by naming its group."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from automoe.cli._output import print_error
from automoe.results import KEEP


class LazyChoices:
    """A flag's choices read from a library table when first needed (checking a value, or
    printing that command's help), so that building the parser loads no library module
    (``automoe --help`` and the commands that read a study start without torch). Tables
    that plug-ins extend (samplers, executors) are read at parse time, after them.

    Give the flag a ``metavar``: argparse formats the choices of one without it as soon as
    the flag is added."""

    def __init__(self, table):
        self._table = table  # () -> an iterable of the choices

    def __iter__(self):
        return iter(list(self._table()))

    def __contains__(self, value) -> bool:
        return value in list(self._table())

    def __len__(self) -> int:
        return len(list(self._table()))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not where its help already states one, nor for
    defaults that say nothing (None, False)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str):
        print_error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def _group() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


@dataclass(frozen=True)
class Flags:
    """The shared flag groups, each a parent parser a command lists."""

    common: argparse.ArgumentParser  # --debug, -q, -v: every command
    storage: argparse.ArgumentParser  # --storage, --study, --artifact-dir
    config: argparse.ArgumentParser  # --config TOML
    running: argparse.ArgumentParser  # --keep, --threads, --heartbeat: how trials run
    data: argparse.ArgumentParser  # --data-root, --download
    device: argparse.ArgumentParser  # --device
    json: argparse.ArgumentParser  # --json


def shared_flags() -> Flags:
    common = _group()
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="also show Optuna's log (trial results, sampler notes)")

    storage = _group()
    storage.add_argument("--storage", default=None, metavar="URL",
                         help="SQLAlchemy URL of the study DB (default: sqlite:///studies/automoe.db)")
    storage.add_argument("--study", default=None, metavar="NAME",
                         help="study name (search: the space's name; others: the only study, "
                              "or the one that ran a trial last)")
    storage.add_argument("--artifact-dir", default=None, metavar="DIR",
                         help="where trial checkpoints are stored (default: artifacts/ beside "
                              "a SQLite DB, else studies/artifacts)")

    config = _group()
    config.add_argument("--config", default=None, metavar="TOML",
                        help="a saved study config (e.g. studies/x.toml): its keys are this "
                             "command's flags (`trials = 50`, `data-root = \"/data\"`); flags "
                             "given on the command line win")

    running = _group()
    running.add_argument("--keep", choices=KEEP, default="pareto",
                         help="checkpoints to keep: those of Pareto-front trials (removed once "
                              "dominated) or all")
    running.add_argument("--threads", type=int, default=None, metavar="N",
                         help="torch CPU threads (default: torch's choice, all cores); with "
                              "several workers on one machine give each cores/workers, or they "
                              "slow each other down many times over")
    running.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                         help="trial heartbeat; a trial silent for 3 beats is failed and "
                              "retried (0: off)")

    data = _group()
    data.add_argument("--data-root", default=None, metavar="DIR",
                      help="folder holding the dataset files (not needed for digits)")
    data.add_argument("--download", action="store_true",
                      help="let torchvision download a missing dataset into --data-root")

    device = _group()
    device.add_argument("--device", default="auto",
                        help="torch device: auto, cpu, cuda, cuda:1, ...")

    json = _group()
    json.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return Flags(common, storage, config, running, data, device, json)


class Commands:
    """Adds commands to the parser: ``add(name, fn, groups, help)``, with the description
    taken from the command's docstring."""

    def __init__(self, subparsers, flags: Flags):
        self._sub = subparsers
        self.flags = flags

    def add(self, name: str, fn, parents: list, help_text: str) -> argparse.ArgumentParser:
        parser = self._sub.add_parser(name, parents=parents, help=help_text,
                                      description=fn.__doc__, formatter_class=HelpFormatter)
        parser.set_defaults(func=fn)
        return parser


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def verify_budget(parser: argparse.ArgumentParser, prefix: str) -> None:
    """The strong attacks' budget: ``--steps``/``--restarts`` (or ``--verify-...``)."""
    parser.add_argument(f"--{prefix}steps", type=int, default=50, metavar="N",
                        help="steps of each verifying attack")
    parser.add_argument(f"--{prefix}restarts", type=int, default=2, metavar="N",
                        help="random restarts of each verifying attack")
    parser.add_argument(f"--{prefix}jobs", type=positive_int, default=None, metavar="N",
                        help="trials attacked at once, each in its own process with its "
                             "share of the threads (default: on the CPU one per thread, "
                             "on a GPU 1)")
