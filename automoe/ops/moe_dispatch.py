"""Sample-level top-k mixture of arbitrary expert modules (e.g. residual blocks).

``y[b] = sum_j gates[b, j] * experts[expert_index[b, j]](x[b])``

:func:`moe_dispatch_sparse` runs each expert once, on the samples routed to it;
:func:`moe_dispatch_reference` runs every expert on the whole batch and masks. With batch
statistics (BatchNorm in training mode) inside the experts the two differ by design: a
sparse expert normalises over its own samples only. In eval mode they are equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from automoe.ops._common import dense_gate_matrix
from automoe.ops._eager import eager_under_compile
from automoe.ops._sorted import dispatch_by_expert

Expert = Callable[[torch.Tensor], torch.Tensor]


def _check(x, experts, expert_index, gates):
    if expert_index.shape != gates.shape or expert_index.dim() != 2:
        raise ValueError(f"expert_index {tuple(expert_index.shape)} and gates "
                         f"{tuple(gates.shape)} must both be (B, k)")
    if expert_index.shape[0] != x.shape[0]:
        raise ValueError(f"routing is for {expert_index.shape[0]} samples, x has {x.shape[0]}")
    if expert_index.numel() and int(expert_index.max()) >= len(experts):
        raise ValueError(f"expert id {int(expert_index.max())} >= {len(experts)} experts")


@eager_under_compile
def moe_dispatch_sparse(x: torch.Tensor, experts: Sequence[Expert], expert_index: torch.Tensor,
                        gates: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """Run each expert only on its samples; ``out_shape`` is one sample's output shape.

    ``expert_index`` is ``(B, k)`` (``-1`` = dropped), ``gates`` ``(B, k)``.
    """
    _check(x, experts, expert_index, gates)
    return dispatch_by_expert(x, expert_index, gates, len(experts),
                              lambda e, rows: experts[e](rows), out_shape)


def moe_dispatch_reference(x: torch.Tensor, experts: Sequence[Expert], expert_index: torch.Tensor,
                           gates: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """Run every expert on every sample, then combine with a dense gate matrix."""
    _check(x, experts, expert_index, gates)
    dense = dense_gate_matrix(expert_index, gates, len(experts))  # (B, E)
    out = x.new_zeros(x.shape[0], *out_shape)
    for e, expert in enumerate(experts):
        out = out + dense[:, e].view(-1, *([1] * len(out_shape))) * expert(x)
    return out
