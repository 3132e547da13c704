"""Shifted-window multi-head self-attention (Swin, Liu et al. 2021, Eq. 4).

``window_attention`` computes exactly what Swin's (S)W-MSA computes: roll the map by
``-shift_size``, split it into non-overlapping windows, attend inside each window with the
relative position bias ``B`` looked up from Swin's table, ``softmax(Q K^T * scale + B + M) V``,
where ``M`` masks the pairs of tokens that the roll brought together from different regions,
then merge the windows and roll back.

Two paths compute it: ``window_attention_reference`` (PyTorch, any device) and a fused Triton
forward/backward that does the roll, partition, bias lookup and mask by index arithmetic, so no
``(windows, heads, N, N)`` tensor is ever written (see the comment above the kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch
from ._dispatch import autotune, check_qkv, chunks, dot_precision, interpreting, pair, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

__all__ = ["window_attention", "window_attention_reference", "relative_position_index", "shift_region_ids"]

# Budget for the (windows, heads, N, N) score tensor of one chunk on the reference path.
_REFERENCE_CHUNK_BYTES = 64 * 2**20


def relative_position_index(window_size: tuple[int, int], device=None) -> torch.Tensor:
    """Swin's ``(N, N)`` index into the ``((2*wh-1)*(2*ww-1), heads)`` relative position bias table."""
    wh, ww = window_size
    coords = torch.stack(
        torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    ).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :]
    return (relative[0] + wh - 1) * (2 * ww - 1) + (relative[1] + ww - 1)


def shift_region_ids(
    size: tuple[int, int], window_size: tuple[int, int], shift_size: tuple[int, int], device=None
) -> torch.Tensor:
    """Region id of every position of the rolled ``(H, W)`` map, as in Swin's ``img_mask``.

    After rolling by ``-shift``, the last ``window`` rows (columns) of the map hold two regions: the
    rows that were there and the ``shift`` rows wrapped around from the top. Tokens attend only
    within their own region.
    """
    ids = []
    for length, window, shift in zip(size, window_size, shift_size):
        pos = torch.arange(length, device=device)
        region = torch.zeros(length, dtype=torch.long, device=device)
        if shift > 0:
            region = (pos >= length - window).long() + (pos >= length - shift).long()
        ids.append(region)
    return ids[0][:, None] * 3 + ids[1][None, :]


