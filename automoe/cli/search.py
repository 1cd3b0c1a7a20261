"""Commands that run trials: ``search``, ``worker``, ``verify`` and ``supernet``."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.table import Table

from automoe.cli import _context as ctx
from automoe.cli._output import architecture, err, out, print_json
from automoe.cli._parser import Commands, HelpFormatter, Parser
from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.search import (
    EXECUTORS,
    KEEP,
    METRICS,
    SAMPLERS,
    ClusterConfig,
    SearchSpace,
    TrialRunner,
    WorkerConfig,
    check_study_name,
    create_or_resume_study,
    make_sampler,
    pareto_trials,
    resolve_space_path,
    run_trials,
    run_worker,
    search_with_workers,
    study_objectives,
    training_seed,
    trial_row,
)
from automoe.search.supernet import (
    EXPERT_SAMPLING,
    RECIPE_EPOCHS_FACTOR,
    STEP_RULES,
    WIDTH_SCHEDULES,
    Supernet,
    finalize_front,
    screen_subnets,
)
from automoe.storage import describe_location, open_storage, parse_url


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) a multi-objective search over MoE-CNN designs.

    Objectives: validation accuracy (max), active-path MMACs per sample (min), robust
    accuracy under the space's attack (max). Every trial lands in the study DB; its
    checkpoint in the artifact dir.
    """
    ctx.quiet_optuna(args)
    # Validate everything before the DB is touched, so bad input writes nothing.
    space = SearchSpace.from_file(resolve_space_path(args.space)).with_dataset(
        args.dataset).with_repeats(args.repeats)
    n_trials = args.trials if args.trials is not None else space.trials
    if n_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {n_trials}")
    study_name = check_study_name(args.study or space.name)
    sampler_name = args.sampler or space.sampler["name"]
    make_sampler(sampler_name, args.seed, space.sampler["population_size"], space)  # validates
    url = ctx.storage_url(args)
    parse_url(url)
    cluster = ClusterConfig(executor=args.executor, workers=args.workers,
                            ray_address=args.ray_address, gpus_per_worker=args.gpus_per_worker,
                            cpus_per_worker=args.cpus_per_worker)
    cluster.check_storage(url)
    cluster.check_reachable()
    started = time.perf_counter()
    if cluster.executor != "local":
        study = _search_with_workers(args, space, study_name, sampler_name, url, cluster,
                                     n_trials)
        on_device = ctx.device("auto" if cluster.executor == "ray" else args.device)
    else:
        on_device = ctx.device(args.device)
        study = _search_here(args, space, study_name, sampler_name, url, n_trials, on_device)
    if not args.no_verify and "robust_accuracy" in space.measured_metrics():
        ctx.verify(study, args, args.verify_steps, args.verify_restarts, None, on_device)
    ctx.print_front(study, f", this run {time.perf_counter() - started:.0f}s")
    return 0


def _search_here(args, space, study_name, sampler_name, url, n_trials, on_device):
    """Trials one after another in this process."""
    ctx.set_threads(args)
    progress = ctx.TrialProgress(args.quiet, n_trials)
    runner = TrialRunner(space, ctx.artifact_store(args), on_step=progress.on_step,
                         device=on_device, seed=args.seed, data_root=args.data_root,
                         download=args.download, resume_dir=ctx.resume_dir(args))
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
                  f"device {on_device}")
    with progress.progress:
        run_trials(study, runner, n_trials, callbacks=[progress.after_trial,
                                                       ctx.retention(args)])
    return study


