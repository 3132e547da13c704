"""Whole-model benchmark: train and inference throughput and peak memory, one variant per family.

    python benchmarks/models.py                                  # CUDA: bf16, eager and compiled
    python benchmarks/models.py --budget-s 180 --prewarm --plot  # what `make bench-gpu` runs
    python benchmarks/models.py --quick --models zoo_swin_tiny   # CPU: tiny models, fp32, eager

Each family's model runs through three implementations, side by side in one process:

* ``triton``: the zoo model as it runs by default on CUDA (``ZOO_KERNELS=auto``: the Triton kernels
  where ``kernels/path_rules.py`` picks them, PyTorch elsewhere);
* ``reference``: the same model on the PyTorch path (``ZOO_KERNELS=reference``);
* ``timm``: timm's own implementation of the family, where timm has one (Swin, SHViT).

A train step is forward + cross-entropy + backward of one batch under bf16 autocast on CUDA (fp32
on CPU); inference is a forward under ``torch.inference_mode``. Each case is timed with
``_timing.measure`` (median of 10 after 3 warm-ups on CUDA, of 3 after 1 on CPU) and its row is
appended to the CSV (``benchmarks/results/models-<device>.csv``) as soon as it is measured, so a
run cut short keeps what it measured. ``--budget-s`` bounds the wall-clock time: a case that would not fit in what is
left is skipped and reported as such. ``--prewarm`` first runs one step of every model in parallel
processes, which fills Triton's and inductor's on-disk caches so that the timed process does not
compile one kernel after another.

``--quick`` (the default on CPU) builds every model at its tiny test size (the registry's
``tiny_kwargs``) with a small batch, so the script itself is exercised by the test suite.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401 - registers the zoo models
from zoo.models import tiny_kwargs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _timing import forced_kernels, measure  # noqa: E402

COLUMNS = (
    "model", "impl", "compiled", "mode", "batch", "img_size", "dtype", "ms", "img_per_s", "peak_mb",
    "vs_reference", "vs_timm", "notes",
)
IMPLS = ("reference", "triton", "timm")


@dataclass(frozen=True)
class Case:
    """One family's benchmark model: the zoo variant, timm's counterpart and the GPU batch / size."""

    model: str
    timm_model: str | None = None
    batch: int = 64
    img_size: int = 224
    folded: bool = False  # re-parameterized (``reparameterize()``) before timing; inference only


# One variant per family (the tiny/small one the families' papers lead with), with the batch the
# earlier H200 measurements used. Families not registered in this checkout are reported and skipped.
CASES = (
    Case("zoo_swin_tiny", "swin_tiny_patch4_window7_224"),
    Case("zoo_swin_tiny", "swin_tiny_patch4_window7_224", batch=8, img_size=896),
    Case("zoo_shvit_s4", "shvit_s4", batch=128, img_size=256),
    Case("zoo_flatten_swin_tiny"),
    Case("zoo_agent_swin_tiny"),
    Case("zoo_cswin_tiny"),
    Case("zoo_nat_tiny"),
    Case("zoo_dinat_tiny"),
    Case("zoo_biformer_tiny"),
    Case("zoo_biformer_tiny", batch=8, img_size=896),
    Case("zoo_van_b1"),
    Case("zoo_hornet_tiny"),
    Case("zoo_hornet_tiny_gf"),
    Case("zoo_parcnetv2_t"),
    Case("zoo_parcnet_s", batch=64, img_size=256),
    Case("zoo_replknet_31b"),
    Case("zoo_replknet_31b", folded=True),
    Case("zoo_unireplknet_t"),
    Case("zoo_unireplknet_t", folded=True),
    Case("zoo_slak_tiny"),
    Case("zoo_slak_tiny", folded=True),
    Case("zoo_gfnet_xs"),
    Case("zoo_gfnet_h_ti"),
    Case("zoo_spectformer_h_s"),
    Case("zoo_affnet_t", batch=64, img_size=256),
    Case("zoo_svt_h_s"),
)
QUICK_BATCH = 2
QUICK_IMG_SIZE = 64


def build(case: Case, impl: str, quick: bool, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The model of ``case`` for ``impl`` on ``device`` and the image size it runs at."""
    if impl == "timm":
        kwargs = _timm_tiny_kwargs(case) if quick else {}
        model = timm.create_model(case.timm_model, **kwargs)
    else:
        kwargs = tiny_kwargs(case.model) if quick else {}
        model = timm.create_model(case.model, **kwargs)
        if case.folded:
            model.eval().reparameterize()
    img_size = kwargs.get("img_size", QUICK_IMG_SIZE) if quick else case.img_size
    img_size = img_size[0] if isinstance(img_size, tuple) else img_size
    return model.to(device), img_size


