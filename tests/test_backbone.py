"""The shared backbone contract: what the contract test does not reach (default feature stages,
pruning, the intermediates' layout) and the checkpoint helpers every filter starts with."""

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models import tiny_kwargs
from zoo.models._state_dict import rename_keys, unwrap_checkpoint

# A 3-stage, a 5-stage, an NHWC and a NormMlpClassifierHead family; ParCNet has its final 1x1 expansion.
MODELS = ["zoo_shvit_s1", "zoo_parcnet_s", "zoo_nat_mini", "zoo_hornet_tiny", "zoo_van_b0"]


def _build(name, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **tiny_kwargs(name), **kwargs).eval()


@pytest.mark.parametrize("name", MODELS)
def test_features_only_takes_every_stage_by_default(name):
    model = _build(name, features_only=True)
    full = _build(name)
    assert model.feature_info.channels() == [info["num_chs"] for info in full.feature_info]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == model.feature_info.channels()


@pytest.mark.parametrize("name", MODELS)
def test_pruned_model_ends_at_the_last_stage_taken(name):
    model = _build(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert model.num_features == model.feature_info[1]["num_chs"]
    with torch.no_grad():
        taken = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        features = model.forward_features(x)
        out = model(x)
    for a, b in zip(taken, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Without its head (pooling included), the pruned model returns the last stage's map as it is.
    torch.testing.assert_close(out, features, rtol=0, atol=0)
    if model.output_fmt == "NHWC":
        features = features.permute(0, 3, 1, 2)
    torch.testing.assert_close(features, expected[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["zoo_nat_mini", "zoo_van_b0"])
def test_intermediates_in_either_layout(name):
    model = _build(name)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        nchw = model.forward_intermediates(x, intermediates_only=True)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    for a, b in zip(nchw, nhwc):
        torch.testing.assert_close(a.permute(0, 2, 3, 1), b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


def test_unwrap_checkpoint_descends_wrappers_and_drops_module_prefix():
    weight = torch.ones(2)
    checkpoint = {"model": {"state_dict": {"module.a.weight": weight, "b": weight}}, "epoch": 3}
    assert unwrap_checkpoint(checkpoint) == {"a.weight": weight, "b": weight}
    assert unwrap_checkpoint({"state_dict": {"a": weight}, "model": "resnet"}, ("model", "state_dict")) == {"a": weight}
    assert unwrap_checkpoint({"a": weight}) == {"a": weight}


def test_rename_keys_applies_the_table_in_order():
    renames = (
        (r"^levels\.(\d+)\.downsample", lambda m: f"stages.{int(m.group(1)) + 1}.downsample"),
        (r"^levels\.", "stages."),
    )
    state_dict = {"levels.0.downsample.w": 1, "levels.0.blocks.0.w": 2, "head.w": 3}
    assert rename_keys(state_dict, renames) == {"stages.1.downsample.w": 1, "stages.0.blocks.0.w": 2, "head.w": 3}
