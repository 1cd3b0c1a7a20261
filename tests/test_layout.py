"""The package's structure, measured from its source: layers, cycles, fronts, sizes."""

import ast
import re
from pathlib import Path

import automoe

PACKAGE = Path(automoe.__file__).parent
REPO = PACKAGE.parent
# bottom to top: a package may import only those at or below its own floor
FLOORS = {"errors": 0, "kernels": 1, "ops": 2, "data": 2, "layers": 3, "models": 4,
          "robustness": 4, "training": 5, "storage": 5, "space": 6, "results": 7, "search": 8,
          "export": 9, "cli": 10, "_lazy": 0}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(path: Path, top_level: bool):
    """``(line, imported automoe module)`` of the file's imports: those at module level, or
    those inside functions."""
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
             for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or (id(node) in inner) == top_level:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:  # `from package import submodule` depends on the submodule, not the front
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in subs if n in MODULES]
            if len(names) < len(subs):
                names.append(node.module or "")
        for name in names:
            if name in MODULES:
                yield node.lineno, name


def test_no_import_cycles():
    graph = {m: {name for _, name in _imports(p, top_level=True) if name != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module, stack):
        state[module] = 1
        for other in graph[module]:
            if state.get(other) == 1:
                cycle = stack[stack.index(other):] + [other]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, stack + [other])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_lower_floors_never_import_upper_ones():
    wrong = []
    for module, path in MODULES.items():
        parts = module.split(".")
        if len(parts) < 2:
            continue
        floor = FLOORS[parts[1]]
        for line, name in _imports(path, top_level=True):
            if name != "automoe" and FLOORS[name.split(".")[1]] > floor:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert wrong == []


def test_imports_inside_functions_say_why():
    # only optional extras and deferred heavy modules, each with a comment above it
    silent = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                i = node.lineno - 2
                while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
                    i -= 1  # a block of imports shares one comment
                above = lines[i].strip() if i >= 0 else ""
                if not (above.startswith("#") or above.startswith("try:") and "#" in above):
                    silent.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert sorted(set(silent)) == []


def test_modules_stay_readable_in_length():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_cli_and_export_use_package_fronts_only():
    # a front: automoe.<package>, or a subpackage's own front (automoe.search.supernet)
    fronts = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    behind = []
    for module, path in MODULES.items():
        own = ".".join(module.split(".")[:2])
        if own not in ("automoe.cli", "automoe.export"):
            continue
        for line, name in _imports(path, top_level=True):
            if not name.startswith(own) and name not in fronts and name not in (
                    "automoe.errors", "automoe._lazy"):
                behind.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert behind == []


def test_the_documented_layout_names_every_package():
    guide = (REPO / "docs" / "guides" / "development.md").read_text()
    layout = guide.split("## Layout", 1)[1].split("```")[1]
    listed = set(re.findall(r"^(automoe/[\w/]+/)", layout, re.M))
    packages = {f"{p.parent.relative_to(REPO)}/" for p in PACKAGE.rglob("*/__init__.py")}
    assert listed == packages


def test_the_trial_orchestrates_only():
    trial = PACKAGE / "search" / "_trial.py"
    assert len(trial.read_text().splitlines()) <= 150


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_run_search_is_the_only_way_to_run_trials():
    # the product and the benchmarks: run_trials is called by the module of run_search only
    callers = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "bench").glob("*.py"), REPO / "cli.py"]:
        for line in _calls(path, "run_trials"):
            callers.append(f"{path.relative_to(REPO)}:{line}")
    assert callers and all(c.startswith("automoe/search/_run.py:") for c in callers), callers


_PLOTTING = ("matplotlib", "plotly", "automoe.results._plots")


def test_plotting_is_imported_only_by_results():
    wrong = []
    for module, path in MODULES.items():
        if module.startswith("automoe.results"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(_PLOTTING) for n in names):
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert wrong == []


def test_running_a_trial_loads_no_plotting():
    # a worker imports the trial and runs it: plotting loads only where a heatmap is drawn
    import subprocess
    import sys

    code = ("import sys, automoe.search._trial, automoe.search._workers; "
            f"print(sorted(m for m in sys.modules if m.startswith({_PLOTTING!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_no_bench_touches_user_attrs():
    # benchmarks read and write trials through the record (automoe.results.TrialRecord)
    touching = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "bench").glob("*.py")
                for i, line in enumerate(p.read_text().splitlines(), 1)
                if "user_attr" in line]
    assert touching == []


def test_results_are_cited_by_file_and_the_section_exists():
    # A citation names a results or decisions file that exists, and a quoted section after
    # it is a heading of that file; the index (bench/RESULTS.md) is never cited for a figure.
    cited = re.compile(r'((?:bench/results/[\w]+|docs/decisions/[\w-]+)\.md)(?:,\s*"([^"]+)")?')
    sources = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.yaml"),
               *(REPO / "docs" / "guides").glob("*.md")]
    found = 0
    for path in sources:
        # comments wrap: read the text with comment markers and line breaks folded away
        text = re.sub(r"\n\s*#\s*", " ", path.read_text())
        text = re.sub(r"/\s+", "/", text)  # a path broken after a slash
        assert "bench/RESULTS.md" not in text, f"{path.name} cites the index, not a file"
        for file, section in cited.findall(text):
            target = REPO / file
            assert target.is_file(), f"{path.name} cites {file}, which does not exist"
            if section:
                headings = [line.lstrip("#").strip() for line in target.read_text().splitlines()
                            if line.startswith("#")]
                assert any(h.startswith(" ".join(section.split())) for h in headings), (
                    f"{path.name}: {file} has no section {section!r}")
            found += 1
    assert found >= 10
