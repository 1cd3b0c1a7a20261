"""Exact hypervolume of a front (any number of objectives; meant for 2 to 4).

Optuna's own computation is private, so automoe keeps this small exact one: the volume
dominated by the points and bounded by a reference point, all objectives minimised. For
d > 2 it slices along the last objective (HSO, While et al. 2006), so the cost grows as
n^(d-1), fine for the fronts of a study (hundreds of points).
"""

from __future__ import annotations

import numpy as np

from automoe.space._metrics import minimised


def hypervolume(points, reference) -> float:
    """Volume dominated by ``points`` (n, d) and bounded by ``reference`` (d,), minimising.

    Points that do not strictly dominate the reference in every objective add nothing.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=float)
    pts = pts[(pts < ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(_hv(pts, ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    d = pts.shape[1]
    if d == 1:
        return ref[0] - pts[:, 0].min()
    if d == 2:
        order = np.argsort(pts[:, 0])
        volume, best_y = 0.0, ref[1]
        xs = np.append(pts[order, 0], ref[0])
        for i, idx in enumerate(order):
            best_y = min(best_y, pts[idx, 1])
            volume += (xs[i + 1] - xs[i]) * (ref[1] - best_y)
        return volume
    # slice along the last objective: between consecutive levels, the dominated region is
    # the (d-1)-dimensional hypervolume of the points at or below the level
    order = np.argsort(pts[:, -1])
    levels = np.append(pts[order, -1], ref[-1])
    volume = 0.0
    for i in range(len(order)):
        depth = levels[i + 1] - levels[i]
        if depth > 0:
            volume += depth * _hv(pts[order[: i + 1], :-1], ref[:-1])
    return volume


def study_hypervolume(values, reference, names=("val_accuracy", "mmacs", "robust_accuracy")
                      ) -> float:
    """Hypervolume of objective values (rows in the order of ``names``, each metric in its
    own direction) against a reference point in the same units."""
    return hypervolume([minimised(v, names) for v in values], minimised(reference, names))
