"""Neighborhood attention: the reference path against a plain transcription of NATTEN's rules, and
the Triton path (interpreter on CPU, native on CUDA) against the reference, forward and backward."""

import pytest
import torch

from zoo.kernels.neighborhood_attention import (
    neighborhood_attention2d,
    neighborhood_attention2d_reference,
    neighborhood_indices,
)


def natten_window_start(index, length, kernel_size, dilation):
    """NATTEN <= 0.17 ``get_window_start``: first key of the window of ``index`` along one axis."""
    half = kernel_size // 2
    if dilation <= 1:
        return max(index - half, 0) + (index + half >= length) * (length - index - half - 1)
    if index - half * dilation < 0:
        return index % dilation
    if index + half * dilation >= length:
        residue = index % dilation
        full = (length // dilation) * dilation
        extra = length - full
        if residue < extra:
            return length - extra + residue - 2 * half * dilation
        return full + residue - kernel_size * dilation
    return index - half * dilation


def natten_pb_start(index, length, kernel_size, dilation):
    """NATTEN <= 0.17 ``get_pb_start``: bias index of the first key of the window of ``index``."""
    half = kernel_size // 2
    if dilation <= 1:
        return half + (index < half) * (half - index) + (index + half >= length) * (length - index - 1 - half)
    if index - half * dilation < 0:
        return kernel_size - 1 - index // dilation
    if index + half * dilation >= length:
        return (length - index - 1) // dilation
    return half


def naive_neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale):
    """One query at a time, one neighbour at a time, exactly as NATTEN's CPU kernels index them."""
    (kh, kw), (dh, dw) = kernel_size, dilation
    _, h, w, _, _ = q.shape
    rows = []
    for i in range(h):
        ni, pi = natten_window_start(i, h, kh, dh), natten_pb_start(i, h, kh, dh)
        row = []
        for j in range(w):
            nj, pj = natten_window_start(j, w, kw, dw), natten_pb_start(j, w, kw, dw)
            logits, values = [], []
            for a in range(kh):
                for c in range(kw):
                    key_row, key_col = ni + a * dh, nj + c * dw
                    logit = (q[:, i, j] * k[:, key_row, key_col]).sum(-1) * scale
                    if rpb is not None:
                        logit = logit + rpb[:, pi + a, pj + c]
                    logits.append(logit)
                    values.append(v[:, key_row, key_col])
            attn = torch.stack(logits, -1).softmax(-1)  # (B, heads, kh*kw)
            row.append((attn[..., None] * torch.stack(values, -2)).sum(-2))
        rows.append(torch.stack(row, 1))
    return torch.stack(rows, 1)


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 9, 11, 13])
def test_indices_match_natten_window_and_bias_start(kernel_size):
    for dilation in (1, 2, 3, 4):
        for length in range(kernel_size * dilation, kernel_size * dilation + 2 * dilation + 3):
            keys, bias = neighborhood_indices(length, kernel_size, dilation)
            for i in range(length):
                start = natten_window_start(i, length, kernel_size, dilation)
                pb_start = natten_pb_start(i, length, kernel_size, dilation)
                assert keys[i].tolist() == [start + t * dilation for t in range(kernel_size)]
                assert bias[i].tolist() == [pb_start + t for t in range(kernel_size)]


def _inputs(shape, kernel_size, with_rpb=True, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype).to(device) for _ in range(3))
    rpb = None
    if with_rpb:
        table = (shape[3], 2 * kernel_size[0] - 1, 2 * kernel_size[1] - 1)
        rpb = torch.randn(table, generator=gen, dtype=dtype).to(device)
    return q, k, v, rpb


def _forward_and_grads(fn, q, k, v, rpb, grad_out, rpb_grad=True, **kwargs):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    rpb_leaf = rpb.detach().clone().requires_grad_(rpb_grad) if rpb is not None else None
    out = fn(*leaves, rpb=rpb_leaf, **kwargs)
    out.backward(grad_out)
    grads = [t.grad for t in leaves] + ([rpb_leaf.grad] if rpb is not None and rpb_grad else [])
    return out.detach(), grads


@pytest.mark.parametrize(
    "size, kernel_size, dilation",
    [
        ((6, 9), (3, 5), (1, 1)),
        ((5, 8), (3, 7), (1, 1)),
        ((10, 7), (3, 3), (2, 2)),
        ((9, 11), (3, 3), (3, 2)),
        ((11, 8), (5, 3), (2, 2)),
    ],
)
def test_reference_matches_natten_indexing(size, kernel_size, dilation):
    q, k, v, rpb = _inputs((1, *size, 2, 4), kernel_size, dtype=torch.float64)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = dict(kernel_size=kernel_size, dilation=dilation, scale=0.7)
    out, grads = _forward_and_grads(neighborhood_attention2d_reference, q, k, v, rpb, grad_out, **kwargs)
    expected, expected_grads = _forward_and_grads(naive_neighborhood_attention, q, k, v, rpb, grad_out, **kwargs)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_reference_chunks_rows_without_changing_the_result(monkeypatch):
    import zoo.kernels.neighborhood_attention as na

    q, k, v, rpb = _inputs((1, 11, 9, 2, 8), (5, 5))
    whole = na.neighborhood_attention2d_reference(q, k, v, 5, 2, rpb)
    monkeypatch.setattr(na, "_REFERENCE_CHUNK_BYTES", 1)
    torch.testing.assert_close(na.neighborhood_attention2d_reference(q, k, v, 5, 2, rpb), whole)


