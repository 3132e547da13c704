"""Depthwise convolution at the kernel sizes and stage shapes of the zoo's convolutional families.

Implementations, on the same ``x`` (NCHW or channels_last), ``weight`` and ``bias``:

* ``torch`` (the baseline): ``F.conv2d(..., groups=C)`` with ``cudnn.benchmark`` on. NCHW mostly
  runs aten's native depthwise kernel (cuDNN only for 3x3/5x5 in half precision), channels_last
  runs cuDNN.
* ``triton``: ``zoo.kernels.depthwise_conv2d`` on CUDA tensors; its notes give the largest error
  of the forward output against float64 (on the first two images) and the autotuned forward tiles.

On CPU (``quick``) only the reference path (which is ``F.conv2d``) runs, at tiny shapes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from _timing import forced_kernels, measure, result_row

import zoo.kernels.depthwise_conv as dwconv

# (family and stage, batch, channels, map size, kernel, dilation)
CASES = [
    ("convnext.s1", 64, 128, 56, (3, 3), 1),
    ("van.s1 lka", 64, 128, 56, (5, 5), 1),
    ("convnext.s1", 64, 128, 56, (7, 7), 1),
    ("van.s1 lka", 64, 128, 56, (7, 7), 3),
    ("unireplknet.s3", 64, 320, 14, (13, 13), 1),
    ("replknet.s3", 64, 512, 14, (27, 27), 1),
    ("replknet.s1", 64, 128, 56, (31, 31), 1),
    ("slak.s1", 64, 128, 56, (51, 51), 1),
    ("slak.s1", 64, 128, 56, (51, 5), 1),
    ("slak.s1", 64, 128, 56, (5, 51), 1),
]
QUICK_CASES = [
    ("convnext.s1", 2, 16, 16, (7, 7), 1),
    ("van.s1 lka", 2, 16, 16, (7, 7), 3),
    ("replknet.s1", 2, 16, 16, (31, 31), 1),
    ("slak.s1", 2, 16, 16, (51, 5), 1),
]


BASELINE_NOTE = {"cuda": ", cudnn.benchmark=True"}


def torch_conv(x, weight, bias, dilation):
    return F.conv2d(x, weight, bias, padding="same", dilation=dilation, groups=x.shape[1])


def zoo_conv(x, weight, bias, dilation):
    return dwconv.depthwise_conv2d(x, weight, bias, padding="same", dilation=dilation)


def _inputs(batch, channels, size, kernel, dtype, channels_last, device, grad):
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, *kernel, device=device, dtype=dtype) / (kernel[0] * kernel[1]) ** 0.5
    bias = torch.randn(channels, device=device, dtype=dtype)
    return [t.requires_grad_(grad) for t in (x, weight, bias)]


def _timed(conv, inputs, dilation, mode, device):
    x, weight, bias = inputs
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return conv(x, weight, bias, dilation)
    else:
        grad_y = torch.randn_like(x)

        def step():
            return torch.autograd.grad(conv(x, weight, bias, dilation), (x, weight, bias), grad_y)

    return measure(step, device, warmup=3, iters=10 if device.type == "cuda" else 3)


def _forward_error(inputs, dilation) -> float:
    """Largest error of the Triton forward against float64 ``F.conv2d`` on the first two images."""
    x, weight, bias = (t.detach() for t in inputs)
    x = x[:2]
    with torch.no_grad():
        expected = torch_conv(x.double(), weight.double(), bias.double(), dilation)
        return (zoo_conv(x, weight, bias, dilation).double() - expected).abs().max().item()


def _triton_notes(inputs, dilation, mode) -> str:
    notes = []
    if mode == "fwd":
        notes.append(f"max_abs_err_vs_fp64={_forward_error(inputs, dilation):.2e}")
    best = getattr(dwconv._fwd_tuned, "best_config", None)
    if best is not None:
        notes.append(f"fwd tiles {best.kwargs} warps={best.num_warps}")
    return "; ".join(notes)


def _case_rows(case, batch, channels, size, kernel, dilation, dtype, channels_last, mode, device, impls):
    inputs = _inputs(batch, channels, size, kernel, dtype, channels_last, device, grad=mode != "fwd")
    rows, baseline_ms = [], None
    for name, (conv, choice) in impls.items():
        ms, peak_mb, notes = float("nan"), float("nan"), ""
        try:
            with forced_kernels(choice):
                ms, peak_mb = _timed(conv, inputs, dilation, mode, device)
                if name == "triton":
                    notes = _triton_notes(inputs, dilation, mode)
        except Exception as error:  # noqa: BLE001 - report the failure in the table, keep going
            notes = f"failed: {type(error).__name__}: {error}"[:200]
        if baseline_ms is None:
            baseline_ms = ms
            notes = notes or f"baseline: F.conv2d(groups=C){BASELINE_NOTE.get(device.type, '')}"
        rows.append(result_row("depthwise_conv", case, dtype, mode, name, ms, peak_mb, baseline_ms, notes))
    return rows


def run(device: torch.device, quick: bool) -> Iterator[dict]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield from _run(torch.device(device), quick)
    finally:
        torch.backends.cudnn.benchmark = previous


def _run(device: torch.device, quick: bool) -> Iterator[dict]:
    on_cuda = device.type == "cuda"
    dtypes = [torch.float32, torch.bfloat16] if on_cuda else [torch.float32]
    impls = {"torch": (torch_conv, "reference")} if on_cuda else {"reference": (zoo_conv, "reference")}
    if on_cuda:
        impls["triton"] = (zoo_conv, "triton")

    for family, batch, channels, size, kernel, dilation in QUICK_CASES if quick else CASES:
        for channels_last in (False, True):
            layout = "nhwc" if channels_last else "nchw"
            dilated = f" d{dilation}" if dilation > 1 else ""
            case = f"{family} b{batch} c{channels} {size}x{size} k{kernel[0]}x{kernel[1]}{dilated} {layout}"
            shape = (batch, channels, size, kernel, dilation)
            for dtype in dtypes:
                for mode in ("fwd", "fwd+bwd"):
                    yield from _case_rows(case, *shape, dtype, channels_last, mode, device, impls)