def _timm_tiny_kwargs(case: Case) -> dict:
    """timm's model at the zoo model's tiny size, where timm accepts the same kwargs (Swin, SHViT)."""
    kwargs = tiny_kwargs(case.model)
    accepted = {"img_size", "embed_dim", "depths", "num_heads", "window_size", "partial_dim", "qk_dim", "depth"}
    return {k: v for k, v in kwargs.items() if k in accepted}


def step_fn(model: torch.nn.Module, mode: str, batch: int, img_size: int, device: torch.device,
            dtype: torch.dtype) -> Callable[[], object]:
    """A zero-argument function running one train step (fwd + loss + bwd) or one inference forward."""
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if mode == "infer":
        model.eval()

        def infer():
            with torch.inference_mode(), autocast:
                return model(images)

        return infer
    model.train()
    targets = torch.randint(0, model.num_classes, (batch,), device=device)

    def train():
        with autocast:
            loss = F.cross_entropy(model(images).float(), targets)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return train


def first_case_estimate(quick: bool, compiled: bool) -> float:
    """Seconds a model's first case is assumed to take (build, compile, warm-up, timing) before one is measured."""
    if quick:
        return 10.0 if compiled else 1.0
    return 60.0 if compiled else 15.0


class Budget:
    """Wall-clock budget: ``fits(estimate_s)`` says whether a case of that cost still fits."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()


class CsvLog:
    """Rows appended and flushed one at a time, under a comment line naming the device."""

    def __init__(self, path: Path, header: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
        self.file.write(f"# {header}\n")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")
        self.writer.writeheader()
        self.file.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def device_label(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def impls_for(case: Case, device: torch.device) -> list[str]:
    """The implementations to time, baselines first: timm's, then the zoo's reference path, then Triton."""
    impls = ["timm"] if case.timm_model else []
    impls.append("reference")
    if device.type == "cuda":
        impls.append("triton")
    return impls


def run_case(case: Case, impl: str, compiled: bool, mode: str, args, device: torch.device, dtype: torch.dtype):
    """Build, optionally compile, and time one (model, impl, mode); returns the row's measured fields."""
    torch.manual_seed(0)
    with forced_kernels("reference" if impl == "reference" else "auto"):
        model, img_size = build(case, impl, args.quick, device)
        batch = args.batch or (QUICK_BATCH if args.quick else case.batch)
        if compiled:
            model = torch.compile(model)
        fn = step_fn(model, mode, batch, img_size, device, dtype)
        warmup, iters = (3, 10) if device.type == "cuda" else (1, 3)
        ms, peak_mb = measure(fn, device, warmup=warmup, iters=iters)
    return dict(batch=batch, img_size=img_size, ms=ms, img_per_s=batch / ms * 1e3, peak_mb=peak_mb)


def prewarm(cases: list[Case], args, workers: int) -> None:
    """One step of every (model, compiled) in parallel processes, to fill Triton's and inductor's disk caches."""
    jobs = []
    for case in (case for case in cases if not case.folded):
        for compiled in args.compiled:
            command = [sys.executable, __file__, "--warm-only", "--models", case.model,
                       "--batch", str(args.batch or case.batch), "--img-size", str(case.img_size)]
            jobs.append(command + (["--compile-only"] if compiled else []))

    def launch(command: list[str]) -> None:
        subprocess.run(command, check=False, capture_output=True, timeout=max(args.budget_s or 600, 60))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(launch, jobs))


