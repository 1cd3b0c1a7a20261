"""Command-line interface: ``automoe <command> ...`` (also ``python cli.py ...``).

One module per command group, each with its commands and their parsers: ``search``
(search, worker, verify), ``supernet`` (train, search, finalize), ``study`` (pareto,
studies, status, plot, dashboard), ``model`` (export, eval, robustness) and ``info``
(kernels, spaces). Shared flags are declared once in ``_parser``; ``_context`` holds what
several commands share and ``_output`` the consoles and tables. No library logic lives
here.
"""

from __future__ import annotations

import argparse
import os
import sys

from automoe import __version__
from automoe.cli import info, model, search, study, supernet
from automoe.cli._config import apply_config
from automoe.cli._output import print_error, print_note
from automoe.cli._parser import Commands, HelpFormatter, Parser, shared_flags
from automoe.errors import AutomoeError

__all__ = ["build_parser", "main"]

# flags a command needs, checked after --config is applied: (dest, flag)
_REQUIRED = {"worker": (("until", "--until"),)}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="automoe", description=__doc__.split("\n\n")[0],
                    formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"automoe {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND",
                                              parser_class=Parser), shared_flags())
    for group in (search, supernet, study, info, model):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "config", None):
            skipped = apply_config(parser, args, argv)
            if skipped and not args.quiet:
                print_note(f"{args.config}: {', '.join(skipped)} not used by "
                           f"`automoe {args.command}`")
        missing = [flag for dest, flag in _REQUIRED.get(args.command, ())
                   if getattr(args, dest) is None]
        if missing:  # required, but a --config file may give them: checked after it
            print_error(f"the following arguments are required: {', '.join(missing)} (on "
                        "the command line or in --config)")
            return 2
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BrokenPipeError:
        # the reader went away (`automoe pareto --json | head`): end quietly, as a program
        # killed by SIGPIPE would, and keep the interpreter's final flush from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        if debug:
            raise
        print_error("interrupted")
        return 130
    except AutomoeError as exc:
        if debug:
            raise
        print_error(str(exc))
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print_error(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for the "
                    "traceback)")
        return 1
