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

import math
import re

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, DropPath, LayerNorm2d, calculate_drop_path_rates, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs
from timm.models._features import feature_take_indices

from zoo.hub import build_model_with_cfg
from zoo.layers.checks import check_image_batch
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._registry import register_model, register_tiny_kwargs

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


class VANStage(nn.Module):
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
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = OverlapPatchEmbed(in_chans, dim, kernel_size=7 if first else 3, stride=4 if first else 2)
        drop_path = drop_path or [0.0] * depth
        self.blocks = nn.Sequential(
            *[VANBlock(dim, mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path[i]) for i in range(depth)]
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


class VAN(nn.Module):
    """Visual Attention Network: four stages of LKA blocks at strides 4, 8, 16 and 32 (NCHW throughout)."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(
                f"embed_dims {embed_dims}, depths {depths} and mlp_ratios {mlp_ratios} need one entry per stage"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]

        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stages.append(
                VANStage(
                    in_chans if i == 0 else embed_dims[i - 1],
                    dim,
                    depth,
                    first=i == 0,
                    mlp_ratio=mlp_ratios[i],
                    drop=proj_drop_rate,
                    drop_path=drop_path[i],
                )
            )
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The official initialization: He-normal (fan-out) convolutions, truncated-normal linears."""
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stages\.0\.downsample",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)
        if global_pool is not None:
            self.global_pool = global_pool

    def _check_input(self, x: torch.Tensor) -> None:
        check_image_batch(x, self.in_chans, 1, type(self).__name__)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Run the stages, returning the outputs of ``indices`` (NCHW) and, unless
        ``intermediates_only``, the final features. Every stage ends in its own LayerNorm, so
        ``norm`` changes nothing."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        self._check_input(x)
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and head) that the intermediates at ``indices`` do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> ``(B, C', ceil(H/32), ceil(W/32))`` features after the last stage's norm."""
        self._check_input(x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_OFFICIAL_RENAMES = (
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample."),
    (r"^block(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict, model: VAN) -> dict[str, torch.Tensor]:
    """Convert an official VAN checkpoint (``{'state_dict': ...}`` from timm's checkpoint saver, or a
    bare state dict) to this model's layout; a state dict already in this layout passes through."""
    state_dict = state_dict.get("state_dict", state_dict)
    state_dict = state_dict.get("model", state_dict)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if "patch_embed1.proj.weight" not in state_dict:
        return state_dict
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in _OFFICIAL_RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _create_van(variant: str, pretrained: bool = False, **kwargs) -> VAN:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (3, 4, 6, 3))))))
    return build_model_with_cfg(
        VAN,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


default_cfgs = generate_default_cfgs(pretrained_cfgs("van"))

register_tiny_kwargs("zoo_van", embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))


@register_model
def zoo_van_b0(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B0 (van_tiny): dims 32-64-160-256, depths 3-3-5-2."""
    args = dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2))
    return _create_van("zoo_van_b0", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b1(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B1 (van_small): dims 64-128-320-512, depths 2-2-4-2."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2))
    return _create_van("zoo_van_b1", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b2(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B2 (van_base): dims 64-128-320-512, depths 3-3-12-3."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3))
    return _create_van("zoo_van_b2", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b3(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B3 (van_large): dims 64-128-320-512, depths 3-5-27-3."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3))
    return _create_van("zoo_van_b3", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b4(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B4: dims 64-128-320-512, depths 3-6-40-3."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3))
    return _create_van("zoo_van_b4", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b5(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B5: dims 96-192-480-768, depths 3-3-24-3."""
    args = dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3))
    return _create_van("zoo_van_b5", pretrained, **dict(args, **kwargs))


@register_model
def zoo_van_b6(pretrained: bool = False, **kwargs) -> VAN:
    """VAN-B6: dims 96-192-384-768, depths 6-6-90-6."""
    args = dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6))
    return _create_van("zoo_van_b6", pretrained, **dict(args, **kwargs))
