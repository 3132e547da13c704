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


def _models_benchmark(tmp_path, *args):
    out = tmp_path / "models.csv"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "models.py"), "--quick", "--out", str(out),
                             *args], check=True, timeout=600, capture_output=True, text=True)
    lines = out.read_text().splitlines()
    return lines[0], list(csv.DictReader(lines[1:])), result.stdout


def test_models_benchmark_times_every_implementation_side_by_side_and_plots(tmp_path):
    header, rows, _ = _models_benchmark(tmp_path, "--models", "zoo_swin_tiny", "zoo_van_b0")
    assert header.startswith("# device: cpu")
    measured = {(row["model"], row["impl"], row["mode"]) for row in rows}
    # Swin has a timm counterpart; VAN does not. On CPU there is no Triton path to time.
    assert measured == {(model, impl, mode) for mode in ("train", "infer")
                        for model, impl in (("zoo_swin_tiny", "timm"), ("zoo_swin_tiny", "reference"),
                                            ("zoo_van_b0", "reference"))}
    for row in rows:
        assert float(row["ms"]) > 0
        img_per_s = int(row["batch"]) / float(row["ms"]) * 1e3  # the CSV keeps 4 significant digits
        assert abs(float(row["img_per_s"]) - img_per_s) < 2e-3 * img_per_s
        if row["impl"] == "reference":
            assert float(row["vs_reference"]) == 1.0
    swin_reference = next(r for r in rows if r["model"] == "zoo_swin_tiny" and r["impl"] == "reference")
    swin_timm = next(r for r in rows if r["impl"] == "timm" and r["mode"] == swin_reference["mode"])
    ratio = float(swin_timm["ms"]) / float(swin_reference["ms"])
    assert abs(float(swin_reference["vs_timm"]) - ratio) < 2e-3 * ratio

    png = tmp_path / "models.png"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "plot_models.py"), str(tmp_path / "models.csv"),
                    "--out", str(png)], check=True, timeout=120, capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_benchmark_reports_what_the_budget_left_out(tmp_path):
    _, rows, stdout = _models_benchmark(tmp_path, "--models", "zoo_van_b0", "zoo_not_a_model", "--budget-s", "0")
    assert rows and all(row["notes"].startswith("skipped:") and not row["ms"] for row in rows)
    assert "zoo_van_b0 reference eager train" in stdout and "zoo_not_a_model: not registered" in stdout

