"""How far the search-time robust proxy is from the strong worst case, by architecture kind.

    automoe search --keep all --no-verify ...        # a study that kept every checkpoint
    python bench/verify_gap.py --storage sqlite:///studies/automoe.db [--study NAME]

Re-attacks every complete trial (not only the front) with what `automoe verify` runs, the
worst case over APGD-CE, APGD-DLR and router-PGD (``--steps``, ``--restarts``) on the
proxy's val samples and budget, and prints per architecture kind (dense; conv / pathway /
block experts with k; CondConv) the mean ± std of proxy − verified robust accuracy.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch
from rich.console import Console
from rich.table import Table

from automoe.data import load_dataset
from automoe.results import TrialRecord, VerifyConfig, space_of_study, trial_model
from automoe.robustness import worst_case_accuracy
from automoe.storage import AtomicFileSystemArtifactStore, default_artifact_dir, load_study, open_storage


def kind(trial) -> str:
    arch = TrialRecord(trial).architecture
    if arch["placement"] == "none" or arch["experts"] == 1:
        return "dense"
    if arch["granularity"] == "condconv":
        return f"condconv E{arch['experts']}"
    return f"{arch['granularity']} experts, k = {arch['top_k']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", default=None)
    parser.add_argument("--artifact-dir", default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = load_study(open_storage(args.storage, create=False), args.study)
    store = AtomicFileSystemArtifactStore(args.artifact_dir
                                          or default_artifact_dir(args.storage))
    space = space_of_study(study)
    config = VerifyConfig(steps=args.steps, restarts=args.restarts)
    attacks = config.attacks(space.attack)
    data = None
    gaps: dict[str, list[float]] = defaultdict(list)
    console = Console()
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord(trial)
        if trial.state.name != "COMPLETE" or record.metric("robust_accuracy") is None:
            continue
        if data is None:
            spec = record.dataset
            data = load_dataset(spec["name"], "val", image_size=spec.get("image_size"))
            if space.attack.max_samples is not None:
                data = torch.utils.data.Subset(data, range(min(space.attack.max_samples,
                                                               len(data))))
        report = worst_case_accuracy(trial_model(trial, store), data, attacks,
                                     space.eval_batch_size, seed=space.attack.seed)
        proxy, verified = record.metric("robust_accuracy"), 100 * report.worst
        gaps[kind(trial)].append(proxy - verified)
        console.print(f"trial {trial.number:>3} {kind(trial):24s} proxy {proxy:6.2f} "
                      f"verified {verified:6.2f}")
    table = Table(title=f"{study.study_name}: proxy ({space.attack.describe()}) - verified "
                        f"(worst of {', '.join(a.describe() for a in attacks)}), robust % on "
                        "the val split", title_justify="left")
    for col in ("architecture", "trials", "mean gap", "std", "largest"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for name, values in sorted(gaps.items()):
        table.add_row(name, str(len(values)), f"{statistics.mean(values):.2f}",
                      f"{statistics.stdev(values):.2f}" if len(values) > 1 else "-",
                      f"{max(values):.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