def warm_only(args, device: torch.device, dtype: torch.dtype) -> int:
    """The child process of ``prewarm``: one train step and one inference of one model."""
    case = Case(args.models[0], batch=args.batch or 64, img_size=args.img_size)
    with forced_kernels("auto"):
        model, img_size = build(case, "triton", False, device)
        if args.compile_only:
            model = torch.compile(model)
        for mode in ("train", "infer"):
            step_fn(model, mode, case.batch, img_size, device, dtype)()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="zoo model names (default: one per family)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction,
                        help="tiny models at batch 2 (default: on CPU; --no-quick times the real models there)")
    parser.add_argument("--batch", type=int, help="batch size of every case (default: each case's own)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget; cases that no longer fit are skipped")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                        help="also time torch.compile'd models (auto: on CUDA)")
    parser.add_argument("--prewarm", action="store_true", help="compile in parallel processes before timing")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/models-<device>.csv)")
    parser.add_argument("--plot", action="store_true", help="also write the plot (plot_models.py) beside the CSV")
    parser.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--img-size", type=int, default=224, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    args.quick = not on_cuda if args.quick is None else args.quick
    dtype = torch.bfloat16 if on_cuda else torch.float32
    if args.warm_only:
        return warm_only(args, device, dtype)
    args.compiled = [False] + ([True] if args.compile == "yes" or (args.compile == "auto" and on_cuda) else [])

    registered = set(timm.list_models("zoo_*"))
    wanted = args.models or [case.model for case in CASES]
    cases = [case for case in CASES if case.model in wanted and case.model in registered]
    cases += [Case(name) for name in wanted if name in registered and name not in {c.model for c in CASES}]
    if args.quick:  # one tiny instance per model and form: the cases at other sizes would repeat it
        cases = [case for i, case in enumerate(cases)
                 if (case.model, case.folded) not in {(c.model, c.folded) for c in cases[:i]}]
    skipped = [f"{name}: not registered" for name in dict.fromkeys(wanted) if name not in registered]

    budget = Budget(args.budget_s)
    out = args.out or HERE / "results" / f"models-{device_label(device)}.csv"
    log = CsvLog(out, f"device: {device_label(device)}; torch {torch.__version__}; dtype {dtype}; "
                      f"quick={args.quick}")
    if args.prewarm and on_cuda:
        started = time.monotonic()
        prewarm(cases, args, args.workers)
        print(f"prewarm: {time.monotonic() - started:.0f} s for {len(cases)} models")

    cost: dict[str, float] = {}  # the last measured cost of a case per model, the estimate for the next
    for case in cases:
        for compiled in args.compiled:
            for mode in ("infer",) if case.folded else ("train", "infer"):
                baselines: dict[str, float] = {}
                for impl in impls_for(case, device):
                    row = dict(model=case.model + (" (folded)" if case.folded else ""), impl=impl,
                               compiled="compile" if compiled else "eager", mode=mode,
                               dtype=str(dtype).removeprefix("torch."),
                               notes=f"timm's {case.timm_model}" if impl == "timm" else "")
                    key = f"{row['model']}:{case.batch}:{impl}:{compiled}"
                    if not budget.fits(cost.get(key, first_case_estimate(args.quick, compiled))):
                        skipped.append(f"{row['model']} {impl} {row['compiled']} {mode} {case.img_size}px: budget")
                        log.write(row | dict(notes=f"skipped: {budget.left():.0f} s of the budget left"))
                        continue
                    started = time.monotonic()
                    try:
                        row |= run_case(case, impl, compiled, mode, args, device, dtype)
                    except Exception as error:  # noqa: BLE001 - record the failure, keep measuring the rest
                        row |= dict(notes=f"failed: {type(error).__name__}: {error}"[:200])
                    cost[key] = time.monotonic() - started
                    if "ms" in row:
                        baselines[impl] = row["ms"]
                        row["vs_reference"] = baselines.get("reference", float("nan")) / row["ms"]
                        row["vs_timm"] = baselines.get("timm", float("nan")) / row["ms"]
                    log.write(row)
                    print(", ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                                    for k in row), flush=True)
                if on_cuda:
                    torch.cuda.empty_cache()
    log.close()
    for line in skipped:
        print(f"skipped: {line}")
    print(f"wrote {out} ({len(skipped)} skipped)")
    if args.plot:
        from plot_models import plot

        print(f"wrote {plot(out, out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
