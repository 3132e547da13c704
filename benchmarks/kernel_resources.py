"""Compile the zoo's Triton kernels for a GPU architecture, without a GPU, and report their resources.

    python benchmarks/kernel_resources.py              # sm_90 (H100), writes results/kernel-resources-sm90.csv
    python benchmarks/kernel_resources.py --arch 80    # sm_80 (A100)
    python benchmarks/kernel_resources.py --all-configs  # also the configs each kernel's pruning drops

Each op runs forward and backward at its benchmark shapes (CPU tensors, two images) through its
real launch code, with Triton's driver swapped for one that compiles to a cubin and records the
launch instead of running it. Every autotuner config that the kernel's pruning keeps for the call
(layout, dtype) is compiled. For each kernel and config the
report gives ptxas's registers and stack bytes (where registers spill) per thread, the shared
memory, and the resident CTAs and warps per SM these allow. This is what limits occupancy; it says
nothing about speed, which only ``benchmarks/kernels.py`` on a GPU measures.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest import mock

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: the interpreter has no cubin

import torch
import triton
from rich.console import Console
from rich.table import Table
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.autotuner import Autotuner
from triton.runtime.cache import get_cache_manager
from triton.runtime.driver import driver

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_depthwise_conv  # noqa: E402
import bench_neighborhood_attention  # noqa: E402
import bench_routing_attention  # noqa: E402
import bench_window_attention  # noqa: E402

from zoo import kernels  # noqa: E402

COLUMNS = (
    "op",
    "cases",
    "dtype",
    "kernel",
    "config",
    "warps",
    "stages",
    "registers",
    "stack_bytes",
    "shared_bytes",
    "ctas_per_sm",
    "warps_per_sm",
    "limited_by",
)


@dataclass(frozen=True)
class SMLimits:
    """Per-SM resources of an architecture (CUDA programming guide, compute capability table)."""

    registers: int = 65536
    threads: int = 2048
    ctas: int = 32
    shared_bytes: int = 233472  # 228 KiB on sm_90; 164 KiB on sm_80
    reserved_shared_per_cta: int = 1024

    def occupancy(self, registers: int, warps: int, shared: int) -> tuple[int, str]:
        """Resident CTAs per SM and the resource that bounds them (registers are allocated per warp in 256s)."""
        per_warp = -(-registers * 32 // 256) * 256
        bounds = {
            "registers": self.registers // (per_warp * warps),
            "threads": self.threads // (32 * warps),
            "ctas": self.ctas,
            "shared": self.shared_bytes // (shared + self.reserved_shared_per_cta),
        }
        resource = min(bounds, key=bounds.get)
        return bounds[resource], resource


ARCH_LIMITS = {80: SMLimits(shared_bytes=167936), 90: SMLimits()}


class _CompileOnlyDriver(DriverBase):
    """A Triton driver for a GPU that is not there: kernels compile to cubins and launches are recorded."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)
        self.launches: list[dict] = []
        self.utils = self

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    def get_benchmarker(self):
        """Every autotuner config "takes" the same time, so each one is compiled and the first is kept."""

        def bench(fn, quantiles=None, **_):
            fn()
            return [1.0] * len(quantiles) if quantiles else 1.0

        return bench

    def get_empty_cache_for_benchmark(self):
        return torch.empty(0)

    def clear_cache(self, cache) -> None:
        pass

    def get_device_properties(self, device) -> dict:
        limits = ARCH_LIMITS[self.target.arch]
        return {"max_shared_mem": limits.shared_bytes - limits.reserved_shared_per_cta, "multiprocessor_count": 1}

    def load_binary(self, name, cubin, shared, device):
        return None, None, 0, 0, 1024  # no module, no function: nothing is ever run

    def launcher_cls(self, src, metadata):
        cubin = get_cache_manager(metadata.hash).get_file(f"{metadata.name}.cubin")
        registers, stack = _cubin_usage(Path(cubin).read_bytes())

        def launch(*_):
            self.launches.append(
                dict(kernel=metadata.name, src=src, metadata=metadata, registers=registers, stack_bytes=stack)
            )

        return launch


