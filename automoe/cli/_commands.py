"""The CLI commands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path

from automoe.cli._output import architecture, err, out, pareto_table, print_json, trial_line
from automoe.errors import ConfigError


def _threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's CPU threads in this process."""
    if getattr(args, "threads", None) is None:
        return
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def _device(name: str) -> str:
    from automoe.search.workers import resolve_device

    return resolve_device(name)


def _quiet_optuna(args: argparse.Namespace | None = None) -> None:
    """Optuna's own log: errors only, or its INFO lines with ``-v``."""
    import optuna

    verbose = bool(getattr(args, "verbose", False))
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)


def _storage_url(args: argparse.Namespace) -> str:
    from automoe.storage import DEFAULT_STORAGE

    return args.storage or DEFAULT_STORAGE


def _artifact_dir(args: argparse.Namespace) -> Path:
    from automoe.storage import default_artifact_dir

    return Path(args.artifact_dir) if args.artifact_dir else default_artifact_dir(
        _storage_url(args))


def _artifact_store(args: argparse.Namespace):
    from automoe.storage import AtomicFileSystemArtifactStore

    return AtomicFileSystemArtifactStore(_artifact_dir(args))


def _retention(args: argparse.Namespace):
    """The after-trial callback of ``--keep``."""
    from automoe.search.retention import checkpoint_retention

    if args.keep != "pareto":
        return lambda study, trial: None
    return checkpoint_retention(_artifact_store(args))


def _resume_dir(args: argparse.Namespace) -> Path:
    """Per-epoch training states, so a retried trial continues where its worker died."""
    return _artifact_dir(args) / "resume"


def _existing_study(args: argparse.Namespace):
    """The study named by --study in an existing storage; without it, the only one, or the
    one that ran a trial last (named in a note, so that the choice is never silent)."""
    from automoe.cli._output import print_note
    from automoe.storage import load_study, open_storage

    storage = open_storage(_storage_url(args), create=False)
    study = load_study(storage, args.study, most_recent=True)
    if args.study is None and not getattr(args, "quiet", False):
        others = len(storage.get_all_studies()) - 1
        if others:
            print_note(f"study {study.study_name!r}, the most recently active of "
                       f"{others + 1} in this storage (pick another with --study)")
    return study


def _print_front(study, note: str = "", reference: str | None = None,
                 with_test: bool = False) -> None:
    from automoe.search import pareto_trials, study_objectives, trial_row
    from automoe.search.metrics import METRICS, parse_reference
    from automoe.search.pareto import front_hypervolume
    from automoe.search.verify import verified_results

    names = study_objectives(study)
    front = pareto_trials(study)
    verified = verified_results(study)
    rows = [trial_row(t, names, verified.get(t.number)) for t in front]
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL")
                       if states.count(s))
    table = pareto_table(rows, names, f"Pareto front of {study.study_name!r} "
                                      f"({len(states)} trials: {counts}{note})", with_test)
    hv, ref = front_hypervolume(study, parse_reference(reference, names) if reference else None)
    units = " x ".join(METRICS[n].label.split()[-1] for n in names)
    table.caption = (f"hypervolume {hv:,.6g} ({units}) against the reference "
                     + ", ".join(f"{n} {r:g}" for n, r in zip(names, ref, strict=True)))
    out.print(table)


