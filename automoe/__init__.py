"""automoe: AutoML search over Mixture-of-Experts CNNs.

Public API::

    automoe.load_dataset(name, split, root=None)   # float images in [0, 1], int labels
    automoe.create_model(name, **config)          # registry models take [0, 1] pixels
    automoe.list_models(pattern="*")
    automoe.count_flops(model, input_shape)        # MACs per sample: active / all experts
    automoe.load(path)                             # an exported model, rebuilt from its files
"""

from __future__ import annotations

__version__ = "0.1.0"

from automoe._lazy import lazy_front

# loaded on first use: `import automoe` (and the CLI that lives under it) starts without torch
_EXPORTS = {"load_dataset": ".data", "count_flops": ".models", "create_model": ".models",
            "list_models": ".models"}


def load(path):
    """Rebuild an exported model (directory from ``automoe export``, or a checkpoint file)."""
    # deferred: automoe.export imports the search package and optuna, which
    # `import automoe` (data and models) does not need
    from automoe.export import load as _load

    return _load(path)


__all__ = ["__version__", "count_flops", "create_model", "list_models", "load", "load_dataset"]
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
