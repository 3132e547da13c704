"""The model contract: every registered zoo model, built tiny, walked through timm's API.

A new family gets these checks by registering its models and its tiny kwargs
(``zoo.models.register_tiny_kwargs``); nothing here names a family.
"""

import math

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the models)
from zoo.models import tiny_kwargs
from zoo.models._backbone import Backbone

MODELS = timm.list_models("zoo_*")
BATCH = 2


def _img_size(model) -> int:
    """The tiny instance's input size: its ``img_size`` kwarg, else its pretrained cfg's."""
    size = tiny_kwargs(model.pretrained_cfg["architecture"]).get("img_size")
    return size or model.pretrained_cfg["input_size"][-1]


def _build(name, **overrides):
    torch.manual_seed(0)
    return timm.create_model(name, **dict(tiny_kwargs(name), **overrides))


def _input(model, chans=3):
    torch.manual_seed(1)
    return torch.randn(BATCH, chans, _img_size(model), _img_size(model))


def _second_size(size: int) -> tuple[int, int]:
    """A non-square size different from the default, still comfortably above any minimum."""
    return size + size // 2, size + size // 4


def test_models_are_registered():
    assert len(MODELS) >= 6
    assert all(name.startswith("zoo_") for name in MODELS)
    assert set(timm.list_pretrained("zoo_swin_tiny*")) >= {"zoo_swin_tiny.ms_in1k"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    model = _build(name, num_classes=7)
    model.train()
    out = model(_input(model))
    assert out.shape == (BATCH, 7)
    out.float().pow(2).mean().backward()
    for pname, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{pname} received no gradient"
            assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", MODELS)
def test_head_api(name):
    model = _build(name, num_classes=0).eval()
    x = _input(model)
    with torch.no_grad():
        pooled = model(x)
        assert pooled.shape == (BATCH, model.num_features)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features, pre_logits=True), pooled, atol=1e-5)
        model.reset_classifier(5)
        assert model(x).shape == (BATCH, 5)
        assert model.get_classifier().out_features == 5


@pytest.mark.parametrize("name", MODELS)
def test_in_chans_and_second_size(name):
    model = _build(name, in_chans=1, num_classes=3).eval()
    size = _second_size(_img_size(model))
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 3)
        assert model(torch.randn(1, 1, *size[::-1])).shape == (1, 3)


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_raises(name):
    model = _build(name).eval()
    size = _img_size(model)
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(BATCH, 3 * size * size))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 4, size, size))
    with pytest.raises(ValueError, match=r"channels-last .* pass x\.permute\(0, 3, 1, 2\)"):
        model(torch.randn(1, size, size, 3))
    with pytest.raises(ValueError, match="expects a floating-point image batch .* got torch.uint8"):
        model(torch.zeros(1, 3, size, size, dtype=torch.uint8))


@pytest.mark.parametrize("name", MODELS)
def test_input_of_another_dtype_than_the_weights_raises(name):
    model = _build(name).eval()
    if not isinstance(model, Backbone):
        pytest.skip("the input dtype is checked by the shared backbone contract")
    x = _input(model)
    with pytest.raises(ValueError, match="torch.float32 weights and expects a torch.float32 batch, got torch.float16"):
        model(x.half())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.bfloat16()).shape == (BATCH, model.num_classes)


@pytest.mark.parametrize("name", MODELS)
def test_empty_batch(name):
    model = _build(name, num_classes=5).eval()
    x = _input(model)[:0]
    with torch.no_grad():
        assert model(x).shape == (0, 5)


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    full = _build(name).eval()
    num_stages = len(full.feature_info)
    out_indices = tuple(range(1, num_stages))
    model = _build(name, features_only=True, out_indices=out_indices).eval()
    size = _second_size(_img_size(full))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        features = model(x)
        _, intermediates = full.forward_intermediates(x, indices=list(out_indices))
    assert len(features) == len(out_indices)
    assert model.feature_info.channels() == [full.feature_info[i]["num_chs"] for i in out_indices]
    assert model.feature_info.reduction() == [full.feature_info[i]["reduction"] for i in out_indices]
    for feature, inter, channels, reduction in zip(
        features, intermediates, model.feature_info.channels(), model.feature_info.reduction()
    ):
        assert feature.shape[1] == channels
        assert all(abs(s - math.ceil(d / reduction)) <= 1 for s, d in zip(feature.shape[-2:], size))
        torch.testing.assert_close(feature, inter)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name):
    model = _build(name).eval()
    x = _input(model)
    num_stages = len(model.feature_info)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        only = model.forward_intermediates(x, indices=[num_stages - 1], intermediates_only=True)
        torch.testing.assert_close(final, model.forward_features(x))
    assert len(intermediates) == num_stages
    for feature, info in zip(intermediates, model.feature_info):
        assert feature.shape[:2] == (BATCH, info["num_chs"])
    torch.testing.assert_close(only[0], intermediates[-1])


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_and_determinism(name):
    model = _build(name).eval()
    x = _input(model)
    with torch.no_grad():
        first = model(x)
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), first)


@pytest.mark.parametrize("name", MODELS)
def test_save_for_hf_roundtrip(name, tmp_path):
    model = _build(name, num_classes=4).eval()
    kwargs = dict(tiny_kwargs(name), num_classes=4)
    timm.models.save_for_hf(model, tmp_path, model_args=kwargs, safe_serialization=True)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_jit_trace(name):
    model = _build(name).eval()
    x = _input(model)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))