def _cubin_usage(cubin: bytes) -> tuple[int, int]:
    """Registers per thread and stack bytes per thread (where ptxas spills), from ``cuobjdump``."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        report = subprocess.run(
            [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", report)
    if match is None:
        raise RuntimeError(f"cuobjdump reported no resource usage:\n{report}")
    return int(match.group(1)), int(match.group(2))


# Two images, not one: Triton specializes integer arguments equal to 1, which one image would make of
# some window and tile counts.
BATCH = 2


def _qkv(batch, size, heads, head_dim, dtype):
    return [torch.randn(batch, size, size, heads, head_dim, dtype=dtype, requires_grad=True) for _ in range(3)]


def _window_cases(dtype):
    window = bench_window_attention.WINDOW
    for stage, size, heads in bench_window_attention.SWIN_T_STAGES:
        shift = window // 2 if size > window else 0
        rpb = torch.randn((2 * window - 1) ** 2, heads, dtype=dtype, requires_grad=True)
        q, k, v = _qkv(BATCH, size, heads, bench_window_attention.HEAD_DIM, dtype)
        yield f"swin_t.s{stage}", partial(kernels.window_attention, q, k, v, window, shift, rpb)


def _neighborhood_cases(dtype):
    kernel = bench_neighborhood_attention.KERNEL
    for stage, size, heads, dilation in bench_neighborhood_attention.NAT_T_CASES:
        rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, dtype=dtype, requires_grad=True)
        q, k, v = _qkv(BATCH, size, heads, bench_neighborhood_attention.HEAD_DIM, dtype)
        yield f"nat_t.s{stage} d{dilation}", partial(kernels.neighborhood_attention2d, q, k, v, kernel, dilation, rpb)


def _depthwise_cases(dtype):
    for family, _, channels, size, kernel, dilation in bench_depthwise_conv.CASES:
        for layout, memory_format in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
            x = torch.randn(BATCH, channels, size, size, dtype=dtype).to(memory_format=memory_format)
            weight = torch.randn(channels, 1, *kernel, dtype=dtype, requires_grad=True)
            bias = torch.randn(channels, dtype=dtype, requires_grad=True)
            name = f"{family} {kernel[0]}x{kernel[1]}" + (f" d{dilation}" if dilation > 1 else "") + f" {layout}"
            yield name, partial(kernels.depthwise_conv2d, x.requires_grad_(), weight, bias, dilation=dilation)


def _routing_cases(dtype):
    for name, _, size, channels, n_win, topk in bench_routing_attention.CASES:
        q, k, v = _qkv(BATCH, size, channels // 32, 32, dtype)
        yield f"biformer_t.{name}", partial(kernels.routing_attention, q, k, v, n_win, topk)


CASES = {
    "window_attention": _window_cases,
    "neighborhood_attention": _neighborhood_cases,
    "depthwise_conv": _depthwise_cases,
    "routing_attention": _routing_cases,
}
_KERNEL_MODULES = [
    sys.modules[f"zoo.kernels.{name}"]
    for name in ("window_attention", "neighborhood_attention", "depthwise_conv", "routing_attention")
]


_TILE_PARAMETERS = ("BLOCK", "N_PAD", "D_PAD", "TILE", "KC")


def _config(src) -> str:
    """The block-size constexprs a kernel was compiled with."""
    names = [src.fn.arg_names[path[0]] for path in src.constants]
    blocks = dict(zip(names, src.constants.values()))
    return " ".join(f"{k}={v}" for k, v in sorted(blocks.items()) if k.startswith(_TILE_PARAMETERS))


def collect(arch: int, ops, dtypes, match: str = "", all_configs: bool = False) -> list[dict]:
    compile_only = _CompileOnlyDriver(arch)
    limits = ARCH_LIMITS[arch]
    rows: dict[tuple, dict] = {}
    with ExitStack() as stack:
        stack.callback(driver.set_active, driver._active)  # None: Triton picks the real driver again lazily
        driver.set_active(compile_only)
        for module in _KERNEL_MODULES:  # run the Triton path on CPU tensors; nothing is executed
            stack.enter_context(mock.patch.object(module, "use_triton", lambda *tensors, faster=True: True))
            for tuner in vars(module).values():  # keep the stand-in timings out of Triton's on-disk tuning cache
                if isinstance(tuner, Autotuner):
                    stack.enter_context(mock.patch.object(tuner, "cache_results", False))
                    if all_configs:  # the candidates the pruning drops too: the evidence it is drawn from
                        stack.enter_context(mock.patch.object(tuner, "early_config_prune", None))
        for op in ops:
            for dtype in dtypes:
                for case, call in CASES[op](dtype):
                    if match not in case:
                        continue
                    compile_only.launches.clear()
                    call().float().sum().backward()
                    for launch in compile_only.launches:
                        metadata = launch["metadata"]
                        key = (op, dtype, metadata.hash)
                        if key in rows:  # the same compiled kernel at another shape
                            if case not in rows[key]["cases"]:
                                rows[key]["cases"].append(case)
                            continue
                        ctas, limited_by = limits.occupancy(launch["registers"], metadata.num_warps, metadata.shared)
                        rows[key] = dict(
                            op=op, cases=[case], dtype=str(dtype).removeprefix("torch."),
                            kernel=launch["kernel"].strip("_"), config=_config(launch["src"]),
                            warps=metadata.num_warps, stages=metadata.num_stages, registers=launch["registers"],
                            stack_bytes=launch["stack_bytes"], shared_bytes=metadata.shared, ctas_per_sm=ctas,
                            warps_per_sm=ctas * metadata.num_warps, limited_by=limited_by,
                        )  # fmt: skip
    for row in rows.values():
        row["cases"] = " ".join(row["cases"])
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, choices=sorted(ARCH_LIMITS), default=90, help="compute capability")
    parser.add_argument("--ops", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"), default=["float32", "bfloat16"]
    )
    parser.add_argument("--match", default="", help="only the cases whose name contains this")
    parser.add_argument("--all-configs", action="store_true", help="also the configs the kernels' pruning drops")
    parser.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/kernel-resources-sm<arch>.csv)")
    args = parser.parse_args(argv)

    rows = collect(args.arch, args.ops, [getattr(torch, d) for d in args.dtypes], args.match, args.all_configs)
    out = args.out or HERE / "results" / f"kernel-resources-sm{args.arch}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        f.write(f"# sm_{args.arch}; triton {triton.__version__}; torch {torch.__version__}; compiled, not run\n")
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    table = Table(title=f"Triton kernels compiled for sm_{args.arch}: resources per thread and per SM")
    shown = [c for c in COLUMNS if c not in ("stages", "limited_by")]
    for column in shown:
        table.add_column(column, overflow="fold", no_wrap=column != "cases")
    for row in rows:
        table.add_row(*(str(row[c]) for c in shown))
    Console(width=max(Console().width, 200)).print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
