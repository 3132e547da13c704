"""UniRepLKNet: official checkpoint layout (training-time and deployed), parameter counts, GRN, folding,
and the large and dilated depthwise convolutions running through the zoo kernel."""

from functools import partial

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models import tiny_kwargs
from zoo.models.unireplknet import GlobalResponseNorm, UniRepLKNet, checkpoint_filter_fn

# Parameter counts of the official models (AILab-CVC/UniRepLKNet, unireplknet.py at the current HEAD,
# unireplknet_{a,f,p,n,t,s,b,l,xl}() with 1000 classes, training-time form), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_unireplknet_a": 4_649_060,
    "zoo_unireplknet_f": 6_489_328,
    "zoo_unireplknet_p": 11_080_520,
    "zoo_unireplknet_n": 18_818_880,
    "zoo_unireplknet_t": 31_693_420,
    "zoo_unireplknet_s": 56_456_704,
    "zoo_unireplknet_s_384": 56_456_704,
    "zoo_unireplknet_b_384": 99_089_416,
    "zoo_unireplknet_l_384": 220_076_056,
    "zoo_unireplknet_xl_384": 388_690_984,
}

TO_OFFICIAL = (
    *checks.TO_CONVNEXT_LAYOUT,
    (r"\.se\.fc1\.", ".se.down."),
    (r"\.se\.fc2\.", ".se.up."),
    (r"\.pwconv1\.", ".pwconv1.1."),
    (r"\.grn\.weight$", ".act.1.gamma"),
    (r"\.grn\.bias$", ".act.1.beta"),
    (r"\.pwconv2\.", ".pwconv2.0."),
    (r"\.ffn_norm\.", ".pwconv2.2."),
    (r"\.layer_scale\.gamma$", ".gamma"),
    *checks.TO_BARE_HEAD,
)

# Some keys of the official training-time checkpoint layout.
TRAINING_KEYS = {
    "downsample_layers.0.3.weight", "downsample_layers.3.1.bias", "stages.1.0.dwconv.lk_origin.weight",
    "stages.1.0.dwconv.dil_conv_k7_2.weight", "stages.1.0.dwconv.dil_bn_k3_5.running_var",
    "stages.0.0.dwconv.weight", "stages.0.0.se.down.bias", "stages.0.0.pwconv1.1.weight", "stages.0.0.act.1.beta",
    "stages.0.0.pwconv2.0.weight", "stages.0.0.pwconv2.2.running_mean", "stages.0.0.gamma", "norm.weight",
    "head.weight",
}  # fmt: skip


def _official_layout(state_dict: dict) -> dict:
    """Our keys -> the official ones; GRN's parameters have the official ``(1, 1, 1, C)`` shape."""
    official = checks.rename_keys(state_dict, TO_OFFICIAL)
    return {key: value.reshape(1, 1, 1, -1) if ".act.1." in key else value for key, value in official.items()}


def _tiny(name: str = "zoo_unireplknet_a", **kwargs) -> torch.nn.Module:
    return checks.tiny_model(name, scale_suffixes=("gamma", "grn.weight", "grn.bias"), **kwargs)


_check_official_layout = partial(checks.check_official_layout, _tiny, _official_layout, checkpoint_filter_fn)
test_parameter_count_equals_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_kernel_sizes_per_block_are_the_official_ones():
    with torch.device("meta"):
        model = timm.create_model("zoo_unireplknet_t")
    sizes = [[block.dwconv.lk_origin.kernel_size[0] if hasattr(block.dwconv, "lk_origin") else
              block.dwconv.kernel_size[0] for block in stage.blocks] for stage in model.stages]  # fmt: skip
    assert sizes == [[3] * 3, [13] * 3, [13, 3] * 9, [13] * 3]
    branches = model.stages[1].blocks[0].dwconv.branch_specs
    assert branches == ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5))


def test_grn_equals_the_convnext_v2_equations():
    grn = GlobalResponseNorm(6)
    with torch.no_grad():
        grn.weight.normal_()
        grn.bias.normal_()
    x = torch.randn(2, 5, 7, 6)
    gx = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(grn(x), grn.weight * (x * nx) + grn.bias + x)


def test_training_time_checkpoint_loads():
    wrap = lambda state_dict: {"model": {"module." + k: v for k, v in state_dict.items()}}  # noqa: E731
    state_dict = _check_official_layout(torch.randn(2, 3, 64, 96), TRAINING_KEYS, wrap=wrap)
    assert "stages.0.0.pwconv2.0.bias" not in state_dict


