"""One trial: build the sampled MoE-CNN, train it, measure the three objectives."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact

from automoe.data import load_dataset
from automoe.errors import ConfigError, TrainingDivergedError
from automoe.layers import track_expert_usage
from automoe.models import count_flops, count_params, create_model
from automoe.robustness import robust_accuracy
from automoe.search.space import CONSTRAINTS, Candidate, SearchSpace
from automoe.storage import save_checkpoint, sha256_file
from automoe.training import evaluate_accuracy, train

# Objective names and directions, in the order the study stores them.
OBJECTIVES = (("val_accuracy", "maximize"), ("mmacs", "minimize"),
              ("robust_accuracy", "maximize"))


def build_model(candidate: Candidate, info) -> torch.nn.Module:
    """The candidate's model for a dataset (dataset fields filled from ``info``)."""
    return create_model(candidate.model_name, **candidate.model, in_channels=info.in_channels,
                        num_classes=info.num_classes, image_size=info.image_size,
                        input_mean=info.mean, input_std=info.std)


class TrialRunner:
    """The Optuna objective: returns (val accuracy %, active MMACs, robust accuracy %).

    Every trial stores its full config, FLOPs, params, accuracies, attack, expert usage,
    learning curve and timings as user attrs, and its checkpoint as an artifact. A trial
    whose loss diverges is stored as failed with its reason in ``fail_reason``.

    Args:
        space: the search space.
        artifact_store: where checkpoints go.
        device: torch device for training and evaluation.
        seed: base seed; trial n trains with ``seed + n``.
        data_root, download: as :func:`automoe.data.load_dataset`.
        on_step: progress callback ``(trial number, step, total steps)``.
    """

    def __init__(self, space: SearchSpace, artifact_store, *, device: str = "cpu", seed: int = 0,
                 data_root: str | None = None, download: bool = False,
                 on_step: Callable[[int, int, int], None] | None = None):
        self.space = space
        self.artifact_store = artifact_store
        self.device = device
        self.seed = seed
        self.on_step = on_step
        ds = space.dataset
        common = dict(root=data_root, image_size=ds["image_size"], download=download)
        self.train_set = load_dataset(ds["name"], "train", augment=ds["augment"], **common)
        self.val_set = load_dataset(ds["name"], "val", **common)
        self.test_set = load_dataset(ds["name"], "test", **common)
        self.info = self.train_set.info
        # Fixed per study: the images FLOPs are averaged over (channel gates depend on the
        # image) and the labels of the val split, for per-class expert usage.
        n_probe = min(len(self.val_set), 256)
        self.flops_probe = torch.stack([self.val_set[i][0] for i in range(n_probe)])
        self.val_labels = torch.tensor([self.val_set[i][1] for i in range(len(self.val_set))])

    def data_spec(self) -> dict:
        """What `automoe eval` needs to rebuild the same splits."""
        return {"name": self.info.name, "image_size": self.space.dataset["image_size"]}

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        nan = float("nan")
        try:
            candidate = self.space.suggest(trial)
        except ConfigError as exc:  # the space check covers the common cases; not all
            trial.set_user_attr("fail_reason", f"invalid candidate: {exc}")
            return nan, nan, nan
        seed = self.seed + trial.number
        candidate.train = replace(candidate.train, seed=seed)
        trial.set_user_attr("config", candidate.to_dict())
        model_cfg = candidate.model
        trial.set_user_attr("architecture", {
            "model": candidate.model_name,
            "placement": model_cfg.get("placement", "none"),
            "granularity": model_cfg.get("granularity", "conv"),
            "experts": model_cfg.get("num_experts", 1),
            "top_k": model_cfg.get("top_k", 1),
            "width_multiplier": model_cfg.get("width_multiplier", 1.0),
        })
        trial.set_user_attr("dataset", self.data_spec())
        torch.manual_seed(seed)
        model = build_model(candidate, self.info)
        info = self.info
        trial.set_user_attr("params", count_params(model))

        def on_step(step: int, total: int) -> None:
            if self.on_step is not None:
                self.on_step(trial.number, step, total)

        try:
            result = train(model, self.train_set, candidate.train, self.device, on_step=on_step)
        except TrainingDivergedError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            return nan, nan, nan  # Optuna stores a NaN-valued trial as FAIL
        eval_start = time.perf_counter()
        batch = self.space.eval_batch_size
        macs = count_flops(model, (info.in_channels, info.image_size, info.image_size),
                           inputs=self.flops_probe)
        trial.set_user_attr("macs", macs)
        with track_expert_usage(model) as usage:
            val_acc = evaluate_accuracy(model, self.val_set, batch, self.device)
        test_acc = evaluate_accuracy(model, self.test_set, batch, self.device)
        attack = self.space.attack
        robust_acc = robust_accuracy(model, self.val_set, attack, batch, self.device)
        eval_seconds = time.perf_counter() - eval_start

        metrics = {
            "val_accuracy": 100 * val_acc,
            "test_accuracy": 100 * test_acc,
            "robust_accuracy": 100 * robust_acc,
            "mmacs": macs["active"] / 1e6,
        }
        # The objective values again, under names the dashboard shows beside the config.
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("attack", {**attack.to_dict(), "split": "val"})
        trial.set_user_attr("expert_usage", usage.counts())
        if usage.assignments:
            trial.set_user_attr("expert_class_usage",
                                usage.per_class(self.val_labels, self.info.num_classes))
        trial.set_user_attr("history", result.history)
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        trial.set_user_attr("eval_seconds", round(eval_seconds, 3))
        self._store_checkpoint(trial, model, candidate, metrics)
        self._set_constraints(trial, {**metrics, "params": trial.user_attrs["params"]})
        return metrics["val_accuracy"], metrics["mmacs"], metrics["robust_accuracy"]

    def _set_constraints(self, trial: optuna.Trial, measured: dict) -> None:
        """Optuna 5 constraints (feasible when <= 0), mirrored in user attrs because
        optuna-dashboard 0.21 does not show them."""
        if not self.space.constraints:
            return
        values = {}
        for key, bound in self.space.constraints.items():
            metric, kind = CONSTRAINTS[key]
            values[key] = measured[metric] - bound if kind == "max" else bound - measured[metric]
            trial.set_constraint(key, values[key])
        trial.set_user_attr("constraints", values)
        trial.set_user_attr("feasible", all(v <= 0 for v in values.values()))

    def _store_checkpoint(self, trial: optuna.Trial, model, candidate: Candidate,
                          metrics: dict) -> None:
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
        trial.set_user_attr("checkpoint", {"artifact_id": artifact_id, "sha256": digest})

