"""ParCNetV2 and ParC-Net v1: official checkpoint layouts, parameter counts, the oversized and circular
convolutions against functional references written from the official code (autocast: test_autocast.py)."""

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models import parcnet, parcnetv2
from zoo.models.parcnet import CircularConvBranch
from zoo.models.parcnetv2 import CenteredL2Norm, OversizedConv2d

# Parameter counts of the official models (1000 classes), counted by instantiating them:
# XuRuihan/ParCNetV2 models/parcnetv2.py at b9d8524 and hkzhang91/ParC-Net (cvnets ``edgeformer``,
# config/classification/edgeformer/edgeformer_s.yaml) at f6780d0.
OFFICIAL_PARAMS = {
    "zoo_parcnetv2_xt": 7_427_720,
    "zoo_parcnetv2_t": 24_935_144,
    "zoo_parcnetv2_s": 39_436_520,
    "zoo_parcnetv2_b": 56_368_360,
    "zoo_parcnet_s": 5_037_088,
}

V2_SMALL = dict(dims=(16, 32, 48, 64), depths=(1, 1, 2, 1))
V1_SMALL = dict(depths=(1, 1, 1, 1, 1), parc_depths=(0, 0, 1, 2, 1))

# Our key -> the official key: ConvNeXt's layout (downsample_layers / stages.{i}.{j} / norm / head) with
# the stem's norm after its convolution (post_norm) and the downsampling layers' before (pre_norm).
V2_TO_OFFICIAL = (
    (r"^stem\.norm\.", "stem.post_norm."),
    (r"^(stages\.\d\.downsample)\.norm\.", r"\1.pre_norm."),
    *checks.TO_CONVNEXT_LAYOUT,
    *checks.TO_BARE_HEAD,
)

# Our key -> the official key (cvnets EdgeFormer: conv_1, layer_{1..5}, ConvLayer's block.conv / block.norm).
V1_TO_OFFICIAL = (
    (r"^stem\.conv\.", "conv_1.block.conv."),
    (r"^stem\.bn\.", "conv_1.block.norm."),
    (r"^final_conv\.conv\.", "conv_1x1_exp.block.conv."),
    (r"^final_conv\.bn\.", "conv_1x1_exp.block.norm."),
    (r"^head\.fc\.", "classifier.fc."),
    (r"^stages\.(\d)\.", lambda m: f"layer_{int(m.group(1)) + 1}."),
    *checks.TO_CVNETS_INVERTED_RESIDUAL,
    (r"\.conv_kxk\.conv\.", ".dim_adaptive.0.block.conv."),
    (r"\.conv_kxk\.bn\.", ".dim_adaptive.0.block.norm."),
    (r"\.conv_1x1\.", ".dim_adaptive.1.block.conv."),
    (r"\.conv_proj\.conv\.", ".channel_adaptive.block.conv."),
    (r"\.conv_proj\.bn\.", ".channel_adaptive.block.norm."),
    (r"\.conv_fusion\.conv\.", ".local_global_fusion.block.conv."),
    (r"\.conv_fusion\.bn\.", ".local_global_fusion.block.norm."),
    (r"\.branch_hw\.kernel_1$", ".meta_kernel_1_H"),
    (r"\.branch_hw\.kernel_2$", ".meta_kernel_2_W"),
    (r"\.branch_hw\.pe_1$", ".meta_pe_1_H"),
    (r"\.branch_hw\.pe_2$", ".meta_pe_2_W"),
    (r"\.branch_hw\.norm\.", ".pre_Norm_1."),
    (r"\.branch_wh\.kernel_1$", ".meta_kernel_1_W"),
    (r"\.branch_wh\.kernel_2$", ".meta_kernel_2_H"),
    (r"\.branch_wh\.pe_1$", ".meta_pe_1_W"),
    (r"\.branch_wh\.pe_2$", ".meta_pe_2_H"),
    (r"\.branch_wh\.norm\.", ".pre_Norm_2."),
    (r"\.blocks\.(\d+)\.norm\.", r".blocks.\1.ffn.0."),
    (r"\.mlp\.fc1\.", ".ffn.1."),
    (r"\.mlp\.fc2\.", ".ffn.4."),
    (r"\.ca\.reduce\.conv\.", ".ca.fc.0."),
    (r"\.ca\.reduce\.bn\.", ".ca.fc.1."),
    (r"\.ca\.expand\.conv\.", ".ca.fc.3."),
    (r"\.ca\.expand\.bn\.", ".ca.fc.4."),
    (r"\.blocks\.", ".spatial_global_rep."),
)


def _v1_to_official(model) -> dict:
    """The official layout: the fusion block's trailing BatchNorm is ``spatial_global_rep.{depth}``, the
    model also registers its last stage's first inverted residual as ``residual``, and the stem was
    trained on BGR input."""
    official = checks.rename_keys(checks.move_norms_after_blocks(model, model.state_dict()), V1_TO_OFFICIAL)
    official["conv_1.block.conv.weight"] = official["conv_1.block.conv.weight"].flip(1)
    last = max(int(k.split(".")[0][6:]) for k in official if k.startswith("layer_"))
    for key, value in list(official.items()):
        if key.startswith(f"layer_{last}.0."):
            official["residual." + key.removeprefix(f"layer_{last}.0.")] = value
    return official


