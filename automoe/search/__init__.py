"""Running a search: :func:`run_search` and its executors (this process, local worker
processes, a Ray cluster), the trial (:class:`TrialRunner`), studies, workers, samplers,
multi-fidelity promotion, the NNI adapter and the weight-sharing supernet
(``automoe.search.supernet``).

Defining a search is :mod:`automoe.space`; reading its results is :mod:`automoe.results`.
The front is lazy, so that a command naming an executor or a sampler does not load torch.
"""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "EXECUTORS": "._run", "ClusterConfig": "._run", "SearchRun": "._run",
    "register_executor": "._run", "run_search": "._run",
    "SAMPLERS": "._samplers", "make_sampler": "._samplers", "register_sampler": "._samplers",
    "available_samplers": "._samplers", "sampler_spec": "._samplers",
    "create_or_resume_study": "._study", "sampler_seed": "._study", "training_seed": "._study",
    "run_trials": "._study", "count_trials": "._study",
    "TrialRunner": "._trial",
    "WorkerConfig": "._workers",
    "resolve_device": "._workers", "run_worker": "._workers",
    "run_workers": "._executors",
    "enqueue_warm_start": "._warm", "warm_start_configs": "._warm",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
