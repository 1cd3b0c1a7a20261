"""Figures of a study: Pareto front, hypervolume history, parameter importances, learning
curves and a trial's expert usage.

Every figure is written to a file whose suffix picks the backend: ``.html`` gives an
interactive plotly figure (Optuna's own plots where it has them), ``.png``, ``.svg`` or
``.pdf`` a matplotlib one. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from automoe.errors import AutomoeError
from automoe.search.hypervolume import study_hypervolume
from automoe.search.objectives import METRICS, default_reference
from automoe.search.pareto import is_feasible, pareto_trials
from automoe.search.study import study_objectives

PLOTS = ("pareto", "history", "importance", "curves", "usage")
_STATIC = (".png", ".svg", ".pdf")


def write_plot(study: optuna.Study, kind: str, out: str | os.PathLike[str], *,
               trial: int | None = None, reference: tuple[float, ...] | None = None) -> Path:
    """Draw ``kind`` (one of :data:`PLOTS`) for ``study`` into ``out``.

    Args:
        trial: the trial whose expert usage is drawn (``usage``; default: the front trial
            with the best first objective).
        reference: hypervolume reference point (``history``; default as ``automoe pareto``).
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".html", *_STATIC):
        raise AutomoeError(f"--out must end in .html, {', '.join(_STATIC)}; got {str(out)!r}")
    if kind not in PLOTS:
        raise AutomoeError(f"unknown plot {kind!r}; expected one of {', '.join(PLOTS)}")
    html = suffix == ".html"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise AutomoeError(f"study {study.study_name!r} has no complete trial to plot")
    if kind == "pareto":
        figure = _pareto(study, html)
    elif kind == "history":
        figure = _history(study, html, reference)
    elif kind == "importance":
        figure = _importance(study, html)
    elif kind == "curves":
        figure = _curves(study, html)
    else:
        figure = _usage(_trial_for_usage(study, trial), html)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.tmp-", suffix=suffix)
    os.close(fd)
    try:
        if html:
            figure.write_html(tmp, include_plotlyjs="cdn")
        else:
            figure.savefig(tmp, dpi=150, bbox_inches="tight")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates it private
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _labels(study) -> list[str]:
    return [f"{n} ({METRICS[n].direction[:3]})" for n in study_objectives(study)]


def _pareto(study, html: bool):
    names = study_objectives(study)
    if len(names) == 1:
        raise AutomoeError("a single-objective study has no front to draw")
    if len(names) > 3:
        raise AutomoeError("the Pareto-front plot draws 2 or 3 objectives")
    if html:  # interactive: Optuna's plot, 3D for three objectives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.visualization.plot_pareto_front(study, target_names=_labels(study))
    # static: a 2D picture reads better than a 3D one; the third objective is the colour
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None]
    front = {t.number for t in pareto_trials(study)}
    labels = _labels(study)
    x_index = next((i for i, n in enumerate(names) if not METRICS[n].maximize), 1)
    y_index = next(i for i in range(len(names)) if i != x_index)
    c_index = next((i for i in range(len(names)) if i not in (x_index, y_index)), None)
    fig = Figure(figsize=(6.4, 4.4), layout="tight")
    ax = fig.subplots()
    for on_front in (False, True):
        group = [t for t in complete if (t.number in front) == on_front]
        if not group:
            continue
        scatter = ax.scatter(
            [t.values[x_index] for t in group], [t.values[y_index] for t in group],
            c=[t.values[c_index] for t in group] if c_index is not None else None,
            cmap="viridis" if c_index is not None else None,
            vmin=min((t.values[c_index] for t in complete), default=0)
            if c_index is not None else None,
            vmax=max((t.values[c_index] for t in complete), default=1)
            if c_index is not None else None,
            s=70 if on_front else 28, alpha=1.0 if on_front else 0.75,
            edgecolors="black" if on_front else "none", linewidths=1.2,
            label="Pareto front" if on_front else "other trials", zorder=3 if on_front else 2)
        if on_front:
            for t in group:
                ax.annotate(str(t.number), (t.values[x_index], t.values[y_index]),
                            textcoords="offset points", xytext=(6, 4), fontsize=8)
    if c_index is not None:
        fig.colorbar(scatter, ax=ax, label=labels[c_index])
    ax.set(xlabel=labels[x_index], ylabel=labels[y_index],
           title=f"{study.study_name}: {len(complete)} trials, front labelled by trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def hypervolume_history(study, reference=None) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the front of the complete trials up to it)``."""
    names = study_objectives(study)
    complete = sorted((t for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE,)) if t.values is not None), key=lambda t: t.number)
    feasible = [t for t in complete if is_feasible(t)]
    reference = reference or default_reference(names, [tuple(t.values) for t in complete])
    history, seen = [], []
    for t in complete:
        if t in feasible:
            seen.append(tuple(t.values))
        history.append((t.number, study_hypervolume(seen, reference, names)))
    return history


