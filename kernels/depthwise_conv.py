"""Large-kernel depthwise convolution (RepLKNet, Ding et al. 2022; SLaK, Liu et al. 2023; VAN's LKA).

``depthwise_conv2d`` computes exactly ``F.conv2d(x, weight, bias, stride=1, padding=padding,
dilation=dilation, groups=C)``: every channel is cross-correlated with its own ``kh x kw`` filter,

    y[n, c, p, q] = b[c] + sum_{i, j} w[c, 0, i, j] * x[n, c, p - pad_h + i * d_h, q - pad_w + j * d_w],

with ``x`` read as zero outside the map. The Triton path handles square kernels of any size,
rectangular ones (SLaK's 51x5 / 5x51), dilation (VAN's 7x7 with dilation 3) and both memory
formats (the kernels read and write through strides, so NCHW and channels_last need no copy).

Backward, for ``y = x * w`` (cross-correlation):

* ``dL/dx`` is the same convolution of ``dL/dy`` with the kernel flipped in both axes and the
  complementary padding ``d * (k - 1) - pad``, so it reuses the forward kernel;
* ``dL/dw[c, i, j] = sum_{n, p, q} dL/dy[n, c, p, q] * x[n, c, p - pad_h + i d_h, q - pad_w + j d_w]``,
  a reduction over batch and space, computed as a split reduction: each program sums its share of
  the output rows into fp32 partials that are added up afterwards;
* ``dL/db`` is the sum of ``dL/dy`` over batch and space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dispatch import autotune, interpreting, pair, use_triton
from .path_rules import ConvGeometry, DepthwiseCall, depthwise_prefers_triton

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

__all__ = ["depthwise_conv2d", "depthwise_conv2d_reference"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PADDING_CHOICES = "'same', 'valid', an int or a pair of ints"


def _normalize_padding(padding) -> str | tuple[int, int]:
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"depthwise_conv2d: padding must be {_PADDING_CHOICES}, got {padding!r}")
        return padding
    try:
        padding = pair(padding, "padding")
    except (TypeError, ValueError):
        raise ValueError(f"depthwise_conv2d: padding must be {_PADDING_CHOICES}, got {padding!r}") from None
    if min(padding) < 0:
        raise ValueError(f"depthwise_conv2d: padding must be non-negative, got {padding}")
    return padding


def _check_arguments(x, weight, bias, padding, dilation):
    """Validate the arguments; return the normalized padding and dilation, and the ``ConvGeometry``."""
    if x.dim() != 4:
        raise ValueError(f"depthwise_conv2d: x must have shape (B, C, H, W), got {tuple(x.shape)}")
    channels = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(
            f"depthwise_conv2d: weight must have shape (C, 1, kh, kw) with C = {channels} (x's channels), "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"depthwise_conv2d: bias must have shape ({channels},), got {tuple(bias.shape)}")
    tensors = [t for t in (x, weight, bias) if t is not None]
    if any(t.dtype != x.dtype or t.device != x.device for t in tensors):
        raise ValueError("depthwise_conv2d: x, weight and bias must share dtype and device")
    dilation = pair(dilation, "dilation")
    if min(dilation) < 1:
        raise ValueError(f"depthwise_conv2d: dilation must be >= 1, got {dilation}")
    padding = _normalize_padding(padding)

    kernel = tuple(weight.shape[2:])
    span = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
    if padding == "same":
        pad, out_size = tuple(s // 2 for s in span), tuple(x.shape[2:])
    else:
        pad = (0, 0) if padding == "valid" else padding
        out_size = tuple(size + 2 * p - s for size, p, s in zip(x.shape[2:], pad, span))
    if min(out_size) < 1:
        raise ValueError(
            f"depthwise_conv2d: the dilated kernel {kernel} (dilation {dilation}) does not fit the padded "
            f"map {tuple(x.shape[2:])} with padding {padding}"
        )
    return padding, dilation, ConvGeometry(kernel, dilation, pad, out_size)


def depthwise_conv2d_reference(x, weight, bias=None, padding="same", dilation=1) -> torch.Tensor:
    """The PyTorch path: ``F.conv2d`` with ``groups = C``, which is the definition of the op."""
    return F.conv2d(x, weight, bias, stride=1, padding=padding, dilation=dilation, groups=x.shape[1])


def _autocast(x, weight, bias):
    """Under autocast, cast to its dtype as autocast does for ``F.conv2d`` (the weight is usually fp32)."""
    device_type = x.device.type
    if not (torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return (t if t is None else t.to(dtype) for t in (x, weight, bias))


if triton is not None:

    @triton.jit
    def _dwconv_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        C, C_pad, H, W, H_out, W_out,
        sxn, sxc, sxh, sxw,
        syn, syc, syh, syw,
        pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, MAX_BLOCK_H: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """One program per (image, tile of BLOCK_H x BLOCK_W outputs, block of BLOCK_C channels).

        The tile's output rows are ``dil_h`` apart, so output row ``h`` of the tile and tap row ``i``
        read row ``q = h + i`` of the tile's haloed input rows. Each input row segment is loaded once
        per tap column and feeds all BLOCK_H output rows, each with its own tap row ``q - h``; the
        weight is laid out ``(MAX_BLOCK_H + KH + MAX_BLOCK_H, KW, C_pad)`` with zeros around the
        ``(KH, KW, C)`` taps, so the rows ``q - h`` off the kernel contribute nothing (a non-finite
        input value times such a zero gives NaN, where F.conv2d would skip the product).
        """
        pid = tl.program_id(0)
        col_blocks = tl.cdiv(W_out, BLOCK_W)
        row_blocks = tl.cdiv(tl.cdiv(H_out, dil_h), BLOCK_H)
        col_block = pid % col_blocks
        pid = pid // col_blocks
        row_block = pid % row_blocks
        pid = pid // row_blocks
        residue = pid % dil_h
        n = (pid // dil_h).to(tl.int64)

        rows = tl.arange(0, BLOCK_H)
        out_h = residue + dil_h * (row_block * BLOCK_H + rows)
        out_w = col_block * BLOCK_W + tl.arange(0, BLOCK_W)
        chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        chan_ok = chans < C

        # Input row first_in_h + q * dil_h for q in [q_lo, q_hi) lies in the map: the rows outside are
        # zero padding and are skipped rather than masked.
        first_in_h = residue - pad_h + dil_h * row_block * BLOCK_H
        q_lo = tl.maximum(0, (dil_h - 1 - first_in_h) // dil_h)
        q_hi = tl.minimum(BLOCK_H + KH - 1, (H - first_in_h + dil_h - 1) // dil_h)
        x_first_row = x_ptr + n * sxn + (first_in_h + q_lo * dil_h) * sxh
        # MAX_BLOCK_H zero rows above and below the KH taps: tap row q - h needs no mask.
        w_offs = (MAX_BLOCK_H - rows[:, None, None]) * KW * C_pad + chans[None, None, :]
        acc = tl.zeros((BLOCK_H, BLOCK_W, BLOCK_C), dtype=tl.float32)
        for j in range(KW):
            in_w = out_w[None, :, None] - pad_w + j * dil_w
            x_offs = in_w * sxw + chans[None, None, :] * sxc
            x_ok = (in_w >= 0) & (in_w < W) & chan_ok[None, None, :]
            x_row = x_first_row
            w_row = w_ptr + q_lo * KW * C_pad + j * C_pad
            for _ in range(q_lo, q_hi):
                xv = tl.load(x_row + x_offs, mask=x_ok, other=0.0).to(tl.float32)  # (1, BLOCK_W, BLOCK_C)
                wv = tl.load(w_row + w_offs).to(tl.float32)  # (BLOCK_H, 1, BLOCK_C)
                acc += xv * wv
                x_row += dil_h * sxh
                w_row += KW * C_pad

        if HAS_BIAS:
            acc += tl.load(b_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)[None, None, :]
        y_ptrs = (y_ptr + n * syn + out_h[:, None, None] * syh + out_w[None, :, None] * syw
                  + chans[None, None, :] * syc)  # fmt: skip
        y_ok = (out_h < H_out)[:, None, None] & (out_w < W_out)[None, :, None] & chan_ok[None, None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_ok)

    @triton.jit
    def _dwconv_grad_weight_kernel(
        x_ptr, gy_ptr, part_ptr,
        C, H, W, H_out, W_out, total_rows, rows_per_split,
        sxn, sxc, sxh, sxw,
        sgn, sgc, sgh, sgw,
        pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr,
        BLOCK_KW: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """Partial ``dL/dw`` of one split of the ``B * H_out`` output rows, for one tap row ``i``,
        a block of BLOCK_KW taps of that row and a block of channels.

        Each ``dL/dy`` row segment is loaded once and multiplied with the BLOCK_KW shifted input
        segments it meets; the products are summed over the split in fp32 registers and written to
        ``part[split, i, j, c]``.
        """
        split = tl.program_id(0)
        kw_blocks = tl.cdiv(KW, BLOCK_KW)
        tap_h = tl.program_id(1) // kw_blocks
        taps_w = (tl.program_id(1) % kw_blocks) * BLOCK_KW + tl.arange(0, BLOCK_KW)
        tap_ok = taps_w < KW
        chans = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        chan_ok = chans < C
        cols = tl.arange(0, BLOCK_W)
        in_w_first = cols[None, :] - pad_w + taps_w[:, None] * dil_w  # (BLOCK_KW, BLOCK_W)

        row_start = split * rows_per_split
        row_end = tl.minimum(row_start + rows_per_split, total_rows)
        first_image = row_start // H_out
        # Output rows whose input row out_h - pad_h + tap_h * dil_h lies in the map.
        h_lo = tl.maximum(0, pad_h - tap_h * dil_h)
        h_hi = tl.minimum(H_out, H + pad_h - tap_h * dil_h)
        acc = tl.zeros((BLOCK_KW, BLOCK_W, BLOCK_C), dtype=tl.float32)
        for w0 in range(0, W_out, BLOCK_W):
            out_w = w0 + cols
            gy_offs = out_w[None, :, None] * sgw + chans[None, None, :] * sgc
            gy_ok = (out_w < W_out)[None, :, None] & chan_ok[None, None, :]
            in_w = in_w_first + w0
            x_offs = in_w[:, :, None] * sxw + chans[None, None, :] * sxc
            x_ok = ((in_w >= 0) & (in_w < W) & tap_ok[:, None])[:, :, None] & chan_ok[None, None, :]
            gy_image = gy_ptr + first_image.to(tl.int64) * sgn
            x_image = x_ptr + first_image.to(tl.int64) * sxn
            for n in range(first_image, tl.cdiv(row_end, H_out)):
                first = tl.maximum(h_lo, row_start - n * H_out)
                last = tl.minimum(h_hi, row_end - n * H_out)
                gy_row = gy_image + first * sgh
                x_row = x_image + (first - pad_h + tap_h * dil_h) * sxh
                gy_image += sgn
                x_image += sxn
                for _ in range(first, last):
                    # (1, BLOCK_W, BLOCK_C) times (BLOCK_KW, BLOCK_W, BLOCK_C)
                    gy = tl.load(gy_row + gy_offs, mask=gy_ok, other=0.0).to(tl.float32)
                    xv = tl.load(x_row + x_offs, mask=x_ok, other=0.0).to(tl.float32)
                    acc += xv * gy
                    gy_row += sgh
                    x_row += sxh

        part = tl.sum(acc, axis=1)
        part_ptrs = part_ptr + ((split * KH + tap_h) * KW + taps_w[:, None]) * C + chans[None, :]
        tl.store(part_ptrs, part, mask=tap_ok[:, None] & chan_ok[None, :])

    def _fwd_config(block_h, block_w, block_c, warps):
        return triton.Config({"BLOCK_H": block_h, "BLOCK_W": block_w, "BLOCK_C": block_c}, num_warps=warps)

    def _grad_weight_config(block_kw, block_w, block_c, warps):
        return triton.Config({"BLOCK_KW": block_kw, "BLOCK_W": block_w, "BLOCK_C": block_c}, num_warps=warps)

    # Channel-wide tiles suit channels_last (channels contiguous), wide rows suit NCHW (columns
    # contiguous); the autotuner keys on the channel stride so each layout gets its own pick.
    _FWD_CONFIGS = [
        _fwd_config(1, 16, 64, 4),
        _fwd_config(2, 16, 32, 4),
        _fwd_config(4, 8, 64, 4),
        _fwd_config(4, 16, 32, 4),
        _fwd_config(8, 8, 32, 4),
        _fwd_config(4, 32, 16, 4),
        _fwd_config(2, 64, 8, 4),
    ]
    # At most 16 accumulator elements per thread: ptxas then needs about 60 registers on channels_last
    # input, not 250. NCHW rows load element by element (a tap offset breaks their alignment), which
    # costs about 160 registers at 16 elements; the narrow-channel, wide-row tiles at the end keep
    # NCHW near 75 (see benchmarks/kernel_resources.py). Each layout is tuned over its own part of
    # the list (``_grad_weight_candidates``).
    _GRAD_WEIGHT_CONFIGS = [
        _grad_weight_config(16, 8, 32, 8),
        _grad_weight_config(8, 16, 32, 8),
        _grad_weight_config(16, 16, 16, 8),
        _grad_weight_config(8, 8, 32, 4),
        _grad_weight_config(8, 32, 8, 4),
        _grad_weight_config(4, 64, 4, 4),
        _grad_weight_config(8, 64, 2, 4),
        _grad_weight_config(4, 128, 2, 4),
    ]
    _FWD_KEY = ["C", "H_out", "W_out", "KH", "KW", "dil_h", "dil_w", "sxc", "syc"]
    _GRAD_WEIGHT_KEY = ["C", "H_out", "W_out", "KH", "KW", "dil_h", "dil_w", "sxc", "sgc"]

    def _grad_weight_candidates(configs, args):
        """The configs that can win for the input's layout, from the sm_90 resource report
        (``benchmarks/results/kernel-resources-sm90.csv``): on NCHW input the channel-wide tiles
        (``BLOCK_C >= 8``) take 140-180 registers and leave 8-12 resident warps per SM, the
        narrow-channel ones 56-96 registers and 20-36 warps; on channels_last every tile stays under
        120 registers, and only the channel-wide ones read whole 32-byte sectors of contiguous channels.
        """
        channels_last = args["sxc"] == 1
        return [c for c in configs if (c.kwargs["BLOCK_C"] >= 8) == channels_last]

    _fwd_tuned = autotune(_FWD_CONFIGS, _FWD_KEY)(_dwconv_fwd_kernel)
    _grad_weight_tuned = autotune(_GRAD_WEIGHT_CONFIGS, _GRAD_WEIGHT_KEY, prune=_grad_weight_candidates)(
        _dwconv_grad_weight_kernel
    )

# Zero rows around the forward kernel's weight (the largest BLOCK_H it may run with) and the
# multiple its channel count is padded to (the largest BLOCK_C), so that weight loads need no mask.
_MAX_BLOCK_H, _CHANNEL_PAD = 16, 64
# The weight gradient's split count is planned for this many programs per SM with the largest
# tuned blocks, so that every tuned config fills the GPU.
_PROGRAMS_PER_SM, _PLANNED_KW_BLOCK, _PLANNED_CHANNEL_BLOCK = 8, 16, 32


def _interpreter_fwd_blocks(channels: int, rows: int, cols: int) -> dict[str, int]:
    """One tile covering a whole tiny test map: the interpreter's cost is per operation, not per element."""
    return {
        "BLOCK_H": min(_MAX_BLOCK_H, triton.next_power_of_2(rows)),
        "BLOCK_W": min(16, triton.next_power_of_2(cols)),
        "BLOCK_C": min(4, triton.next_power_of_2(channels)),
    }


