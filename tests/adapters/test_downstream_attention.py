"""The downstream builds (``downstream_cfg``) of the attention families and of the convolutional families whose
official detection/segmentation backbones add output norms: the norms (type, eps, what they normalize), the
switches, and the output maps at a non-square size on the tiny instances."""

import copy

import pytest
import timm
import torch
from timm.layers import LayerNorm2d

from zoo.adapters._features import DenseBackbone
from zoo.models import tiny_kwargs
from zoo.models.parcnetv2 import CenteredL2Norm2d

HEIGHT, WIDTH = 96, 128

# model: (the output norm of the official downstream backbone, its eps)
OUTPUT_NORMS = {
    "zoo_cswin_tiny": (LayerNorm2d, 1e-5),
    "zoo_agent_cswin_tiny": (LayerNorm2d, 1e-5),
    "zoo_flatten_cswin_tiny": (LayerNorm2d, 1e-5),
    "zoo_agent_swin_tiny": (LayerNorm2d, 1e-5),
    "zoo_flatten_swin_tiny": (LayerNorm2d, 1e-5),
    "zoo_biformer_small": (LayerNorm2d, 1e-6),
    "zoo_hornet_tiny": (LayerNorm2d, 1e-6),
    "zoo_nat_tiny": (LayerNorm2d, 1e-5),
    "zoo_dinat_tiny": (LayerNorm2d, 1e-5),
    "zoo_parcnetv2_t": (CenteredL2Norm2d, 1e-6),
}


def _backbone(name: str, **kwargs) -> DenseBackbone:
    return DenseBackbone(name, **{**tiny_kwargs(name), **kwargs}).eval()


@pytest.mark.parametrize("name", sorted(OUTPUT_NORMS))
def test_output_norms_shapes_and_strides(name):
    norm_type, eps = OUTPUT_NORMS[name]
    backbone = _backbone(name)
    assert backbone.out_norm_names == ["norm0", "norm1", "norm2", "norm3"]
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        maps, raw = backbone(x), backbone.features(x)
    assert [tuple(m.shape) for m in maps] == [
        (2, c, -(-HEIGHT // s), -(-WIDTH // s)) for c, s in zip(backbone.channels, (4, 8, 16, 32))
    ]
    for i, (out, before) in enumerate(zip(maps, raw)):
        norm = getattr(backbone, f"norm{i}")
        assert type(norm) is norm_type and norm.eps == eps
        assert norm.weight.shape == (backbone.channels[i],)
        # freshly initialized (unit weight, no bias): each pixel's channel vector, centred, over its standard
        # deviation (LayerNorm) or its L2 norm (ParCNetV2's norm)
        centered = before - before.mean(1, keepdim=True)
        if norm_type is CenteredL2Norm2d:
            expected = centered / centered.norm(dim=1, keepdim=True).clamp_min(eps)
        else:
            expected = centered / centered.pow(2).mean(1, keepdim=True).add(eps).sqrt()
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        # at 128x128 the last stage map (4x4) holds one 4x4 window: the classification model does not shift it;
        # the classification agent grids, so that only the shift tells the two builds apart
        ("zoo_agent_swin_tiny", dict(img_size=128, depths=(1, 2, 1, 2), agent_shapes=None)),
        ("zoo_flatten_swin_tiny", dict(img_size=128, depths=(1, 2, 2, 2))),
    ],
)
def test_swin_family_last_stage_shifts_as_in_the_official_detection_backbone(name, kwargs):
    kwargs = {**tiny_kwargs(name), **kwargs}
    classifier = timm.create_model(name, **kwargs).eval()
    backbone = DenseBackbone(name, **kwargs).eval()
    assert classifier.layers[3].blocks[1].attn.shift_size == (0, 0)
    assert backbone.features.model.layers[3].blocks[1].attn.shift_size == (2, 2)
    missing, _ = backbone.features.model.load_state_dict(classifier.state_dict(), strict=False)
    assert not missing

    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = backbone.features(x)
        theirs = classifier.forward_intermediates(x, intermediates_only=True)
        unshifted = copy.deepcopy(backbone)
        unshifted.features.model.layers[3].blocks[1].attn.shift_size = (0, 0)
        torch.testing.assert_close(unshifted.features(x)[3], theirs[3])
    for stage in range(3):
        torch.testing.assert_close(ours[stage], theirs[stage])
    assert (ours[3] - theirs[3]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["zoo_cswin_tiny", "zoo_agent_cswin_tiny", "zoo_flatten_cswin_tiny"])
def test_cswin_stripes_span_the_dense_map(name):
    """The official segmentation backbone: full-height / full-width stripes at the runtime map size, and the
    whole map in the last stage."""
    stages = _backbone(name).features.model.stages
    cross_shaped = stages[2].blocks[0].attn
    assert cross_shaped.stripes((HEIGHT // 16, WIDTH // 16)) == [(6, 2), (2, 8)]
    assert stages[3].blocks[0].attn.stripes((HEIGHT // 32, WIDTH // 32)) == [(3, 4)]


def test_van_stage_norms_take_the_segmentation_backbone_eps():
    backbone = _backbone("zoo_van_b0")
    classifier = timm.create_model("zoo_van_b0", **tiny_kwargs("zoo_van_b0"))
    assert [stage.norm.eps for stage in backbone.features.model.stages] == [1e-5] * 4
    assert [stage.norm.eps for stage in classifier.stages] == [1e-6] * 4
    assert backbone.out_norm_names == []
