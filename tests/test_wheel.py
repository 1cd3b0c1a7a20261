"""A wheel, installed outside the checkout, searches from an empty folder.

The editable install hides packaging mistakes (a data file left out of the wheel is still
found in the source tree), so this builds the wheel, installs it into a fresh virtual
environment and runs the CLI where no ``search_spaces/`` folder exists. The environment
sees the system's packages for the dependencies (torch alone is gigabytes); the test
checks that ``automoe`` itself is imported from the wheel.
"""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import automoe

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, **kwargs):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(root / "dist"), str(REPO)], cwd=root)
    wheel, = (root / "dist").glob("automoe-*.whl")
    venv.create(root / "env", system_site_packages=True, with_pip=True)
    bin_dir = root / "env" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
         cwd=root)
    empty = root / "empty"
    empty.mkdir()
    return bin_dir, empty


def test_the_wheel_carries_the_shipped_spaces(installed):
    bin_dir, empty = installed
    where = _run([str(bin_dir / "python"), "-c", "import automoe; print(automoe.__file__)"],
                 cwd=empty).strip()
    assert Path(where).is_relative_to(bin_dir.parent), where  # not the checkout's
    assert _run([str(bin_dir / "automoe"), "--version"], cwd=empty).strip() == (
        f"automoe {automoe.__version__}")
    listing = _run([str(bin_dir / "automoe"), "spaces"], cwd=empty)
    shipped = sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))
    assert len(shipped) >= 7
    for name in shipped:
        assert name in listing


def test_the_wheel_searches_from_an_empty_folder(installed):
    bin_dir, empty = installed
    out = _run([str(bin_dir / "automoe"), "search", "--trials", "2", "--no-verify", "--quiet"],
               cwd=empty)
    assert (empty / "studies").is_dir()
    assert any(p.suffix == ".db" for p in (empty / "studies").iterdir()), out
