"""zoo.adapters._features.DenseBackbone: a zoo model built as its family's official downstream backbone."""

import timm
import torch

from zoo.adapters._features import DenseBackbone, downstream_cfg
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
