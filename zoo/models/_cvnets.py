"""The trunk of cvnets' MobileViT-style classifiers (AFFNet, ParC-Net v1), written once.

A stride-2 conv-BN-SiLU stem, stages of MobileNetV2 inverted residuals (the first one strided), each
stage optionally ending in the family's global block, then a 1x1 expansion ``final_conv`` in place of
a final norm, pooling and a linear classifier; cvnets' initialization and checkpoint key names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from timm.layers import ConvNormAct
from timm.models._efficientnet_blocks import InvertedResidual

from ._backbone import Backbone

__all__ = ["CVNETS_RENAMES", "CvnetsBackbone"]

# cvnets key -> ours for the trunk, applied in order: the stem ``conv_1``, stages ``layer_{1..}``, the
# expansion ``conv_1x1_exp``, and the inverted residuals' ``exp_1x1`` / ``conv_3x3`` / ``red_1x1``.
CVNETS_RENAMES = (
    (r"^conv_1\.", "stem."),
    (r"^layer_(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.fc\.", "head.fc."),
    (r"\.block\.exp_1x1\.block\.conv\.", ".conv_pw."),
    (r"\.block\.exp_1x1\.block\.norm\.", ".bn1."),
    (r"\.block\.conv_3x3\.block\.conv\.", ".conv_dw."),
    (r"\.block\.conv_3x3\.block\.norm\.", ".bn2."),
    (r"\.block\.red_1x1\.block\.conv\.", ".conv_pwl."),
    (r"\.block\.red_1x1\.block\.norm\.", ".bn3."),
)


class CvnetsBackbone(Backbone):
    """A backbone on the cvnets trunk: a family's ``__init__`` calls :meth:`build_trunk` with its global
    block. A stage is a plain sequence of blocks; there is no final norm, ``final_conv`` follows the stages."""

    def build_trunk(
        self,
        stem_dim: int,
        dims: tuple[int, ...],
        depths: tuple[int, ...],
        strides: tuple[int, ...],
        expand_ratio: float,
        final_dim: int,
        global_block: Callable[[int, int], nn.Module | None],
        act_layer: type[nn.Module] = nn.SiLU,
    ) -> None:
        """Stem, stages, ``final_conv`` and head; ``global_block(i, dim)`` ends stage ``i`` (``None``: nothing)."""
        self.stem = ConvNormAct(self.in_chans, stem_dim, 3, stride=2, act_layer=act_layer)
        stages, self.feature_info = [], []
        in_dim, reduction = stem_dim, 2
        for i, dim in enumerate(dims):
            blocks = [
                InvertedResidual(in_dim if j == 0 else dim, dim, stride=strides[i] if j == 0 else 1,
                                 exp_ratio=expand_ratio, act_layer=act_layer)
                for j in range(depths[i])
            ]
            last = global_block(i, dim)
            stages.append(nn.Sequential(*blocks, *([last] if last is not None else [])))
            in_dim, reduction = dim, reduction * strides[i]
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvNormAct(dims[-1], final_dim, 1, act_layer=act_layer)
        self.norm = nn.Identity()
        self.num_features = self.head_hidden_size = final_dim
        self.head = self.classifier_head()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """cvnets' initialization: He-normal (fan-out) convolutions, truncated-normal linears."""
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None), (r"^final_conv", (99999,))],
        )

    def final_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 expansion to ``final_dim`` channels."""
        return self.final_conv(x)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """As the base, and the expansion goes with the last stage."""
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if len(self.stages) < len(self.feature_info):
            self.final_conv = nn.Identity()
        return take_indices
