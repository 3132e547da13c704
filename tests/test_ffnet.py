"""FFNet: official checkpoint layout (training-time and fused), parameter counts, the fused layers
against the branches they replace, and the depthwise convolutions running through the zoo kernel."""

import re
from functools import partial

import _family_checks as checks
import pytest
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models import tiny_kwargs
from zoo.models.ffnet import BnConvResidual, FFNet, RepVGGDW, checkpoint_filter_fn

# Parameter counts of the official models (ysj9909/FFNet, models/ffnet.py at the current HEAD,
# ffnet_1 ... ffnet_4 with 1000 classes, training-time form), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_ffnet_1": 13_775_656,
    "zoo_ffnet_2": 27_208_408,
    "zoo_ffnet_3": 48_817_896,
    "zoo_ffnet_3_384": 48_817_896,
    "zoo_ffnet_4": 79_868_968,
    "zoo_ffnet_4_384": 79_868_968,
}

# Some keys of the official training-time checkpoint layout.
TRAINING_KEYS = {
    "patch_embed.0.c.weight", "stages.1.0.proj.0.conv1.bn.running_var", "stages.1.0.proj.1.conv.c.weight",
    "stages.1.1.token_mixer.0.main.fc.c.weight", "stages.2.1.token_mixer.0.main.conv1.conv.c.weight",
    "stages.0.0.channel_mixer.main.conv.c.weight", "stages.0.0.token_mixer.0.layer_scale", "norm.running_mean",
    "head.weight",
}  # fmt: skip


def _official_key(match: re.Match) -> str:
    stage, part, index = match[1], match[2], match[3]
    if part == "downsample":
        return f"stages.{stage}.0."
    return f"stages.{stage}.{int(index) + (stage != '0')}."


def _official_layout(state_dict: dict) -> dict:
    """Our keys -> the official ones: each stage a flat list (patch merging first), the token mixer in
    a ``Sequential``, a bare ``head`` linear."""
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"^stages\.(\d+)\.(downsample|blocks\.(\d+))\.", _official_key, key)
        key = key.replace(".token_mixer.", ".token_mixer.0.").replace("head.fc.", "head.")
        official[key] = value
    return official


def _tiny(name: str = "zoo_ffnet_3", **kwargs) -> torch.nn.Module:
    return checks.tiny_model(name, scale_suffixes=("layer_scale",), **kwargs)


_check_official_layout = partial(checks.check_official_layout, _tiny, _official_layout, checkpoint_filter_fn)
test_parameter_count_equals_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_training_time_checkpoint_loads():
    _check_official_layout(torch.randn(2, 3, 64, 96), TRAINING_KEYS, wrap=lambda sd: {"state_dict": sd, "epoch": 299})


def test_reparameterize_matches_and_loads_as_the_official_fused_layout():
    expected_keys = {"patch_embed.0.bias", "stages.1.0.proj.0.bias", "stages.1.0.proj.1.bias"}
    state_dict = _check_official_layout(torch.randn(2, 3, 96, 64), expected_keys, reparameterize=True)
    assert state_dict["stages.2.1.token_mixer.0.main.conv1.weight"].shape == (16, 1, 7, 7)
    assert not any(".bn." in key or ".c." in key or ".conv1.conv." in key for key in state_dict)


@pytest.mark.parametrize("stride, out_dim", [(1, 6), (2, 12)])
def test_repvgg_branches_fuse_to_one_convolution(stride, out_dim):
    module = RepVGGDW(6, out_dim, 7, stride).eval()
    checks.randomize_batchnorm(module, ("layer_scale",))
    x = torch.randn(2, 6, 15, 12)
    with torch.no_grad():
        expected = sum(
            branch.bn(F.conv2d(x, branch.c.weight, stride=stride, padding=k // 2, groups=6))
            for branch, k in ((module.conv, 7), (module.conv1, 3))
        )
        torch.testing.assert_close(module(x), expected)
        torch.testing.assert_close(module.fuse()(x), expected, rtol=1e-5, atol=1e-5)


def test_bn_conv_residual_fuses_to_one_convolution():
    module = BnConvResidual(5).eval()
    checks.randomize_batchnorm(module, ("layer_scale",))
    x = torch.randn(2, 5, 7, 9)
    with torch.no_grad():
        expected = x + F.conv2d(module.conv.bn(x), module.conv.c.weight)
        torch.testing.assert_close(module(x), expected)
        torch.testing.assert_close(module.fuse()(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_stride_one_depthwise_convolutions_run_through_the_zoo_kernel(monkeypatch, channels_last):
    model = _tiny()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    model.to(memory_format=memory_format)
    calls = checks.record_depthwise_calls(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(model(x.to(memory_format=memory_format)), expected)
        # per block the FFN's kernel and the token mixer's two (six 3s, six 7s); a 7 runs as 7x7 + 3x3
        assert sorted(calls) == sorted([(3, 3)] * 6 + [(7, 7), (3, 3)] * 6)
        calls.clear()
        model.reparameterize()
        torch.testing.assert_close(model(x.to(memory_format=memory_format)), expected, rtol=1e-5, atol=1e-5)
        assert sorted(calls) == sorted([(3, 3)] * 6 + [(7, 7)] * 6)


def test_pretrained_file_loads_through_timm(tmp_path):
    source = _tiny()
    checkpoint = {"state_dict": _official_layout(source.state_dict()), "epoch": 299}
    path, x = tmp_path / "ffnet_3.pth.tar", torch.randn(1, 3, 64, 64)
    checks.assert_loads_as_pretrained("zoo_ffnet_3", checkpoint, path, source, x, **tiny_kwargs("zoo_ffnet_3"))


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="one entry per stage"):
        FFNet(depths=(1, 1, 1), embed_dims=(8, 16, 16, 32))
    with pytest.raises(ValueError, match="multiple of the previous one"):
        FFNet(depths=(1, 1, 1, 1), embed_dims=(8, 12, 24, 48))
