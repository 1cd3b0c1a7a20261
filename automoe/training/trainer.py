"""Supervised training: SGD with Nesterov momentum and a per-step cosine schedule."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from automoe.data import make_loader
from automoe.errors import ConfigError, TrainingDivergedError
from automoe.layers import expert_use, to_channels_last, track_expert_usage
from automoe.training.config import _AUTOCAST, TrainConfig
from automoe.training.optim import make_optimizer, param_groups
from automoe.training.phases import Phase, phase_schedule, training_phases, upcycle_into
from automoe.training.robust import (
    AdvMoEStep,
    pgd_at_loss,
    router_parameters,
    trades_loss,
)


@dataclass
class TrainResult:
    """Learning curve and cost of one training run."""

    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0  # wall time of the training loop


@contextlib.contextmanager
def tf32_switches(precision: str) -> Iterator[None]:
    """TF32 on for every precision but fp32, for cuDNN and for matmuls (which the Triton
    kernels follow, so the MoE and the dense layers of a model compute alike); restored
    on exit."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = \
        precision != "fp32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """Autocast to bf16 / fp16 for those precisions (forward passes only), else off."""
    return torch.autocast(device.type, dtype=_AUTOCAST.get(precision, torch.bfloat16),
                          enabled=precision in _AUTOCAST)


def to_layout(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if config.channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def train(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[int, TrainResult, Callable[[], dict]], None] | None = None,
    resume: dict | None = None,
) -> TrainResult:
    """Train ``model`` in place on cross-entropy plus its balancing losses.

    When ``config.upcycle_share(model.config)`` is above 0 (by default for routed conv and
    block experts), the first ``config.dense_epochs(model.config)`` train
    the model's dense twin, which is copied into ``model`` after each of them (so a
    callback that evaluates ``model`` sees the current weights), and the rest train
    ``model``; the batch order and the step count run on across the switch.

    Args:
        model: a classifier; if it has ``aux_loss(targets)`` that term is added to the loss.
        on_step: called as ``on_step(step, total_steps)`` after each optimiser step.
        on_epoch: called as ``on_epoch(epochs_done, result_so_far, state)`` after each
            epoch; ``state()`` returns a resumable training state (for ``resume``; it shares
            the optimisers' tensors, so save it before the callback returns). It may
            evaluate the model (the global RNG is restored afterwards, so evaluating does
            not change the rest of the run) or raise to stop training.
        resume: a ``state()`` from an earlier run of the same config: training continues
            after its epoch, with the same batch order, schedule and RNG as an unbroken run.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    device = torch.device(device)
    model.to(device)
    if config.channels_last:
        to_channels_last(model)
    torch.manual_seed(config.seed)  # gate noise
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                         num_workers=config.num_workers, device=device)
    phases = training_phases(model, config, device)
    result = TrainResult()
    clock = _Clock()
    first_phase = 0
    if resume is not None:
        first_phase = int(resume.get("phase", 0))
        if first_phase >= len(phases):
            raise ConfigError("cannot resume: the saved state is of an upcycling run and this "
                              "training config does not upcycle")
    for index, phase in enumerate(phases):
        if index < first_phase:
            continue
        _train_phase(phase, index, model, loader, config, device, result, clock, on_step,
                     on_epoch, resume if index == first_phase else None)
        if phase.net is not model:  # the dense phase: the MoE starts from its end
            upcycle_into(model, phase.net, config)
    result.seconds = clock.elapsed()
    return result


class _Clock:
    """Training seconds of a run, across its phases, callbacks excluded."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exclude(self, seconds: float) -> None:
        self.start += seconds


