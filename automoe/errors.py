"""Exceptions that describe a problem with the user's input or environment.

The CLI prints any :class:`AutomoeError` as a single line (no traceback unless
``--debug``) and exits non-zero; every other exception is a bug.
"""

from __future__ import annotations

__all__ = [
    "AutomoeError",
    "ConfigError",
    "DataError",
    "InputShapeError",
    "StorageError",
    "TrainingDivergedError",
]


class AutomoeError(Exception):
    """Base class of errors that are reported to the user as one line."""


class ConfigError(AutomoeError, ValueError):
    """An invalid search space, model config, layer argument or command-line value (a
    ``ValueError`` too, as an invalid argument is)."""


class DataError(AutomoeError):
    """A dataset that cannot be found or read."""


class StorageError(AutomoeError):
    """A study storage URL that cannot be used, or a study that cannot be opened."""


class InputShapeError(AutomoeError, ValueError):
    """An input whose channels or size differ from what the model was built for."""


class TrainingDivergedError(AutomoeError):
    """The training loss became NaN or infinite."""


def exception_chain(exc: BaseException | None):
    """``exc``, then what caused it (``__cause__``, else ``__context__``), and so on, each
    once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
