"""Building blocks of the family tests: tiny models with weights that make every tensor of a checkpoint
matter, official key layouts written as renaming rules, loading through timm's ``pretrained=True``, and
the checks several families repeat (re-parameterization, autocast, gradient checkpointing, the zoo
depthwise kernel's calls)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from timm.utils import reparameterize_model

import zoo.layers.dwconv
from zoo.models import tiny_kwargs

# Our keys -> official ones, for layouts that several families' official code shares. ConvNeXt's: the stem
# is ``downsample_layers.0``, stage i's downsampling ``downsample_layers.i`` and its blocks ``stages.i.j``.
TO_CONVNEXT_LAYOUT = (
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
)
# A classifier head's linear as a bare ``head``; a NormMlpClassifierHead's norm and linear as a bare final
# ``norm`` and ``head``.
TO_BARE_LINEAR_HEAD = ((r"^head\.fc\.", "head."),)
TO_BARE_HEAD = ((r"^head\.norm\.", "norm."), *TO_BARE_LINEAR_HEAD)
# timm's InvertedResidual as cvnets' (``exp_1x1`` / ``conv_3x3`` / ``red_1x1`` conv-norm layers).
TO_CVNETS_INVERTED_RESIDUAL = (
    (r"\.conv_pw\.", ".block.exp_1x1.block.conv."),
    (r"\.bn1\.", ".block.exp_1x1.block.norm."),
    (r"\.conv_dw\.", ".block.conv_3x3.block.conv."),
    (r"\.bn2\.", ".block.conv_3x3.block.norm."),
    (r"\.conv_pwl\.", ".block.red_1x1.block.conv."),
    (r"\.bn3\.", ".block.red_1x1.block.norm."),
)


# Our stage parts -> the per-stage numbered names of PVT's layout (VAN's and hierarchical SpectFormer's too).
_PVT_STAGE_PARTS = {"downsample": "patch_embed", "blocks": "block", "norm": "norm", "pos_embed": "pos_embed"}


def to_pvt_layout(state_dict: dict) -> dict:
    """Our keys under PVT's layout: stage i's downsampling, blocks, norm and position embedding as
    ``patch_embed{i+1}``, ``block{i+1}``, ``norm{i+1}``, ``pos_embed{i+1}``, the MLP's depthwise convolution
    wrapped once more (``mlp.dwconv.dwconv``), and a bare ``head`` linear."""

    def numbered(match: re.Match) -> str:
        return f"{_PVT_STAGE_PARTS[match[2]]}{int(match[1]) + 1}"

    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"^stages\.(\d+)\.(downsample|blocks|norm|pos_embed)\b", numbered, key)
        key = re.sub(r"^head\.fc\.", "head.", key.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv."))
        official[key] = value
    return official


def parameter_count(name: str, **kwargs) -> int:
    """Parameters of the registered model ``name``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def official_parameter_count_test(counts: dict[str, int], **kwargs) -> Callable:
    """A family's parameter-count test, to bind to a ``test_*`` name of its module: parametrized over the
    models of ``counts``, each (built with ``kwargs``) has the official count."""

    @pytest.mark.parametrize("name", sorted(counts))
    def test(name):
        assert parameter_count(name, **kwargs) == counts[name]

    return test


def move_norms_after_blocks(model: torch.nn.Module, state_dict: dict) -> dict:
    """cvnets' layout of a global representation (MobileViT-style ``stages.{i}.{j}`` with ``blocks`` and a
    final ``norm``): the norm is the entry after the blocks, ``stages.{i}.{j}.blocks.{depth}``."""
    moved = {}
    for key, value in state_dict.items():
        match = re.match(r"^(stages\.\d\.\d)\.norm\.(.*)$", key)
        if match:
            key = f"{match[1]}.blocks.{len(model.get_submodule(match[1]).blocks)}.{match[2]}"
        moved[key] = value
    return moved


def rename_keys(state_dict: dict, rules: tuple) -> dict:
    """Each key rewritten by the ``(pattern, replacement)`` rules in order, as ``re.sub`` does."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def randomize_batchnorm(model: torch.nn.Module, scale_suffixes: tuple[str, ...] = (), seed: int = 0) -> None:
    """Random BatchNorm parameters and statistics, and the parameters named ``*<suffix>`` (layer scales,
    usually 1e-6 or zero at init) of order one, so that every tensor of a checkpoint matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        for name, param in model.named_parameters():
            if scale_suffixes and name.endswith(scale_suffixes):
                param.copy_(torch.randn(param.shape, generator=generator))


def tiny_model(name: str, scale_suffixes: tuple[str, ...] = (), **kwargs) -> torch.nn.Module:
    """The registered model at its tiny test size (``kwargs`` override it), in eval mode, with
    :func:`randomize_batchnorm` applied."""
    model = timm.create_model(name, **dict(tiny_kwargs(name), **kwargs)).eval()
    randomize_batchnorm(model, scale_suffixes)
    return model


