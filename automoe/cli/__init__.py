"""Command-line interface: ``automoe <command> ...`` (also ``python cli.py ...``)."""

from __future__ import annotations

import argparse
import os
import sys

from automoe.cli._output import print_error, print_note

__all__ = ["main"]


# flags a command needs, checked after --config is applied: (dest, flag)
_REQUIRED = {"worker": (("until", "--until"),)}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not where its help already states one, nor for
    defaults that say nothing (None, False)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str):
        print_error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from automoe import __version__
    from automoe.cli import _commands as c

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="also show Optuna's log (trial results, sampler notes)")

    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage", default=None, metavar="URL",
                         help="SQLAlchemy URL of the study DB (default: sqlite:///studies/automoe.db)")
    storage.add_argument("--study", default=None, metavar="NAME",
                         help="study name (search: the space's name; others: the only study, "
                              "or the one that ran a trial last)")
    storage.add_argument("--artifact-dir", default=None, metavar="DIR",
                         help="where trial checkpoints are stored (default: artifacts/ beside "
                              "a SQLite DB, else studies/artifacts)")

    parser = _Parser(prog="automoe", description=__doc__,
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"automoe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, fn, parents, help_text):
        p = sub.add_parser(name, parents=parents, help=help_text, description=fn.__doc__,
                           formatter_class=_HelpFormatter)
        p.set_defaults(func=fn)
        return p

    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", default=None, metavar="TOML",
                        help="a saved study config (e.g. studies/x.toml): its keys are this "
                             "command's flags (`trials = 50`, `data-root = \"/data\"`); flags "
                             "given on the command line win")

    # How trials run, for search and worker.
    running = argparse.ArgumentParser(add_help=False)
    running.add_argument("--keep", choices=["pareto", "all"], default="pareto",
                         help="checkpoints to keep: those of Pareto-front trials (removed once "
                              "dominated) or all")
    running.add_argument("--threads", type=int, default=None, metavar="N",
                         help="torch CPU threads (default: torch's choice, all cores); with "
                              "several workers on one machine give each cores/workers, or they "
                              "slow each other down many times over")
    running.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                         help="trial heartbeat; a trial silent for 3 beats is failed and "
                              "retried (0: off)")

    p = add("search", c.cmd_search, [common, storage, config, running],
            "run (or resume) a multi-objective search")
    p.add_argument("--space", default="default", metavar="FILE|NAME",
                   help="search-space YAML file, or the name of one in search_spaces/")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="trials to run now (default: the space's `trials`)")
    p.add_argument("--sampler", default=None, metavar="NAME",
                   help="nsga2, nsga3, tpe, random, gp, grid, or an NNI tuner: nni-tpe, "
                        "nni-evolution, nni-random (default: the space's sampler)")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="override the space's dataset (digits, cifar10, cifar100, mnist, "
                        "fashion_mnist, svhn, imagefolder)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the dataset files (not needed for digits)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download a missing dataset into --data-root")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of a new study (sampler and training); a resumed study keeps "
                        "its own, and each resume samples from a stream derived from it")
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="train each candidate with N seeds and optimise the means (default: "
                        "the space's evaluation.repeats, 1); part of the study's identity")

    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker loops running trials at once (with --executor processes or ray)")
    p.add_argument("--executor", choices=["local", "processes", "ray"], default="local",
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
    p.add_argument("--verify-steps", type=int, default=50, metavar="N",
                   help="steps of each verifying attack")
    p.add_argument("--verify-restarts", type=int, default=2, metavar="N",
                   help="random restarts of each verifying attack")

    p = add("verify", c.cmd_verify, [common, storage],
            "re-attack the Pareto front with the strong worst case (APGD-CE, APGD-DLR, "
            "router-PGD) and store it beside the search-time proxy")
    p.add_argument("--steps", type=int, default=50, metavar="N", help="steps of each attack")
    p.add_argument("--restarts", type=int, default=2, metavar="N",
                   help="random restarts of each attack")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="val samples to attack (default: those of the study's proxy attack)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--download", action="store_true", help="let torchvision download it")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("worker", c.cmd_worker, [common, storage, config, running],
            "join a study as one more worker")
    p.add_argument("--until", type=int, default=None, metavar="N",
                   help="stop once the study has N complete trials (required)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--download", action="store_true", help="let torchvision download it")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed of this worker (default: random, so workers differ)")

    p = add("pareto", c.cmd_pareto, [common, storage], "show the Pareto front of a study")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--reference", default=None, metavar="V1,V2,...",
                   help="hypervolume reference point, one value per objective in the study's "
                        "order (default: 0 for accuracies, 1.1 x the worst complete trial for "
                        "costs)")
    p.add_argument("--csv", action="store_true", help="print CSV rows instead of a table")
    p.add_argument("--with-test", action="store_true",
                   help="add a test-accuracy column to the table (select on validation; JSON "
                        "and CSV always carry test_accuracy)")

    p = add("studies", c.cmd_studies, [common, storage],
            "list the studies of a storage, or remove dominated checkpoints (gc)")
    p.add_argument("action", nargs="?", default="list", choices=["list", "gc"],
                   help="list: studies with trial counts; gc: remove the checkpoints of "
                        "trials off the Pareto front of --study (or of every study)")

    p = add("status", c.cmd_status, [common, storage],
            "a live view of a study: trials by state, best values, front, hypervolume")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="refresh period")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")

    p = add("plot", c.cmd_plot, [common, storage],
            "draw a figure of a study (.html: interactive; .png/.svg/.pdf: static)")
    p.add_argument("kind", choices=["pareto", "history", "importance", "curves", "usage"],
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

    p = add("dashboard", c.cmd_dashboard, [common, storage],
            "serve optuna-dashboard on the study DB, checkpoints as artifacts")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")

    # supernet train | search | finalize: each sub-command with its own options
    p = add("supernet", c.cmd_supernet, [],
            "weight-sharing search: train one supernet, search its sub-networks, retrain "
            "the best stand-alone")
    steps = p.add_subparsers(dest="action", metavar="ACTION", required=True,
                             parser_class=_Parser)
    machine = argparse.ArgumentParser(add_help=False)  # what every step runs on
    machine.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder")
    machine.add_argument("--download", action="store_true", help="let torchvision download it")
    machine.add_argument("--device", default="auto", help="torch device")
    machine.add_argument("--seed", type=int, default=0, help="seed of training and sampling")
    machine.add_argument("--threads", type=int, default=None, metavar="N",
                         help="torch CPU threads")

    def step(name, parents, help_text):
        return steps.add_parser(name, parents=[common, *parents, machine], help=help_text,
                                description=help_text, formatter_class=_HelpFormatter)

    t = step("train", [], "train the supernet of --space into --out")
    t.add_argument("--space", default="supernet_digits", metavar="FILE|NAME",
                   help="a space that searches only placement, experts, top_k and "
                        "width_multiplier")
    t.add_argument("--out", default=None, metavar="FILE", help="the supernet file (required)")
    t.add_argument("--force", action="store_true", help="replace an existing --out file")
    t.add_argument("--epochs", type=int, default=None,
                   help="supernet epochs (default: 4 x the space's epochs)")
    t.add_argument("--subnets-per-step", type=int, default=4,
                   help="sub-networks per step (the largest first)")
    t.add_argument("--step-rule", choices=["sandwich", "largest_random"], default="sandwich",
                   help="a step's sub-networks: the largest, the smallest and random ones "
                        "(sandwich), or the largest and random ones")
    t.add_argument("--width-schedule", choices=["progressive", "all"], default="progressive",
                   help="the widths a step draws from: progressive shrinking (the widest alone "
                        "for the first half of the steps, then each narrower width added in "
                        "turn), or all of them from the start")
    t.add_argument("--distill", action="store_true",
                   help="the sub-networks other than the largest learn its predictions "
                        "(in-place distillation; otherwise cross-entropy on the labels)")
    t.add_argument("--expert-sampling", choices=["first", "subset"], default="first",
                   help="the experts a step's sub-network of E experts runs: the first E (as "
                        "evaluated), or the first E of a random order of all, a dense unit "
                        "the order's first (every expert trains in every role)")
    t.add_argument("--adversarial", action="store_true",
                   help="PGD adversarial training through the supernet (examples crafted "
                        "against the largest sub-network with the space's adv_eps, "
                        "adv_step_size and adv_steps); the same as `scheme: pgd_at` in the "
                        "space")

    s = step("search", [storage], "evaluate sub-networks of --supernet with inherited "
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
    s.add_argument("--keep", choices=["pareto", "all"], default="pareto",
                   help="checkpoints to keep (front trials only, or all)")

    f = step("finalize", [storage], "retrain the --top N front sub-networks of --study "
             "stand-alone, as trials of the space's normal study (--target-study)")
    f.add_argument("--top", type=int, default=3, metavar="N",
                   help="front sub-networks to retrain")
    f.add_argument("--no-verify", action="store_true",
                   help="skip re-attacking the retrained front (`automoe verify`)")
    f.add_argument("--verify-steps", type=int, default=50, metavar="N",
                   help="steps of each verifying attack")
    f.add_argument("--verify-restarts", type=int, default=2, metavar="N",
                   help="random restarts of each verifying attack")
    f.add_argument("--target-study", default=None, metavar="NAME",
                   help="the study of the stand-alone trials (default: the space's name)")

    p = add("kernels", c.cmd_kernels, [common],
            "which backend each MoE op uses on this machine")

    p = add("spaces", c.cmd_spaces, [common], "list, validate or show search spaces")
    p.add_argument("action", nargs="?", default="list", choices=["list", "validate", "show"],
                   help="list the shipped spaces, validate a file, or show its dimensions")
    p.add_argument("space", nargs="?", default=None, metavar="FILE|NAME",
                   help="space file or name (validate, show)")

    p = add("export", c.cmd_export, [common, storage], "export a trial's model to a directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="trial number")
    which.add_argument("--pick", choices=["accuracy", "flops", "robust", "knee"],
                       help="a trial of the feasible Pareto front: best val accuracy, fewest "
                            "active MACs, best robust accuracy, or the knee (nearest the ideal "
                            "point with each objective scaled over the front)")
    p.add_argument("--max-mmacs", "--max-flops", type=float, default=None, metavar="X",
                   dest="max_mmacs",
                   help="with --pick: only trials with at most X active MMACs per sample")
    p.add_argument("--min-robust", type=float, default=None, metavar="Y",
                   help="with --pick: only trials with at least Y %% robust accuracy")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--torchscript", action="store_true",
                   help="also write model.torchscript.pt, verified against the eager model")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx, verified with onnxruntime (needs the onnx "
                        "extra)")

    p = add("robustness", c.cmd_robustness, [common], "attack an exported model: a report")
    p.add_argument("path", metavar="DIR", help="directory written by `automoe export`")
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help="fgsm, pgd, apgd-ce, apgd-dlr or router-pgd; repeat for several "
                        "(default: pgd, router-pgd, apgd-ce, apgd-dlr)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"],
                   help="threat model of every attack: linf (pgd, router-pgd, apgd-ce, "
                        "apgd-dlr) or l2 (pgd, router-pgd); an attack not implemented in the "
                        "norm is refused")
    p.add_argument("--eps", default="8/255", help="budget in [0, 1] pixel units, e.g. 8/255")
    p.add_argument("--step-size", default=None,
                   help="PGD step in pixel units (default: eps/4; APGD adapts its own)")
    p.add_argument("--steps", type=int, default=50, help="gradient steps per restart")
    p.add_argument("--restarts", type=int, default=1, help="random restarts")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to attack")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="attack only the first N samples")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("eval", c.cmd_eval, [common], "evaluate an exported model")
    p.add_argument("path", metavar="DIR", help="directory written by `automoe export`")
    p.add_argument("--dataset", default=None, metavar="NAME",
                   help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--download", action="store_true", help="let torchvision download it")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  argv: list[str]) -> list[str]:
    """Fill ``args`` from the ``--config`` TOML file: command line > file > defaults.

    One file serves several commands. Top-level keys go to every command that has the
    flag; a table named after a command (``[worker]``, ``[search]``) holds keys for that
    command alone. Returns the top-level keys skipped because they are flags of another
    command only; a key no command knows is an error.
    """
    import tomllib
    from pathlib import Path

    from automoe.errors import ConfigError

    path = Path(args.config)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    hidden = ("config", "help", "debug")

    def flags(command: str) -> dict[str, argparse.Action]:
        return {a.dest: a for a in sub.choices[command]._actions
                if a.option_strings and a.dest not in hidden}

    actions = flags(args.command)
    anywhere = {dest for command in sub.choices for dest in flags(command)}
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for name in tables:
        if name not in sub.choices:
            raise ConfigError(f"{path}: [{name}]: not an automoe command; tables are named "
                              f"after one ({', '.join(sorted(sub.choices))})")
    chosen: dict = {}
    skipped = []
    for key, value in values.items():
        if isinstance(value, dict):
            continue
        dest = key.replace("-", "_")
        if dest in actions:
            chosen[key] = value
        elif dest in anywhere:
            skipped.append(key)
        else:
            raise ConfigError(f"{path}: {key}: not a flag of any automoe command")
    for key, value in tables.get(args.command, {}).items():
        if key.replace("-", "_") not in actions:
            allowed = sorted(d.replace("_", "-") for d in actions)
            raise ConfigError(f"{path}: [{args.command}] {key}: not a flag of `automoe "
                              f"{args.command}`; expected one of {', '.join(allowed)}")
        chosen[key] = value
    for key, value in chosen.items():
        action = actions[key.replace("-", "_")]
        if any(arg == opt or arg.startswith(opt + "=") for arg in argv
               for opt in action.option_strings):
            continue  # given on the command line
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f"{path}: {key}: {value!r} is not one of "
                              f"{', '.join(map(str, action.choices))}")
        if action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key}: invalid value {value!r}") from None
        elif isinstance(action.const, bool) and not isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: must be true or false, got {value!r}")
        setattr(args, action.dest, value)
    return skipped


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage error, 130 interrupted)."""
    from automoe.errors import AutomoeError

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if getattr(args, "config", None):
            skipped = _apply_config(parser, args, argv)
            if skipped and not args.quiet:
                print_note(f"{args.config}: {', '.join(skipped)} not used by "
                           f"`automoe {args.command}`")
        missing = [flag for dest, flag in _REQUIRED.get(args.command, ())
                   if getattr(args, dest) is None]
        if missing:  # required, but a --config file may give them: checked after it
            print_error(f"the following arguments are required: {', '.join(missing)} (on "
                        "the command line or in --config)")
            return 2
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BrokenPipeError:
        # the reader went away (`automoe pareto --json | head`): end quietly, as a program
        # killed by SIGPIPE would, and keep the interpreter's final flush from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        if debug:
            raise
        print_error("interrupted")
        return 130
    except AutomoeError as exc:
        if debug:
            raise
        print_error(str(exc))
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print_error(f"unexpected {type(exc).__name__}: {first} (rerun with --debug for the "
                    "traceback)")
        return 1
