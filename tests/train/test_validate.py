import glob
import json
import math
import os
import shutil

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from train_helpers import assert_cli_error, run_cli

from zoo.train.checkpoint import atomic_save
from zoo.train.validate import main

CLASSES = ["blue", "green", "red"]


def trained_like_checkpoint(path, num_classes=3, class_names=None):
    """A zoo-train style checkpoint of test_convnext with a head that gives varied predictions."""
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", num_classes=num_classes)
    with torch.no_grad():
        model.get_classifier().weight.normal_(std=2.0)
    atomic_save(
        {"version": 1, "arch": "test_convnext", "model_kwargs": {}, "num_classes": num_classes,
         "state_dict": model.state_dict(), "data_config": {"input_size": [3, 32, 32], "crop_pct": 0.875},
         **({"class_names": class_names} if class_names else {})},
        path,
    )  # fmt: skip
    return model.eval()


def manual_metrics(model, folder, img_size, crop_pct, class_names=None):
    """Loss / top-1 computed directly from the model's pretrained cfg with torchvision transforms.

    The label of a class folder is its position in ``class_names`` (default: the sorted folders).
    """
    cfg = model.pretrained_cfg
    interpolation = transforms.InterpolationMode(cfg["interpolation"])
    transform = transforms.Compose([
        transforms.Resize(math.floor(img_size / crop_pct), interpolation=interpolation),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(cfg["mean"], cfg["std"]),
    ])  # fmt: skip
    class_names = class_names or sorted(os.listdir(folder))
    images, targets = [], []
    for name in sorted(os.listdir(folder)):
        for path in sorted(glob.glob(os.path.join(folder, name, "*.png"))):
            images.append(transform(Image.open(path).convert("RGB")))
            targets.append(class_names.index(name))
    targets = torch.tensor(targets)
    with torch.no_grad():
        logits = model(torch.stack(images))
    return {
        "loss": F.cross_entropy(logits, targets).item(),
        "top1": 100.0 * (logits.argmax(-1) == targets).float().mean().item(),
        "count": len(targets),
    }


def test_validation_matches_manual_computation(image_folder, tmp_path, capsys):
    model = trained_like_checkpoint(tmp_path / "ckpt.pth")
    results_file = tmp_path / "results.json"
    argv = [image_folder, "--checkpoint", str(tmp_path / "ckpt.pth")]  # preprocessing from the checkpoint
    argv += ["-b", "5", "-j", "0", "--device", "cpu", "--results-file", str(results_file)]
    assert main(argv) == 0
    results = json.loads(results_file.read_text())
    expected = manual_metrics(model, os.path.join(image_folder, "val"), 32, 0.875)
    assert results["count"] == expected["count"] == 12 and results["img_size"] == 32
    assert abs(results["loss"] - expected["loss"]) < 1e-5
    assert abs(results["top1"] - expected["top1"]) < 1e-9
    assert results["top5"] == 100.0  # three classes: the top five always hold the label
    assert f"top-1 {expected['top1']:.3f}" in capsys.readouterr().out


def test_validate_reports_checkpoint_for_other_class_count(image_folder, tmp_path, capsys):
    trained_like_checkpoint(tmp_path / "five.pth", num_classes=5)
    argv = [image_folder, "--model", "test_convnext", "--num-classes", "3", "--checkpoint", str(tmp_path / "five.pth")]
    assert main([*argv, "--device", "cpu", "-j", "0"]) == 2
    assert "it has 5 classes, the model has 3" in capsys.readouterr().err


def test_validate_reports_missing_data(tmp_path, capsys):
    trained_like_checkpoint(tmp_path / "ckpt.pth")
    argv = [str(tmp_path / "missing"), "--checkpoint", str(tmp_path / "ckpt.pth"), "--device", "cpu"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_subset_of_classes_is_matched_to_outputs_by_name(image_folder, tmp_path):
    model = trained_like_checkpoint(tmp_path / "ckpt.pth", class_names=CLASSES)
    shutil.rmtree(os.path.join(image_folder, "val", "blue"))  # green -> output 1, red -> output 2
    results_file = tmp_path / "results.json"
    argv = [image_folder, "--checkpoint", tmp_path / "ckpt.pth", "-j", "0", "--device", "cpu"]
    result = run_cli("zoo.train.validate", *argv, "--results-file", results_file)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(results_file.read_text())
    expected = manual_metrics(model, os.path.join(image_folder, "val"), 32, 0.875, class_names=CLASSES)
    assert results["count"] == expected["count"] == 8
    assert abs(results["loss"] - expected["loss"]) < 1e-5 and abs(results["top1"] - expected["top1"]) < 1e-9


def test_class_folder_the_model_was_not_trained_on_is_an_error(image_folder, tmp_path):
    trained_like_checkpoint(tmp_path / "ckpt.pth", class_names=CLASSES)
    os.rename(os.path.join(image_folder, "val", "red"), os.path.join(image_folder, "val", "purple"))
    result = run_cli("zoo.train.validate", image_folder, "--checkpoint", tmp_path / "ckpt.pth", "-j", "0")
    assert_cli_error(result, 2, "zoo-validate: error: class(es) ['purple']", "blue, green, red")
