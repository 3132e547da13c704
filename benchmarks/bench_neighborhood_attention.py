"""2-D neighborhood attention at the NAT-T stage shapes (224x224, kernel 7) and DiNAT dilations.

Implementations, all on the same ``(B, H, W, heads, head_dim)`` q, k, v (slices of one qkv tensor)
and an fp32 relative position bias ``(heads, 13, 13)`` (as under AMP):

* ``reference`` (the baseline): ``neighborhood_attention2d_reference``, the PyTorch path of
  ``zoo.kernels`` (neighbours gathered per chunk of rows, softmax, weighted sum).
* ``triton``: ``neighborhood_attention2d`` on CUDA tensors (fused forward and backward).
* ``natten``: NATTEN's fused ``natten.na2d`` when ``natten`` is importable. It has no relative
  position bias since 0.20, so it is compared with ``triton_no_rpb``, our kernel without the bias.
* ``flex``: ``torch.compile(flex_attention)`` on the flattened map with a NATTEN-style block mask
  (window clamped at the borders, dilation sub-grids) and the bias as a ``score_mod``.

On CPU (``quick``) only ``reference`` runs, at a small batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from _timing import autotuned_choice, flex_enabled, result_row, time_attention

from zoo.kernels import neighborhood_attention as na
from zoo.kernels.neighborhood_attention import neighborhood_attention2d, neighborhood_attention2d_reference

KERNEL = 7
HEAD_DIM = 32
# NAT-T at 224x224: (stage, map size, heads, dilation); the dilated rows are DiNAT-T's global layers.
NAT_T_CASES = [(1, 56, 2, 1), (2, 28, 4, 1), (3, 14, 8, 1), (4, 7, 16, 1), (1, 56, 2, 8), (2, 28, 4, 4)]
QUICK_CASES = [(3, 14, 8, 1), (2, 28, 4, 4)]
IMPLS = ("reference", "triton", "triton_no_rpb", "natten", "flex")


def zoo_reference(size: int, dilation: int, device):
    return lambda q, k, v, rpb: neighborhood_attention2d_reference(q, k, v, KERNEL, dilation, rpb)


def zoo_triton(size: int, dilation: int, device):
    return lambda q, k, v, rpb: neighborhood_attention2d(q, k, v, KERNEL, dilation, rpb)


def zoo_triton_no_rpb(size: int, dilation: int, device):
    return lambda q, k, v, rpb: neighborhood_attention2d(q, k, v, KERNEL, dilation)


def natten_fused(size: int, dilation: int, device):
    """NATTEN's fused kernel (heads-last layout like ours), without the bias it no longer has.

    Its kernels want contiguous inputs; the copies of the q, k, v slices are part of the time.
    """
    import natten

    def attention(q, k, v, rpb):
        q, k, v = (t.contiguous() for t in (q, k, v))
        return natten.na2d(q, k, v, kernel_size=KERNEL, dilation=dilation)

    return attention


def flex(size: int, dilation: int, device):
    """FlexAttention over the flattened ``size x size`` map with NATTEN's windows as a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    length = size * size
    half = KERNEL // 2

    def sub_grid(index):
        """(sub-grid index, residue, window start) of a position along one axis."""
        residue, sub = index % dilation, index // dilation
        sub_length = (size - residue + dilation - 1) // dilation
        start = torch.minimum(torch.clamp(sub - half, min=0), sub_length - KERNEL)
        return sub, residue, start

    def in_window(q_pos, kv_pos):
        q_sub, q_res, start = sub_grid(q_pos)
        kv_sub, kv_res, _ = sub_grid(kv_pos)
        return (q_res == kv_res) & (kv_sub >= start) & (kv_sub < start + KERNEL)

    def natten_mask(b, h, q_idx, kv_idx):
        return in_window(q_idx // size, kv_idx // size) & in_window(q_idx % size, kv_idx % size)

    block_mask = create_block_mask(natten_mask, None, None, length, length, device=device)

    def attention(q, k, v, rpb):
        b, h, w, heads, d = q.shape

        def relative_bias(score, b, head, q_idx, kv_idx):
            row = (kv_idx // size) // dilation - (q_idx // size) // dilation + KERNEL - 1
            col = (kv_idx % size) // dilation - (q_idx % size) // dilation + KERNEL - 1
            row, col = row.clamp(0, 2 * KERNEL - 2), col.clamp(0, 2 * KERNEL - 2)  # masked pairs fall outside
            return score + rpb[head, row, col].to(score.dtype)

        flat = [t.permute(0, 3, 1, 2, 4).reshape(b, heads, h * w, d) for t in (q, k, v)]
        out = compiled(*flat, score_mod=relative_bias, block_mask=block_mask)
        return out.reshape(b, heads, h, w, d).permute(0, 2, 3, 1, 4)

    return attention


BUILDERS = dict(
    reference=zoo_reference, triton=zoo_triton, triton_no_rpb=zoo_triton_no_rpb, natten=natten_fused, flex=flex
)


def _inputs(batch: int, size: int, heads: int, dtype: torch.dtype, device, grad: bool):
    """q, k, v as slices of a qkv tensor (as a Linear makes them) and an fp32 bias table (as under AMP)."""
    qkv = torch.randn(batch, size, size, 3, heads, HEAD_DIM, device=device, dtype=dtype)
    q, k, v = (t.detach().requires_grad_(grad) for t in qkv.unbind(3))
    rpb = (0.02 * torch.randn(heads, 2 * KERNEL - 1, 2 * KERNEL - 1, device=device)).requires_grad_(grad)
    return q, k, v, rpb


def _natten_available() -> bool:
    try:
        import natten
    except ImportError:
        return False
    return hasattr(natten, "na2d")


def run(device: torch.device, quick: bool) -> Iterator[dict]:
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    batch = 2 if quick else 64
    cases = QUICK_CASES if quick else NAT_T_CASES
    dtypes = [torch.float32, torch.bfloat16] if on_cuda else [torch.float32]
    impls = ["reference"]
    if on_cuda:
        impls += ["triton", "triton_no_rpb", "natten"] if _natten_available() else ["triton"]
        impls += ["flex"] if flex_enabled() else []

    for stage, size, heads, dilation in cases:
        case = f"nat_t.s{stage} b{batch} {size}x{size}x{heads}h d{HEAD_DIM} k{KERNEL} dil{dilation}"
        built, build_errors = {}, {}
        for name in impls:
            try:
                built[name] = BUILDERS[name](size, dilation, device)
            except Exception as error:  # noqa: BLE001 - flex needs a working inductor
                build_errors[name] = f"skipped: {type(error).__name__}: {error}"[:200]
        for dtype in dtypes:
            for mode in ("fwd", "fwd+bwd"):
                yield from _case_rows(case, built, build_errors, batch, size, heads, dtype, mode, device)


def _case_rows(case, built, build_errors, batch, size, heads, dtype, mode, device) -> list[dict]:
    inputs = _inputs(batch, size, heads, dtype, device, grad=mode != "fwd")
    timings = {}
    for name in IMPLS:
        if name not in built and name not in build_errors:
            continue
        ms, peak_mb, notes = float("nan"), float("nan"), build_errors.get(name, "")
        if name in built:
            try:
                ms, peak_mb = time_attention(built[name], inputs, mode, device)
                if name == "triton":
                    notes = autotuned_choice(fwd=na._fwd_tuned, dq=na._bwd_dq_tuned, dkdv=na._bwd_dkdv_tuned)
            except Exception as error:  # noqa: BLE001 - report the failure in the table, keep going
                notes = f"failed: {type(error).__name__}: {error}"[:200]
        timings[name] = (ms, peak_mb, notes)

    baseline_ms = timings["reference"][0]
    default_notes = {
        "reference": "baseline: zoo reference path (gather per row chunk)",
        "triton_no_rpb": "without the bias, to compare with natten",
        "flex": "torch.compile(flex_attention), NATTEN-style block mask, bias as score_mod",
    }
    if "natten" in timings and "triton_no_rpb" in timings:
        ratio = timings["natten"][0] / timings["triton_no_rpb"][0]
        default_notes["natten"] = f"natten.na2d fused, no bias; natten_ms / triton_no_rpb_ms = {ratio:.2f}"
    rows = []
    for name, (ms, peak_mb, notes) in timings.items():
        notes = notes or default_notes.get(name, "")
        rows.append(result_row("neighborhood_attention", case, dtype, mode, name, ms, peak_mb, baseline_ms, notes))
    return rows


if __name__ == "__main__":
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for row in run(target, quick=target.type == "cpu"):
        print(row)
