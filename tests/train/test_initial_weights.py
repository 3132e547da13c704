"""One loader for --initial-checkpoint, zoo-validate --checkpoint and pretrained=True (zoo.hub.load_weights_file)."""

import json
import os
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_validate import manual_metrics

import zoo  # noqa: F401  (registers the zoo models)
from zoo.train.checkpoint import load_checkpoint_file, load_weights
from zoo.train.train import main as train_main
from zoo.train.validate import main as validate_main

SWIN_KWARGS = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
SWIN = ["--model", "zoo_swin_tiny", "--model-kwargs", "embed_dim=16", "depths=(1,1,1,1)", "num_heads=(1,1,1,1)"]


def write_swin_checkpoints(folder):
    """The same random 224x224, window-7 Swin weights in the official layout and as zoo safetensors."""
    torch.manual_seed(0)
    state_dict = timm.create_model("zoo_swin_tiny", **SWIN_KWARGS).state_dict()
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    torch.save({"model": official, "epoch": 299}, folder / "swin_official.pth")
    save_file(state_dict, folder / "swin.safetensors")
    return {"official": folder / "swin_official.pth", "safetensors": folder / "swin.safetensors"}


def pretrained_like(path, **kwargs):
    """The model ``pretrained=True`` builds from the weights file ``path``."""
    overlay = dict(file=str(path))
    return timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **SWIN_KWARGS, **kwargs)


@pytest.mark.parametrize("layout", ["official", "safetensors"])
def test_initial_checkpoint_loads_as_pretrained_does(image_folder, tmp_path, layout):
    """A 224 checkpoint fine-tuned at 64: the filter converts the layout and resizes the bias tables."""
    path = write_swin_checkpoints(tmp_path)[layout]
    argv = [image_folder, *SWIN, "--initial-checkpoint", path, "--img-size", "64", "--epochs", "1", "-b", "8"]
    argv += ["--lr", "0", "--min-lr", "0", "--warmup-epochs", "0", "-j", "0", "--device", "cpu", "--no-progress"]
    assert train_main([*map(str, argv), "--output", str(tmp_path / "out"), "--experiment", "ft"]) == 0
    trained = load_checkpoint_file(tmp_path / "out" / "ft" / "last.pth")["state_dict"]  # lr 0: the initial weights
    expected = pretrained_like(path, img_size=64, num_classes=3).state_dict()
    assert trained.keys() == expected.keys()
    bias_table = "layers.3.blocks.0.attn.relative_position_bias_table"
    assert trained[bias_table].shape == (9, 1)  # the last stage's 2x2 map: window 2 instead of 7 (13 * 13 rows)
    for key, value in expected.items():
        if not key.startswith("head.fc."):
            assert torch.equal(trained[key], value), key


def test_validate_loads_an_official_checkpoint_as_pretrained_does(image_folder, tmp_path):
    path = write_swin_checkpoints(tmp_path)["official"]
    argv = [image_folder, *SWIN, "img_size=64", "--img-size", "64", "--checkpoint", path, "-j", "0", "--device", "cpu"]
    argv += ["--results-file", tmp_path / "results.json"]
    assert validate_main(list(map(str, argv))) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    model = pretrained_like(path, img_size=64).eval()
    expected = manual_metrics(model, os.path.join(image_folder, "val"), 64, model.pretrained_cfg["crop_pct"])
    assert results["count"] == expected["count"] == 12
    assert abs(results["loss"] - expected["loss"]) < 1e-5 and results["top1"] == pytest.approx(expected["top1"])


def test_rgb_weights_load_into_a_one_channel_stem_as_pretrained_does(tmp_path):
    torch.manual_seed(0)
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "rgb.pth")
    model = timm.create_model("test_convnext", in_chans=1)
    load_weights(model, tmp_path / "rgb.pth")
    overlay = dict(file=str(tmp_path / "rgb.pth"))
    expected = timm.create_model("test_convnext", in_chans=1, pretrained=True, pretrained_cfg_overlay=overlay)
    assert model.stem[0].weight.shape[1] == 1
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
