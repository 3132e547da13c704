"""Bi-level routing attention: reference path against a plain loop formulation, Triton against the reference."""

import importlib

import pytest
import torch

from zoo.kernels.routing_attention import region_routing, routing_attention, routing_attention_reference


def _qkv(shape, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype).to(device).requires_grad_() for _ in range(3)]


def _region(x, batch, region, n_win):
    """Tokens ``(region tokens, heads, d)`` of one region, read row by row."""
    rh, rw = x.shape[1] // n_win, x.shape[2] // n_win
    row, col = divmod(region, n_win)
    return x[batch, row * rh : (row + 1) * rh, col * rw : (col + 1) * rw].reshape(rh * rw, *x.shape[3:])


def naive_routing_attention(q, k, v, n_win, topk, scale=None):
    """BiFormer's routing attention written with explicit loops over images, regions and heads."""
    b, h, w, heads, d = q.shape
    scale = (heads * d) ** -0.5 if scale is None else scale
    rh, rw = h // n_win, w // n_win
    n_regions = n_win * n_win
    out = torch.zeros_like(q)
    for i in range(b):
        q_means = torch.stack([_region(q, i, r, n_win).detach().reshape(rh * rw, -1).mean(0) for r in range(n_regions)])
        k_means = torch.stack([_region(k, i, r, n_win).detach().reshape(rh * rw, -1).mean(0) for r in range(n_regions)])
        affinity = (q_means * scale) @ k_means.T
        for r in range(n_regions):
            routed = affinity[r].topk(topk).indices.tolist()
            keys = torch.cat([_region(k, i, s, n_win) for s in routed])
            values = torch.cat([_region(v, i, s, n_win) for s in routed])
            queries = _region(q, i, r, n_win)
            row, col = divmod(r, n_win)
            for head in range(heads):
                weights = torch.softmax(queries[:, head] @ keys[:, head].T * scale, dim=-1)
                tokens = (weights @ values[:, head]).reshape(rh, rw, d)
                out[i, row * rh : (row + 1) * rh, col * rw : (col + 1) * rw, head] = tokens
    return out


def _grads(out, inputs, seed=1):
    """Gradients for a fixed random fp32 output gradient, cast to the output's dtype."""
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    return torch.autograd.grad(out, inputs, grad)


def _fp32_leaves(*tensors):
    return [t.detach().float().requires_grad_() for t in tensors]


@pytest.mark.parametrize(
    "shape, n_win, topk, scale",
    [
        ((1, 4, 6, 2, 4), 2, 2, None),  # 2x3 regions, H != W
        ((1, 9, 9, 3, 5), 3, 4, 0.3),  # 3x3 regions, odd heads, explicit scale
        ((1, 8, 8, 1, 6), 4, 16, None),  # 2x2 regions, all routed
    ],
)
def test_reference_matches_loops(shape, n_win, topk, scale):
    q, k, v = _qkv(shape, torch.float64)
    expected = naive_routing_attention(q, k, v, n_win, topk, scale)
    out = routing_attention_reference(q, k, v, n_win, topk, scale)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(out, (q, k, v)), _grads(expected, (q, k, v))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_reference_chunks_agree(monkeypatch):
    q, k, v = _qkv((2, 8, 8, 2, 4), torch.float64)
    whole = routing_attention_reference(q, k, v, 4, 3)
    module = importlib.import_module("zoo.kernels.routing_attention")  # the package re-exports a function of that name
    monkeypatch.setattr(module, "_REFERENCE_CHUNK_BYTES", 1)  # one region per chunk
    torch.testing.assert_close(routing_attention_reference(q, k, v, 4, 3), whole, rtol=0, atol=0)


def test_routing_picks_largest_affinity():
    q, k, _ = _qkv((2, 6, 6, 2, 3), torch.float64)
    routes = region_routing(q, k, 3, 4, 0.5)
    q_means = q.detach().reshape(2, 3, 2, 3, 2, 6).mean((2, 4)).reshape(2, 9, 6)
    k_means = k.detach().reshape(2, 3, 2, 3, 2, 6).mean((2, 4)).reshape(2, 9, 6)
    affinity = q_means @ k_means.transpose(1, 2)
    chosen = affinity.gather(-1, routes)
    threshold = chosen.min(-1, keepdim=True).values
    assert routes.shape == (2, 9, 4) and not routes.requires_grad
    assert ((affinity >= threshold).sum(-1) == 4).all()


