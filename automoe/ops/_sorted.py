"""Sample-level dispatch to experts in PyTorch: one input gather per layer, experts on views."""

from __future__ import annotations

from collections.abc import Callable

import torch


def dispatch_by_expert(x: torch.Tensor, expert_index: torch.Tensor, gates: torch.Tensor,
                       num_experts: int, run_expert: Callable[[int, torch.Tensor], torch.Tensor],
                       out_shape: tuple[int, ...]) -> torch.Tensor:
    """``sum_j gates[b, j] * run_expert(expert_index[b, j], x[b])``, running each expert once
    on its samples.

    The assignments are sorted by expert and gathered by one ``index_select``; each expert
    gets its run as a view (``split``) and adds its gated outputs into one output buffer.
    Per-expert gathers would each allocate an input-sized gradient in backward; the one
    gather allocates one. A sample's k rows are added in the sorted order (fixed on the
    CPU; on CUDA the default Triton path sums slots without atomics).

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
    sizes = counts[1:]
    runs = x.index_select(0, samples).split(sizes)  # one view per expert
    run_gates = gates.reshape(-1).index_select(0, order).split(sizes)
    out = None  # allocated in the experts' output dtype (the autocast one under autocast)
    for e, (run, rows, gate) in enumerate(zip(runs, samples.split(sizes), run_gates,
                                              strict=True)):
        if not run.shape[0]:
            continue
        y = run_expert(e, run)  # (n_e, ...)
        y = y * gate.to(y.dtype).view(-1, *[1] * (y.dim() - 1))
        if out is None:
            out = y.new_zeros(batch, *y.shape[1:])
        out.index_add_(0, rows, y)  # in place: one output buffer for all experts
    return out if out is not None else x.new_zeros(batch, *out_shape)
