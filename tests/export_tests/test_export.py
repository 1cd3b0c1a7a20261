"""Exporting a trial whose checkpoint is gone says why it is gone."""

import optuna
import pytest

from automoe.errors import AutomoeError
from automoe.export import export_trial
from automoe.storage import AtomicFileSystemArtifactStore


def _study_with_removed_checkpoints():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    for values, violation in (((90.0, 1.0), 0.0),   # 0: the front
                              ((80.0, 2.0), 0.0),   # 1: dominated by 0
                              ((99.0, 0.5), 1.5)):  # 2: best on both, but infeasible
        trial = study.ask()
        trial.set_constraint("mmacs_max", violation)
        trial.set_user_attr("checkpoint", {"artifact_id": f"gone-{trial.number}",
                                           "sha256": "0"})
        study.tell(trial, values)
    return study


@pytest.mark.parametrize("number, message", [
    (1, "trial 1 is off the Pareto front and its checkpoint was removed"),
    (2, "trial 2 is infeasible: it violates mmacs_max (by 1.5), so it is not on the front"),
])
def test_a_removed_checkpoint_is_explained(tmp_path, number, message):
    store = AtomicFileSystemArtifactStore(tmp_path / "store")
    with pytest.raises(AutomoeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_trial(_study_with_removed_checkpoints(), number, tmp_path / "out", store)
    assert not (tmp_path / "out").exists()