def _partition(x: torch.Tensor, window_size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, heads, d)`` -> ``(B, nW, heads, N, d)``."""
    b, h, w, nh, d = x.shape
    wh, ww = window_size
    x = x.reshape(b, h // wh, wh, w // ww, ww, nh, d)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, (h // wh) * (w // ww), nh, wh * ww, d)


def _merge(x: torch.Tensor, size: tuple[int, int], window_size: tuple[int, int]) -> torch.Tensor:
    """``(B, nW, heads, N, d)`` -> ``(B, H, W, heads, d)``."""
    b, _, nh, _, d = x.shape
    (h, w), (wh, ww) = size, window_size
    x = x.reshape(b, h // wh, w // ww, nh, wh, ww, d)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, nh, d)


def window_attention_reference(q, k, v, window_size, shift_size=0, rpb=None, scale=None) -> torch.Tensor:
    """The PyTorch path: partition, dense attention per window with bias and mask, merge.

    Works on any device and dtype. The bias and mask are built once per call, never per image; the
    batch is chunked so that a score tensor, where SDPA's math kernel builds one, stays within a
    fixed budget.
    """
    window_size, shift_size = pair(window_size, "window_size"), pair(shift_size, "shift_size")
    b, h, w, nh, d = q.shape
    scale = d**-0.5 if scale is None else scale
    n = window_size[0] * window_size[1]
    shifted = any(shift_size)

    attn_bias = None
    if rpb is not None:
        index = relative_position_index(window_size, device=q.device).flatten()
        attn_bias = rpb[index].reshape(n, n, nh).permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
    if shifted:
        q, k, v = (torch.roll(t, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2)) for t in (q, k, v))
        regions = shift_region_ids((h, w), window_size, shift_size, device=q.device)
        regions = _partition(regions[None, :, :, None, None], window_size).reshape(-1, n)  # (nW, N)
        mask = torch.zeros(regions.shape[0], 1, n, n, dtype=q.dtype, device=q.device)
        mask.masked_fill_(regions[:, None, :, None] != regions[:, None, None, :], float("-inf"))
        attn_bias = mask if attn_bias is None else mask + attn_bias

    # Windows and heads share one axis, (B, windows * heads, N, d), so that one (windows * heads, N, N)
    # bias+mask broadcasts over the batch and SDPA can use its fused kernels.
    qw, kw, vw = (_partition(t, window_size).flatten(1, 2) for t in (q, k, v))
    n_windows = qw.shape[1] // nh
    if attn_bias is not None:
        attn_bias = attn_bias.expand(n_windows, nh, n, n).reshape(1, n_windows * nh, n, n)
    per_image = n_windows * nh * n * n * max(q.element_size(), 4)
    chunk = max(1, _REFERENCE_CHUNK_BYTES // max(per_image, 1))
    outputs = [
        F.scaled_dot_product_attention(qw[images], kw[images], vw[images], attn_mask=attn_bias, scale=scale)
        for images in chunks(b, chunk)
    ]
    out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    out = _merge(out.unflatten(1, (n_windows, nh)), (h, w), window_size)
    if shifted:
        out = torch.roll(out, shifts=shift_size, dims=(1, 2))
    return out


# --------------------------------------------------------------------------------------------------
# Triton path.
#
# One program takes ``BLOCK_M`` query tokens of one window and one head against all the (padded)
# ``N_PAD`` keys of that window, so the softmax needs no online rescaling. The roll, the window
# partition, the bias lookup and the shift mask are index arithmetic on the ``(B, H, W, heads, d)``
# tensors; only the output and one log-sum-exp per query and head are written. The backward
# recomputes the probabilities from the log-sum-exp. Each backward program walks a strided set of
# windows and sums the bias gradient of its tile in registers, so the bias gradient leaves the
# kernel as one ``(BLOCK_M, N_PAD)`` tile per program and is reduced into the table afterwards.
# --------------------------------------------------------------------------------------------------

if triton is not None:
    _LOG2E = tl.constexpr(1.4426950408889634)

    @triton.jit
    def _shift_region(pos, length, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
        """Region of rolled-map positions ``pos`` along one axis, as in ``shift_region_ids``."""
        if SHIFT > 0:
            return (pos >= length - WINDOW).to(tl.int32) + (pos >= length - SHIFT).to(tl.int32)
        else:
            return tl.zeros_like(pos)

    @triton.jit
    def _window_tokens(
        win, tokens, H, W,
        WIN_H: tl.constexpr, WIN_W: tl.constexpr, SHIFT_H: tl.constexpr, SHIFT_W: tl.constexpr,
    ):  # fmt: skip
        """Where the tokens ``tokens`` of window ``win`` (windows counted over the whole batch) live.

        Returns the image index, the position in the original map (the roll undone) and the shift
        region of each token.
        """
        n_win_x = W // WIN_W
        per_image = (H // WIN_H) * n_win_x
        rolled_y = (win % per_image) // n_win_x * WIN_H + tokens // WIN_W
        rolled_x = win % n_win_x * WIN_W + tokens % WIN_W
        region = _shift_region(rolled_y, H, WIN_H, SHIFT_H) * 3 + _shift_region(rolled_x, W, WIN_W, SHIFT_W)
        return win // per_image, (rolled_y + SHIFT_H) % H, (rolled_x + SHIFT_W) % W, region

    @triton.jit
    def _tile(ptr, image, y, x, head, dims, strides):
        """Pointers to a ``(tokens, head_dim)`` tile of a ``(B, H, W, heads, d)`` tensor.

        The image offset is 64-bit; offsets within one image fit 32 bits.
        """
        token = y * strides[1] + x * strides[2] + head * strides[3]
        return ptr + tl.cast(image, tl.int64) * strides[0] + (token[:, None] + dims[None, :] * strides[4])

    @triton.jit
    def _bias_log2(rpb_ptr, rpb_strides, head, queries, keys, WIN_H: tl.constexpr, WIN_W: tl.constexpr):
        """Swin's relative position bias of the (query, key) pairs, times ``log2(e)``; 0 on padding."""
        n: tl.constexpr = WIN_H * WIN_W
        index = (queries[:, None] // WIN_W - keys[None, :] // WIN_W + WIN_H - 1) * (2 * WIN_W - 1) + (
            queries[:, None] % WIN_W - keys[None, :] % WIN_W + WIN_W - 1
        )
        valid = (queries[:, None] < n) & (keys[None, :] < n)
        bias = tl.load(rpb_ptr + index * rpb_strides[0] + head * rpb_strides[1], mask=valid, other=0.0)
        return bias.to(tl.float32) * _LOG2E

    @triton.jit
    def _attended(q_region, k_region, q_valid, k_valid, SHIFTED: tl.constexpr):
        """The pairs that attend: real keys of the query's shift region.

        Padding queries see every real key, which keeps their rows finite; they are never stored.
        """
        if SHIFTED:
            return k_valid[None, :] & ((q_region[:, None] == k_region[None, :]) | ~q_valid[:, None])
        else:
            return k_valid[None, :]

    @triton.jit
    def _window_attention_fwd(
        q_ptr, k_ptr, v_ptr, rpb_ptr, out_ptr, lse_ptr,
        q_strides, k_strides, v_strides, rpb_strides, out_strides,
        H, W, head_dim, scale_log2,
        WIN_H: tl.constexpr, WIN_W: tl.constexpr, SHIFT_H: tl.constexpr, SHIFT_W: tl.constexpr,
        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, N_PAD: tl.constexpr, D_PAD: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
    ):  # fmt: skip
        win, head, block = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        SHIFTED: tl.constexpr = SHIFT_H + SHIFT_W > 0
        queries = block * BLOCK_M + tl.arange(0, BLOCK_M)
        keys = tl.arange(0, N_PAD)
        dims = tl.arange(0, D_PAD)
        q_valid, k_valid, d_valid = queries < WIN_H * WIN_W, keys < WIN_H * WIN_W, dims < head_dim
        image, q_y, q_x, q_region = _window_tokens(win, queries, H, W, WIN_H, WIN_W, SHIFT_H, SHIFT_W)
        _, k_y, k_x, k_region = _window_tokens(win, keys, H, W, WIN_H, WIN_W, SHIFT_H, SHIFT_W)
        q_mask = q_valid[:, None] & d_valid[None, :]
        kv_mask = k_valid[:, None] & d_valid[None, :]
        q = tl.load(_tile(q_ptr, image, q_y, q_x, head, dims, q_strides), mask=q_mask, other=0.0)
        k = tl.load(_tile(k_ptr, image, k_y, k_x, head, dims, k_strides), mask=kv_mask, other=0.0)
        v = tl.load(_tile(v_ptr, image, k_y, k_x, head, dims, v_strides), mask=kv_mask, other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
        if HAS_BIAS:
            s += _bias_log2(rpb_ptr, rpb_strides, head, queries, keys, WIN_H, WIN_W)
        s = tl.where(_attended(q_region, k_region, q_valid, k_valid, SHIFTED), s, float("-inf"))
        row_max = tl.max(s, 1)
        p = tl.exp2(s - row_max[:, None])
        row_sum = tl.sum(p, 1)
        out = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / row_sum[:, None]

        tl.store(_tile(out_ptr, image, q_y, q_x, head, dims, out_strides), out, mask=q_mask)
        lse_rows = tl.cast(win, tl.int64) * tl.num_programs(1) + head
        tl.store(lse_ptr + lse_rows * (WIN_H * WIN_W) + queries, row_max + tl.log2(row_sum), mask=q_valid)

    @triton.jit
    def _window_attention_bwd(
        q_ptr, k_ptr, v_ptr, rpb_ptr, out_ptr, grad_out_ptr, lse_ptr,
        grad_q_ptr, grad_k_ptr, grad_v_ptr, grad_bias_ptr,
        q_strides, k_strides, v_strides, rpb_strides, out_strides, grad_out_strides, grad_strides,
        grad_kv_block_stride, n_windows, H, W, head_dim, scale,
        WIN_H: tl.constexpr, WIN_W: tl.constexpr, SHIFT_H: tl.constexpr, SHIFT_W: tl.constexpr,
        HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, BLOCK_M: tl.constexpr, N_PAD: tl.constexpr,
        D_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Gradients for one block of queries of every ``n_groups``-th window, for one head.

        ``dS = P * (dP - rowsum(dO * O))`` is the gradient of the logits, hence of the bias. ``dQ`` is
        complete within the program; ``dK`` and ``dV`` are the contributions of this block of queries
        (slice ``block`` of the key/value gradient buffers, summed afterwards when there are several).
        """
        group, head, block = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        SHIFTED: tl.constexpr = SHIFT_H + SHIFT_W > 0
        n_groups, n_heads = tl.num_programs(0), tl.num_programs(1)
        queries = block * BLOCK_M + tl.arange(0, BLOCK_M)
        keys = tl.arange(0, N_PAD)
        dims = tl.arange(0, D_PAD)
        q_valid, k_valid, d_valid = queries < WIN_H * WIN_W, keys < WIN_H * WIN_W, dims < head_dim
        q_mask = q_valid[:, None] & d_valid[None, :]
        kv_mask = k_valid[:, None] & d_valid[None, :]
        scale_log2 = scale * _LOG2E
        if HAS_BIAS:  # the same for every window
            bias = _bias_log2(rpb_ptr, rpb_strides, head, queries, keys, WIN_H, WIN_W)
        grad_bias = tl.zeros((BLOCK_M, N_PAD), dtype=tl.float32)
        for win in range(group, n_windows, n_groups):
            image, q_y, q_x, q_region = _window_tokens(win, queries, H, W, WIN_H, WIN_W, SHIFT_H, SHIFT_W)
            _, k_y, k_x, k_region = _window_tokens(win, keys, H, W, WIN_H, WIN_W, SHIFT_H, SHIFT_W)
            q = tl.load(_tile(q_ptr, image, q_y, q_x, head, dims, q_strides), mask=q_mask, other=0.0)
            k = tl.load(_tile(k_ptr, image, k_y, k_x, head, dims, k_strides), mask=kv_mask, other=0.0)
            v = tl.load(_tile(v_ptr, image, k_y, k_x, head, dims, v_strides), mask=kv_mask, other=0.0)
            out = tl.load(_tile(out_ptr, image, q_y, q_x, head, dims, out_strides), mask=q_mask, other=0.0)
            grad_out_tile = _tile(grad_out_ptr, image, q_y, q_x, head, dims, grad_out_strides)
            grad_out = tl.load(grad_out_tile, mask=q_mask, other=0.0)
            lse_rows = tl.cast(win, tl.int64) * n_heads + head
            lse = tl.load(lse_ptr + lse_rows * (WIN_H * WIN_W) + queries, mask=q_valid, other=float("inf"))

            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
            if HAS_BIAS:
                s += bias
            s = tl.where(_attended(q_region, k_region, q_valid, k_valid, SHIFTED), s, float("-inf"))
            p = tl.exp2(s - lse[:, None])
            delta = tl.sum(grad_out.to(tl.float32) * out.to(tl.float32), 1)
            grad_p = tl.dot(grad_out, tl.trans(v), input_precision=DOT_PRECISION)
            grad_s = p * (grad_p - delta[:, None])
            grad_q = tl.dot(grad_s.to(k.dtype), k, input_precision=DOT_PRECISION) * scale
            grad_k = tl.dot(tl.trans(grad_s.to(q.dtype)), q, input_precision=DOT_PRECISION) * scale
            grad_v = tl.dot(tl.trans(p.to(grad_out.dtype)), grad_out, input_precision=DOT_PRECISION)

            tl.store(_tile(grad_q_ptr, image, q_y, q_x, head, dims, grad_strides), grad_q, mask=q_mask)
            block_offset = block * grad_kv_block_stride
            grad_k_tile = _tile(grad_k_ptr + block_offset, image, k_y, k_x, head, dims, grad_strides)
            grad_v_tile = _tile(grad_v_ptr + block_offset, image, k_y, k_x, head, dims, grad_strides)
            tl.store(grad_k_tile, grad_k, mask=kv_mask)
            tl.store(grad_v_tile, grad_v, mask=kv_mask)
            if BIAS_GRAD:
                grad_bias += grad_s
        if BIAS_GRAD:
            rows = tl.cast(group * n_heads + head, tl.int64) * tl.num_programs(2) * BLOCK_M + queries
            tl.store(grad_bias_ptr + rows[:, None] * N_PAD + keys[None, :], grad_bias)


if triton is not None:
    # The forward has no loop, so pipeline stages change nothing in it (the sm_90 resource report
    # shows the same registers for one and two): only the warp count is tuned.
    _FWD_CONFIGS = [triton.Config({}, num_warps=w, num_stages=1) for w in (4, 8)]
    # The backward holds about four (BLOCK_M, N_PAD) fp32 tiles at once: it needs eight warps (at four,
    # ptxas spills), and then one CTA fits an SM, so its next window's loads are software-pipelined.
    _BWD_CONFIGS = [triton.Config({}, num_warps=8, num_stages=s) for s in (2, 1)]
    _KEY = ["H", "W", "head_dim", "WIN_H", "WIN_W", "SHIFT_H", "SHIFT_W", "HAS_BIAS"]

    def _bwd_candidates(configs, args):
        """In fp32, two stages spill 32 bytes per thread at 255 registers and one stage takes 196-210
        registers without spilling, at the same 8 resident warps per SM (sm_90 resource report): fp32
        runs one stage without timing anything."""
        if args["q_ptr"].dtype == torch.float32:
            return [c for c in configs if c.num_stages == 1]
        return configs

    _fwd_tuned = autotune(_FWD_CONFIGS, _KEY)(_window_attention_fwd)
    _bwd_tuned = autotune(_BWD_CONFIGS, [*_KEY, "BIAS_GRAD"], prune=_bwd_candidates)(_window_attention_bwd)


def _block_sizes(window_size: tuple[int, int], head_dim: int) -> tuple[int, int, int]:
    """Key tile (the window padded to a power of two), query tile and head-dim tile, all >= 16."""
    n_pad = max(16, triton.next_power_of_2(window_size[0] * window_size[1]))
    block_m = min(n_pad, max(16, 4096 // n_pad))
    return n_pad, block_m, max(16, triton.next_power_of_2(head_dim))


def _launch_config(q: torch.Tensor, window_size, shift_size, rpb) -> dict:
    n_pad, block_m, d_pad = _block_sizes(window_size, q.shape[-1])
    return dict(
        WIN_H=window_size[0],
        WIN_W=window_size[1],
        SHIFT_H=shift_size[0],
        SHIFT_W=shift_size[1],
        HAS_BIAS=rpb is not None,
        BLOCK_M=block_m,
        N_PAD=n_pad,
        D_PAD=d_pad,
        DOT_PRECISION=dot_precision(q.dtype),
    )


def _rpb_args(rpb: torch.Tensor | None, q: torch.Tensor):
    return (q, (0, 0)) if rpb is None else (rpb, rpb.stride())


def _window_attention_forward(q, k, v, rpb, window_size, shift_size, scale):
    b, h, w, heads, d = q.shape
    n = window_size[0] * window_size[1]
    n_windows = b * (h // window_size[0]) * (w // window_size[1])
    config = _launch_config(q, window_size, shift_size, rpb)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(n_windows, heads, n, dtype=torch.float32, device=q.device)
    rpb_ptr, rpb_strides = _rpb_args(rpb, q)
    grid = (n_windows, heads, triton.cdiv(n, config["BLOCK_M"]))
    kernel = _window_attention_fwd if interpreting() else _fwd_tuned
    kernel[grid](
        q,
        k,
        v,
        rpb_ptr,
        out,
        lse,
        q.stride(),
        k.stride(),
        v.stride(),
        rpb_strides,
        out.stride(),
        h,
        w,
        d,
        scale * 1.4426950408889634,
        **config,
    )
    return out, lse


def _backward_groups(n_windows: int, programs_per_group: int, device: torch.device, bias_grad: bool) -> int:
    """How many programs share the windows of one head and query block.

    One per window, unless the bias needs a gradient: then enough to fill the device, but at most
    one per 8 windows, so that the ``(groups, heads, BLOCK_M, N_PAD)`` bias partials stay several
    times smaller than a ``(windows, heads, N, N)`` tensor.
    """
    if not bias_grad:
        return n_windows
    slots = 8 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(n_windows // 8, triton.cdiv(slots, programs_per_group)))


def _window_attention_backward(grad_out, q, k, v, rpb, out, lse, window_size, shift_size, scale, bias_grad):
    b, h, w, heads, d = q.shape
    n = window_size[0] * window_size[1]
    n_windows = lse.shape[0]
    config = _launch_config(q, window_size, shift_size, rpb)
    n_blocks = triton.cdiv(n, config["BLOCK_M"])
    groups = _backward_groups(n_windows, heads * n_blocks, q.device, bias_grad)
    grad_out = grad_out.to(q.dtype)

    grad_q = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    # With several query blocks per window, dK and dV are summed over per-block fp32 slices.
    kv_dtype = q.dtype if n_blocks == 1 else torch.float32
    grad_k = torch.empty((n_blocks, *q.shape), dtype=kv_dtype, device=q.device)
    grad_v = torch.empty_like(grad_k)
    grad_bias = torch.empty(
        (groups, heads, n_blocks * config["BLOCK_M"], config["N_PAD"]) if bias_grad else (0,),
        dtype=torch.float32,
        device=q.device,
    )
    rpb_ptr, rpb_strides = _rpb_args(rpb, q)
    kernel = _window_attention_bwd if interpreting() else _bwd_tuned
    kernel[(groups, heads, n_blocks)](
        q,
        k,
        v,
        rpb_ptr,
        out,
        grad_out,
        lse,
        grad_q,
        grad_k,
        grad_v,
        grad_bias,
        q.stride(),
        k.stride(),
        v.stride(),
        rpb_strides,
        out.stride(),
        grad_out.stride(),
        grad_q.stride(),
        grad_k.stride(0),
        n_windows,
        h,
        w,
        d,
        scale,
        BIAS_GRAD=bias_grad,
        **config,
    )
    grad_k, grad_v = (t[0] if n_blocks == 1 else t.sum(0).to(q.dtype) for t in (grad_k, grad_v))
    grad_rpb = None
    if bias_grad:
        per_pair = grad_bias.sum(0)[:, :n, :n].permute(1, 2, 0).reshape(n * n, heads)
        index = relative_position_index(window_size, device=q.device).flatten()
        grad_rpb = torch.zeros(rpb.shape, dtype=torch.float32, device=q.device).index_add_(0, index, per_pair)
        grad_rpb = grad_rpb.to(rpb.dtype)
    return grad_q, grad_k, grad_v, grad_rpb


@torch.library.custom_op("zoo::window_attention", mutates_args=())
def _window_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: torch.Tensor | None,
    window_h: int,
    window_w: int,
    shift_h: int,
    shift_w: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused forward: the output and the log-sum-exp (base 2) of every query's logits."""
    return _window_attention_forward(q, k, v, rpb, (window_h, window_w), (shift_h, shift_w), scale)


@_window_attention_op.register_fake
def _(q, k, v, rpb, window_h, window_w, shift_h, shift_w, scale):
    b, h, w, heads, _ = q.shape
    n_windows = b * (h // window_h) * (w // window_w)
    return q.new_empty(q.shape), q.new_empty((n_windows, heads, window_h * window_w), dtype=torch.float32)


@torch.library.custom_op("zoo::window_attention_backward", mutates_args=())
def _window_attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: torch.Tensor | None,
    out: torch.Tensor,
    lse: torch.Tensor,
    window_h: int,
    window_w: int,
    shift_h: int,
    shift_w: int,
    scale: float,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv and, with ``bias_grad``, the bias table's gradient (else an empty tensor)."""
    window_size, shift_size = (window_h, window_w), (shift_h, shift_w)
    grad_q, grad_k, grad_v, grad_rpb = _window_attention_backward(
        grad_out, q, k, v, rpb, out, lse, window_size, shift_size, scale, bias_grad
    )
    return grad_q, grad_k, grad_v, grad_rpb if bias_grad else q.new_empty(0)


@_window_attention_backward_op.register_fake
def _(grad_out, q, k, v, rpb, out, lse, window_h, window_w, shift_h, shift_w, scale, bias_grad):
    grad_rpb = rpb.new_empty(rpb.shape) if bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), grad_rpb


_dispatch.register_biased_attention_autograd(_window_attention_op, _window_attention_backward_op)


def window_attention_triton(q, k, v, window_size, shift_size=0, rpb=None, scale=None) -> torch.Tensor:
    """The fused Triton path (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).

    It runs as the custom op ``torch.ops.zoo.window_attention``, so ``torch.compile`` traces it
    without a graph break.
    """
    window_size, shift_size = pair(window_size, "window_size"), pair(shift_size, "shift_size")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    out, _ = _window_attention_op(q, k, v, rpb, *window_size, *shift_size, scale)
    return out


def _check_arguments(q, k, v, window_size, shift_size, rpb):
    check_qkv(q, k, v, "window_attention")
    window_size, shift_size = pair(window_size, "window_size"), pair(shift_size, "shift_size")
    _, h, w, nh, _ = q.shape
    if min(window_size) < 1:
        raise ValueError(f"window_attention: window_size must be positive, got {window_size}")
    if h % window_size[0] or w % window_size[1]:
        raise ValueError(
            f"window_attention: the map (H, W) = ({h}, {w}) must be a multiple of window_size "
            f"{window_size}; pad it first"
        )
    if not all(0 <= s < ws for s, ws in zip(shift_size, window_size)):
        raise ValueError(
            f"window_attention: shift_size {shift_size} must lie in [0, window_size {window_size})"
        )  # fmt: skip
    if rpb is not None:
        expected = ((2 * window_size[0] - 1) * (2 * window_size[1] - 1), nh)
        if tuple(rpb.shape) != expected:
            got = tuple(rpb.shape)
            msg = f"window_attention: rpb must have shape {expected} ((2*wh-1)*(2*ww-1), heads), got {got}"
            raise ValueError(msg)
    return window_size, shift_size


def window_attention(q, k, v, window_size, shift_size=0, rpb=None, scale=None) -> torch.Tensor:
    """Swin's shifted-window attention on ``(B, H, W, heads, head_dim)`` tensors.

    Args:
        q, k, v: ``(B, H, W, heads, head_dim)``; ``H`` and ``W`` multiples of the window.
        window_size: int or ``(wh, ww)``.
        shift_size: int or ``(sh, sw)``, the cyclic shift of SW-MSA (0 for W-MSA).
        rpb: Swin's ``relative_position_bias_table`` of shape ``((2*wh-1)*(2*ww-1), heads)``.
        scale: softmax scale, ``head_dim ** -0.5`` by default.

    Returns:
        ``(B, H, W, heads, head_dim)``.
    """
    window_size, shift_size = _check_arguments(q, k, v, window_size, shift_size, rpb)
    if use_triton(q, k, v, rpb):
        return window_attention_triton(q, k, v, window_size, shift_size, rpb, scale)
    return window_attention_reference(q, k, v, window_size, shift_size, rpb, scale)
