"""``zoo.kernels.window_attention``: the reference against a plain per-window formulation, and the
Triton path (the interpreter on CPU) against the reference, forward and backward."""

import importlib

import pytest
import torch

from zoo.kernels import window_attention
from zoo.kernels.window_attention import window_attention_reference

# The module itself (``zoo.kernels.window_attention`` is also the name of the function).
wa_module = importlib.import_module("zoo.kernels.window_attention")


def _axis_slices(window: int, shift: int) -> tuple[slice, ...]:
    """Swin's ``h_slices`` / ``w_slices`` for one axis (a single region when that axis is not shifted)."""
    if shift == 0:
        return (slice(None),)
    return slice(0, -window), slice(-window, -shift), slice(-shift, None)


def naive_window_attention(q, k, v, window_size, shift_size, rpb, scale=None):
    """Swin's SW-MSA written out: roll, the slice-built region mask, then one window at a time."""
    b, h, w, heads, d = q.shape
    (wh, ww), (sh, sw) = window_size, shift_size
    scale = d**-0.5 if scale is None else scale
    q, k, v = (torch.roll(t, shifts=(-sh, -sw), dims=(1, 2)) for t in (q, k, v))

    region = torch.zeros(h, w, dtype=torch.long)
    count = 0
    for rows in _axis_slices(wh, sh):
        for cols in _axis_slices(ww, sw):
            region[rows, cols] = count
            count += 1

    coords = [(r, c) for r in range(wh) for c in range(ww)]
    bias = torch.zeros(heads, len(coords), len(coords), dtype=q.dtype)
    if rpb is not None:
        for i, (ri, ci) in enumerate(coords):
            for j, (rj, cj) in enumerate(coords):
                bias[:, i, j] = rpb[(ri - rj + wh - 1) * (2 * ww - 1) + (ci - cj + ww - 1)]

    out = torch.empty_like(q)
    for img in range(b):
        for y in range(0, h, wh):
            for x in range(0, w, ww):
                window = (img, slice(y, y + wh), slice(x, x + ww))
                qw, kw, vw = (t[window].reshape(wh * ww, heads, d).transpose(0, 1) for t in (q, k, v))
                ids = region[y : y + wh, x : x + ww].flatten()
                logits = qw @ kw.transpose(1, 2) * scale + bias
                logits = logits.masked_fill(ids[:, None] != ids[None, :], float("-inf"))
                out[window] = (logits.softmax(-1) @ vw).transpose(0, 1).reshape(wh, ww, heads, d)
    return torch.roll(out, shifts=(sh, sw), dims=(1, 2))


