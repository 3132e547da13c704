"""zoo.adapters._features.DenseBackbone: a zoo model built as its family's official downstream backbone."""

import pytest
import timm
import torch

from zoo.adapters._features import DenseBackbone, SimpleFeaturePyramid, downstream_cfg
from zoo.models import tiny_kwargs

# At 128x128 the tiny Swin's last stage map (4x4) fits in one 4x4 window: the classification model
# neither shrinks nor shifts it, the official detection backbone shifts it by half a window.
SWIN = {**tiny_kwargs("zoo_swin_tiny"), "img_size": 128, "depths": (2, 2, 2, 2)}


def test_swin_downstream_windows_shift_in_every_stage():
    backbone = DenseBackbone("zoo_swin_tiny", **SWIN)
    for stage in backbone.features.model.layers:
        for i, block in enumerate(stage.blocks):
            assert block.attn.window_size == (4, 4)
            assert block.attn.shift_size == ((2, 2) if i % 2 else (0, 0))
    classifier = timm.create_model("zoo_swin_tiny", **SWIN)
    assert classifier.layers[3].blocks[1].attn.shift_size == (0, 0)


def test_swin_downstream_backbone_takes_classification_weights_and_differs_only_where_it_shifts():
    classifier = timm.create_model("zoo_swin_tiny", **SWIN).eval()
    backbone = DenseBackbone("zoo_swin_tiny", **SWIN).eval()
    missing, unexpected = backbone.features.model.load_state_dict(classifier.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"norm.weight", "norm.bias", "head.fc.weight", "head.fc.bias"}

    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = backbone.features(x)  # before the output norms
        theirs = classifier.forward_intermediates(x, intermediates_only=True)
    for stage in range(3):
        torch.testing.assert_close(ours[stage], theirs[stage])
    assert (ours[3] - theirs[3]).abs().max() > 1e-3


def test_output_norms_come_from_the_family():
    assert downstream_cfg("zoo_swin_tiny")["out_norm"] is not None
    assert "out_norm" not in downstream_cfg("zoo_van_b0")
    backbone = DenseBackbone("zoo_swin_tiny", out_indices=(1, 3), **SWIN)
    assert backbone.out_norm_names == ["norm1", "norm3"]
    assert [f.shape[1] for f in backbone(torch.randn(1, 3, 64, 96))] == [32, 128]


ISOTROPIC = "zoo_agent_deit_small"  # 16x16 patches: every block at stride 16
ISOTROPIC_KWARGS = {**tiny_kwargs(ISOTROPIC), "patch_size": 16, "depth": 8}


def test_isotropic_model_gets_a_pyramid_of_four_blocks():
    backbone = DenseBackbone(ISOTROPIC, **ISOTROPIC_KWARGS).eval()
    assert backbone.out_indices == (1, 3, 5, 7)  # the last block of each quarter
    assert backbone.strides == [4, 8, 16, 32] and backbone.channels == [16] * 4
    x = torch.randn(2, 3, 96, 160)
    maps = backbone(x)
    assert [m.shape for m in maps] == [(2, 16, 96 // s, 160 // s) for s in (4, 8, 16, 32)]
    with torch.no_grad():
        blocks = backbone.features(x)
    torch.testing.assert_close(maps[2], blocks[2])  # stride 16 is the block's own map
    torch.testing.assert_close(maps[3], torch.nn.functional.max_pool2d(blocks[3], 2))


def test_pyramid_trains_with_the_backbone():
    backbone = DenseBackbone(ISOTROPIC, out_indices=(0, 2, 4, 7), frozen_stages=1, **ISOTROPIC_KWARGS)
    sum(m.square().mean() for m in backbone(torch.randn(1, 3, 64, 64))).backward()
    model = backbone.features.model
    assert all(p.grad is not None for p in backbone.pyramid.parameters())
    assert model.blocks[1].norm1.weight.grad is not None
    # the stem, its position embedding and block 0 are frozen
    assert model.pos_embed.grad is None and not model.pos_embed.requires_grad
    assert model.blocks[0].norm1.weight.grad is None


def test_isotropic_model_refuses_out_indices_that_are_not_four_blocks():
    with pytest.raises(ValueError, match="out_indices must name four distinct blocks"):
        DenseBackbone(ISOTROPIC, out_indices=(3, 7), **ISOTROPIC_KWARGS)
    with pytest.raises(ValueError, match="has 2 blocks; its feature pyramid takes the maps of four"):
        DenseBackbone(ISOTROPIC, **{**ISOTROPIC_KWARGS, "depth": 2})


def test_pyramid_needs_power_of_two_ratios():
    with pytest.raises(ValueError, match="ratio must be a power of 2"):
        SimpleFeaturePyramid(8, in_stride=12)


def test_official_output_norm_names_are_converted():
    """CSWin's official segmentation backbone names its output norms norm1..norm4."""
    name = "zoo_cswin_tiny"
    backbone = DenseBackbone(name, out_indices=(1, 3), **tiny_kwargs(name))
    official = {k.removeprefix("features.model."): v for k, v in backbone.state_dict().items()
                if k.startswith("features.model.")}
    gen = torch.Generator().manual_seed(0)
    norms = {f"norm{i + 1}.{p}": torch.randn(backbone.get_submodule(f"norm{i}").weight.shape, generator=gen)
             for i in (1, 3) for p in ("weight", "bias")}
    converted = backbone.convert_official({**official, **norms})
    for i in (1, 3):
        torch.testing.assert_close(converted[f"norm{i}.weight"], norms[f"norm{i + 1}.weight"])
    assert converted.keys() == backbone.state_dict().keys()
