"""The downstream builds of the large-kernel and spectral families (RepLKNet, UniRepLKNet, SLaK, FFNet, AFFNet,
SVT, GFNet-H, SpectFormer-H): the output norms and model kwargs of their official detection/segmentation
backbones, the checkpoint names of those norms, and the maps' shapes at a non-square size."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from zoo.adapters._features import DenseBackbone, downstream_cfg
from zoo.models import tiny_kwargs

HEIGHT, WIDTH = 96, 128

# families whose official detection/segmentation backbone normalizes every returned map with a channels-first
# LayerNorm (eps 1e-6) named norm0..norm3
LAYER_NORM_OUTPUTS = ["zoo_unireplknet_t", "zoo_slak_tiny", "zoo_ffnet_2"]


def _tiny(name: str, **kwargs) -> DenseBackbone:
    return DenseBackbone(name, **{**tiny_kwargs(name), **kwargs}).eval()


def _randomize_norms(backbone: DenseBackbone) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in backbone.out_norm_names:
            norm = getattr(backbone, name)
            norm.weight.copy_(1 + 0.1 * torch.randn(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=gen))


@pytest.mark.parametrize("name", LAYER_NORM_OUTPUTS)
def test_output_norms_are_channels_first_layer_norms(name):
    backbone = _tiny(name)
    _randomize_norms(backbone)
    assert backbone.out_norm_names == ["norm0", "norm1", "norm2", "norm3"]
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        maps, outputs = backbone.features(x), backbone(x)
    for i, (raw, out) in enumerate(zip(maps, outputs)):
        norm = getattr(backbone, f"norm{i}")
        assert isinstance(norm, LayerNorm2d) and norm.eps == 1e-6
        expected = F.layer_norm(raw.permute(0, 2, 3, 1), (raw.shape[1],), norm.weight, norm.bias, eps=1e-6)
        torch.testing.assert_close(out, expected.permute(0, 3, 1, 2))


@pytest.mark.parametrize("name", LAYER_NORM_OUTPUTS)
def test_output_norms_take_the_official_checkpoint_names(name):
    channels = _tiny(name).channels
    official = {f"norm{i}.{p}": torch.randn(c) for i, c in enumerate(channels) for p in ("weight", "bias")}
    backbone = _tiny(name)
    missing, unexpected = backbone.load_state_dict(official, strict=False)
    assert not unexpected and not any(key.startswith("norm") for key in missing)
    torch.testing.assert_close(backbone.norm2.weight, official["norm2.weight"])


def test_slak_downstream_initializes_layer_scales_to_one():
    assert downstream_cfg("zoo_slak_tiny")["model_kwargs"] == dict(layer_scale_init_value=1.0)
    gammas = [p for n, p in _tiny("zoo_slak_tiny").named_parameters() if n.endswith(".gamma")]
    assert gammas and all(torch.all(g == 1.0) for g in gammas)
    overridden = _tiny("zoo_slak_tiny", layer_scale_init_value=1e-6)
    assert all(torch.all(p == 1e-6) for n, p in overridden.named_parameters() if n.endswith(".gamma"))


def test_replknet_downstream_returns_the_stage_maps_as_they_are():
    """RepLKNet-31B's official dense backbone has no output norms: the last map is the classification
    model's last stage output, before its final BatchNorm."""
    backbone = _tiny("zoo_replknet_31b")
    assert backbone.out_norm_names == [] and downstream_cfg("zoo_replknet_31b") == {}
    model = backbone.features.model
    x = torch.randn(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], model.stages(model.stem(x)))


@pytest.mark.parametrize(
    ("name", "out_indices"),
    [
        ("zoo_replknet_31b", None),
        ("zoo_unireplknet_t", None),
        ("zoo_slak_tiny", None),
        ("zoo_ffnet_2", None),
        ("zoo_affnet", (1, 2, 3, 4)),
        ("zoo_svt_h_s", None),
        ("zoo_gfnet_h_ti", None),
        ("zoo_spectformer_h_s", None),
    ],
)
def test_maps_at_a_non_square_size(name, out_indices):
    if name.startswith("zoo_svt"):
        pytest.importorskip("pytorch_wavelets", reason="SVT needs the optional pytorch_wavelets")
    backbone = _tiny(name, out_indices=out_indices)
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, HEIGHT, WIDTH))
    assert backbone.strides == [4, 8, 16, 32]
    assert [tuple(m.shape) for m in maps] == [
        (2, c, -(-HEIGHT // s), -(-WIDTH // s)) for c, s in zip(backbone.channels, backbone.strides)
    ]
    assert all(torch.isfinite(m).all() for m in maps)


def test_replknet_xl_alone_gets_the_official_output_batch_norms():
    """The official XL downstream configs normalize every returned map (``stages.{i}.norm`` there)."""
    assert "out_norm" not in downstream_cfg("zoo_replknet_31b")
    kwargs = tiny_kwargs("zoo_replknet_xl_320")
    backbone = DenseBackbone("zoo_replknet_xl_320", **kwargs)
    assert all(isinstance(backbone.get_submodule(f"norm{i}"), torch.nn.BatchNorm2d) for i in range(4))
    official = {k.removeprefix("features.model."): v for k, v in backbone.state_dict().items()
                if k.startswith("features.model.")}
    gen = torch.Generator().manual_seed(0)
    norms = {f"stages.{i}.norm.{p}": torch.rand(backbone.channels[i], generator=gen) + 0.5
             for i in range(4) for p in ("weight", "bias", "running_mean", "running_var")}
    converted = backbone.convert_official({**official, **norms})
    torch.testing.assert_close(converted["norm2.running_var"], norms["stages.2.norm.running_var"])
    backbone.load_state_dict(converted, strict=False)
    torch.testing.assert_close(backbone.norm3.weight.detach(), norms["stages.3.norm.weight"])
