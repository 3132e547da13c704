"""2-D neighborhood attention with dilation and relative position bias (NAT / DiNAT).

Neighborhood attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023) lets
every query attend to the ``kh x kw`` keys around it, with the relative position bias ``B`` of
its offset:

    NA(x_i) = softmax(Q_i K_{rho(i)}^T * scale + B_{(i, rho(i))}) V_{rho(i)}

Dilated neighborhood attention (Hassani & Shi, "Dilated Neighborhood Attention Transformer", 2022)
takes the window on the sub-grid of positions congruent to the query modulo the dilation. Both
follow NATTEN (<= 0.17), which the released NAT/DiNAT checkpoints were trained with, one axis at
a time:

* the map splits into ``dilation`` sub-grids ``r, r + d, r + 2d, ...``; on the sub-grid of a query
  with ``n`` positions, the window of the query at sub-grid index ``s`` starts at
  ``clamp(s - k // 2, 0, n - k)``: it shifts inward at the borders instead of being padded;
* the bias index is the sub-grid offset from query to key plus ``k - 1``, which is what NATTEN's
  ``get_pb_start(...) + ki`` evaluates to. As the window shifts at the borders, the offsets there
  reach ``+-(k - 1)``, so the whole ``2k - 1`` table is used.

The reference path gathers the neighbours of a chunk of rows with index arithmetic and attends
over them in PyTorch. The Triton path tiles each sub-grid into 2-D query tiles, runs an online
softmax over the haloed key rows, and stores only the log-sum-exp for the backward, which
recomputes the attention for dq (and the bias gradient, reduced per program) and, per key tile,
over the queries that see it, for dk and dv.
"""

from __future__ import annotations

import math

import torch

from . import _dispatch
from ._dispatch import autotune, check_qkv, chunks, dot_precision, interpreting, pair, use_triton

try:
    import triton
    import triton.language as tl

    from ._online_softmax import online_softmax_step
except ImportError:
    triton = None

__all__ = ["neighborhood_attention2d", "neighborhood_attention2d_reference", "neighborhood_indices"]

# Budget for the gathered (B, rows x W, kh x kw, heads, head_dim) keys of one chunk on the reference path.
_REFERENCE_CHUNK_BYTES = 32 * 2**20


