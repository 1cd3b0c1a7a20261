"""Figures of a study: Pareto front, hypervolume history, parameter importances, learning
curves and a trial's expert usage.

Every figure is written to a file whose suffix picks the backend: ``.html`` gives an
interactive plotly figure (Optuna's own plots where it has them), ``.png``, ``.svg`` or
``.pdf`` a matplotlib one. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import optuna
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from automoe.errors import AutomoeError
from automoe.results._hypervolume import study_hypervolume
from automoe.results._pareto import is_feasible, knee_order, pareto_trials
from automoe.results._record import TrialRecord
from automoe.results._study import study_objectives
from automoe.space._metrics import METRICS, default_reference, minimised
from automoe.storage import atomic_write

PLOTS = ("pareto", "history", "importance", "curves", "usage")
# fANOVA importances of fewer complete trials than this are mostly noise: the plot says so
MIN_TRIALS_FOR_IMPORTANCE = 20
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
    with atomic_write(out) as tmp:
        if html:
            figure.write_html(tmp, include_plotlyjs=True)  # self-contained: opens offline
        else:
            figure.savefig(tmp, dpi=150, bbox_inches="tight")
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
            front_points = [(t.values[x_index], t.values[y_index]) for t in group]
            front_labels = [str(t.number) for t in group]
    if c_index is not None:
        fig.colorbar(scatter, ax=ax, label=labels[c_index])
    ax.set(xlabel=labels[x_index], ylabel=labels[y_index],
           title=f"{study.study_name}: {len(complete)} trials, front labelled by trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if front:
        place_labels(fig, ax, front_points, front_labels)
    return fig


# Where a label may go around its point, in points (x, y of the text's lower left corner),
# nearest first; ``None`` in x means "left of the point, by the label's width".
_LABEL_OFFSETS = [(6, 4), (6, -11), (None, 4), (None, -11), (6, 15), (None, 15), (6, -22),
                  (None, -22), (16, 26), (None, 26), (16, -34), (None, -34)]


def place_labels(fig: Figure, ax, points, labels, fontsize: float = 8) -> None:
    """Annotate ``points`` (data coordinates) with ``labels`` so that no two labels, and no
    label and marker, overlap where a free spot exists nearby (greedy, nearest spot
    first); a label moved away from its point gets a thin leader line."""
    renderer = FigureCanvasAgg(fig).get_renderer()  # transforms and text sizes need one
    ax.autoscale_view()
    scale = fig.dpi / 72  # points -> pixels
    font = FontProperties(size=fontsize)
    display = [tuple(ax.transData.transform(p)) for p in points]
    marker = 5 * scale  # half the side of a front marker's box
    taken = [(x - marker, y - marker, x + marker, y + marker) for x, y in display]

    def overlaps(box) -> bool:
        return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                   for b in taken)

    for (x, y), point, label in sorted(zip(display, points, labels, strict=True)):
        width, height, _ = renderer.get_text_width_height_descent(label, font, ismath=False)
        width, height = width + 2 * scale, height + 2 * scale  # a little air around it
        choice = None
        for dx, dy in _LABEL_OFFSETS:
            dx_px = -width - 6 * scale if dx is None else dx * scale
            box = (x + dx_px, y + dy * scale, x + dx_px + width, y + dy * scale + height)
            if not overlaps(box):
                choice = (dx_px / scale, dy, box)
                break
        if choice is None:  # crowded everywhere: the first spot, overlapping
            dx, dy = _LABEL_OFFSETS[0]
            choice = (dx, dy, (x + dx * scale, y + dy * scale, x + dx * scale + width,
                               y + dy * scale + height))
        dx, dy, box = choice
        taken.append(box)
        far = abs(dx) > 12 or abs(dy) > 12
        ax.annotate(label, point, textcoords="offset points", xytext=(dx, dy),
                    fontsize=fontsize, zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6,
                                "shrinkA": 0, "shrinkB": 4} if far else None)


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
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not params:
        raise AutomoeError("no parameter was sampled in every complete trial; importances "
                           "need a few more trials")
    title = f"parameter importances (fANOVA), {study.study_name}"
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        title += f"\nonly {complete} complete trials: unreliable below {MIN_TRIALS_FOR_IMPORTANCE}"
    if html:
        fig = go.Figure([go.Bar(name=n, y=params, x=[importances[n].get(p, 0) for p in params],
                                orientation="h") for n in names])
        fig.update_layout(title=title, barmode="group", xaxis_title="importance")
        return fig
    fig = Figure(figsize=(7, 0.5 + 0.45 * len(params) * len(names) ** 0.5))
    ax = fig.subplots()
    height = 0.8 / len(names)
    y = np.arange(len(params))
    for i, name in enumerate(names):
        ax.barh(y + i * height, [importances[name].get(p, 0) for p in params], height,
                label=name)
    ax.set_yticks(y + 0.4 - height / 2, params)
    ax.set(title=title, xlabel="importance")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the bars
    return fig


def _curves(study, html: bool):
    """Training loss per epoch: the front trials in colour and labelled, the rest grey."""
    trials = [t for t in study.get_trials(deepcopy=False) if TrialRecord(t).history
              and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    front = {t.number for t in pareto_trials(study)}
    title = (f"training loss per epoch, {study.study_name}: Pareto-front trials in colour, "
             "others grey (dashed: pruned)")
    ordered = sorted(trials, key=lambda t: t.number in front)  # the front drawn on top
    if html:
        fig = go.Figure()
        for t in ordered:
            rows = TrialRecord(t).history
            on_front = t.number in front
            fig.add_trace(go.Scatter(
                x=[r["epoch"] for r in rows], y=[r["loss"] for r in rows],
                name=f"trial {t.number}" + (" (front)" if on_front else ""),
                line={"dash": "dash" if t.state.name == "PRUNED" else "solid",
                      **({} if on_front else {"color": "lightgrey"})},
                showlegend=on_front))
        fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="training loss",
                          yaxis_type="log")
        return fig
    fig = Figure(figsize=(7, 4.4), layout="tight")
    ax = fig.subplots()
    colours = iter(_qualitative(len(front)))
    for t in ordered:
        rows = TrialRecord(t).history
        on_front = t.number in front
        style = "--" if t.state.name == "PRUNED" else "-"
        if on_front:
            ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], style, lw=1.8,
                    color=next(colours), label=f"trial {t.number}", zorder=3)
        else:
            ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], style, lw=0.8,
                    color="0.75", zorder=2)
    ax.set(title=title.replace(": ", ":\n", 1), xlabel="epoch", ylabel="training loss",
           yscale="log")
    ax.grid(alpha=0.3)
    if front:
        ax.legend(title="front", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _qualitative(n: int) -> list:
    """``n`` distinct colours (tab10, then tab20's lighter ones)."""
    palette = list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors[1::2])
    return [palette[i % len(palette)] for i in range(max(n, 1))]


