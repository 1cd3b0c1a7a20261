"""What a trial and a study store in the study DB, and how it is read back.

This is the one module that reads or writes Optuna user attributes: the search writes a
trial through :class:`TrialWriter`, and pareto, pick, plots, status, the model card and the
CLI read it through :class:`TrialRecord`, with the defaults below and nowhere else. The
same holds for study-level attributes (:class:`StudyRecord`).

A complete trial stores (key: what):

* ``config``: the candidate as sampled (:meth:`Candidate.to_dict`); ``architecture``: the
  built model's placement, granularity, experts, top-k and width; ``dataset``: the data
  spec to rebuild its splits; ``worker``: host, pid, device, threads, executor, Ray node;
* each measured metric under its name (:data:`~automoe.search.METRICS`, plus
  ``test_accuracy``), ``objective_std`` and ``repeats`` when trained with several seeds;
* ``router_health``, ``expert_usage``, ``expert_class_usage`` (MoE trials);
* ``params``, ``macs``, ``history``, ``train_seconds``, ``eval_seconds``,
  ``epochs_trained``, ``attack``, ``constraints``/``feasible``, ``checkpoint``;
* when it applies: ``fidelity`` ("supernet"), ``subnet``, ``supernet_trial``,
  ``resumed_from``, ``rungs``, ``fail_reason``, ``prune_reason``, ``nni``.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from automoe.space._metrics import METRICS

# measured values stored under their own names: the objectives and the rest
MEASURED = (*METRICS, "test_accuracy")
_VERIFIED_PREFIX = "verified:"  # study attr per verified trial: verified:<number>
_NNI = "nni"  # what NNI proposed and how its result was scalarised


class TrialRecord:
    """A stored trial, read back. Every reader of a trial's attributes goes through here,
    so a missing attribute has one default (``None`` unless said otherwise)."""

    def __init__(self, trial: FrozenTrial | optuna.Trial):
        self.trial = trial
        self._attrs = trial.user_attrs

    # -------------------------------------------------------------- what was run

    @property
    def config(self) -> dict:
        """The candidate as sampled (``model_name``, ``model``, ``train``, ``params``,
        ``unused``); ``{}`` before it was sampled."""
        return self._attrs.get("config") or {}

    @property
    def architecture(self) -> dict:
        """``{model, moe, placement, granularity, experts, top_k, width_multiplier}`` of the
        model as built (see :meth:`Candidate.architecture`); ``{}`` before it was built."""
        return self._attrs.get("architecture") or {}

    @property
    def is_moe(self) -> bool:
        """Whether the built model has MoE units."""
        return bool(self.architecture.get("moe"))

    @property
    def dataset(self) -> dict:
        """``{name, image_size}``: what rebuilds the trial's splits."""
        return self._attrs.get("dataset") or {}

    @property
    def worker(self) -> dict:
        """``{host, pid, device, threads, run?, executor?, ray_node?}``."""
        return self._attrs.get("worker") or {}

    @property
    def fidelity(self) -> str:
        """"supernet" for inherited weights, else "trained"."""
        return self._attrs.get("fidelity", "trained")

    @property
    def subnet(self) -> dict | None:
        return self._attrs.get("subnet")

    @property
    def supernet_origin(self) -> dict:
        """``{study, trial, values}`` of the supernet trial this finalist re-trains."""
        return self._attrs.get("supernet_trial") or {}

    @property
    def resumed_from(self) -> dict | None:
        return self._attrs.get("resumed_from")

    @property
    def nni(self) -> dict | None:
        return self._attrs.get(_NNI)

    @property
    def warm_start(self) -> dict | None:
        """``{study, trial}``: the earlier study's front trial this one was enqueued from
        (``search --warm-start``)."""
        return self._attrs.get("warm_start")

    @property
    def table_seed(self) -> int | None:
        """The training seed of a tabular-benchmark run (bench/moe_table.py)."""
        return self._attrs.get("table_seed")

    @property
    def table_row(self) -> dict | None:
        """The row a tabular-benchmark run recorded: its learning curve and costs."""
        return self._attrs.get("table_row")

    # -------------------------------------------------------------- what it measured

    def metric(self, name: str) -> float | None:
        """A measured value (an objective or not) by name; None when not measured."""
        return self._attrs.get(name)

    @property
    def metrics(self) -> dict[str, float]:
        """Every measured metric, objective or not."""
        return {k: self._attrs[k] for k in MEASURED if k in self._attrs}

    @property
    def expert_use(self) -> float | None:
        """Router health in one number (None for a dense trial)."""
        return self._attrs.get("expert_use")

    @property
    def router_health(self) -> dict | None:
        return self._attrs.get("router_health")

    @property
    def expert_usage(self) -> dict | None:
        return self._attrs.get("expert_usage")

    @property
    def expert_class_usage(self) -> dict | None:
        return self._attrs.get("expert_class_usage")

    @property
    def params(self) -> int | None:
        return self._attrs.get("params")

    @property
    def macs(self) -> dict | None:
        return self._attrs.get("macs")

    @property
    def objective_std(self) -> dict | None:
        return self._attrs.get("objective_std")

    @property
    def repeats(self) -> list[dict] | None:
        return self._attrs.get("repeats")

    @property
    def attack(self) -> dict | None:
        return self._attrs.get("attack")

    @property
    def history(self) -> list[dict]:
        return self._attrs.get("history") or []

    @property
    def seconds(self) -> float:
        """Training and evaluation time of the trial."""
        return self._attrs.get("train_seconds", 0) + self._attrs.get("eval_seconds", 0)

    @property
    def eval_seconds(self) -> float:
        """Evaluation time of the trial (rungs included)."""
        return self._attrs.get("eval_seconds", 0.0)

    @property
    def epochs_trained(self) -> int | None:
        return self._attrs.get("epochs_trained")

    @property
    def feasible(self) -> bool:
        return self._attrs.get("feasible", True)

    @property
    def rungs(self) -> dict:
        """Epoch (as str) -> its objective values and violation at that rung."""
        return self._attrs.get("rungs") or {}

    @property
    def checkpoint(self) -> dict | None:
        """``{artifact_id, sha256}`` of the trained model."""
        return self._attrs.get("checkpoint")

    @property
    def fail_reason(self) -> str | None:
        return self._attrs.get("fail_reason")

    @property
    def prune_reason(self) -> str | None:
        return self._attrs.get("prune_reason")