def test_reparameterize_matches_and_loads_as_the_official_deploy_layout():
    folded_keys = {"stages.1.0.dwconv.lk_origin.bias", "stages.0.0.dwconv.bias", "stages.0.0.pwconv2.0.bias"}
    state_dict = _check_official_layout(torch.randn(2, 3, 96, 64), folded_keys, reparameterize=True)
    assert state_dict["stages.1.0.dwconv.lk_origin.weight"].shape == (16, 1, 13, 13)
    dropped = ("origin_bn", "dil_", ".norm.", "act.1.beta", "pwconv2.2.")
    assert not any(part in key for key in state_dict for part in dropped)
    assert not any(key.endswith(".0.gamma") for key in state_dict)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_depthwise_convolutions_run_through_the_zoo_kernel(monkeypatch, channels_last):
    """One 3x3, one 13x13 (with its five dilated branches), one 7x7 (three), one 3x3 and one 5x5 block."""
    model = _tiny(kernel_sizes=((3,), (13,), (7, 3), (5,)))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    model.to(memory_format=memory_format)
    calls = checks.record_depthwise_calls(
        monkeypatch, lambda x, weight, bias=None, padding=0, dilation=1: (tuple(weight.shape[-2:]), tuple(dilation))
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x.to(memory_format=memory_format)), expected)
        dilated_13 = [((5, 5), (1, 1)), ((7, 7), (2, 2)), ((3, 3), (3, 3)), ((3, 3), (4, 4)), ((3, 3), (5, 5))]
        dilated_7 = [((5, 5), (1, 1)), ((3, 3), (2, 2)), ((3, 3), (3, 3))]
        plain = [((3, 3), (1, 1)), ((13, 13), (1, 1)), ((7, 7), (1, 1)), ((3, 3), (1, 1)), ((5, 5), (1, 1))]
        assert sorted(calls) == sorted(plain + dilated_13 + dilated_7)
        calls.clear()
        model.reparameterize()
        torch.testing.assert_close(model(x.to(memory_format=memory_format)), expected, rtol=1e-5, atol=1e-5)
        assert sorted(calls) == sorted(plain)


def test_full_size_kernel_calls_per_forward(monkeypatch):
    """UniRepLKNet-S: 18 blocks of 13x13 with five dilated branches each, 33 of 3x3; shapes only, on a
    narrow copy of the model."""
    model = timm.create_model("zoo_unireplknet_s", dims=(4, 4, 4, 4)).eval()
    calls = checks.record_depthwise_calls(monkeypatch)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert calls.count((13, 13)) == 15 and len(calls) == 15 * 6 + 21
        calls.clear()
        model.reparameterize()
        model(torch.randn(1, 3, 64, 64))
        assert calls.count((13, 13)) == 15 and len(calls) == 36


def test_grad_checkpointing_gives_the_same_gradients():
    checks.assert_grad_checkpointing_same_gradients(_tiny().train(), torch.randn(2, 3, 48, 40))


@pytest.mark.parametrize("form", ["training", "deploy"])
def test_hub_file_loads_through_timm(tmp_path, form):
    """The Hub files are plain state dicts in the official layout; a deployed file folds the model."""
    source = _tiny()
    if form == "deploy":
        source.reparameterize()
    path = tmp_path / "unireplknet_a_in1k_224_acc77.03.pth"
    torch.save(_official_layout(source.state_dict()), path)
    name = "zoo_unireplknet_a"
    model = checks.load_pretrained_file(name, path, **tiny_kwargs(name))
    assert isinstance(model.stages[0].blocks[0].norm, torch.nn.Identity) == (form == "deploy")
    checks.assert_same_outputs(model, source, torch.randn(1, 3, 64, 64))


def test_manifest_points_at_the_official_hub_files():
    cfg = timm.create_model("zoo_unireplknet_b_384", **tiny_kwargs("zoo_unireplknet_b_384")).pretrained_cfg
    assert cfg["hf_hub_id"] == "DingXiaoH/UniRepLKNet"
    assert cfg["hf_hub_filename"] == "unireplknet_b_in22k_to_in1k_384_acc87.40.pth"
    assert cfg["input_size"] == (3, 384, 384)


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="one kernel size per block"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kernel_sizes=((3,), (13,), (13, 3), (13,)))
    with pytest.raises(ValueError, match="kernel_size must be one of"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kernel_sizes=((3,), (12,), (13,), (13,)))