def _trial_for_usage(study, number: int | None) -> FrozenTrial:
    """The trial whose routing is drawn: ``number``, or by default the knee of the front
    trials that really choose (MoE layers with k < E; a k = E layer runs every expert)."""
    if number is None:
        front = [t for t in pareto_trials(study) if TrialRecord(t).expert_usage]
        if not front:
            raise AutomoeError("no front trial has MoE layers; pass --trial N")
        choosing = [t for t in front if _chooses(t)] or front
        names = study_objectives(study)
        return choosing[knee_order([minimised(t.values, names) for t in choosing])[0]]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise AutomoeError(f"study {study.study_name!r} has no trial {number}")
    if not TrialRecord(trials[number]).expert_usage:
        raise AutomoeError(f"trial {number} has no MoE layer (or is not complete)")
    return trials[number]


def _chooses(trial: FrozenTrial) -> bool:
    arch = TrialRecord(trial).architecture
    return arch.get("top_k", 1) < arch.get("experts", 1)


def _usage(trial: FrozenTrial, html: bool):
    record = TrialRecord(trial)
    per_class = record.expert_class_usage or {
        layer: [[c] for c in counts] for layer, counts in record.expert_usage.items()}
    arch = record.architecture
    what = f"E{arch.get('experts', '?')} k{arch.get('top_k', '?')}"
    return usage_figure(per_class, f"expert usage on the val split, trial {trial.number} "
                                   f"({what}): val samples per expert and class", html,
                        health=record.router_health)


def usage_figure(per_class: dict[str, list[list[int]]], title: str, html: bool = False,
                 health: dict[str, dict] | None = None):
    """Per MoE layer, a heatmap of how many samples of each class went to each expert.

    The colour scale starts at 0, so an even spread looks even; with ``health`` (a trial's
    ``router_health``) each layer's title gives its effective experts out of E.
    """
    layers = list(per_class)
    health = health or {}

    def heading(layer: str) -> str:
        h = health.get(layer)
        if not h:
            return layer
        special = (f", NMI {h['specialisation']:.2f}" if h.get("specialisation") is not None
                   else "")  # how much the expert choice tells about the class
        return (f"{layer}\n{h['effective_experts']:.2f} of {h['num_experts']} effective "
                f"experts{special}")

    top = max((max(map(max, per_class[layer]), default=0) for layer in layers), default=1)
    if html:
        fig = make_subplots(rows=1, cols=len(layers),
                            subplot_titles=[heading(layer).replace("\n", "<br>")
                                            for layer in layers])
        for i, layer in enumerate(layers):
            fig.add_trace(go.Heatmap(z=per_class[layer], coloraxis="coloraxis"), 1, i + 1)
        fig.update_layout(title=title, coloraxis={"colorscale": "Viridis", "cmin": 0,
                                                  "cmax": top,
                                                  "colorbar": {"title": "val samples"}})
        return fig
    fig = Figure(figsize=(2.4 + 2.8 * len(layers), 3.4), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        image = ax.imshow(per_class[layer], aspect="auto", cmap="viridis", vmin=0, vmax=top)
        experts, classes = len(per_class[layer]), len(per_class[layer][0])
        ax.set(title=heading(layer), xlabel="class", ylabel="expert", yticks=range(experts),
               xticks=range(0, classes, max(1, classes // 10)))
        ax.title.set_fontsize(9)
    fig.colorbar(image, ax=axes[0].tolist(), label="val samples")
    fig.suptitle(title, fontsize=10)
    return fig