def _interpreter_grad_weight_blocks(channels: int, kernel_w: int, cols: int) -> dict[str, int]:
    return {
        "BLOCK_KW": min(16, triton.next_power_of_2(kernel_w)),
        "BLOCK_W": min(16, triton.next_power_of_2(cols)),
        "BLOCK_C": min(4, triton.next_power_of_2(channels)),
    }


def _padded_taps(weight: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """``(C, 1, kh, kw)`` -> ``(kh + 2 * _MAX_BLOCK_H, kw, C_pad)`` with the taps in the middle, zero
    elsewhere: channels last so that a block of channels is one coalesced load; flipped in both
    spatial axes for ``dL/dx``."""
    channels, _, kh, kw = weight.shape
    taps = weight[:, 0].permute(1, 2, 0)
    if flip:
        taps = taps.flip(0, 1)
    padded_channels = triton.cdiv(channels, _CHANNEL_PAD) * _CHANNEL_PAD
    padded = weight.new_zeros((_MAX_BLOCK_H + kh + _MAX_BLOCK_H, kw, padded_channels))
    padded[_MAX_BLOCK_H : _MAX_BLOCK_H + kh, :, :channels] = taps
    return padded


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _empty_like_format(x: torch.Tensor, size: tuple[int, ...], dtype=None) -> torch.Tensor:
    """An empty ``size`` tensor in ``x``'s memory format (channels_last or contiguous, as F.conv2d)."""
    memory_format = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return torch.empty(size, dtype=dtype or x.dtype, device=x.device, memory_format=memory_format)


def _conv_triton(x, taps, bias, geometry: ConvGeometry, out_format: torch.Tensor) -> torch.Tensor:
    """Run the forward kernel: ``x`` convolved with ``taps`` from ``_padded_taps``."""
    batch, channels, height, width = x.shape
    (kh, kw), (dh, dw), (ph, pw) = geometry.kernel, geometry.dilation, geometry.pad
    h_out, w_out = geometry.out_size
    y = _empty_like_format(out_format, (batch, channels, h_out, w_out), dtype=x.dtype)

    def grid(meta):
        row_blocks = dh * triton.cdiv(triton.cdiv(h_out, dh), meta["BLOCK_H"])
        col_blocks = triton.cdiv(w_out, meta["BLOCK_W"])
        return batch * row_blocks * col_blocks, triton.cdiv(channels, meta["BLOCK_C"])

    interpreter = interpreting()
    kernel = _dwconv_fwd_kernel if interpreter else _fwd_tuned
    blocks = _interpreter_fwd_blocks(channels, triton.cdiv(h_out, dh), w_out) if interpreter else {}
    kernel[grid](
        x, taps, bias if bias is not None else taps, y,
        channels, taps.shape[2], height, width, h_out, w_out,
        *x.stride(), *y.stride(),
        ph, pw, dh, dw,
        KH=kh, KW=kw, HAS_BIAS=bias is not None, MAX_BLOCK_H=_MAX_BLOCK_H, **blocks,
    )  # fmt: skip
    return y


def _num_splits(total_rows: int, programs_per_split: int, device: torch.device) -> int:
    """How many slices the output rows are cut into so that the grid fills every SM."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return max(1, min(total_rows, triton.cdiv(_PROGRAMS_PER_SM * sms, programs_per_split)))


def _grad_weight_triton(x: torch.Tensor, grad_y: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """``dL/dw`` as ``(kh, kw, C)`` fp32: per-split partials from the kernel, summed over splits."""
    batch, channels, height, width = x.shape
    (kh, kw), (dh, dw), (ph, pw) = geometry.kernel, geometry.dilation, geometry.pad
    h_out, w_out = geometry.out_size
    total_rows = batch * h_out
    planned_programs = kh * triton.cdiv(kw, _PLANNED_KW_BLOCK) * triton.cdiv(channels, _PLANNED_CHANNEL_BLOCK)
    splits = _num_splits(total_rows, planned_programs, x.device)
    rows_per_split = triton.cdiv(total_rows, splits)
    partials = torch.empty((splits, kh, kw, channels), dtype=torch.float32, device=x.device)

    def grid(meta):
        return splits, kh * triton.cdiv(kw, meta["BLOCK_KW"]), triton.cdiv(channels, meta["BLOCK_C"])

    interpreter = interpreting()
    kernel = _dwconv_grad_weight_kernel if interpreter else _grad_weight_tuned
    blocks = _interpreter_grad_weight_blocks(channels, kw, w_out) if interpreter else {}
    kernel[grid](
        x, grad_y, partials,
        channels, height, width, h_out, w_out, total_rows, rows_per_split,
        *x.stride(), *grad_y.stride(),
        ph, pw, dh, dw,
        KH=kh, KW=kw, **blocks,
    )  # fmt: skip
    return partials.sum(0)


def _geometry(weight, dil_h, dil_w, pad_h, pad_w, out_h, out_w) -> ConvGeometry:
    return ConvGeometry(tuple(weight.shape[2:]), (dil_h, dil_w), (pad_h, pad_w), (out_h, out_w))


@torch.library.custom_op("zoo::depthwise_conv2d", mutates_args=())
def _depthwise_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dil_h: int,
    dil_w: int,
    pad_h: int,
    pad_w: int,
    out_h: int,
    out_w: int,
) -> torch.Tensor:
    """The Triton forward; ``pad_h``/``pad_w`` are the top/left padding, the output size sets the rest."""
    geometry = _geometry(weight, dil_h, dil_w, pad_h, pad_w, out_h, out_w)
    return _conv_triton(x, _padded_taps(weight), bias, geometry, out_format=x)


@_depthwise_conv2d_op.register_fake
def _(x, weight, bias, dil_h, dil_w, pad_h, pad_w, out_h, out_w):
    return _empty_like_format(x, (x.shape[0], x.shape[1], out_h, out_w))


@torch.library.custom_op("zoo::depthwise_conv2d_backward", mutates_args=())
def _depthwise_conv2d_backward_op(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    dil_h: int,
    dil_w: int,
    pad_h: int,
    pad_w: int,
    out_h: int,
    out_w: int,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dL/dx``, ``dL/dw`` and ``dL/db`` where ``needs`` asks for them, empty tensors elsewhere."""
    geometry = _geometry(weight, dil_h, dil_w, pad_h, pad_w, out_h, out_w)
    grad_x, grad_w, grad_b = (x.new_empty(0) for _ in range(3))
    if needs[0]:
        flipped = _padded_taps(weight, flip=True)
        grad_x = _conv_triton(grad_y, flipped, None, geometry.transposed(x.shape[2:]), out_format=x)
    if needs[1]:
        taps_grad = _grad_weight_triton(x, grad_y, geometry)
        grad_w = torch.empty_like(weight).copy_(taps_grad.permute(2, 0, 1).unsqueeze(1))
    if needs[2]:
        grad_b = grad_y.sum((0, 2, 3), dtype=torch.float32).to(grad_y.dtype)
    return grad_x, grad_w, grad_b


@_depthwise_conv2d_backward_op.register_fake
def _(grad_y, x, weight, dil_h, dil_w, pad_h, pad_w, out_h, out_w, needs):
    grad_x = _empty_like_format(x, x.shape, dtype=grad_y.dtype) if needs[0] else x.new_empty(0)
    grad_w = torch.empty_like(weight) if needs[1] else x.new_empty(0)
    grad_b = grad_y.new_empty(x.shape[1]) if needs[2] else x.new_empty(0)
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias, *ctx.geometry = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    grads = _depthwise_conv2d_backward_op(grad_y, x, weight, *ctx.geometry, needs)
    return *(grad if need else None for grad, need in zip(grads, needs)), *(None,) * len(ctx.geometry)


_depthwise_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _describe(x, weight, bias, geometry: ConvGeometry) -> DepthwiseCall:
    return DepthwiseCall(
        geometry=geometry,
        in_size=tuple(x.shape[2:]),
        channels=x.shape[1],
        channels_last=_is_channels_last(x),
        dtype=x.dtype,
        training=torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)),
    )


