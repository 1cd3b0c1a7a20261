"""A tabular benchmark of automoe's own default space: every configuration of a discretised
default space trained once per seed, with its learning curve and what each step cost.

    python bench/moe_table.py build [--seeds 2] [--limit N] [--threads 1]
    python bench/moe_table.py info

The table lets search strategies be compared over many seeds in minutes
(``bench/search_table.py``): a strategy "trains" a configuration by reading its row, and
is charged the seconds the row records for what it used.

**The grid** (the default space, ``search_spaces/default.yaml``, discretised; its recipe
as it is: upcycling at half the epochs, the same data, batch and attack):

- placement none, last_stage, last_two, all, 010; experts 2, 4, 6, 8; top_k 1, 2;
  width_multiplier 0.5, 0.75, 1.0; balance_weight 0.01, 0.3; lr 0.04, 0.12;
- epochs 8, the space's longest: the curve's prefix stands for fewer epochs, as in the
  public learning-curve tables;
- a dense placement ignores experts, top_k and balance_weight, so it is one configuration
  per width and lr: 384 MoE + 6 dense = 390 configurations, each for ``--seeds`` seeds.

**Each row** records per epoch: val accuracy and the seconds of that epoch's training and
of its val pass; at epochs 2, 4 and 6, robust accuracy under the space's proxy attack at
two cheap fidelities (PGD with 1 and 3 steps), and at epoch 8 at three (PGD-1, PGD-3 and
PGD-10, the space's own), with the seconds of each; once, the active MMACs (router
included) and parameters (the first rows built also have PGD-10 at epochs 2, 4 and 6).
MoE rows mark the epochs of their dense phase (upcycling), whose twin depends on width, lr
and seed only.

**The build is a study** of the product (``run_search`` over a SQLite DB in
``studies/moe_table.db``): every (configuration, seed) is an enqueued trial, so a stopped
build resumes where it stopped, and each finished trial is written into the compressed
table (``bench/tables/moe_digits.json.gz``, temp file then rename). A build whose DB is
gone (a fresh checkout) enqueues only what the table lacks.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402
from rich.progress import Progress  # noqa: E402

from automoe.models import count_flops, count_params  # noqa: E402
from automoe.results import TrialRecord, TrialWriter, enqueue_table_run  # noqa: E402
from automoe.robustness import robust_accuracy  # noqa: E402
from automoe.search import create_or_resume_study, run_search  # noqa: E402
from automoe.space import SearchSpace, resolve_space_path  # noqa: E402
from automoe.storage import atomic_write, open_storage  # noqa: E402
from automoe.training import evaluate_accuracy, train  # noqa: E402

TABLE = ROOT / "bench" / "tables" / "moe_digits.json.gz"
STUDY_DB = ROOT / "studies" / "moe_table.db"
GRID = {
    "placement": ["none", "last_stage", "last_two", "all", "010"],
    "experts": [2, 4, 6, 8],
    "top_k": [1, 2],
    "width_multiplier": [0.5, 0.75, 1.0],
    "balance_weight": [0.01, 0.3],
    "lr": [0.04, 0.12],
}
MOE_ONLY = ("experts", "top_k", "balance_weight")  # ignored by a dense placement
EPOCHS = 8
ROBUST_EPOCHS = (2, 4, 6, 8)  # 6: two epochs after an upcycled MoE leaves its dense phase
ROBUST_STEPS = (1, 3, 10)  # PGD steps: the last is the space's proxy
# the proxy itself (PGD-10, as long as training an epoch here) only where a search reads
# it, at the last epoch; the cheap fidelities at every robust epoch (rungs read them)
STEPS_AT = {epoch: ROBUST_STEPS if epoch == EPOCHS else ROBUST_STEPS[:-1]
            for epoch in ROBUST_EPOCHS}


def configurations() -> list[dict]:
    """The grid, a dense placement once per width and lr (its MoE fields at the first
    value, which it ignores)."""
    configs, seen = [], set()
    for values in itertools.product(*GRID.values()):
        config = dict(zip(GRID, values, strict=True))
        if config["placement"] == "none":
            config.update({name: GRID[name][0] for name in MOE_ONLY})
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            configs.append(config)
    return configs


def table_space() -> SearchSpace:
    """The default space with the grid's values as its choices and the epochs fixed."""
    raw = SearchSpace.from_file(resolve_space_path("default")).raw
    params = {**raw["params"], **{k: {"choices": v} for k, v in GRID.items()},
              "epochs": EPOCHS}
    return SearchSpace.from_dict({**raw, "name": "moe_table", "params": params},
                                 source="bench/moe_table.py")


def read_table(path: Path = TABLE) -> list[dict]:
    if not path.exists():
        return []
    with gzip.open(path, "rt") as f:
        return json.load(f)["rows"]


