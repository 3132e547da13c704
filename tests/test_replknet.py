"""RepLKNet: official and mmpretrain checkpoint layouts (training-time and re-parameterized), parameter
counts, folding, and the large-kernel convolutions running through the zoo kernel."""

import re

import pytest
import timm
import torch
from timm.utils import reparameterize_model

import zoo  # noqa: F401
import zoo.layers.dwconv
from zoo.models import tiny_kwargs
from zoo.models.replknet import checkpoint_filter_fn

# Parameter counts of the official models (DingXiaoH/RepLKNet-pytorch, replknet.py at b76808a,
# create_RepLKNet31B / 31L / XL with 1000 classes), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_replknet_31b": 79_864_168,
    "zoo_replknet_31b_384": 79_864_168,
    "zoo_replknet_31l_384": 172_671_016,
    "zoo_replknet_xl_320": 335_435_752,
}


def _official_layout(state_dict: dict, mmpretrain: bool = False, num_stages: int = 4) -> dict:
    """Our keys -> the official ones (transitions after each stage, a bare ``head`` linear), or
    mmpretrain's (``backbone.`` prefix, the final BatchNorm as the last stage's ``norm``, ``head.fc``)."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"transitions.{int(m[1]) - 1}.", key)
        if mmpretrain:
            key = key if key.startswith("head.") else "backbone." + key
            key = key.replace("backbone.norm.", f"backbone.stages.{num_stages - 1}.norm.")
        else:
            key = key.replace("head.fc.", "head.")
        out[key] = value
    return out


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random BatchNorm affine parameters and statistics, so that every tensor of a checkpoint matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)


def _tiny(name: str = "zoo_replknet_31b", **kwargs) -> torch.nn.Module:
    model = timm.create_model(name, **dict(tiny_kwargs(name), **kwargs)).eval()
    _randomize(model)
    return model


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("mmpretrain", [False, True], ids=["official", "mmpretrain"])
def test_training_time_checkpoint_loads(mmpretrain):
    source = _tiny()
    state_dict = _official_layout(source.state_dict(), mmpretrain=mmpretrain)
    expected_keys = (
        ["backbone.transitions.0.1.conv.weight", "backbone.stages.3.norm.running_var", "head.fc.weight"]
        if mmpretrain
        else ["transitions.2.0.bn.running_mean", "norm.weight", "head.weight"]
    )
    assert set(expected_keys) <= set(state_dict)
    wrapped = {"state_dict": state_dict, "meta": {}} if mmpretrain else {"model": state_dict}
    model = _tiny()
    model.load_state_dict(checkpoint_filter_fn(wrapped, model))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["zoo_replknet_31b", "zoo_replknet_xl_320"])
def test_reparameterize_matches_and_loads_as_the_official_deploy_checkpoint(name):
    model = _tiny(name)
    x = torch.randn(2, 3, 72, 56)
    with torch.no_grad():
        expected = model(x)
        folded = reparameterize_model(model)
        assert _relative_difference(folded(x), expected) < 1e-5
        model.reparameterize()
        torch.testing.assert_close(model(x), folded(x), rtol=0, atol=0)

    state_dict = _official_layout(folded.state_dict())
    assert "stages.0.blocks.0.large_kernel.lkb_reparam.bias" in state_dict
    assert not any("lkb_origin" in key or "small_conv" in key for key in state_dict)
    deployed = _tiny(name)
    deployed.load_state_dict(checkpoint_filter_fn(state_dict, deployed))
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), folded(x), rtol=0, atol=0)


def _count_kernel_calls(monkeypatch) -> list:
    calls = []
    kernel = zoo.layers.dwconv.depthwise_conv2d

    def counting(x, weight, *args, **kwargs):
        calls.append((tuple(weight.shape[-2:]), x.is_contiguous(memory_format=torch.channels_last)))
        return kernel(x, weight, *args, **kwargs)

    monkeypatch.setattr(zoo.layers.dwconv, "depthwise_conv2d", counting)
    return calls


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_large_kernels_run_through_the_zoo_kernel(monkeypatch, channels_last):
    model = _tiny()  # four RepLK blocks: kernels 13, 11, 7, 5 beside 5x5
    x = torch.randn(1, 3, 64, 64)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=memory_format)
        calls = _count_kernel_calls(monkeypatch)
        out = model(x.to(memory_format=memory_format))
        torch.testing.assert_close(out, expected)
        assert sorted(shape for shape, _ in calls) == sorted([(13, 13), (11, 11), (7, 7), (5, 5)] + [(5, 5)] * 4)
        assert all(is_channels_last == channels_last for _, is_channels_last in calls)
        calls.clear()
        model.reparameterize()
        model(x.to(memory_format=memory_format))
        assert sorted(shape for shape, _ in calls) == [(5, 5), (7, 7), (11, 11), (13, 13)]


def test_full_size_kernel_calls_per_forward(monkeypatch):
    """RepLKNet-31B: each of its 24 RepLK blocks runs its large kernel and its 5x5 kernel through the zoo
    kernel (one call per block once folded); shapes only, on a narrow copy of the model."""
    model = timm.create_model("zoo_replknet_31b", dims=(4, 4, 4, 4)).eval()
    calls = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert sorted({shape: None for shape, _ in calls}) == [(5, 5), (13, 13), (27, 27), (29, 29), (31, 31)]
        assert len(calls) == 48
        calls.clear()
        model.reparameterize()
        model(torch.randn(1, 3, 64, 64))
        assert len(calls) == 24 and all(shape != (5, 5) for shape, _ in calls)


def test_grad_checkpointing_gives_the_same_gradients():
    model = _tiny(drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 48, 40)
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], msg=name)


def test_bfloat16_autocast_forward_backward():
    model = _tiny()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _relative_difference(model(x).float(), expected) < 2e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train()(x)
    out.float().logsumexp(-1).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("layout", ["official_deploy", "mmpretrain"])
def test_pretrained_file_loads_through_timm(tmp_path, layout):
    """``pretrained=True`` with a local file in either layout: timm's loader runs the filter (which folds
    the model for a deploy checkpoint) and gives the source model's outputs."""
    source = _tiny()
    if layout == "official_deploy":
        source.reparameterize()
        checkpoint = {"model": _official_layout(source.state_dict())}
    else:
        checkpoint = {"state_dict": _official_layout(source.state_dict(), mmpretrain=True), "meta": {}}
    path = tmp_path / "replknet.pth"
    torch.save(checkpoint, path)
    name = "zoo_replknet_31b"
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **tiny_kwargs(name)
    ).eval()
    assert hasattr(model.stages[0].blocks[0].large_kernel, "lkb_reparam") == (layout == "official_deploy")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
