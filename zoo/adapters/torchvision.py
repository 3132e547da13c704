"""Zoo backbones for torchvision's detection models (Faster / Mask R-CNN, RetinaNet, ...).

:func:`backbone_with_fpn` is ``torchvision.models.detection.backbone_utils.resnet_fpn_backbone`` for
any registered zoo model::

    from torchvision.models.detection import FasterRCNN
    from zoo.adapters.torchvision import backbone_with_fpn

    backbone = backbone_with_fpn("zoo_swin_tiny", pretrained=True, trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=91)

The FPN takes one map per returned stage (keys ``"0"``, ``"1"``, ...) plus the ``"pool"`` level of
``LastLevelMaxPool``. torchvision's default anchor generator and RoI pooler expect four stage maps: for
a model with another number of returned stages, pass ``rpn_anchor_generator`` and ``box_roi_pool``
built for ``backbone.feature_names``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

from ._features import DenseBackbone

__all__ = ["ZooBackboneWithFPN", "backbone_with_fpn"]


class _NamedFeatures(nn.Module):
    """A :class:`DenseBackbone` whose maps come as the ``OrderedDict`` torchvision's FPN takes."""

    def __init__(self, backbone: DenseBackbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), feature) for i, feature in enumerate(self.backbone(x)))


class ZooBackboneWithFPN(BackboneWithFPN):
    """torchvision's ``BackboneWithFPN`` over a zoo model: ``body`` returns the stage maps (keys
    ``"0"``, ``"1"``, ...), ``fpn`` merges them into ``out_channels`` maps.

    ``BackboneWithFPN`` takes the stage maps from a backbone's direct children, which zoo models do not
    expose that way (some stages run on NHWC maps, some families add output norms), so the body is the
    zoo model's feature getter instead; ``forward`` and the attributes are ``BackboneWithFPN``'s.
    """

    def __init__(self, backbone: DenseBackbone, out_channels: int, extra_blocks: ExtraFPNBlock | None = None):
        nn.Module.__init__(self)
        self.body = _NamedFeatures(backbone)
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(backbone.channels),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
        )
        self.out_channels = out_channels

    @property
    def feature_names(self) -> list[str]:
        """The keys of the stage maps the FPN returns (before its extra levels)."""
        return [str(i) for i in range(len(self.body.backbone.channels))]


def backbone_with_fpn(
    model_name: str,
    pretrained: bool = False,
    trainable_layers: int | None = None,
    returned_layers: list[int] | None = None,
    out_channels: int = 256,
    norm_layer: type[nn.Module] = FrozenBatchNorm2d,
    extra_blocks: ExtraFPNBlock | None = None,
    **model_kwargs,
) -> ZooBackboneWithFPN:
    """A zoo model with a feature pyramid on top, as ``resnet_fpn_backbone`` builds it for a ResNet.

    Args:
        model_name: a registered zoo model, optionally with a pretrained tag (``zoo_swin_tiny.ms_in1k``).
        pretrained: load the model's pretrained weights.
        trainable_layers: how many stages, counted from the last, are trained; one more than the number
            of stages also trains the stem. None (the default) trains everything.
        returned_layers: the stages (numbered from 1, as ``resnet_fpn_backbone`` numbers them) whose maps
            feed the FPN; every stage by default.
        out_channels: channels of every FPN level.
        norm_layer: what the model's BatchNorm2d layers become: ``FrozenBatchNorm2d`` (the default, as
            for torchvision's ResNets), ``nn.BatchNorm2d`` (trained) or ``nn.SyncBatchNorm``. Families
            without BatchNorm are not affected.
        extra_blocks: extra FPN levels; ``LastLevelMaxPool`` by default.
        model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ...).

    The backbone is built as the family's official detection backbone (see ``zoo.adapters``).
    """
    out_indices = None
    if returned_layers is not None:
        if not returned_layers or min(returned_layers) < 1:
            raise ValueError(f"returned_layers must be stage numbers starting at 1, got {returned_layers}")
        out_indices = tuple(i - 1 for i in returned_layers)
    backbone = DenseBackbone(model_name, out_indices, pretrained=pretrained, batch_norm=norm_layer, **model_kwargs)
    num_stages = len(backbone.stages)
    if trainable_layers is not None:
        if not 0 <= trainable_layers <= num_stages + 1:
            raise ValueError(
                f"trainable_layers must be in [0, {num_stages + 1}] for {model_name} ({num_stages} stages, "
                f"plus 1 for the stem), got {trainable_layers}"
            )
        backbone.freeze_stages(num_stages - trainable_layers)
    return ZooBackboneWithFPN(backbone, out_channels, extra_blocks)
