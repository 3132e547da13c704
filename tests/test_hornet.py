"""HorNet: official checkpoint layout, parameter counts, gnConv and global filter behaviour, autocast."""

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models.hornet import GlobalLocalFilter, GnConv, HorNetStage

# Parameter counts of the official models (raoyongming/HorNet, hornet.py at ac9e210), counted by
# instantiating them with 1000 classes; the HorNet-L models with the 21841-class head of their ImageNet-22k
# weights.
OFFICIAL_PARAMS = {
    "zoo_hornet_tiny": 22_409_512,
    "zoo_hornet_tiny_gf": 22_991_848,
    "zoo_hornet_small": 49_528_264,
    "zoo_hornet_small_gf": 50_401_768,
    "zoo_hornet_base": 87_256_680,
    "zoo_hornet_base_gf": 88_421_352,
}
OFFICIAL_PARAMS_IN22K = {
    "zoo_hornet_large": 226_575_121,
    "zoo_hornet_large_gf": 228_322_129,
    "zoo_hornet_large_gf_384": 233_839_441,
}
SMALL = dict(base_dim=16, depths=(1, 1, 2, 1))

# Our key -> the official key (hornet.py: downsample_layers, stages.{i}.{j}, pwconv1/2, norm, head).
TO_OFFICIAL = (
    *checks.TO_CONVNEXT_LAYOUT,
    (r"\.mlp\.fc([12])\.", r".pwconv\1."),
    *checks.TO_BARE_HEAD,
)


test_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS, num_classes=1000)
test_in22k_parameter_counts_match_official = checks.official_parameter_count_test(
    OFFICIAL_PARAMS_IN22K, num_classes=21841
)


@pytest.mark.parametrize("name", ["zoo_hornet_tiny", "zoo_hornet_tiny_gf"])
def test_official_checkpoint_loads(tmp_path, name):
    reference = checks.random_model(name, std=0.1, **SMALL)
    official = checks.rename_keys(reference.state_dict(), TO_OFFICIAL)
    expected_shapes = {
        "downsample_layers.0.0.weight": (16, 3, 4, 4),
        "downsample_layers.0.1.weight": (16,),
        "downsample_layers.3.0.weight": (64,),
        "downsample_layers.3.1.weight": (128, 64, 2, 2),
        "stages.3.0.gnconv.proj_in.weight": (256, 128, 1, 1),
        "stages.3.0.gnconv.pws.3.weight": (128, 64, 1, 1),
        "stages.2.1.pwconv1.weight": (256, 64),
        "stages.2.1.gamma2": (64,),
        "norm.weight": (128,),
        "head.weight": (1000, 128),
    }
    if name.endswith("_gf"):
        # Order 5 at C=128: gates of 8+16+32+64+128 = 248 channels, half of them filtered at 7x4 (224 input).
        expected_shapes["stages.3.0.gnconv.dwconv.complex_weight"] = (124, 7, 4, 2)
        expected_shapes["stages.3.0.gnconv.dwconv.dw.weight"] = (124, 1, 3, 3)
        expected_shapes["stages.2.1.gnconv.dwconv.pre_norm.weight"] = (120,)
        expected_shapes["stages.1.0.gnconv.dwconv.weight"] = (56, 1, 7, 7)
    else:
        expected_shapes["stages.3.0.gnconv.dwconv.weight"] = (248, 1, 7, 7)
    checks.assert_shapes(official, expected_shapes)
    path, x = tmp_path / "checkpoint-best.pth", torch.randn(1, 3, 224, 224)
    checks.assert_loads_as_pretrained(name, {"model": official, "epoch": 299}, path, reference, x, **SMALL)


