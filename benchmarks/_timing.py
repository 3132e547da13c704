"""Timing and peak-memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

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
