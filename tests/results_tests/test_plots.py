"""Plots of a constrained study (Optuna 5 stores constraints as a dict)."""

import optuna
import pytest

from automoe.results._pareto import is_feasible, pareto_trials
from automoe.results._plots import hypervolume_history, write_plot
from automoe.results._record import TrialWriter


@pytest.fixture()
def constrained_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    for i in range(8):
        trial = study.ask()
        experts = trial.suggest_int("experts", 2, 8)
        # every odd trial breaks its constraint, and would otherwise dominate
        trial.set_constraint("mmacs_max", 1.0 if i % 2 else -1.0)
        study.tell(trial, (50.0 + i * 5 + experts, 1.0 + i))
    return study


def test_feasibility_and_the_front_follow_the_constraints(constrained_study):
    feasible = [t.number for t in constrained_study.trials if is_feasible(t)]
    assert feasible == [0, 2, 4, 6]
    assert {t.number for t in pareto_trials(constrained_study)} <= set(feasible)


def test_the_hypervolume_history_counts_feasible_trials_only(constrained_study):
    history = dict(hypervolume_history(constrained_study, reference=(0.0, 100.0)))
    assert history[0] > 0
    for number in (1, 3, 5, 7):  # an infeasible trial adds nothing
        assert history[number] == history[number - 1]
    assert history[2] > history[1]


@pytest.mark.parametrize("kind,suffix", [("pareto", "png"), ("history", "png"),
                                         ("history", "html"), ("importance", "svg"),
                                         ("importance", "html")])
def test_plots_of_a_constrained_study(constrained_study, tmp_path, kind, suffix):
    out = tmp_path / f"{kind}.{suffix}"
    write_plot(constrained_study, kind, out)
    assert out.stat().st_size > 1000


def test_front_labels_do_not_overlap_where_there_is_room():
    from matplotlib.figure import Figure

    from automoe.results._plots import place_labels

    # a tight cluster of ten front points plus outliers: their labels must not collide
    points = [(1.0 + 0.01 * i, 90.0 + 0.05 * i) for i in range(10)] + [(3.0, 60.0), (0.5, 99.0)]
    labels = [str(100 + i) for i in range(len(points))]
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    ax.scatter(*zip(*points, strict=True))
    place_labels(fig, ax, points, labels)
    from matplotlib.text import Text

    fig.canvas.draw()  # places the annotations
    renderer = fig.canvas.get_renderer()
    # the text of each label (an annotation's own extent includes its leader line)
    boxes = [Text.get_window_extent(text, renderer) for text in ax.texts]
    assert len(boxes) == len(points)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_html_plots_open_offline(constrained_study, tmp_path):
    out = tmp_path / "history.html"
    write_plot(constrained_study, "history", out)
    html = out.read_text()
    # plotly.js is inside the file, not fetched from a CDN when it is opened
    assert '<script src="https://cdn' not in html and len(html) > 1_000_000


def _moe_study():
    """A study whose trials carry what the usage and curves plots read."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    # (experts, top_k, val %, MMACs): 0, 1 (k = E), 2 and 4 on the front, 3 dominated
    for experts, top_k, val, mmacs in ((4, 1, 80.0, 1.0), (4, 4, 95.0, 4.0),
                                       (4, 2, 90.0, 2.0), (2, 1, 70.0, 3.0),
                                       (4, 1, 85.0, 1.8)):
        trial = study.ask()
        record = TrialWriter(trial)  # as a trial writes it, with the record's own keys
        record.started({"model": {"num_experts": experts, "top_k": top_k}},
                       {"model": "resnet8", "experts": experts, "top_k": top_k},
                       {"name": "digits"}, {"pid": 1}, supernet=False)
        record.routers({"stage3.0": {"num_experts": experts,
                                     "effective_experts": experts * 0.9}},
                       {"stage3.0": [10] * experts}, {"stage3.0": [[5, 5]] * experts})
        record.training([{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(3)], 3, 1.0, 0.5)
        study.tell(trial, (val, mmacs))
    return study


def test_usage_defaults_to_the_knee_of_the_trials_that_choose(tmp_path):
    from automoe.results._plots import _trial_for_usage

    study = _moe_study()
    assert {t.number for t in pareto_trials(study)} == {0, 1, 2, 4}
    # trial 1 runs every expert (k = E): not the default, though it is on the front. The
    # knee of the whole front is trial 2; of the trials that choose (0, 2, 4), trial 4
    assert _trial_for_usage(study, None).number == 4
    out = tmp_path / "usage.png"
    write_plot(study, "usage", out)
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("kind", ["curves", "usage", "pareto", "history"])
@pytest.mark.parametrize("suffix", ["png", "html"])
def test_every_plot_kind_renders(kind, suffix, tmp_path):
    out = tmp_path / f"{kind}.{suffix}"
    study = _moe_study()
    write_plot(study, kind, out)
    assert out.stat().st_size > 1000
