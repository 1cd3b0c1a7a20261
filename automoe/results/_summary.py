"""A study at a glance: trials by state, the front, router health, best values, workers.

What ``automoe status`` shows, computed here so that the CLI only draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial

from automoe.results._pareto import front_hypervolume, is_feasible, pareto_trials
from automoe.results._record import StudyRecord, TrialRecord
from automoe.results._study import study_objectives
from automoe.space._metrics import COLLAPSED_BELOW, METRICS

STATES = ("COMPLETE", "RUNNING", "PRUNED", "FAIL", "WAITING")


@dataclass
class WorkerRow:
    """The trials one worker (host, process, Ray node) ran."""

    host: str
    pid: str
    ray_node: str  # "" off Ray
    executor: str
    states: dict[str, int]  # trial state name -> count
    trials: list[int]  # trial numbers, in order


@dataclass
class StudySummary:
    """One snapshot of a study."""

    name: str
    objectives: tuple[str, ...]
    states: dict[str, int]  # trial state name -> count
    front_size: int
    hypervolume: float
    reference: tuple[float, ...]
    complete: int  # complete trials with values
    feasible: int  # of those, feasible
    verified: int  # front trials verified by `automoe verify`
    # proxy - verified robust accuracy over the verified front trials: (mean, largest)
    verify_gap: tuple[float, float] | None
    masking: list[int]  # verified front trials a gradient-free attack beat (gradient masking)
    moe_trials: int  # complete trials with routers
    collapsed: int  # of those, expert use below COLLAPSED_BELOW
    lowest_use: tuple[float, int] | None  # (expert use, trial number)
    # specialisation (expert-class NMI) over the MoE trials: (mean, (highest, its trial))
    specialisation: tuple[float, tuple[float, int]] | None = None
    # objective -> (value, trial number) of the best feasible trial
    best: dict[str, tuple[float, int]] = field(default_factory=dict)
    # (trial number, start time, "host:pid") of each running trial
    running: list[tuple[int, datetime | None, str]] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)


def summarize_study(study: optuna.Study) -> StudySummary:
    """The snapshot ``automoe status`` draws."""
    names = study_objectives(study)
    trials = study.get_trials(deepcopy=False)
    states = {s: sum(t.state.name == s for t in trials) for s in STATES}
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    feasible = [t for t in complete if is_feasible(t)]
    front = pareto_trials(study)
    hv, reference = front_hypervolume(study)
    verified = StudyRecord(study).verified
    checked = [verified[t.number] for t in front if t.number in verified]
    gaps = [r["robust_accuracy_proxy"] - r["robust_accuracy_verified"] for r in checked
            if r.get("robust_accuracy_proxy") is not None]
    use = {t.number: TrialRecord(t).expert_use for t in complete}
    use = {number: value for number, value in use.items() if value is not None}
    lowest = min(use, key=use.get) if use else None
    special = {t.number: TrialRecord(t).metric("specialisation") for t in complete
               if t.number in use}
    special = {number: value for number, value in special.items() if value is not None}
    most = max(special, key=special.get) if special else None
    best = {}
    for i, name in enumerate(names):
        if feasible:
            pick = (max if METRICS[name].maximize else min)(feasible, key=lambda t: t.values[i])
            best[name] = (pick.values[i], pick.number)
    running = []
    for t in trials:
        if t.state.name == "RUNNING":
            worker = TrialRecord(t).worker
            running.append((t.number, t.datetime_start,
                            f"{worker.get('host', '?')}:{worker.get('pid', '?')}"))
    return StudySummary(
        name=study.study_name, objectives=names, states=states, front_size=len(front),
        hypervolume=hv, reference=tuple(reference), complete=len(complete),
        feasible=len(feasible), verified=len(checked),
        verify_gap=(sum(gaps) / len(gaps), max(gaps)) if gaps else (
            (0.0, 0.0) if checked else None),
        masking=sorted(t.number for t in front if verified.get(t.number, {}).get(
            "masking_suspected")),
        moe_trials=len(use), collapsed=sum(v < COLLAPSED_BELOW for v in use.values()),
        lowest_use=None if lowest is None else (use[lowest], lowest),
        specialisation=None if most is None else (
            sum(special.values()) / len(special), (special[most], most)), best=best,
        running=running, workers=worker_rows(trials))


def worker_rows(trials: list[FrozenTrial]) -> list[WorkerRow]:
    """Which worker (host, process, Ray node) ran which trials, and how they ended."""
    rows: dict[tuple, WorkerRow] = {}
    for t in trials:
        worker = TrialRecord(t).worker
        if not worker:
            continue
        key = (str(worker.get("host", "?")), str(worker.get("pid", "?")),
               worker.get("ray_node", ""))
        row = rows.setdefault(key, WorkerRow(*key, executor=worker.get("executor", "-"),
                                             states={s: 0 for s in STATES}, trials=[]))
        row.states[t.state.name] = row.states.get(t.state.name, 0) + 1
        row.trials.append(t.number)
    return list(rows.values())
