"""Commands that run trials: ``search``, ``worker``, ``verify`` and ``supernet``."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from automoe import results, search
from automoe import space as spaces
from automoe.cli import _context as ctx
from automoe.cli._output import architecture, err, out, print_json, print_note
from automoe.cli._parser import Commands, verify_budget
from automoe.errors import ConfigError
from automoe.results import check_study_name, pareto_trials, study_objectives, trial_row
from automoe.search import (
    EXECUTORS,
    SAMPLERS,
    ClusterConfig,
    make_sampler,
    run_search,
    sampler_spec,
    training_seed,
)
from automoe.space import resolve_space_path
from automoe.storage import describe_location, load_study, open_storage


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) a multi-objective search over MoE-CNN designs.

    Objectives: validation accuracy (max), active-path MMACs per sample (min), robust
    accuracy under the space's attack (max). Every trial lands in the study DB; its
    checkpoint in the artifact dir.
    """
    ctx.quiet_optuna(args)
    # Validate everything before the DB is touched, so bad input writes nothing.
    space = spaces.SearchSpace.from_file(resolve_space_path(args.space)).with_dataset(
        args.dataset).with_repeats(args.repeats)
    n_trials = args.trials if args.trials is not None else space.trials
    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    if not args.no_verify:  # a bad verification flag fails now, not after the trials
        results.VerifyConfig(steps=args.verify_steps, restarts=args.verify_restarts)
    study_name = check_study_name(args.study or space.name)
    sampler = sampler_spec(args.sampler, space)
    sampler_name = sampler["name"]
    make_sampler(sampler, args.seed, space)  # validates the name and its options
    url = ctx.storage_url(args)
    warm = None
    if args.warm_start:  # an earlier study whose front runs first (a new study only)
        warm = load_study(open_storage(args.warm_start_storage or url, create=False),
                          args.warm_start)
    cluster = ClusterConfig(executor=args.executor, workers=args.workers,
                            ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                            cpus_per_worker=args.cpus_per_worker)
    started = time.perf_counter()
    # the driver of a Ray search may have no GPU of its own: it verifies on what it has
    here = search.resolve_device("auto" if cluster.executor == "ray" else args.device)
    if cluster.executor == "local":
        ctx.set_threads(args)
    where = (f"Ray cluster {cluster.ray_address}" if cluster.ray_address
             else "a local Ray cluster" if cluster.executor == "ray" else "local processes")
    local = cluster.executor == "local"
    progress = ctx.TrialProgress(args.quiet, n_trials) if local else None
    bar = ctx.bar(args.quiet) if not local else None
    task = bar.add_task("trials", total=n_trials) if bar is not None else None
    first = {}

    def on_start(study, resumed: bool, complete: int) -> None:
        first["complete"] = complete
        if warm is not None and not args.quiet:
            queued = sum(results.TrialRecord(t).warm_start is not None
                         for t in study.get_trials(deepcopy=False))
            print_note(f"--warm-start ignored: study {study_name!r} exists and keeps its "
                       "trials" if resumed else f"warm start: {queued} configurations of "
                       f"{warm.study_name!r}'s front run first")
        if not args.quiet:
            what = "resuming" if resumed else "created"
            if local:
                err.print(f"[bold]{what}[/] study [cyan]{study_name}[/] in "
                          f"{describe_location(url)} ({len(study.trials)} trials so far); space "
                          f"{space.source}, dataset {space.dataset['name']}, sampler "
                          f"{sampler_name}, seed {training_seed(study)}, device {here}")
            else:
                err.print(f"[bold]{what}[/] study [cyan]{study_name}[/] in "
                          f"{describe_location(url)} ({complete} complete); {cluster.workers} "
                          f"workers on {where}, until {complete + n_trials} complete trials")
        (progress.progress if local else bar).start()

    def on_progress(done: int, running: int, failed: int) -> None:
        bar.update(task, completed=min(done - first["complete"], n_trials),
                   description=f"trials ({running} running, {failed} failed)")

    try:
        study = run_search(
            space, url, study_name=study_name, trials=n_trials, sampler=sampler,
            seed=args.seed, cluster=cluster, artifact_dir=ctx.artifact_dir(args),
            device=here if local else args.device, threads=args.threads,
            data_root=args.data_root, download=args.download, heartbeat=args.heartbeat,
            keep=args.keep, make_folder=args.storage is None,
            callbacks=[progress.after_trial] if local else None, warm_start=warm,
            on_step=progress.on_step if local else None, on_start=on_start,
            on_progress=on_progress)
    finally:
        if first:  # stopping a display that never started would print a stray newline
            (progress.progress if local else bar).stop()
    if not args.no_verify and "robust_accuracy" in space.measured_metrics():
        ctx.verify(study, args, args.verify_steps, args.verify_restarts, None, here,
                   args.verify_jobs)
    ctx.print_front(study, f", this run {time.perf_counter() - started:.0f}s")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-attack every trial of a study's Pareto front with the worst case over APGD-CE,
    APGD-DLR, router-aware PGD and APGD-CE through fixed routing (restarts, many steps),
    the black-box Square attack and
    PGD transferred from the study's best dense trial of the same width, on the proxy's
    val samples and budget, and store the result beside the search-time proxy. ``pareto``, ``status``, the
    model card and ``export --pick robust|knee`` then use it."""
    ctx.quiet_optuna(args)
    study = ctx.existing_study(args)
    records = ctx.verify(study, args, args.steps, args.restarts, args.max_samples,
                         search.resolve_device(args.device), args.jobs)
    if args.json:
        print_json({str(k): v for k, v in records.items()})
        return 0
    names = study_objectives(study)
    table = Table(title=f"{study.study_name}: robust accuracy of the front, search-time proxy "
                        "and verified worst case", title_justify="left")
    for col in ("trial", "proxy %", "verified %", "proxy - verified", "white-box %",
                "square %", "transfer %", "masking", "architecture"):
        table.add_column(col, justify="left" if col in ("architecture", "masking") else "right")

    def percent(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    for trial in pareto_trials(study):
        record = records[trial.number]
        proxy = record.get("robust_accuracy_proxy")
        verified = record["robust_accuracy_verified"]
        attacks = record.get("attacks") or {}
        transfer = attacks.get("transfer")
        table.add_row(str(trial.number), percent(proxy), f"{verified:.2f}",
                      "-" if proxy is None else f"{proxy - verified:.2f}",
                      percent(record.get("white_box_worst")), percent(attacks.get("square")),
                      "-" if transfer is None else
                      f"{transfer:.2f} (from {record.get('transfer_from')})",
                      "suspected" if record.get("masking_suspected") else "-",
                      architecture(trial_row(trial, names)))
    out.print(table)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join an existing study as one more worker, until it has --until complete trials.

    Run it on as many processes and machines as share the storage (PostgreSQL for many
    machines). Trials of a worker that died are failed and retried by the others.
    """
    ctx.quiet_optuna(args)
    config = search.WorkerConfig(
        storage_url=ctx.storage_url(args), study_name=args.study, until=args.until,
        artifact_dir=str(ctx.artifact_dir(args)), device=args.device, seed=args.seed,
        threads=args.threads, data_root=args.data_root, download=args.download,
        heartbeat=args.heartbeat, keep=args.keep)
    progress = ctx.TrialProgress(args.quiet, None)

    def on_start(study, complete: int) -> None:  # the bar shows once the study is open
        if not args.quiet:
            err.print(f"[bold]worker[/] on study [cyan]{study.study_name}[/]: {complete} "
                      f"complete, until {args.until}; device {search.resolve_device(args.device)}")
        progress.progress.update(progress.trials, total=max(args.until - complete, 0))
        progress.progress.start()

    try:
        search.run_worker(config, on_step=progress.on_step, callbacks=[progress.after_trial],
                   on_start=on_start)
    finally:
        if progress.progress.live.is_started:
            progress.progress.stop()
    return 0


