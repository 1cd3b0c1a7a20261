"""Ops that run eagerly inside ``torch.compile``d models."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

_DISABLED: dict[Callable, Callable] = {}


def eager_under_compile(fn: Callable) -> Callable:
    """``fn``, run eagerly when called from code that ``torch.compile`` traces.

    The sparse dispatch gives each expert a sample count that changes every batch;
    compiled, it would recompile until every count had been seen. ``torch.compiler.disable``
    as a decorator would import the compiler with this module (seconds per process), so
    the disabled twin is made on the first call that happens while compiling.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if fn not in _DISABLED:  # a graph break once; later traces skip the call
            _DISABLED[fn] = torch.compiler.disable(fn)
        return _DISABLED[fn](*args, **kwargs)

    return wrapper