def test_default_scale_and_cpu_dispatch(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "auto")
    q, k, v, rpb = _inputs((1, 6, 7, 2, 16), (3, 3))
    expected = naive_neighborhood_attention(q, k, v, (3, 3), (1, 1), rpb, 16**-0.5)
    torch.testing.assert_close(neighborhood_attention2d(q, k, v, 3, rpb=rpb), expected)


def _assert_triton_matches_reference(q, k, v, rpb, kernel_size, dilation, rpb_grad=True, atol=1e-4, rtol=1e-4):
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=q.dtype).to(q.device)
    kwargs = dict(kernel_size=kernel_size, dilation=dilation, rpb_grad=rpb_grad)
    out, grads = _forward_and_grads(neighborhood_attention2d, q, k, v, rpb, grad_out, **kwargs)
    expected, expected_grads = _forward_and_grads(
        neighborhood_attention2d_reference,
        *(t.float() if t is not None else None for t in (q, k, v, rpb)),
        grad_out.float(),
        **kwargs,
    )
    torch.testing.assert_close(out.float(), expected, atol=atol, rtol=rtol)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad.float(), expected_grad, atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "shape, kernel_size, dilation, with_rpb",
    [
        ((1, 7, 9, 2, 16), (3, 3), (1, 1), True),  # a single tile per sub-grid, 2 heads
        ((2, 10, 12, 1, 32), (5, 3), (2, 2), True),  # batch 2, dilation, non-square kernel
        ((1, 18, 11, 1, 16), (7, 7), (1, 1), True),  # several tiles: halo rows and columns
        ((1, 25, 7, 1, 16), (3, 3), (3, 2), False),  # dilation 3, no bias; sub-grids of 9 and 8 rows
        ((1, 11, 12, 1, 16), (11, 11), (1, 1), True),  # a large kernel on a small map
    ],
)
def test_triton_matches_reference(triton_device, shape, kernel_size, dilation, with_rpb):
    q, k, v, rpb = _inputs(shape, kernel_size, with_rpb, device=triton_device)
    _assert_triton_matches_reference(q, k, v, rpb, kernel_size, dilation)


def test_triton_non_contiguous_inputs_and_frozen_bias(triton_device):
    gen = torch.Generator().manual_seed(0)
    # (B, heads, H, W, 3, d) viewed as (B, H, W, heads, 3, d)
    qkv = torch.randn(1, 2, 8, 9, 3, 16, generator=gen).to(triton_device).permute(0, 2, 3, 1, 4, 5)
    q, k, v = qkv.unbind(4)
    rpb = torch.randn(2, 10, 5, generator=gen).to(triton_device)[:, ::2].transpose(1, 2)  # (heads, 5, 5), strided
    assert not (q.is_contiguous() or rpb.is_contiguous())
    _assert_triton_matches_reference(q, k, v, rpb, 3, 2, rpb_grad=False)


def test_triton_half_precision_forward(triton_device):
    q, k, v, rpb = _inputs((1, 9, 9, 1, 16), (5, 5), device=triton_device)
    out = neighborhood_attention2d(q.half(), k.half(), v.half(), 5, 1, rpb.half())
    expected = neighborhood_attention2d_reference(q, k, v, 5, 1, rpb)
    torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel_size, dilation", [(7, 1), (7, 3), (13, 1)])
def test_triton_on_gpu(triton_device, dtype, kernel_size, dilation):
    q, k, v, rpb = _inputs((2, 30, 33, 2, 32), (kernel_size, kernel_size), device=triton_device)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    _assert_triton_matches_reference(q, k, v, rpb, kernel_size, dilation, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=torch.zeros(1, 9, 8, 2, 16)), "same shape"),
        (dict(kernel_size=4), "odd"),
        (dict(kernel_size=(3, 1)), "odd"),
        (dict(dilation=0), "dilation"),
        (dict(kernel_size=5, dilation=2), r"kernel_size \* dilation"),
        (dict(kernel_size=(9, 3)), r"kernel_size \* dilation"),
        (dict(rpb=torch.zeros(2, 5, 3)), r"rpb must have shape \(2, 5, 5\)"),
        (dict(rpb=torch.zeros(3, 5, 5)), r"rpb must have shape \(2, 5, 5\)"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    q = torch.zeros(1, 8, 9, 2, 16)
    args = dict(q=q, k=q, v=q, kernel_size=3, dilation=1, rpb=None) | kwargs
    with pytest.raises(ValueError, match=message):
        neighborhood_attention2d(**args)
