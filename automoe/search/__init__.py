"""Search: declarative spaces, the trial objective, studies and Pareto selection."""

from __future__ import annotations

from automoe.search.metrics import DEFAULT_OBJECTIVES, METRICS
from automoe.search.pareto import pareto_trials, trial_row
from automoe.search.record import StudyRecord, TrialRecord, TrialWriter
from automoe.search.space import (
    PARAMS,
    SAMPLERS,
    Candidate,
    Dimension,
    SearchSpace,
    resolve_space_path,
)
from automoe.search.study import (
    check_study_name,
    create_or_resume_study,
    make_sampler,
    run_trials,
    sampler_seed,
    space_of_study,
    study_objectives,
    training_seed,
)
from automoe.search.trial import TrialRunner, build_model

__all__ = [
    "DEFAULT_OBJECTIVES",
    "METRICS",
    "PARAMS",
    "SAMPLERS",
    "Candidate",
    "Dimension",
    "SearchSpace",
    "StudyRecord",
    "TrialRecord",
    "TrialRunner",
    "TrialWriter",
    "build_model",
    "check_study_name",
    "create_or_resume_study",
    "make_sampler",
    "pareto_trials",
    "resolve_space_path",
    "run_trials",
    "sampler_seed",
    "space_of_study",
    "study_objectives",
    "training_seed",
    "trial_row",
]
