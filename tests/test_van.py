"""VAN: official checkpoint layout, parameter counts, LKA against a functional reference, autocast."""

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers import dwconv
from zoo.models.van import SpatialAttention

# Parameter counts of the official models (Visual-Attention-Network/VAN-Classification, models/van.py at
# e19779b, 1000 classes), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_van_b0": 4_105_800,
    "zoo_van_b1": 13_861_800,
    "zoo_van_b2": 26_578_472,
    "zoo_van_b3": 44_765_608,
    "zoo_van_b4": 60_283_176,
    "zoo_van_b5": 89_967_688,
    "zoo_van_b6": 199_829_416,
}
SHALLOW = dict(depths=(1, 1, 2, 1))


test_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("wrapper", ["state_dict", "module"])
def test_official_checkpoint_loads(tmp_path, wrapper):
    reference = timm.create_model("zoo_van_b0", **SHALLOW).eval()
    checks.randomize_state(reference)
    official = checks.to_pvt_layout(reference.state_dict())  # models/van.py's names are PVT's
    expected_shapes = {
        "patch_embed1.proj.weight": (32, 3, 7, 7),
        "patch_embed2.norm.running_var": (64,),
        "block3.1.attn.spatial_gating_unit.conv0.weight": (160, 1, 5, 5),
        "block3.1.attn.spatial_gating_unit.conv_spatial.weight": (160, 1, 7, 7),
        "block1.0.mlp.dwconv.dwconv.weight": (256, 1, 3, 3),
        "block4.0.layer_scale_2": (256,),
        "norm4.weight": (256,),
        "head.weight": (1000, 256),
    }
    checks.assert_shapes(official, expected_shapes)
    if wrapper == "module":
        official = {f"module.{k}": v for k, v in official.items()}
    checkpoint = {"state_dict": official, "epoch": 299, "arch": "van_b0"}
    path, x = tmp_path / "van_tiny_754.pth.tar", torch.randn(1, 3, 96, 80)
    checks.assert_loads_as_pretrained("zoo_van_b0", checkpoint, path, reference, x, **SHALLOW)


def _attention_reference(module: SpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """The official attention sub-block, written out with F.conv2d: 1x1, GELU, LKA, 1x1, inner shortcut."""
    sd = {k: v for k, v in module.state_dict().items()}
    c = x.shape[1]
    u = F.gelu(F.conv2d(x, sd["proj_1.weight"], sd["proj_1.bias"]))
    attn = F.conv2d(
        u, sd["spatial_gating_unit.conv0.weight"], sd["spatial_gating_unit.conv0.bias"], padding=2, groups=c
    )
    attn = F.conv2d(
        attn,
        sd["spatial_gating_unit.conv_spatial.weight"],
        sd["spatial_gating_unit.conv_spatial.bias"],
        padding=9,
        dilation=3,
        groups=c,
    )
    attn = F.conv2d(attn, sd["spatial_gating_unit.conv1.weight"], sd["spatial_gating_unit.conv1.bias"])
    return F.conv2d(u * attn, sd["proj_2.weight"], sd["proj_2.bias"]) + x


def test_large_kernel_attention_matches_reference_and_uses_the_kernel(monkeypatch):
    calls = []

    def recording(x, weight, bias=None, padding="same", dilation=1):
        calls.append((tuple(weight.shape[-2:]), tuple(dilation)))
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])

    monkeypatch.setattr(dwconv, "depthwise_conv2d", recording)
    torch.manual_seed(0)
    module = SpatialAttention(12).eval()
    x = torch.randn(2, 12, 23, 17)
    with torch.no_grad():
        torch.testing.assert_close(module(x), _attention_reference(module, x), rtol=1e-5, atol=1e-5)
    assert calls == [((5, 5), (1, 1)), ((7, 7), (3, 3))]


def test_bf16_autocast_forward_backward_is_finite():
    """B0's widths at 224 with one block per stage, to keep the test fast."""
    model = timm.create_model("zoo_van_b0", depths=(1, 1, 1, 1)).train()
    checks.assert_finite_autocast_step(model, torch.randn(1, 3, 224, 224), torch.bfloat16)


@pytest.mark.slow
def test_fp16_autocast_forward_backward_is_finite():
    """fp16 convolutions are slow on CPU: B0's widths at 224 with one block per stage."""
    model = timm.create_model("zoo_van_b0", depths=(1, 1, 1, 1)).train()
    checks.assert_finite_autocast_step(model, torch.randn(1, 3, 224, 224), torch.float16)
