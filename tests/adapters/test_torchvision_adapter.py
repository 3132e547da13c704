"""zoo.adapters.torchvision: every family as the FPN backbone of torchvision's Faster R-CNN."""

import pytest
import timm
import torch
import torch.nn as nn
from adapter_families import FAMILY_MODELS, dense_kwargs
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from zoo.adapters.torchvision import backbone_with_fpn
from zoo.models import tiny_kwargs

HEIGHT, WIDTH = 96, 128  # non-square; every family's tiny instance takes it


def _detector(backbone, num_classes=3):
    """Faster R-CNN with anchors and RoI pooling for however many stage maps the backbone returns."""
    names = backbone.feature_names
    sizes = tuple((16 * 2**i,) for i in range(len(names) + 1))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    roi_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    return FasterRCNN(
        backbone, num_classes, min_size=HEIGHT, max_size=WIDTH, rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool, rpn_batch_size_per_image=32, box_batch_size_per_image=32,
    )


def _batch():
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, HEIGHT, WIDTH, generator=gen) for _ in range(2)]
    targets = [
        dict(boxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]]), labels=torch.tensor([1, 2])),
        dict(boxes=torch.tensor([[30.0, 5.0, 100.0, 50.0]]), labels=torch.tensor([2])),
    ]
    return images, targets


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_faster_rcnn_trains_and_detects(name):
    backbone = backbone_with_fpn(name, out_channels=32, norm_layer=nn.BatchNorm2d, **dense_kwargs(name))
    assert isinstance(backbone, BackboneWithFPN)
    model = _detector(backbone)
    images, targets = _batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005)
    model.train()
    losses = []
    for _ in range(6):
        torch.manual_seed(0)  # the same RPN / RoI sampling every step: only the weights change
        loss = sum(model(images, targets).values())
        assert torch.isfinite(loss), f"{name}: non-finite loss {loss}"
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Plain SGD on a tiny randomly initialized detector oscillates; training must still take the loss
    # below where it started.
    assert min(losses[1:]) < losses[0], f"{name}: the loss did not decrease: {losses}"

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for det in detections:
        assert set(det) == {"boxes", "labels", "scores"}
        n = len(det["scores"])
        assert det["boxes"].shape == (n, 4) and det["labels"].shape == (n,)
        boxes = det["boxes"]
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert (boxes[:, 2] <= WIDTH).all() and (boxes[:, 3] <= HEIGHT).all()


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_fpn_levels_follow_the_stage_strides(name):
    backbone = backbone_with_fpn(name, out_channels=8, **dense_kwargs(name)).eval()
    with torch.no_grad():
        levels = backbone(torch.randn(1, 3, HEIGHT, WIDTH))
    strides = backbone.body.backbone.strides
    assert list(levels) == backbone.feature_names + ["pool"]
    for key, stride in zip(backbone.feature_names, strides):
        assert levels[key].shape[:2] == (1, 8)
        assert levels[key].shape[-2:] == (-(-HEIGHT // stride), -(-WIDTH // stride)), key


def test_trainable_layers_freeze_the_stem_and_first_stages():
    name = "zoo_swin_tiny"
    backbone = backbone_with_fpn(name, trainable_layers=2, **tiny_kwargs(name))
    model = backbone.body.backbone.features.model
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    # the official Swin merges patches at the end of a stage: stage 2's patch merging is frozen with stage 1
    frozen_prefixes = ("patch_embed.", "layers.0.", "layers.1.", "layers.2.downsample.")
    assert frozen and all(n.startswith(frozen_prefixes) for n in frozen)
    assert any(n.startswith("layers.2.downsample.") for n in frozen)
    assert all(n.startswith(("layers.2.blocks.", "layers.3.")) for n in trained)
    assert not backbone.body.backbone.norm0.weight.requires_grad and backbone.body.backbone.norm2.weight.requires_grad

    backbone.train()
    assert not model.layers[1].training and model.layers[2].training
    levels = backbone(torch.randn(1, 3, 64, 64))
    sum(level.sum() for level in levels.values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trained)


def test_batch_norm_is_frozen_by_default():
    name = "zoo_van_b0"
    backbone = backbone_with_fpn(name, **tiny_kwargs(name))
    norms = list(backbone.body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in norms)


def test_returning_early_stages_drops_the_later_ones():
    name = "zoo_swin_tiny"
    backbone = backbone_with_fpn(name, returned_layers=[1, 2, 3], trainable_layers=1, **tiny_kwargs(name))
    model = backbone.body.backbone.features.model
    assert len(model.layers) == 3
    assert not model.layers[1].blocks[0].norm1.weight.requires_grad
    assert model.layers[2].blocks[0].norm1.weight.requires_grad
    assert list(backbone(torch.randn(1, 3, 64, 64))) == ["0", "1", "2", "pool"]


def test_returned_layers_choose_the_stages():
    name = "zoo_swin_tiny"
    backbone = backbone_with_fpn(name, returned_layers=[2, 4], **tiny_kwargs(name))
    assert backbone.body.backbone.strides == [8, 32]
    assert backbone.fpn.inner_blocks[0][0].in_channels == timm.create_model(name, **tiny_kwargs(name)).feature_info[1][
        "num_chs"
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trainable_layers=6), r"trainable_layers must be in \[0, 5\]"),
        (dict(returned_layers=[0, 1]), "returned_layers must be stage numbers starting at 1"),
        (dict(norm_layer=nn.LayerNorm), "batch_norm must be"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbone_with_fpn("zoo_swin_tiny", **kwargs, **tiny_kwargs("zoo_swin_tiny"))


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="not a registered zoo model"):
        backbone_with_fpn("resnet50")