def _bar(quiet: bool, transient: bool = False):
    """The CLI's progress bar on stderr: description, bar, n of total, time elapsed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, disable=quiet, transient=transient)


class _TrialProgress:
    """Rich progress for a run of trials: a bar of trials, a bar of the current trial's
    training steps, and one line per finished trial."""

    def __init__(self, quiet: bool, total: int | None):
        self.quiet = quiet
        self.objectives: tuple[str, ...] = ()  # the study's metric names, read on first use
        self.progress = _bar(quiet)
        self.trials = self.progress.add_task("trials", total=total)
        self.steps = self.progress.add_task("  trial", total=1, visible=False)

    def on_step(self, number: int, step: int, total: int) -> None:
        self.progress.update(self.steps, description=f"  trial {number} (train steps)",
                             completed=step, total=total, visible=True)

    def after_trial(self, study, trial) -> None:
        from automoe.search import TrialRecord, study_objectives, trial_row

        self.progress.advance(self.trials)
        self.progress.update(self.steps, visible=False)
        if self.quiet:
            return
        record = TrialRecord(trial)
        if trial.state.name == "PRUNED":
            self.progress.console.print(
                f"trial {trial.number:>3} [blue]pruned[/]: {record.prune_reason or ''}")
            return
        if trial.values is None or trial.state.name != "COMPLETE":
            reason = record.fail_reason or trial.state.name.lower()
            self.progress.console.print(f"trial {trial.number:>3} [red]failed[/]: {reason}")
            return
        # read once per search: a study's system attributes grow with NSGA-II's generations
        self.objectives = self.objectives or study_objectives(study)
        row = trial_row(trial, self.objectives)
        seconds = record.seconds
        infeasible = "" if record.feasible else " [yellow]infeasible[/]"
        self.progress.console.print(f"{trial_line(row, self.objectives)} "
                                    f"{seconds:.0f}s{infeasible}")


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) a multi-objective search over MoE-CNN designs.

    Objectives: validation accuracy (max), active-path MMACs per sample (min), robust
    accuracy under the space's attack (max). Every trial lands in the study DB; its
    checkpoint in the artifact dir.
    """
    from automoe.search import (
        SearchSpace,
        TrialRunner,
        check_study_name,
        create_or_resume_study,
        make_sampler,
        resolve_space_path,
        run_trials,
        training_seed,
    )
    from automoe.search.executors import ClusterConfig
    from automoe.storage import describe_location, open_storage
    from automoe.storage.study_db import parse_url

    _quiet_optuna(args)
    # Validate everything before the DB is touched, so bad input writes nothing.
    space = SearchSpace.from_file(resolve_space_path(args.space)).with_dataset(
        args.dataset).with_repeats(args.repeats)
    n_trials = args.trials if args.trials is not None else space.trials
    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    study_name = check_study_name(args.study or space.name)
    sampler_name = args.sampler or space.sampler["name"]
    make_sampler(sampler_name, args.seed, space.sampler["population_size"], space)  # validates
    url = _storage_url(args)
    parse_url(url)
    cluster = ClusterConfig(executor=args.executor, workers=args.workers,
                            ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                            cpus_per_worker=args.cpus_per_worker)
    cluster.check_storage(url)
    cluster.check_reachable()
    if cluster.executor != "local":
        return _search_with_workers(args, space, study_name, sampler_name, url, cluster)
    device = _device(args.device)
    _threads(args)
    started = time.perf_counter()
    progress = _TrialProgress(args.quiet, n_trials)
    runner = TrialRunner(space, _artifact_store(args), on_step=progress.on_step, device=device,
                         seed=args.seed, data_root=args.data_root, download=args.download,
                         resume_dir=_resume_dir(args))
    storage = open_storage(url, create=True, heartbeat_interval=args.heartbeat or None,
                           make_folder=args.storage is None)
    # a resumed study keeps its seed: the sampler's is derived from it and the trial count
    # (so a resume proposes new candidates), and training uses it as in every worker
    study, resumed = create_or_resume_study(storage, study_name, space, sampler_name, args.seed)
    runner.seed = training_seed(study)
    if not args.quiet:
        what = "resuming" if resumed else "created"
        err.print(f"[bold]{what}[/] study [cyan]{study_name}[/] in {describe_location(url)} "
                  f"({len(study.trials)} trials so far); space {space.source}, dataset "
                  f"{space.dataset['name']}, sampler {sampler_name}, seed {runner.seed}, "
                  f"device {device}")
    with progress.progress:
        run_trials(study, runner, n_trials, callbacks=[progress.after_trial,
                                                       _retention(args)])
    if not args.no_verify and "robust_accuracy" in space.measured_metrics():
        _verify(study, args, args.verify_steps, args.verify_restarts, None, device)
    _print_front(study, f", this run {time.perf_counter() - started:.0f}s")
    return 0


def _search_with_workers(args: argparse.Namespace, space, study_name: str, sampler_name: str,
                         url: str, cluster) -> int:
    """`search --workers N --executor processes|ray`: create or resume the study here, run
    N worker loops elsewhere until it has --trials more complete trials, show the front."""
    from automoe.data import load_dataset
    from automoe.search import create_or_resume_study
    from automoe.search.executors import run_workers
    from automoe.search.workers import WorkerConfig, counts
    from automoe.storage import describe_location, open_storage

    n_trials = args.trials if args.trials is not None else space.trials
    config = WorkerConfig(
        storage_url=url, study_name=study_name, until=1, artifact_dir=str(_artifact_dir(args)),
        device=args.device, threads=args.threads, data_root=args.data_root,
        download=args.download, heartbeat=args.heartbeat, keep=args.keep)
    if cluster.executor == "processes":  # the workers run here: check their data now
        load_dataset(space.dataset["name"], "train", args.data_root,
                     image_size=space.dataset["image_size"], download=args.download)
    started = time.perf_counter()
    storage = open_storage(url, create=True, heartbeat_interval=args.heartbeat or None,
                           make_folder=args.storage is None)
    study, resumed = create_or_resume_study(storage, study_name, space, sampler_name, args.seed)
    complete = counts(study)[0]
    config = replace(config, until=complete + n_trials)
    where = (f"Ray cluster {cluster.ray_address}" if cluster.ray_address
             else "a local Ray cluster" if cluster.executor == "ray" else "local processes")
    if not args.quiet:
        err.print(f"[bold]{'resuming' if resumed else 'created'}[/] study [cyan]{study_name}[/] "
                  f"in {describe_location(url)} ({complete} complete); {cluster.workers} workers on "
                  f"{where}, until {config.until} complete trials")
    progress = _bar(args.quiet)
    bar = progress.add_task("trials", total=n_trials)

    def on_progress(done: int, running: int, failed: int) -> None:
        progress.update(bar, completed=min(done - complete, n_trials),
                        description=f"trials ({running} running, {failed} failed)")

    with progress:
        run_workers(config, cluster, on_progress=on_progress)
    if not args.no_verify and "robust_accuracy" in space.measured_metrics():
        _verify(study, args, args.verify_steps, args.verify_restarts, None,
                _device("auto" if cluster.executor == "ray" else args.device))
    _print_front(study, f", this run {time.perf_counter() - started:.0f}s")
    return 0


