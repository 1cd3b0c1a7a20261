"""One trial: build the sampled MoE-CNN, train it, measure its objectives."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from automoe.data import load_dataset
from automoe.errors import ConfigError, StorageError, TrainingDivergedError
from automoe.layers import expert_use, specialisation, track_expert_usage
from automoe.models import count_flops, count_params, create_model, measure_latency
from automoe.robustness import robust_accuracy
from automoe.search._fidelity import is_promoted
from automoe.search._metrics import minimised
from automoe.search._plots import usage_figure
from automoe.search._record import TrialRecord, TrialWriter
from automoe.search._study import study_folder_name
from automoe.search.space import CONSTRAINTS, Candidate, SearchSpace
from automoe.storage import DISK_ERRORS, atomic_write, save_checkpoint, sha256_file
from automoe.training import TrainResult, evaluate_accuracy, recalibrate_batchnorm, train


def build_model(candidate: Candidate, info) -> torch.nn.Module:
    """The candidate's model for a dataset (dataset fields filled from ``info``)."""
    return create_model(candidate.model_name, **candidate.model, in_channels=info.in_channels,
                        num_classes=info.num_classes, image_size=info.image_size,
                        input_mean=info.mean, input_std=info.std)


class _Pruned(Exception):
    """Raised from the epoch callback when successive halving stops a trial."""


