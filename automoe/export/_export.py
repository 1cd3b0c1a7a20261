"""Exporting a trial's checkpoint to a directory, loading it back, and evaluating it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file
from torch import nn

from automoe.data import load_dataset
from automoe.errors import AutomoeError
from automoe.export.card import CARD_FILE, model_card
from automoe.layers import MoEModule
from automoe.models import create_model
from automoe.results import (
    CheckpointMissing,
    TrialRecord,
    fetch_checkpoint,
    is_feasible,
    pareto_trials,
    verified_results,
)
from automoe.robustness import AttackConfig
from automoe.space import Evaluation, Splits, measure
from automoe.storage import (
    load_checkpoint,
    load_weights,
    read_checkpoint_metadata,
    sha256_file,
)

EXPORT_FORMAT = "automoe.export.v1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def export_trial(study: optuna.Study, trial_number: int, out_dir: str | os.PathLike[str],
                 artifact_store, *, force: bool = False, torchscript: bool = False,
                 onnx: bool = False) -> Path:
    """Write a complete trial's model to ``out_dir`` (weights + config that rebuilds it,
    and a model card).

    The directory is assembled under a temporary name beside ``out_dir`` and renamed into
    place, so an interrupted export leaves nothing half-written.

    With ``torchscript`` / ``onnx``, also ``model.torchscript.pt`` / ``model.onnx``: traced
    graphs of the model whose MoE layers compute every expert and mask (the exact reference
    path: routing is data-dependent, and a traced sparse path would freeze one batch's
    routing). Each is checked against the eager model on fresh inputs before it is kept.

    Raises:
        AutomoeError: unknown or incomplete trial, missing or corrupted checkpoint, or an
            existing ``out_dir`` without ``force``.
    """
    out_dir = Path(out_dir)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial_number not in trials:
        raise AutomoeError(f"study {study.study_name!r} has no trial {trial_number} "
                           f"(trials 0..{max(trials, default=-1)})")
    trial = trials[trial_number]
    if trial.state != TrialState.COMPLETE:
        raise AutomoeError(f"trial {trial_number} is {trial.state.name}, not COMPLETE; "
                           "only finished trials have checkpoints")
    record = TrialRecord(trial)
    if not record.checkpoint:
        raise AutomoeError(f"trial {trial_number} stored no checkpoint")
    if out_dir.exists() and not force:
        raise AutomoeError(f"{str(out_dir)!r} already exists; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        weights = tmp_dir / WEIGHTS_FILE
        try:
            digest = fetch_checkpoint(trial, artifact_store, weights)
        except CheckpointMissing:
            if not is_feasible(trial):
                broken = ", ".join(f"{name} (by {value:g})" for name, value
                                   in trial.constraints.items() if value > 0)
                raise AutomoeError(
                    f"trial {trial_number} is infeasible: it violates {broken}, so it is not "
                    "on the front and its checkpoint was removed (searches keep front "
                    "checkpoints unless run with --keep all)") from None
            if trial_number not in {t.number for t in pareto_trials(study)}:
                raise AutomoeError(
                    f"trial {trial_number} is off the Pareto front and its checkpoint was "
                    "removed (searches keep front checkpoints unless run with --keep all)"
                ) from None
            raise
        meta = read_checkpoint_metadata(weights)
        config = {
            "format": EXPORT_FORMAT,
            "model_name": meta["model_name"],
            "model_config": meta["model_config"],
            "weights_sha256": digest,
            "study": study.study_name,
            "trial": trial_number,
            "values": dict(zip(study.metric_names or [], trial.values, strict=False)),
            **{k: meta["extra"].get(k) for k in ("data", "metrics", "attack", "train")},
            "search_config": record.config or None,
            "macs": record.macs,
            "params": record.params,
            "expert_usage": record.expert_usage,
            "router_health": record.router_health,
            "robust_verified": verified_results(study).get(trial_number),
        }
        if torchscript or onnx:
            config["extra_files"] = _traced_files(tmp_dir, meta, torchscript, onnx)
        (tmp_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp_dir / CARD_FILE).write_text(model_card(config))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp creates it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
_TRACE_TOLERANCE = 1e-4  # max |traced - eager| relative to max(1, |eager|)


def _traced_files(folder: Path, meta: dict, torchscript: bool, onnx: bool) -> dict[str, str]:
    """Write the traced graphs into ``folder``; returns ``{file: description}``."""
    eager = create_model(meta["model_name"], **meta["model_config"])
    eager.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    eager.eval()
    traced_model = create_model(meta["model_name"], **meta["model_config"])
    traced_model.load_state_dict(eager.state_dict())
    traced_model.eval()
    for module in traced_model.modules():
        if isinstance(module, MoEModule):
            module.dispatch = "reference"
    cfg = eager.config
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, *shape, generator=generator)
    check = torch.rand(5, *shape, generator=generator)  # another batch size, other images
    with torch.no_grad():
        expected = eager(check)
    scale = max(1.0, expected.abs().max().item())

    def verify(name: str, outputs: torch.Tensor) -> None:
        error = (outputs - expected).abs().max().item() / scale
        if not error <= _TRACE_TOLERANCE:
            raise AutomoeError(f"the {name} export differs from the eager model by {error:.3g} "
                               f"(tolerance {_TRACE_TOLERANCE:g}); not written")

    files = {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks in Python
        if torchscript:
            module = torch.jit.trace(traced_model, example, check_trace=False)
            verify("TorchScript", module(check))
            torch.jit.save(module, str(folder / TORCHSCRIPT_FILE))
            verify("TorchScript", torch.jit.load(str(folder / TORCHSCRIPT_FILE))(check))
            files[TORCHSCRIPT_FILE] = ("TorchScript graph (torch.jit.load); MoE layers compute "
                                       "every expert and mask: same outputs, dense cost")
        if onnx:
            try:  # optional extra: automoe[onnx]
                import onnxruntime
            except ImportError:
                raise AutomoeError("--onnx needs onnx and onnxruntime: pip install "
                                   "'automoe[onnx]'") from None
            path = folder / ONNX_FILE
            try:
                torch.onnx.export(traced_model, (example,), str(path), dynamo=False,
                                  input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
            except Exception as exc:  # the exporter's own error types
                raise AutomoeError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None
            session = onnxruntime.InferenceSession(str(path),
                                                   providers=["CPUExecutionProvider"])
            outputs = session.run(None, {"images": check.numpy()})[0]
            verify("ONNX", torch.from_numpy(outputs))
            files[ONNX_FILE] = ("ONNX graph, input `images` (N, C, H, W) in [0, 1], output "
                                "`logits`; MoE layers compute every expert and mask")
    return files


def read_export_config(path: str | os.PathLike[str]) -> dict:
    """The ``config.json`` of an exported model directory."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise AutomoeError(f"{str(path)!r} is not an exported model (no {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:  # broken JSON, or bytes that are not UTF-8 at all
        raise AutomoeError(f"{str(config_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise AutomoeError(f"{str(config_path)!r} is not an automoe export")
    return config


def load(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model from an exported directory (or a checkpoint file) alone.

    The weights' checksum is verified against ``config.json`` before they are loaded.
    The model is returned in eval mode; it takes ``[0, 1]`` images.
    """
    path = Path(path)
    if path.is_file():
        return load_checkpoint(path)[0]
    config = read_export_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise AutomoeError(f"{str(weights)!r} is missing")
    name, fields = config.get("model_name"), config.get("model_config")
    if not isinstance(name, str) or not isinstance(fields, dict):
        raise AutomoeError(f"{str(path / CONFIG_FILE)!r} lacks a model_name and model_config")
    if sha256_file(weights) != config.get("weights_sha256"):
        raise AutomoeError(f"{str(weights)!r} does not match the checksum in {CONFIG_FILE}")
    model = create_model(name, **fields)
    load_weights(model, weights, name)
    return model.eval()


def evaluate_export(path: str | os.PathLike[str], *, data_root: str | None = None,
                    dataset: str | None = None, device: str = "cpu", batch_size: int = 256,
                    download: bool = False) -> dict:
    """Accuracy (val and test), robust accuracy and FLOPs of an exported model.

    Uses the dataset, image size and attack stored with the model unless ``dataset``
    names another one of the same shape.
    """
    config = read_export_config(path)
    model = load(path)
    data = dict(config.get("data") or {})
    name = dataset or data.get("name")
    if name is None:
        raise AutomoeError("the export names no dataset; pass --dataset")
    common = dict(root=data_root, image_size=data.get("image_size"), download=download)
    val_set = load_dataset(name, "val", **common)
    test_set = load_dataset(name, "test", **common)
    cfg = model.config
    if (test_set.info.in_channels, test_set.info.num_classes) != (cfg.in_channels,
                                                                  cfg.num_classes):
        raise AutomoeError(f"dataset {name!r} has {test_set.info.in_channels} channels and "
                           f"{test_set.info.num_classes} classes; the model expects "
                           f"{cfg.in_channels} and {cfg.num_classes}")
    attack_cfg = {k: v for k, v in (config.get("attack") or {}).items()
                  if k in AttackConfig.__dataclass_fields__}
    attack = AttackConfig(**attack_cfg)
    measured = measure(model, Splits(val_set, test_set),
                       Evaluation(batch_size=batch_size, attack=attack, device=device))
    metrics = measured.metrics
    result = {
        "model": config["model_name"],
        "dataset": name,
        "val_accuracy": metrics["val_accuracy"],
        "expert_use": metrics.get("expert_use"),
        "router_health": {layer: h.to_dict() for layer, h in measured.router_health.items()},
        "specialisation": metrics["specialisation"],
        "test_accuracy": metrics["test_accuracy"],
        "robust_accuracy": metrics["robust_accuracy"],
        "mmacs": metrics["mmacs"],
        "mmacs_dense": measured.macs["dense"] / 1e6,
        "mmacs_executed": measured.macs["executed"] / 1e6,
        "params": measured.params,
        "attack": {**attack.to_dict(), "split": "val"},
        "stored": config.get("metrics"),
    }
    return result
