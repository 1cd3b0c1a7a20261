"""Reading a study: the trial record, Pareto fronts, hypervolume, summaries, plots,
verification of a front, checkpoint retention and the notes optuna-dashboard shows.

Everything a trial stores goes through :class:`TrialWriter` and is read back through
:class:`TrialRecord` / :class:`StudyRecord` (``_record``, the one module that knows the
attribute keys). The front is lazy: reading a front (``pareto``, ``status``) loads neither
torch nor plotting; :func:`verify_front` and :func:`write_plot` load them when called.
"""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    # the record: what a trial and a study store
    "MEASURED": "._record", "StudyRecord": "._record", "TrialRecord": "._record",
    "TrialWriter": "._record", "enqueue_finalist": "._record", "enqueue_warm_trial": "._record",
    "enqueue_table_run": "._record", "fail_stored_trial": "._record",
    "verified_results": "._record",
    # a study's identity
    "check_study_name": "._study", "space_of_study": "._study",
    "study_folder_name": "._study", "study_objectives": "._study",
    # fronts
    "front_hypervolume": "._pareto", "is_feasible": "._pareto", "knee_order": "._pareto",
    "nondominated": "._pareto", "pareto_trials": "._pareto", "trial_row": "._pareto",
    "study_hypervolume": "._hypervolume",
    "StudySummary": "._summary", "summarize_study": "._summary",
    # checkpoints: stored and fetched (sha256 checked) in one place, kept for the front only
    "CheckpointMissing": "._artifacts", "fetch_checkpoint": "._artifacts",
    "store_trial_files": "._artifacts", "failing_on_disk_errors": "._artifacts",
    "KEEP": "._retention", "checkpoint_retention": "._retention", "checkpoint_size": "._retention",
    "remove_dominated_checkpoints": "._retention",
    # plots (matplotlib, plotly) and verification (torch): loaded when used
    "MIN_TRIALS_FOR_IMPORTANCE": "._plots", "PLOTS": "._plots", "usage_figure": "._plots",
    "write_plot": "._plots",
    "VerifyConfig": "._verify", "trial_model": "._verify", "verify_front": "._verify",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
