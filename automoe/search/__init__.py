"""Search: declarative spaces, trials and their record, studies, workers, Pareto
selection, verification, plots and the weight-sharing supernet (``automoe.search.supernet``).
"""

from __future__ import annotations

from automoe.search._executors import EXECUTORS, ClusterConfig, run_workers, search_with_workers
from automoe.search._hypervolume import study_hypervolume
from automoe.search._metrics import (
    COLLAPSED_BELOW,
    DEFAULT_OBJECTIVES,
    METRICS,
    minimised,
    parse_reference,
)
from automoe.search._pareto import (
    front_hypervolume,
    is_feasible,
    knee_order,
    pareto_trials,
    trial_row,
)
from automoe.search._plots import MIN_TRIALS_FOR_IMPORTANCE, PLOTS, write_plot
from automoe.search._record import MEASURED, StudyRecord, TrialRecord, TrialWriter
from automoe.search._retention import (
    checkpoint_retention,
    checkpoint_size,
    remove_dominated_checkpoints,
)
from automoe.search._study import (
    check_study_name,
    create_or_resume_study,
    make_sampler,
    run_trials,
    sampler_seed,
    space_of_study,
    study_objectives,
    training_seed,
)
from automoe.search._summary import StudySummary, summarize_study
from automoe.search._trial import TrialRunner, build_model
from automoe.search._verify import VerifyConfig, trial_model, verified_results, verify_front
from automoe.search._workers import KEEP, WorkerConfig, count_trials, resolve_device, run_worker
from automoe.search.space import (
    PARAMS,
    SAMPLERS,
    Candidate,
    Dimension,
    SearchSpace,
    list_spaces,
    parse_number,
    resolve_space_path,
)

__all__ = [
    "COLLAPSED_BELOW",
    "DEFAULT_OBJECTIVES",
    "EXECUTORS",
    "KEEP",
    "MEASURED",
    "METRICS",
    "MIN_TRIALS_FOR_IMPORTANCE",
    "PARAMS",
    "PLOTS",
    "SAMPLERS",
    "Candidate",
    "ClusterConfig",
    "Dimension",
    "SearchSpace",
    "StudyRecord",
    "StudySummary",
    "TrialRecord",
    "TrialRunner",
    "TrialWriter",
    "VerifyConfig",
    "WorkerConfig",
    "build_model",
    "check_study_name",
    "checkpoint_retention",
    "checkpoint_size",
    "count_trials",
    "create_or_resume_study",
    "front_hypervolume",
    "is_feasible",
    "knee_order",
    "list_spaces",
    "make_sampler",
    "minimised",
    "pareto_trials",
    "parse_number",
    "parse_reference",
    "remove_dominated_checkpoints",
    "resolve_device",
    "resolve_space_path",
    "run_trials",
    "run_worker",
    "run_workers",
    "sampler_seed",
    "search_with_workers",
    "space_of_study",
    "study_objectives",
    "study_hypervolume",
    "summarize_study",
    "training_seed",
    "trial_model",
    "trial_row",
    "verified_results",
    "verify_front",
    "write_plot",
]