def randomize_parameters(model: torch.nn.Module, std: float, seed: int = 0) -> None:
    """Every parameter drawn from N(0, std²) (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, std, generator=generator)


def random_model(name: str, std: float = 0.05, **kwargs) -> torch.nn.Module:
    """The registered model in eval mode with every parameter drawn from N(0, std²) (seeded)."""
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    randomize_parameters(model, std)
    return model


def randomize_state(model: torch.nn.Module, std: float = 0.1, seed: int = 0, around_init: bool = False) -> None:
    """Every floating tensor of the state dict random, buffers included, so that every tensor of a checkpoint
    matters: N(0, std²) (added to the initial value with ``around_init``), BatchNorm running variances
    uniform in [0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + (tensor if around_init else 0))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def load_pretrained_file(name: str, path: str | Path, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=True)`` loading the local checkpoint at ``path``, in eval mode."""
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def load_checkpoint(name: str, checkpoint: dict, directory: Path, **kwargs) -> torch.nn.Module:
    """``checkpoint`` saved as ``directory / "official.pth"`` and loaded by :func:`load_pretrained_file`."""
    path = Path(directory) / "official.pth"
    torch.save(checkpoint, path)
    return load_pretrained_file(name, path, **kwargs)


def assert_same_outputs(model: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor, **tolerances) -> None:
    """``model(x)`` equals ``reference(x)``: to the bit unless ``rtol`` / ``atol`` are given."""
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), **(tolerances or dict(rtol=0, atol=0)))


def assert_shapes(state_dict: dict, expected_shapes: dict) -> None:
    """Each key of ``expected_shapes`` is in ``state_dict`` with that shape."""
    for key, shape in expected_shapes.items():
        assert tuple(state_dict[key].shape) == shape, key


def assert_loads_as_pretrained(
    name: str, checkpoint: dict, path: Path, reference: torch.nn.Module, x: torch.Tensor, **kwargs
) -> None:
    """``checkpoint`` saved at ``path`` and loaded by :func:`load_pretrained_file` gives ``reference``'s
    outputs, bit for bit."""
    torch.save(checkpoint, path)
    assert_same_outputs(load_pretrained_file(name, path, **kwargs), reference, x)


def check_official_checkpoint(
    name: str,
    official_layout: Callable[[dict], dict],
    directory: Path,
    x: torch.Tensor,
    expected_keys: set[str] = frozenset(),
    wrapper: str = "model",
    **kwargs,
) -> tuple[torch.nn.Module, dict]:
    """A :func:`random_model` (built with ``kwargs``), its state dict written by ``official_layout``, holds
    ``expected_keys``; saved as ``{wrapper: ..., "epoch": 299}`` and loaded by :func:`load_checkpoint`, it
    gives the model's outputs, bit for bit. Returns the model and the official state dict."""
    source = random_model(name, **kwargs)
    official = official_layout(source.state_dict())
    assert expected_keys <= set(official)
    model = load_checkpoint(name, {wrapper: official, "epoch": 299}, directory, **kwargs)
    assert_same_outputs(model, source, x)
    return source, official


def load_at_another_size(
    name: str, official_layout: Callable[[dict], dict], directory: Path, other_size: int, **kwargs
) -> torch.nn.Module:
    """A :func:`random_model` (built with ``kwargs``), written by ``official_layout`` as a ``{"model": ...}``
    checkpoint, loads by :func:`load_checkpoint` into a model built for ``img_size=other_size``, whose output
    at that size is finite. Returns that model."""
    official = official_layout(random_model(name, **kwargs).state_dict())
    model = load_checkpoint(name, {"model": official}, directory, **dict(kwargs, img_size=other_size))
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, other_size, other_size))).all()
    return model


def assert_filter_loads(
    model: torch.nn.Module, checkpoint: dict, checkpoint_filter_fn: Callable, source: torch.nn.Module, x: torch.Tensor
) -> None:
    """``model`` loads ``checkpoint`` (strictly) through the family's ``checkpoint_filter_fn`` and gives
    ``source``'s outputs, bit for bit."""
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model))
    assert_same_outputs(model, source, x)


def check_checkpoint_filter(
    name: str, checkpoint: dict, checkpoint_filter_fn: Callable, source: torch.nn.Module, x: torch.Tensor, **kwargs
) -> None:
    """A fresh ``name`` model loads ``checkpoint`` through the family's ``checkpoint_filter_fn`` and gives
    ``source``'s outputs, bit for bit."""
    assert_filter_loads(timm.create_model(name, **kwargs).eval(), checkpoint, checkpoint_filter_fn, source, x)


def check_random_model_round_trip(
    name: str, official_layout: Callable[[torch.nn.Module], dict], checkpoint_filter_fn: Callable, **kwargs
) -> dict:
    """A :func:`random_model` (std 0.1, built with ``kwargs``, ``img_size`` among them) written as a checkpoint
    by ``official_layout`` passes :func:`check_checkpoint_filter` at ``img_size``. Returns the checkpoint."""
    source = random_model(name, std=0.1, **kwargs)
    checkpoint = official_layout(source)
    x = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"])
    check_checkpoint_filter(name, checkpoint, checkpoint_filter_fn, source, x, **kwargs)
    return checkpoint


