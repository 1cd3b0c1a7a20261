"""The front: the same trials as Optuna's best_trials, and incremental retention."""

import random

import optuna
import pytest
from optuna.artifacts import upload_artifact

from automoe.results._pareto import nondominated, pareto_trials
from automoe.results._retention import checkpoint_retention
from automoe.storage import AtomicFileSystemArtifactStore


def _study(seed: int, n: int, constrained: bool):
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"])
    study.set_metric_names(["val_accuracy", "mmacs", "robust_accuracy"])
    for _ in range(n):
        trial = study.ask()
        if constrained:
            trial.set_constraint("mmacs_max", rng.choice([-1.0, 0.0, 0.5]))
        # coarse values, so that ties and duplicates happen
        study.tell(trial, (rng.randint(0, 6), rng.randint(0, 6), rng.randint(0, 6)))
    return study


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("constrained", [False, True])
def test_the_front_is_optunas_best_trials(seed, constrained):
    study = _study(seed, 60, constrained)
    assert {t.number for t in pareto_trials(study)} == {t.number for t in study.best_trials}


def test_incremental_retention_keeps_exactly_the_front_checkpoints(tmp_path):
    store = AtomicFileSystemArtifactStore(tmp_path)
    blob = tmp_path / "w.bin"
    blob.write_bytes(b"0")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    rng = random.Random(0)

    def objective(trial):
        artifact = upload_artifact(artifact_store=store, file_path=str(blob),
                                   study_or_trial=trial)
        trial.set_user_attr("checkpoint", {"artifact_id": artifact})
        return rng.random(), rng.random()

    retention = checkpoint_retention(store)
    for _ in range(8):
        study.optimize(objective, n_trials=10, callbacks=[retention])
        front = {t.number for t in nondominated(study.trials, ["val_accuracy", "mmacs"])}
        for t in study.trials:
            present = (tmp_path / t.user_attrs["checkpoint"]["artifact_id"]).exists()
            assert present == (t.number in front), t.number


def test_retention_sees_trials_that_finish_out_of_order(tmp_path):
    """Workers finish trials out of number order: a trial still running while later ones
    complete must be looked at when it completes, whether it joins the front or not."""
    store = AtomicFileSystemArtifactStore(tmp_path)
    blob = tmp_path / "w.bin"
    blob.write_bytes(b"0")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    retention = checkpoint_retention(store)

    def start():
        trial = study.ask()
        artifact = upload_artifact(artifact_store=store, file_path=str(blob),
                                   study_or_trial=trial)
        trial.set_user_attr("checkpoint", {"artifact_id": artifact})
        return trial

    def finish(trial, values):
        frozen = study.tell(trial, values)
        retention(study, frozen)

    def kept():
        return {t.number for t in study.trials if t.state.is_finished()
                and (tmp_path / t.user_attrs["checkpoint"]["artifact_id"]).exists()}

    slow_best, slow_worst = start(), start()  # trials 0 and 1 stay running a while
    for value in (0.5, 0.6, 0.7):
        finish(start(), (value, 1.0))  # each dominates the one before
    assert kept() == {4}
    finish(slow_worst, (0.1, 2.0))  # dominated when it completes: its checkpoint goes
    assert kept() == {4}
    finish(start(), (0.65, 0.5))  # trial 5 joins the front beside trial 4
    assert kept() == {4, 5}
    finish(slow_best, (0.9, 0.1))  # dominates everything, though it has the lowest number
    assert kept() == {0}
