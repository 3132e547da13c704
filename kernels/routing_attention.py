"""Bi-level routing attention (BiFormer, Zhu et al. 2023, Sec. 3.2, Eqs. 2-5).

``routing_attention`` computes the token mixer of BiFormer's BRA between its projections (the
``qkv``/output linears and the LePE depthwise conv stay in the model):

1. the ``(H, W)`` map is split into ``n_win x n_win`` regions of ``(H/n_win) x (W/n_win)`` tokens,
   numbered row by row;
2. region-level queries and keys ``Q^r, K^r`` are the means over each region of all heads'
   channels, and the routing index keeps, for every query region, the ``topk`` key regions of
   largest affinity ``A^r = (Q^r * scale) (K^r)^T`` (Eqs. 2-3). Routing is not differentiable and
   its softmax weights are not applied to the values (the released models' defaults);
3. every query token attends, per head, to all tokens of its routed regions:
   ``softmax(Q (K^g)^T * scale) V^g`` (Eqs. 4-5).

As in the official code, ``scale`` defaults to ``(heads * head_dim) ** -0.5`` (the full channel
width, not the head width) and is used both for the routing and for the attention.

The reference path gathers the routed regions chunk by chunk (bounded extra memory). The Triton
path never copies them: its kernels read each routed region straight from the ``(B, H, W, heads,
head_dim)`` tensors by index arithmetic, keep the softmax online and store its log-sum-exp; the
backward computes ``dq`` the same way and ``dk``/``dv`` per key region over the list of query
regions that routed to it (the routing graph inverted with a sort), without atomics, so it is
deterministic. Regions smaller than 16 tokens are packed several to a block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._dispatch import check_qkv, chunks, dot_precision, use_triton
from .path_rules import routing_prefers_triton

try:
    import triton
    import triton.language as tl

    from ._online_softmax import online_softmax_step
except ImportError:
    triton = None

__all__ = ["routing_attention", "routing_attention_reference", "region_routing"]

# Budget for the gathered keys/values and scores of one chunk on the reference path.
_REFERENCE_CHUNK_BYTES = 64 * 2**20


def region_routing(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, scale: float) -> torch.Tensor:
    """Indices ``(B, n_win**2, topk)`` of the key regions routed to each query region.

    Region ``r`` sits at row ``r // n_win``, column ``r % n_win`` of the ``n_win x n_win`` grid.
    Computed in at least fp32 and without gradient.
    """
    q_regions, k_regions = _region_means(q.detach(), n_win), _region_means(k.detach(), n_win)
    affinity = (q_regions * scale) @ k_regions.transpose(-1, -2)
    return torch.topk(affinity, topk, dim=-1).indices


def _region_means(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """``(B, H, W, heads, d)`` -> ``(B, n_win**2, heads * d)`` means over each region."""
    b, h, w, nh, d = x.shape
    x = x.reshape(b, n_win, h // n_win, n_win, w // n_win, nh * d)
    means = x.mean(dim=(2, 4), dtype=torch.promote_types(x.dtype, torch.float32))
    return means.reshape(b, n_win * n_win, nh * d)


def _to_regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """``(B, H, W, heads, d)`` -> ``(heads, B * n_win**2, region tokens, d)``."""
    b, h, w, nh, d = x.shape
    rh, rw = h // n_win, w // n_win
    x = x.reshape(b, n_win, rh, n_win, rw, nh, d).permute(5, 0, 1, 3, 2, 4, 6)
    return x.reshape(nh, b * n_win * n_win, rh * rw, d)


def _from_regions(x: torch.Tensor, size: tuple[int, int], n_win: int) -> torch.Tensor:
    """``(heads, B * n_win**2, region tokens, d)`` -> ``(B, H, W, heads, d)``."""
    nh, _, _, d = x.shape
    h, w = size
    x = x.reshape(nh, -1, n_win, n_win, h // n_win, w // n_win, d).permute(1, 2, 4, 3, 5, 0, 6)
    return x.reshape(-1, h, w, nh, d)


def _attend_reference(q, k, v, routes, n_win, scale):
    """Dense attention of every query region over its gathered routed regions, a chunk at a time."""
    b, h, w, nh, d = q.shape
    n_regions, topk = routes.shape[1:]
    q_reg, k_reg, v_reg = (_to_regions(t, n_win) for t in (q, k, v))
    tokens = q_reg.shape[2]
    offsets = torch.arange(b, device=q.device)[:, None, None] * n_regions
    key_regions = (routes + offsets).reshape(b * n_regions, topk)  # regions of the flattened batch

    per_region = nh * topk * tokens * (2 * d * q.element_size() + 4 * tokens)
    chunk = max(1, _REFERENCE_CHUNK_BYTES // per_region)
    outputs = []
    for regions in chunks(b * n_regions, chunk):
        index = key_regions[regions].reshape(-1)
        k_sel, v_sel = (t.index_select(1, index).reshape(nh, -1, topk * tokens, d) for t in (k_reg, v_reg))
        outputs.append(F.scaled_dot_product_attention(q_reg[:, regions], k_sel, v_sel, scale=scale))
    out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
    return _from_regions(out, (h, w), n_win)


def routing_attention_reference(q, k, v, n_win: int, topk: int, scale: float | None = None) -> torch.Tensor:
    """The PyTorch path of :func:`routing_attention` (any device and dtype)."""
    scale = _check_arguments(q, k, v, n_win, topk, scale)
    routes = region_routing(q, k, n_win, topk, scale)
    return _attend_reference(q, k, v, routes, n_win, scale)


def _check_arguments(q, k, v, n_win, topk, scale) -> float:
    """Validate the arguments; return the scale to use."""
    check_qkv(q, k, v, "routing_attention")
    _, h, w, nh, d = q.shape
    if isinstance(n_win, bool) or not isinstance(n_win, int) or n_win < 1:
        raise ValueError(f"routing_attention: n_win must be a positive int, got {n_win!r}")
    if h % n_win or w % n_win:
        raise ValueError(
            f"routing_attention: the map (H, W) = ({h}, {w}) must be divisible by n_win = {n_win}; pad it first"
        )
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= n_win * n_win:
        raise ValueError(f"routing_attention: topk must be an int in [1, n_win**2 = {n_win * n_win}], got {topk!r}")
    if scale is None:
        return (nh * d) ** -0.5
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"routing_attention: scale must be a positive finite number or None, got {scale!r}")
    return float(scale)


def routing_attention(q, k, v, n_win: int, topk: int, scale: float | None = None) -> torch.Tensor:
    """BiFormer's bi-level routing attention on ``(B, H, W, heads, head_dim)`` tensors.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``; ``H`` and ``W`` divisible by ``n_win``.
        n_win: regions per side; the map holds ``n_win**2`` regions.
        topk: routed key regions per query region, in ``[1, n_win**2]``.
        scale: routing and attention scale, ``(heads * head_dim) ** -0.5`` by default as in BiFormer.

    Returns:
        ``(B, H, W, heads, head_dim)``.
    """
    scale = _check_arguments(q, k, v, n_win, topk, scale)
    routes = region_routing(q, k, n_win, topk, scale)
    faster = lambda: routing_prefers_triton(q.dtype, dot_precision(q.dtype) == "ieee", topk)  # noqa: E731
    if use_triton(q, k, v, faster=faster):
        return _routing_attention_op(q, k, v, routes, n_win, scale)[0]
    return _attend_reference(q, k, v, routes, n_win, scale)


# --------------------------------------------------------------------------------------------------
# Triton path
# --------------------------------------------------------------------------------------------------

_LOG2E = 1.4426950408889634
_STREAM_BLOCK = 64  # tokens of the streamed side (keys in forward/dq, queries in dk/dv) per step
# fp32 dk/dv streams half as many queries per step: at 64 it takes 255 registers at every BiFormer-T
# stage and spills 24-48 bytes per thread at four of the six; at 32 nothing spills, and with 16- and
# 4-token regions it takes 60-80 registers and 24-32 resident warps per SM instead of 8
# (benchmarks/kernel_resources.py, sm_90). fp32 products run as FMA loops, not on tensor cores.
_FP32_DKDV_STREAM_BLOCK = 32
_MAX_REGION_BLOCK = 64


def _region_blocks(tokens: int) -> tuple[int, int, int]:
    """``(block, groups, tiles)``: ``groups`` whole regions per block, or each region in ``tiles`` blocks."""
    block = min(_MAX_REGION_BLOCK, max(16, triton.next_power_of_2(tokens)))
    return block, max(1, block // tokens), triton.cdiv(tokens, block)


def _strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    """Batch, row, column and head strides of a ``(B, H, W, heads[, d])`` tensor."""
    return tuple(x.stride()[:4])


def _unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


if triton is not None:

    @triton.jit
    def _token_offsets(batch, head, region, token, strides, N_WIN: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr):
        """Offsets of tokens ``token`` (row-major inside a region) of regions ``region`` in a
        ``(B, H, W, heads[, d])`` tensor with ``strides`` over its first four dimensions."""
        row = (region // N_WIN) * RH + token // RW
        col = (region % N_WIN) * RW + token % RW
        return batch * strides[0] + row * strides[1] + col * strides[2] + head * strides[3]

    @triton.jit
    def _load_tile(ptr, offsets, ok, dims, HEAD_DIM: tl.constexpr):
        mask = ok[:, None] & (dims[None, :] < HEAD_DIM)
        return tl.load(ptr + offsets[:, None] + dims[None, :], mask=mask, other=0.0)

    @triton.jit
    def _store_tile(ptr, value, offsets, ok, dims, HEAD_DIM: tl.constexpr):
        mask = ok[:, None] & (dims[None, :] < HEAD_DIM)
        tl.store(ptr + offsets[:, None] + dims[None, :], value.to(ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _packed_rows(
        pid, n_regions, TOKENS: tl.constexpr, GROUPS: tl.constexpr, TILES: tl.constexpr, BLOCK: tl.constexpr
    ):
        """Group, region, token and validity of the rows of block ``pid``.

        A block holds ``GROUPS`` whole regions (row ``i`` is token ``i % TOKENS`` of group ``i //
        TOKENS``), or, for regions larger than the block, one of the ``TILES`` parts of one region.
        """
        rows = tl.arange(0, BLOCK)
        group = rows // TOKENS
        region = (pid // TILES) * GROUPS + group
        token = (pid % TILES) * BLOCK + rows % TOKENS
        ok = (group < GROUPS) & (region < n_regions) & (token < TOKENS)
        return group, region, token, ok

    @triton.jit
    def _stream_columns(BLOCK: tl.constexpr, PER_GROUP: tl.constexpr):
        """Group of each streamed column and its position among the ``PER_GROUP`` columns of its group."""
        cols = tl.arange(0, BLOCK)
        return cols // PER_GROUP, cols % PER_GROUP

    @triton.jit
    def _routed_keys(
        routes_ptr, first_region, n_regions, topk, start, col_group, col_pos, GROUPS: tl.constexpr, TOKENS: tl.constexpr
    ):
        """Region, token and validity of the streamed keys: group ``g`` reads the ``topk * TOKENS``
        tokens of the regions routed to query region ``first_region + g``, in routing order."""
        query_region = first_region + col_group
        flat = start + col_pos
        ok = (col_group < GROUPS) & (query_region < n_regions) & (flat < topk * TOKENS)
        region = tl.load(routes_ptr + query_region * topk + flat // TOKENS, mask=ok, other=0)
        return region, flat % TOKENS, ok

    @triton.jit
    def _bra_fwd_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        lse_ptr,
        routes_ptr,
        q_strides,
        k_strides,
        v_strides,
        out_strides,
        lse_strides,
        n_heads,
        n_regions,
        topk,
        qk_scale,
        N_WIN: tl.constexpr,
        RH: tl.constexpr,
        RW: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        GROUPS: tl.constexpr,
        TILES: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Online-softmax attention of a block of query rows over the tokens of their routed regions."""
        TOKENS: tl.constexpr = RH * RW
        PER_GROUP: tl.constexpr = BLOCK_N // GROUPS
        pid = tl.program_id(0)
        batch = (tl.program_id(1) // n_heads).to(tl.int64)
        head = tl.program_id(1) % n_heads
        dims = tl.arange(0, BLOCK_D)
        row_group, q_region, q_token, row_ok = _packed_rows(pid, n_regions, TOKENS, GROUPS, TILES, BLOCK_M)
        q_offsets = _token_offsets(batch, head, q_region, q_token, q_strides, N_WIN, RH, RW)
        q = _load_tile(q_ptr, q_offsets, row_ok, dims, HEAD_DIM)

        first_region = (pid // TILES) * GROUPS
        routes_ptr += batch * n_regions * topk
        col_group, col_pos = _stream_columns(BLOCK_N, PER_GROUP)
        same_group = row_ok[:, None] & (row_group[:, None] == col_group[None, :])
        m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, topk * TOKENS, PER_GROUP):
            k_region, k_token, col_ok = _routed_keys(
                routes_ptr, first_region, n_regions, topk, start, col_group, col_pos, GROUPS, TOKENS
            )
            k_offsets = _token_offsets(batch, head, k_region, k_token, k_strides, N_WIN, RH, RW)
            k = _load_tile(k_ptr, k_offsets, col_ok, dims, HEAD_DIM)
            v_offsets = _token_offsets(batch, head, k_region, k_token, v_strides, N_WIN, RH, RW)
            v = _load_tile(v_ptr, v_offsets, col_ok, dims, HEAD_DIM)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            s = tl.where(same_group & col_ok[None, :], s, float("-inf"))
            m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)

        l_i = tl.where(l_i > 0, l_i, 1.0)
        out_rows = _token_offsets(batch, head, q_region, q_token, out_strides, N_WIN, RH, RW)
        _store_tile(out_ptr, acc / l_i[:, None], out_rows, row_ok, dims, HEAD_DIM)
        lse_rows = _token_offsets(batch, head, q_region, q_token, lse_strides, N_WIN, RH, RW)
        tl.store(lse_ptr + lse_rows, m_i + tl.log2(l_i), mask=row_ok)

    @triton.jit
    def _bra_bwd_dq_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        grad_out_ptr,
        dq_ptr,
        lse_ptr,
        delta_ptr,
        routes_ptr,
        q_strides,
        k_strides,
        v_strides,
        grad_out_strides,
        grad_strides,
        lse_strides,
        n_heads,
        n_regions,
        topk,
        qk_scale,
        scale,
        N_WIN: tl.constexpr,
        RH: tl.constexpr,
        RW: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        GROUPS: tl.constexpr,
        TILES: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """``dq = scale * dS K`` with ``dS = P * (dO V^T - delta)``, P recomputed from the stored LSE."""
        TOKENS: tl.constexpr = RH * RW
        PER_GROUP: tl.constexpr = BLOCK_N // GROUPS
        pid = tl.program_id(0)
        batch = (tl.program_id(1) // n_heads).to(tl.int64)
        head = tl.program_id(1) % n_heads
        dims = tl.arange(0, BLOCK_D)
        row_group, q_region, q_token, row_ok = _packed_rows(pid, n_regions, TOKENS, GROUPS, TILES, BLOCK_M)
        q_offsets = _token_offsets(batch, head, q_region, q_token, q_strides, N_WIN, RH, RW)
        q = _load_tile(q_ptr, q_offsets, row_ok, dims, HEAD_DIM)
        do_offsets = _token_offsets(batch, head, q_region, q_token, grad_out_strides, N_WIN, RH, RW)
        do = _load_tile(grad_out_ptr, do_offsets, row_ok, dims, HEAD_DIM)
        lse_rows = _token_offsets(batch, head, q_region, q_token, lse_strides, N_WIN, RH, RW)
        lse = tl.load(lse_ptr + lse_rows, mask=row_ok, other=0.0)
        delta = tl.load(delta_ptr + lse_rows, mask=row_ok, other=0.0)

        first_region = (pid // TILES) * GROUPS
        routes_ptr += batch * n_regions * topk
        col_group, col_pos = _stream_columns(BLOCK_N, PER_GROUP)
        same_group = row_ok[:, None] & (row_group[:, None] == col_group[None, :])
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, topk * TOKENS, PER_GROUP):
            k_region, k_token, col_ok = _routed_keys(
                routes_ptr, first_region, n_regions, topk, start, col_group, col_pos, GROUPS, TOKENS
            )
            k_offsets = _token_offsets(batch, head, k_region, k_token, k_strides, N_WIN, RH, RW)
            k = _load_tile(k_ptr, k_offsets, col_ok, dims, HEAD_DIM)
            v_offsets = _token_offsets(batch, head, k_region, k_token, v_strides, N_WIN, RH, RW)
            v = _load_tile(v_ptr, v_offsets, col_ok, dims, HEAD_DIM)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            p = tl.where(same_group & col_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)

        dq_rows = _token_offsets(batch, head, q_region, q_token, grad_strides, N_WIN, RH, RW)
        _store_tile(dq_ptr, dq * scale, dq_rows, row_ok, dims, HEAD_DIM)

    @triton.jit
    def _bra_bwd_dkdv_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        grad_out_ptr,
        dk_ptr,
        dv_ptr,
        lse_ptr,
        delta_ptr,
        query_list_ptr,
        list_start_ptr,
        list_count_ptr,
        q_strides,
        k_strides,
        v_strides,
        grad_out_strides,
        grad_strides,
        lse_strides,
        n_heads,
        n_regions,
        topk,
        qk_scale,
        scale,
        N_WIN: tl.constexpr,
        RH: tl.constexpr,
        RW: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        GROUPS: tl.constexpr,
        TILES: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """``dv = P^T dO`` and ``dk = scale * dS^T Q`` for a block of key regions.

        Group ``g`` of the block streams the tokens of the query regions that routed to its key
        region (that region's slice of the inverted routing graph), so every ``dk``/``dv`` row is
        written by exactly one program. ``dk`` and ``dv`` share ``grad_strides``.
        """
        TOKENS: tl.constexpr = RH * RW
        PER_GROUP: tl.constexpr = BLOCK_M // GROUPS
        pid = tl.program_id(0)
        batch = (tl.program_id(1) // n_heads).to(tl.int64)
        head = tl.program_id(1) % n_heads
        dims = tl.arange(0, BLOCK_D)
        row_group, k_region, k_token, row_ok = _packed_rows(pid, n_regions, TOKENS, GROUPS, TILES, BLOCK_N)
        k_offsets = _token_offsets(batch, head, k_region, k_token, k_strides, N_WIN, RH, RW)
        k = _load_tile(k_ptr, k_offsets, row_ok, dims, HEAD_DIM)
        v_offsets = _token_offsets(batch, head, k_region, k_token, v_strides, N_WIN, RH, RW)
        v = _load_tile(v_ptr, v_offsets, row_ok, dims, HEAD_DIM)

        col_group, col_pos = _stream_columns(BLOCK_M, PER_GROUP)
        col_region = (pid // TILES) * GROUPS + col_group
        group_ok = (col_group < GROUPS) & (col_region < n_regions)
        list_start = tl.load(list_start_ptr + batch * n_regions + col_region, mask=group_ok, other=0)
        list_tokens = tl.load(list_count_ptr + batch * n_regions + col_region, mask=group_ok, other=0) * TOKENS
        query_list_ptr += batch * n_regions * topk
        same_group = row_ok[:, None] & (row_group[:, None] == col_group[None, :])
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for start in range(0, tl.max(list_tokens, 0), PER_GROUP):
            flat = start + col_pos
            col_ok = group_ok & (flat < list_tokens)
            q_region = tl.load(query_list_ptr + list_start + flat // TOKENS, mask=col_ok, other=0)
            q_token = flat % TOKENS
            q_offsets = _token_offsets(batch, head, q_region, q_token, q_strides, N_WIN, RH, RW)
            q = _load_tile(q_ptr, q_offsets, col_ok, dims, HEAD_DIM)
            do_offsets = _token_offsets(batch, head, q_region, q_token, grad_out_strides, N_WIN, RH, RW)
            do = _load_tile(grad_out_ptr, do_offsets, col_ok, dims, HEAD_DIM)
            lse_cols = _token_offsets(batch, head, q_region, q_token, lse_strides, N_WIN, RH, RW)
            lse = tl.load(lse_ptr + lse_cols, mask=col_ok, other=0.0)
            delta = tl.load(delta_ptr + lse_cols, mask=col_ok, other=0.0)

            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
            p_t = tl.where(same_group & col_ok[None, :], tl.exp2(s_t - lse[None, :]), 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)

        rows = _token_offsets(batch, head, k_region, k_token, grad_strides, N_WIN, RH, RW)
        _store_tile(dk_ptr, dk * scale, rows, row_ok, dims, HEAD_DIM)
        _store_tile(dv_ptr, dv, rows, row_ok, dims, HEAD_DIM)


def _launch_config(q: torch.Tensor, n_win: int) -> tuple[dict, int, int]:
    """Compile-time parameters shared by the kernels, the region block size and the number of blocks."""
    _, h, w, _, d = q.shape
    rh, rw = h // n_win, w // n_win
    block, groups, tiles = _region_blocks(rh * rw)
    meta = dict(
        N_WIN=n_win,
        RH=rh,
        RW=rw,
        HEAD_DIM=d,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
        GROUPS=groups,
        TILES=tiles,
        PRECISION=dot_precision(q.dtype),
        # Four warps for every tile size: at two, ptxas spilled the fp32 key/value backward of
        # 16-token regions to several KiB of stack (benchmarks/kernel_resources.py).
        num_warps=4,
    )
    return meta, block, triton.cdiv(n_win * n_win, groups) * tiles


def _invert_routes(routes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every key region, the query regions that routed to it.

    Returns ``query_list (B, n_regions * topk)``, in which the query regions of key region ``r``
    are ``query_list[start[r] : start[r] + count[r]]``, and ``start``, ``count`` ``(B, n_regions)``.
    """
    b, n_regions, topk = routes.shape
    key_regions, order = torch.sort(routes.reshape(b, n_regions * topk), dim=1, stable=True)
    every_region = torch.arange(n_regions, dtype=routes.dtype, device=routes.device).expand(b, n_regions).contiguous()
    start = torch.searchsorted(key_regions, every_region)
    count = torch.searchsorted(key_regions, every_region, right=True) - start
    return (order // topk).to(torch.int32), start.to(torch.int32), count.to(torch.int32)


def _forward(q, k, v, routes, n_win, scale):
    b, h, w, nh, _ = q.shape
    n_regions, topk = routes.shape[1:]
    meta, block, n_blocks = _launch_config(q, n_win)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, w, nh), dtype=torch.float32, device=q.device)
    strides = (_strides(q), _strides(k), _strides(v), _strides(out), _strides(lse))
    grid = (n_blocks, b * nh)
    _bra_fwd_kernel[grid](
        q,
        k,
        v,
        out,
        lse,
        routes,
        *strides,
        nh,
        n_regions,
        topk,
        scale * _LOG2E,
        BLOCK_M=block,
        BLOCK_N=_STREAM_BLOCK,
        **meta,
    )
    return out, lse


def _backward(grad_out, q, k, v, out, lse, routes, n_win, scale):
    b, h, w, nh, _ = q.shape
    n_regions, topk = routes.shape[1:]
    meta, block, n_blocks = _launch_config(q, n_win)
    delta = (out.float() * grad_out.float()).sum(-1).contiguous()
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk, dv = torch.empty_like(dq), torch.empty_like(dq)
    strides = (_strides(q), _strides(k), _strides(v), _strides(grad_out), _strides(dq), _strides(lse))
    grid = (n_blocks, b * nh)
    _bra_bwd_dq_kernel[grid](
        q,
        k,
        v,
        grad_out,
        dq,
        lse,
        delta,
        routes,
        *strides,
        nh,
        n_regions,
        topk,
        scale * _LOG2E,
        scale,
        BLOCK_M=block,
        BLOCK_N=_STREAM_BLOCK,
        **meta,
    )
    query_list, list_start, list_count = _invert_routes(routes)
    _bra_bwd_dkdv_kernel[grid](
        q,
        k,
        v,
        grad_out,
        dk,
        dv,
        lse,
        delta,
        query_list,
        list_start,
        list_count,
        *strides,
        nh,
        n_regions,
        topk,
        scale * _LOG2E,
        scale,
        BLOCK_M=_FP32_DKDV_STREAM_BLOCK if q.dtype == torch.float32 else _STREAM_BLOCK,
        BLOCK_N=block,
        **meta,
    )
    return dq, dk, dv


@torch.library.custom_op("zoo::routing_attention", mutates_args=())
def _routing_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, routes: torch.Tensor, n_win: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the given routes (they carry no gradient): the output and the log-sum-exp."""
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    return _forward(q, k, v, routes.to(torch.int32).contiguous(), n_win, scale)


@_routing_attention_op.register_fake
def _(q, k, v, routes, n_win, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("zoo::routing_attention_backward", mutates_args=())
def _routing_attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    routes: torch.Tensor,
    n_win: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, grad_out = (_unit_last_stride(t) for t in (q, k, v, grad_out))
    routes = routes.to(torch.int32).contiguous()
    return _backward(grad_out, q, k, v, out, lse, routes, n_win, scale)


@_routing_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, routes, n_win, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, routes, ctx.n_win, ctx.scale = inputs
    ctx.save_for_backward(q, k, v, *output, routes)


def _backward_autograd(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, routes = ctx.saved_tensors
    grads = _routing_attention_backward_op(grad_out, q, k, v, out, lse, routes, ctx.n_win, ctx.scale)
    return *grads, None, None, None


_routing_attention_op.register_autograd(_backward_autograd, setup_context=_setup_context)
