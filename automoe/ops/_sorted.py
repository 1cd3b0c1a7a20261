"""Sample-level dispatch to experts in PyTorch: one gather and one scatter per layer."""

from __future__ import annotations

from collections.abc import Callable

import torch


def dispatch_by_expert(x: torch.Tensor, expert_index: torch.Tensor, gates: torch.Tensor,
                       num_experts: int, run_expert: Callable[[int, torch.Tensor], torch.Tensor],
                       out_shape: tuple[int, ...]) -> torch.Tensor:
    """``sum_j gates[b, j] * run_expert(expert_index[b, j], x[b])``, running each expert once
    on its samples.

    The assignments are sorted by expert and gathered in one ``index_select``; each expert
    gets its run as a view (``split``), the outputs are concatenated and put back in
    (sample, slot) order by one ``index_copy``, then summed over each sample's slots. So the
    autograd graph has one gather and one scatter per layer however many experts there are
    (per-expert gathers would each allocate a full-size gradient in backward), and the sum
    over slots runs in a fixed order (no atomics).

    Args:
        x: ``(B, ...)`` inputs.
        expert_index: ``(B, k)`` expert ids; ``-1`` marks a dropped assignment (skipped).
        gates: ``(B, k)`` weights of the selected experts.
        run_expert: ``run_expert(e, x_e)`` -> expert ``e``'s outputs for its samples.
        out_shape: one sample's output shape, the same for every expert.
    """
    batch, k = expert_index.shape
    flat = expert_index.reshape(-1)  # (B*k,)
    order = torch.argsort(flat, stable=True)  # (B*k,), dropped (-1) first
    counts = torch.bincount(flat + 1, minlength=num_experts + 1).tolist()  # reads the host
    order = order[counts[0]:]  # (A,) the kept (sample, slot) positions, by expert
    samples = order // k if k > 1 else order
    runs = x.index_select(0, samples).split(counts[1:])  # one view per expert
    outputs = [run_expert(e, run) for e, run in enumerate(runs) if run.shape[0]]
    if not outputs:  # every assignment dropped
        return x.new_zeros(batch, *out_shape)
    y = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (A, ...), by expert
    y = y * gates.reshape(-1).index_select(0, order).to(y.dtype).view(-1, *[1] * (y.dim() - 1))
    slots = y.new_zeros(batch * k, *y.shape[1:]).index_copy(0, order, y)  # (B*k, ...)
    return slots.view(batch, k, *y.shape[1:]).sum(1) if k > 1 else slots
