"""A weight-sharing MoE supernet: train once, evaluate many sub-networks with inherited
weights.

The supernet is the space's backbone at its largest: every placement unit in MoE form
(granularity ``conv``), the most experts, the widest width multiplier. A sub-network
(:class:`SubnetSpec`) picks the MoE units (placement), the experts E, the top-k and the
width multiplier, and is the stand-alone model ``create_model`` builds for those values,
its tensors taken from the supernet's:

* every tensor is the leading slice of the supernet's tensor of the same name (the first
  channels of each conv, BN and linear; an MoE conv's first E experts; a router's first E
  scorer rows), so sub-networks of every width share the leading channels (as in
  once-for-all networks);
* a unit the sub-network keeps dense runs the supernet's expert 0 of each conv as a plain
  conv (no router);
* training may instead run a step's sub-networks on a random subset of the experts
  (``expert_sampling="subset"``), so that expert 0 is not the only one trained as a dense
  conv; evaluation always takes the first E.

A sub-network runs as its stand-alone model's code (built once on the ``meta`` device)
called on those slices (:func:`torch.func.functional_call`), so gradients flow into the
supernet, and :meth:`Supernet.extract` (the slices copied into a real model) computes
exactly what the supernet computes, and is measured (accuracy, FLOPs, robustness) like any
trial's model. Training samples several sub-networks per step (the sandwich rule: the
largest, the smallest and random ones, or the largest and random ones; their gradients
summed), by default with progressive shrinking of the width (the widest alone for the
first half of the steps, then each narrower width added in turn), optionally distilling
the largest one's predictions into the others (in-place distillation), optionally on PGD
examples (the space's ``scheme: pgd_at``). BatchNorm statistics are shared by all
sub-networks while training, so they are recomputed for each sub-network
(:func:`~automoe.training.recalibrate_batchnorm`) before it is evaluated.

Parts: ``_spec`` (sub-networks), ``_options`` (:class:`SupernetTrainConfig` and its
choices), ``_net`` (:class:`Supernet`),
``_train`` (its training loop) and ``_search`` (screening sub-networks with inherited
weights, then retraining the front stand-alone).
"""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "SubnetView": "._net", "Supernet": "._net",
    "Finalist": "._search", "Finalists": "._search", "finalize_front": "._search",
    "screen_subnets": "._search",
    "EXPERT_SAMPLING": "._options", "RECIPE_EPOCHS_FACTOR": "._options",
    "STEP_RULES": "._options", "SUBNET_PARAMS": "._options", "SUPERNET_FORMAT": "._options",
    "SUPERNET_SCHEMES": "._options", "WIDTH_SCHEDULES": "._options",
    "SupernetTrainConfig": "._options",
    "SubnetSpec": "._spec", "placement_bits": "._spec",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
