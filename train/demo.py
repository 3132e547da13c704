"""``make demo``: train a small zoo model on the built-in digits on the CPU, export it, reload it, predict.

Steps: ``zoo-train`` on scikit-learn's handwritten digits (8x8, upsampled to 32x32) with a two-stage
VAN (large-kernel attention) configuration; export of the best checkpoint in Hub format
(config.json + model.safetensors); reload with ``timm.create_model("local-dir:...")``, checking the
reloaded model gives the same logits; a few validation digits printed with their predicted class.
"""

import argparse
import os
import sys
import time

import timm
import torch

import zoo  # noqa: F401  (registers the zoo models)

from .checkpoint import BEST
from .data import DigitsSource
from .export import export_hub
from .train import run as run_training

DEMO_MODEL = "zoo_van_b0"
DEMO_MODEL_KWARGS = ["embed_dims=(16,32)", "depths=(1,1)", "mlp_ratios=(4,4)"]  # two stages, 28k parameters
DEMO_TRAIN_ARGS = [
    "--dataset", "digits",
    "--img-size", "32",
    "--epochs", "3",
    "--warmup-epochs", "0",
    "--sched-on-updates",
    "--batch-size", "16",
    "--lr", "3e-3",
    "--weight-decay", "0.05",
    "--smoothing", "0.1",
    "--scale", "0.85", "1.0",
    "--ratio", "0.9", "1.1",
    "--hflip", "0",
    "--color-jitter", "0",
    "--train-interpolation", "bilinear",
    "--workers", "0",
    "--device", "cpu",
    "--seed", "0",
]  # fmt: skip


def ascii_digit(pixels):
    """An 8x8 grey image as two-character-wide text."""
    shades = " .:-=+*#%@"
    return ["".join(shades[int(v) * (len(shades) - 1) // 255] * 2 for v in row) for row in pixels]


def show_predictions(model, data_config, count=4):
    """Print ``count`` validation digits next to the model's top prediction."""
    source = DigitsSource("validation")
    transform = timm.data.create_transform(**data_config, is_training=False)
    images = torch.stack([transform(source[i][0].convert("RGB")) for i in range(count)])
    with torch.no_grad():
        probs = model(images).softmax(dim=-1)
    for i in range(count):
        confidence, predicted = probs[i].max(dim=-1)
        label = source.targets[i]
        print(f"\nvalidation digit {i}: label {label}, predicted {predicted.item()} ({confidence.item():.1%})")
        print("\n".join("    " + line for line in ascii_digit(source.pixels[i])))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m zoo.train.demo",
        description=__doc__.splitlines()[0],
        epilog="Other options are passed to zoo-train (e.g. --epochs 5).",
    )
    parser.add_argument("--model", default=DEMO_MODEL, help="model to train (default: a small zoo VAN)")
    parser.add_argument("--output", default="output/demo", help="folder for checkpoints and the export")
    args, extra = parser.parse_known_args(argv)

    train_args = ["--model", args.model, "--output", args.output, "--experiment", "train", *DEMO_TRAIN_ARGS]
    if args.model == DEMO_MODEL:
        train_args += ["--model-kwargs", *DEMO_MODEL_KWARGS]
    print(f"== training {args.model} on the digits (1437 train / 360 validation images, CPU)")
    start = time.perf_counter()
    status, run_dir = run_training(train_args + extra)  # output/demo/train, or train-1, ... when it exists
    if status:
        return status
    print(f"== trained in {time.perf_counter() - start:.0f} s")

    export_dir = os.path.join(args.output, "hub")
    trained = export_hub(os.path.join(run_dir, BEST), export_dir)
    print(f"== exported {os.path.join(run_dir, BEST)} to {export_dir}: {sorted(os.listdir(export_dir))}")

    reloaded = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
    data_config = timm.data.resolve_data_config(model=reloaded)
    probe = torch.randn(2, *data_config["input_size"])
    with torch.no_grad():
        max_diff = (trained(probe) - reloaded(probe)).abs().max().item()
    print(f"== reloaded with timm.create_model('local-dir:{export_dir}'): max |logit diff| {max_diff:.2e}")
    show_predictions(reloaded, data_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