class TrialWriter:
    """Writes a running trial's record (see the module docstring for what it holds)."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def _set(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def started(self, config: dict, architecture: dict, dataset: dict, worker: dict,
                supernet: bool) -> None:
        self._set("config", config)
        self._set("architecture", architecture)
        self._set("dataset", dataset)
        self._set("worker", worker)
        if supernet:
            self._set("fidelity", "supernet")

    def resumed_from(self, trial: int, epochs_done: int, repeat: int) -> None:
        self._set("resumed_from", {"trial": trial, "epochs_done": epochs_done,
                                   "repeat": repeat})

    def subnet(self, spec: dict) -> None:
        self._set("subnet", spec)

    def params(self, count: int) -> None:
        self._set("params", count)

    def costs(self, macs: dict, costs: dict[str, float]) -> None:
        """The MACs breakdown and the cost metrics (mmacs, mparams, latency_ms)."""
        self._set("macs", macs)
        for name, value in costs.items():
            self._set(name, value)

    def metrics(self, metrics: dict[str, float], attack: dict | None = None) -> None:
        """The measured values, under names the dashboard shows beside the config, and the
        attack robust accuracy was measured under."""
        for name, value in metrics.items():
            self._set(name, value)
        if attack is not None:
            self._set("attack", attack)

    def repeats(self, finished: list[dict], std: dict[str, float]) -> None:
        self._set("repeats", finished)
        self._set("objective_std", std)

    def routers(self, health: dict | None, usage: dict, class_usage: dict | None) -> None:
        if health:
            self._set("router_health", health)
        self._set("expert_usage", usage)
        if class_usage:
            self._set("expert_class_usage", class_usage)

    def router_health(self, measurement, class_usage: dict | None) -> None:
        """The routers of a :class:`~automoe.space.Measurement`'s val pass: per layer its
        health and (top-k routed layers) its expert-class specialisation, the expert counts
        and the experts x classes counts."""
        nmi = measurement.specialisation
        self.routers({name: {**h.to_dict(), **({"specialisation": nmi[name]} if name in nmi
                                               else {})}
                      for name, h in measurement.router_health.items()},
                     measurement.usage.counts(), class_usage)

    def training(self, history: list[dict], epochs_trained: int,
                 train_seconds: float | None = None, eval_seconds: float | None = None) -> None:
        self._set("history", history)
        self._set("epochs_trained", epochs_trained)
        if train_seconds is not None:
            self._set("train_seconds", round(train_seconds, 3))
        if eval_seconds is not None:
            self._set("eval_seconds", round(eval_seconds, 3))

    def eval_seconds(self, seconds: float) -> None:
        self._set("eval_seconds", round(seconds, 3))

    def constraints(self, violations: dict[str, float]) -> None:
        """Optuna 5 constraints, mirrored in user attrs: optuna-dashboard 0.21 does not
        show v5 constraints (none for a space without constraints)."""
        if not violations:
            return
        for name, value in violations.items():
            self.trial.set_constraint(name, value)
        self._set("constraints", violations)
        self._set("feasible", all(v <= 0 for v in violations.values()))

    def rungs(self, rungs: dict) -> None:
        self._set("rungs", rungs)

    def checkpoint(self, artifact_id: str, sha256: str) -> None:
        self._set("checkpoint", {"artifact_id": artifact_id, "sha256": sha256})

    def table_row(self, row: dict) -> None:
        self._set("table_row", row)

    def failed(self, reason: str) -> None:
        self._set("fail_reason", reason)

    def pruned(self, reason: str) -> None:
        self._set("prune_reason", reason)


def fail_stored_trial(storage: optuna.storages.BaseStorage, trial_id: int,
                      reason: str) -> None:
    """Mark a trial another process was running as failed, with ``reason``.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: it finished meanwhile.
    """
    storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


def write_nni(storage: optuna.storages.BaseStorage, trial_id: int, record: dict) -> None:
    """Store what NNI proposed for a trial (and later how its result was scalarised)."""
    storage.set_trial_user_attr(trial_id, _NNI, record)


def enqueue_table_run(study: optuna.Study, params: dict, seed: int) -> None:
    """Enqueue one tabular-benchmark run: ``params`` trained with training seed ``seed``
    (see :attr:`TrialRecord.table_seed`)."""
    study.enqueue_trial(params, user_attrs={"table_seed": seed})


def enqueue_warm_trial(study: optuna.Study, params: dict, origin_study: str,
                       number: int) -> None:
    """Enqueue a configuration of an earlier study's front, recording where it came from
    (see :attr:`TrialRecord.warm_start`); one already enqueued or run is skipped."""
    study.enqueue_trial(params, user_attrs={"warm_start": {"study": origin_study,
                                                           "trial": number}},
                        skip_if_exists=True)


def enqueue_finalist(study: optuna.Study, params: dict, origin_study: str, number: int,
                     values: dict[str, float]) -> None:
    """Enqueue a supernet sub-network to be trained stand-alone, recording the supernet
    trial it came from and that trial's values (see :attr:`TrialRecord.supernet_origin`)."""
    study.enqueue_trial(params, user_attrs={
        "supernet_trial": {"study": origin_study, "trial": number, "values": values}})