def _search_with_workers(args, space, study_name, sampler_name, url, cluster, n_trials):
    """`--workers N --executor processes|ray`: N worker loops elsewhere until the study has
    ``n_trials`` more complete trials."""
    worker = WorkerConfig(
        storage_url=url, study_name=study_name, until=1,
        artifact_dir=str(ctx.artifact_dir(args)), device=args.device, threads=args.threads,
        data_root=args.data_root, download=args.download, heartbeat=args.heartbeat,
        keep=args.keep)
    where = (f"Ray cluster {cluster.ray_address}" if cluster.ray_address
             else "a local Ray cluster" if cluster.executor == "ray" else "local processes")
    progress = ctx.bar(args.quiet)
    bar = progress.add_task("trials", total=n_trials)
    first = {}

    def on_start(study, resumed: bool, complete: int, until: int) -> None:
        first["complete"] = complete
        if not args.quiet:
            err.print(f"[bold]{'resuming' if resumed else 'created'}[/] study "
                      f"[cyan]{study_name}[/] in {describe_location(url)} ({complete} "
                      f"complete); {cluster.workers} workers on {where}, until {until} "
                      "complete trials")
        progress.start()

    def on_progress(done: int, running: int, failed: int) -> None:
        progress.update(bar, completed=min(done - first["complete"], n_trials),
                        description=f"trials ({running} running, {failed} failed)")

    try:
        return search_with_workers(space, study_name, sampler_name, args.seed, n_trials,
                                   worker, cluster, make_folder=args.storage is None,
                                   on_start=on_start, on_progress=on_progress)
    finally:
        progress.stop()


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-attack every trial of a study's Pareto front with the worst case over APGD-CE,
    APGD-DLR and router-aware PGD (restarts, many steps) on the proxy's val samples and
    budget, and store the result beside the search-time proxy. ``pareto``, ``status``, the
    model card and ``export --pick robust|knee`` then use it."""
    ctx.quiet_optuna(args)
    study = ctx.existing_study(args)
    records = ctx.verify(study, args, args.steps, args.restarts, args.max_samples,
                         ctx.device(args.device))
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
        verified = record["robust_accuracy_verified"]
        table.add_row(str(trial.number), "-" if proxy is None else f"{proxy:.2f}",
                      f"{verified:.2f}", "-" if proxy is None else f"{proxy - verified:.2f}",
                      architecture(trial_row(trial, names)))
    out.print(table)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join an existing study as one more worker, until it has --until complete trials.

    Run it on as many processes and machines as share the storage (PostgreSQL for many
    machines). Trials of a worker that died are failed and retried by the others.
    """
    ctx.quiet_optuna(args)
    config = WorkerConfig(
        storage_url=ctx.storage_url(args), study_name=args.study, until=args.until,
        artifact_dir=str(ctx.artifact_dir(args)), device=args.device, seed=args.seed,
        threads=args.threads, data_root=args.data_root, download=args.download,
        heartbeat=args.heartbeat, keep=args.keep)
    progress = ctx.TrialProgress(args.quiet, None)

    def on_start(study, complete: int) -> None:  # the bar shows once the study is open
        if not args.quiet:
            err.print(f"[bold]worker[/] on study [cyan]{study.study_name}[/]: {complete} "
                      f"complete, until {args.until}; device {ctx.device(args.device)}")
        progress.progress.update(progress.trials, total=max(args.until - complete, 0))
        progress.progress.start()

    try:
        run_worker(config, on_step=progress.on_step, callbacks=[progress.after_trial],
                   on_start=on_start)
    finally:
        if progress.progress.live.is_started:
            progress.progress.stop()
    return 0


def cmd_supernet(args: argparse.Namespace) -> int:
    """Weight-sharing search in three steps. ``train`` trains one supernet over the space's
    placement x experts x top-k x width (sandwich rule, progressive shrinking of the width,
    optionally in-place distillation and PGD adversarial training). ``search`` runs NSGA-II
    over its sub-networks, each evaluated with inherited weights (BatchNorm recalibrated)
    and stored as a trial with ``fidelity = "supernet"``. ``finalize`` retrains the best
    sub-networks of that front stand-alone, as normal trials that record their supernet
    values beside their own."""
    ctx.quiet_optuna(args)
    on_device = ctx.device(args.device)
    ctx.set_threads(args)
    if args.action == "train":
        return _supernet_train(args, on_device)
    storage = open_storage(ctx.storage_url(args), create=args.action == "search")
    if args.action == "search":
        return _supernet_search(args, storage, on_device)
    return _supernet_finalize(args, storage, on_device)


def _supernet_train(args: argparse.Namespace, on_device: str) -> int:
    if not args.out:
        raise ConfigError("`supernet train` needs --out FILE")
    if Path(args.out).exists() and not args.force:
        raise ConfigError(f"{args.out!r} already exists; pass --force to replace it")
    space = SearchSpace.from_file(resolve_space_path(args.space))
    train_set = load_dataset(space.dataset["name"], "train", args.data_root,
                             image_size=space.dataset["image_size"],
                             augment=space.dataset["augment"], download=args.download,
                             cache=space.dataset["cache"])
    torch.manual_seed(args.seed)
    net = Supernet(space, train_set.info)
    epochs = args.epochs or RECIPE_EPOCHS_FACTOR * net.recipe().epochs
    recipe = replace(net.recipe(), epochs=epochs, seed=args.seed)
    if args.adversarial:
        recipe = replace(recipe, scheme="pgd_at")
    progress = ctx.TrialProgress(args.quiet, None)
    progress.progress.update(progress.trials, visible=False)

    def on_step(step: int, total: int) -> None:
        progress.progress.update(progress.steps, description="supernet (train steps)",
                                 completed=step, total=total, visible=True)

    with progress.progress:
        history = net.train(train_set, recipe, subnets_per_step=args.subnets_per_step,
                            distill=args.distill, expert_sampling=args.expert_sampling,
                            step_rule=args.step_rule, width_schedule=args.width_schedule,
                            device=on_device, on_step=on_step)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    net.save(args.out, history)
    if not args.quiet:
        adversarial = " of PGD-AT" if recipe.scheme == "pgd_at" else ""
        err.print(f"supernet of {space.name}: {epochs} epochs{adversarial}, largest "
                  f"sub-network loss {history[-1]['loss']:.3f}; wrote {args.out}")
    return 0


