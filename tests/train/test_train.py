import csv
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
import yaml
from train_helpers import run_cli

from zoo.train.args import ConfigError, parse_args
from zoo.train.checkpoint import atomic_save, load_checkpoint_file
from zoo.train.export import main as export_main
from zoo.train.train import main, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = [
    "--model", "test_convnext",
    "--img-size", "32",
    "--batch-size", "4",
    "--workers", "0",
    "--device", "cpu",
    "--warmup-epochs", "0",
    "--lr", "2e-3",
    "--seed", "0",
    "--no-progress",
]  # fmt: skip
# drop path, mixup, EMA and gradient accumulation all draw on or carry state that a resume must restore
RESUME = [*BASE, "--epochs", "2", "--drop-path", "0.1", "--mixup", "0.4", "--model-ema", "--model-ema-decay", "0.9"]
RESUME += ["--grad-accum-steps", "2", "--sched-on-updates", "--checkpoint-interval", "1"]


def read_summary(run_dir):
    with open(os.path.join(run_dir, "summary.csv")) as f:
        return list(csv.DictReader(f))


def assert_same(a, b, where="checkpoint"):
    """Recursive exact equality of checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_loss_goes_down_and_corrupt_images_are_skipped(image_folder, tmp_path, caplog):
    with open(os.path.join(image_folder, "train", "red", "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    caplog.set_level(logging.INFO)
    argv = [*BASE, image_folder, "--epochs", "3", "--smoothing", "0", "--output", str(tmp_path), "--experiment", "r"]
    assert main(argv) == 0
    rows = read_summary(tmp_path / "r")
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 3 and losses[-1] < losses[0]
    assert "skipped 1 unreadable training image(s)" in caplog.text and "corrupt.jpg" in caplog.text
    checkpoint = load_checkpoint_file(tmp_path / "r" / "last.pth")
    assert checkpoint["epoch"] == 3 and checkpoint["class_names"] == ["blue", "green", "red"]
    assert set(os.listdir(tmp_path / "r")) >= {"last.pth", "model_best.pth", "summary.csv", "args.yaml"}


def test_resume_after_kill_matches_uninterrupted_run(image_folder, tmp_path):
    reference = [*RESUME, image_folder, "--output", str(tmp_path), "--experiment"]
    assert main([*reference, "reference"]) == 0

    command = [sys.executable, "-m", "zoo.train", *reference, "killed"]
    killed_last = tmp_path / "killed" / "last.pth"
    # Bitwise-equal results need the same thread count (float sums are split across threads).
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not killed_last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed_last.exists(), process.stderr.read().decode()
    stopped_at = load_checkpoint_file(killed_last)["num_updates"]
    total = load_checkpoint_file(tmp_path / "reference" / "last.pth")["num_updates"]
    assert stopped_at < total

    assert main([*RESUME, image_folder, "--resume", str(killed_last)]) == 0
    resumed = load_checkpoint_file(killed_last)
    uninterrupted = load_checkpoint_file(tmp_path / "reference" / "last.pth")
    for key in ("args",):
        resumed.pop(key), uninterrupted.pop(key)
    assert_same(resumed, uninterrupted)
    assert read_summary(tmp_path / "killed") == read_summary(tmp_path / "reference")


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_stops(image_folder, tmp_path):
    command = [sys.executable, "-m", "zoo.train", *RESUME, image_folder, "--output", str(tmp_path)]
    command += ["--experiment", "run", "--checkpoint-interval", "0", "--epochs", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "summary.csv").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    checkpoint = load_checkpoint_file(tmp_path / "run" / "last.pth")
    assert 0 < checkpoint["num_updates"] < 50 * 3  # 3 updates per epoch


class NanAfter(torch.nn.Module):
    """Wraps a model so its training forward returns NaN after ``calls`` calls."""

    def __init__(self, model, calls):
        super().__init__()
        self.model = model
        self.calls = calls
        self.pretrained_cfg = self.default_cfg = model.pretrained_cfg
        self.num_classes = model.num_classes

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls -= 1
            if self.calls < 0:
                return out * float("nan")
        return out


def test_nonfinite_loss_skips_steps_then_stops(image_folder, tmp_path, monkeypatch, caplog):
    create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: NanAfter(create_model(*a, **k), calls=6))
    argv = [*BASE, image_folder, "--epochs", "3", "--nonfinite-limit", "4", "--output", str(tmp_path)]
    argv += ["--experiment", "nan"]
    assert main(argv) == 1
    assert caplog.text.count("non-finite loss") == 4
    checkpoint = load_checkpoint_file(tmp_path / "nan" / "last.pth")
    assert checkpoint["epoch"] == 1  # the epoch finished before the loss diverged is kept
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data-dir", "/nonexistent/data"], "does not exist"),
        (["--amp", "--amp-dtype", "float16"], "float16 needs a GPU"),
        (["--initial-checkpoint", "/nonexistent/x.pth"], "does not exist"),
    ],
)
def test_bad_input_is_reported(image_folder, tmp_path, capsys, extra, message):
    argv = [*BASE, "--data-dir", image_folder, "--output", str(tmp_path), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not glob.glob(str(tmp_path / "*" / "*.pth"))


def test_resume_from_another_model_is_reported(image_folder, tmp_path, capsys):
    atomic_save({"version": 1, "arch": "test_efficientnet"}, tmp_path / "other.pth")
    assert main([*BASE, image_folder, "--resume", str(tmp_path / "other.pth")]) == 2
    assert "written for model test_efficientnet, this run builds test_convnext" in capsys.readouterr().err


def test_initial_checkpoint_of_another_model_is_reported(image_folder, tmp_path, capsys):
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "effnet.pth")
    argv = [*BASE, image_folder, "--initial-checkpoint", str(tmp_path / "effnet.pth"), "--output", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "is not a checkpoint of test_convnext" in error and "missing: stem.0.weight" in error


def test_recipe_sets_options_and_command_line_wins(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": "test_vit", "epochs": 7, "lr": 0.1, "model-kwargs": {"depth": 2}}))
    args = parse_args(["-c", str(recipe), "--lr", "0.2"])
    assert (args.model, args.epochs, args.lr, args.model_kwargs) == ("test_vit", 7, 0.2, {"depth": 2})
    recipe.write_text(yaml.safe_dump({"model": "test_vit", "epochz": 7}))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['epochz'\]"):
        parse_args(["-c", str(recipe)])


@pytest.mark.parametrize("recipe", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))), ids=os.path.basename)
def test_shipped_recipes_parse(recipe):
    import zoo  # noqa: F401  (registers the zoo models)

    args = parse_args(["-c", recipe])
    assert args.model.startswith("zoo_") and timm.is_model(args.model) and args.img_size == 224
    if args.pretrained:
        assert timm.list_pretrained(f"{args.model}.*"), f"{args.model} has no released weights"


def test_torchrun_two_processes_write_one_checkpoint(image_folder, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "zoo.train", *BASE, image_folder, "--model", "test_efficientnet", "--epochs", "1"]
    command += ["--output", str(tmp_path / "out"), "--experiment", "ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(tmp_path / "out") == ["ddp"]
    assert result.stderr.count("writing to") == 1
    checkpoint = load_checkpoint_file(tmp_path / "out" / "ddp" / "last.pth")
    assert len(checkpoint["rng"]) == 2
    # 24 images over 2 ranks, batches of 4: 3 updates per epoch
    assert checkpoint["num_updates"] == 3 and checkpoint["args"]["model"] == "test_efficientnet"
    assert not [f for f in os.listdir(tmp_path / "out" / "ddp") if ".tmp" in f]


def test_batch_size_one_trains_and_batches_without_images_are_reported(image_folder, tmp_path):
    with open(os.path.join(image_folder, "train", "red", "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    argv = [*BASE, image_folder, "-b", "1", "--epochs", "1", "--output", tmp_path, "--experiment", "b1"]
    result = run_cli("zoo.train", *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 training batch(es) not trained on: 1 with no readable image" in result.stderr
    assert "corrupt.jpg" in result.stderr
    checkpoint = load_checkpoint_file(tmp_path / "b1" / "last.pth")
    assert checkpoint["num_updates"] == 25  # 24 images and the unreadable one, one batch each
    steps = {state["step"].item() for state in checkpoint["optimizer"]["state"].values()}
    assert steps == {24.0}  # every readable image made an optimizer step
    assert float(read_summary(tmp_path / "b1")[0]["train_loss"]) > 0


def test_batch_size_one_is_refused_where_batchnorm_sees_one_value(image_folder, tmp_path, capsys):
    argv = [*BASE, image_folder, "--model", "test_efficientnet", "-b", "1", "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "test_efficientnet cannot train on batches of one image" in error and "bn2" in error
    assert "--batch-size 2 or more" in error and not os.path.exists(tmp_path / "out")


def test_reused_experiment_keeps_the_earlier_run_and_resume_continues_in_place(image_folder, tmp_path, caplog):
    out = tmp_path / "out"
    argv = [*BASE, image_folder, "--epochs", "1", "--output", str(out), "--experiment", "run"]
    assert main(argv) == 0
    first = (out / "run" / "last.pth").read_bytes()
    assert run([*argv, "--seed", "1"]) == (0, str(out / "run-1"))
    assert (out / "run" / "last.pth").read_bytes() == first
    assert sorted(os.listdir(out)) == ["run", "run-1"]
    assert f"{out / 'run'} holds an earlier run, which is kept" in caplog.text

    assert main([*BASE, image_folder, "--epochs", "2", "--resume", str(out / "run" / "last.pth")]) == 0
    assert sorted(os.listdir(out)) == ["run", "run-1"]
    assert load_checkpoint_file(out / "run" / "last.pth")["epoch"] == 2
    recorded = yaml.safe_load((out / "run" / "args.yaml").read_text())
    assert (recorded["output"], recorded["experiment"]) == (str(out), "run")


def test_export_of_a_model_trained_from_scratch_names_no_release(image_folder, tmp_path):
    assert timm.create_model("test_convnext").pretrained_cfg["tag"] == "r160_in1k"
    assert main([*BASE, image_folder, "--epochs", "1", "--output", str(tmp_path), "--experiment", "scratch"]) == 0
    assert export_main([str(tmp_path / "scratch" / "last.pth"), str(tmp_path / "hub")]) == 0
    exported = json.loads((tmp_path / "hub" / "config.json").read_text())["pretrained_cfg"]
    assert "tag" not in exported and "license" not in exported
    assert exported["num_classes"] == 3
