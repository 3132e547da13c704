"""The kernel benchmark driver runs on CPU (quick shapes, reference path) and writes its CSV."""

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_kernel_benchmarks_write_a_row_per_op(tmp_path):
    out = tmp_path / "kernels.csv"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernels.py"), "--quick", "--out", str(out)],
                   check=True, timeout=600, capture_output=True)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# device: cpu")
    rows = list(csv.DictReader(lines[1:]))
    ops = {row["op"] for row in rows}
    assert ops == {"window_attention", "neighborhood_attention", "depthwise_conv", "routing_attention"}
    assert all(float(row["ms"]) > 0 for row in rows)
    baselines = [row for row in rows if float(row["speedup"]) == 1.0]
    assert baselines, "every case is measured against a baseline in the same run"