class StudyRecord:
    """A study's own attributes: its space, seed, fidelity and verified front."""

    def __init__(self, study: optuna.Study):
        self.study = study

    @property
    def seed(self) -> int:
        """Base training seed: trial n trains with ``seed + n``."""
        return int(self.study.user_attrs.get("seed", 0))

    @property
    def space_fingerprint(self) -> str | None:
        return self.study.user_attrs.get("space_fingerprint")

    @property
    def space_raw(self) -> dict | None:
        """The space mapping the study was created from (workers rebuild it)."""
        return self.study.user_attrs.get("space_raw")

    @property
    def fidelity(self) -> str:
        return self.study.user_attrs.get("fidelity", "trained")

    @property
    def screen_attack_samples(self) -> int | None:
        """Val samples the supernet screen attacked (None: all)."""
        return self.study.user_attrs.get("screen_attack_samples")

    @property
    def verified(self) -> dict[int, dict]:
        """Trial number -> its verification record."""
        return {int(key[len(_VERIFIED_PREFIX):]): value
                for key, value in self.study.user_attrs.items()
                if key.startswith(_VERIFIED_PREFIX)}

    @property
    def sampler(self) -> dict | None:
        """The sampler spec (``{"name", **options}``) of the study's latest run, which its
        workers build; None for a study of an older automoe (or a sampler object)."""
        return self.study.user_attrs.get("sampler")

    def write_sampler(self, spec: dict) -> None:
        self.study.set_user_attr("sampler", spec)

    def write_space(self, fingerprint: str, space: dict, raw: dict, seed: int) -> None:
        self.study.set_user_attr("space_fingerprint", fingerprint)
        self.study.set_user_attr("space", space)
        self.study.set_user_attr("space_raw", raw)
        self.study.set_user_attr("seed", seed)

    def write_supernet_screen(self, attack_samples: int | None) -> None:
        """Mark the study as a supernet screen, and on how many samples it attacked (the
        finalists' full evaluations are compared with it)."""
        self.study.set_user_attr("fidelity", "supernet")
        self.study.set_user_attr("screen_attack_samples", attack_samples)

    def write_verified(self, number: int, record: dict) -> None:
        self.study.set_user_attr(f"{_VERIFIED_PREFIX}{number}", record)


def verified_results(study: optuna.Study) -> dict[int, dict]:
    """Trial number -> its verification record (``robust_accuracy_verified`` in %, the
    accuracy per attack, the attacks' settings and the number of samples)."""
    return StudyRecord(study).verified
