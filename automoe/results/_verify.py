"""Verifying a front's robust accuracy with a strong attack.

During a search, robust accuracy is a fast proxy (the space's attack, PGD-10 by default).
A proxy can flatter some architectures more than others: routed MoE models, whose routing
decisions get no gradient, resisted PGD-10 by 4-8 points more than a strong worst case
(bench/results/verify_gap.md). So the front is re-evaluated with the worst case over APGD-CE, APGD-DLR,
router-aware PGD and APGD-CE through fixed routing (:data:`VERIFY_ATTACKS`), with restarts,
then Square and a transfer attack (:data:`MASKING_CHECKS`), on the same val samples and
budget as the proxy.

Finished Optuna trials cannot take new attributes, so each result is a study user
attribute ``verified:<trial number>`` (see :func:`verified_results`), and it is written
into the trial's and the study's notes, which optuna-dashboard shows.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
import torch
from torch.utils.data import Dataset, Subset

from automoe.data import load_dataset
from automoe.errors import AutomoeError, ConfigError
from automoe.results._artifacts import fetch_checkpoint
from automoe.results._jobs import WorkerDied, run_in_processes
from automoe.results._notes import set_note_section
from automoe.results._pareto import pareto_trials
from automoe.results._record import StudyRecord, TrialRecord, verified_results
from automoe.results._study import space_of_study
from automoe.robustness import AttackConfig, WorstCase, transfer_examples, worst_case_accuracy
from automoe.storage import load_checkpoint

# the strong worst case: both APGD losses, the attack that also moves the routing, and
# APGD-CE through fixed routing (which a misleading gate's gradient cannot steer)
VERIFY_ATTACKS = ("apgd-ce", "apgd-dlr", "router-pgd", "apgd-fixed-routing")
# and the two that need no gradient of the model, so gradient masking cannot fool them:
# Square (score-based black-box) and PGD crafted on a dense surrogate, then transferred
MASKING_CHECKS = ("square", "transfer")


@dataclass(frozen=True)
class VerifyConfig:
    """How strongly a front is re-attacked."""

    steps: int = 50  # gradient steps per attack and restart
    restarts: int = 2  # random restarts per attack; a sample is robust only if all fail
    max_samples: int | None = None  # val samples; None: the proxy's own max_samples
    square_queries: int = 300  # queries of the Square attack (0: no black-box check)
    transfer: bool = True  # PGD from the study's best dense trial of the same width

    def __post_init__(self):
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"verification needs steps >= 1 and restarts >= 1, got "
                              f"{self.steps} and {self.restarts}")
        if self.square_queries < 0:
            raise ConfigError(f"square_queries must be >= 0, got {self.square_queries}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"--max-samples must be >= 1, got {self.max_samples}")

    def attacks(self, proxy: AttackConfig) -> list[AttackConfig]:
        """The verifying attacks, at the proxy's norm, budget and step size."""
        white_box = [replace(proxy, attack=name, steps=self.steps, restarts=self.restarts,
                             random_start=True, max_samples=None)
                     for name in VERIFY_ATTACKS]
        if self.square_queries == 0 or proxy.norm != "linf":  # Square is L-inf here
            return white_box
        return [*white_box, replace(proxy, attack="square", steps=self.square_queries,
                                    restarts=1, random_start=True, max_samples=None)]

    def transfer_attack(self, proxy: AttackConfig) -> AttackConfig:
        """The PGD run on the dense surrogate: the verifying budget, one restart."""
        return replace(proxy, attack="pgd", steps=self.steps, restarts=1, random_start=True,
                       max_samples=None)