def _history(study, html: bool, reference):
    points = hypervolume_history(study, reference)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    title = f"hypervolume of the Pareto front, {study.study_name}"
    if html:
        import plotly.graph_objects as go

        fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers"))
        fig.update_layout(title=title, xaxis_title="trial", yaxis_title="hypervolume")
        return fig
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.step(xs, ys, where="post", marker="o")
    ax.set(title=title, xlabel="trial", ylabel="hypervolume")
    ax.grid(alpha=0.3)
    return fig


def _importance(study, html: bool):
    names = study_objectives(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        importances = {
            name: optuna.importance.get_param_importances(
                study, target=lambda t, i=i: t.values[i], evaluator=optuna.importance.
                FanovaImportanceEvaluator(seed=0))
            for i, name in enumerate(names)}
    params = sorted({p for imp in importances.values() for p in imp})
    if not params:
        raise AutomoeError("no parameter was sampled in every complete trial; importances "
                           "need a few more trials")
    title = f"parameter importances (fANOVA), {study.study_name}"
    if html:
        import plotly.graph_objects as go

        fig = go.Figure([go.Bar(name=n, y=params, x=[importances[n].get(p, 0) for p in params],
                                orientation="h") for n in names])
        fig.update_layout(title=title, barmode="group", xaxis_title="importance")
        return fig
    import numpy as np

    fig = Figure(figsize=(7, 0.5 + 0.45 * len(params) * len(names) ** 0.5))
    ax = fig.subplots()
    height = 0.8 / len(names)
    y = np.arange(len(params))
    for i, name in enumerate(names):
        ax.barh(y + i * height, [importances[name].get(p, 0) for p in params], height,
                label=name)
    ax.set_yticks(y + 0.4 - height / 2, params)
    ax.set(title=title, xlabel="importance")
    ax.legend()
    return fig


def _curves(study, html: bool):
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("history")
              and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    title = f"training loss per epoch, {study.study_name} (dashed: pruned)"
    if html:
        import plotly.graph_objects as go

        fig = go.Figure()
        for t in trials:
            rows = t.user_attrs["history"]
            fig.add_trace(go.Scatter(x=[r["epoch"] for r in rows], y=[r["loss"] for r in rows],
                                     name=f"trial {t.number}", line={"dash": "dash" if
                                                                     t.state.name == "PRUNED"
                                                                     else "solid"}))
        fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="training loss",
                          yaxis_type="log")
        return fig
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for t in trials:
        rows = t.user_attrs["history"]
        ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows],
                linestyle="--" if t.state.name == "PRUNED" else "-", alpha=0.8)
    ax.set(title=title, xlabel="epoch", ylabel="training loss", yscale="log")
    ax.grid(alpha=0.3)
    return fig


def _trial_for_usage(study, number: int | None) -> FrozenTrial:
    if number is None:
        front = [t for t in pareto_trials(study) if t.user_attrs.get("expert_usage")]
        if not front:
            raise AutomoeError("no front trial has MoE layers; pass --trial N")
        return front[0]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise AutomoeError(f"study {study.study_name!r} has no trial {number}")
    if not trials[number].user_attrs.get("expert_usage"):
        raise AutomoeError(f"trial {number} has no MoE layer (or is not complete)")
    return trials[number]


def _usage(trial: FrozenTrial, html: bool):
    per_class = trial.user_attrs.get("expert_class_usage") or {
        layer: [[c] for c in counts] for layer, counts in trial.user_attrs["expert_usage"].items()}
    return usage_figure(per_class, f"expert usage on the val split, trial {trial.number} "
                                   "(experts x classes)", html)


def usage_figure(per_class: dict[str, list[list[int]]], title: str, html: bool = False):
    """Per MoE layer, a heatmap of how many samples of each class went to each expert."""
    layers = list(per_class)
    if html:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=len(layers), subplot_titles=layers)
        for i, layer in enumerate(layers):
            fig.add_trace(go.Heatmap(z=per_class[layer], coloraxis="coloraxis"), 1, i + 1)
        fig.update_layout(title=title, coloraxis={"colorscale": "Viridis"})
        return fig
    fig = Figure(figsize=(2.2 + 2.6 * len(layers), 3), layout="tight")
    axes = fig.subplots(1, len(layers), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        image = ax.imshow(per_class[layer], aspect="auto", cmap="viridis")
        experts, classes = len(per_class[layer]), len(per_class[layer][0])
        ax.set(title=layer, xlabel="class", ylabel="expert", yticks=range(experts),
               xticks=range(0, classes, max(1, classes // 10)))
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    return fig
