"""Commands that read a study: ``pareto``, ``studies``, ``status``, ``plot``, ``dashboard``."""

from __future__ import annotations

import argparse
import csv
import sys
import time

import optuna
from rich.console import Group
from rich.live import Live
from rich.table import Table

from automoe import results
from automoe.cli import _context as ctx
from automoe.cli._output import err, out, print_json, print_note
from automoe.cli._parser import Commands, LazyChoices
from automoe.errors import ConfigError
from automoe.results import (
    MEASURED,
    StudySummary,
    checkpoint_size,
    pareto_trials,
    remove_dominated_checkpoints,
    study_objectives,
    summarize_study,
    trial_row,
    verified_results,
)
from automoe.search import count_trials
from automoe.space import COLLAPSED_BELOW, METRICS, parse_reference
from automoe.storage import load_study, open_storage


def cmd_pareto(args: argparse.Namespace) -> int:
    """Show the Pareto-optimal feasible trials of a study on its objectives."""
    ctx.quiet_optuna(args)
    study = ctx.existing_study(args)
    if args.json and args.csv:
        raise ConfigError("pass one of --json and --csv")
    names = study_objectives(study)
    verified = verified_results(study)
    rows = [trial_row(t, names, verified.get(t.number)) for t in pareto_trials(study)]
    if args.json:
        print_json(rows)
    elif args.csv:
        _print_csv(rows, names)
    else:
        ctx.print_front(study, reference=args.reference, with_test=args.with_test)
    return 0