def _verify(study, args, steps: int, restarts: int, max_samples: int | None, device) -> dict:
    """Re-attack the front (what is not yet verified with these settings) with progress."""
    from automoe.search.verify import VerifyConfig, verify_front

    config = VerifyConfig(steps=steps, restarts=restarts, max_samples=max_samples)
    status = (contextlib.nullcontext() if args.quiet else err.status(
        "verifying the front's robust accuracy (worst case of APGD-CE, APGD-DLR and "
        f"router-PGD; {steps} steps, {restarts} restarts)"))
    with status:
        def on_trial(number: int, record: dict) -> None:
            if not args.quiet:
                proxy = record.get("robust_accuracy_proxy")
                err.print(f"trial {number:>3} robust % proxy "
                          f"{'-' if proxy is None else f'{proxy:.2f}'}, verified "
                          f"{record['robust_accuracy_verified']:.2f}")

        return verify_front(study, _artifact_store(args), config, device=device,
                            data_root=getattr(args, "data_root", None),
                            download=getattr(args, "download", False), on_trial=on_trial)


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-attack every trial of a study's Pareto front with the worst case over APGD-CE,
    APGD-DLR and router-aware PGD (restarts, many steps) on the proxy's val samples and
    budget, and store the result beside the search-time proxy. ``pareto``, ``status``, the
    model card and ``export --pick robust|knee`` then use it."""
    from rich.table import Table

    from automoe.search import study_objectives, trial_row
    from automoe.search.pareto import pareto_trials

    _quiet_optuna(args)
    study = _existing_study(args)
    records = _verify(study, args, args.steps, args.restarts, args.max_samples,
                      _device(args.device))
    if args.json:
        print_json({str(k): v for k, v in records.items()})
        return 0
    names = study_objectives(study)
    table = Table(title=f"{study.study_name}: robust accuracy of the front, search-time proxy "
                        "and verified worst case", title_justify="left")
    for col in ("trial", "proxy %", "verified %", "proxy - verified", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for trial in pareto_trials(study):
        record = records[trial.number]
        proxy = record.get("robust_accuracy_proxy")
        table.add_row(str(trial.number), "-" if proxy is None else f"{proxy:.2f}",
                      f"{record['robust_accuracy_verified']:.2f}",
                      "-" if proxy is None else f"{proxy - record['robust_accuracy_verified']:.2f}",
                      architecture(trial_row(trial, names)))
    out.print(table)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join an existing study as one more worker, until it has --until complete trials.

    Run it on as many processes and machines as share the storage (PostgreSQL for many
    machines). Trials of a worker that died are failed and retried by the others.
    """
    from automoe.search.workers import WorkerConfig, run_worker

    _quiet_optuna(args)
    config = WorkerConfig(
        storage_url=_storage_url(args), study_name=args.study, until=args.until,
        artifact_dir=str(_artifact_dir(args)), device=args.device, seed=args.seed,
        threads=args.threads, data_root=args.data_root, download=args.download,
        heartbeat=args.heartbeat, keep=args.keep)
    progress = _TrialProgress(args.quiet, None)

    def on_start(study, complete: int) -> None:  # the bar shows once the study is open
        if not args.quiet:
            err.print(f"[bold]worker[/] on study [cyan]{study.study_name}[/]: {complete} "
                      f"complete, until {args.until}; device {_device(args.device)}")
        progress.progress.update(progress.trials, total=max(args.until - complete, 0))
        progress.progress.start()

    try:
        run_worker(config, on_step=progress.on_step, callbacks=[progress.after_trial],
                   on_start=on_start)
    finally:
        if progress.progress.live.is_started:
            progress.progress.stop()
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    """Show the Pareto-optimal feasible trials of a study on its objectives."""
    from automoe.search import pareto_trials, study_objectives, trial_row

    _quiet_optuna(args)
    study = _existing_study(args)
    if args.json and args.csv:
        raise ConfigError("pass one of --json and --csv")
    from automoe.search.verify import verified_results

    names = study_objectives(study)
    verified = verified_results(study)
    rows = [trial_row(t, names, verified.get(t.number)) for t in pareto_trials(study)]
    if args.json:
        print_json(rows)
    elif args.csv:
        _print_csv(rows, names)
    else:
        _print_front(study, reference=args.reference, with_test=args.with_test)
    return 0