def register(commands: Commands) -> None:
    f = commands.flags
    p = commands.add("search", cmd_search, [f.common, f.storage, f.config, f.running, f.data,
                                            f.device],
                     "run (or resume) a multi-objective search")
    p.add_argument("--space", default="default", metavar="FILE|NAME",
                   help="search-space YAML file, or the name of one in search_spaces/")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="trials to run now (default: the space's `trials`)")
    p.add_argument("--sampler", default=None, metavar="NAME",
                   help=f"{', '.join(SAMPLERS)} (nni-*: NNI's tuners; default: the space's "
                        "sampler)")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="override the space's dataset (digits, cluttered_digits, cifar10, "
                        "cifar100, mnist, fashion_mnist, svhn, imagefolder)")
    p.add_argument("--warm-start", default=None, metavar="STUDY",
                   help="a new study runs this earlier study's Pareto front first (its "
                        "parameters the space searches; e.g. a study on another data set)")
    p.add_argument("--warm-start-storage", default=None, metavar="URL",
                   help="where the --warm-start study is (default: --storage)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of a new study (sampler and training); a resumed study keeps "
                        "its own, and each resume samples from a stream derived from it")
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="train each candidate with N seeds and optimise the means (default: "
                        "the space's evaluation.repeats, 1); part of the study's identity")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker loops running trials at once (with --executor processes or ray)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: trials in this process; processes: N worker processes on this "
                        "machine (one GPU each with --gpus-per-worker 1); ray: N tasks on a "
                        "Ray cluster")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: "
                        "start a local one")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs each worker holds")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="CPUs each Ray worker holds (with --threads, the torch threads it uses)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-attacking the front with the strong worst case at the end "
                        "(see `automoe verify`)")
    verify_budget(p, "verify-")

    p = commands.add("verify", cmd_verify, [f.common, f.storage, f.data, f.device, f.json],
                     "re-attack the Pareto front with the strong worst case (APGD-CE, "
                     "APGD-DLR, router-PGD) and store it beside the search-time proxy")
    verify_budget(p, "")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="val samples to attack (default: those of the study's proxy attack)")

    p = commands.add("worker", cmd_worker, [f.common, f.storage, f.config, f.running, f.data,
                                            f.device],
                     "join a study as one more worker")
    p.add_argument("--until", type=int, default=None, metavar="N",
                   help="stop once the study has N complete trials (required)")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed of this worker (default: random, so workers differ)")
