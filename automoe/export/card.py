"""A markdown model card for an exported model, written from its config alone."""

from __future__ import annotations

from automoe.data import split_description
from automoe.models import default_config
from automoe.space import METRICS

CARD_FILE = "MODEL_CARD.md"


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def model_card(config: dict) -> str:
    """Markdown: what the model is, how it scored, how it was trained and attacked, how its
    experts were used, and how to load it."""
    model = config.get("model_config", {})
    metrics = config.get("metrics") or {}
    data = config.get("data") or {}
    macs = config.get("macs") or {}
    moe = default_config(config["model_name"], **model).is_moe
    title = (f"{config['model_name']} x{model.get('width_multiplier', 1.0):g}, "
             + (f"{model.get('granularity', 'conv')} MoE, placement {model.get('placement')}, "
                f"{model.get('num_experts')} experts, top-{model.get('top_k')}" if moe
                else "dense"))
    lines = [f"# {title}", "",
             f"Trial {config.get('trial')} of study `{config.get('study')}`, exported by "
             f"automoe. Load it with `automoe.load(DIR)`; the model takes images with pixel "
             f"values in [0, 1] and normalises them itself.", ""]

    lines += ["## Objectives and metrics", ""]
    rows = []
    for name, value in (config.get("values") or {}).items():
        metric = METRICS.get(name)
        rows.append((name, metric.format(value) if metric else value,
                     f"objective, {metric.direction}d" if metric else "objective"))
    for name, value in metrics.items():
        if name not in (config.get("values") or {}):
            metric = METRICS.get(name)
            rows.append((name, metric.format(value) if metric else f"{value:.2f}", ""))
    if macs:
        rows.append(("MACs, active path", f"{macs.get('active', 0) / 1e6:.3f} M",
                     "per sample, routers included"))
        rows.append(("MACs, all experts", f"{macs.get('dense', 0) / 1e6:.3f} M",
                     "computing every expert"))
    if config.get("params") is not None:
        rows.append(("parameters", f"{config['params']:,}", ""))
    lines += _table(("metric", "value", ""), rows) + [""]

    lines += ["## Data", "",
              f"Dataset `{data.get('name')}`"
              + (f" at {data['image_size']}x{data['image_size']}" if data.get("image_size")
                 else "")
              + f"; {split_description(data.get('name', ''))}. Selection uses validation "
                "accuracy only; test accuracy is reported, never used to pick.", ""]

    attack = config.get("attack")
    if attack and "robust_accuracy" in metrics:
        lines += ["## Robustness evaluation", "",
                  "Robust accuracy counts a sample as correct only if every restart of the "
                  "attack fails.", ""]
        lines += _table(("setting", "value"), [(k, v) for k, v in attack.items()]) + [""]
        verified = config.get("robust_verified")
        if verified:
            lines += ["This search-time attack is a fast proxy. The front was re-attacked with "
                      "the worst case over "
                      + ", ".join(f"`{a}`" for a in verified["settings"]["attacks"])
                      + f" on {verified['samples']} validation samples:", ""]
            rows = [("robust accuracy, proxy",
                     METRICS["robust_accuracy"].format(verified.get("robust_accuracy_proxy"))),
                    ("robust accuracy, verified worst case",
                     METRICS["robust_accuracy"].format(verified["robust_accuracy_verified"])),
                    *((f"under {name}", f"{value:.2f}")
                      for name, value in verified["per_attack"].items())]
            lines += _table(("", "%"), rows) + [""]

    train = config.get("train") or {}
    if train:
        lines += ["## Training recipe", ""]
        lines += _table(("setting", "value"), [(k, v) for k, v in train.items()]) + [""]

    lines += ["## Architecture", ""]
    lines += _table(("field", "value"), [(k, v) for k, v in model.items()
                                         if k not in ("input_mean", "input_std")]) + [""]

    health = config.get("router_health") or {}
    if health:
        lines += ["## Router health", "",
                  "How each routed layer spread the validation samples over its experts. "
                  "Effective experts = exp(entropy of the experts' shares): 1 means every "
                  "sample went to one expert (a collapsed router, a dense layer with dead "
                  "experts), E an even spread. Specialisation = normalised mutual "
                  "information between expert choice and class (0: the choice says nothing "
                  "about the class, 1: each expert takes its own classes).", ""]
        rows = [(f"`{layer}`", f"{h['effective_experts']:.2f} of {h['num_experts']}",
                 f"{100 * h['max_share']:.1f} %", f"{100 * h['dropped_share']:.1f} %",
                 "-" if h.get("specialisation") is None else f"{h['specialisation']:.2f}")
                for layer, h in health.items()]
        lines += _table(("layer", "effective experts", "largest expert's share",
                         "dropped", "specialisation"), rows) + [""]

    usage = config.get("expert_usage") or {}
    if usage:
        lines += ["## Expert usage", "",
                  "Share of the validation samples' assignments each expert received, per "
                  "MoE layer (top-k assignments per sample).", ""]
        width = max(len(c) for c in usage.values())
        rows = []
        for layer, counts in usage.items():
            total = sum(counts) or 1
            rows.append((f"`{layer}`", *(f"{100 * c / total:.1f} %" for c in counts),
                         *([""] * (width - len(counts)))))
        lines += _table(("layer", *(f"expert {e}" for e in range(width))), rows) + [""]

    lines += ["## Files", "",
              f"- `model.safetensors`: the weights (sha256 `{config.get('weights_sha256')}`, "
              "checked by `automoe.load`)",
              "- `config.json`: everything above, machine-readable; it rebuilds the model"]
    for extra, text in (config.get("extra_files") or {}).items():
        lines.append(f"- `{extra}`: {text}")
    return "\n".join(lines).rstrip() + "\n"
