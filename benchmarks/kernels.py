"""Benchmark the zoo's kernels against their baselines; writes a CSV and prints a table.

    python benchmarks/kernels.py                 # every op; full shapes on CUDA, quick ones on CPU
    python benchmarks/kernels.py --ops window_attention depthwise_conv --quick
    python benchmarks/kernels.py --budget-s 90   # stop starting new cases after 90 s
    python benchmarks/kernels.py --flex          # add the FlexAttention baselines (compiles per shape)

Each op's cases live in ``benchmarks/bench_<op>.py`` (a ``run(device, quick)`` yielding rows);
ratios are always against a baseline measured in the same run. Each row is appended to
``benchmarks/results/kernels-<device name>.csv`` as soon as it is measured, so a run cut short
keeps what it measured; with ``--budget-s`` the ops and cases left when the time is up are listed
as skipped.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import re
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
OPS = ("window_attention", "neighborhood_attention", "depthwise_conv", "routing_attention")
COLUMNS = ("op", "case", "dtype", "mode", "impl", "ms", "peak_mb", "speedup", "notes")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes (the default on CPU)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget: no case starts after it is spent")
    parser.add_argument("--flex", action="store_true", help="also time FlexAttention (torch.compile per shape)")
    parser.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/kernels-<device>.csv)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    quick = args.quick or device.type != "cuda"
    if args.flex:
        os.environ["ZOO_BENCH_FLEX"] = "1"
    sys.path.insert(0, str(HERE))
    deadline = time.monotonic() + (args.budget_s if args.budget_s is not None else float("inf"))

    name = device_name(device)
    out = args.out or HERE / "results" / f"kernels-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    with open(out, "w", newline="") as f:
        f.write(f"# device: {name}; torch {torch.__version__}; quick={quick}\n")
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for op in args.ops:
            if time.monotonic() > deadline:
                skipped.append(op)
                continue
            for row in importlib.import_module(f"bench_{op}").run(device, quick):
                writer.writerow(row)
                f.flush()
                rows.append(row)
                if time.monotonic() > deadline:
                    skipped.append(f"{op}: the cases after {row['case']} {row['mode']}")
                    break

    table = Table(title=f"kernels on {name} (quick={quick})")
    shown = COLUMNS[:-1]  # the notes stay in the CSV
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(f"{row.get(c):.3g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in shown))
    Console(width=max(Console().width, 140)).print(table)
    for line in skipped:
        print(f"skipped for time: {line}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
