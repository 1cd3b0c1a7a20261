"""Does the MoE space pay? A space against its dense-only twin, same trial budget.

    python bench/space_vs_dense.py [--space default] [--seeds 0 1 2] [--trials 12]

For each study seed, runs ``automoe search`` twice from the command line, as a user would:
on the space, and on its dense-only twin (the same file with ``placement: none``, every
other field equal, so MoE fields are sampled but have no effect). Each study verifies its
front (the default search does). Then, per seed, the hypervolume of each front on
(val accuracy %, active MMACs, verified robust accuracy %) against one reference point
for both (val 0, 1.1 x the largest MMACs of either front, robust 0), and the paired
difference space - dense. Also printed: the front's best val accuracy and best verified
robust accuracy, and how many front trials are MoE.

Results are read through ``automoe pareto --json``, the same record users read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from automoe.results import study_hypervolume
from automoe.space import resolve_space_path

REPO = Path(__file__).resolve().parent.parent
NAMES = ("val_accuracy", "mmacs", "robust_accuracy")


def dense_twin_space(space: Path, folder: Path) -> Path:
    """The space file with ``placement: none`` and its own study name."""
    raw = yaml.safe_load(space.read_text())
    raw["name"] = f"{raw['name']}-dense"
    raw["params"]["placement"] = "none"
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_study(space: Path, seed: int, trials: int, folder: Path, threads: int) -> tuple[list, float]:
    """The verified front rows of a fresh study, and the search's wall seconds."""
    storage = f"sqlite:///{folder / f'{space.stem}-{seed}.db'}"
    common = ["--storage", storage, "--artifact-dir", str(folder / f"art-{space.stem}-{seed}")]
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "cli.py"), "search", "--space", str(space),
                    "--seed", str(seed), "--trials", str(trials), "--threads", str(threads),
                    "-q", *common], check=True)
    seconds = time.perf_counter() - start
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "pareto", "--json", *common],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out), seconds


def front_points(rows: list[dict]) -> list[tuple[float, float, float]]:
    """(val %, MMACs, verified robust %) of each front trial."""
    return [(row["values"]["val_accuracy"], row["values"]["mmacs"],
             row["robust_accuracy_verified"]) for row in rows]


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):,.1f} ± {spread:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=None, help="default: the space's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="folder for the studies (default: temp)")
    args = parser.parse_args()
    console = Console(width=160)
    space = resolve_space_path(args.space)
    trials = args.trials or yaml.safe_load(space.read_text())["trials"]
    with tempfile.TemporaryDirectory(prefix="automoe-space-vs-dense-") as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        dense_space = dense_twin_space(space, folder)
        rows = []
        for seed in args.seeds:
            moe_rows, moe_s = run_study(space, seed, trials, folder, args.threads)
            dense_rows, dense_s = run_study(dense_space, seed, trials, folder, args.threads)
            moe_pts, dense_pts = front_points(moe_rows), front_points(dense_rows)
            reference = (0.0, 1.1 * max(p[1] for p in moe_pts + dense_pts), 0.0)
            rows.append({
                "seed": seed, "hv_space": study_hypervolume(moe_pts, reference, NAMES),
                "hv_dense": study_hypervolume(dense_pts, reference, NAMES),
                "moe_on_front": sum(r["moe"] for r in moe_rows), "front": len(moe_rows),
                "best_val": (max(p[0] for p in moe_pts), max(p[0] for p in dense_pts)),
                "best_robust": (max(p[2] for p in moe_pts), max(p[2] for p in dense_pts)),
                "seconds": (moe_s, dense_s)})
            console.print(rows[-1])
    table = Table(title=f"{space.stem} space against its dense-only twin, {trials} trials "
                        f"per study, study seeds {', '.join(map(str, args.seeds))}; "
                        "hypervolume on val % x MMACs x verified robust %",
                  title_justify="left")
    for col in ("seed", "HV space", "HV dense twin", "space - dense", "MoE on front",
                "best val % (space / dense)", "best verified robust % (space / dense)",
                "search s (space / dense)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["seed"]), f"{r['hv_space']:,.1f}", f"{r['hv_dense']:,.1f}",
                      f"{r['hv_space'] - r['hv_dense']:+,.1f}",
                      f"{r['moe_on_front']} of {r['front']}",
                      "{:.2f} / {:.2f}".format(*r["best_val"]),
                      "{:.2f} / {:.2f}".format(*r["best_robust"]),
                      "{:.0f} / {:.0f}".format(*r["seconds"]))
    diffs = [r["hv_space"] - r["hv_dense"] for r in rows]
    table.add_row("mean ± std", mean_std([r["hv_space"] for r in rows]),
                  mean_std([r["hv_dense"] for r in rows]), mean_std(diffs), "", "", "", "")
    console.print(table)
    console.print("Each seed's reference point: val 0, 1.1 x the largest MMACs of both "
                  "fronts, robust 0. The dense twin samples the same MoE fields, which "
                  "change nothing in a dense model.")


if __name__ == "__main__":
    main()