class TrialRunner:
    """The Optuna objective: returns the space's objectives (by default val accuracy %,
    active MMACs, robust accuracy %), in the space's order.

    Every trial stores its full config, FLOPs, params, accuracies, attack, expert usage,
    learning curve and timings as user attrs, and its checkpoint as an artifact. A trial
    whose loss diverges is stored as failed with its reason in ``fail_reason``. With a
    ``fidelity`` section in the space, trials are compared at rung epochs and the weaker
    ones stored as PRUNED (see :mod:`automoe.search._fidelity`).

    With ``resume_dir``, the training state is saved there after every epoch; a trial
    retried after its worker died (heartbeats) continues from the last saved epoch of the
    trial it retries, with the same seed, and ends as an unbroken run would.

    Args:
        space: the search space.
        artifact_store: where checkpoints go.
        device: torch device for training and evaluation.
        seed: base seed; trial n trains with ``seed + n`` (a retried trial keeps the seed of
            the trial it retries).
        data_root, download: as :func:`automoe.data.load_dataset`.
        on_step: progress callback ``(trial number, step, total steps)``.
        resume_dir: folder for per-epoch training states (None: no resuming).
        usage_plots: also store each MoE trial's expert-usage heatmap as an artifact.
        supernet: a trained :class:`~automoe.search.supernet.Supernet` of this space: trials
            then evaluate its sub-networks with inherited weights (BatchNorm recalibrated on
            ``recalibration_batches`` training batches) instead of training them; they are
            marked ``fidelity = "supernet"``.
        worker: more of the worker's identity for each trial's ``worker`` attribute (which
            holds host, pid and device): the executor, the worker's index, the Ray node.
    """

    def __init__(self, space: SearchSpace, artifact_store, *, device: str = "cpu", seed: int = 0,
                 data_root: str | None = None, download: bool = False,
                 on_step: Callable[[int, int, int], None] | None = None,
                 resume_dir: str | os.PathLike[str] | None = None, usage_plots: bool = True,
                 supernet=None, recalibration_batches: int = 10, worker: dict | None = None):
        if hasattr(artifact_store, "check_writable"):  # refused before a trial trains
            artifact_store.check_writable()
        self.space = space
        self.worker = dict(worker or {})  # added to each trial's `worker` attribute
        self.artifact_store = artifact_store
        self.device = device
        self.seed = seed
        self.on_step = on_step
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.usage_plots = usage_plots
        self.supernet = supernet
        self.recalibration_batches = recalibration_batches
        ds = space.dataset
        common = dict(root=data_root, image_size=ds["image_size"], download=download,
                      cache=ds.get("cache"))
        self.train_set = load_dataset(ds["name"], "train", augment=ds["augment"], **common)
        self.val_set = load_dataset(ds["name"], "val", **common)
        self.test_set = load_dataset(ds["name"], "test", **common)
        self.info = self.train_set.info
        # Fixed per study: the images FLOPs are averaged over (channel gates depend on the
        # image) and the labels of the val split, for per-class expert usage.
        n_probe = min(len(self.val_set), 256)
        self.flops_probe = torch.stack([self.val_set[i][0] for i in range(n_probe)])
        self.val_labels = torch.tensor([self.val_set[i][1] for i in range(len(self.val_set))])
        self.measured = space.measured_metrics()

    def data_spec(self) -> dict:
        """What `automoe eval` needs to rebuild the same splits."""
        return {"name": self.info.name, "image_size": self.space.dataset["image_size"]}

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        failed = tuple(float("nan") for _ in self.space.objectives)
        try:
            candidate = self.space.suggest(trial)
        except ConfigError as exc:  # the space check covers the common cases; not all
            TrialWriter(trial).failed(f"invalid candidate: {exc}")
            return failed
        origin = _origin_trial(trial)
        seeds = repeat_seeds(self.seed + origin, self.space.repeats)
        candidate.train = replace(candidate.train, seed=seeds[0])
        record = TrialWriter(trial)
        # the thread count too: CPU results repeat exactly only at the same count (it
        # changes the order of float reductions)
        worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device),
                  "threads": torch.get_num_threads(), **self.worker}
        record.started(candidate.to_dict(), candidate.architecture(), self.data_spec(),
                       worker, supernet=self.supernet is not None)

        # Only a retry of a dead worker's trial resumes, and only from a state saved for
        # the same candidate; the state goes however the trial ends, except by SIGKILL.
        resume_path = self._resume_path(trial, origin)
        key = hashlib.sha256(json.dumps(candidate.to_dict(), sort_keys=True).encode()).hexdigest()
        try:
            resume = _load_resume(resume_path, key) if origin != trial.number else None
            if resume is not None:
                record.resumed_from(origin, resume["epochs_done"], resume.get("repeat", 0))
            return self._train_and_measure(trial, candidate, seeds, resume, resume_path, key)
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            # every later trial would fail the same way: fail this one with the reason and
            # stop the search in one line (its files were written to temp names, now gone)
            reason = f"its files could not be written: {exc.strerror}" + (
                f" ({exc.filename})" if exc.filename else "")
            record.failed(reason)
            raise StorageError(f"trial {trial.number} failed, {reason}; free space or point "
                               "--artifact-dir elsewhere, then rerun to continue the study"
                               ) from None
        finally:
            _remove(resume_path)

    def _train_and_measure(self, trial: optuna.Trial, candidate: Candidate, seeds: list[int],
                           resume: dict | None, resume_path: Path | None,
                           key: str) -> tuple[float, ...]:
        """Train and measure the candidate once per seed; its values are the means.

        The last seed's model is the trial's: its checkpoint, learning curve and router
        health are stored (the last one, so a trial resumed after its worker died still
        has it in memory). Successive halving judges the trial on the first seed at the
        rungs; the other seeds run only for a trial that passed them all.
        """
        failed = tuple(float("nan") for _ in self.space.objectives)
        record = TrialWriter(trial)
        finished: list[dict] = list(resume.get("finished", [])) if resume else []
        train_seconds = eval_seconds = 0.0
        epochs_trained = 0  # by this trial: a retry does not count what its origin trained
        for repeat, seed in enumerate(seeds):
            if repeat < len(finished):
                continue  # measured before the worker died
            run = replace(candidate, train=replace(candidate.train, seed=seed))
            torch.manual_seed(seed)
            model = (self._inherit(trial, run) if self.supernet is not None
                     else build_model(run, self.info))
            params = count_params(model)
            record.params(params)
            state = resume if resume is not None and resume.get("repeat", 0) == repeat else None
            try:
                metrics, usage, result, seconds = self._one_seed(
                    trial, run, model, repeat, finished, state, resume_path, key)
            except TrainingDivergedError as exc:
                note = f" (seed {seed}, repeat {repeat + 1} of {len(seeds)})" if repeat else ""
                record.failed(f"{exc}{note}")
                return failed  # Optuna stores a NaN-valued trial as FAIL
            train_seconds += result.seconds
            eval_seconds += seconds
            epochs_trained += len(result.history) - (state["epochs_done"] if state else 0)
            finished.append({"seed": seed, **metrics})
        own_metrics = metrics  # the last seed's, stored with its checkpoint
        metrics = _mean_metrics(finished)
        if len(seeds) > 1:
            record.repeats(finished, {name: statistics.stdev(r[name] for r in finished)
                                      for name in self.space.objectives})
        record.metrics(metrics)
        if "robust_accuracy" in metrics:
            record.attack({**self.space.attack.to_dict(), "split": "val"})
        health = usage.health()  # router health of the val pass; see automoe.layers.RouterHealth
        class_usage = (usage.per_class(self.val_labels, self.info.num_classes)
                       if usage.assignments else None)
        layer_nmi = self._layer_specialisation(usage)
        record.routers({name: {**h.to_dict(), **({"specialisation": layer_nmi[name]}
                                                 if name in layer_nmi else {})}
                        for name, h in health.items()}, usage.counts(), class_usage)
        record.training(result.history, epochs_trained, train_seconds, eval_seconds)
        self._store_checkpoint(trial, model, run, own_metrics, class_usage)
        violations = self._violations({**metrics, "params": params})
        if violations:
            record.constraints(violations)
        return tuple(metrics[name] for name in self.space.objectives)

    def _one_seed(self, trial: optuna.Trial, candidate: Candidate, model, repeat: int,
                  finished: list[dict], resume: dict | None, resume_path: Path | None,
                  key: str):
        """Train (or inherit) and measure one seed: ``(metrics, usage, result, eval s)``."""
        rungs = set(self.space.rungs()) if repeat == 0 else set()
        eval_seconds = 0.0

        def on_step(step: int, total: int) -> None:
            if self.on_step is not None:
                self.on_step(trial.number, step, total)

        def on_epoch(epoch: int, progress, state) -> None:
            nonlocal eval_seconds
            if resume_path is not None and (epoch < candidate.train.epochs
                                            or repeat + 1 < self.space.repeats):
                _save_resume(resume_path, {**state(), "candidate": key, "repeat": repeat,
                                           "finished": finished})
            if epoch not in rungs:
                return
            start = time.perf_counter()
            metrics = self._measure(trial, model)
            eval_seconds += time.perf_counter() - start
            if not self._promoted(trial, epoch, metrics):
                TrialWriter(trial).training(
                    progress.history,
                    len(progress.history) - (resume["epochs_done"] if resume else 0),
                    progress.seconds)
                raise _Pruned(f"not among the best 1/{self.space.fidelity['reduction_factor']} "
                              f"of the trials at epoch {epoch}")

        try:
            if self.supernet is not None:
                result = TrainResult()  # nothing to train: the weights are the supernet's
            else:
                result = train(model, self.train_set, candidate.train, self.device,
                               on_step=on_step, on_epoch=on_epoch, resume=resume)
        except _Pruned as exc:
            record = TrialWriter(trial)
            record.eval_seconds(eval_seconds)
            record.pruned(str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        start = time.perf_counter()
        batch = self.space.eval_batch_size
        with track_expert_usage(model) as usage:  # the routing of the val pass only
            val_accuracy = evaluate_accuracy(model, self.val_set, batch, self.device)
        metrics = self._measure(trial, model, val_accuracy, usage)
        metrics["test_accuracy"] = 100 * evaluate_accuracy(model, self.test_set, batch,
                                                           self.device)
        health = usage.health()
        if health:
            metrics["expert_use"] = expert_use(health)
        return metrics, usage, result, eval_seconds + time.perf_counter() - start

    def _layer_specialisation(self, usage) -> dict[str, float]:
        """Per top-k routed layer, the NMI between expert and class on the val split (the
        one definition behind both the per-layer record and the trial's mean)."""
        if not usage.assignments:
            return {}
        health = usage.health()
        matrices = usage.per_class(self.val_labels, self.info.num_classes)
        return {name: specialisation(m) for name, m in matrices.items() if name in health}

    def _specialisation(self, usage) -> float:
        """Mean of :meth:`_layer_specialisation`; 0 for a model without a routed layer (a
        dense model sends every class one way)."""
        values = list(self._layer_specialisation(usage).values())
        return statistics.fmean(values) if values else 0.0

    def _inherit(self, trial: optuna.Trial, candidate: Candidate):
        """The candidate's sub-network of the supernet, BatchNorm recalibrated."""
        spec = self.supernet.spec_for(candidate.model)
        TrialWriter(trial).subnet({"placement": spec.placement, "experts": spec.experts,
                                   "top_k": spec.top_k, "width_multiplier": spec.width})
        model = self.supernet.extract(spec)
        return recalibrate_batchnorm(model, self.train_set, batches=self.recalibration_batches,
                                     device=self.device, seed=candidate.train.seed)

    def _costs(self, trial: optuna.Trial, model) -> dict[str, float]:
        """MACs, parameters and (when needed) latency of the model as it is now: the open
        channels of a channel-gated model, and so its cost, change with training."""
        shape = (self.info.in_channels, self.info.image_size, self.info.image_size)
        macs = count_flops(model, shape, inputs=self.flops_probe)
        costs = {"mmacs": macs["active"] / 1e6, "mparams": count_params(model) / 1e6}
        if "latency_ms" in self.measured:
            lat = self.space.latency
            costs["latency_ms"] = measure_latency(model, shape, self.device, lat["batch_size"],
                                                  lat["warmup"], lat["repeats"])
        TrialWriter(trial).costs(macs, costs)
        return costs

    def _measure(self, trial: optuna.Trial, model, val_accuracy: float | None = None,
                 usage=None) -> dict[str, float]:
        """The metrics the space needs, in % and millions (val accuracy in [0, 1] when
        already measured, with the ``usage`` of that val pass)."""
        batch = self.space.eval_batch_size
        if val_accuracy is None:
            with track_expert_usage(model) as usage:
                val_accuracy = evaluate_accuracy(model, self.val_set, batch, self.device)
        metrics = {**self._costs(trial, model), "val_accuracy": 100 * val_accuracy,
                   "specialisation": self._specialisation(usage)}
        if "robust_accuracy" in self.measured:
            metrics["robust_accuracy"] = 100 * robust_accuracy(model, self.val_set,
                                                               self.space.attack, batch,
                                                               self.device)
        return metrics

    def _violations(self, measured: dict) -> dict[str, float]:
        """Optuna 5 constraint values (feasible when <= 0) of the space's constraints."""
        values = {}
        for key, bound in self.space.constraints.items():
            metric, kind = CONSTRAINTS[key]
            if measured.get(metric) is None:  # e.g. expert use of a dense trial: no router
                values[key] = 0.0
                continue
            values[key] = measured[metric] - bound if kind == "max" else bound - measured[metric]
        return values

    def _promoted(self, trial: optuna.Trial, epoch: int, metrics: dict) -> bool:
        """Record this trial's values at a rung and rank it among every trial's there."""
        rungs = dict(TrialRecord(trial).rungs)
        rungs[str(epoch)] = {name: metrics[name] for name in self.space.objectives}
        params = TrialRecord(trial).params
        rungs[str(epoch)]["violation"] = sum(
            max(v, 0.0) for v in self._violations({**metrics, "params": params}).values())
        TrialWriter(trial).rungs(rungs)
        states = optuna.trial.TrialState
        entries = {}
        for other in trial.study.get_trials(deepcopy=False, states=(
                states.RUNNING, states.COMPLETE, states.PRUNED)):
            record = (rungs if other.number == trial.number
                      else TrialRecord(other).rungs).get(str(epoch))
            if record is not None:
                values = [record[name] for name in self.space.objectives]
                entries[other.number] = (minimised(values, self.space.objectives),
                                         record["violation"])
        return is_promoted(trial.number, entries, self.space.fidelity["reduction_factor"])

    def _resume_path(self, trial: optuna.Trial, origin: int) -> Path | None:
        if self.resume_dir is None:
            return None
        return self.resume_dir / study_folder_name(trial.study.study_name) / f"trial-{origin}.pt"

    def _store_checkpoint(self, trial: optuna.Trial, model, candidate: Candidate,
                          metrics: dict, class_usage: dict | None) -> None:
        extra = {"data": self.data_spec(), "metrics": metrics,
                 "attack": {**self.space.attack.to_dict(), "split": "val"},
                 "train": candidate.train.to_dict(), "trial": trial.number,
                 "study": trial.study.study_name}
        with tempfile.TemporaryDirectory(prefix="automoe-ckpt-") as tmp:
            path = Path(tmp) / f"trial-{trial.number}.safetensors"
            model.cpu()
            save_checkpoint(model, path, extra)
            digest = sha256_file(path)
            artifact_id = upload_artifact(artifact_store=self.artifact_store,
                                          file_path=str(path), study_or_trial=trial)
            TrialWriter(trial).checkpoint(artifact_id, digest)
            # Beside the checkpoint, what the dashboard can show as a trial's artifacts:
            # its config and metrics as JSON, and (MoE trials) its expert-usage heatmap.
            config = Path(tmp) / f"trial-{trial.number}-config.json"
            config.write_text(json.dumps({**candidate.to_dict(), "metrics": metrics,
                                          "macs": TrialRecord(trial).macs}, indent=2))
            upload_artifact(artifact_store=self.artifact_store, file_path=str(config),
                            study_or_trial=trial, mimetype="application/json")
            if self.usage_plots and class_usage:
                figure = Path(tmp) / f"trial-{trial.number}-expert-usage.png"
                usage_figure(class_usage, f"trial {trial.number}: val samples per expert "
                                        "(experts x classes)").savefig(figure, dpi=100)
                upload_artifact(artifact_store=self.artifact_store, file_path=str(figure),
                                study_or_trial=trial, mimetype="image/png")


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """The training seeds of a candidate trained ``repeats`` times: ``seed`` first (the
    seed of a single run), then seeds far from every other trial's ``base + n``."""
    return [seed + 1_000_003 * r for r in range(repeats)]


def _mean_metrics(runs: list[dict]) -> dict[str, float]:
    """Per metric, the mean over the runs that measured it (dense nets have no expert use)."""
    names = [k for k in runs[0] if k != "seed"]
    return {name: statistics.fmean(r[name] for r in runs if r.get(name) is not None)
            for name in names if any(r.get(name) is not None for r in runs)}


def _origin_trial(trial: optuna.Trial) -> int:
    """The first trial of a chain of heartbeat retries (itself when not a retry)."""
    frozen = trial.study._storage.get_trial(trial._trial_id)  # Trial hides system attrs
    with warnings.catch_warnings():  # experimental API warnings are noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else trial.number


def _load_resume(path: Path | None, key: str) -> dict | None:
    """The saved training state at ``path`` if it was saved for the candidate ``key``."""
    if path is None or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("candidate") == key else None


def _save_resume(path: Path, state: dict) -> None:
    """Write then rename: a worker killed mid-write leaves the previous epoch's state."""
    # the temp name carries the trial's, so that whoever owns the trial next can sweep
    # a temp file that a worker killed mid-write left behind (see _remove)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _remove(path: Path | None) -> None:
    """Remove a trial's saved state and any temp file a killed writer of it left behind.

    Safe: only one worker runs a trial (or its retry) at a time, and this one is it.
    """
    if path is not None:
        path.unlink(missing_ok=True)
        for orphan in path.parent.glob(f".{path.stem}.tmp-*"):
            orphan.unlink(missing_ok=True)
