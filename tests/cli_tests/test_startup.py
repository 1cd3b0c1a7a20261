"""Commands that only read a study start without torch, the models or plotting."""

import subprocess
import sys

import pytest

from tests.cli_tests.conftest import TINY_SPACE, run_cli

_HEAVY = ("torch", "matplotlib", "plotly")


def _loaded_after(argv: list[str], cwd) -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter; its exit code and the heavy modules it loaded."""
    code = ("import sys; from automoe.cli import main; rc = main(sys.argv[1:]); "
            f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {set(_HEAVY)!r})); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("LOADED")]
    assert lines, proc.stderr[-2000:]
    line = lines[-1]
    return proc.returncode, eval(line.split(" ", 1)[1])


def test_importing_the_cli_loads_no_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, automoe.cli; "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                          f"{_HEAVY!r}))"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("startup")
    (work / "tiny.yaml").write_text(TINY_SPACE)
    run_cli("search", "--space", "tiny.yaml", "--trials", "2", "--no-verify", "-q",
            cwd=work, check=0)
    return work


@pytest.mark.parametrize("argv", [["--help"], ["pareto", "--json"], ["pareto", "--csv"],
                                  ["status", "--once"], ["studies"], ["search", "--help"]])
def test_reading_commands_start_without_torch(study, argv):
    rc, heavy = _loaded_after(argv, study)
    assert rc == 0 and heavy == []


def test_a_command_that_parses_spaces_still_loads_what_it_needs(study):
    # the check above can fail: `spaces` validates every shipped space, which needs the
    # model and training configs
    rc, heavy = _loaded_after(["spaces"], study)
    assert rc == 0 and "torch" in heavy
