"""SLaK: official checkpoint layout (training-time and re-parameterized), parameter counts, the
implicit-GEMM padding of the strips, folding, and the convolutions running through the zoo kernel."""

from functools import partial

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models import tiny_kwargs
from zoo.models.slak import checkpoint_filter_fn

# Parameter counts of the official dense models (VITA-Group/SLaK, models/SLaK.py at 44b4aab, with
# --Decom True --width_factor 1.3 --kernel_size 51 49 47 13 5 and 1000 classes), counted by
# instantiating them. The README's 30M / 55M / 95M count the non-zero weights of the sparse models.
OFFICIAL_PARAMS = {
    "zoo_slak_tiny": 50_703_838,
    "zoo_slak_small": 91_131_820,
    "zoo_slak_base": 157_950_792,
}

TO_OFFICIAL = (
    *checks.TO_CONVNEXT_LAYOUT,
    (r"\.mlp\.fc1\.", ".pwconv1."),
    (r"\.mlp\.fc2\.", ".pwconv2."),
    *checks.TO_BARE_HEAD,
)

# Some keys of the official training-time checkpoint layout.
TRAINING_KEYS = {
    "downsample_layers.0.0.weight", "downsample_layers.3.1.bias", "stages.2.0.large_kernel.LoRA2.bn.running_var",
    "stages.0.0.pwconv1.weight", "stages.0.0.gamma", "norm.weight", "head.weight",
}  # fmt: skip


def _tiny(name: str = "zoo_slak_tiny", **kwargs) -> torch.nn.Module:
    return checks.tiny_model(name, scale_suffixes=("gamma",), **kwargs)


test_parameter_count_equals_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_strips_pad_as_the_implicit_gemm_convolution():
    """The official convolution pads (kh // 2, kw // 2) whatever padding it is given: 51x5 pads (25, 2)."""
    with torch.device("meta"):
        model = timm.create_model("zoo_slak_tiny")
    lk = model.stages[0].blocks[0].large_kernel
    assert (lk.LoRA1.conv.kernel_size, lk.LoRA1.conv.padding) == ((51, 5), (25, 2))
    assert (lk.LoRA2.conv.kernel_size, lk.LoRA2.conv.padding) == ((5, 51), (2, 25))
    conv = lk.LoRA1.conv.__class__(6, (51, 5), bias=False)
    x = torch.randn(1, 6, 20, 17)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, padding=(25, 2), groups=6))


def _official_layout(state_dict: dict) -> dict:
    return checks.rename_keys(state_dict, TO_OFFICIAL)


_check_official_layout = partial(checks.check_official_layout, _tiny, _official_layout, checkpoint_filter_fn)


def test_training_time_checkpoint_loads():
    _check_official_layout(torch.randn(2, 3, 64, 96), TRAINING_KEYS, wrap=lambda sd: {"model": sd, "epoch": 299})


def test_reparameterize_matches_and_loads_as_the_official_deploy_layout():
    state_dict = _check_official_layout(torch.randn(2, 3, 96, 64), reparameterize=True)
    assert state_dict["stages.0.0.large_kernel.lkb_reparam.weight"].shape == (8, 1, 13, 13)
    assert not any(branch in key for key in state_dict for branch in ("LoRA", "small_conv"))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_every_branch_runs_through_the_zoo_kernel(monkeypatch, channels_last):
    model = timm.create_model("zoo_slak_tiny", dims=(4, 4, 4, 4), width_factor=1.0).eval()  # 18 blocks
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    model.to(memory_format=memory_format)
    calls = checks.record_depthwise_calls(monkeypatch, checks.kernel_shape_and_channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x.to(memory_format=memory_format)), expected)
        shapes = [shape for shape, _ in calls]
        for kernel_size, blocks in ((51, 3), (49, 3), (47, 9), (13, 3)):
            assert shapes.count((kernel_size, 5)) == shapes.count((5, kernel_size)) == blocks
        assert shapes.count((5, 5)) == 18 and len(calls) == 54
        # timm's LayerNorm2d (stem, downsampling) returns channels_last maps whatever it is given
        assert all(is_channels_last for _, is_channels_last in calls)
        calls.clear()
        model.reparameterize()
        model(x.to(memory_format=memory_format))
        assert sorted(shape for shape, _ in calls) == [(13, 13)] * 3 + [(47, 47)] * 9 + [(49, 49)] * 3 + [(51, 51)] * 3


def test_bfloat16_autocast_forward_backward():
    checks.assert_bfloat16_autocast_close(_tiny(), torch.randn(2, 3, 64, 64))


def test_pretrained_file_loads_through_timm(tmp_path):
    source = _tiny()
    checkpoint = {"model": _official_layout(source.state_dict()), "epoch": 299}
    path, x = tmp_path / "slak.pth", torch.randn(1, 3, 64, 64)
    checks.assert_loads_as_pretrained("zoo_slak_tiny", checkpoint, path, source, x, **tiny_kwargs("zoo_slak_tiny"))
