"""AFFNet: official checkpoint layout, parameter counts, the adaptive frequency filter, any input size, autocast."""

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models.affnet import AdaptiveFrequencyFilter, AFFNet, StdLayerNorm2d, checkpoint_filter_fn

# Parameter counts of the official models (microsoft/TokenMixers, "Adaptive Frequency Filters/" at 99dbe38),
# counted by instantiating affnet.models.classification.affnet.AffNet in modes xx_small / x_small / small.
OFFICIAL_PARAMS = {
    "zoo_affnet_et": 1_436_264,
    "zoo_affnet_t": 2_654_232,
    "zoo_affnet": 5_568_696,
}
SMALL = dict(stem_dim=8, dims=(8, 16, 16, 24, 32), depths=(1, 2, 1, 1, 1), aff_depths=(0, 0, 1, 2, 1),
             expand_ratio=2.0, final_dim=48)  # fmt: skip

# Our key -> the official cvnets key, applied in order (the AFF layer's norm becomes global_rep.{depth}).
TO_OFFICIAL = (
    (r"\.conv\.", ".block.conv."),
    (r"\.bn\.", ".block.norm."),
    *checks.TO_CVNETS_INVERTED_RESIDUAL,
    (r"\.blocks\.", ".global_rep."),
    (r"^stem\.", "conv_1."),
    (r"^final_conv\.", "conv_1x1_exp."),
    (r"^head\.fc\.", "classifier.fc."),
    (r"^stages\.(\d)\.", lambda m: f"layer_{int(m.group(1)) + 1}."),
)


def _official_layout(model) -> dict:
    state_dict = {key: value.clone() for key, value in model.state_dict().items()}
    return {"model": checks.rename_keys(checks.move_norms_after_blocks(model, state_dict), TO_OFFICIAL)}


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("attn_norm", ["layer_norm", "layer_norm_2d"])
def test_official_layout_loads_and_gives_the_same_output(attn_norm):
    source = timm.create_model("zoo_affnet", attn_norm=attn_norm, **SMALL).eval()
    checks.randomize_state(source, std=0.3)
    checkpoint = _official_layout(source)
    official = checkpoint["model"]
    assert {"conv_1.block.conv.weight", "layer_4.1.global_rep.2.weight", "layer_4.1.global_rep.1.filter.w1",
            "layer_4.1.global_rep.0.mlp.block.red_1x1.block.norm.running_var", "layer_4.1.fusion.block.conv.weight",
            "classifier.fc.bias"} <= set(official)  # fmt: skip
    x = torch.randn(2, 3, 64, 64)
    checks.check_checkpoint_filter(
        "zoo_affnet", checkpoint, checkpoint_filter_fn, source, x, attn_norm=attn_norm, **SMALL
    )


def test_own_layout_passes_through():
    model = timm.create_model("zoo_affnet", **SMALL)
    state = model.state_dict()
    assert checkpoint_filter_fn({"state_dict": state}, model).keys() == state.keys()


def _reference_filter(layer: AdaptiveFrequencyFilter, x: torch.Tensor) -> torch.Tensor:
    """The filter written with complex matrices: ``M = S(W2 (act(Re h) + i act(Im h)) + b2)``, ``h = W1 X + b1``."""
    w1, b1 = torch.complex(*layer.w1), torch.complex(*layer.b1)
    w2, b2 = torch.complex(*layer.w2), torch.complex(*layer.b2)
    freq = torch.fft.rfft2(x, norm="ortho")  # (B, C, H, W')
    blocks = freq.permute(0, 2, 3, 1).unflatten(-1, (layer.num_blocks, -1))  # (B, H, W', k, d)
    hidden = torch.einsum("...kd,kde->...ke", blocks, w1) + b1
    hidden = torch.complex(F.silu(hidden.real), F.silu(hidden.imag))
    logits = torch.einsum("...kd,kde->...ke", hidden, w2) + b2
    mask = torch.complex(F.softshrink(logits.real, 0.01), F.softshrink(logits.imag, 0.01))
    mask = mask.flatten(-2).permute(0, 3, 1, 2)
    return x + torch.fft.irfft2(freq * mask, s=x.shape[-2:], norm="ortho")


@pytest.mark.parametrize("size", [(8, 8), (7, 6), (1, 5)])
def test_filter_matches_its_complex_formula_at_any_size(size):
    torch.manual_seed(0)
    layer = AdaptiveFrequencyFilter(16, num_blocks=4)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.5)
    x = torch.randn(2, 16, *size)
    torch.testing.assert_close(layer(x), _reference_filter(layer, x), rtol=1e-5, atol=1e-5)


def test_a_constant_mask_is_a_gain_and_softshrink_drops_small_masks():
    layer = AdaptiveFrequencyFilter(8)
    x = torch.randn(2, 8, 5, 9)
    with torch.no_grad():
        layer.w2.zero_()
        layer.b2.zero_()
        layer.b2[0] = 0.51  # real part 0.51 -> 0.5 after the softshrink of 0.01
    torch.testing.assert_close(layer(x), 1.5 * x, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        layer.b2[0] = 0.009  # within the threshold: the mask is 0 and the filter is the identity
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)


def test_filter_rejects_a_width_the_blocks_do_not_divide():
    with pytest.raises(ValueError, match="num_blocks 8 must divide the width 12"):
        AdaptiveFrequencyFilter(12)


def test_std_layer_norm_adds_eps_to_the_standard_deviation():
    norm = StdLayerNorm2d(6, eps=0.5)
    x = torch.randn(2, 6, 3, 4)
    std, mean = torch.std_mean(x, dim=1, keepdim=True, unbiased=False)
    torch.testing.assert_close(norm(x), (x - mean) / (std + 0.5))


def test_unknown_attn_norm_is_refused():
    with pytest.raises(ValueError, match="attn_norm must be one of"):
        AFFNet(attn_norm="batch_norm")


@pytest.mark.parametrize("size", [(64, 64), (72, 40), (33, 47)])
def test_any_input_size_gives_feature_maps_of_every_stride(size):
    """No parameter depends on the input size (the filters are predicted from the map), so any size runs."""
    model = timm.create_model("zoo_affnet", **SMALL).eval()
    with torch.no_grad():
        features = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    for feature, info in zip(features, model.feature_info):
        expected = list(size)
        for _ in range(info["reduction"].bit_length() - 1):
            expected = [(s + 1) // 2 for s in expected]
        assert feature.shape == (1, info["num_chs"], *expected)
        assert torch.isfinite(feature).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_filter_runs_in_fp32_under_autocast_with_large_activations(dtype):
    layer = AdaptiveFrequencyFilter(16)
    x = (torch.randn(2, 16, 14, 14) * 200).requires_grad_()
    out = checks.assert_autocast_keeps_fp32(layer, x, dtype)
    with torch.autocast("cpu", dtype=dtype):
        half_out = layer(x.detach().to(dtype))
    assert half_out.dtype == dtype
    half_x = x.detach().to(dtype)
    filtered = layer(half_x.float()) - half_x.float()  # fp32 spectrum work, then the residual in the input dtype
    torch.testing.assert_close(half_out, filtered.to(dtype) + half_x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_forward_backward(dtype):
    model = timm.create_model("zoo_affnet", **SMALL).train()
    checks.assert_finite_autocast_step(model, torch.randn(2, 3, 56, 40) * 200, dtype, every_parameter=False)


@pytest.mark.slow
def test_compiled_model_matches_eager_at_another_size():
    checks.assert_compiled_matches_eager(timm.create_model("zoo_affnet", **SMALL).eval(), torch.randn(2, 3, 72, 48))
