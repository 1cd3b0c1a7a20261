import itertools

import numpy as np
import pytest

from automoe.results._hypervolume import hypervolume, study_hypervolume


def _inclusion_exclusion(points, ref):
    """Union of boxes [p, ref] by inclusion-exclusion (exact; tiny inputs only)."""
    total = 0.0
    for r in range(1, len(points) + 1):
        for subset in itertools.combinations(points, r):
            corner = np.max(subset, axis=0)
            total += (-1) ** (r + 1) * np.prod(np.clip(ref - corner, 0, None))
    return total


def test_hand_computed_fronts():
    assert hypervolume([[1, 2], [2, 1]], [3, 3]) == pytest.approx(3.0)
    assert hypervolume([[1, 1, 1]], [2, 2, 2]) == pytest.approx(1.0)
    assert hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]) == pytest.approx(3.0)
    assert hypervolume([[3, 0]], [2, 2]) == 0.0  # does not dominate the reference
    assert hypervolume([[1, 1], [1.5, 1.5]], [2, 2]) == pytest.approx(1.0)  # dominated point


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_matches_inclusion_exclusion_on_random_fronts(dims):
    rng = np.random.default_rng(dims)
    for _ in range(20):
        points = rng.random((rng.integers(1, 7), dims))
        ref = np.ones(dims) * 1.1
        assert hypervolume(points, ref) == pytest.approx(_inclusion_exclusion(points, ref))


def test_study_objectives_are_turned_to_minimisation():
    # one trial: 90 % accuracy, 2 MMACs, 50 % robust; reference 0 %, 4 MMACs, 0 %
    assert study_hypervolume([(90.0, 2.0, 50.0)], (0.0, 4.0, 0.0)) == pytest.approx(90 * 2 * 50)


def test_study_hypervolume_follows_the_objective_names():
    # accuracy (max) and params (min): 80 % at 0.5 M against (0 %, 1 M) -> 80 * 0.5
    assert study_hypervolume([(80.0, 0.5)], (0.0, 1.0), ("val_accuracy", "mparams")) == \
        pytest.approx(40.0)
    # a point worse than the reference in one objective adds nothing
    assert study_hypervolume([(80.0, 1.5)], (0.0, 1.0), ("val_accuracy", "mparams")) == 0.0
