"""search -> pareto -> export -> eval through the installed command."""

import json

import optuna

from automoe.results import TrialRecord, pareto_trials
from automoe.storage import open_storage

from .conftest import run_cli


def test_search_pareto_export_eval(workdir):
    proc = run_cli("search", "--space", "tiny.yaml", cwd=workdir, check=0, process=True)
    assert "Pareto front of 'tiny'" in proc.stdout
    assert (workdir / "studies" / "automoe.db").exists()  # default storage

    storage = open_storage("sqlite:///" + str(workdir / "studies" / "automoe.db"))
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 6
    assert study.metric_names == ["val_accuracy", "mmacs", "robust_accuracy"]
    for t in trials:
        attrs = t.user_attrs
        for key in ("config", "architecture", "macs", "params", "test_accuracy", "attack",
                    "expert_usage", "train_seconds", "history", "checkpoint", "dataset"):
            assert key in attrs, key
        assert attrs["macs"]["active"] / 1e6 == t.values[1]
        assert attrs["macs"]["active"] <= attrs["macs"]["dense"]
        model = attrs["config"]["model"]
        assert 1 <= model["top_k"] <= model["num_experts"]
        if model["placement"] != "none" and model["granularity"] != "channel":
            # every val sample counted k times, experts x classes matrices
            assert all(sum(c) == 360 * model["top_k"] for c in attrs["expert_usage"].values())
            for matrix in attrs["expert_class_usage"].values():
                assert len(matrix) == model["num_experts"] and len(matrix[0]) == 10
        elif model["placement"] != "none":  # channel experts: open (sample, channel) pairs
            assert all(0 < sum(c) <= 360 * len(c) for c in attrs["expert_usage"].values())

    rows = json.loads(run_cli("pareto", "--json", cwd=workdir, check=0, process=True).stdout)
    assert rows and {r["trial"] for r in rows} <= {t.number for t in trials}
    # the search ended by re-attacking its front with the strong worst case
    assert "verifying the front" in proc.stderr or "verified" in proc.stderr
    for row in rows:
        assert row["robust_accuracy_verified"] is not None
        assert row["robust_accuracy_verified"] <= row["values"]["robust_accuracy"] + 1e-9
    # `verify` with other settings attacks the front again and replaces the records
    report = json.loads(run_cli("verify", "--steps", "3", "--restarts", "1", "--json",
                                cwd=workdir, check=0, process=True).stdout)
    assert sorted(int(k) for k in report) == sorted(r["trial"] for r in rows)
    rows = json.loads(run_cli("pareto", "--json", cwd=workdir, check=0, process=True).stdout)
    assert {r["trial"]: r["robust_accuracy_verified"] for r in rows} == {
        int(k): v["robust_accuracy_verified"] for k, v in report.items()}
    assert set(rows[0]) >= {"trial", "values", "config", "test_accuracy"}
    # `python cli.py` is the same program
    assert json.loads(run_cli("pareto", "--json", cwd=workdir, binary=False,
                              check=0).stdout) == rows

    for row in rows:
        out_dir = workdir / f"export-{row['trial']}"
        run_cli("export", "--trial", str(row["trial"]), "--out", str(out_dir), "--torchscript",
                "--onnx", cwd=workdir, check=0, process=True)
        assert "verified worst case" in (out_dir / "MODEL_CARD.md").read_text()
        assert sorted(p.name for p in out_dir.iterdir()) == [
            "MODEL_CARD.md", "config.json", "model.onnx", "model.safetensors",
            "model.torchscript.pt"]
        # the traced graphs give the eager model's outputs on other inputs, any granularity
        _check_traced(out_dir)
        result = json.loads(run_cli("eval", str(out_dir), "--json", cwd=workdir, check=0,
                                    process=True).stdout)
        assert abs(result["val_accuracy"] - row["values"]["val_accuracy"]) <= 0.5
        assert abs(result["test_accuracy"] - row["test_accuracy"]) <= 0.5
        assert abs(result["robust_accuracy"] - row["values"]["robust_accuracy"]) <= 0.5
        assert result["mmacs"] == row["values"]["mmacs"]

    # a robustness report: every attack at most the clean accuracy, worst case at most each
    report = json.loads(run_cli("robustness", str(workdir / f"export-{rows[0]['trial']}"),
                                "--steps", "3", "--max-samples", "64", "--attack", "pgd",
                                "--attack", "apgd-dlr", "--json", cwd=workdir, check=0, process=True).stdout)
    accuracy = report["accuracy"]
    assert report["samples"] == 64 and len(accuracy) == 4
    worst = accuracy.pop("worst case over the attacks")
    assert all(worst <= v <= accuracy["clean"] for v in accuracy.values())
    # --norm l2: every attack of the worst case runs in L2; an L-inf-only attack is refused
    exported = str(workdir / f"export-{rows[0]['trial']}")
    l2 = json.loads(run_cli("robustness", exported, "--norm", "l2", "--eps", "0.5",
                            "--steps", "2", "--max-samples", "32", "--json", cwd=workdir,
                            check=0, process=True).stdout)["accuracy"]
    assert sorted(l2) == ["clean", "pgd l2 eps=0.5, 2 steps", "router-pgd l2 eps=0.5, 2 steps",
                          "worst case over the attacks"], sorted(l2)
    refused = run_cli("robustness", exported, "--norm", "l2", "--attack", "apgd-ce",
                      cwd=workdir, check=1, process=True)
    assert "apgd-ce is not implemented for the l2 norm" in refused.stderr

    # the exported model loads back through the public API alone
    import torch

    import automoe

    model = automoe.load(workdir / f"export-{rows[0]['trial']}")
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)

    # a table too
    assert "val %" in run_cli("pareto", cwd=workdir, check=0, process=True).stdout