def write_table(rows: list[dict], path: Path = TABLE) -> None:
    rows = sorted(rows, key=lambda r: (json.dumps(r["config"], sort_keys=True), r["seed"]))
    document = {"space": "search_spaces/default.yaml, discretised (bench/moe_table.py)",
                "grid": GRID, "epochs": EPOCHS, "robust_epochs": list(ROBUST_EPOCHS),
                "robust_steps": list(ROBUST_STEPS), "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, gzip.open(tmp, "wt") as f:
        json.dump(document, f, separators=(",", ":"))


def _key(config: dict, seed: int) -> str:
    return json.dumps({**config, "seed": seed}, sort_keys=True)


class RecordCurve:
    """The objective of the build: trains the enqueued configuration with its seed and
    returns the row (stored as the trial's ``table_row`` user attribute)."""

    def __init__(self, space: SearchSpace, device: str = "cpu"):
        self.space, self.device = space, device
        self.train_set, self.splits = space.load_data(None, False)
        self.info = self.train_set.info
        self.attacks = {steps: replace(space.attack, steps=steps) for steps in ROBUST_STEPS}

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        seed = TrialRecord(trial).table_seed
        candidate = self.space.suggest(trial)
        candidate.train = replace(candidate.train, seed=seed, epochs=EPOCHS)
        torch.manual_seed(seed)
        model = candidate.build_model(self.info)
        curve: list[dict] = []
        trained = [0.0]
        batch = self.space.eval_batch_size

        def on_epoch(epoch: int, progress, state) -> None:
            start = time.perf_counter()
            row = {"epoch": epoch,
                   "val_accuracy": 100 * evaluate_accuracy(model, self.splits.val, batch,
                                                           self.device),
                   "train_seconds": progress.seconds - trained[0],
                   "dense_phase": bool(progress.history[-1].get("dense_phase"))}
            trained[0] = progress.seconds
            row["val_seconds"] = time.perf_counter() - start
            if epoch in ROBUST_EPOCHS:
                for steps in STEPS_AT[epoch]:
                    attack = self.attacks[steps]
                    start = time.perf_counter()
                    row[f"robust_pgd{steps}"] = 100 * robust_accuracy(
                        model, self.splits.val, attack, batch, self.device)
                    row[f"robust_pgd{steps}_seconds"] = time.perf_counter() - start
            curve.append(row)

        train(model, self.train_set, candidate.train, self.device, on_epoch=on_epoch)
        shape = (self.info.in_channels, self.info.image_size, self.info.image_size)
        start = time.perf_counter()
        macs = count_flops(model, shape, inputs=self.splits.probe)
        config = {name: trial.params[name] for name in GRID}
        row = {"config": config, "seed": seed, "mmacs": macs["active"] / 1e6,
               "mparams": count_params(model) / 1e6,
               "macs_seconds": time.perf_counter() - start, "curve": curve,
               "threads": torch.get_num_threads()}
        TrialWriter(trial).table_row(row)
        last = curve[-1]
        return tuple({"val_accuracy": last["val_accuracy"], "mmacs": row["mmacs"],
                      "robust_accuracy": last[f"robust_pgd{ROBUST_STEPS[-1]}"]}[name]
                     for name in self.space.objectives)


def build(seeds: int, limit: int | None, threads: int, table: Path = TABLE,
          db: Path = STUDY_DB) -> None:
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = table_space()
    db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db}"
    rows = {_key(r["config"], r["seed"]): r for r in read_table(table)}
    storage = open_storage(url, create=True)
    study, _ = create_or_resume_study(storage, "moe_table", space, "random")
    for trial in study.get_trials(deepcopy=False):  # finished earlier, maybe not exported
        row = TrialRecord(trial).table_row
        if row is not None and trial.state.name == "COMPLETE":
            rows.setdefault(_key(row["config"], row["seed"]), row)
    queued = {_key({k: t.system_attrs["fixed_params"][k] for k in GRID},
                   TrialRecord(t).table_seed)
              for t in study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.WAITING,))}
    todo = [(c, s) for s in range(seeds) for c in configurations()
            if _key(c, s) not in rows and _key(c, s) not in queued]
    for config, seed in todo:
        enqueue_table_run(study, config, seed)
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    n = waiting if limit is None else min(limit, waiting)
    print(f"[moe_table] {len(rows)} rows in the table, {waiting} runs queued; running {n}",
          flush=True)
    if n == 0:
        write_table(list(rows.values()), table)
        return

    def export(study, trial) -> None:
        # the union of the table on disk and every row in the study: another build process
        # on the same study DB may have written the table meanwhile
        if trial.state == optuna.trial.TrialState.COMPLETE:
            merged = {_key(r["config"], r["seed"]): r for r in read_table(table)}
            for done in study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,)):
                row = TrialRecord(done).table_row
                merged.setdefault(_key(row["config"], row["seed"]), row)
            write_table(list(merged.values()), table)
            bar.advance(task)

    with Progress() as bar:
        task = bar.add_task("table rows", total=n)
        run_search(space, storage, study_name="moe_table", trials=n, sampler="random",
                   artifact_dir=db.parent / "artifacts" / "moe_table",
                   objective=RecordCurve(space), callbacks=[export])


def info(table: Path = TABLE) -> None:
    rows = read_table(table)
    configs = configurations()
    done = {json.dumps(r["config"], sort_keys=True) for r in rows}
    seconds = [sum(e["train_seconds"] + e["val_seconds"] + sum(
        e.get(f"robust_pgd{s}_seconds", 0.0) for s in ROBUST_STEPS) for e in r["curve"])
        for r in rows]
    print(f"{len(rows)} rows, {len(done)} of {len(configs)} configurations, seeds "
          f"{sorted({r['seed'] for r in rows})}; "
          + (f"seconds per row median {statistics.median(seconds):.1f}, total "
             f"{sum(seconds) / 3600:.2f} h" if rows else "empty")
          + (f"; file {table.stat().st_size / 1e6:.2f} MB" if table.exists() else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="train what the table lacks (resumable)")
    build_parser.add_argument("--seeds", type=int, default=2)
    build_parser.add_argument("--limit", type=int, default=None, help="at most N runs now")
    build_parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    build_parser.add_argument("--db", type=Path, default=STUDY_DB, help="the build's study DB")
    info_parser = commands.add_parser("info", help="what the table holds")
    for sub_parser in (build_parser, info_parser):
        sub_parser.add_argument("--table", type=Path, default=TABLE)
    args = parser.parse_args()
    if args.command == "build":
        build(args.seeds, args.limit, args.threads, args.table, args.db)
    else:
        info(args.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
