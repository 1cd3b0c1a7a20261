"""Sample-level conv experts as implicit GEMMs: each (sample, expert) assignment runs only
its own expert's filters.

Notation: ``A`` valid assignments sorted by expert, ``x`` (B, C, H, W), ``weight``
(E, O, C, KH, KW), output map OH x OW. Any memory layout works (strides are passed), so
channels-last tensors need no copy.

Rows of the implicit GEMMs are (assignment, pixel) pairs of one expert's sorted run, cut into
expert-aligned tiles: a tile has one expert (one weight tile) but spans several samples
when maps are small (8x8, 4x4), so no rows are wasted on per-sample padding.

* :func:`expert_conv_forward`: ``y[a] = conv(x[sample[a]], weight[expert[a]])`` -> (A, O, OH, OW).
  Grid (row tile, out-channel tile); the reduction runs over (c, kh, kw) with border masks.
* :func:`expert_conv_dx`: ``dx[a] = conv_transpose(dy[a], weight[expert[a]])`` -> (A, C, H, W).
  Grid (row tile over input pixels, in-channel tile); an (o, kh, kw) term contributes where
  ``ih + pad - kh`` is a non-negative multiple of the stride.
* :func:`expert_conv_dw`: ``dw[e] = sum over e's rows of dy x patches(x)`` -> (E, O, C, KH, KW).
  Grid (expert, out-channel tile, (c, kh, kw) tile); each program loops over its expert's
  contiguous rows, so no atomics are needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile sizes: tl.dot needs every dimension >= 16 on the GPU (the interpreter would accept
# less, so the launchers check).
BLOCK_SIZES = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)


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
def _forward_kernel(x_ptr, w_ptr, y_ptr, sample_ptr, tile_expert_ptr, tile_start_ptr,
                    tile_end_ptr, C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
                    STRIDE: tl.constexpr, PAD: tl.constexpr,
                    sxb, sxc, sxh, sxw, swe, swo, swc, swh, sww, sya, syo, syh, syw,
                    USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr):
    tile = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    rows = tl.load(tile_start_ptr + tile) + tl.arange(0, BLOCK_M)  # (assignment, pixel)
    m_ok = rows < tl.load(tile_end_ptr + tile)
    P = OH * OW
    assign = rows // P
    pix = rows % P
    sample = tl.load(sample_ptr + assign, mask=m_ok, other=0).to(tl.int64)
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
    y = (y_ptr + assign[:, None].to(tl.int64) * sya + rn[None, :] * syo + oh[:, None] * syh
         + ow[:, None] * syw)
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _dx_kernel(dy_ptr, w_ptr, dx_ptr, tile_expert_ptr, tile_start_ptr, tile_end_ptr,
               C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
               STRIDE: tl.constexpr, PAD: tl.constexpr,
               sda, sdo, sdh, sdw, swe, swo, swc, swh, sww, sxa, sxc, sxh, sxw,
               USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    tile = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    rows = tl.load(tile_start_ptr + tile) + tl.arange(0, BLOCK_M)  # (assignment, input pixel)
    m_ok = rows < tl.load(tile_end_ptr + tile)
    P_in = H * W
    assign = (rows // P_in).to(tl.int64)
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
        dyv = tl.load(dy_ptr + assign[:, None] * sda + o[None, :] * sdo + oh * sdh + ow * sdw,
                      mask=d_ok, other=0.0)
        wv = tl.load(w_base + o[:, None] * swo + rn[None, :] * swc + kh[:, None] * swh
                     + kw[:, None] * sww, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += _dot(dyv, wv, USE_IEEE)
    dx = (dx_ptr + assign[:, None] * sxa + rn[None, :] * sxc + ih[:, None] * sxh
          + iw[:, None] * sxw)
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _dw_kernel(dy_ptr, x_ptr, dw_ptr, sample_ptr, offsets_ptr,
               C, H, W, O, OH, OW, KH: tl.constexpr, KW: tl.constexpr,
               STRIDE: tl.constexpr, PAD: tl.constexpr,
               sda, sdo, sdh, sdw, sxb, sxc, sxh, sxw, swe, swo, swc, swh, sww,
               USE_IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    expert = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    P = OH * OW
    # this expert's rows: (assignment, output pixel) over its contiguous run of assignments
    row_start = tl.load(offsets_ptr + expert) * P
    row_end = tl.load(offsets_ptr + expert + 1) * P
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (c, kh, kw) flattened
    m_ok = rm < O
    K = C * KH * KW
    n_ok = rn < K
    c, kh, kw = _split_k(rn, KH, KW)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(row_start, row_end, BLOCK_K):
        rows = r0 + tl.arange(0, BLOCK_K)  # spans several samples when maps are small
        r_ok = rows < row_end
        assign = (rows // P).to(tl.int64)
        pix = rows % P
        sample = tl.load(sample_ptr + assign, mask=r_ok, other=0).to(tl.int64)
        oh = pix // OW
        ow = pix % OW
        dyv = tl.load(dy_ptr + assign[None, :] * sda + rm[:, None] * sdo + oh[None, :] * sdh
                      + ow[None, :] * sdw, mask=m_ok[:, None] & r_ok[None, :], other=0.0)
        ih = oh[:, None] * STRIDE - PAD + kh[None, :]
        iw = ow[:, None] * STRIDE - PAD + kw[None, :]
        x_ok = r_ok[:, None] & n_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + sample[:, None] * sxb + c[None, :] * sxc + ih * sxh + iw * sxw,
                     mask=x_ok, other=0.0)
        acc += _dot(dyv, xv, USE_IEEE)
    dw = (dw_ptr + expert * swe + rm[:, None] * swo + c[None, :] * swc + kh[None, :] * swh
          + kw[None, :] * sww)
    tl.store(dw, acc.to(dw_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _row_tiles(expert_ids: torch.Tensor, num_experts: int, rows_per_assignment: int,
               block_m: int):
    """Expert-aligned row tiles over the (assignment, pixel) rows of assignments sorted by
    expert: a tile never straddles two experts, but spans several samples of one expert
    when maps are small. Returns (tile_expert, tile_start, tile_end), built on the ids'
    device without a Python loop over tiles (this runs at every launch)."""
    counts = torch.bincount(expert_ids, minlength=num_experts)  # (E,)
    rows = counts * rows_per_assignment  # (E,)
    row_end = rows.cumsum(0)
    row_start = row_end - rows
    tiles = (rows + block_m - 1) // block_m  # (E,) tiles per expert
    experts = torch.arange(num_experts, device=expert_ids.device)
    tile_expert = experts.repeat_interleave(tiles)  # (T,)
    first_tile = tiles.cumsum(0) - tiles  # (E,) index of each expert's first tile
    index_in_expert = torch.arange(tile_expert.numel(), device=expert_ids.device) \
        - first_tile[tile_expert]
    tile_start = row_start[tile_expert] + index_in_expert * block_m
    return tile_expert.to(torch.int32), tile_start, row_end[tile_expert]


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


def _check_ids(ids: torch.Tensor, name: str, length: int | None, device) -> None:
    if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be a 1-D int32/int64 tensor, got {ids.dtype} "
                         f"{tuple(ids.shape)}")
    if length is not None and ids.shape[0] != length:
        raise ValueError(f"{name} has {ids.shape[0]} entries, expected {length}")
    if ids.device != device:
        raise ValueError(f"{name} is on {ids.device}, expected {device}")


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _use_ieee(dtype: torch.dtype, allow_tf32: bool) -> bool:
    return dtype == torch.float32 and not allow_tf32


def expert_conv_forward(x: torch.Tensor, weight: torch.Tensor, sample_ids: torch.Tensor,
                        expert_ids: torch.Tensor, stride: int = 1, padding: int = 0,
                        allow_tf32: bool = False) -> torch.Tensor:
    """``y[a] = conv(x[sample_ids[a]], weight[expert_ids[a]])`` -> (A, O, OH, OW), x's dtype.

    Assignments must be sorted by expert.

    ``allow_tf32``: fp32 inputs use TF32 tensor cores (faster, ~1e-3 relative error).
    """
    _check_common(x, weight, stride, padding)
    num_assign = sample_ids.shape[0]
    _check_ids(sample_ids, "sample_ids", None, x.device)
    _check_ids(expert_ids, "expert_ids", num_assign, x.device)
    _, C, H, W = x.shape
    E, O, _, KH, KW = weight.shape
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    y = torch.empty(num_assign, O, OH, OW, device=x.device, dtype=x.dtype)
    if num_assign == 0:
        return y
    if bool((expert_ids[1:] < expert_ids[:-1]).any()):
        raise ValueError("assignments must be sorted by expert")
    bm, bn, bk = BLOCK_SIZES["BLOCK_M"], BLOCK_SIZES["BLOCK_N"], BLOCK_SIZES["BLOCK_K"]
    tiles = _row_tiles(expert_ids, E, OH * OW, bm)
    grid = (tiles[0].shape[0], triton.cdiv(O, bn))
    _forward_kernel[grid](x, weight, y, sample_ids, *tiles, C, H, W, O, OH, OW, KH, KW,
                          stride, padding, *x.stride(), *weight.stride(), *y.stride(),
                          USE_IEEE=_use_ieee(x.dtype, allow_tf32), BLOCK_M=bm, BLOCK_N=bn,
                          BLOCK_K=bk)
    return y


def expert_conv_dx(dy: torch.Tensor, weight: torch.Tensor, expert_ids: torch.Tensor,
                   input_hw: tuple[int, int], stride: int = 1, padding: int = 0,
                   allow_tf32: bool = False) -> torch.Tensor:
    """Input gradient per assignment: (A, O, OH, OW) -> (A, C, H, W)."""
    if dy.dim() != 4:
        raise ValueError(f"dy must be (A, O, OH, OW), got shape {tuple(dy.shape)}")
    H, W = input_hw
    E, O, C, KH, KW = weight.shape
    probe = torch.empty(1, C, H, W, device=dy.device, dtype=dy.dtype)
    _check_common(probe, weight, stride, padding)
    _check_ids(expert_ids, "expert_ids", dy.shape[0], dy.device)
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    if tuple(dy.shape[1:]) != (O, OH, OW):
        raise ValueError(f"dy must be (A, {O}, {OH}, {OW}), got {tuple(dy.shape)}")
    dx = torch.empty(dy.shape[0], C, H, W, device=dy.device, dtype=dy.dtype)
    if dy.shape[0] == 0:
        return dx
    if bool((expert_ids[1:] < expert_ids[:-1]).any()):
        raise ValueError("assignments must be sorted by expert")
    bm, bn, bk = BLOCK_SIZES["BLOCK_M"], BLOCK_SIZES["BLOCK_N"], BLOCK_SIZES["BLOCK_K"]
    tiles = _row_tiles(expert_ids, E, H * W, bm)
    grid = (tiles[0].shape[0], triton.cdiv(C, bn))
    _dx_kernel[grid](dy, weight, dx, *tiles, C, H, W, O, OH, OW, KH, KW, stride, padding,
                     *dy.stride(), *weight.stride(), *dx.stride(),
                     USE_IEEE=_use_ieee(dy.dtype, allow_tf32), BLOCK_M=bm, BLOCK_N=bn,
                     BLOCK_K=bk)
    return dx


def expert_conv_dw(dy: torch.Tensor, x: torch.Tensor, sample_ids: torch.Tensor,
                   expert_offsets: torch.Tensor, kernel_size: tuple[int, int],
                   stride: int = 1, padding: int = 0, allow_tf32: bool = False) -> torch.Tensor:
    """Weight gradient per expert: assignments sorted by expert, ``expert_offsets`` (E + 1,)
    their run boundaries -> (E, O, C, KH, KW) in fp32."""
    if dy.dim() != 4 or x.dim() != 4:
        raise ValueError(f"dy and x must be 4-D, got {tuple(dy.shape)} and {tuple(x.shape)}")
    _check_ids(sample_ids, "sample_ids", dy.shape[0], x.device)
    _check_ids(expert_offsets, "expert_offsets", None, x.device)
    if dy.dtype != x.dtype or x.dtype not in _SUPPORTED:
        raise ValueError(f"dy and x must share a dtype in {_SUPPORTED}")
    _, C, H, W = x.shape
    KH, KW = kernel_size
    O = dy.shape[1]
    OH, OW = _out_size(H, KH, stride, padding), _out_size(W, KW, stride, padding)
    if tuple(dy.shape[2:]) != (OH, OW):
        raise ValueError(f"dy maps must be {OH}x{OW}, got {tuple(dy.shape[2:])}")
    E = expert_offsets.shape[0] - 1
    dw = torch.zeros(E, O, C, KH, KW, device=x.device, dtype=torch.float32)
    if dy.shape[0] == 0:
        return dw
    bm, bn, bk = BLOCK_SIZES["BLOCK_M"], BLOCK_SIZES["BLOCK_N"], BLOCK_SIZES["BLOCK_K"]
    grid = (E, triton.cdiv(O, bm), triton.cdiv(C * KH * KW, bn))
    _dw_kernel[grid](dy, x, dw, sample_ids, expert_offsets, C, H, W, O, OH, OW, KH, KW, stride,
                     padding, *dy.stride(), *x.stride(), *dw.stride(),
                     USE_IEEE=_use_ieee(x.dtype, allow_tf32), BLOCK_M=bm, BLOCK_N=bn,
                     BLOCK_K=bk)
    return dw