test_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_oversized_kernels_are_2h_minus_1():
    with torch.device("meta"):
        model = timm.create_model("zoo_parcnetv2_xt")
    assert model.kernel_sizes == [(111, 111), (55, 55), (27, 27), (13, 13)]
    assert model.stages[0].blocks[0].token_mixer.dwconv1.conv_h.weight.shape == (48, 1, 111, 1)


def test_parcnetv2_official_checkpoint_loads(tmp_path):
    reference = timm.create_model("zoo_parcnetv2_xt", **V2_SMALL).eval()
    checks.randomize_state(reference, around_init=True)
    official = checks.rename_keys(reference.state_dict(), V2_TO_OFFICIAL)
    expected_shapes = {
        "downsample_layers.0.conv.weight": (16, 3, 7, 7),
        "downsample_layers.0.post_norm.weight": (16,),
        "downsample_layers.2.pre_norm.weight": (32,),
        "downsample_layers.3.conv.weight": (64, 48, 3, 3),
        "stages.0.0.token_mixer.pwconv1.weight": (32, 16, 1, 1),
        "stages.0.0.token_mixer.dwconv1.conv_h.weight": (16, 1, 111, 1),
        "stages.1.0.token_mixer.dwconv1.conv_w.weight": (32, 1, 1, 55),
        "stages.2.1.token_mixer.dwconv2.weight": (48, 1, 7, 7),
        "stages.2.1.token_mixer.pwconv2.weight": (48, 48, 1, 1),
        "stages.2.1.res_scale1.scale": (48,),
        "stages.3.0.mlp.fc1.weight": (320, 64),
        "stages.3.0.mlp.fc2.weight": (64, 160),
        "norm.weight": (64,),
        "head.weight": (1000, 64),
    }
    checks.assert_shapes(official, expected_shapes)
    assert not any(k.startswith("stages.0.0.res_scale") for k in official)
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in official.items()}, "epoch": 299}
    path, x = tmp_path / "parcnetv2_xt.pth.tar", torch.randn(1, 3, 72, 88)
    checks.assert_loads_as_pretrained("zoo_parcnetv2_xt", checkpoint, path, reference, x, **V2_SMALL)


def test_parcnetv2_checkpoint_resizes_kernels_to_the_model_size():
    reference = timm.create_model("zoo_parcnetv2_xt", **V2_SMALL)
    checks.randomize_state(reference, around_init=True)
    model = timm.create_model("zoo_parcnetv2_xt", img_size=128, **V2_SMALL)
    converted = parcnetv2.checkpoint_filter_fn(checks.rename_keys(reference.state_dict(), V2_TO_OFFICIAL), model)
    model.load_state_dict(converted, strict=True)
    kernel = reference.stages[1].blocks[0].token_mixer.dwconv1.conv_w.weight
    resized = F.interpolate(kernel, (1, 31), mode="bilinear", align_corners=True)
    torch.testing.assert_close(model.stages[1].blocks[0].token_mixer.dwconv1.conv_w.weight, resized)