@pytest.mark.parametrize(
    "shape, n_win, topk",
    [
        ((1, 4, 4, 1, 16), 2, 1),  # 2x2 regions packed four to a block, batch 1
        ((2, 6, 6, 3, 16), 3, 2),  # 2x2 regions, odd heads
        ((1, 12, 12, 1, 16), 3, 9),  # 4x4 regions, every region routed
        ((1, 12, 8, 1, 8), 4, 16),  # 3x2 regions (two per block), head_dim below the tile
        ((1, 18, 18, 1, 16), 2, 3),  # 9x9 regions split over two blocks
    ],
)
def test_triton_matches_reference(triton_device, shape, n_win, topk):
    q, k, v = _qkv(shape, device=triton_device)
    expected = routing_attention_reference(q, k, v, n_win, topk)
    expected_grads = _grads(expected, (q, k, v))
    out = routing_attention(q, k, v, n_win, topk)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, (q, k, v)), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_triton_non_contiguous(triton_device):
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 6, 6, 3, 3, 16, generator=generator).to(triton_device)  # (B, H, W, qkv, heads, d)
    qkv.requires_grad_()
    q, k = qkv[:, :, :, 0], qkv[:, :, :, 1]
    v_t = torch.randn(1, 6, 6, 16, 3, generator=generator).to(triton_device).requires_grad_()
    v = v_t.transpose(-1, -2)  # head_dim not the innermost dimension
    assert not (q.is_contiguous() or v.is_contiguous()) and v.stride(-1) != 1
    expected = routing_attention_reference(q, k, v, 3, 2, scale=0.2)
    expected_grads = _grads(expected, (qkv, v_t))
    out = routing_attention(q, k, v, 3, 2, scale=0.2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, (qkv, v_t)), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_triton_half_precision(triton_device):
    q, k, v = _qkv((1, 8, 8, 2, 16), torch.float16, triton_device)
    expected = routing_attention_reference(*(t.float() for t in (q, k, v)), 2, 2)
    out = routing_attention(q, k, v, 2, 2)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape, n_win, topk",
    [((2, 56, 56, 2, 32), 7, 1), ((2, 28, 28, 4, 32), 7, 4), ((2, 14, 14, 8, 32), 7, 16), ((1, 32, 32, 8, 32), 8, 16)],
)
def test_triton_gpu(triton_device, shape, n_win, topk, dtype):
    """Forward and gradients in ``dtype`` against the fp32 reference on the same values, compared in fp32."""
    q, k, v = _qkv(shape, dtype, triton_device)
    full = _fp32_leaves(q, k, v)
    expected = routing_attention_reference(*full, n_win, topk)
    expected_grads = _grads(expected, full)
    out = routing_attention(q, k, v, n_win, topk)
    tol = 2e-3 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    grads = _grads(out, (q, k, v))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    again = _grads(routing_attention(q, k, v, n_win, topk), (q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(grads, again))  # deterministic backward


@pytest.mark.parametrize(
    "shape, n_win, topk, scale, match",
    [
        ((1, 4, 4, 16), 2, 1, None, r"\(B, H, W, heads, head_dim\)"),
        ((1, 6, 4, 1, 16), 4, 1, None, "divisible by n_win"),
        ((1, 4, 4, 1, 16), 0, 1, None, "n_win must be a positive int"),
        ((1, 4, 4, 1, 16), 2.0, 1, None, "n_win must be a positive int"),
        ((1, 4, 4, 1, 16), 2, 0, None, r"topk must be an int in \[1, n_win\*\*2 = 4\]"),
        ((1, 4, 4, 1, 16), 2, 5, None, r"topk must be an int in \[1, n_win\*\*2 = 4\]"),
        ((1, 4, 4, 1, 16), 2, 1, -1.0, "scale must be a positive"),
    ],
)
def test_bad_arguments(shape, n_win, topk, scale, match):
    q = torch.randn(shape)
    with pytest.raises(ValueError, match=match):
        routing_attention(q, q, q, n_win, topk, scale)


def test_mismatched_qkv():
    q = torch.randn(1, 4, 4, 1, 16)
    with pytest.raises(ValueError, match="same shape"):
        routing_attention(q, q, q[:, :2], 2, 1)
