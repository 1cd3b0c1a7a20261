"""Sample-level conv experts as implicit GEMMs: each (sample, slot) assignment runs only
its own expert's filters.

Notation: ``x`` (B, C, H, W), ``weight`` (E, O, C, KH, KW), output map OH x OW, ``S`` slots
per sample (the top-k, or the channel groups of a gated conv). An assignment is a flat
``sample * S + slot`` position; :func:`sort_assignments` orders all ``B * S`` of them by
expert, unassigned ones (id ``-1``) last, with a fixed output size so that nothing waits for
the device. Any memory layout works (strides are passed), so channels-last tensors need no
copy.

Rows of the implicit GEMMs are (assignment, pixel) pairs of one expert's sorted run, cut into
expert-aligned tiles: a tile has one expert (one weight tile) but spans several samples when
maps are small (8x8, 4x4), so no rows are wasted on per-sample padding. Each program finds its
expert by walking the E run lengths, so the grid is sized from shapes alone (rows / BLOCK_M
+ E tiles; the spare ones do nothing) and no tile table is built on the host.

* :func:`expert_conv_forward`: ``y[p] = conv(x[p // S], weight[expert[p]])`` -> (B*S, O, OH, OW),
  zero rows for unassigned positions. Grid (row tile, out-channel tile).
* :func:`expert_conv_dx`: ``dx[p] = gate[p] * conv_transpose(dy[p // D], weight[expert[p]])``
  -> (B*S, C, H, W). Grid (row tile over input pixels, in-channel tile); an (o, kh, kw) term
  contributes where ``ih + pad - kh`` is a non-negative multiple of the stride.
* :func:`expert_conv_dw`: ``dw[e] = sum over e's rows of gate * dy x patches(x)`` ->
  (E, O, C, KH, KW) fp32. Grid (expert x split, out-channel tile, (c, kh, kw) tile): each
  program reduces one contiguous chunk of its expert's rows into its own partial buffer, and
  the partials are summed in a fixed order, so the result is deterministic (no atomics).

On CUDA every kernel is autotuned over :data:`CONFIGS` (the first ``AUTOMOE_TRITON_CONFIGS``
of them when that is set); under the interpreter (CPU tests) it runs the fixed
:data:`BLOCK_SIZES`. Arguments that change with the batch (``SPLITS``) or between layers of
one autotune key (``E``, ``SLOTS``, ``DY_DIV``) are not specialised, so they cost no extra
compile; :mod:`automoe.kernels.launches` counts what a run compiles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from automoe.kernels.launches import configs_in_use, note_launch

# The interpreter has no GPU to time configs on, so it runs one fixed config.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# The fixed config. tl.dot needs every dimension >= 16 on the GPU (the interpreter would
# accept less, so the launchers check).
BLOCK_SIZES = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}
# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tried by the autotuner on CUDA; the largest fp32
# one holds 3 x 48 KiB of tiles in shared memory, within an A100's or H100's.
_TUNED = ((64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
          (64, 32, 32, 4, 4), (32, 64, 32, 4, 4), (128, 64, 64, 8, 3), (64, 64, 64, 4, 3))
CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
           for m, n, k, w, s in _TUNED]
_CONFIGS_TRIED = configs_in_use(len(CONFIGS))  # read once: the autotuners are built once
_TUNE_KEY = ("C", "O", "OH", "OW", "KH", "KW", "STRIDE", "USE_IEEE")  # layer shape, precision
# Each kernel's ints that vary per batch (SPLITS) or between layers of one autotune key (E,
# SLOTS, DY_DIV) are left unspecialised: specialising them (== 1, % 16) would compile the
# kernel again for each value class, for no faster code (they index, never bound, a tile).
_UNSPECIALISED = {"_forward_kernel": ["E", "SLOTS"], "_dx_kernel": ["E", "DY_DIV"],
                  "_dw_kernel": ["SLOTS", "DY_DIV", "SPLITS"]}
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
# Row-chunk length a weight-gradient program aims for, and the most partial sums kept.
_DW_ROWS_PER_SPLIT = 2048
_DW_PARTIAL_ELEMENTS = 1 << 24


class SortedAssignments(NamedTuple):
    """The routing plan the kernels read: assignments sorted by expert, fixed-size."""

    positions: torch.Tensor  # (B * slots,) int64 flat (sample, slot) ids, by expert, -1s last
    offsets: torch.Tensor  # (E + 1,) int64 start of each expert's run; offsets[E] = assigned
    slots: int  # assignments per sample


def sort_assignments(expert_index: torch.Tensor, num_experts: int) -> SortedAssignments:
    """Sort the ``(B, S)`` expert ids (``-1`` = unassigned) by expert, on their device.

    Every output has a size known from the shapes alone and no step reads a value back to
    the host, so a CUDA stream never waits here (no ``nonzero``, ``bincount`` or
    ``repeat_interleave``, which size their outputs from the data).
    """
    slots = expert_index.shape[1]
    flat = expert_index.reshape(-1)
    key = torch.where(flat < 0, num_experts, flat)  # unassigned sort after every expert
    positions = torch.sort(key, stable=True).indices  # (B*S,)
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=flat.device)
    counts.scatter_add_(0, key, torch.ones_like(key))  # (E + 1,), the last one unassigned
    offsets = torch.cat([counts.new_zeros(1), counts[:num_experts].cumsum(0)])
    return SortedAssignments(positions, offsets, slots)


@triton.jit
def _dot(a, b, USE_IEEE: tl.constexpr):
    if USE_IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _split_k(rk, KH: tl.constexpr, KW: tl.constexpr):
    """A flattened reduction index (channel, kh, kw) -> its three parts."""
    return rk // (KH * KW), (rk // KW) % KH, rk % KW


@triton.jit
def _tile_rows(tile, offsets_ptr, E, P, BLOCK_M: tl.constexpr):
    """Row tile ``tile`` of the experts' runs laid end to end, each run cut into BLOCK_M
    tiles: (expert, first row, end of the expert's rows). A spare tile gets an empty range."""
    expert = tile * 0
    start = tile * 0
    end = tile * 0
    first = tile * 0  # first tile of expert e
    for e in range(0, E):
        run_start = tl.load(offsets_ptr + e).to(tl.int64) * P
        run_end = tl.load(offsets_ptr + e + 1).to(tl.int64) * P
        tiles = (run_end - run_start + BLOCK_M - 1) // BLOCK_M
        hit = (tile >= first) & (tile < first + tiles)
        expert = tl.where(hit, e, expert)
        start = tl.where(hit, run_start + (tile - first) * BLOCK_M, start)
        end = tl.where(hit, run_end, end)
        first += tiles
    return expert, start, end


@triton.jit(do_not_specialize=_UNSPECIALISED["_forward_kernel"])
def _forward_kernel(x_ptr, w_ptr, y_ptr, pos_ptr, offsets_ptr, E, SLOTS,
                    C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
                    STRIDE: tl.constexpr, PAD: tl.constexpr,
                    sxb, sxc, sxh, sxw, swe, swo, swc, swh, sww, sya, syo, syh, syw,
                    USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    P = OH * OW
    expert, start, end = _tile_rows(tile, offsets_ptr, E, P, BLOCK_M)
    rows = start + tl.arange(0, BLOCK_M)  # (assignment, pixel) rows of one expert
    m_ok = rows < end
    pos = tl.load(pos_ptr + rows // P, mask=m_ok, other=0).to(tl.int64)  # (sample, slot)
    sample = pos // SLOTS
    pix = rows % P
    oh = pix // OW
    ow = pix % OW
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    n_ok = rn < O
    K = C * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    w_base = w_ptr + expert * swe
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # (c, kh, kw) flattened
        k_ok = rk < K
        c, kh, kw = _split_k(rk, KH, KW)
        ih = oh[:, None] * STRIDE - PAD + kh[None, :]
        iw = ow[:, None] * STRIDE - PAD + kw[None, :]
        x_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + sample[:, None] * sxb + c[None, :] * sxc + ih * sxh + iw * sxw,
                     mask=x_ok, other=0.0)
        wv = tl.load(w_base + rn[None, :] * swo + c[:, None] * swc + kh[:, None] * swh
                     + kw[:, None] * sww, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += _dot(xv, wv, USE_IEEE)
    y = (y_ptr + pos[:, None] * sya + rn[None, :] * syo + oh[:, None] * syh
         + ow[:, None] * syw)
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit(do_not_specialize=_UNSPECIALISED["_dx_kernel"])
def _dx_kernel(dy_ptr, w_ptr, dx_ptr, pos_ptr, offsets_ptr, gate_ptr, E, DY_DIV,
               C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
               STRIDE: tl.constexpr, PAD: tl.constexpr,
               sda, sdo, sdh, sdw, swe, swo, swc, swh, sww, sxa, sxc, sxh, sxw,
               HAS_GATE: tl.constexpr, USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    P_in = H * W
    expert, start, end = _tile_rows(tile, offsets_ptr, E, P_in, BLOCK_M)
    rows = start + tl.arange(0, BLOCK_M)  # (assignment, input pixel)
    m_ok = rows < end
    pos = tl.load(pos_ptr + rows // P_in, mask=m_ok, other=0).to(tl.int64)
    dy_row = pos // DY_DIV
    pix = rows % P_in
    ih = pix // W
    iw = pix % W
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels
    n_ok = rn < C
    K = O * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    w_base = w_ptr + expert * swe
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # (o, kh, kw) flattened
        k_ok = rk < K
        o, kh, kw = _split_k(rk, KH, KW)
        th = ih[:, None] + PAD - kh[None, :]  # = oh * STRIDE where this term contributes
        tw = iw[:, None] + PAD - kw[None, :]
        oh = th // STRIDE
        ow = tw // STRIDE
        d_ok = (m_ok[:, None] & k_ok[None, :] & (th >= 0) & (tw >= 0)
                & (th % STRIDE == 0) & (tw % STRIDE == 0) & (oh < OH) & (ow < OW))
        dyv = tl.load(dy_ptr + dy_row[:, None] * sda + o[None, :] * sdo + oh * sdh + ow * sdw,
                      mask=d_ok, other=0.0)
        wv = tl.load(w_base + o[:, None] * swo + rn[None, :] * swc + kh[:, None] * swh
                     + kw[:, None] * sww, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += _dot(dyv, wv, USE_IEEE)
    if HAS_GATE:  # the gate is a per-row scale, applied once to the sum
        acc = acc * tl.load(gate_ptr + pos, mask=m_ok, other=0.0).to(tl.float32)[:, None]
    dx = (dx_ptr + pos[:, None] * sxa + rn[None, :] * sxc + ih[:, None] * sxh
          + iw[:, None] * sxw)
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit(do_not_specialize=_UNSPECIALISED["_dw_kernel"])
def _dw_kernel(dy_ptr, x_ptr, dw_ptr, pos_ptr, offsets_ptr, gate_ptr, SLOTS, DY_DIV, SPLITS,
               C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
               STRIDE: tl.constexpr, PAD: tl.constexpr,
               sda, sdo, sdh, sdw, sxb, sxc, sxh, sxw, sws, swe, swo, swc, swh, sww,
               HAS_GATE: tl.constexpr, USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    expert = tl.program_id(0) // SPLITS
    split = tl.program_id(0) % SPLITS
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    P = OH * OW
    # this split's chunk of the expert's contiguous (assignment, output pixel) rows
    run_start = tl.load(offsets_ptr + expert).to(tl.int64) * P
    run_end = tl.load(offsets_ptr + expert + 1).to(tl.int64) * P
    chunk = ((run_end - run_start + SPLITS - 1) // SPLITS + BLOCK_K - 1) // BLOCK_K * BLOCK_K
    lo = run_start + split * chunk
    hi = tl.minimum(lo + chunk, run_end)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (c, kh, kw) flattened
    m_ok = rm < O
    K = C * KH * KW
    n_ok = rn < K
    c, kh, kw = _split_k(rn, KH, KW)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(lo, hi, BLOCK_K):
        rows = r0 + tl.arange(0, BLOCK_K)  # spans several samples when maps are small
        r_ok = rows < hi
        pos = tl.load(pos_ptr + rows // P, mask=r_ok, other=0).to(tl.int64)
        sample = pos // SLOTS
        dy_row = pos // DY_DIV
        pix = rows % P
        oh = pix // OW
        ow = pix % OW
        dyv = tl.load(dy_ptr + dy_row[None, :] * sda + rm[:, None] * sdo + oh[None, :] * sdh
                      + ow[None, :] * sdw, mask=m_ok[:, None] & r_ok[None, :], other=0.0)
        if HAS_GATE:
            gate = tl.load(gate_ptr + pos, mask=r_ok, other=0.0).to(tl.float32)
            dyv = (dyv.to(tl.float32) * gate[None, :]).to(dyv.dtype)
        ih = oh[:, None] * STRIDE - PAD + kh[None, :]
        iw = ow[:, None] * STRIDE - PAD + kw[None, :]
        x_ok = r_ok[:, None] & n_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + sample[:, None] * sxb + c[None, :] * sxc + ih * sxh + iw * sxw,
                     mask=x_ok, other=0.0)
        acc += _dot(dyv, xv, USE_IEEE)
    dw = (dw_ptr + split * sws + expert * swe + rm[:, None] * swo + c[None, :] * swc
          + kh[None, :] * swh + kw[None, :] * sww)
    tl.store(dw, acc, mask=m_ok[:, None] & n_ok[None, :])


def _tunable(kernel):
    """The kernel autotuned over :data:`CONFIGS` for each layer shape, or as it is under the
    interpreter (which then gets :data:`BLOCK_SIZES`)."""
    if _INTERPRETED:
        return kernel
    return triton.autotune(configs=CONFIGS[:_CONFIGS_TRIED], key=list(_TUNE_KEY))(kernel)


_forward = _tunable(_forward_kernel)
_dx = _tunable(_dx_kernel)
_dw = _tunable(_dw_kernel)


def _launch(kernel, grid: Callable[[dict], tuple[int, ...]], *args, **constexprs) -> bool:
    """Launch ``kernel``; False when a :func:`~automoe.kernels.launches.record_launches`
    block only records (the outputs are then left as allocated)."""
    if not note_launch(kernel, args, constexprs, _TUNE_KEY, _UNSPECIALISED, _CONFIGS_TRIED):
        return False
    if _INTERPRETED:
        kernel[grid(BLOCK_SIZES)](*args, **constexprs, **BLOCK_SIZES)
    else:
        kernel[grid](*args, **constexprs)
    return True


# ------------------------------------------------------------------------- launchers


def _check_common(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 5:
        raise ValueError(f"weight must be (E, O, C, KH, KW), got shape {tuple(weight.shape)}")
    if weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[2]} input channels, x has {x.shape[1]}")
    if x.dtype not in _SUPPORTED or weight.dtype != x.dtype:
        raise ValueError(f"x and weight must share a dtype in {_SUPPORTED}, got {x.dtype} and "
                         f"{weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device}, weight on {weight.device}")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    if min(BLOCK_SIZES.values()) < 16:
        raise ValueError(f"tl.dot needs blocks >= 16, got {BLOCK_SIZES}")


def _check_plan(plan: SortedAssignments, rows: int, num_experts: int, device) -> None:
    """Shapes, dtypes and devices only: reading the values would make the host wait."""
    for name, ids, length in (("positions", plan.positions, rows * plan.slots),
                              ("offsets", plan.offsets, num_experts + 1)):
        if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be a 1-D int32/int64 tensor, got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        if ids.shape[0] != length:
            raise ValueError(f"{name} has {ids.shape[0]} entries, expected {length}")
        if ids.device != device:
            raise ValueError(f"{name} is on {ids.device}, expected {device}")


def _check_gates(gates: torch.Tensor | None, length: int, device) -> None:
    if gates is not None and (gates.shape != (length,) or gates.device != device):
        raise ValueError(f"gates must be ({length},) on {device}, got {tuple(gates.shape)} "
                         f"on {gates.device}")


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _use_ieee(dtype: torch.dtype, allow_tf32: bool) -> bool:
    return dtype == torch.float32 and not allow_tf32


def _row_tiles(rows: int, num_experts: int) -> Callable[[dict], int]:
    """Row tiles for ``rows`` rows cut per expert: at most one partial tile per expert."""
    return lambda meta: triton.cdiv(rows, meta["BLOCK_M"]) + num_experts


def expert_conv_forward(x: torch.Tensor, weight: torch.Tensor, plan: SortedAssignments,
                        stride: int = 1, padding: int = 0,
                        allow_tf32: bool = False) -> torch.Tensor:
    """``y[p] = conv(x[p // S], weight[expert of p])`` -> (B*S, O, OH, OW) in x's dtype, with
    zero rows for unassigned positions.

    ``allow_tf32``: fp32 inputs use TF32 tensor cores (faster, ~1e-3 relative error).
    """
    _check_common(x, weight, stride, padding)
    _check_plan(plan, x.shape[0], weight.shape[0], x.device)
    _, C, H, W = x.shape
    E, O, _, KH, KW = weight.shape
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    y = torch.zeros(plan.positions.shape[0], O, OH, OW, device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    tiles = _row_tiles(y.shape[0] * OH * OW, E)
    _launch(_forward, lambda meta: (tiles(meta), triton.cdiv(O, meta["BLOCK_N"])),
            x, weight, y, plan.positions, plan.offsets, E, plan.slots, C, H, W, O, OH, OW,
            KH, KW, stride, padding, *x.stride(), *weight.stride(), *y.stride(),
            USE_IEEE=_use_ieee(x.dtype, allow_tf32))
    return y


def expert_conv_dx(dy: torch.Tensor, weight: torch.Tensor, plan: SortedAssignments,
                   input_hw: tuple[int, int], gates: torch.Tensor | None = None,
                   dy_per_sample: bool = True, stride: int = 1, padding: int = 0,
                   allow_tf32: bool = False) -> torch.Tensor:
    """Input gradient per assignment -> (B*S, C, H, W), zero rows for unassigned positions.

    Args:
        dy: (B, O, OH, OW) shared by a sample's slots (``dy_per_sample``), or
            (B*S, O, OH, OW), one row per position.
        gates: (B*S,) per-position scale of dy, or None.
    """
    if dy.dim() != 4:
        raise ValueError(f"dy must be 4-D, got shape {tuple(dy.shape)}")
    H, W = input_hw
    E, O, C, KH, KW = weight.shape
    probe = torch.empty(1, C, H, W, device=dy.device, dtype=dy.dtype)
    _check_common(probe, weight, stride, padding)
    positions = plan.positions.shape[0]
    rows = dy.shape[0] if dy_per_sample else dy.shape[0] // max(plan.slots, 1)
    _check_plan(plan, rows, E, dy.device)
    _check_gates(gates, positions, dy.device)
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    if tuple(dy.shape[1:]) != (O, OH, OW):
        raise ValueError(f"dy must be (A, {O}, {OH}, {OW}), got {tuple(dy.shape)}")
    dx = torch.zeros(positions, C, H, W, device=dy.device, dtype=dy.dtype)
    if dx.numel() == 0:
        return dx
    tiles = _row_tiles(positions * H * W, E)
    _launch(_dx, lambda meta: (tiles(meta), triton.cdiv(C, meta["BLOCK_N"])),
            dy, weight, dx, plan.positions, plan.offsets,
            plan.positions if gates is None else gates, E,
            plan.slots if dy_per_sample else 1, C, H, W, O, OH, OW, KH, KW, stride, padding,
            *dy.stride(), *weight.stride(), *dx.stride(), HAS_GATE=gates is not None,
            USE_IEEE=_use_ieee(dy.dtype, allow_tf32))
    return dx


def dw_splits(rows: int, num_experts: int, weight_elements: int) -> int:
    """Row chunks per expert for the weight gradient: enough programs to fill a GPU when a
    layer has few weight tiles and many rows, with the partial sums kept under
    ``_DW_PARTIAL_ELEMENTS``. A function of shapes only."""
    per_expert = triton.cdiv(rows, max(num_experts, 1))
    wanted = max(1, min(64, per_expert // _DW_ROWS_PER_SPLIT))
    return max(1, min(wanted, _DW_PARTIAL_ELEMENTS // max(weight_elements, 1)))


def expert_conv_dw(dy: torch.Tensor, x: torch.Tensor, plan: SortedAssignments,
                   kernel_size: tuple[int, int], gates: torch.Tensor | None = None,
                   dy_per_sample: bool = True, stride: int = 1, padding: int = 0,
                   allow_tf32: bool = False, splits: int | None = None) -> torch.Tensor:
    """Weight gradient per expert -> (E, O, C, KH, KW) in fp32.

    ``dy`` and ``gates`` as in :func:`expert_conv_dx`; ``splits`` row chunks per expert
    (default :func:`dw_splits`), reduced in a fixed order.
    """
    if dy.dim() != 4 or x.dim() != 4:
        raise ValueError(f"dy and x must be 4-D, got {tuple(dy.shape)} and {tuple(x.shape)}")
    if dy.dtype != x.dtype or x.dtype not in _SUPPORTED:
        raise ValueError(f"dy and x must share a dtype in {_SUPPORTED}")
    E = plan.offsets.shape[0] - 1
    _check_plan(plan, x.shape[0], E, x.device)
    positions = plan.positions.shape[0]
    _check_gates(gates, positions, x.device)
    _, C, H, W = x.shape
    KH, KW = kernel_size
    O = dy.shape[1]
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    expected = x.shape[0] if dy_per_sample else positions
    if tuple(dy.shape) != (expected, O, OH, OW):
        raise ValueError(f"dy must be ({expected}, {O}, {OH}, {OW}), got {tuple(dy.shape)}")
    if splits is None:
        splits = dw_splits(positions * OH * OW, E, E * O * C * KH * KW)
    if positions == 0 or E == 0:
        return torch.zeros(E, O, C, KH, KW, device=x.device, dtype=torch.float32)
    # every program writes its whole tile (zeros if its chunk is empty): no memset needed
    partial = torch.empty(splits, E, O, C, KH, KW, device=x.device, dtype=torch.float32)
    launched = _launch(_dw, lambda meta: (E * splits, triton.cdiv(O, meta["BLOCK_M"]),
                               triton.cdiv(C * KH * KW, meta["BLOCK_N"])),
            dy, x, partial, plan.positions, plan.offsets,
            plan.positions if gates is None else gates, plan.slots,
            plan.slots if dy_per_sample else 1, splits, C, H, W, O, OH, OW, KH, KW, stride,
            padding, *dy.stride(), *x.stride(), *partial.stride(), HAS_GATE=gates is not None,
            USE_IEEE=_use_ieee(x.dtype, allow_tf32))
    if not launched:  # only recorded: no program wrote the partial sums
        partial.zero_()
    return partial.sum(0) if splits > 1 else partial[0]
