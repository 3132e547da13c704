"""Timing, peak-memory and result-row helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import torch


def measure(fn: Callable[[], object], device: torch.device | str, warmup: int = 3, iters: int = 10):
    """Median wall time of ``fn()`` in milliseconds and its peak extra memory in MiB.

    On CUDA the time comes from CUDA events and the memory from the allocator's peak statistic
    (measured over one extra call after the timed ones); on CPU the memory is reported as NaN.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        peak_mb = float("nan")
    times.sort()
    return times[len(times) // 2], peak_mb


def autotuned_choice(**tuners) -> str:
    """The configs Triton's autotuners last picked, e.g. ``fwd: warps=4 stages=2``; empty before any pick."""
    picks = []
    for name, tuner in tuners.items():
        best = getattr(tuner, "best_config", None)
        if best is not None:
            blocks = "".join(f" {k}={v}" for k, v in best.kwargs.items())
            picks.append(f"{name}:{blocks} warps={best.num_warps} stages={best.num_stages}")
    return "; ".join(picks)


def flex_enabled() -> bool:
    """Whether the FlexAttention baselines run (``kernels.py --flex``): each compiles per shape,
    dtype and direction, minutes on a fresh machine, so they are opt-in."""
    return os.environ.get("ZOO_BENCH_FLEX", "0") not in ("", "0")


@contextlib.contextmanager
def forced_kernels(choice: str) -> Iterator[None]:
    """Run the zoo's ops on ``choice`` (``ZOO_KERNELS``: ``auto``, ``triton`` or ``reference``) inside the block."""
    previous = os.environ.get("ZOO_KERNELS")
    os.environ["ZOO_KERNELS"] = choice
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ZOO_KERNELS", None)
        else:
            os.environ["ZOO_KERNELS"] = previous


def time_attention(attention: Callable, inputs: tuple, mode: str, device: torch.device):
    """:func:`measure` of ``attention(q, k, v, rpb)`` for ``inputs = (q, k, v, rpb)``: the forward pass
    without autograd (``mode="fwd"``), or forward and the gradients of the inputs that require one."""
    q, k, v, rpb = inputs
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return attention(q, k, v, rpb)
    else:
        leaves = [t for t in (q, k, v, rpb) if t is not None and t.requires_grad]  # CSWin stripes have no bias
        grad_out = torch.randn(q.shape, device=q.device, dtype=q.dtype)

        def step():
            return torch.autograd.grad(attention(q, k, v, rpb), leaves, grad_out, allow_unused=True)

    on_cuda = device.type == "cuda"
    return measure(step, device, warmup=3 if on_cuda else 1, iters=10 if on_cuda else 3)


def result_row(op: str, case: str, dtype: torch.dtype, mode: str, impl: str, ms: float, peak_mb: float,
               baseline_ms: float, notes: str) -> dict:
    """One row of a kernel benchmark's table (``kernels.py``'s columns); ``speedup`` is ``baseline_ms / ms``
    (NaN without a baseline time)."""
    speedup = baseline_ms / ms if baseline_ms else float("nan")
    return dict(op=op, case=case, dtype=str(dtype).removeprefix("torch."), mode=mode, impl=impl, ms=ms,
                peak_mb=peak_mb, speedup=speedup, notes=notes)