def _official_oversized(module: OversizedConv2d, x: torch.Tensor) -> torch.Tensor:
    """The official OversizeConv2d, written with F.conv2d: fixed kernels with padding K // 2, or with
    ``interpolate=True`` kernels resized to (2H - 1, 2W - 1) and padding (H - 1, W - 1)."""
    c, h, w = x.shape[1:]
    weight_h, weight_w = module.conv_h.weight, module.conv_w.weight
    if module.interpolate:
        weight_h = F.interpolate(weight_h, [2 * h - 1, 1], mode="bilinear", align_corners=True)
        weight_w = F.interpolate(weight_w, [1, 2 * w - 1], mode="bilinear", align_corners=True)
    x = F.conv2d(x, weight_h, padding=(weight_h.shape[2] // 2, 0), groups=c)
    return F.conv2d(x, weight_w, padding=(0, weight_w.shape[3] // 2), groups=c)


@pytest.mark.parametrize("interpolate", [False, True])
def test_oversized_conv_matches_official_and_uses_the_kernel(monkeypatch, interpolate):
    calls = []

    def recording(x, weight, bias=None, padding="same", dilation=1):
        calls.append(tuple(weight.shape[-2:]))
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])

    monkeypatch.setattr(parcnetv2, "depthwise_conv2d", recording)
    torch.manual_seed(0)
    module = OversizedConv2d(6, 27, interpolate=interpolate)
    for size in [(14, 14), (9, 5), (20, 17)]:
        x = torch.randn(2, 6, *size)
        torch.testing.assert_close(module(x), _official_oversized(module, x), rtol=1e-5, atol=1e-5)
    # Interpolated kernels are (2H - 1, 2W - 1); fixed ones are cropped to the taps that can meet the map.
    expected = [(27, 27), (17, 9), (39, 33)] if interpolate else [(27, 27), (17, 9), (27, 27)]
    assert calls == [shape for kh, kw in expected for shape in ((kh, 1), (1, kw))]


def test_centered_l2_norm_matches_official():
    torch.manual_seed(0)
    norm = CenteredL2Norm(12)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 5, 4, 12)
    centered = x - x.mean(-1, keepdim=True)
    expected = centered / centered.norm(2, -1, keepdim=True).clamp_min(1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_parcnet_official_checkpoint_loads(tmp_path):
    reference = timm.create_model("zoo_parcnet_s", **V1_SMALL).eval()
    checks.randomize_state(reference, around_init=True)
    official = _v1_to_official(reference)
    expected_shapes = {
        "conv_1.block.conv.weight": (16, 3, 3, 3),
        "layer_1.0.block.exp_1x1.block.conv.weight": (64, 16, 1, 1),
        "layer_3.1.dim_adaptive.0.block.conv.weight": (192, 1, 3, 3),
        "layer_3.1.dim_adaptive.1.block.conv.weight": (192, 192, 1, 1),
        "layer_3.1.spatial_global_rep.0.meta_kernel_1_H": (96, 1, 32, 1),
        "layer_3.1.spatial_global_rep.0.meta_pe_2_W": (1, 96, 1, 32),
        "layer_4.1.spatial_global_rep.1.meta_kernel_2_H": (128, 1, 16, 1),
        "layer_4.1.spatial_global_rep.0.ffn.1.weight": (512, 256, 1, 1),
        "layer_4.1.spatial_global_rep.0.ca.fc.0.weight": (16, 256, 1, 1),
        "layer_4.1.spatial_global_rep.2.running_var": (256,),
        "layer_4.1.channel_adaptive.block.conv.weight": (128, 2, 1, 1),
        "layer_5.1.local_global_fusion.block.conv.weight": (160, 320, 3, 3),
        "residual.block.red_1x1.block.norm.running_mean": (160,),
        "conv_1x1_exp.block.conv.weight": (640, 160, 1, 1),
        "classifier.fc.weight": (1000, 640),
    }
    checks.assert_shapes(official, expected_shapes)
    assert "layer_4.1.spatial_global_rep.1.meta_pe_1_H" not in official  # embeddings in the first block only
    path, x = tmp_path / "checkpoint_ema_avg.pt", torch.rand(1, 3, 96, 96)
    checks.assert_loads_as_pretrained("zoo_parcnet_s", official, path, reference, x, **V1_SMALL)


def _official_branch(branch: CircularConvBranch, x: torch.Tensor) -> torch.Tensor:
    """The official gcc_ca_mf_block branch for a square map: meta-parameters resized to f_s = H, the
    circular padding written as a concatenation of the first ``f_s - 1`` rows (or columns)."""
    f_s = x.shape[2]

    def resize(param, axis):
        shape = [f_s, 1] if axis == "h" else [1, f_s]
        return F.interpolate(param, shape, mode="bilinear", align_corners=True)

    def conv(x, kernel, axis):
        dim = 2 if axis == "h" else 3
        return F.conv2d(torch.cat((x, x.narrow(dim, 0, f_s - 1)), dim=dim), kernel, groups=x.shape[1])

    first, second = branch.axes
    x = x + resize(branch.pe_1, first).expand(1, x.shape[1], f_s, f_s)
    x = conv(branch.norm(x), resize(branch.kernel_1, first), first)
    x = x + resize(branch.pe_2, second).expand(1, x.shape[1], f_s, f_s)
    return conv(x, resize(branch.kernel_2, second), second)


@pytest.mark.parametrize("first_axis", ["h", "w"])
def test_circular_branch_matches_official_and_uses_the_kernel(monkeypatch, first_axis):
    calls = []

    def recording(x, weight, bias=None, padding="same", dilation=1):
        calls.append((tuple(weight.shape[-2:]), padding))
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])

    monkeypatch.setattr(parcnet, "depthwise_conv2d", recording)
    torch.manual_seed(0)
    branch = CircularConvBranch(5, (8, 8), first_axis, use_pe=True).eval()
    checks.randomize_state(branch, around_init=True)
    for size in (8, 11, 6):
        x = torch.randn(2, 5, size, size)
        with torch.no_grad():
            torch.testing.assert_close(branch(x), _official_branch(branch, x), rtol=1e-5, atol=1e-5)
    lines = {"h": lambda n: (n, 1), "w": lambda n: (1, n)}
    second = "w" if first_axis == "h" else "h"
    assert calls == [c for n in (8, 11, 6) for c in ((lines[first_axis](n), 0), (lines[second](n), 0))]


def test_circular_conv_wraps_around():
    torch.manual_seed(0)
    x, kernel = torch.randn(1, 3, 5, 7), torch.randn(3, 1, 1, 7)
    expected = sum(kernel[:, 0, 0, k].view(1, 3, 1, 1) * torch.roll(x, -k, dims=3) for k in range(7))
    torch.testing.assert_close(parcnet.circular_conv(x, kernel, "w"), expected)
