"""Where spaces are found by name: ``./search_spaces``, then the shipped ones.

The shipped spaces live inside the package (``automoe/space/shipped``), so a wheel carries
them; the checkout's top-level ``search_spaces`` is a link to that folder, one copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from automoe.errors import ConfigError

_SUFFIXES = (".yaml", ".yml")
SHIPPED = Path(__file__).resolve().parent / "shipped"  # the spaces that come with automoe


def space_folders() -> list[Path]:
    """The folders searched for a space name, first match wins: ``./search_spaces``, then
    the spaces shipped inside the package."""
    return [Path.cwd() / "search_spaces", SHIPPED]


def resolve_space_path(space: str | os.PathLike[str]) -> Path:
    """A space given as a file path, or as a name in one of :func:`space_folders`.

    Raises:
        ConfigError: no such file or name.
    """
    path = Path(space)
    if path.suffix in _SUFFIXES or path.exists():
        if not path.exists():
            raise ConfigError(f"search space file {str(path)!r} does not exist")
        return path
    found = list_spaces().get(str(space))
    if found is None:
        raise ConfigError(f"no search space named {str(space)!r} in ./search_spaces; pass a "
                          "YAML file path")
    return found


def list_spaces() -> dict[str, Path]:
    """Every space reachable by name -> its file (a name in ``./search_spaces`` hides a
    shipped one)."""
    seen: dict[str, Path] = {}
    for folder in space_folders():
        if folder.is_dir():
            for path in sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES):
                seen.setdefault(path.stem, path)
    return seen