def _train_phase(phase: Phase, index: int, model: nn.Module, loader, config: TrainConfig,
                 device: torch.device, result: TrainResult, clock: _Clock, on_step, on_epoch,
                 resume: dict | None) -> None:
    """Train ``phase.net`` over the phase's epochs (from ``resume``'s, if given)."""
    net, phase_config = phase.net, phase.config
    # the compiled module shares the model's parameters; hooks and state stay on `net`
    forward_model = torch.compile(net) if config.compile else net
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    # Reading the loss back waits for the device; on an accelerator it is checked every
    # few steps (a NaN stays NaN, so it is still caught).
    check_every = 1 if device.type == "cpu" else 16
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    phase_steps = (phase.end_epoch - phase.first_epoch) * steps_per_epoch
    first_step = phase.first_epoch * steps_per_epoch
    aux_loss_fn = getattr(net, "aux_loss", None)
    set_progress = getattr(net, "set_training_progress", None)

    advmoe = None
    if phase_config.scheme == "advmoe":
        routers = {id(p) for p in router_parameters(net)}
        optimizers = [make_optimizer([p for p in net.parameters() if id(p) not in routers],
                                     config),
                      make_optimizer([p for p in net.parameters() if id(p) in routers] or
                                     [torch.zeros(0, requires_grad=True)], config)]
        advmoe = AdvMoEStep(net, *optimizers, eps=config.adv_eps, alpha=config.advmoe_alpha,
                            beta=config.trades_beta, grad_clip=config.clip_norm)
    else:
        optimizers = [make_optimizer(param_groups(net, config), config)]
    schedulers = [phase_schedule(o, phase, steps_per_epoch, config) for o in optimizers]
    first_epoch = phase.first_epoch
    if resume is not None:
        first_epoch = _load_state(resume, net, optimizers, schedulers, loader, result,
                                  config, scaler)
        clock.exclude(-result.seconds)  # the seconds already spent count towards the total
    step = first_epoch * steps_per_epoch
    epoch = first_epoch
    rng: dict = {}

    def state() -> dict:
        return {**_save_state(epoch + 1, net, optimizers, schedulers, loader, result,
                              clock.elapsed(), rng, scaler), "phase": index}

    def _step(images: torch.Tensor, labels: torch.Tensor):
        """One optimiser step (two for AdvMoE): (task loss, logits, aux loss)."""
        check = step % check_every == 0
        if advmoe is not None:  # two optimiser steps of its own
            with autocast(config.precision, device):  # its backward passes run inside
                task_loss, logits = advmoe(images, labels, aux_loss_fn)
            aux = task_loss.new_zeros(())
            if check:
                check_finite(task_loss, epoch, step, config)
        else:
            with autocast(config.precision, device):
                task_loss, logits = _task_loss(forward_model, images, labels, phase_config)
                aux = (aux_loss_fn(labels) if aux_loss_fn is not None
                       else task_loss.new_zeros(()))
                loss = task_loss + aux
            if check:
                check_finite(loss, epoch, step, config)
            optimizers[0].zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_norm > 0:
                scaler.unscale_(optimizers[0])
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip_norm)
            scaler.step(optimizers[0])  # skipped when fp16 gradients overflowed
            scaler.update()
        for scheduler in schedulers:
            scheduler.step()
        return task_loss, logits, aux

    with tf32_switches(config.precision):  # backward passes too
        for epoch in range(first_epoch, phase.end_epoch):  # noqa: B007 (state() reads it)
            net.train()
            # task loss, aux loss, correct: summed on the device, read once per epoch
            sums = torch.zeros(3, dtype=_sum_dtype(device), device=device)
            seen = 0
            with track_expert_usage(net) as usage:  # the epoch's routing, for router health
                for images, labels in loader:
                    if set_progress is not None:  # CondConv's temperature: from the phase's start
                        set_progress((step - first_step) / max(1, phase_steps))
                    images = to_layout(images.to(device, non_blocking=True), config)
                    labels = labels.to(device, non_blocking=True)
                    task_loss, logits, aux = _step(images, labels)
                    step += 1
                    n = labels.shape[0]
                    sums += torch.stack([task_loss.detach() * n, aux.detach() * n,
                                         (logits.argmax(1) == labels).sum()]).to(sums.dtype)
                    seen += n
                    if on_step is not None:
                        on_step(step, total_steps)
            check_finite(sums[0], epoch, step - 1, config)
            loss_sum, aux_sum, correct = (sums / max(seen, 1)).tolist()
            row = {"epoch": epoch + 1, "loss": loss_sum, "aux_loss": aux_sum,
                   "train_accuracy": correct}
            use = expert_use(usage.health())
            if use is not None:  # the fewest effective experts of any layer, / E
                row["expert_use"] = use
            if net is not model:
                row["dense_phase"] = 1.0  # an upcycling run's dense twin trained this epoch
                upcycle_into(model, net, config)  # what a callback evaluates is current
            result.history.append(row)
            if on_epoch is not None:
                rng = _rng_state()
                callback_start = time.perf_counter()
                result.seconds = clock.elapsed()
                on_epoch(epoch + 1, result, state)
                _set_rng_state(rng)  # what on_epoch drew (attack starts, ...) changes nothing
                clock.exclude(time.perf_counter() - callback_start)  # evaluating is not training


def _rng_state() -> dict:
    state = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _save_state(epochs_done: int, model, optimizers, schedulers, loader, result: TrainResult,
                seconds: float, rng: dict, scaler: torch.amp.GradScaler) -> dict:
    """Everything an unbroken run would carry into the next epoch (tensors on the CPU)."""
    return {
        "epochs_done": epochs_done,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "loader_rng": loader.generator.get_state(),
        "rng": rng,
        "history": [dict(row) for row in result.history],
        "seconds": seconds,
        "scaler": scaler.state_dict(),
    }


def _load_state(state: dict, model, optimizers, schedulers, loader, result: TrainResult,
                config: TrainConfig, scaler: torch.amp.GradScaler) -> int:
    epochs_done = int(state["epochs_done"])
    if not 0 < epochs_done <= config.epochs or len(state["optimizers"]) != len(optimizers):
        raise ConfigError(f"cannot resume: the saved state ({epochs_done} epochs) does not "
                          f"belong to this training config ({config.epochs} epochs)")
    model.load_state_dict(state["model"])
    for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(schedulers, state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    loader.generator.set_state(state["loader_rng"])
    _set_rng_state(state["rng"])
    result.history = [dict(row) for row in state["history"]]
    result.seconds = float(state["seconds"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return epochs_done


def _task_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The scheme's loss (without balancing terms) and the logits it was computed on."""
    if config.scheme == "pgd_at":
        return pgd_at_loss(model, images, labels, config.adv_eps, config.adv_step_size,
                           config.adv_steps, config.adv_fixed_routing)
    if config.scheme == "trades":
        return trades_loss(model, images, labels, config.adv_eps, config.adv_step_size,
                           config.adv_steps, config.trades_beta, config.adv_fixed_routing)
    logits = model(images)
    return F.cross_entropy(logits, labels), logits


def check_finite(loss: torch.Tensor, epoch: int, step: int, config: TrainConfig) -> None:
    """A one-line error naming the epoch, step and lr when ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
            f"(lr={config.lr:g}); lower the learning rate")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in ``[0, 1]`` with the model in eval mode."""
    device = torch.device(device)
    model.to(device).eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for images, labels in make_loader(dataset, batch_size, device=device):
        logits = model(images.to(device, non_blocking=True))
        correct += (logits.argmax(1) == labels.to(device, non_blocking=True)).sum()
        total += labels.shape[0]
    return correct.item() / max(total, 1)