def make_inputs(b, h, w, heads, d, window_size, with_rpb=True, dtype=torch.float32, seed=0, device="cpu"):
    """q, k, v as slices of one ``(B, H, W, 3, heads, d)`` tensor (non-contiguous, as a qkv Linear
    makes them) and a random relative position bias table."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, h, w, 3, heads, d, generator=gen).to(device, dtype)
    q, k, v = (t.detach().requires_grad_() for t in qkv.unbind(3))
    rpb = None
    if with_rpb:
        table = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        rpb = (torch.randn(table, heads, generator=gen) * 0.5).to(device, dtype).requires_grad_()
    return q, k, v, rpb


def forward_backward(fn, q, k, v, rpb, window_size, shift_size, grad_out):
    leaves = [t for t in (q, k, v, rpb) if t is not None and t.requires_grad]
    for t in leaves:
        t.grad = None
    out = fn(q, k, v, window_size, shift_size, rpb)
    out.backward(grad_out)
    return out.detach(), [t.grad.clone() for t in leaves]


def assert_matches(result, expected, atol=1e-5, rtol=1e-4):
    """``(out, grads)`` of ``forward_backward`` against the same from the reference (compared in fp32)."""
    (out, grads), (ref_out, ref_grads) = result, expected
    assert len(grads) == len(ref_grads)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=atol, rtol=rtol)
    for name, grad, ref_grad in zip(("q", "k", "v", "rpb"), grads, ref_grads):
        message = lambda m, n=name: f"d{n}: {m}"
        torch.testing.assert_close(grad.float(), ref_grad.float(), atol=atol, rtol=rtol, msg=message)


# (B, H, W, heads, head_dim, window, shift)
REFERENCE_CASES = [
    (2, 8, 8, 2, 8, (4, 4), (0, 0)),
    (2, 8, 8, 2, 8, (4, 4), (2, 2)),
    (1, 14, 14, 3, 8, (7, 7), (3, 3)),
    (2, 8, 12, 2, 8, (4, 6), (2, 3)),
    (1, 8, 12, 1, 8, (4, 6), (1, 0)),
]


@pytest.mark.parametrize("with_rpb", [True, False])
@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_reference_matches_naive(case, with_rpb):
    b, h, w, heads, d, window_size, shift_size = case
    q, k, v, rpb = make_inputs(b, h, w, heads, d, window_size, with_rpb, dtype=torch.float64)
    expected = naive_window_attention(q, k, v, window_size, shift_size, rpb)
    torch.testing.assert_close(window_attention_reference(q, k, v, window_size, shift_size, rpb), expected)


def test_reference_chunks_over_the_batch(monkeypatch):
    q, k, v, rpb = make_inputs(5, 8, 8, 2, 8, (4, 4), dtype=torch.float64)
    whole = window_attention_reference(q, k, v, 4, 2, rpb)
    monkeypatch.setattr(wa_module, "_REFERENCE_CHUNK_BYTES", 1)  # one image per chunk
    torch.testing.assert_close(window_attention_reference(q, k, v, 4, 2, rpb), whole)


# (B, H, W, heads, head_dim, window, shift, with_rpb)
TRITON_CASES = [
    pytest.param(1, 14, 14, 2, 32, (7, 7), (3, 3), True, id="7x7-shifted-b1-d32"),
    pytest.param(2, 7, 14, 2, 16, (7, 7), (0, 0), True, id="7x7-unshifted-d16"),
    pytest.param(2, 8, 8, 2, 16, (8, 8), (4, 4), True, id="8x8-shifted-one-window"),
    pytest.param(1, 8, 12, 2, 16, (4, 6), (2, 3), True, id="4x6-shifted"),
    pytest.param(1, 8, 12, 1, 16, (4, 6), (2, 0), True, id="4x6-shift-rows-only"),
    pytest.param(1, 12, 24, 1, 16, (12, 12), (6, 6), True, id="12x12-shifted-query-blocks"),
    pytest.param(1, 8, 8, 2, 32, (4, 4), (2, 2), False, id="4x4-shifted-no-rpb"),
    pytest.param(1, 16, 16, 1, 16, (4, 4), (2, 2), True, id="4x4-shifted-16-windows-over-2-programs"),
]


@pytest.mark.parametrize("b, h, w, heads, d, window_size, shift_size, with_rpb", TRITON_CASES)
def test_triton_matches_reference(triton_device, b, h, w, heads, d, window_size, shift_size, with_rpb):
    q, k, v, rpb = make_inputs(b, h, w, heads, d, window_size, with_rpb, device=triton_device)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(triton_device)
    args = (q, k, v, rpb, window_size, shift_size, grad_out)
    result = forward_backward(window_attention, *args)
    assert_matches(result, forward_backward(window_attention_reference, *args))


def test_triton_contiguous_inputs_and_strided_grad(triton_device):
    inputs = make_inputs(1, 8, 8, 2, 16, (4, 4), device=triton_device)
    q, k, v, rpb = (t.detach().contiguous().requires_grad_() for t in inputs)
    # A transposed view: the gradient arrives with non-standard strides.
    grad_out = torch.randn(1, 8, 8, 16, 2, generator=torch.Generator().manual_seed(1)).to(triton_device).transpose(3, 4)
    args = (q, k, v, rpb, 4, 2, grad_out)
    result = forward_backward(window_attention, *args)
    assert_matches(result, forward_backward(window_attention_reference, *args))


def test_triton_frozen_bias_and_custom_scale(triton_device):
    q, k, v, rpb = make_inputs(1, 8, 8, 2, 16, (4, 4), device=triton_device)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(triton_device)
    args = (q, k, v, rpb.detach(), (4, 4), (2, 2), grad_out)
    result = forward_backward(lambda *a: window_attention(*a, scale=0.3), *args)
    assert len(result[1]) == 3  # no gradient for a bias that does not require one
    assert_matches(result, forward_backward(lambda *a: window_attention_reference(*a, scale=0.3), *args))


def _in_fp32(q, k, v, rpb):
    return [t.detach().float().requires_grad_() for t in (q, k, v, rpb)]


def test_triton_half_precision(triton_device):
    q, k, v, rpb = make_inputs(1, 14, 14, 2, 16, (7, 7), dtype=torch.float16, device=triton_device)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(triton_device)
    result = forward_backward(window_attention, q, k, v, rpb, 7, 3, grad_out.half())
    assert result[0].dtype == torch.float16 and all(g.dtype == torch.float16 for g in result[1])
    expected = forward_backward(window_attention_reference, *_in_fp32(q, k, v, rpb), 7, 3, grad_out)
    assert_matches(result, expected, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("window_size, shift_size", [((7, 7), (3, 3)), ((7, 7), (0, 0)), ((12, 12), (6, 6))])
def test_triton_on_gpu(triton_device, window_size, shift_size, dtype, tol):
    """The compiled kernels (not the interpreter) against the fp32 reference, Swin-like sizes."""
    h, w = 4 * window_size[0], 2 * window_size[1]
    q, k, v, rpb = make_inputs(3, h, w, 4, 32, window_size, dtype=dtype, device="cuda")
    grad_out = torch.randn(q.shape, device="cuda")
    result = forward_backward(window_attention, q, k, v, rpb, window_size, shift_size, grad_out.to(dtype))
    full = _in_fp32(q, k, v, rpb)
    assert_matches(
        result,
        forward_backward(window_attention_reference, *full, window_size, shift_size, grad_out),
        atol=tol,
        rtol=tol,
    )


@pytest.mark.parametrize(
    "shapes, window_size, shift_size, rpb_shape, match",
    [
        (((1, 8, 8, 2, 8), (1, 8, 8, 2, 4)), 4, 0, None, "same shape"),
        (((1, 8, 8, 2, 8),) * 2, 4, 0, None, None),
        (((1, 8, 10, 2, 8),) * 2, 4, 0, None, "multiple of window_size"),
        (((1, 8, 8, 2, 8),) * 2, 4, 4, None, "shift_size"),
        (((1, 8, 8, 2, 8),) * 2, 4, 2, (25, 2), r"rpb must have shape \(49, 2\)"),
        (((1, 8, 8, 2, 8),) * 2, (4, 4, 4), 0, None, "pair of ints"),
        (((8, 8, 2, 8),) * 2, 4, 0, None, "B, H, W, heads, head_dim"),
    ],
)
def test_bad_arguments(shapes, window_size, shift_size, rpb_shape, match):
    q_shape, kv_shape = shapes
    q, kv = torch.randn(q_shape), torch.randn(kv_shape)
    rpb = torch.randn(rpb_shape) if rpb_shape else None
    if match is None:
        assert window_attention(q, kv, kv, window_size, shift_size, rpb).shape == q.shape
        return
    with pytest.raises(ValueError, match=match):
        window_attention(q, kv, kv, window_size, shift_size, rpb)
