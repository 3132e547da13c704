"""GFNet / GFNet-H: official checkpoint layout, parameter counts, the global filter and its resize rule, autocast."""

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers.spectral import GlobalFilter, global_filter, resize_filter
from zoo.models.gfnet import checkpoint_filter_fn

# Parameter counts of the official models (raoyongming/GFNet, gfnet.py at 2de48b6), counted by
# instantiating them with the arguments of the official main_gfnet.py.
OFFICIAL_PARAMS = {
    "zoo_gfnet_ti": 7_511_784,
    "zoo_gfnet_xs": 15_985_768,
    "zoo_gfnet_s": 24_869_608,
    "zoo_gfnet_b": 43_120_616,
    "zoo_gfnet_h_ti": 15_085_096,
    "zoo_gfnet_h_s": 32_162_632,
    "zoo_gfnet_h_b": 53_744_200,
}
SMALL = dict(img_size=32, patch_size=8, embed_dim=16, depth=3)
SMALL_H = dict(img_size=64, embed_dims=(8, 16, 16, 32), depths=(1, 2, 1, 1))

# Our key -> the official key (gfnet.py: GFNetPyramid's patch_embed.{0..3}, blocks.{i}.{j}, gamma; head).
TO_OFFICIAL = (
    (r"^patch_embed\.proj\.", "patch_embed.0.proj."),
    (r"^stages\.(\d)\.downsample\.", r"patch_embed.\1."),
    (r"^stages\.(\d)\.blocks\.(\d+)\.", r"blocks.\1.\2."),
    (r"\.ls\.gamma$", ".gamma"),
    (r"^head\.fc\.", "head."),
)


def _official_layout(model) -> dict:
    rules = TO_OFFICIAL if hasattr(model, "stages") else TO_OFFICIAL[-1:]
    return {"model": checks.rename_keys({k: v.clone() for k, v in model.state_dict().items()}, rules)}


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name, kwargs", [("zoo_gfnet_xs", SMALL), ("zoo_gfnet_h_ti", SMALL_H)])
def test_official_layout_loads_and_gives_the_same_output(name, kwargs):
    checkpoint = checks.check_random_model_round_trip(name, _official_layout, checkpoint_filter_fn, **kwargs)
    assert "head.weight" in checkpoint["model"]


def test_global_filter_is_a_circular_convolution():
    """irfft2(rfft2(x) * K) with orthonormal FFTs is the circular convolution of x with irfft2(K)."""
    x = torch.randn(2, 6, 7, 3)
    kernel = torch.randn(3, 6, 7)
    weight = torch.view_as_real(torch.fft.rfft2(kernel)).permute(1, 2, 0, 3)
    expected = torch.zeros_like(x)
    for dy in range(6):
        for dx in range(7):
            expected += kernel[:, dy, dx] * x.roll((dy, dx), dims=(1, 2))
    torch.testing.assert_close(global_filter(x, weight), expected, rtol=1e-4, atol=1e-4)


def _kernel_filter(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """The global filter of a ``(C, 3, 3)`` convolution (cross-correlation) kernel on ``size x size`` maps."""
    spatial = torch.zeros(kernel.shape[0], size, size)
    spatial[:, :3, :3] = kernel.flip((1, 2))
    return torch.view_as_real(torch.fft.rfft2(spatial.roll((-1, -1), (1, 2)))).permute(1, 2, 0, 3)


@pytest.mark.parametrize("size", [8, 6, 11, 12, 16])
def test_resized_filter_stays_close_to_the_same_convolution(size):
    """A filter learned on 8x8 maps that equals a 3x3 convolution, resized bilinearly to another map
    size, still approximates that convolution (and is it exactly at 8x8): the resize keeps the filter's
    meaning as a function of the normalized frequency."""
    kernel = torch.randn(4, 3, 3)
    x = torch.randn(2, size, size, 4)
    conv = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="circular"), kernel.unsqueeze(1), groups=4)
    expected = conv.permute(0, 2, 3, 1)
    error = (global_filter(x, _kernel_filter(kernel, 8)) - expected).norm() / expected.norm()
    assert error < (1e-5 if size == 8 else 0.3)