def _print_csv(rows: list[dict], names) -> None:
    import csv
    import sys

    from automoe.search import METRICS

    metrics = [m for m in (*METRICS, "test_accuracy") if m not in names]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["trial", *names, *metrics, "robust_accuracy_verified", "params",
                     "placement", "granularity", "experts", "top_k", "width_multiplier", "lr",
                     "epochs", "feasible"])
    for row in rows:
        model = row["config"].get("model", {})
        train = row["config"].get("train", {})
        writer.writerow([row["trial"], *(row["values"][n] for n in names),
                         *(row["metrics"].get(m, "") for m in metrics),
                         "" if row["robust_accuracy_verified"] is None
                         else row["robust_accuracy_verified"], row["params"],
                         model.get("placement", "none"), model.get("granularity", "conv"),
                         model.get("num_experts", 1), model.get("top_k", 1),
                         model.get("width_multiplier", 1.0), train.get("lr"),
                         train.get("epochs"), row["feasible"]])


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies of a storage, or remove the checkpoints of trials off the Pareto
    front (``gc``; what ``search --keep pareto`` does as it goes)."""
    import optuna
    from rich.table import Table

    from automoe.search import pareto_trials, study_objectives
    from automoe.search.retention import checkpoint_size, remove_dominated_checkpoints
    from automoe.storage import load_study, open_storage

    _quiet_optuna(args)
    storage = open_storage(_storage_url(args), create=False)
    store = _artifact_store(args)
    if args.action == "gc":
        studies = ([load_study(storage, args.study)] if args.study else
                   [optuna.load_study(study_name=s.study_name, storage=storage)
                    for s in storage.get_all_studies()])
        for study in studies:
            before = checkpoint_size(study, store)[1]
            removed = remove_dominated_checkpoints(study, store)
            kept, after = checkpoint_size(study, store)
            out.print(f"{study.study_name}: removed {len(removed)} checkpoints of trials off "
                      f"the Pareto front ({(before - after) / 1e6:.1f} MB); kept {kept} "
                      f"({after / 1e6:.1f} MB)")
        return 0
    table = Table(title=f"studies in {_describe(args)}", title_justify="left")
    for col in ("study", "objectives", "complete", "pruned", "failed", "running", "front",
                "checkpoints", "last trial (UTC)"):
        table.add_column(col, justify="left" if col in ("study", "objectives") else "right",
                         no_wrap=True)
    for summary in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state.name for t in trials]
        ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
        count, size = checkpoint_size(study, store)
        table.add_row(study.study_name, ", ".join(study_objectives(study)),
                      *(str(states.count(s)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")),
                      str(len(pareto_trials(study))), f"{count} ({size / 1e6:.1f} MB)",
                      max(ends).strftime("%Y-%m-%d %H:%M") if ends else "-")
    out.print(table)
    return 0


def _describe(args: argparse.Namespace) -> str:
    from automoe.storage import describe_url

    return describe_url(_storage_url(args))


def _status_view(study):
    """One snapshot of a study for ``automoe status``."""
    from rich.console import Group
    from rich.table import Table

    from automoe.search import METRICS, TrialRecord, pareto_trials, study_objectives
    from automoe.search.metrics import COLLAPSED_BELOW
    from automoe.search.pareto import front_hypervolume, is_feasible
    from automoe.search.verify import verified_results

    names = study_objectives(study)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None]
    feasible = [t for t in complete if is_feasible(t)]
    front = pareto_trials(study)
    hv, reference = front_hypervolume(study)
    # one line per fact, each short enough for 80 columns
    head = Table.grid(padding=(0, 2))
    head.add_row(f"[bold]{study.study_name}[/]", "  ".join(f"{s.lower()} {states.count(s)}" for s in (
        "COMPLETE", "RUNNING", "PRUNED", "FAIL", "WAITING")))
    head.add_row("front", f"{len(front)} trials, hypervolume {hv:,.6g}")
    head.add_row("", "reference " + ", ".join(f"{r:g}" for r in reference))
    if len(feasible) < len(complete):
        head.add_row("constraints", f"{len(feasible)} feasible, "
                     f"{len(complete) - len(feasible)} infeasible (not on the front)")
    verified = verified_results(study)
    checked = [verified[t.number] for t in front if t.number in verified]
    if checked:
        gaps = [r["robust_accuracy_proxy"] - r["robust_accuracy_verified"] for r in checked
                if r.get("robust_accuracy_proxy") is not None]
        head.add_row("verified", f"{len(checked)} of {len(front)} front trials")
        head.add_row("", f"proxy - verified robust % mean {sum(gaps) / max(len(gaps), 1):.2f}, "
                     f"largest {max(gaps, default=0.0):.2f}")
    use = {t.number: TrialRecord(t).expert_use for t in complete}
    moe = {number: value for number, value in use.items() if value is not None}
    if moe:
        worst = min(moe, key=moe.get)
        collapsed = sum(value < COLLAPSED_BELOW for value in moe.values())
        head.add_row("routers", f"{len(moe)} MoE trials, {collapsed} collapsed (expert use "
                     f"< {COLLAPSED_BELOW:g})")
        head.add_row("", f"lowest expert use {moe[worst]:.2f} (trial {worst})")
    best = Table(title="best per objective (feasible trials)", title_justify="left", min_width=40)
    for col in ("objective", "value", "trial"):
        best.add_column(col)
    for i, name in enumerate(names):
        metric = METRICS[name]
        if feasible:
            pick = (max if metric.maximize else min)(feasible, key=lambda t: t.values[i])
            best.add_row(name, metric.format(pick.values[i]), str(pick.number))
    running = Table(title="running", title_justify="left")
    for col in ("trial", "started (UTC)", "worker"):
        running.add_column(col)
    for t in trials:
        if t.state.name == "RUNNING":
            worker = TrialRecord(t).worker
            running.add_row(str(t.number), t.datetime_start.strftime("%H:%M:%S")
                            if t.datetime_start else "-",
                            f"{worker.get('host', '?')}:{worker.get('pid', '?')}")
    parts = [head, best, running if running.row_count else "no running trial"]
    workers = _workers_table(trials)
    if workers.row_count > 1:
        parts.append(workers)
    return Group(*parts)


def _workers_table(trials):
    """Which worker (host, process, Ray node) ran which trials, and how they ended."""
    from rich.table import Table

    from automoe.search import TrialRecord

    rows: dict[tuple, dict] = {}
    for t in trials:
        worker = TrialRecord(t).worker
        if not worker:
            continue
        key = (worker.get("host", "?"), worker.get("pid", "?"), worker.get("ray_node", ""))
        row = rows.setdefault(key, {"executor": worker.get("executor", "-"), "trials": []})
        row["trials"].append(t)
    table = Table(title="workers", title_justify="left")
    for col in ("worker", "ray node", "executor", "complete", "running", "failed", "pruned",
                "trials"):
        table.add_column(col, justify="right" if col in ("complete", "running", "failed",
                                                          "pruned") else "left")
    for (host, pid, node), row in rows.items():
        states = [t.state.name for t in row["trials"]]
        numbers = [t.number for t in row["trials"]]
        shown = ", ".join(map(str, numbers[:8])) + (", ..." if len(numbers) > 8 else "")
        table.add_row(f"{host}:{pid}", node[:12] or "-", row["executor"],
                      *(str(states.count(s)) for s in ("COMPLETE", "RUNNING", "FAIL", "PRUNED")),
                      shown)
    return table


def cmd_status(args: argparse.Namespace) -> int:
    """A live view of a study (Ctrl-C to leave): trials by state, best value of each
    objective, size and hypervolume of the Pareto front, running trials and their workers."""
    from rich.live import Live

    _quiet_optuna(args)
    if args.interval <= 0:
        raise ConfigError(f"--interval must be positive, got {args.interval}")
    study = _existing_study(args)
    if args.once:
        out.print(_status_view(study))
        return 0
    try:
        if not out.is_terminal:  # piped: a plain snapshot every interval, not a live view
            while True:
                out.print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}")
                out.print(_status_view(study))
                out.file.flush()
                time.sleep(args.interval)
        with Live(_status_view(study), console=out, refresh_per_second=4) as live:
            while True:
                time.sleep(args.interval)
                live.update(_status_view(study))
    except KeyboardInterrupt:
        return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a figure of a study into --out: the suffix picks interactive HTML (plotly) or a
    static PNG/SVG/PDF (matplotlib)."""
    from automoe.search import study_objectives
    from automoe.search.metrics import parse_reference
    from automoe.search.plots import write_plot

    _quiet_optuna(args)
    study = _existing_study(args)
    reference = (parse_reference(args.reference, study_objectives(study)) if args.reference
                 else None)
    path = write_plot(study, args.kind, args.out, trial=args.trial, reference=reference)
    if not args.quiet:
        if args.kind == "importance":
            from automoe.cli._output import print_note
            from automoe.search.plots import MIN_TRIALS_FOR_IMPORTANCE
            from automoe.search.workers import counts

            complete = counts(study)[0]
            if complete < MIN_TRIALS_FOR_IMPORTANCE:
                print_note(f"only {complete} complete trials: parameter importances are "
                           f"unreliable below {MIN_TRIALS_FOR_IMPORTANCE}")
        err.print(f"wrote {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the study DB (Ctrl-C to stop). Each trial's checkpoint is
    one of its artifacts; objective names, configs, metrics and feasibility are user attrs.
    The dashboard has no hypervolume view and ignores Optuna 5 constraints: `automoe status`
    and `automoe plot history` show those."""
    import optuna_dashboard

    from automoe.storage import open_storage

    _quiet_optuna(args)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    storage = open_storage(_storage_url(args), create=False)
    if not args.quiet:
        err.print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {_describe(args)}, "
                  f"artifacts in {_artifact_dir(args)} (Ctrl-C to stop)")
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port,
                                    artifact_store=_artifact_store(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def cmd_supernet(args: argparse.Namespace) -> int:
    """Weight-sharing search in three steps. ``train`` trains one supernet over the space's
    placement x experts x top-k x width (sandwich rule, progressive shrinking of the width,
    optionally in-place distillation and PGD adversarial training). ``search`` runs NSGA-II
    over its sub-networks, each evaluated with inherited weights (BatchNorm recalibrated)
    and stored as a trial with ``fidelity = "supernet"``. ``finalize`` retrains the best
    sub-networks of that front stand-alone, as normal trials that record their supernet
    values beside their own."""
    from automoe.search import (
        SearchSpace,
        StudyRecord,
        TrialRecord,
        TrialRunner,
        create_or_resume_study,
        pareto_trials,
        resolve_space_path,
        run_trials,
        study_objectives,
        training_seed,
    )
    from automoe.search.record import enqueue_finalist
    from automoe.search.supernet import RECIPE_EPOCHS_FACTOR, Supernet
    from automoe.storage import open_storage

    _quiet_optuna(args)
    device = _device(args.device)
    _threads(args)
    if args.action == "train":
        if not args.out:
            raise ConfigError("`supernet train` needs --out FILE")
        if Path(args.out).exists() and not args.force:
            raise ConfigError(f"{args.out!r} already exists; pass --force to replace it")
        space = SearchSpace.from_file(resolve_space_path(args.space))
        from automoe.data import load_dataset

        train_set = load_dataset(space.dataset["name"], "train", args.data_root,
                                 image_size=space.dataset["image_size"],
                                 augment=space.dataset["augment"], download=args.download,
                                 cache=space.dataset["cache"])
        import torch

        torch.manual_seed(args.seed)
        net = Supernet(space, train_set.info)
        epochs = args.epochs or RECIPE_EPOCHS_FACTOR * net.recipe().epochs
        recipe = replace(net.recipe(), epochs=epochs, seed=args.seed)
        if args.adversarial:
            recipe = replace(recipe, scheme="pgd_at")
        progress = _TrialProgress(args.quiet, None)
        progress.progress.update(progress.trials, visible=False)

        def on_step(step: int, total: int) -> None:
            progress.progress.update(progress.steps, description="supernet (train steps)",
                                     completed=step, total=total, visible=True)

        with progress.progress:
            history = net.train(train_set, recipe, subnets_per_step=args.subnets_per_step,
                                distill=args.distill, expert_sampling=args.expert_sampling,
                                step_rule=args.step_rule,
                                width_schedule=args.width_schedule, device=device,
                                on_step=on_step)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        net.save(args.out, history)
        if not args.quiet:
            adversarial = " of PGD-AT" if recipe.scheme == "pgd_at" else ""
            err.print(f"supernet of {space.name}: {epochs} epochs{adversarial}, largest "
                      f"sub-network loss {history[-1]['loss']:.3f}; wrote {args.out}")
        return 0

    storage = open_storage(_storage_url(args), create=args.action == "search")
    if args.action == "search":
        if not args.supernet:
            raise ConfigError("`supernet search` needs --supernet FILE")
        if args.recal_batches < 1:
            raise ConfigError(f"--recal-batches must be >= 1, got {args.recal_batches}")
        if args.attack_samples is not None and args.attack_samples < 1:
            raise ConfigError(f"--attack-samples must be >= 1, got {args.attack_samples}")
        net = Supernet.load(args.supernet)
        space = net.space
        screen = space  # what the trials measure with; the study keeps the space as written
        if args.attack_samples is not None:
            screen = replace(space, attack=replace(space.attack,
                                                   max_samples=args.attack_samples))
        study_name = args.study or f"{space.name}-supernet"
        study, _ = create_or_resume_study(storage, study_name, space, space.sampler["name"],
                                          args.seed)
        # finalize compares these robust values with full evaluations: say on what
        StudyRecord(study).write_supernet_screen(screen.attack.max_samples)
        progress = _TrialProgress(args.quiet, args.trials)
        runner = TrialRunner(screen, _artifact_store(args), device=device,
                             seed=training_seed(study),
                             data_root=args.data_root, download=args.download, supernet=net,
                             recalibration_batches=args.recal_batches, usage_plots=False)
        with progress.progress:
            run_trials(study, runner, args.trials, callbacks=[progress.after_trial,
                                                              _retention(args)])
        _print_front(study, ", inherited weights")
        return 0

    # finalize
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    source = _existing_study(args)
    from automoe.search import space_of_study

    space = space_of_study(source)
    names = study_objectives(source)
    front = pareto_trials(source)[:args.top]
    if not front:
        raise ConfigError(f"study {source.study_name!r} has no complete sub-network yet")
    target_name = args.target_study or space.name
    target, _ = create_or_resume_study(storage, target_name, space, space.sampler["name"],
                                       args.seed)
    before = len(target.trials)
    for trial in front:
        enqueue_finalist(target, trial.params, source.study_name, trial.number,
                         dict(zip(names, trial.values, strict=True)))
    progress = _TrialProgress(args.quiet, len(front))
    runner = TrialRunner(space, _artifact_store(args), device=device,
                         seed=training_seed(target), data_root=args.data_root,
                         download=args.download, resume_dir=_resume_dir(args))
    with progress.progress:
        run_trials(target, runner, len(front), callbacks=[progress.after_trial])
    if not args.no_verify and "robust_accuracy" in space.measured_metrics():
        _verify(target, args, args.verify_steps, args.verify_restarts, None, device)
    from rich.table import Table

    from automoe.search import METRICS

    table = Table(title=f"finalists of {source.study_name!r}: inherited weights vs trained "
                        f"stand-alone in {target_name!r}", title_justify="left")
    table.add_column("sub-network")
    table.add_column("trial")
    for name in names:
        table.add_column(f"{METRICS[name].label} inherited", justify="right")
        table.add_column(f"{METRICS[name].label} stand-alone", justify="right")
    for trial in target.get_trials(deepcopy=False)[before:]:
        origin = TrialRecord(trial).supernet_origin
        cells = []
        for i, name in enumerate(names):
            cells.append(METRICS[name].format(origin.get("values", {}).get(name)))
            cells.append(METRICS[name].format(trial.values[i]) if trial.values else "-")
        table.add_row(str(origin.get("trial", "-")), str(trial.number), *cells)
    out.print(table)
    if "robust_accuracy" in names:
        screened = StudyRecord(source).screen_attack_samples
        full = space.attack.max_samples
        if screened != full:
            out.print(f"robust % inherited was screened on the first {screened} val samples "
                      f"(--attack-samples); stand-alone on "
                      f"{'every val sample' if full is None else f'the first {full}'}: the "
                      "two columns are not on the same samples")
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    """Which backend each MoE op runs with ``dispatch: auto`` on this machine, and why."""
    import torch
    from rich.table import Table

    cuda = torch.cuda.is_available()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    table = Table(title="MoE ops with dispatch: auto", title_justify="left")
    for col in ("op", "on CPU tensors", "on CUDA tensors"):
        table.add_column(col)
    gpu = ("Triton kernel" if triton_version else "PyTorch sparse (no Triton)")
    table.add_row("conv experts (conv, pathway)", "PyTorch sparse (a conv per expert)",
                  gpu if cuda else f"{gpu} [dim](no CUDA device here)[/]")
    table.add_row("channel gating (channel)", "PyTorch sparse (batch union of channels)",
                  gpu if cuda else f"{gpu} [dim](no CUDA device here)[/]")
    table.add_row("block experts (block)", "PyTorch gather/scatter", "PyTorch gather/scatter")
    table.caption = (f"torch {torch.__version__}; triton {triton_version or 'not installed'}; "
                     + (f"CUDA device: {torch.cuda.get_device_name()}" if cuda
                        else "no CUDA device"))
    out.print(table)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    """List the shipped search spaces, validate a space file, or show its dimensions."""
    from rich.table import Table

    from automoe.search import METRICS, SearchSpace, resolve_space_path

    if args.action == "list":
        folders = [Path.cwd() / "search_spaces",
                   Path(__file__).resolve().parents[2] / "search_spaces"]
        seen: dict[str, Path] = {}
        for folder in folders:
            for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
                seen.setdefault(path.stem, path)
        table = Table(title="search spaces", title_justify="left")
        for col in ("name", "dataset", "model", "searched", "trials", "description"):
            table.add_column(col)
        for name, path in seen.items():
            try:
                space = SearchSpace.from_file(path)
            except ConfigError as exc:
                table.add_row(name, "-", "-", "-", "-", f"[red]invalid[/]: {exc}")
                continue
            table.add_row(name, space.dataset["name"], space.model_name,
                          ", ".join(space.dimensions), str(space.trials), space.description)
        out.print(table)
        return 0
    if args.space is None:
        raise ConfigError(f"`automoe spaces {args.action}` needs a space file or name")
    space = SearchSpace.from_file(resolve_space_path(args.space))
    if args.action == "validate":
        out.print(f"{space.source}: valid ({len(space.dimensions)} searched, "
                  f"{len(space.fixed)} fixed parameters; fingerprint {space.fingerprint()})")
        return 0
    table = Table(title=f"{space.name}: {space.description}", title_justify="left")
    table.add_column("parameter")
    table.add_column("values")
    for name, dim in space.dimensions.items():
        if dim.kind == "categorical":
            values = ", ".join(map(str, dim.choices))
        else:
            values = f"{dim.kind} [{dim.low}, {dim.high}]" + (f" step {dim.step}" if dim.step
                                                              else "") + (" log" if dim.log
                                                                         else "")
            if name == "top_k":
                values += ", capped at experts"
        table.add_row(name, values)
    for name, value in space.fixed.items():
        table.add_row(name, f"{value} (fixed)")
    table.add_row("dataset", f"{space.dataset['name']} (image_size {space.dataset['image_size']})")
    table.add_row("model", f"{space.model_name} {space.model_fixed or ''}")
    table.add_row("objectives", ", ".join(f"{n} ({METRICS[n].direction})"
                                          for n in space.objectives))
    if "robust_accuracy" in space.measured_metrics():
        table.add_row("robust accuracy attack", space.attack.describe())
    if "latency_ms" in space.measured_metrics():
        table.add_row("latency", ", ".join(f"{k} {v}" for k, v in space.latency.items()))
    if space.fidelity:
        table.add_row("fidelity", f"successive halving, rungs at epochs "
                      f"{', '.join(map(str, space.rungs())) or 'none'}, reduction factor "
                      f"{space.fidelity['reduction_factor']}")
    if space.constraints:
        table.add_row("constraints", ", ".join(f"{k} {v:g}" for k, v in space.constraints.items()))
    table.add_row("sampler", f"{space.sampler['name']} (population {space.sampler['population_size']})")
    table.add_row("fingerprint", space.fingerprint())
    out.print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trial's model: model.safetensors, config.json that rebuilds it, and a model
    card (MODEL_CARD.md). Pick the trial by number or off the Pareto front with --pick."""
    from automoe.export import export_trial

    _quiet_optuna(args)
    study = _existing_study(args)
    if args.pick is None and (args.max_mmacs is not None or args.min_robust is not None):
        raise ConfigError("--max-mmacs and --min-robust go with --pick")
    number = args.trial
    if args.pick is not None:
        from automoe.export.pick import pick_trial

        number = pick_trial(study, args.pick, max_mmacs=args.max_mmacs,
                            min_robust=args.min_robust).number
    path = export_trial(study, number, args.out, _artifact_store(args), force=args.force,
                        torchscript=args.torchscript, onnx=args.onnx)
    if not args.quiet:
        how = f" (--pick {args.pick})" if args.pick else ""
        err.print(f"exported trial {number}{how} of {study.study_name!r} to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate an exported model: accuracy, PGD robust accuracy and FLOPs."""
    from rich.table import Table

    from automoe.export import evaluate_export

    result = evaluate_export(args.path, data_root=args.data_root, dataset=args.dataset,
                             device=_device(args.device), download=args.download)
    if args.json:
        print_json(result)
        return 0
    stored = result.get("stored") or {}
    table = Table(title=f"{args.path}: {result['model']} on {result['dataset']}",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("now", justify="right")
    table.add_column("at search time", justify="right")
    for key, label in [("val_accuracy", "val accuracy %"), ("test_accuracy", "test accuracy %"),
                       ("robust_accuracy", "robust accuracy % (PGD, val)"),
                       ("mmacs", "active MMACs / sample"),
                       ("expert_use", "expert use (fewest effective experts / E)")]:
        now, then = result.get(key), stored.get(key)
        table.add_row(label, "-" if now is None else f"{now:.3f}",
                      "-" if then is None else f"{then:.3f}")
    table.add_row("MMACs, all experts computed", f"{result['mmacs_dense']:.3f}", "")
    table.add_row("MMACs, as executed", f"{result['mmacs_executed']:.3f}", "")
    table.add_row("params", f"{result['params']:,}", "")
    out.print(table)
    return 0



def _pixels(value: str, flag: str) -> float:
    """A budget given as a number or a fraction like 8/255."""
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            return float(num) / float(den)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{flag} must be a number or a fraction like 8/255, got {value!r}") from None


@contextlib.contextmanager
def _attack_progress(quiet: bool):
    """A progress bar over samples x attacks, gone when done; yields the callback."""
    progress = _bar(quiet, transient=True)
    task = progress.add_task("attacking", total=None)

    def on_progress(done: int, total: int, attack: str) -> None:
        progress.update(task, completed=done, total=total, description=f"attacking: {attack}")

    with progress:
        yield on_progress


def cmd_robustness(args: argparse.Namespace) -> int:
    """Attack an exported model with strong attacks and report robust accuracy per attack.

    Every attack runs on the same samples; the last row is the worst case over all of them
    (a sample counts as robust only if no attack fooled it).
    """
    import torch
    from rich.table import Table

    from automoe.data import load_dataset
    from automoe.export import load, read_export_config
    from automoe.robustness import AttackConfig, worst_case_accuracy
    from automoe.robustness.attacks import STRONG_ATTACKS

    config = read_export_config(args.path)
    model = load(args.path)
    device = _device(args.device)
    model.to(device).eval()
    data = config.get("data") or {}
    dataset = load_dataset(data.get("name", "digits"), args.split, args.data_root,
                           image_size=data.get("image_size"))
    if args.max_samples is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_samples, len(dataset))))
    eps = _pixels(args.eps, "--eps")
    step = _pixels(args.step_size, "--step-size") if args.step_size else eps / 4
    if args.norm not in STRONG_ATTACKS:
        raise ConfigError(f"--norm must be one of {', '.join(STRONG_ATTACKS)}, got {args.norm!r}")
    # every attack runs in the asked norm, so the worst case is over one threat model
    attacks = args.attack or list(STRONG_ATTACKS[args.norm])
    configs = [AttackConfig(attack=a, norm=args.norm, eps=eps, step_size=step,
                            steps=args.steps, restarts=args.restarts) for a in attacks]
    with _attack_progress(args.quiet) as on_progress:
        report = worst_case_accuracy(model, dataset, configs, device=device,
                                     on_progress=on_progress)
    rows = {"clean": 100 * report.clean,
            **{name: 100 * value for name, value in report.per_attack.items()},
            "worst case over the attacks": 100 * report.worst}
    if args.json:
        print_json({"model": args.path, "split": args.split, "samples": report.samples,
                    "accuracy": rows})
        return 0
    table = Table(title=f"{args.path}: robust accuracy on {data.get('name')} {args.split} "
                        f"({report.samples} samples)", title_justify="left")
    table.add_column("attack")
    table.add_column("accuracy %", justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:.2f}")
    out.print(table)
    return 0
