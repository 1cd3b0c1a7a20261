"""Multi-fidelity search: asynchronous successive halving on epochs, Pareto promotion.

Optuna's pruners are single-objective (``trial.report`` raises in multi-objective studies),
so automoe decides promotions itself. A trial trains under the full schedule of the space's
epochs and is evaluated at each rung (``min_epochs``, ``min_epochs * eta``, ... below the
full epochs). At a rung it goes on only if it ranks in the best ``max(1, n // eta)`` of the
``n`` trials that have reached that rung so far (running, complete or pruned), ranked by
constraint violation, then non-dominated sorting rank, then crowding distance (NSGA-II's
order); otherwise it is stored as PRUNED with its rung values and learning curve. As in
ASHA, no trial waits for others: early trials are promoted more easily, later ones face a
fuller rung.
"""

from __future__ import annotations

import math
import time

import numpy as np
import optuna

from automoe.results import TrialRecord, TrialWriter
from automoe.space import measure, minimised


def nondominated_ranks(points) -> list[int]:
    """Front index of each point (0 = non-dominated), every objective minimised."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    if n == 0:
        return []
    le = (pts[:, None, :] <= pts[None, :, :]).all(-1)
    lt = (pts[:, None, :] < pts[None, :, :]).any(-1)
    dominates = le & lt  # dominates[i, j]: i dominates j
    remaining = np.ones(n, dtype=bool)
    ranks = [0] * n
    rank = 0
    while remaining.any():
        dominated = (dominates & remaining[:, None]).any(0)
        front = remaining & ~dominated
        for i in np.flatnonzero(front):
            ranks[i] = rank
        remaining &= ~front
        rank += 1
    return ranks


def crowding_distances(points) -> list[float]:
    """NSGA-II crowding distance of each point within its set (boundary points: inf)."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    if n <= 2:
        return [math.inf] * n
    distance = np.zeros(n)
    for j in range(pts.shape[1]):
        order = np.argsort(pts[:, j], kind="stable")
        span = pts[order[-1], j] - pts[order[0], j]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0:
            gaps = (pts[order[2:], j] - pts[order[:-2], j]) / span
            distance[order[1:-1]] += gaps
    return distance.tolist()


def promotion_order(entries: dict[int, tuple[tuple[float, ...], float]]) -> list[int]:
    """Keys of ``entries`` best first.

    Args:
        entries: key -> (minimised objective values, constraint violation >= 0).
    """
    keys = list(entries)
    feasible = [k for k in keys if entries[k][1] <= 0]
    infeasible = sorted((k for k in keys if entries[k][1] > 0), key=lambda k: entries[k][1])
    points = [entries[k][0] for k in feasible]
    ranks = nondominated_ranks(points)
    crowding = [0.0] * len(feasible)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(members, crowding_distances([points[i] for i in members]), strict=True):
            crowding[i] = d
    order = sorted(range(len(feasible)), key=lambda i: (ranks[i], -crowding[i], feasible[i]))
    return [feasible[i] for i in order] + infeasible


def is_promoted(key: int, entries: dict[int, tuple[tuple[float, ...], float]],
                reduction_factor: int) -> bool:
    """Whether ``key`` is among the best ``max(1, n // reduction_factor)`` entries."""
    keep = max(1, len(entries) // reduction_factor)
    return key in promotion_order(entries)[:keep]


def promoted_at_rung(trial: optuna.Trial, epoch: int, metrics: dict, space) -> bool:
    """Record ``trial``'s values at the rung ``epoch`` and rank it among every trial's
    there (running, complete or pruned) by the space's objectives and constraints."""
    rungs = dict(TrialRecord(trial).rungs)
    rungs[str(epoch)] = {name: metrics[name] for name in space.objectives}
    params = TrialRecord(trial).params
    rungs[str(epoch)]["violation"] = sum(
        max(v, 0.0) for v in space.violations({**metrics, "params": params}).values())
    TrialWriter(trial).rungs(rungs)
    states = optuna.trial.TrialState
    entries = {}
    for other in trial.study.get_trials(deepcopy=False, states=(
            states.RUNNING, states.COMPLETE, states.PRUNED)):
        record = (rungs if other.number == trial.number
                  else TrialRecord(other).rungs).get(str(epoch))
        if record is not None:
            values = [record[name] for name in space.objectives]
            entries[other.number] = (minimised(values, space.objectives), record["violation"])
    return is_promoted(trial.number, entries, space.fidelity["reduction_factor"])


def rung_check(trial: optuna.Trial, model, splits, space, device: str, seconds: dict,
               already: int = 0):
    """An epoch callback that, at each of the space's rungs, measures ``model`` and stores
    the trial as PRUNED (raising :class:`optuna.TrialPruned`) when it is not promoted.

    ``already``: epochs a resumed trial's origin trained. The time spent measuring is
    added to ``seconds["eval"]``.
    """
    rungs = set(space.rungs())
    evaluation = space.evaluation(device, test=False)

    def check(epoch: int, progress) -> None:
        if epoch not in rungs:
            return
        start = time.perf_counter()
        measured = measure(model, splits, evaluation)
        record = TrialWriter(trial)
        record.costs(measured.macs, measured.costs())
        seconds["eval"] += time.perf_counter() - start
        if not promoted_at_rung(trial, epoch, measured.metrics, space):
            record.training(progress.history, len(progress.history) - already, progress.seconds)
            record.eval_seconds(seconds["eval"])
            reason = (f"not among the best 1/{space.fidelity['reduction_factor']} of the trials "
                      f"at epoch {epoch}")
            record.pruned(reason)
            raise optuna.TrialPruned(reason)

    return check