def test_forward_resize_is_bilinear_with_aligned_corners():
    weight = torch.randn(4, 3, 5, 2)
    resized = resize_filter(weight, (7, 4))
    assert resized.shape == (7, 4, 5, 2)
    torch.testing.assert_close(resized[0, 0], weight[0, 0])  # the zero frequency keeps its gain
    torch.testing.assert_close(resized[-1, -1], weight[-1, -1])
    torch.testing.assert_close(resized[3, 0], (weight[1, 0] + weight[2, 0]) / 2)  # 3 * 3/6 = 1.5
    assert resize_filter(weight, (4, 3)) is weight
    with pytest.raises(ValueError, match="adjacent"):
        resize_filter(weight, (7, 5), dims=(0, 2))


def test_a_flat_filter_is_a_gain_at_any_size():
    layer = GlobalFilter(dim=3, size=(4, 4))
    with torch.no_grad():
        layer.complex_weight.zero_()
        layer.complex_weight[..., 0] = 0.5
    for size in [(4, 4), (9, 5), (1, 1)]:
        x = torch.randn(2, *size, 3)
        torch.testing.assert_close(layer(x), 0.5 * x, rtol=1e-5, atol=1e-5)


def test_new_img_size_resizes_filters_and_pos_embed_as_official_finetuning():
    """Built with another img_size, the model takes a checkpoint with its filters and position
    embedding interpolated bicubically, as main_gfnet.py --finetune does (written out here)."""
    source = timm.create_model("zoo_gfnet_ti", **SMALL)
    checks.randomize_parameters(source, std=0.1)
    checkpoint = _official_layout(source)
    model = timm.create_model("zoo_gfnet_ti", **dict(SMALL, img_size=48))
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model))

    weight = checkpoint["model"]["blocks.1.filter.complex_weight"]  # (4, 3, C, 2) -> (6, 4, C, 2)
    h, w, c, _ = weight.shape
    expected = F.interpolate(weight.reshape(1, h, w, 2 * c).permute(0, 3, 1, 2), size=(6, 4), mode="bicubic",
                             align_corners=True).permute(0, 2, 3, 1).reshape(6, 4, c, 2)  # fmt: skip
    torch.testing.assert_close(model.blocks[1].filter.complex_weight.data, expected)
    pos = checkpoint["model"]["pos_embed"].reshape(1, 4, 4, c).permute(0, 3, 1, 2)
    expected = F.interpolate(pos, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)
    torch.testing.assert_close(model.pos_embed.data, expected)


def test_other_input_sizes_resize_filters_and_pos_embed_bilinearly():
    """At a map size other than img_size's, the forward pass equals that of a model whose filters and
    position embedding were interpolated bilinearly (aligned corners for the filters)."""
    model = checks.random_model("zoo_gfnet_ti", std=0.1, **SMALL)
    resized = timm.create_model("zoo_gfnet_ti", **dict(SMALL, img_size=(40, 56))).eval()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("complex_weight"):
            value = resize_filter(value, (5, 4))
        elif key == "pos_embed":
            grid = value.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
            value = F.interpolate(grid, size=(5, 7), mode="bilinear").permute(0, 2, 3, 1).flatten(1, 2)
        state[key] = value
    resized.load_state_dict(state)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(x), resized(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_global_filter_runs_in_fp32_under_autocast_with_large_activations(dtype):
    layer = GlobalFilter(dim=8, size=(14, 14))
    x = (torch.randn(2, 14, 14, 8) * 200).requires_grad_()
    out = checks.assert_autocast_keeps_fp32(layer, x, dtype)
    with torch.autocast("cpu", dtype=dtype):
        half_out = layer(x.detach().to(dtype))
    assert half_out.dtype == dtype
    torch.testing.assert_close(half_out.float(), layer(x.detach().to(dtype).float()).to(dtype).float())
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.complex_weight.grad).all()


@pytest.mark.parametrize("name, kwargs", [("zoo_gfnet_ti", SMALL), ("zoo_gfnet_h_ti", SMALL_H)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_forward_backward(name, kwargs, dtype):
    model = timm.create_model(name, **kwargs).train()
    checks.assert_finite_autocast_step(model, torch.randn(2, 3, 56, 40) * 200, dtype, every_parameter=False)


@pytest.mark.slow
def test_compiled_model_matches_eager_at_another_size():
    model = timm.create_model("zoo_gfnet_h_ti", **SMALL_H).eval()
    checks.assert_compiled_matches_eager(model, torch.randn(2, 3, 72, 48))
