"""Package fronts that import a name's module when the name is first used (PEP 562).

A command that only reads a study (``automoe pareto``, ``status``, ``--help``) then starts
without torch, the models or plotting: ``automoe.results.pareto_trials`` loads the Pareto
module alone, and ``automoe.results.verify_front`` loads torch when it is called for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_front(package: str, namespace: dict, exports: dict[str, str]
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map each public name to
    the submodule (relative to the package, e.g. ``"._pareto"``) that defines it.

    Only submodules of the package itself may be named, so a lazy name cannot hide an
    import across the package floors. A name, once loaded, is cached in ``namespace``.
    """
    for name, module in exports.items():
        if not module.startswith("."):
            raise ValueError(f"{package}.{name}: lazy exports name submodules ('.x'), got "
                             f"{module!r}")

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
