"""Tiny generated image folders for the training tests."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

CLASS_COLORS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def write_images(folder, color, count, seed, size=16):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        noise = rng.integers(-40, 40, size=(size, size, 3))
        pixels = np.clip(np.array(color)[None, None, :] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"img{i}.png"))


def make_image_folder(root, train_per_class=8, val_per_class=4):
    """root/{train,val}/<class>/*.png: three colour classes of noisy 16x16 images."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for index, (name, color) in enumerate(CLASS_COLORS.items()):
            write_images(os.path.join(root, split, name), color, count, seed=index + (100 if split == "val" else 0))
    return str(root)


def run_python(*argv, env=None, timeout=300):
    """Run ``python ARGV`` in a new process; returns the CompletedProcess (text output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=env)


def run_cli(module, *argv, env=None, timeout=300):
    """Run ``python -m <module> ARGV`` as a user does; returns the CompletedProcess (text output)."""
    return run_python("-m", module, *argv, env=env, timeout=timeout)


def assert_cli_error(result, status, *expected):
    """The command failed with ``status`` and a one-line ``error:`` that holds every ``expected`` text."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert ": error: " in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr, result.stderr[-3000:]
