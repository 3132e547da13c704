"""VAN: Visual Attention Network (Guo et al., Computational Visual Media 2023).

https://arxiv.org/abs/2202.09741

Large kernel attention (LKA) decomposes a 21x21 depthwise convolution into a 5x5 depthwise
convolution, a 7x7 depthwise convolution with dilation 3 and a 1x1 convolution, and uses the
result as an attention map that multiplies its input (paper Eq. 1-2, no sigmoid). The attention
sub-block wraps LKA between two 1x1 projections and adds its input back: an inner shortcut the
official code has and the paper's Figure 3 does not show. Both large depthwise convolutions run
through ``zoo.kernels.depthwise_conv2d``.

The model is fully convolutional, so any input size works. Official checkpoints
(Visual-Attention-Network/VAN-Classification, including the ``VAN-*-original`` files on the
Hugging Face Hub) load through ``checkpoint_filter_fn``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, calculate_drop_path_rates
from timm.models import generate_default_cfgs

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_conv_fan_out, pyramid_feature_info
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint
from .pvt import PVT_V2_RENAMES

__all__ = ["VAN"]


class LargeKernelAttention(nn.Module):
    """LKA: ``x * Conv1x1(DWDConv7x7,d=3(DWConv5x5(x)))``, a 21x21 receptive field (paper Eq. 1-2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = DepthwiseConv2d(dim, 5)
        self.conv_spatial = DepthwiseConv2d(dim, 7, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """1x1 projection, GELU, LKA, 1x1 projection, plus the inner shortcut of the official code."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """Convolutional feed-forward network: 1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = DepthwiseConv2d(hidden_dim, 3)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class VANBlock(nn.Module):
    """``x + ls1 * Attention(BN(x))`` then ``x + ls2 * Mlp(BN(x))``, layer scale initialized to 1e-2."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-2,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path2(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping patches (padding ``kernel // 2``) followed by BatchNorm."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VANStage(Stage):
    """Overlapping patch embedding, ``depth`` VAN blocks and the stage's LayerNorm over channels."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        first: bool,
        mlp_ratio: float,
        drop: float = 0.0,
        drop_path: list[float] | None = None,
        norm_eps: float = 1e-6,
    ):
        downsampling = OverlapPatchEmbed(in_chans, dim, kernel_size=7 if first else 3, stride=4 if first else 2)
        drop_path = drop_path or [0.0] * depth
        super().__init__(
            downsampling, [VANBlock(dim, mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path[i]) for i in range(depth)]
        )
        self.norm = LayerNorm2d(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class VAN(Backbone):
    """Visual Attention Network: four stages of LKA blocks at strides 4, 8, 16 and 32 (NCHW throughout).

    There is no stem: stage 0's patch embedding takes the image. Each stage ends in its own
    LayerNorm (eps ``stage_norm_eps``), so there is no final norm.
    """

    stem_name = None

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stage_norm_eps: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(
                f"embed_dims {embed_dims}, depths {depths} and mlp_ratios {mlp_ratios} need one entry per stage"
            )
        self.num_features = self.head_hidden_size = embed_dims[-1]

        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.stages = nn.Sequential(*[
            VANStage(
                self.in_chans if i == 0 else embed_dims[i - 1],
                dim,
                depth,
                first=i == 0,
                mlp_ratio=mlp_ratios[i],
                drop=proj_drop_rate,
                drop_path=drop_path[i],
                norm_eps=stage_norm_eps,
            )
            for i, (dim, depth) in enumerate(zip(embed_dims, depths))
        ])
        self.feature_info = pyramid_feature_info(embed_dims)
        self.norm = nn.Identity()
        self.head = self.classifier_head()
        self.apply(init_conv_fan_out)


def checkpoint_filter_fn(state_dict: dict, model: VAN) -> dict[str, torch.Tensor]:
    """Convert an official VAN checkpoint (``{'state_dict': ...}`` from timm's checkpoint saver, or a
    bare state dict), which keeps PVTv2's layout, to this model's; a state dict already in this layout
    passes through."""
    state_dict = unwrap_checkpoint(state_dict, ("state_dict", "model"))
    if "patch_embed1.proj.weight" not in state_dict:
        return state_dict
    return rename_keys(state_dict, PVT_V2_RENAMES)


_create_van = backbone_creator(VAN, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("van"))

# The official segmentation backbone (Visual-Attention-Network/VAN-Segmentation `van.py`) ends its stages in
# nn.LayerNorm with the default eps 1e-5 (1e-6 in classification); it adds no output norms.
downstream_cfg = dict(model_kwargs=dict(stage_norm_eps=1e-5))

register_tiny_kwargs("zoo_van", embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))


# VAN-B0..B6 (paper Table 2, all with mlp ratios 8-8-4-4); B0-B3 are the official code's van_tiny, van_small,
# van_base and van_large.
register_variants(
    _create_van,
    zoo_van_b0=dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2)),
    zoo_van_b1=dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2)),
    zoo_van_b2=dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3)),
    zoo_van_b3=dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3)),
    zoo_van_b4=dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
    zoo_van_b5=dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3)),
    zoo_van_b6=dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6)),
)