def test_global_filter_resized_at_load_equals_resized_at_runtime(tmp_path):
    """A 224 GF checkpoint loaded into a 384 model gives the 224 model's outputs on 384 inputs."""
    reference = checks.random_model("zoo_hornet_tiny_gf", std=0.1, **SMALL)
    path = tmp_path / "gf_224.pth"
    torch.save({"model": checks.rename_keys(reference.state_dict(), TO_OFFICIAL)}, path)
    model = checks.load_pretrained_file("zoo_hornet_tiny_gf", path, img_size=384, **SMALL)
    assert model.stages[3].blocks[0].gnconv.dwconv.complex_weight.shape == (124, 12, 7, 2)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_global_local_filter_with_identity_filters():
    """With an all-pass spectral filter and a centred delta 3x3 kernel both halves pass their input
    through, so the output is the post-norm of the pre-normalized input with halves interleaved."""
    torch.manual_seed(0)
    layer = GlobalLocalFilter(8, (3, 3)).eval()
    with torch.no_grad():
        layer.complex_weight.zero_()
        layer.complex_weight[..., 0] = 1.0
        layer.dw.weight.zero_()
        layer.dw.weight[:, :, 1, 1] = 1.0
        x = torch.randn(2, 8, 5, 7)  # a map of another size: the filter is resized to 5x4
        normed = layer.pre_norm(x)
        first, second = normed.chunk(2, dim=1)
        expected = layer.post_norm(torch.stack((first, second), dim=2).flatten(1, 2))
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_gnconv_recursion():
    """p_{k+1} = f_k(p_k) * q_k with widths C/2^(n-1) .. C (paper Sec. 3.1), here for order 5."""
    torch.manual_seed(0)
    layer = GnConv(32, order=5).eval()
    assert layer.dims == [2, 4, 8, 16, 32]
    x = torch.randn(1, 32, 9, 9)
    with torch.no_grad():
        projected = layer.proj_in(x)
        p, q = projected[:, :2], layer.dwconv(projected[:, 2:]) / 3
        offsets = [0, 2, 6, 14, 30, 62]
        p = p * q[:, offsets[0] : offsets[1]]
        for k, pw in enumerate(layer.pws, start=1):
            p = pw(p) * q[:, offsets[k] : offsets[k + 1]]
        torch.testing.assert_close(layer(x), layer.proj_out(p))


def _assert_finite_autocast_step(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return checks.assert_finite_autocast_step(model, x, dtype, loss=lambda out: out.float().pow(2).mean())


@pytest.mark.parametrize("name", ["zoo_hornet_tiny", "zoo_hornet_tiny_gf"])
def test_bf16_autocast_forward_backward_is_finite(name):
    model = timm.create_model(name, depths=(1, 1, 1, 1)).train()
    _assert_finite_autocast_step(model, torch.randn(1, 3, 224, 224), torch.bfloat16)


@pytest.mark.parametrize("global_filter", [False, True])
def test_order5_stage_under_fp16_autocast(global_filter):
    """A last stage (order-5 gnConv, the 7x7 map of a 224 input; 64 channels, as fp16 convolutions are
    slow on CPU) with unit-gain weights and layer scale 1, so that the gates are not damped by the 1e-6
    initialization: finite, and close to fp32."""
    torch.manual_seed(0)
    stage = HorNetStage(
        32, 64, depth=2, downsample=True, order=5, filter_size=(7, 4) if global_filter else None
    ).train()
    with torch.no_grad():
        for name, param in stage.named_parameters():
            if name.endswith("weight") and param.dim() > 1:
                param.normal_(0, param[0].numel() ** -0.5)
            elif "gamma" in name:
                param.fill_(1.0)
    x = torch.randn(1, 32, 14, 14) * 4
    with torch.no_grad():
        expected = stage(x)
    out = _assert_finite_autocast_step(stage, x, torch.float16)
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zoo_hornet_tiny", "zoo_hornet_tiny_gf"])
def test_fp16_autocast_forward_backward_is_finite(name):
    """fp16 convolutions are slow on CPU: HorNet-T's widths at 224 with one block per stage."""
    model = timm.create_model(name, depths=(1, 1, 1, 1)).train()
    _assert_finite_autocast_step(model, torch.randn(1, 3, 224, 224), torch.float16)