def _print_csv(rows: list[dict], names) -> None:
    metrics = [m for m in MEASURED if m not in names]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["trial", *names, *metrics, "robust_accuracy_verified",
                     "masking_suspected", "params",
                     "placement", "granularity", "experts", "top_k", "width_multiplier", "lr",
                     "epochs", "feasible"])
    for row in rows:
        train = row["config"].get("train", {})
        writer.writerow([row["trial"], *(row["values"][n] for n in names),
                         *(row["metrics"].get(m, "") for m in metrics),
                         "" if row["robust_accuracy_verified"] is None
                         else row["robust_accuracy_verified"],
                         "" if row["masking_suspected"] is None else row["masking_suspected"],
                         row["params"],
                         row["placement"], row["granularity"], row["experts"], row["top_k"],
                         row["width_multiplier"], train.get("lr"), train.get("epochs"),
                         row["feasible"]])


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies of a storage, or remove the checkpoints of trials off the Pareto
    front (``gc``; what ``search --keep pareto`` does as it goes)."""
    ctx.quiet_optuna(args)
    storage = open_storage(ctx.storage_url(args), create=False)
    store = ctx.artifact_store(args)
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
    table = Table(title=f"studies in {ctx.describe_storage(args)}", title_justify="left")
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


def _status_view(study: optuna.Study) -> Group:
    """One snapshot of a study for ``automoe status``."""
    s: StudySummary = summarize_study(study)
    # one line per fact, each short enough for 80 columns
    head = Table.grid(padding=(0, 2))
    head.add_row(f"[bold]{s.name}[/]", "  ".join(f"{state.lower()} {n}"
                                                for state, n in s.states.items()))
    head.add_row("front", f"{s.front_size} trials, hypervolume {s.hypervolume:,.6g}")
    head.add_row("", "reference " + ", ".join(f"{r:g}" for r in s.reference))
    if s.feasible < s.complete:
        head.add_row("constraints", f"{s.feasible} feasible, {s.complete - s.feasible} "
                     "infeasible (not on the front)")
    if s.verify_gap is not None:
        mean, largest = s.verify_gap
        head.add_row("verified", f"{s.verified} of {s.front_size} front trials")
        head.add_row("", f"proxy - verified robust % mean {mean:.2f}, largest {largest:.2f}")
        if s.masking:
            head.add_row("", f"masking suspected on trials {', '.join(map(str, s.masking))}: "
                         "Square or a transfer attack beat the white-box worst case")
    if s.lowest_use is not None:
        use, number = s.lowest_use
        head.add_row("routers", f"{s.moe_trials} MoE trials, {s.collapsed} collapsed (expert "
                     f"use < {COLLAPSED_BELOW:g})")
        head.add_row("", f"lowest expert use {use:.2f} (trial {number})")
    if s.specialisation is not None:
        mean, (highest, number) = s.specialisation
        head.add_row("", f"specialisation (expert-class NMI) mean {mean:.2f}, highest "
                     f"{highest:.2f} (trial {number})")
    best = Table(title="best per objective (feasible trials)", title_justify="left", min_width=40)
    for col in ("objective", "value", "trial"):
        best.add_column(col)
    for name, (value, number) in s.best.items():
        best.add_row(name, METRICS[name].format(value), str(number))
    running = Table(title="running", title_justify="left")
    for col in ("trial", "started (UTC)", "worker"):
        running.add_column(col)
    for number, started, worker in s.running:
        running.add_row(str(number), started.strftime("%H:%M:%S") if started else "-", worker)
    parts = [head, best, running if running.row_count else "no running trial"]
    if len(s.workers) > 1:
        workers = Table(title="workers", title_justify="left")
        counted = ("COMPLETE", "RUNNING", "FAIL", "PRUNED")
        for col in ("worker", "ray node", "executor", *(c.lower() for c in counted), "trials"):
            workers.add_column(col, justify="right" if col.upper() in counted else "left")
        for row in s.workers:
            shown = ", ".join(map(str, row.trials[:8])) + (", ..." if len(row.trials) > 8 else "")
            workers.add_row(f"{row.host}:{row.pid}", row.ray_node[:12] or "-", row.executor,
                            *(str(row.states.get(c, 0)) for c in counted), shown)
        parts.append(workers)
    return Group(*parts)


def cmd_status(args: argparse.Namespace) -> int:
    """A live view of a study (Ctrl-C to leave): trials by state, best value of each
    objective, size and hypervolume of the Pareto front, running trials and their workers."""
    ctx.quiet_optuna(args)
    if args.interval <= 0:
        raise ConfigError(f"--interval must be positive, got {args.interval}")
    study = ctx.existing_study(args)
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
    ctx.quiet_optuna(args)
    study = ctx.existing_study(args)
    reference = (parse_reference(args.reference, study_objectives(study)) if args.reference
                 else None)
    path = results.write_plot(study, args.kind, args.out, trial=args.trial, reference=reference)
    if not args.quiet:
        complete = count_trials(study)[0]
        if args.kind == "importance" and complete < results.MIN_TRIALS_FOR_IMPORTANCE:
            print_note(f"only {complete} complete trials: parameter importances are "
                       f"unreliable below {results.MIN_TRIALS_FOR_IMPORTANCE}")
        err.print(f"wrote {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the study DB (Ctrl-C to stop). Each trial's checkpoint is
    one of its artifacts; objective names, configs, metrics and feasibility are user attrs.
    The dashboard has no hypervolume view and ignores Optuna 5 constraints: `automoe status`
    and `automoe plot history` show those."""
    ctx.quiet_optuna(args)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    storage = open_storage(ctx.storage_url(args), create=False)
    if not args.quiet:
        err.print(f"optuna-dashboard on http://{args.host}:{args.port}/ for "
                  f"{ctx.describe_storage(args)}, artifacts in {ctx.artifact_dir(args)} "
                  "(Ctrl-C to stop)")
    # imported when serving: the dashboard's web app and scikit-learn take a second to load
    import optuna_dashboard

    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port,
                                    artifact_store=ctx.artifact_store(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def register(commands: Commands) -> None:
    f = commands.flags
    p = commands.add("pareto", cmd_pareto, [f.common, f.storage],
                     "show the Pareto front of a study")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--reference", default=None, metavar="V1,V2,...",
                   help="hypervolume reference point, one value per objective in the study's "
                        "order (default: 0 for accuracies, 1.1 x the worst complete trial for "
                        "costs)")
    p.add_argument("--csv", action="store_true", help="print CSV rows instead of a table")
    p.add_argument("--with-test", action="store_true",
                   help="add a test-accuracy column to the table (select on validation; JSON "
                        "and CSV always carry test_accuracy)")

    p = commands.add("studies", cmd_studies, [f.common, f.storage],
                     "list the studies of a storage, or remove dominated checkpoints (gc)")
    p.add_argument("action", nargs="?", default="list", choices=["list", "gc"],
                   help="list: studies with trial counts; gc: remove the checkpoints of "
                        "trials off the Pareto front of --study (or of every study)")

    p = commands.add("status", cmd_status, [f.common, f.storage],
                     "a live view of a study: trials by state, best values, front, hypervolume")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="refresh period")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")

    p = commands.add("plot", cmd_plot, [f.common, f.storage],
                     "draw a figure of a study (.html: interactive; .png/.svg/.pdf: static)")
    p.add_argument("kind", choices=LazyChoices(lambda: results.PLOTS), metavar="KIND",
                   help="pareto: the front (2D or 3D); history: hypervolume after each trial; "
                        "importance: fANOVA parameter importances per objective; curves: "
                        "learning curves (pruned trials dashed); usage: a trial's experts x "
                        "classes routing counts per MoE layer")
    p.add_argument("--out", required=True, metavar="FILE", help="figure file to write")
    p.add_argument("--trial", type=int, default=None, metavar="N",
                   help="usage: the trial (default: the front trial with the best first "
                        "objective)")
    p.add_argument("--reference", default=None, metavar="V1,V2,...",
                   help="history: hypervolume reference point (default as in `pareto`)")

    p = commands.add("dashboard", cmd_dashboard, [f.common, f.storage],
                     "serve optuna-dashboard on the study DB, checkpoints as artifacts")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