def verify_front(study: optuna.Study, artifact_store, config: VerifyConfig | None = None,
                 *, device: torch.device | str = "cpu", data_root: str | None = None,
                 download: bool = False, on_trial: Callable[[int, dict], None] | None = None,
                 jobs: int | None = 1) -> dict[int, dict]:
    """Re-attack every trial of the feasible front that is not yet verified with these
    settings; store and return the records of the whole front.

    ``jobs`` trials are attacked at once, each in a process of its own with an equal share
    of this process's torch threads (None: :func:`default_jobs`). Each trial's attacks are
    seeded on their own, so the order does not matter; only the thread count per process
    can move a value, through the order of floating-point sums.

    Raises:
        AutomoeError: the study does not measure robust accuracy, a front checkpoint is
            missing or corrupted, or a verifying process died.
    """
    config = config or VerifyConfig()
    space = space_of_study(study)
    if "robust_accuracy" not in space.measured_metrics():
        raise AutomoeError(f"study {study.study_name!r} does not measure robust accuracy; "
                           "there is nothing to verify")
    proxy = space.attack
    attacks = config.attacks(proxy)
    max_samples = config.max_samples or proxy.max_samples
    transfer_attack = config.transfer_attack(proxy)
    settings = {"attacks": [a.describe() for a in attacks], "eps": proxy.eps,
                "norm": proxy.norm, "max_samples": max_samples, "split": "val",
                "transfer": transfer_attack.describe() if config.transfer else None}
    done = verified_results(study)
    front = pareto_trials(study)
    todo = [trial for trial in front if (done.get(trial.number) or {}).get("settings")
            != settings]
    datasets: dict[tuple, object] = {}
    crafted: dict[tuple, torch.Tensor] = {}  # (surrogate, *dataset key) -> transfer images
    surrogates: dict[int, int | None] = {}  # trial -> its transfer surrogate's number

    def job(trial: optuna.trial.FrozenTrial) -> _AttackJob:
        data = TrialRecord(trial).dataset
        key = (data.get("name"), data.get("image_size"))
        if key not in datasets:
            dataset = load_dataset(data.get("name", "digits"), "val", data_root,
                                   image_size=data.get("image_size"), download=download)
            if max_samples is not None and max_samples < len(dataset):
                dataset = Subset(dataset, range(max_samples))
            datasets[key] = dataset
        surrogate = (dense_surrogate(study, trial, artifact_store) if config.transfer
                     else None)
        surrogates[trial.number] = None if surrogate is None else surrogate.number
        transfer = {}
        if surrogate is not None:
            # crafted once per surrogate and dataset, then scored on every trial
            crafted_key = (surrogate.number, *key)
            if crafted_key not in crafted:
                crafted[crafted_key] = transfer_examples(
                    trial_model(surrogate, artifact_store), datasets[key], transfer_attack,
                    space.eval_batch_size, device, seed=proxy.seed)
            transfer = {_TRANSFER: crafted[crafted_key]}
        return _AttackJob(trial_model(trial, artifact_store), datasets[key], attacks,
                          space.eval_batch_size, str(device), proxy.seed, transfer)

    jobs = default_jobs(len(todo), device) if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"verifying needs jobs >= 1, got {jobs}")
    numbers = {trial.number for trial in todo}
    reports = _run_jobs(map(job, todo), jobs)
    records = {}
    try:
        for trial in front:
            if trial.number in numbers:
                # in front order, whichever process attacked it
                report, worker = next(reports)
                record = {"robust_accuracy_verified": 100 * report.worst,
                          "robust_accuracy_proxy": TrialRecord(trial).metric("robust_accuracy"),
                          "clean": 100 * report.clean, "samples": report.samples,
                          "per_attack": {k: 100 * v for k, v in report.per_attack.items()},
                          **_masking_check(report, attacks),
                          "transfer_from": surrogates[trial.number],
                          "settings": settings, "config": asdict(config),
                          "worker": worker}
                StudyRecord(study).write_verified(trial.number, record)
            else:
                record = done[trial.number]
            records[trial.number] = record
            set_note_section(study, trial.number, "verified", _trial_note(record))
            if on_trial is not None:
                on_trial(trial.number, record)
    finally:
        reports.close()  # stops the pool at once if anything above failed
    set_note_section(study, None, "verified", _front_note(records))
    return records


def default_jobs(trials: int, device: torch.device | str = "cpu") -> int:
    """Trials verified at once by default: on the CPU, one per torch thread (as many as
    there are trials), each process then running one thread. The attacks' convolutions are
    small (a val split, one model), and two single-thread processes verified the default
    study's front 1.21x faster than one process with two threads, with the same values
    (docs/decisions/verification-cost.md, "Verifying front trials in parallel processes").
    On a GPU one: the processes would share the device."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(trials, torch.get_num_threads()))


@dataclass
class _AttackJob:
    """One trial's worst-case evaluation: everything a verifying process needs."""

    model: torch.nn.Module
    dataset: Dataset
    attacks: list[AttackConfig]
    batch_size: int
    device: str
    seed: int
    transfer: dict[str, torch.Tensor]  # name -> (N, C, H, W) images crafted elsewhere


def _attack(job: _AttackJob) -> tuple[WorstCase, dict]:
    """The job's worst case, and where it ran: the thread count too, as CPU results repeat
    exactly only at the same count."""
    report = worst_case_accuracy(job.model, job.dataset, job.attacks, job.batch_size,
                                 job.device, seed=job.seed, transfer=job.transfer)
    return report, {"host": socket.gethostname(), "pid": os.getpid(), "device": job.device,
                    "threads": torch.get_num_threads()}


def _set_threads(threads: int) -> None:
    """A verifying process's start: its share of the parent's torch threads."""
    torch.set_num_threads(threads)