def neighborhood_indices(length: int, kernel_size: int, dilation: int, device=None):
    """Key positions and bias indices of every query along one axis, both of shape ``(length, k)``.

    Query ``i`` lies on the sub-grid ``i % dilation`` at index ``s = i // dilation``; that sub-grid
    has ``n`` positions and the window starts at ``clamp(s - k // 2, 0, n - k)`` on it.
    """
    pos = torch.arange(length, device=device)
    residue, sub = pos % dilation, pos // dilation
    sub_length = (length - residue + dilation - 1) // dilation
    start = torch.minimum((sub - kernel_size // 2).clamp(min=0), sub_length - kernel_size)
    key_sub = start[:, None] + torch.arange(kernel_size, device=device)
    keys = key_sub * dilation + residue[:, None]
    bias = key_sub - sub[:, None] + kernel_size - 1
    return keys, bias


def _flat_neighborhood(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Combine per-axis ``(R, kh)`` and ``(W, kw)`` tables into an ``(R * W, kh * kw)`` table."""
    r, kh = rows.shape
    w, kw = cols.shape
    return rows[:, None, :, None].expand(r, w, kh, kw), cols[None, :, None, :].expand(r, w, kh, kw)


def neighborhood_attention2d_reference(q, k, v, kernel_size, dilation=1, rpb=None, scale=None) -> torch.Tensor:
    """The PyTorch path: gather the neighbours of a chunk of rows, attend, concatenate.

    Works on any device and dtype; the softmax runs in at least float32.
    """
    (kh, kw), (dh, dw) = pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    b, h, w, nh, d = q.shape
    scale = d**-0.5 if scale is None else scale
    key_rows, bias_rows = neighborhood_indices(h, kh, dh, q.device)
    key_cols, bias_cols = neighborhood_indices(w, kw, dw, q.device)
    per_row = b * w * kh * kw * nh * d * max(q.element_size(), 4)
    # While exporting, chunks() gives one slice whatever the size: no guard on the symbolic batch.
    chunk = h if torch.compiler.is_exporting() else max(1, _REFERENCE_CHUNK_BYTES // max(per_row, 1))
    softmax_dtype = torch.promote_types(q.dtype, torch.float32)

    outputs = []
    for rows in chunks(h, chunk):
        ri, ci = _flat_neighborhood(key_rows[rows], key_cols)
        k_nb = k[:, ri, ci].flatten(1, 2).flatten(2, 3)  # (B, R*W, kh*kw, heads, d)
        v_nb = v[:, ri, ci].flatten(1, 2).flatten(2, 3)
        q_rows = q[:, rows].flatten(1, 2)  # (B, R*W, heads, d)
        logits = torch.einsum("bqnd,bqknd->bqnk", q_rows, k_nb).to(softmax_dtype) * scale
        if rpb is not None:
            bi, bj = _flat_neighborhood(bias_rows[rows], bias_cols)
            bias = rpb[:, bi, bj].flatten(1, 2).flatten(2, 3)  # (heads, R*W, kh*kw)
            logits = logits + bias.permute(1, 0, 2).to(softmax_dtype)
        attn = logits.softmax(dim=-1).to(v.dtype)
        out = torch.einsum("bqnk,bqknd->bqnd", attn, v_nb)
        outputs.append(out.unflatten(1, (-1, w)))  # (B, R, W, heads, d)
    return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


def _check_arguments(q, k, v, kernel_size, dilation, rpb):
    op = "neighborhood_attention2d"
    check_qkv(q, k, v, op)
    kernel_size, dilation = pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    _, h, w, nh, _ = q.shape
    if not all(ks > 1 and ks % 2 == 1 for ks in kernel_size):
        raise ValueError(f"{op}: kernel_size must be odd and greater than 1 on both axes, got {kernel_size}")
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be >= 1 on both axes, got {dilation}")
    if h < kernel_size[0] * dilation[0] or w < kernel_size[1] * dilation[1]:
        raise ValueError(
            f"{op}: the map (H, W) = ({h}, {w}) must be at least kernel_size * dilation = "
            f"({kernel_size[0] * dilation[0]}, {kernel_size[1] * dilation[1]}); pad it first"
        )
    if rpb is not None:
        expected = (nh, 2 * kernel_size[0] - 1, 2 * kernel_size[1] - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(f"{op}: rpb must have shape {expected} (heads, 2*kh-1, 2*kw-1), got {tuple(rpb.shape)}")
        if rpb.device != q.device or not rpb.is_floating_point():
            raise ValueError(f"{op}: rpb must be a floating point tensor on {q.device}")
    return kernel_size, dilation


def neighborhood_attention2d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None) -> torch.Tensor:
    """NATTEN-exact 2-D neighborhood attention on ``(B, H, W, heads, head_dim)`` tensors.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``, any strides.
        kernel_size: odd int or ``(kh, kw)``, the window on each axis.
        dilation: int or ``(dh, dw)``; ``H >= kh * dh`` and ``W >= kw * dw``.
        rpb: relative position bias of shape ``(heads, 2*kh-1, 2*kw-1)`` as in NAT, or None.
        scale: softmax scale, ``head_dim ** -0.5`` by default.

    Returns:
        ``(B, H, W, heads, head_dim)``.
    """
    kernel_size, dilation = _check_arguments(q, k, v, kernel_size, dilation, rpb)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if use_triton(q, k, v, rpb):
        return _neighborhood_attention_op(q, k, v, rpb, *kernel_size, *dilation, scale)[0]
    return neighborhood_attention2d_reference(q, k, v, kernel_size, dilation, rpb, scale)


# ------------------------------------------------------------------------------------------------
# Triton path
# ------------------------------------------------------------------------------------------------

# Query tiles (forward, dq) and key tiles (dk, dv) cover TILE x TILE positions of one sub-grid.
_TILE = 8


def _next_pow2(x: int, minimum: int = 16) -> int:
    return max(minimum, triton.next_power_of_2(x))


if triton is not None:
    _LOG2E = tl.constexpr(1.4426950408889634)

    @triton.jit
    def _window_start(index, length, KERNEL: tl.constexpr):
        """First sub-grid index of the window of sub-grid position ``index`` (NATTEN's clamp)."""
        return tl.minimum(tl.maximum(index - KERNEL // 2, 0), length - KERNEL)

    @triton.jit
    def _tile_coordinates(pid, TILES_R, TILES_C, DIL_H, DIL_W, H, W, TILE: tl.constexpr):
        """Sub-grid (rr, rc), its lengths and the first sub-grid row/column of tile ``pid``."""
        tc = pid % TILES_C
        rest = pid // TILES_C
        tr = rest % TILES_R
        rest = rest // TILES_R
        rc = rest % DIL_W
        rr = rest // DIL_W
        n_r = (H - rr + DIL_H - 1) // DIL_H
        n_c = (W - rc + DIL_W - 1) // DIL_W
        return rr, rc, n_r, n_c, tr * TILE, tc * TILE

    @triton.jit
    def _na2d_fwd_kernel(
        Q, K, V, RPB, OUT, LSE,
        sq_b, sq_h, sq_w, sq_n, sq_d,
        sk_b, sk_h, sk_w, sk_n, sk_d,
        sv_b, sv_h, sv_w, sv_n, sv_d,
        so_b, so_h, so_w, so_n, so_d,
        s_rn, s_rr, s_rc,
        NH, H, W, D, DIL_H, DIL_W, TILES_R, TILES_C, N_TILES, qk_scale,
        KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, TILE: tl.constexpr,
        KC: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        bh = pid // N_TILES
        b = (bh // NH).to(tl.int64)
        h = bh % NH
        rr, rc, n_r, n_c, r0, c0 = _tile_coordinates(pid % N_TILES, TILES_R, TILES_C, DIL_H, DIL_W, H, W, TILE)

        # A TILE x TILE block of queries of sub-grid (rr, rc), flattened to M = TILE * TILE rows.
        m = tl.arange(0, TILE * TILE)
        qi = r0 + m // TILE
        qj = c0 + m % TILE
        q_valid = (qi < n_r) & (qj < n_c)
        dd = tl.arange(0, BLOCK_D)
        q_mask = q_valid[:, None] & (dd < D)[None, :]
        q_rows, q_cols = qi * DIL_H + rr, qj * DIL_W + rc
        q = tl.load(
            Q + b * sq_b + h * sq_n + q_rows[:, None] * sq_h + q_cols[:, None] * sq_w + dd[None, :] * sq_d,
            mask=q_mask,
            other=0.0,
        )

        # Key rows row_lo..row_hi-1 and the KC key columns from the first window column hold every
        # window of the tile. A (query, key) pair counts when the key lies in the query's window.
        win_r = _window_start(qi, n_r, KH)
        win_c = _window_start(qj, n_c, KW)
        row_lo = _window_start(r0, n_r, KH)
        row_hi = _window_start(tl.minimum(r0 + TILE - 1, n_r - 1), n_r, KH) + KH
        kj = _window_start(c0, n_c, KW) + tl.arange(0, KC)
        pair_valid = q_valid[:, None] & (kj[None, :] >= win_c[:, None]) & (kj[None, :] < win_c[:, None] + KW)
        kv_mask = (kj < n_c)[:, None] & (dd < D)[None, :]
        k_ptrs = K + b * sk_b + h * sk_n + (kj * DIL_W + rc)[:, None] * sk_w + dd[None, :] * sk_d
        v_ptrs = V + b * sv_b + h * sv_n + (kj * DIL_W + rc)[:, None] * sv_w + dd[None, :] * sv_d
        # rpb[h, ki - qi + kh - 1, kj - qj + kw - 1], the key row ki added in the loop.
        bias_ptrs = RPB + h * s_rn + (KH - 1 - qi)[:, None] * s_rr + (kj[None, :] - qj[:, None] + KW - 1) * s_rc

        m_i = tl.full([TILE * TILE], -1.0e30, tl.float32)
        l_i = tl.zeros([TILE * TILE], tl.float32)
        acc = tl.zeros([TILE * TILE, BLOCK_D], tl.float32)
        for ki in range(row_lo, row_hi):
            k_row = ki * DIL_H + rr
            k = tl.load(k_ptrs + k_row * sk_h, mask=kv_mask, other=0.0)
            v = tl.load(v_ptrs + k_row * sv_h, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            hit = pair_valid & ((ki >= win_r) & (ki < win_r + KH))[:, None]
            if HAS_RPB:
                s += tl.load(bias_ptrs + ki * s_rr, mask=hit, other=0.0).to(tl.float32) * _LOG2E
            s = tl.where(hit, s, float("-inf"))
            m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc, PRECISION)

        l_i = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_i[:, None]
        o_ptrs = OUT + b * so_b + h * so_n + q_rows[:, None] * so_h + q_cols[:, None] * so_w + dd[None, :] * so_d
        tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=q_mask)
        lse_offsets = ((b * H + q_rows) * W + q_cols) * NH + h
        tl.store(LSE + lse_offsets, m_i + tl.log2(l_i), mask=q_valid)

    @triton.jit
    def _na2d_bwd_dq_kernel(
        Q, K, V, RPB, DO, LSE, DELTA, DQ, DRPB,
        sq_b, sq_h, sq_w, sq_n, sq_d,
        sk_b, sk_h, sk_w, sk_n, sk_d,
        sv_b, sv_h, sv_w, sv_n, sv_d,
        sdo_b, sdo_h, sdo_w, sdo_n, sdo_d,
        sg_b, sg_h, sg_w, sg_n, sg_d,
        s_rn, s_rr, s_rc,
        NH, H, W, D, DIL_H, DIL_W, TILES_R, TILES_C, N_TILES, qk_scale, scale,
        KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, RPB_GRAD: tl.constexpr,
        TILE: tl.constexpr, KC: tl.constexpr, BLOCK_D: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        bh = pid // N_TILES
        b = (bh // NH).to(tl.int64)
        h = bh % NH
        rr, rc, n_r, n_c, r0, c0 = _tile_coordinates(pid % N_TILES, TILES_R, TILES_C, DIL_H, DIL_W, H, W, TILE)

        m = tl.arange(0, TILE * TILE)
        qi = r0 + m // TILE
        qj = c0 + m % TILE
        q_valid = (qi < n_r) & (qj < n_c)
        dd = tl.arange(0, BLOCK_D)
        q_mask = q_valid[:, None] & (dd < D)[None, :]
        q_rows, q_cols = qi * DIL_H + rr, qj * DIL_W + rc
        q = tl.load(
            Q + b * sq_b + h * sq_n + q_rows[:, None] * sq_h + q_cols[:, None] * sq_w + dd[None, :] * sq_d,
            mask=q_mask,
            other=0.0,
        )
        do = tl.load(
            DO + b * sdo_b + h * sdo_n + q_rows[:, None] * sdo_h + q_cols[:, None] * sdo_w + dd[None, :] * sdo_d,
            mask=q_mask,
            other=0.0,
        )
        lse_offsets = ((b * H + q_rows) * W + q_cols) * NH + h
        lse = tl.load(LSE + lse_offsets, mask=q_valid, other=0.0)
        delta = tl.load(DELTA + lse_offsets, mask=q_valid, other=0.0)

        win_r = _window_start(qi, n_r, KH)
        win_c = _window_start(qj, n_c, KW)
        row_lo = _window_start(r0, n_r, KH)
        row_hi = _window_start(tl.minimum(r0 + TILE - 1, n_r - 1), n_r, KH) + KH
        col_lo = _window_start(c0, n_c, KW)
        kj = col_lo + tl.arange(0, KC)
        pair_valid = q_valid[:, None] & (kj[None, :] >= win_c[:, None]) & (kj[None, :] < win_c[:, None] + KW)
        kv_mask = (kj < n_c)[:, None] & (dd < D)[None, :]
        k_ptrs = K + b * sk_b + h * sk_n + (kj * DIL_W + rc)[:, None] * sk_w + dd[None, :] * sk_d
        v_ptrs = V + b * sv_b + h * sv_n + (kj * DIL_W + rc)[:, None] * sv_w + dd[None, :] * sv_d
        bias_ptrs = RPB + h * s_rn + (KH - 1 - qi)[:, None] * s_rr + (kj[None, :] - qj[:, None] + KW - 1) * s_rc
        # d(rpb): the bias column kj - qj + kw - 1 shifts the key columns per query; gather them into
        # bias columns, then sum the query rows into bias rows ki - qi + kh - 1 with a one-hot product.
        bias_cols = tl.arange(0, BC)[None, :] - (col_lo - qj + KW - 1)[:, None]
        bias_col_valid = (bias_cols >= 0) & (bias_cols < KC)
        bias_cols = tl.where(bias_col_valid, bias_cols, 0)
        bias_rows = tl.arange(0, BR)[None, :] + qi[:, None] - (KH - 1)

        dq = tl.zeros([TILE * TILE, BLOCK_D], tl.float32)
        drpb = tl.zeros([BR, BC], tl.float32)
        for ki in range(row_lo, row_hi):
            k_row = ki * DIL_H + rr
            k = tl.load(k_ptrs + k_row * sk_h, mask=kv_mask, other=0.0)
            v = tl.load(v_ptrs + k_row * sv_h, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            hit = pair_valid & ((ki >= win_r) & (ki < win_r + KH))[:, None]
            if HAS_RPB:
                s += tl.load(bias_ptrs + ki * s_rr, mask=hit, other=0.0).to(tl.float32) * _LOG2E
            p = tl.where(hit, tl.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            if RPB_GRAD:
                shifted = tl.where(bias_col_valid, tl.gather(ds, bias_cols, 1), 0.0)
                row_onehot = (bias_rows == ki).to(tl.float32)
                drpb += tl.dot(tl.trans(row_onehot), shifted, input_precision="ieee")

        dq_ptrs = DQ + b * sg_b + h * sg_n + q_rows[:, None] * sg_h + q_cols[:, None] * sg_w + dd[None, :] * sg_d
        tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)
        if RPB_GRAD:
            bins = tl.arange(0, BR)[:, None] * BC + tl.arange(0, BC)[None, :]
            tl.store(DRPB + pid.to(tl.int64) * (BR * BC) + bins, drpb)

    @triton.jit
    def _na2d_bwd_dkdv_kernel(
        Q, K, V, RPB, DO, LSE, DELTA, DK, DV,
        sq_b, sq_h, sq_w, sq_n, sq_d,
        sk_b, sk_h, sk_w, sk_n, sk_d,
        sv_b, sv_h, sv_w, sv_n, sv_d,
        sdo_b, sdo_h, sdo_w, sdo_n, sdo_d,
        sg_b, sg_h, sg_w, sg_n, sg_d,
        s_rn, s_rr, s_rc,
        NH, H, W, D, DIL_H, DIL_W, TILES_R, TILES_C, N_TILES, qk_scale, scale,
        KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, TILE: tl.constexpr, QC: tl.constexpr,
        BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        bh = pid // N_TILES
        b = (bh // NH).to(tl.int64)
        h = bh % NH
        rr, rc, n_r, n_c, r0, c0 = _tile_coordinates(pid % N_TILES, TILES_R, TILES_C, DIL_H, DIL_W, H, W, TILE)

        # A TILE x TILE block of keys of sub-grid (rr, rc).
        n = tl.arange(0, TILE * TILE)
        ki = r0 + n // TILE
        kj = c0 + n % TILE
        k_valid = (ki < n_r) & (kj < n_c)
        dd = tl.arange(0, BLOCK_D)
        d_valid = dd < D
        k_mask = k_valid[:, None] & d_valid[None, :]
        k_rows, k_cols = ki * DIL_H + rr, kj * DIL_W + rc
        k = tl.load(
            K + b * sk_b + h * sk_n + k_rows[:, None] * sk_h + k_cols[:, None] * sk_w + dd[None, :] * sk_d,
            mask=k_mask,
            other=0.0,
        )
        v = tl.load(
            V + b * sv_b + h * sv_n + k_rows[:, None] * sv_h + k_cols[:, None] * sv_w + dd[None, :] * sv_d,
            mask=k_mask,
            other=0.0,
        )

        # The queries whose window holds a key of this tile (NATTEN's inverse neighborhood), visited
        # one sub-grid row at a time in chunks of QC columns.
        r1 = tl.minimum(r0 + TILE - 1, n_r - 1)
        c1 = tl.minimum(c0 + TILE - 1, n_c - 1)
        row_lo = tl.where(r0 < KH, 0, r0 - KH // 2)
        row_hi = tl.where(r1 >= n_r - KH, n_r - 1, r1 + KH // 2)
        col_lo = tl.where(c0 < KW, 0, c0 - KW // 2)
        col_hi = tl.where(c1 >= n_c - KW, n_c - 1, c1 + KW // 2)
        q_ptrs = Q + b * sq_b + h * sq_n + dd[None, :] * sq_d
        do_ptrs = DO + b * sdo_b + h * sdo_n + dd[None, :] * sdo_d
        bias_ptrs = RPB + h * s_rn + (ki + KH - 1)[:, None] * s_rr + (kj + KW - 1)[:, None] * s_rc

        dk = tl.zeros([TILE * TILE, BLOCK_D], tl.float32)
        dv = tl.zeros([TILE * TILE, BLOCK_D], tl.float32)
        for qi in range(row_lo, row_hi + 1):
            win_r = _window_start(qi, n_r, KH)
            row_hit = k_valid & (ki >= win_r) & (ki < win_r + KH)
            q_row = qi * DIL_H + rr
            lse_row = ((b * H + q_row) * W) * NH + h
            for qc0 in range(col_lo, col_hi + 1, QC):
                qj = qc0 + tl.arange(0, QC)
                q_valid = qj <= col_hi
                q_mask = q_valid[:, None] & d_valid[None, :]
                q_cols = qj * DIL_W + rc
                q = tl.load(q_ptrs + q_row * sq_h + q_cols[:, None] * sq_w, mask=q_mask, other=0.0)
                do = tl.load(do_ptrs + q_row * sdo_h + q_cols[:, None] * sdo_w, mask=q_mask, other=0.0)
                lse = tl.load(LSE + lse_row + q_cols * NH, mask=q_valid, other=0.0)
                delta = tl.load(DELTA + lse_row + q_cols * NH, mask=q_valid, other=0.0)
                win_c = _window_start(qj, n_c, KW)
                hit = (
                    row_hit[:, None]
                    & q_valid[None, :]
                    & (kj[:, None] >= win_c[None, :])
                    & (kj[:, None] < win_c[None, :] + KW)
                )
                s = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
                if HAS_RPB:
                    bias = tl.load(bias_ptrs - qi * s_rr - qj[None, :] * s_rc, mask=hit, other=0.0)
                    s += bias.to(tl.float32) * _LOG2E
                p = tl.where(hit, tl.exp2(s - lse[None, :]), 0.0)
                dv += tl.dot(p.to(do.dtype), do, input_precision=PRECISION)
                dp = tl.dot(v, tl.trans(do), input_precision=PRECISION)
                ds = p * (dp - delta[None, :])
                dk += tl.dot(ds.to(q.dtype), q, input_precision=PRECISION)

        grad_offsets = b * sg_b + h * sg_n + k_rows[:, None] * sg_h + k_cols[:, None] * sg_w + dd[None, :] * sg_d
        tl.store(DK + grad_offsets, (dk * scale).to(DK.dtype.element_ty), mask=k_mask)
        tl.store(DV + grad_offsets, dv.to(DV.dtype.element_ty), mask=k_mask)


if triton is not None:
    # Each kernel streams key (or query) rows through a software pipeline: three stages hide more
    # latency, two leave registers for a fourth CTA per SM (benchmarks/kernel_resources.py).
    _CONFIGS = [triton.Config({}, num_warps=4, num_stages=3), triton.Config({}, num_warps=4, num_stages=2)]
    _KEY = ["H", "W", "D", "DIL_H", "DIL_W", "KH", "KW", "HAS_RPB"]

    _fwd_tuned = autotune(_CONFIGS, _KEY)(_na2d_fwd_kernel)
    _bwd_dq_tuned = autotune(_CONFIGS, [*_KEY, "RPB_GRAD"])(_na2d_bwd_dq_kernel)
    _bwd_dkdv_tuned = autotune(_CONFIGS, _KEY)(_na2d_bwd_dkdv_kernel)


def _kernels():
    """The forward, dq and dk/dv kernels: autotuned on a GPU, plain in the interpreter."""
    if interpreting():
        return _na2d_fwd_kernel, _na2d_bwd_dq_kernel, _na2d_bwd_dkdv_kernel
    return _fwd_tuned, _bwd_dq_tuned, _bwd_dkdv_tuned


def _launch_geometry(q, kernel_size, dilation, rpb):
    """Grid, runtime shape arguments, constexpr meta-parameters and the key-column block width."""
    b, h, w, nh, d = q.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    tiles_r = triton.cdiv(triton.cdiv(h, dh), _TILE)
    tiles_c = triton.cdiv(triton.cdiv(w, dw), _TILE)
    n_tiles = dh * dw * tiles_r * tiles_c
    shape = (nh, h, w, d, dh, dw, tiles_r, tiles_c, n_tiles)
    meta = dict(
        KH=kh,
        KW=kw,
        HAS_RPB=rpb is not None,
        TILE=_TILE,
        BLOCK_D=_next_pow2(d),
        PRECISION=dot_precision(q.dtype),
    )
    return (b * nh * n_tiles,), shape, meta, _next_pow2(_TILE + kw - 1)


def _rpb_args(rpb, q):
    """The bias table and its strides; without one, any tensor stands in (it is never read)."""
    return (rpb, rpb.stride()) if rpb is not None else (q, (0, 0, 0))


@torch.library.custom_op("zoo::neighborhood_attention2d", mutates_args=())
def _neighborhood_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: torch.Tensor | None,
    kernel_h: int,
    kernel_w: int,
    dilation_h: int,
    dilation_w: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused forward: the output and the log-sum-exp (base 2) of every query's logits."""
    grid, shape, meta, kc = _launch_geometry(q, (kernel_h, kernel_w), (dilation_h, dilation_w), rpb)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    table, table_strides = _rpb_args(rpb, q)
    strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *table_strides)
    qk_scale = scale * math.log2(math.e)
    fwd_kernel, _, _ = _kernels()
    fwd_kernel[grid](q, k, v, table, out, lse, *strides, *shape, qk_scale, KC=kc, **meta)
    return out, lse


@_neighborhood_attention_op.register_fake
def _(q, k, v, rpb, kernel_h, kernel_w, dilation_h, dilation_w, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("zoo::neighborhood_attention2d_backward", mutates_args=())
def _neighborhood_attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
    kernel_h: int,
    kernel_w: int,
    dilation_h: int,
    dilation_w: int,
    scale: float,
    rpb_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv and, with ``rpb_grad``, the bias table's gradient (else an empty tensor)."""
    kernel_size, dilation = (kernel_h, kernel_w), (dilation_h, dilation_w)
    grid, shape, meta, kc = _launch_geometry(q, kernel_size, dilation, rpb)
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    # Every dq program writes its own (BR, BC) partial sums of d(rpb); they are summed below.
    br, bc = _next_pow2(2 * kernel_h - 1), _next_pow2(2 * kernel_w - 1)
    drpb_partial = torch.empty((grid[0] if rpb_grad else 1, br, bc), dtype=torch.float32, device=q.device)
    table, table_strides = _rpb_args(rpb, q)
    strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dq.stride(), *table_strides)
    scales = (scale * math.log2(math.e), scale)
    inputs = (q, k, v, table, grad_out, lse, delta)
    _, dq_kernel, dkdv_kernel = _kernels()
    dq_kernel[grid](
        *inputs, dq, drpb_partial, *strides, *shape, *scales, RPB_GRAD=rpb_grad, KC=kc, BR=br, BC=bc, **meta
    )
    dkdv_kernel[grid](*inputs, dk, dv, *strides, *shape, *scales, QC=kc, **meta)
    if not rpb_grad:
        return dq, dk, dv, q.new_empty(0)
    drpb = drpb_partial.view(q.shape[0], q.shape[3], -1, br, bc).sum((0, 2))
    return dq, dk, dv, drpb[:, : 2 * kernel_h - 1, : 2 * kernel_w - 1].to(rpb.dtype).contiguous()


@_neighborhood_attention_backward_op.register_fake
def _(grad_out, q, k, v, rpb, out, lse, kernel_h, kernel_w, dilation_h, dilation_w, scale, rpb_grad):
    drpb = rpb.new_empty(rpb.shape[0], 2 * kernel_h - 1, 2 * kernel_w - 1) if rpb_grad else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), drpb


_dispatch.register_biased_attention_autograd(_neighborhood_attention_op, _neighborhood_attention_backward_op)