def check_official_layout(
    tiny: Callable[[], torch.nn.Module],
    official_layout: Callable[[dict], dict],
    checkpoint_filter_fn: Callable,
    x: torch.Tensor,
    expected_keys: set[str] = frozenset(),
    wrap: Callable[[dict], dict] = lambda state_dict: state_dict,
    reparameterize: bool = False,
) -> dict:
    """A ``tiny()`` model (first folded by :func:`check_reparameterization` with ``reparameterize``), its
    state dict written by ``official_layout``, holds ``expected_keys``, and, wrapped by ``wrap`` as the
    official training script saves it, passes :func:`assert_filter_loads` into a fresh ``tiny()`` at ``x``.
    Returns the official state dict."""
    source = check_reparameterization(tiny(), x) if reparameterize else tiny()
    state_dict = official_layout(source.state_dict())
    assert expected_keys <= set(state_dict)
    assert_filter_loads(tiny(), wrap(dict(state_dict)), checkpoint_filter_fn, source, x)
    return state_dict


def assert_compiled_matches_eager(model: torch.nn.Module, x: torch.Tensor) -> None:
    """``torch.compile(model)(x)`` equals ``model(x)`` to 1e-4."""
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)


def assert_maps_round_up(model: torch.nn.Module, sizes: tuple, reductions: tuple = (4, 8, 16, 32)) -> None:
    """At each input size every stage's map is the input size over the stage's reduction, rounded up."""
    with torch.no_grad():
        for size in sizes:
            _, intermediates = model.forward_intermediates(torch.randn(1, 3, *size))
            for feature, r in zip(intermediates, reductions):
                assert feature.shape[-2:] == (-(-size[0] // r), -(-size[1] // r))


def check_reparameterization(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """timm's ``reparameterize_model`` gives the same outputs (to 1e-5 relative), and so does the model's own
    ``reparameterize()``, bit for bit with timm's; returns timm's folded copy."""
    with torch.no_grad():
        expected = model(x)
        folded = reparameterize_model(model)
        assert relative_difference(folded(x), expected) < 1e-5
        model.reparameterize()
        torch.testing.assert_close(model(x), folded(x), rtol=0, atol=0)
    return folded


def record_depthwise_calls(monkeypatch, record: Callable | None = None) -> list:
    """Route ``zoo.layers.dwconv.depthwise_conv2d`` through a recorder: each call appends
    ``record(x, weight, *args, **kwargs)`` (by default the kernel's spatial shape) to the returned list."""
    calls = []
    kernel = zoo.layers.dwconv.depthwise_conv2d
    record = record or (lambda x, weight, *args, **kwargs: tuple(weight.shape[-2:]))

    def recording(x, weight, *args, **kwargs):
        calls.append(record(x, weight, *args, **kwargs))
        return kernel(x, weight, *args, **kwargs)

    monkeypatch.setattr(zoo.layers.dwconv, "depthwise_conv2d", recording)
    return calls


def kernel_shape_and_channels_last(x: torch.Tensor, weight: torch.Tensor, *args, **kwargs) -> tuple:
    """A recorder for :func:`record_depthwise_calls`: the kernel's spatial shape and whether the input is
    channels_last."""
    return tuple(weight.shape[-2:]), x.is_contiguous(memory_format=torch.channels_last)


def assert_finite_autocast_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    dtype: torch.dtype,
    loss: Callable[[torch.Tensor], torch.Tensor] = lambda out: out.float().logsumexp(-1).sum(),
    every_parameter: bool = True,
) -> torch.Tensor:
    """Forward under CPU autocast to ``dtype`` and backward: finite outputs and finite gradients (for every
    parameter, or, with ``every_parameter=False``, for those that get one). Returns the output."""
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert torch.isfinite(out).all()
    loss(out).backward()
    for name, param in model.named_parameters():
        if every_parameter or param.grad is not None:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    return out


def assert_autocast_keeps_fp32(layer: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Under CPU autocast to ``dtype``, ``layer`` computes the fp32 input ``x`` in fp32: the same output, bit
    for bit, as without autocast. Returns that output (for a backward pass)."""
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # dtype included
    return out


def assert_bfloat16_autocast_close(model: torch.nn.Module, x: torch.Tensor, tolerance: float = 2e-2) -> None:
    """bf16 autocast stays within ``tolerance`` (relative to the largest logit) of fp32 in eval mode, and a
    training step under it has finite gradients everywhere."""
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert relative_difference(model(x).float(), expected) < tolerance
    assert_finite_autocast_step(model.train(), x, torch.bfloat16)


def assert_grad_checkpointing_same_gradients(model: torch.nn.Module, x: torch.Tensor) -> None:
    """``set_grad_checkpointing(True)`` leaves every parameter's gradient as it was."""
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], msg=name)