def _run_jobs(jobs: Iterator[_AttackJob], processes: int
              ) -> Iterator[tuple[WorstCase, dict]]:
    """The reports of ``jobs``, with where each ran, in order: in this process for
    ``processes == 1``, else in up to ``processes`` processes (:mod:`._jobs`). A job is
    built (its model loaded) only when a process is free for it, so a long front never
    holds all its models at once, and a process that finishes early takes the next job."""
    if processes == 1:
        yield from (_attack(job) for job in jobs)
        return
    threads = max(1, torch.get_num_threads() // processes)
    try:
        yield from run_in_processes(_attack, jobs, processes,
                                    setup=functools.partial(_set_threads, threads))
    except WorkerDied as exc:
        raise AutomoeError("a verifying process died (out of memory?); the trials verified "
                           "so far are stored: rerun with --jobs 1 to verify the rest in "
                           "this process") from exc


# the per_attack key of the transfer attack
_TRANSFER = "transfer"


def dense_surrogate(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    artifact_store=None) -> optuna.trial.FrozenTrial | None:
    """The transfer attack's surrogate for ``trial``: the study's most accurate (val)
    complete dense trial of the same width whose checkpoint is there, else of any width;
    never the trial itself. None when there is no such trial. With ``--keep pareto`` only
    front trials keep their checkpoints, so the surrogate is then a dense front trial."""
    width = TrialRecord(trial).architecture.get("width_multiplier")
    dense = [t for t in study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.COMPLETE,)) if t.number != trial.number
        and not TrialRecord(t).is_moe and TrialRecord(t).checkpoint
        and TrialRecord(t).metric("val_accuracy") is not None]
    # same width first, then by val accuracy, best first
    dense.sort(key=lambda t: (TrialRecord(t).architecture.get("width_multiplier") != width,
                              -TrialRecord(t).metric("val_accuracy"), t.number))
    for candidate in dense:
        if artifact_store is None or _stored(candidate, artifact_store):
            return candidate
    return None


def _stored(trial: optuna.trial.FrozenTrial, artifact_store) -> bool:
    """Whether the trial's checkpoint is still in the store (retention removes some)."""
    try:
        with artifact_store.open_reader(TrialRecord(trial).checkpoint["artifact_id"]):
            return True
    except Exception:  # the stores raise their own not-found error types
        return False


def _masking_check(report, attacks) -> dict:
    """The per-attack table by short name (``attacks``), the white-box worst case, and
    whether a gradient-free attack (Square, transfer) beat it: then the white-box numbers
    overstate robustness (gradient masking)."""
    table = {}
    for attack in attacks:
        table[attack.attack] = 100 * report.per_attack[attack.describe()]
    if _TRANSFER in report.per_attack:
        table[_TRANSFER] = 100 * report.per_attack[_TRANSFER]
    white_box = 100 * report.white_box
    checks = [table[name] for name in MASKING_CHECKS if name in table]
    return {"attacks": table, "white_box_worst": white_box,
            "masking_suspected": any(value < white_box for value in checks)}


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _trial_note(record: dict) -> str:
    """The dashboard note of one verified trial (Markdown)."""
    settings = record["settings"]
    attacks = "; ".join(settings["attacks"])
    lines = [f"**Verified robust accuracy: {_percent(record['robust_accuracy_verified'])}** "
             f"(search-time proxy {_percent(record['robust_accuracy_proxy'])}, clean "
             f"{_percent(record['clean'])}), the worst case per sample over: {attacks}; "
             f"{record['samples']} {settings['split']} samples.", "",
             "| attack | robust accuracy |", "|---|---|"]
    lines += [f"| {name} | {_percent(value)} |" for name, value in record["per_attack"].items()]
    if record.get("masking_suspected"):
        lines += ["", f"**Gradient masking suspected**: a gradient-free attack (Square or "
                  f"transfer from trial {record.get('transfer_from')}) beat the white-box "
                  f"worst case ({_percent(record.get('white_box_worst'))})."]
    return "\n".join(lines)


def _front_note(records: dict[int, dict]) -> str:
    """The dashboard note of the study: the front's proxy against its verified values."""
    lines = ["**Front verified with a strong attack** (`automoe verify`): robust accuracy "
             "under the search-time proxy and under the worst case of APGD-CE, APGD-DLR, "
             "router-PGD, APGD-CE through fixed routing, Square and the transfer attack.", "",
             "| trial | proxy | verified | proxy - verified |",
             "|---|---|---|---|"]
    for number, record in sorted(records.items()):
        proxy, verified = record["robust_accuracy_proxy"], record["robust_accuracy_verified"]
        gap = "-" if proxy is None else f"{proxy - verified:+.1f}"
        lines.append(f"| {number} | {_percent(proxy)} | {_percent(verified)} | {gap} |")
    return "\n".join(lines)


def trial_model(trial: optuna.trial.FrozenTrial, artifact_store) -> torch.nn.Module:
    """The trained model of a complete trial, from its checkpoint (hash checked)."""
    with tempfile.TemporaryDirectory(prefix="automoe-verify-") as tmp:
        path = Path(tmp) / "model.safetensors"
        fetch_checkpoint(trial, artifact_store, path)
        model, _ = load_checkpoint(path)
    return model
