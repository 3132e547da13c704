"""RepLKNet: official and mmpretrain checkpoint layouts (training-time and re-parameterized), parameter
counts, folding, and the large-kernel convolutions running through the zoo kernel."""

import re

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models import tiny_kwargs
from zoo.models.replknet import checkpoint_filter_fn

# Parameter counts of the official models (DingXiaoH/RepLKNet-pytorch, replknet.py at b76808a,
# create_RepLKNet31B / 31L / XL with 1000 classes), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_replknet_31b": 79_864_168,
    "zoo_replknet_31b_384": 79_864_168,
    "zoo_replknet_31l_384": 172_671_016,
    "zoo_replknet_xl_320": 335_435_752,
}


def _official_layout(state_dict: dict, mmpretrain: bool = False, num_stages: int = 4) -> dict:
    """Our keys -> the official ones (transitions after each stage, a bare ``head`` linear), or
    mmpretrain's (``backbone.`` prefix, the final BatchNorm as the last stage's ``norm``, ``head.fc``)."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"transitions.{int(m[1]) - 1}.", key)
        if mmpretrain:
            key = key if key.startswith("head.") else "backbone." + key
            key = key.replace("backbone.norm.", f"backbone.stages.{num_stages - 1}.norm.")
        else:
            key = key.replace("head.fc.", "head.")
        out[key] = value
    return out


def _tiny(name: str = "zoo_replknet_31b", **kwargs) -> torch.nn.Module:
    return checks.tiny_model(name, scale_suffixes=(), **kwargs)


test_parameter_count_equals_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("mmpretrain", [False, True], ids=["official", "mmpretrain"])
def test_training_time_checkpoint_loads(mmpretrain):
    source = _tiny()
    state_dict = _official_layout(source.state_dict(), mmpretrain=mmpretrain)
    expected_keys = (
        ["backbone.transitions.0.1.conv.weight", "backbone.stages.3.norm.running_var", "head.fc.weight"]
        if mmpretrain
        else ["transitions.2.0.bn.running_mean", "norm.weight", "head.weight"]
    )
    assert set(expected_keys) <= set(state_dict)
    wrapped = {"state_dict": state_dict, "meta": {}} if mmpretrain else {"model": state_dict}
    model = _tiny()
    model.load_state_dict(checkpoint_filter_fn(wrapped, model))
    checks.assert_same_outputs(model, source, torch.randn(2, 3, 64, 48))


@pytest.mark.parametrize("name", ["zoo_replknet_31b", "zoo_replknet_xl_320"])
def test_reparameterize_matches_and_loads_as_the_official_deploy_checkpoint(name):
    x = torch.randn(2, 3, 72, 56)
    folded = checks.check_reparameterization(_tiny(name), x)

    state_dict = _official_layout(folded.state_dict())
    assert "stages.0.blocks.0.large_kernel.lkb_reparam.bias" in state_dict
    assert not any("lkb_origin" in key or "small_conv" in key for key in state_dict)
    deployed = _tiny(name)
    deployed.load_state_dict(checkpoint_filter_fn(state_dict, deployed))
    checks.assert_same_outputs(deployed, folded, x)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_large_kernels_run_through_the_zoo_kernel(monkeypatch, channels_last):
    model = _tiny()  # four RepLK blocks: kernels 13, 11, 7, 5 beside 5x5
    x = torch.randn(1, 3, 64, 64)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=memory_format)
        calls = checks.record_depthwise_calls(monkeypatch, checks.kernel_shape_and_channels_last)
        out = model(x.to(memory_format=memory_format))
        torch.testing.assert_close(out, expected)
        assert sorted(shape for shape, _ in calls) == sorted([(13, 13), (11, 11), (7, 7), (5, 5)] + [(5, 5)] * 4)
        assert all(is_channels_last == channels_last for _, is_channels_last in calls)
        calls.clear()
        model.reparameterize()
        model(x.to(memory_format=memory_format))
        assert sorted(shape for shape, _ in calls) == [(5, 5), (7, 7), (11, 11), (13, 13)]


def test_full_size_kernel_calls_per_forward(monkeypatch):
    """RepLKNet-31B: each of its 24 RepLK blocks runs its large kernel and its 5x5 kernel through the zoo
    kernel (one call per block once folded); shapes only, on a narrow copy of the model."""
    model = timm.create_model("zoo_replknet_31b", dims=(4, 4, 4, 4)).eval()
    calls = checks.record_depthwise_calls(monkeypatch, checks.kernel_shape_and_channels_last)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert sorted({shape: None for shape, _ in calls}) == [(5, 5), (13, 13), (27, 27), (29, 29), (31, 31)]
        assert len(calls) == 48
        calls.clear()
        model.reparameterize()
        model(torch.randn(1, 3, 64, 64))
        assert len(calls) == 24 and all(shape != (5, 5) for shape, _ in calls)


def test_grad_checkpointing_gives_the_same_gradients():
    checks.assert_grad_checkpointing_same_gradients(_tiny(drop_path_rate=0.0).train(), torch.randn(2, 3, 48, 40))


def test_bfloat16_autocast_forward_backward():
    checks.assert_bfloat16_autocast_close(_tiny(), torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("layout", ["official_deploy", "mmpretrain"])
def test_pretrained_file_loads_through_timm(tmp_path, layout):
    """``pretrained=True`` with a local file in either layout: timm's loader runs the filter (which folds
    the model for a deploy checkpoint) and gives the source model's outputs."""
    source = _tiny()
    if layout == "official_deploy":
        source.reparameterize()
        checkpoint = {"model": _official_layout(source.state_dict())}
    else:
        checkpoint = {"state_dict": _official_layout(source.state_dict(), mmpretrain=True), "meta": {}}
    path = tmp_path / "replknet.pth"
    torch.save(checkpoint, path)
    name = "zoo_replknet_31b"
    model = checks.load_pretrained_file(name, path, **tiny_kwargs(name))
    assert hasattr(model.stages[0].blocks[0].large_kernel, "lkb_reparam") == (layout == "official_deploy")
    checks.assert_same_outputs(model, source, torch.randn(1, 3, 64, 64))
