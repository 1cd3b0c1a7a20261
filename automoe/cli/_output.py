"""Console output shared by the commands: consoles, tables, error lines."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from automoe.space import COLLAPSED_BELOW, METRICS

# Tables and JSON go to stdout; progress, logs and errors to stderr.
# Piped output has no terminal width; give tables room rather than rich's 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def print_error(message: str) -> None:
    # Plain write: rich would wrap a long message over several lines.
    sys.stderr.write(f"automoe: error: {message}\n")


def print_note(message: str) -> None:
    sys.stderr.write(f"automoe: note: {message}\n")


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def architecture(row: dict) -> str:
    """Compact description of a candidate, e.g. ``x0.75 last_stage E4 k1``."""
    width = f"x{row.get('width_multiplier') or 1.0:g}"
    if not row.get("moe"):
        return f"{width} dense"
    if row.get("granularity") == "condconv":  # a soft mixture of every kernel
        return f"{width} {row['placement']} E{row['experts']} soft"
    return f"{width} {row['placement']} E{row['experts']} k{row['top_k']}"


def expert_use(row: dict) -> str:
    """Router health of a trial for tables: the fewest effective experts of any MoE layer
    as a fraction of E, flagged when collapsed; ``-`` for a dense trial."""
    use = row.get("metrics", {}).get("expert_use")
    if use is None:
        return "-"
    return f"{use:.2f}" + (" collapsed" if use < COLLAPSED_BELOW else "")


def specialisation(row: dict) -> str:
    """How much a trial's expert choice tells about the class (NMI in [0, 1]); ``-`` for
    a dense trial or one stored before it was measured."""
    value = row.get("metrics", {}).get("specialisation")
    return "-" if value is None or not row.get("moe") else f"{value:.2f}"


def _with_std(metric, value: float, std: float | None) -> str:
    """A value, with `± std` over seeds where the trial was trained with several."""
    return metric.format(value) + ("" if std is None else f" ± {metric.format(std)}")


def pareto_table(rows: list[dict], names, title: str, with_test: bool = False) -> Table:
    """Front rows: the objectives (in the study's order), then what else describes them.

    Test accuracy is left out unless ``with_test``: the front is chosen on validation, and
    a test column next to it invites picking on the test split.
    """
    table = Table(title=title, title_justify="left")
    columns = [("trial", "right"), *((METRICS[n].label, "right") for n in names)]
    extra = [m for m in ("val_accuracy", "robust_accuracy", "mmacs") if m not in names]
    columns += [(METRICS[m].label, "right") for m in extra]
    verified = any(row.get("robust_accuracy_verified") is not None for row in rows)
    columns += [("verified robust %", "right")] if verified else []
    columns += [("test %", "right")] if with_test else []
    columns += [("params", "right"), ("architecture", "left"),
                ("expert use", "right"), ("special.", "right"), ("lr", "right"),
                ("epochs", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        train = (row.get("config") or {}).get("train", {})
        metrics = row.get("metrics", {})
        table.add_row(
            str(row["trial"]),
            *(_with_std(METRICS[n], row["values"][n], (row.get("std") or {}).get(n))
              for n in names),
            *(METRICS[m].format(metrics.get(m)) for m in extra),
            *([METRICS["robust_accuracy"].format(row.get("robust_accuracy_verified"))
               + (" masked?" if row.get("masking_suspected") else "")]
              if verified else []),
            *(["-" if row.get("test_accuracy") is None else f"{row['test_accuracy']:.2f}"]
              if with_test else []),
            f"{(row.get('params') or 0) / 1e3:.0f}K",
            architecture(row),
            expert_use(row),
            specialisation(row),
            # a sub-network with inherited weights was never trained with its recipe
            *(("-", "-") if row.get("fidelity") == "supernet" else
              (f"{train.get('lr', float('nan')):.3g}", str(train.get("epochs", "-")))),
        )
    return table


def trial_line(row: dict, names) -> str:
    """One finished trial in a line: its objective values and architecture."""
    values = " ".join(f"{METRICS[n].label.split()[0]} {METRICS[n].format(row['values'][n])}"
                      for n in names)
    return f"trial {row['trial']:>3} {values} {architecture(row)}"