def _supernet_search(args: argparse.Namespace, storage, on_device: str) -> int:
    if not args.supernet:
        raise ConfigError("`supernet search` needs --supernet FILE")
    if args.recal_batches < 1:
        raise ConfigError(f"--recal-batches must be >= 1, got {args.recal_batches}")
    if args.attack_samples is not None and args.attack_samples < 1:
        raise ConfigError(f"--attack-samples must be >= 1, got {args.attack_samples}")
    net = Supernet.load(args.supernet)
    progress = ctx.TrialProgress(args.quiet, args.trials)
    with progress.progress:
        study = screen_subnets(
            net, storage, args.study or f"{net.space.name}-supernet", args.trials,
            ctx.artifact_store(args), seed=args.seed, device=on_device,
            data_root=args.data_root, download=args.download,
            recalibration_batches=args.recal_batches, attack_samples=args.attack_samples,
            callbacks=[progress.after_trial, ctx.retention(args)])
    ctx.print_front(study, ", inherited weights")
    return 0


def _supernet_finalize(args: argparse.Namespace, storage, on_device: str) -> int:
    if args.top < 1:  # checked before the source study is opened
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    source = ctx.existing_study(args)
    progress = ctx.TrialProgress(args.quiet, args.top)
    with progress.progress:
        done = finalize_front(source, storage, args.target_study, args.top,
                              ctx.artifact_store(args), seed=args.seed, device=on_device,
                              data_root=args.data_root, download=args.download,
                              resume_dir=ctx.resume_dir(args),
                              callbacks=[progress.after_trial])
    target = done.target
    if not args.no_verify and "robust_accuracy" in done.objectives:
        ctx.verify(target, args, args.verify_steps, args.verify_restarts, None, on_device)
    table = Table(title=f"finalists of {source.study_name!r}: inherited weights vs trained "
                        f"stand-alone in {target.study_name!r}", title_justify="left")
    table.add_column("sub-network")
    table.add_column("trial")
    for name in done.objectives:
        table.add_column(f"{METRICS[name].label} inherited", justify="right")
        table.add_column(f"{METRICS[name].label} stand-alone", justify="right")
    for finalist in done.finalists:
        cells = []
        for name in done.objectives:
            cells.append(METRICS[name].format(finalist.inherited.get(name)))
            cells.append(METRICS[name].format((finalist.standalone or {}).get(name)))
        table.add_row(str("-" if finalist.subnet_trial is None else finalist.subnet_trial),
                      str(finalist.trial), *cells)
    out.print(table)
    if "robust_accuracy" in done.objectives and done.screened_samples != done.full_samples:
        full = done.full_samples
        out.print(f"robust % inherited was screened on the first {done.screened_samples} val "
                  f"samples (--attack-samples); stand-alone on "
                  f"{'every val sample' if full is None else f'the first {full}'}: the "
                  "two columns are not on the same samples")
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
                   help="override the space's dataset (digits, cifar10, cifar100, mnist, "
                        "fashion_mnist, svhn, imagefolder)")
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
    _verify_budget(p, "verify-")

    p = commands.add("verify", cmd_verify, [f.common, f.storage, f.data, f.device, f.json],
                     "re-attack the Pareto front with the strong worst case (APGD-CE, "
                     "APGD-DLR, router-PGD) and store it beside the search-time proxy")
    _verify_budget(p, "")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="val samples to attack (default: those of the study's proxy attack)")

    p = commands.add("worker", cmd_worker, [f.common, f.storage, f.config, f.running, f.data,
                                            f.device],
                     "join a study as one more worker")
    p.add_argument("--until", type=int, default=None, metavar="N",
                   help="stop once the study has N complete trials (required)")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed of this worker (default: random, so workers differ)")

    _register_supernet(commands)


