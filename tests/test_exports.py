"""Every name a package's ``__all__`` lists resolves: ``from automoe.x import *`` works."""

import importlib
import pkgutil

import pytest

import automoe


def _packages() -> list[str]:
    names = ["automoe"]
    for info in pkgutil.walk_packages(automoe.__path__, "automoe."):
        if info.ispkg:
            names.append(info.name)
    return names


@pytest.mark.parametrize("package", _packages())
def test_every_name_in_all_resolves(package):
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", [])
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ lists names it does not have: {missing}"
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # noqa: S102 - the statement under test
    assert set(exported) <= set(namespace)


def test_the_packages_are_found():
    # so that the test above cannot pass by finding nothing
    assert {"automoe.search", "automoe.results", "automoe.storage"} <= set(_packages())