def test_resume_adds_trials_and_refuses_another_space(workdir):
    db = f"sqlite:///{workdir / 'r.db'}"
    run_cli("search", "--space", "tiny.yaml", "--storage", db, "--trials", "2", "-q",
            cwd=workdir, check=0)
    # a resume started with another --seed keeps the study's seed for training, and its
    # sampler does not restart the first run's random stream
    run_cli("search", "--space", "tiny.yaml", "--storage", db, "--trials", "1", "-q",
            "--seed", "7", cwd=workdir, check=0)
    storage = open_storage(db)
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 3
    assert [t.user_attrs["config"]["train"]["seed"] for t in trials] == [0, 1, 2]
    assert trials[2].params not in [t.params for t in trials[:2]]

    (workdir / "other.yaml").write_text((workdir / "tiny.yaml").read_text().replace(
        "epochs: 1", "epochs: 2"))
    proc = run_cli("search", "--space", "other.yaml", "--study", "tiny", "--storage", db,
                   cwd=workdir, check=1)
    assert "different search space" in proc.stderr
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 3


def test_diverging_trial_is_recorded_as_failed_and_the_search_goes_on(workdir):
    text = (workdir / "tiny.yaml").read_text()
    text = text.replace("lr: {low: 0.05, high: 0.2, log: true}", "lr: 1.0e+12")
    (workdir / "nan.yaml").write_text(text.replace("trials: 6", "trials: 2"))
    proc = run_cli("search", "--space", "nan.yaml", cwd=workdir, check=0)
    assert "failed: training loss became" in proc.stderr
    storage = open_storage("sqlite:///" + str(workdir / "studies" / "automoe.db"))
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert "lower the learning rate" in trials[0].user_attrs["fail_reason"]
    assert not any(p.name.startswith(".tmp") for p in (workdir / "studies").rglob("*"))


def test_multi_fidelity_search_with_an_nni_tuner_and_other_objectives(workdir):
    space = (workdir / "tiny.yaml").read_text().replace("epochs: 1", "epochs: 3")
    space = space.replace("sampler: {name: nsga2, population_size: 2}",
                          "sampler: {name: nni-random}\nobjectives: [val_accuracy, mparams]\n"
                          "fidelity: {min_epochs: 1, reduction_factor: 3}")
    (workdir / "sh.yaml").write_text(space)
    proc = run_cli("search", "--space", "sh.yaml", "--trials", "8", cwd=workdir, check=0)
    assert "pruned" in proc.stdout  # the title counts complete and pruned trials
    assert "Mparams" in proc.stdout
    rows = json.loads(run_cli("pareto", "--json", cwd=workdir, check=0).stdout)
    assert rows and all(set(r["values"]) == {"val_accuracy", "mparams"} for r in rows)
    proc = run_cli("pareto", "--reference", "0,1", cwd=workdir, check=0)
    assert "val_accuracy 0, mparams 1" in proc.stdout
    study = optuna.load_study(study_name="tiny", storage=open_storage(
        "sqlite:///" + str(workdir / "studies" / "automoe.db")))
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 1
    assert all(t.user_attrs["nni"]["tuner"] == "nni-random" for t in study.trials)


def _check_traced(out_dir):
    import warnings

    import numpy as np
    import onnxruntime
    import torch

    import automoe

    eager = automoe.load(out_dir)
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in 2.x
        expected = eager(x)
        scripted = torch.jit.load(str(out_dir / "model.torchscript.pt"))(x)
    assert torch.allclose(scripted, expected, atol=1e-4)
    session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"))
    (logits,) = session.run(None, {"images": x.numpy()})
    assert np.allclose(logits, expected.numpy(), atol=1e-4)


def test_warm_start_from_an_earlier_study(workdir):
    db = f"sqlite:///{workdir / 'w.db'}"
    run_cli("search", "--space", "tiny.yaml", "--storage", db, "--trials", "4", "-q",
            "--no-verify", cwd=workdir, check=0)
    source = optuna.load_study(study_name="tiny", storage=open_storage(db))
    front = len(pareto_trials(source))
    proc = run_cli("search", "--space", "tiny.yaml", "--storage", db, "--study", "warm",
                   "--warm-start", "tiny", "--trials", str(front), "--no-verify", cwd=workdir,
                   check=0)
    assert f"warm start: {front} configurations of 'tiny'" in proc.stderr
    warm = optuna.load_study(study_name="warm", storage=open_storage(db))
    assert [TrialRecord(t).warm_start["study"] for t in warm.trials] == ["tiny"] * front
    # a study that does not exist: one line, and no new study
    proc = run_cli("search", "--space", "tiny.yaml", "--storage", db, "--study", "cold",
                   "--warm-start", "nosuch", cwd=workdir, check=1)
    assert len(proc.stderr.strip().splitlines()) == 1 and "nosuch" in proc.stderr
    assert "cold" not in {s.study_name for s in open_storage(db).get_all_studies()}
