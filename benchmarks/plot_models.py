"""Plot a whole-model benchmark CSV: throughput against ImageNet top-1, and the kernels' speedup.

    python benchmarks/plot_models.py benchmarks/results/models-nvidia-h200.csv

Writes ``<csv stem>.png`` beside the CSV with two panels:

* train throughput (img/s, the fastest eager zoo path) against the reported ImageNet-1k top-1 of
  the model's best released 224-class weight in the manifest (models without one are left out);
* train and inference speedup of the Triton path over the reference path, per model (present only
  where the CSV has Triton rows, i.e. for GPU runs).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zoo.weights import iter_weights  # noqa: E402


def read_rows(path: Path) -> tuple[str, list[dict]]:
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("# ") if lines and lines[0].startswith("#") else ""
    rows = [row for row in csv.DictReader(line for line in lines if not line.startswith("#")) if row["ms"]]
    return header, rows


def best_top1() -> dict[str, float]:
    """The highest reported top-1 per model over its released ImageNet-1k weights."""
    top1: dict[str, float] = {}
    for _, entry in iter_weights():
        if entry.get("top1") is not None and entry.get("num_classes", 1000) == 1000:
            top1[entry["model"]] = max(top1.get(entry["model"], 0.0), float(entry["top1"]))
    return top1


def plot(path: Path, out: Path) -> Path:
    header, rows = read_rows(path)
    eager_train = [r for r in rows if r["compiled"] == "eager" and r["mode"] == "train" and r["impl"] != "timm"]
    throughput: dict[str, float] = {}
    for row in eager_train:
        label = f"{row['model']} {row['img_size']}"
        throughput[label] = max(throughput.get(label, 0.0), float(row["img_per_s"]))
    top1 = best_top1()

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    for label, img_per_s in throughput.items():
        model = label.split()[0]
        if model in top1:
            left.scatter(img_per_s, top1[model])
            left.annotate(label.removeprefix("zoo_"), (img_per_s, top1[model]), fontsize=7)
    left.set_xscale("log")
    left.set(xlabel="train throughput (img/s, eager)", ylabel="ImageNet-1k top-1 (%, reported)",
             title="throughput vs accuracy")

    speedups = {}
    for row in rows:
        if row["impl"] == "triton" and row["compiled"] == "eager" and row["vs_reference"] not in ("", "nan"):
            speedups.setdefault(f"{row['model'].removeprefix('zoo_')} {row['img_size']}", {})[row["mode"]] = float(
                row["vs_reference"]
            )
    if speedups:
        labels = list(speedups)
        positions = range(len(labels))
        for offset, mode in ((-0.2, "train"), (0.2, "infer")):
            right.barh([p + offset for p in positions], [speedups[k].get(mode, 0.0) for k in labels], height=0.4,
                       label=mode)
        right.set_yticks(list(positions), labels, fontsize=7)
        right.axvline(1.0, color="black", linewidth=0.8)
        right.legend()
    else:
        right.text(0.5, 0.5, "no Triton rows (CPU run)", ha="center", va="center", transform=right.transAxes)
    right.set(xlabel="Triton path / reference path (speedup)", title="kernel speedup per model")
    fig.suptitle(header, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="a CSV written by benchmarks/models.py")
    parser.add_argument("--out", type=Path, help="PNG path (default: beside the CSV)")
    args = parser.parse_args(argv)
    print(f"wrote {plot(args.csv, args.out or args.csv.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
