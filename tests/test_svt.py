"""SVT-H: official layout, parameter counts, the wavelet transform, resize rule, autocast, the optional extra."""

import sys

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.spectral import resize_filter
from zoo.models.svt import ScatteringMixer, checkpoint_filter_fn, dtcwt_forward, dtcwt_inverse

pytorch_wavelets = pytest.importorskip("pytorch_wavelets")

from test_spectformer import official_layout  # noqa: E402

# Parameter counts of the official models (badripatro/svt, svt.py's svt_{s,b,l} at its current head),
# counted by instantiating them.
OFFICIAL_PARAMS = {"zoo_svt_h_s": 22_052_592, "zoo_svt_h_b": 32_878_544, "zoo_svt_h_l": 54_594_000}
SMALL = dict(img_size=64, stem_hidden_dim=8, embed_dims=(8, 16, 16, 32), num_heads=(1, 2, 2, 4), depths=(2, 1, 1, 1))


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_official_layout_loads_and_gives_the_same_output():
    checkpoint = checks.check_random_model_round_trip("zoo_svt_h_s", official_layout, checkpoint_filter_fn, **SMALL)
    assert "block1.1.attn.complex_weight_lh_b2" in checkpoint["model"]
    assert "block1.0.attn.xfm.h0o" in checkpoint["model"]  # pytorch_wavelets' filters are in the state dict


@pytest.mark.parametrize("size", [(16, 16), (10, 6), (2, 2)])
def test_dtcwt_equals_pytorch_wavelets_and_inverts(size):
    forward = pytorch_wavelets.DTCWTForward(J=1, biort="near_sym_b", qshift="qshift_b")
    inverse = pytorch_wavelets.DTCWTInverse(biort="near_sym_b", qshift="qshift_b")
    x = torch.randn(2, 3, *size)
    low, high = dtcwt_forward(x, forward.h0o, forward.h1o)
    expected_low, (expected_high,) = forward(x)
    torch.testing.assert_close(low, expected_low, rtol=0, atol=0)
    torch.testing.assert_close(high, expected_high, rtol=0, atol=0)
    other = torch.randn_like(high)
    torch.testing.assert_close(dtcwt_inverse(low, other, inverse.g0o, inverse.g1o), inverse((low, [other])))
    torch.testing.assert_close(dtcwt_inverse(low, high, inverse.g0o, inverse.g1o), x, rtol=1e-5, atol=1e-5)


def test_low_pass_weight_resizes_at_load_and_in_the_forward_pass():
    source = checks.random_model("zoo_svt_h_s", std=0.1, **SMALL)
    assert source.stages[0].blocks[0].attn.complex_weight_ll.shape == (8, 16, 16)
    bigger = timm.create_model("zoo_svt_h_s", **dict(SMALL, img_size=(88, 72))).eval()
    bigger.load_state_dict(checkpoint_filter_fn(official_layout(source), bigger))
    weight = source.stages[0].blocks[1].attn.complex_weight_ll
    expected = resize_filter(weight, (22, 18), dims=(1, 2), mode="bicubic")
    torch.testing.assert_close(bigger.stages[0].blocks[1].attn.complex_weight_ll.data, expected)

    state = {k: resize_filter(v, (22, 18), dims=(1, 2)) if k.endswith("complex_weight_ll") else v
             for k, v in source.state_dict().items()}  # fmt: skip
    bigger.load_state_dict(state)
    x = torch.randn(1, 3, 88, 72)
    with torch.no_grad():
        torch.testing.assert_close(source(x), bigger(x))


@pytest.mark.parametrize("size", [(7, 9), (1, 1), (12, 5)])
def test_odd_maps_are_padded_for_the_transform(size):
    mixer = ScatteringMixer(dim=8, size=(8, 8))
    x = torch.randn(2, *size, 8)
    padded = torch.cat([x, x[:, -1:]], 1) if size[0] % 2 else x
    padded = torch.cat([padded, padded[:, :, -1:]], 2) if size[1] % 2 else padded
    torch.testing.assert_close(mixer(x), mixer(padded)[:, : size[0], : size[1]])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_scattering_runs_in_fp32_under_autocast_with_large_activations(dtype):
    mixer = ScatteringMixer(dim=8, size=(14, 14))
    x = (torch.randn(2, 14, 14, 8) * 200).requires_grad_()
    out = checks.assert_autocast_keeps_fp32(mixer, x, dtype)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_forward_backward(dtype):
    model = timm.create_model("zoo_svt_h_s", **SMALL).train()
    checks.assert_finite_autocast_step(model, torch.randn(2, 3, 56, 40) * 200, dtype, every_parameter=False)


def test_missing_wavelets_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_wavelets", None)
    with pytest.raises(ImportError, match=r"pip install 'zoo\[wavelets\]'"):
        timm.create_model("zoo_svt_h_s", **SMALL)