def _verify_budget(parser: argparse.ArgumentParser, prefix: str) -> None:
    """The strong attacks' budget: ``--steps``/``--restarts`` (or ``--verify-...``)."""
    parser.add_argument(f"--{prefix}steps", type=int, default=50, metavar="N",
                        help="steps of each verifying attack")
    parser.add_argument(f"--{prefix}restarts", type=int, default=2, metavar="N",
                        help="random restarts of each verifying attack")


def _register_supernet(commands: Commands) -> None:
    """``supernet train | search | finalize``: each step with its own options."""
    f = commands.flags
    p = commands.add("supernet", cmd_supernet, [],
                     "weight-sharing search: train one supernet, search its sub-networks, "
                     "retrain the best stand-alone")
    steps = p.add_subparsers(dest="action", metavar="ACTION", required=True,
                             parser_class=Parser)
    seed = argparse.ArgumentParser(add_help=False)
    seed.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    seed.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch CPU threads")

    def step(name, parents, help_text):
        return steps.add_parser(name, parents=[f.common, *parents, f.data, f.device, seed],
                                help=help_text, description=help_text,
                                formatter_class=HelpFormatter)

    t = step("train", [], "train the supernet of --space into --out")
    t.add_argument("--space", default="supernet_digits", metavar="FILE|NAME",
                   help="a space that searches only placement, experts, top_k and "
                        "width_multiplier")
    t.add_argument("--out", default=None, metavar="FILE", help="the supernet file (required)")
    t.add_argument("--force", action="store_true", help="replace an existing --out file")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"supernet epochs (default: {RECIPE_EPOCHS_FACTOR} x the space's "
                        "epochs)")
    t.add_argument("--subnets-per-step", type=int, default=4,
                   help="sub-networks per step (the largest first)")
    t.add_argument("--step-rule", choices=STEP_RULES, default="sandwich",
                   help="a step's sub-networks: the largest, the smallest and random ones "
                        "(sandwich), or the largest and random ones")
    t.add_argument("--width-schedule", choices=WIDTH_SCHEDULES, default="progressive",
                   help="the widths a step draws from: progressive shrinking (the widest alone "
                        "for the first half of the steps, then each narrower width added in "
                        "turn), or all of them from the start")
    t.add_argument("--distill", action="store_true",
                   help="the sub-networks other than the largest learn its predictions "
                        "(in-place distillation; otherwise cross-entropy on the labels)")
    t.add_argument("--expert-sampling", choices=EXPERT_SAMPLING, default="first",
                   help="the experts a step's sub-network of E experts runs: the first E (as "
                        "evaluated), or the first E of a random order of all, a dense unit "
                        "the order's first (every expert trains in every role)")
    t.add_argument("--adversarial", action="store_true",
                   help="PGD adversarial training through the supernet (examples crafted "
                        "against the largest sub-network with the space's adv_eps, "
                        "adv_step_size and adv_steps); the same as `scheme: pgd_at` in the "
                        "space")

    s = step("search", [f.storage], "evaluate sub-networks of --supernet with inherited "
             "weights, each a trial of --study (default: SPACE-supernet)")
    s.add_argument("--supernet", default=None, metavar="FILE",
                   help="the file `supernet train` wrote (required)")
    s.add_argument("--trials", type=int, default=200, metavar="N",
                   help="sub-networks to evaluate")
    s.add_argument("--recal-batches", type=int, default=4, metavar="N",
                   help="training batches of 128 that recompute a sub-network's BatchNorm "
                        "statistics before it is evaluated")
    s.add_argument("--attack-samples", type=int, default=None, metavar="N",
                   help="attack only the first N val samples when measuring robust accuracy, "
                        "a cheaper screen of many candidates (default: the space's "
                        "evaluation.attack; finalize measures finalists with it)")
    s.add_argument("--keep", choices=KEEP, default="pareto",
                   help="checkpoints to keep (front trials only, or all)")

    fin = step("finalize", [f.storage], "retrain the --top N front sub-networks of --study "
               "stand-alone, as trials of the space's normal study (--target-study)")
    fin.add_argument("--top", type=int, default=3, metavar="N",
                     help="front sub-networks to retrain")
    fin.add_argument("--no-verify", action="store_true",
                     help="skip re-attacking the retrained front (`automoe verify`)")
    _verify_budget(fin, "verify-")
    fin.add_argument("--target-study", default=None, metavar="NAME",
                     help="the study of the stand-alone trials (default: the space's name)")
