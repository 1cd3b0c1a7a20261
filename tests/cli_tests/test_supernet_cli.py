"""supernet train -> search (inherited weights, trials in the study DB) -> finalize."""

import json

import optuna
import pytest

from automoe.search.supernet import Supernet
from automoe.storage import open_storage

from .conftest import run_cli

SPACE = """
name: tinysuper
dataset: {name: digits, image_size: 8}
model: {name: resnet8}
params:
  placement: {choices: [none, last_stage, all]}
  experts: {low: 2, high: 3}
  top_k: {low: 1, high: 2}
  width_multiplier: {choices: [0.25, 0.5]}
  adv_steps: 1
  balance_weight: 0.01
  epochs: 1
  batch_size: 128
evaluation:
  attack: {steps: 2, max_samples: 64}
sampler: {name: nsga2, population_size: 4}
"""


@pytest.mark.slow
def test_supernet_train_search_finalize(workdir):
    (workdir / "super.yaml").write_text(SPACE)
    proc = run_cli("supernet", "train", "--space", "super.yaml", "--out",
                   "studies/super.safetensors", "--adversarial", "--expert-sampling",
                   "subset", "--step-rule", "largest_random", "--width-schedule", "all",
                   cwd=workdir, check=0, process=True)
    assert "4 epochs of PGD-AT" in proc.stderr
    trained = Supernet.load(workdir / "studies" / "super.safetensors").trained_with
    assert trained["expert_sampling"] == "subset" and trained["recipe"]["scheme"] == "pgd_at"
    assert trained["step_rule"] == "largest_random"
    assert trained["width_schedule"] == "all"
    # an existing supernet file is not overwritten without --force
    before = (workdir / "studies" / "super.safetensors").read_bytes()
    proc = run_cli("supernet", "train", "--space", "super.yaml", "--out",
                   "studies/super.safetensors", cwd=workdir, check=1, process=True)
    assert "already exists; pass --force" in proc.stderr
    assert (workdir / "studies" / "super.safetensors").read_bytes() == before
    proc = run_cli("supernet", "search", "--supernet", "studies/super.safetensors",
                   "--trials", "6", "--attack-samples", "16", "-q", cwd=workdir, check=0, process=True)
    assert "Pareto front of 'tinysuper-supernet'" in proc.stdout
    # inherited-weight trials were never trained: no lr or epochs in the front table
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert rows and all(line.replace(" ", "").endswith("│-│-│") for line in rows)
    storage = open_storage("sqlite:///" + str(workdir / "studies" / "automoe.db"), create=False)
    study = optuna.load_study(study_name="tinysuper-supernet", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    for t in study.trials:
        assert t.user_attrs["fidelity"] == "supernet" and "history" in t.user_attrs
        assert t.user_attrs["history"] == []  # nothing trained: inherited weights
        subnet = t.user_attrs["subnet"]
        assert 1 <= subnet["top_k"] <= subnet["experts"] <= 3
        assert subnet["width_multiplier"] in (0.25, 0.5)
        assert t.user_attrs["attack"]["max_samples"] == 16  # the cheaper screen, recorded

    proc = run_cli("supernet", "finalize", "--study", "tinysuper-supernet", "--top", "1",
                   cwd=workdir, check=0, process=True)
    assert "inherited weights vs trained stand-alone in 'tinysuper'" in proc.stdout
    # the screen and the full evaluation attacked different samples, and it says so
    assert "screened on the first 16 val samples" in proc.stdout
    assert "stand-alone on the first 64" in proc.stdout
    final = optuna.load_study(study_name="tinysuper", storage=storage)
    (trial,) = final.trials
    origin = trial.user_attrs["supernet_trial"]
    assert trial.state.name == "COMPLETE" and origin["study"] == "tinysuper-supernet"
    assert trial.params == study.trials[origin["trial"]].params
    # the same architecture: the same active MACs, inherited or trained
    assert trial.values[1] == origin["values"]["mmacs"]
    assert len(trial.user_attrs["history"]) == 1  # trained stand-alone for the space's epochs
    assert trial.user_attrs["attack"]["max_samples"] == 64  # finalists: the space's attack
    # the storage now holds two studies: commands without --study take the one that ran
    # last (the finalists) and say so
    proc = run_cli("pareto", "--json", cwd=workdir, check=0, process=True)
    assert "study 'tinysuper', the most recently active of 2" in proc.stderr
    assert {r["trial"] for r in json.loads(proc.stdout)} <= {t.number for t in final.trials}
    run_cli("export", "--pick", "knee", "--out", "knee", cwd=workdir, check=0, process=True)


def test_supernet_refuses_spaces_it_cannot_share(workdir):
    proc = run_cli("supernet", "train", "--space", "tiny.yaml", "--out", "x.safetensors",
                   cwd=workdir, check=1)
    assert "the supernet searches placement, experts, top_k, width_multiplier" in proc.stderr
    proc = run_cli("supernet", "search", "--supernet", "tiny.yaml", cwd=workdir, check=1)
    assert "is not a supernet" in proc.stderr or "cannot read supernet" in proc.stderr
    proc = run_cli("supernet", "search", "--supernet", "tiny.yaml", "--attack-samples", "0",
                   cwd=workdir, check=1)
    assert "--attack-samples must be >= 1, got 0" in proc.stderr


def test_the_parser_offers_the_supernets_own_choices_and_defaults():
    # the parser takes the choices from the supernet package; its defaults must stay
    # those of SupernetTrainConfig, which Supernet.train reads
    from automoe.cli import build_parser
    from automoe.search.supernet import (
        EXPERT_SAMPLING,
        STEP_RULES,
        WIDTH_SCHEDULES,
        SupernetTrainConfig,
    )

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.choices and "supernet" in a.choices]
    (steps,) = [a for a in subparsers.choices["supernet"]._actions
                if a.choices and "train" in a.choices]
    flags = {a.dest: a for a in steps.choices["train"]._actions}
    defaults = SupernetTrainConfig()
    for dest, choices in (("step_rule", STEP_RULES), ("width_schedule", WIDTH_SCHEDULES),
                          ("expert_sampling", EXPERT_SAMPLING)):
        assert sorted(flags[dest].choices) == sorted(choices)
        assert flags[dest].default == getattr(defaults, dest)


def test_each_supernet_step_offers_only_its_own_options():
    from automoe.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.choices and "supernet" in a.choices]
    (steps,) = [a for a in subparsers.choices["supernet"]._actions
                if a.choices and "train" in a.choices]
    own = {"train": "--subnets-per-step", "search": "--recal-batches", "finalize": "--top"}
    for step, command in steps.choices.items():
        text = command.format_help()
        for other, flag in own.items():
            assert (flag in text) == (other == step), (step, flag)
