"""Bi-level routing attention: the Triton kernels against the gather formulation of the official code.

Shapes are BiFormer-T's routed stages (dims 64/128/256, heads dim // 32, topk 1/4/16) at 224x224
(n_win 7, the classification models) and 512x512 (n_win 8, the ADE20K configs); the last stage
uses plain attention and is left out. q, k, v are slices of one ``(B, H, W, 3, heads, 32)``
tensor, and every implementation includes the routing. ``speedup`` is relative to ``gather``: the
official computation (a topk-fold ``torch.gather`` of the routed regions, then matmul, softmax,
matmul), re-written here on ``(B, H, W, heads, d)`` tensors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from unittest import mock

import torch
from _timing import measure

from zoo.kernels._dispatch import use_triton
from zoo.kernels.routing_attention import region_routing, routing_attention, routing_attention_reference

# (name, batch, map side, channels, n_win, topk); heads = channels // 32
CASES = [
    ("s1 224", 64, 56, 64, 7, 1),
    ("s2 224", 64, 28, 128, 7, 4),
    ("s3 224", 64, 14, 256, 7, 16),
    ("s1 512", 8, 128, 64, 8, 1),
    ("s2 512", 8, 64, 128, 8, 4),
    ("s3 512", 8, 32, 256, 8, 16),
]
QUICK_CASES = [
    ("s2 224", 1, 28, 128, 7, 4),
    ("s3 224", 1, 14, 256, 7, 16),
]
_NOTES = {
    "gather": "official formulation: topk-fold torch.gather, matmul, softmax, matmul",
    "reference": "zoo reference path: chunked index_select + SDPA",
    "triton": "zoo Triton kernels (forced): routed regions read by index, online softmax, deterministic bwd",
}


def _regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """``(B, H, W, heads, d)`` -> ``(B, n_win**2, region tokens, heads * d)``."""
    b, h, w, nh, d = x.shape
    x = x.reshape(b, n_win, h // n_win, n_win, w // n_win, nh * d).transpose(2, 3)
    return x.reshape(b, n_win * n_win, -1, nh * d)


def gather_attention(q, k, v, n_win: int, topk: int, scale: float | None = None) -> torch.Tensor:
    """Routing attention computed as BiFormer's ``bra_legacy`` does, with a topk-fold gather."""
    b, h, w, nh, d = q.shape
    scale = (nh * d) ** -0.5 if scale is None else scale
    routes = region_routing(q, k, n_win, topk, scale)
    n_regions = n_win * n_win
    k_reg, v_reg = _regions(k, n_win), _regions(v, n_win)
    tokens = k_reg.shape[2]
    index = routes.view(b, n_regions, topk, 1, 1).expand(-1, -1, -1, tokens, nh * d)

    def gather(x):  # (B, n_regions, topk, tokens, C) -> (B * n_regions, heads, topk * tokens, d)
        x = torch.gather(x.unsqueeze(1).expand(-1, n_regions, -1, -1, -1), 2, index)
        return x.reshape(b * n_regions, topk * tokens, nh, d).transpose(1, 2)

    k_sel, v_sel = gather(k_reg), gather(v_reg)
    q_reg = _regions(q, n_win).reshape(b * n_regions, tokens, nh, d).transpose(1, 2)
    attn = torch.softmax((q_reg * scale) @ k_sel.transpose(-1, -2), dim=-1)
    out = (attn @ v_sel).transpose(1, 2).reshape(b, n_win, n_win, h // n_win, w // n_win, nh, d)
    return out.transpose(2, 3).reshape(b, h, w, nh, d)


def triton_attention(q, k, v, n_win: int, topk: int) -> torch.Tensor:
    """``routing_attention`` on the Triton kernels, also where ``zoo.kernels.path_rules`` picks the reference."""
    with mock.patch.dict(os.environ, {"ZOO_KERNELS": "triton"}):
        return routing_attention(q, k, v, n_win, topk)


def _step(fn, qkv, n_win, topk, mode):
    """One call of ``fn`` on q, k, v sliced from ``qkv`` (as a model's projection gives them)."""
    if mode == "fwd":
        return lambda: fn(*qkv.unbind(3), n_win, topk)
    grad = torch.randn(qkv[:, :, :, 0].shape, device=qkv.device, dtype=qkv.dtype)
    return lambda: torch.autograd.grad(fn(*qkv.unbind(3), n_win, topk), qkv, grad)


def _case_rows(device, case, dtype, mode, impls, warmup, iters):
    name, batch, side, channels, n_win, topk = case
    heads = channels // 32
    qkv = torch.randn(batch, side, side, 3, heads, 32, device=device, dtype=dtype, requires_grad=mode != "fwd")
    description = f"biformer_t {name} B{batch} {side}x{side} C{channels} h{heads} n_win{n_win} topk{topk}"
    rows = []
    for impl, fn in impls.items():
        try:
            ms, peak_mb = measure(_step(fn, qkv, n_win, topk, mode), device, warmup=warmup, iters=iters)
            notes = _NOTES[impl]
        except torch.cuda.OutOfMemoryError:
            ms, peak_mb, notes = float("nan"), float("nan"), "out of memory"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(
            dict(
                op="routing_attention",
                case=description,
                dtype=str(dtype).replace("torch.", ""),
                mode=mode,
                impl=impl,
                ms=ms,
                peak_mb=peak_mb,
                notes=notes,
            )
        )
    baseline = rows[0]["ms"]
    for row in rows:
        row["speedup"] = baseline / row["ms"]
    return rows


def run(device: torch.device, quick: bool) -> Iterator[dict]:
    """Benchmark rows: the full table on CUDA; small shapes with ``quick``, and fp32 PyTorch paths on CPU."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    impls = {"gather": gather_attention, "reference": routing_attention_reference}
    probe = torch.empty(0, device=device)
    if on_cuda and use_triton(probe):
        impls["triton"] = triton_attention
    cases = CASES if on_cuda and not quick else QUICK_CASES
    dtypes = (torch.float16, torch.bfloat16, torch.float32) if on_cuda else (torch.float32,)
    warmup, iters = (3, 10) if on_cuda else (1, 3)
    for case in cases:
        for dtype in dtypes:
            for mode in ("fwd", "fwd+bwd"):
                yield from _case_rows(device, case, dtype, mode, impls, warmup, iters)


if __name__ == "__main__":
    for result in run(torch.device("cuda" if torch.cuda.is_available() else "cpu"), quick=False):
        print(result)
