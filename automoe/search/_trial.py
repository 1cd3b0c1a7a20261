"""One trial: build the sampled MoE-CNN, train it, measure it, record it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from automoe.errors import ConfigError, TrainingDivergedError
from automoe.models import count_params
from automoe.results import TrialWriter, failing_on_disk_errors, store_trial_files
from automoe.search import _resume as saved
from automoe.search._fidelity import rung_check
from automoe.space import SearchSpace, measure
from automoe.training import TrainResult, train


class TrialRunner:
    """The Optuna objective: trains (or, with a ``supernet``, inherits) the candidate once
    per seed of the space's ``repeats``, measures each and returns the means of the space's
    objectives; the record gets the rest. A diverged loss fails the trial; ``fidelity``
    prunes at rungs; with ``resume_dir`` a retry of a dead worker's trial resumes from its
    last saved epoch. ``on_step(trial, step, steps)`` reports progress; ``worker`` adds to
    the worker record; ``usage_plots`` stores MoE trials' usage heatmaps."""

    def __init__(self, space: SearchSpace, artifact_store, *, device: str = "cpu", seed: int = 0,
                 data_root: str | None = None, download: bool = False, on_step=None,
                 resume_dir: str | os.PathLike[str] | None = None, usage_plots: bool = True,
                 supernet=None, recalibration_batches: int = 10, worker: dict | None = None):
        if hasattr(artifact_store, "check_writable"):  # refused before a trial trains
            artifact_store.check_writable()
        self.space, self.artifact_store, self.device, self.seed = space, artifact_store, device, seed
        self.on_step, self.usage_plots, self.worker = on_step, usage_plots, dict(worker or {})
        self.resume_dir = Path(resume_dir) if resume_dir is not None else None
        self.supernet, self.recalibration_batches = supernet, recalibration_batches
        self.train_set, self.splits = space.load_data(data_root, download)
        self.info = self.train_set.info

    def data_spec(self) -> dict:
        """What `automoe eval` needs to rebuild the same splits."""
        return {"name": self.info.name, "image_size": self.space.dataset["image_size"]}

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        record = TrialWriter(trial)
        try:
            candidate = self.space.suggest(trial)
        except ConfigError as exc:  # the space check covers the common cases; not all
            record.failed(f"invalid candidate: {exc}")
            return tuple(float("nan") for _ in self.space.objectives)
        origin = saved.origin_trial(trial)
        seeds = saved.repeat_seeds(self.seed + origin, self.space.repeats)
        candidate.train = replace(candidate.train, seed=seeds[0])
        # the thread count too: CPU results repeat exactly only at the same count
        worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device),
                  "threads": torch.get_num_threads(), **self.worker}
        record.started(candidate.to_dict(), candidate.architecture(), self.data_spec(),
                       worker, supernet=self.supernet is not None)
        # only a retry resumes, from a state saved for the same candidate; the state goes
        # however the trial ends, except by SIGKILL
        path = saved.resume_path(self.resume_dir, trial, origin)
        key = hashlib.sha256(json.dumps(candidate.to_dict(), sort_keys=True).encode()).hexdigest()
        try:
            with failing_on_disk_errors(trial):
                resume = saved.load_resume(path, key) if origin != trial.number else None
                if resume is not None:
                    record.resumed_from(origin, resume["epochs_done"], resume.get("repeat", 0))
                return self._run(trial, candidate, seeds, resume, path, key)
        finally:
            saved.remove_resume(path)

    def _run(self, trial, candidate, seeds, resume, path, key) -> tuple[float, ...]:
        """Each seed in turn; the last one's model is the trial's (checkpoint, curve, router
        health). Rungs judge the first seed; the others run only past them all."""
        record = TrialWriter(trial)
        finished: list[dict] = list(resume.get("finished", [])) if resume else []
        seconds = {"train": 0.0, "eval": 0.0}
        epochs_trained = 0  # by this trial: a retry does not count what its origin trained
        for repeat, seed in enumerate(seeds[len(finished):], start=len(finished)):
            run = replace(candidate, train=replace(candidate.train, seed=seed))
            state = resume if resume is not None and resume.get("repeat", 0) == repeat else None
            torch.manual_seed(seed)
            try:
                model, result = self._train(trial, run, repeat, finished, state, path, key,
                                            seconds)
            except TrainingDivergedError as exc:
                note = f" (seed {seed}, repeat {repeat + 1} of {len(seeds)})" if repeat else ""
                record.failed(f"{exc}{note}")
                return tuple(float("nan") for _ in self.space.objectives)  # stored as FAIL
            start = time.perf_counter()
            measured = measure(model, self.splits, self.space.evaluation(self.device))
            record.costs(measured.macs, measured.costs())
            seconds["eval"] += time.perf_counter() - start
            seconds["train"] += result.seconds
            epochs_trained += len(result.history) - (state["epochs_done"] if state else 0)
            finished.append({"seed": seed, **measured.metrics})
        metrics = saved.mean_metrics(finished)
        own = {k: v for k, v in finished[-1].items() if k != "seed"}  # the checkpoint's
        if len(seeds) > 1:
            record.repeats(finished, {name: statistics.stdev(r[name] for r in finished)
                                      for name in self.space.objectives})
        attack = {**self.space.attack.to_dict(), "split": "val"}
        record.metrics(metrics, attack if "robust_accuracy" in metrics else None)
        class_usage = measured.class_usage(self.splits)
        record.router_health(measured, class_usage)
        record.training(result.history, epochs_trained, seconds["train"], seconds["eval"])
        store_trial_files(trial, self.artifact_store, model,
                          {"data": self.data_spec(), "metrics": own, "attack": attack,
                           "train": run.train.to_dict(), "trial": trial.number,
                           "study": trial.study.study_name},
                          {**run.to_dict(), "metrics": own, "macs": measured.macs},
                          class_usage, self.usage_plots)
        record.constraints(self.space.violations({**metrics, "params": measured.params}))
        return tuple(metrics[name] for name in self.space.objectives)

    def _train(self, trial, run, repeat, finished, state, path, key, seconds):
        """The seed's model, trained (its state saved each epoch for a retry, pruned at a
        rung) or inherited from the supernet: ``(model, TrainResult)``."""
        record = TrialWriter(trial)
        if self.supernet is not None:
            model, spec = self.supernet.inherit(run, self.train_set, seed=run.train.seed,
                                                batches=self.recalibration_batches,
                                                device=self.device)
            record.subnet(spec.to_record())
            record.params(count_params(model))
            return model, TrainResult()  # nothing to train: the weights are the supernet's
        model = run.build_model(self.info)
        record.params(count_params(model))
        rungs = rung_check(trial, model, self.splits, self.space, self.device, seconds,
                           state["epochs_done"] if state else 0)

        def on_epoch(epoch: int, progress, train_state) -> None:
            if path is not None and (epoch < run.train.epochs or repeat + 1 < self.space.repeats):
                saved.save_resume(path, {**train_state(), "candidate": key, "repeat": repeat,
                                         "finished": finished})
            if repeat == 0:
                rungs(epoch, progress)

        on_step = (None if self.on_step is None
                   else lambda step, total: self.on_step(trial.number, step, total))
        return model, train(model, self.train_set, run.train, self.device, on_step=on_step,
                            on_epoch=on_epoch, resume=state)
