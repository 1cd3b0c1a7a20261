"""``--config FILE``: a TOML file of flags, for one command or several."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from automoe.errors import ConfigError


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  argv: list[str]) -> list[str]:
    """Fill ``args`` from the ``--config`` TOML file: command line > file > defaults.

    One file serves several commands. Top-level keys go to every command that has the
    flag; a table named after a command (``[worker]``, ``[search]``) holds keys for that
    command alone. Returns the top-level keys skipped because they are flags of another
    command only; a key no command knows is an error.
    """
    path = Path(args.config)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    hidden = ("config", "help", "debug")

    def flags(command: str) -> dict[str, argparse.Action]:
        return {a.dest: a for a in sub.choices[command]._actions
                if a.option_strings and a.dest not in hidden}

    actions = flags(args.command)
    anywhere = {dest for command in sub.choices for dest in flags(command)}
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for name in tables:
        if name not in sub.choices:
            raise ConfigError(f"{path}: [{name}]: not an automoe command; tables are named "
                              f"after one ({', '.join(sorted(sub.choices))})")
    chosen: dict = {}
    skipped = []
    for key, value in values.items():
        if isinstance(value, dict):
            continue
        dest = key.replace("-", "_")
        if dest in actions:
            chosen[key] = value
        elif dest in anywhere:
            skipped.append(key)
        else:
            raise ConfigError(f"{path}: {key}: not a flag of any automoe command")
    for key, value in tables.get(args.command, {}).items():
        if key.replace("-", "_") not in actions:
            allowed = sorted(d.replace("_", "-") for d in actions)
            raise ConfigError(f"{path}: [{args.command}] {key}: not a flag of `automoe "
                              f"{args.command}`; expected one of {', '.join(allowed)}")
        chosen[key] = value
    for key, value in chosen.items():
        action = actions[key.replace("-", "_")]
        if any(arg == opt or arg.startswith(opt + "=") for arg in argv
               for opt in action.option_strings):
            continue  # given on the command line
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f"{path}: {key}: {value!r} is not one of "
                              f"{', '.join(map(str, action.choices))}")
        if action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}: invalid value {value!r}") from None
        elif isinstance(action.const, bool) and not isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: must be true or false, got {value!r}")
        setattr(args, action.dest, value)
    return skipped