def depthwise_conv2d(x, weight, bias=None, padding="same", dilation=1) -> torch.Tensor:
    """Depthwise 2-D convolution, ``F.conv2d(x, weight, bias, 1, padding, dilation, groups=C)``.

    Args:
        x: ``(B, C, H, W)``, contiguous or channels_last (the output keeps the format).
        weight: ``(C, 1, kh, kw)``; any kernel size, square or rectangular.
        bias: ``(C,)`` or None.
        padding: ``"same"`` (an even kernel puts the extra row/column at the bottom/right, as
            F.conv2d does), ``"valid"``, an int or a pair ``(pad_h, pad_w)``.
        dilation: an int or a pair ``(d_h, d_w)``, each >= 1.

    CUDA tensors in fp32, fp16 or bf16 run the Triton kernels (fp32 accumulation) where
    ``zoo.kernels.path_rules.depthwise_prefers_triton`` finds them faster (large filters); anything
    else runs ``F.conv2d``. Under autocast the inputs are cast to its dtype first, as for ``F.conv2d``.

    Returns:
        ``(B, C, H_out, W_out)`` with ``H_out = H + 2 pad_h - d_h (kh - 1)`` (``H`` for "same").
    """
    x, weight, bias = _autocast(x, weight, bias)
    padding, dilation, geometry = _check_arguments(x, weight, bias, padding, dilation)
    faster = lambda: depthwise_prefers_triton(_describe(x, weight, bias, geometry))  # noqa: E731
    if x.dtype in _TRITON_DTYPES and x.numel() > 0 and use_triton(x, weight, bias, faster=faster):
        return _depthwise_conv2d_op(x, weight, bias, *geometry.dilation, *geometry.pad, *geometry.out_size)
    return depthwise_conv2d_reference(x, weight, bias, padding, dilation)
