"""Shifted-window attention (Swin W-MSA / SW-MSA) at the Swin-T stage shapes, and CSWin-T's stripes.

Implementations, all on the same ``(B, H, W, heads, head_dim)`` q, k, v (slices of one qkv tensor):

* ``timm_sdpa`` (the baseline): what timm's ``WindowAttention`` does with ``fused_attn``: roll and
  partition, gather the relative position bias, add the shift mask expanded to
  ``(B * windows, heads, N, N)``, ``F.scaled_dot_product_attention``, merge and roll back.
* ``reference``: ``window_attention_reference``, the PyTorch path of ``zoo.kernels``.
* ``triton``: ``window_attention`` on CUDA tensors (roll, partition, bias and mask in the kernel).
* ``flex``: ``torch.compile(flex_attention)`` on the partitioned windows packed along the sequence,
  with a block mask (same window and same shift region) and the bias as a ``score_mod``.

CSWin-T's cross-shaped stripes are rectangular windows without bias or shift; their baseline,
``cswin_matmul``, is the official formulation (stripes partitioned, ``softmax(q k^T) v`` with the
scores materialized), against ``reference`` and ``triton``.

On CPU (``quick``) only the baselines and ``reference`` run, at a small batch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from _timing import autotuned_choice, flex_enabled, result_row, time_attention

from zoo.kernels.window_attention import (
    relative_position_index,
    shift_region_ids,
    window_attention,
    window_attention_reference,
)

window_module = importlib.import_module("zoo.kernels.window_attention")  # zoo.kernels.window_attention is the op

WINDOW = 7
HEAD_DIM = 32
# Swin-T at 224x224: (stage, map size, heads); the last stage has one window, so no shift.
SWIN_T_STAGES = [(1, 56, 3), (2, 28, 6), (3, 14, 12), (4, 7, 24)]
# CSWin-T at 224x224: (stage, map size, heads per branch, stripe); each stage's heads split into a
# vertical (H, sw) and a horizontal (sw, W) branch; the last stage attends over its whole 7x7 map.
CSWIN_T_STRIPES = [
    (1, 56, 1, (56, 1)), (1, 56, 1, (1, 56)),
    (2, 28, 2, (28, 2)), (2, 28, 2, (2, 28)),
    (3, 14, 4, (14, 7)), (3, 14, 4, (7, 14)),
    (4, 7, 16, (7, 7)),
]  # fmt: skip


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, heads, d)`` -> ``(B * windows, heads, N, d)``."""
    b, h, w, heads, d = x.shape
    x = x.reshape(b, h // window, window, w // window, window, heads, d).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(-1, heads, window * window, d)


def _merge(x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """``(B * windows, heads, N, d)`` -> ``(B, H, W, heads, d)``."""
    _, heads, _, d = x.shape
    x = x.reshape(b, h // WINDOW, w // WINDOW, heads, WINDOW, WINDOW, d).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, h, w, heads, d)


def _window_regions(size: int, shift: int, device) -> torch.Tensor:
    """Shift region of every token of every window, ``(windows, N)``."""
    ids = shift_region_ids((size, size), (WINDOW, WINDOW), (shift, shift), device=device)
    return _partition(ids[None, :, :, None, None], WINDOW).reshape(-1, WINDOW * WINDOW)


def timm_sdpa(size: int, shift: int, device):
    """timm's fused path: the bias and the shift mask materialized per window and head, then SDPA."""
    index = relative_position_index((WINDOW, WINDOW), device=device).flatten()
    mask = None
    if shift:
        regions = _window_regions(size, shift, device)
        mask = (regions[:, :, None] != regions[:, None, :]).float() * -100.0  # timm's img_mask

    def attention(q, k, v, rpb):
        b, h, w, heads, _ = q.shape
        n = WINDOW * WINDOW
        if shift:
            q, k, v = (torch.roll(t, shifts=(-shift, -shift), dims=(1, 2)) for t in (q, k, v))
        attn_mask = rpb[index].view(n, n, heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            expanded = mask.view(1, windows, 1, n, n).expand(b, -1, heads, -1, -1).reshape(-1, heads, n, n)
            attn_mask = attn_mask + expanded
        out = F.scaled_dot_product_attention(
            *(_partition(t, WINDOW) for t in (q, k, v)), attn_mask=attn_mask.to(q.dtype)
        )
        out = _merge(out, b, h, w)
        return torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out

    return attention


def flex(size: int, shift: int, device):
    """FlexAttention over the windows of one image packed into one sequence."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n = WINDOW * WINDOW
    index = relative_position_index((WINDOW, WINDOW), device=device)
    regions = _window_regions(size, shift, device).flatten()
    length = regions.numel()
    compiled = torch.compile(flex_attention, dynamic=False)

    def same_window_and_region(b, h, q_idx, kv_idx):
        return (q_idx // n == kv_idx // n) & (regions[q_idx] == regions[kv_idx])

    block_mask = create_block_mask(same_window_and_region, None, None, length, length, device=device)

    def attention(q, k, v, rpb):
        b, h, w, heads, d = q.shape

        def relative_bias(score, b, head, q_idx, kv_idx):
            return score + rpb[index[q_idx % n, kv_idx % n], head].to(score.dtype)

        if shift:
            q, k, v = (torch.roll(t, shifts=(-shift, -shift), dims=(1, 2)) for t in (q, k, v))
        packed = [
            _partition(t, WINDOW).reshape(b, -1, heads, n, d).transpose(1, 2).reshape(b, heads, -1, d)
            for t in (q, k, v)
        ]
        out = compiled(*packed, score_mod=relative_bias, block_mask=block_mask)
        out = out.reshape(b, heads, -1, n, d).transpose(1, 2).reshape(-1, heads, n, d)
        out = _merge(out, b, h, w)
        return torch.roll(out, shifts=(shift, shift), dims=(1, 2)) if shift else out

    return attention


def zoo_reference(size: int, shift: int, device):
    return lambda q, k, v, rpb: window_attention_reference(q, k, v, WINDOW, shift, rpb)


def zoo_triton(size: int, shift: int, device):
    return lambda q, k, v, rpb: window_attention(q, k, v, WINDOW, shift, rpb)


def cswin_matmul(window: tuple[int, int]):
    """The official CSWin formulation: partition into stripes, scores materialized, softmax, merge."""

    def attention(q, k, v, rpb):
        b, h, w, heads, d = q.shape
        wh, ww = window
        parts = [
            t.reshape(b, h // wh, wh, w // ww, ww, heads, d).permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, wh * ww, d)
            for t in (q, k, v)
        ]
        scores = (parts[0] * d**-0.5) @ parts[1].transpose(-2, -1)
        out = scores.softmax(dim=-1) @ parts[2]
        out = out.reshape(b, h // wh, w // ww, heads, wh, ww, d).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, h, w, heads, d)

    return attention


def _inputs(batch: int, size: int, heads: int, dtype: torch.dtype, device, grad: bool):
    """q, k, v as slices of a qkv tensor (as a Linear makes them) and an fp32 bias table (as under AMP)."""
    qkv = torch.randn(batch, size, size, 3, heads, HEAD_DIM, device=device, dtype=dtype)
    q, k, v = (t.detach().requires_grad_(grad) for t in qkv.unbind(3))
    rpb = (0.02 * torch.randn((2 * WINDOW - 1) ** 2, heads, device=device)).requires_grad_(grad)
    return q, k, v, rpb


def run(device: torch.device, quick: bool) -> Iterator[dict]:
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    batch = 2 if quick else 64
    stages = SWIN_T_STAGES[1:3] if quick else SWIN_T_STAGES
    dtypes = [torch.float32, torch.bfloat16] if on_cuda else [torch.float32]
    impls = {"timm_sdpa": timm_sdpa, "reference": zoo_reference}
    if on_cuda:
        impls.update(triton=zoo_triton)
    if on_cuda and flex_enabled():
        impls.update(flex=flex)

    for stage, size, heads in stages:
        for shift in (0, WINDOW // 2) if size > WINDOW else (0,):
            case = f"swin_t.s{stage} b{batch} {size}x{size}x{heads}h d{HEAD_DIM} w{WINDOW} s{shift}"
            mask = "(B*windows, heads, N, N) bias+mask materialized" if shift else "(1, heads, N, N) bias"
            notes = dict.fromkeys(impls, "")  # the baseline first
            notes["timm_sdpa"] = f"baseline: SDPA with the {mask}"
            if "flex" in notes:
                notes["flex"] = "torch.compile(flex_attention), windows packed per image, block mask"
            built = {}
            for name, build in impls.items():
                try:
                    built[name] = build(size, shift, device)
                except Exception as error:  # noqa: BLE001 - flex needs a working inductor
                    notes[name] = f"skipped: {type(error).__name__}: {error}"[:200]
            for dtype in dtypes:
                for mode in ("fwd", "fwd+bwd"):
                    inputs = _inputs(batch, size, heads, dtype, device, grad=mode != "fwd")
                    yield from _case_rows(case, built, notes, inputs, mode, device)
    stripes = CSWIN_T_STRIPES[4:5] if quick else CSWIN_T_STRIPES
    for stage, size, heads, window in stripes:
        case = f"cswin_t.s{stage} b{batch} {size}x{size}x{heads}h d{HEAD_DIM} stripe{window[0]}x{window[1]}"
        built = {
            "cswin_matmul": cswin_matmul(window),
            "reference": lambda q, k, v, rpb, window=window: window_attention_reference(q, k, v, window),
        }
        notes = {"cswin_matmul": "baseline: official CSWin stripes, (stripes, heads, N, N) scores", "reference": ""}
        if on_cuda:
            built["triton"] = lambda q, k, v, rpb, window=window: window_attention(q, k, v, window)
            notes["triton"] = ""
        for dtype in dtypes:
            for mode in ("fwd", "fwd+bwd"):
                q, k, v, _ = _inputs(batch, size, heads, dtype, device, grad=mode != "fwd")
                yield from _case_rows(case, built, notes, (q, k, v, None), mode, device)


def _case_rows(case: str, built: dict, notes: dict, inputs, mode: str, device) -> list[dict]:
    """One row per implementation named in ``notes``, the baseline (the first) first."""
    rows, baseline_ms = [], float("nan")
    for name, note in notes.items():
        ms, peak_mb = float("nan"), float("nan")
        if name in built:
            try:
                ms, peak_mb = time_attention(built[name], inputs, mode, device)
                if name == "triton":
                    note = autotuned_choice(fwd=window_module._fwd_tuned, bwd=window_module._bwd_tuned)
            except Exception as error:  # noqa: BLE001 - report the failure in the table, keep going
                note = f"failed: {type(error).__name__}: {error}"[:200]
        if not rows:
            baseline_ms = ms
        rows.append(result_row("window_attention", case, inputs[0].dtype, mode, name, ms, peak_mb, baseline_ms, note))
    return rows


if __name__ == "__main__":
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for row in run(target, quick=target.type == "cpu"):
        print(row)
