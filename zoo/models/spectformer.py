"""SpectFormer: Frequency and Attention is what you need in a Vision Transformer (Patro et al., 2023).

https://arxiv.org/abs/2304.06446

Spectral gating (GFNet's global filter, ``zoo.layers.spectral``) in the first blocks, multi-head
self-attention in the rest.

- Vanilla SpectFormer (T, XS, S, B): isotropic GFNet whose first 4 blocks keep the global filter
  and whose other blocks are ViT blocks. The official code hard-codes 6 heads, which divides only
  the width 384 of XS and S; T (width 256) and B (width 512) cannot run as committed. Here every
  variant uses heads of 64 channels, as XS and S do: 4 heads for T (the official code's comment
  says "4 for tiny") and 8 for B. The head count changes no parameter.
- Hierarchical SpectFormer-H (S, B, L): the WaveViT trunk (a convolutional stem, strided 3x3
  convolutions between stages, PVTv2 feed-forward layers with a depthwise convolution, a class
  attention block and token-labeling head at the end) with global filters in stages 1-2 and
  attention in stages 3-4. SVT (``zoo.models.svt``) shares this trunk.

No weights have been released. A checkpoint of the official code (``{'model': state_dict}``) loads
through ``checkpoint_filter_fn``. Any input size works: filters and position embeddings are
resized as in ``zoo.models.gfnet``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, calculate_drop_path_rates
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import Block

from zoo.layers.blocks import PreNormBlock
from zoo.layers.spectral import GlobalFilter
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_conv_fan_out
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import Renames, rename_keys, unwrap_checkpoint
from .gfnet import _GFNET_B, _GFNET_S, _GFNET_TI, _GFNET_XS, GFNet, GlobalFilterBlock, resize_spectral_params

__all__ = ["SpectFormer", "SpectFormerH"]


def _layer_norm(dim: int, **kwargs) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **kwargs)


class AttentionBlock(Block):
    """timm's ViT block (pre-norm multi-head self-attention, then MLP) on ``(B, H, W, C)`` maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1, 2)).reshape(x.shape)


class SpectFormer(GFNet):
    """Vanilla SpectFormer: GFNet with ViT blocks of ``num_heads`` heads after the first
    ``spectral_depth`` global filter blocks."""

    def __init__(self, *args, num_heads: int = 6, spectral_depth: int = 4, **kwargs):
        super().__init__(*args, block_kwargs=dict(num_heads=num_heads, spectral_depth=spectral_depth), **kwargs)

    def make_block(self, index: int, dim: int, grid: tuple[int, int], mlp_ratio: float, drop: float,
                   drop_path: float, num_heads: int = 6, spectral_depth: int = 4) -> nn.Module:
        if index < spectral_depth:
            return GlobalFilterBlock(dim, grid, mlp_ratio, drop=drop, drop_path=drop_path)
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the width {dim}")
        return AttentionBlock(
            dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=drop, attn_drop=drop, drop_path=drop_path,
            norm_layer=_layer_norm,
        )


# -- the hierarchical (WaveViT) trunk --------------------------------------------------------------


class ConvStem(nn.Module):
    """Three convolutions with BatchNorm and ReLU (the first of stride 2), a stride-2 3x3 projection
    and a LayerNorm: image -> ``(B, H/4, W/4, C)`` map."""

    def __init__(self, in_chans: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden_dim, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(hidden_dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.conv(x)).permute(0, 2, 3, 1))


class ConvDownsample(nn.Module):
    """A stride-2 3x3 convolution and a LayerNorm on ``(B, H, W, C)`` maps."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class ConvMlp(nn.Module):
    """PVTv2's feed-forward layer: linear, 3x3 depthwise convolution, GELU, linear (NHWC)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x))


class Attention(nn.Module):
    """Multi-head self-attention over a whole ``(B, H, W, C)`` map (separate ``q`` and ``kv`` projections)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the width {dim}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        head_dim = c // self.num_heads
        q = self.q(tokens).reshape(b, h * w, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(tokens).reshape(b, h * w, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h, w, c)
        return self.proj(x)


class HierarchicalBlock(PreNormBlock):
    """``x + DropPath(mixer(LN(x)))``, then ``x + DropPath(ConvMlp(LN(x)))``; the mixer is a spectral
    layer or attention."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__(dim, mixer, ConvMlp(dim, int(dim * mlp_ratio)), drop_path, norm_layer=_layer_norm)


class HierarchicalStage(Stage):
    """Downsampling (the stem does it for the first stage), blocks, and a LayerNorm (except in the last stage)."""

    def __init__(self, dim: int, out_dim: int, downsample: bool, mixers: list[nn.Module], mlp_ratio: float,
                 drop_path: list[float], norm: bool):
        downsampling = ConvDownsample(dim, out_dim) if downsample else nn.Identity()
        super().__init__(downsampling, [
            HierarchicalBlock(out_dim, mixer, mlp_ratio, dp) for mixer, dp in zip(mixers, drop_path)
        ])
        self.norm = _layer_norm(out_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class ClassAttention(nn.Module):
    """Attention of one class token (the first token) to all tokens (CaiT)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        head_dim = c // self.num_heads
        q = self.q(x[:, :1]).reshape(b, 1, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c))


class ClassBlock(nn.Module):
    """Updates the class token (first token) by class attention and an MLP; the other tokens pass through."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = ClassAttention(dim, num_heads)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, :1] + self.attn(self.norm1(x))
        cls = cls + self.mlp(self.norm2(cls))
        return torch.cat([cls, x[:, 1:]], dim=1)


class ClassAttentionHead(nn.Module):
    """WaveViT's head with token labeling: the mean token becomes a class token, updated by a class
    attention block; after a LayerNorm, the logits are ``fc(class token) + 0.5 * max over tokens of
    aux_fc(token)`` (the official evaluation output). ``pre_logits``: the normalized class token."""

    def __init__(self, dim: int, num_classes: int, num_heads: int, mlp_ratio: float, drop_rate: float = 0.0):
        super().__init__()
        self.cls_block = ClassBlock(dim, num_heads, mlp_ratio)
        self.norm = _layer_norm(dim)
        self.drop = nn.Dropout(drop_rate)
        self.in_features = dim
        self.reset(num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """A new classifier (``fc`` and ``aux_fc``) for ``num_classes``; this head always pools by class attention."""
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()
        self.aux_fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        tokens = x.flatten(1, 2)
        x = self.cls_block(torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1))
        x = self.norm(x)
        if pre_logits or isinstance(self.fc, nn.Identity):
            return x[:, 0]
        x = self.drop(x)
        return self.fc(x[:, 0]) + 0.5 * self.aux_fc(x[:, 1:]).amax(1)


def stage_grids(img_size: int | tuple[int, int], num_stages: int) -> list[tuple[int, int]]:
    """The map size of each stage for ``img_size``: stride 4, then halved (rounded up) per stage."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return [(math.ceil(h / 2 ** (i + 2)), math.ceil(w / 2 ** (i + 2))) for i in range(num_stages)]


class SpectFormerH(Backbone):
    """The hierarchical trunk of SpectFormer-H and SVT-H: a convolutional stem, four stages (strides
    4-32) whose first ``spectral_stages`` mix tokens with ``spectral_layer(dim, grid)`` (``grid``: the
    stage's map size at ``img_size``) and the others with multi-head attention, and a class attention
    head with token labeling."""

    stem_name = "stem"
    output_fmt = "NHWC"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        global_pool: str = "token",
        stem_hidden_dim: int = 32,
        embed_dims: tuple[int, ...] = (64, 128, 320, 448),
        num_heads: tuple[int, ...] = (2, 4, 10, 14),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        spectral_stages: int = 2,
        spectral_layer: Callable[[int, tuple[int, int]], nn.Module] = GlobalFilter,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(global_pool=global_pool, **kwargs)
        if not len(embed_dims) == len(num_heads) == len(mlp_ratios) == len(depths):
            raise ValueError("embed_dims, num_heads, mlp_ratios and depths must have one entry per stage")
        self.num_features = self.head_hidden_size = embed_dims[-1]
        num_stages = len(depths)

        self.stem = ConvStem(self.in_chans, stem_hidden_dim, embed_dims[0])
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i, (dim, grid) in enumerate(zip(embed_dims, stage_grids(img_size, num_stages))):
            mixers = [
                spectral_layer(dim, grid) if i < spectral_stages else Attention(dim, num_heads[i])
                for _ in range(depths[i])
            ]
            stages.append(HierarchicalStage(
                embed_dims[max(i - 1, 0)], dim, downsample=i > 0, mixers=mixers, mlp_ratio=mlp_ratios[i],
                drop_path=drop_path[i], norm=i < num_stages - 1,
            ))
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Identity()
        self.head = ClassAttentionHead(
            self.num_features, self.num_classes, num_heads[-1], mlp_ratios[-1], self.drop_rate
        )
        self.apply(init_conv_fan_out)


# Official key -> ours, both trunks: the classifier.
_OFFICIAL_RENAMES = ((r"^head\.(weight|bias)$", r"head.fc.\1"),)


def _official_h_renames(num_stages: int) -> Renames:
    """Official (WaveViT layout) key -> ours for a ``num_stages``-stage SpectFormer-H: ``patch_embed1`` is the
    stem, ``patch_embed{i}`` / ``block{i}`` / ``norm{i}`` stage ``i - 1``'s downsampling, blocks and norm; the
    last norm, ``post_network.0`` and ``aux_head`` are the head's."""
    return (
        (r"^patch_embed1\.", "stem."),
        (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),
        (r"^block(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks."),
        (rf"^norm{num_stages}\.", "head.norm."),
        (r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
        (r"^post_network\.0\.", "head.cls_block."),
        (r"^aux_head\.", "head.aux_fc."),
        (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    )


def checkpoint_filter_fn(state_dict: dict, model: SpectFormer | SpectFormerH) -> dict[str, torch.Tensor]:
    """Convert a checkpoint of the official SpectFormer code (badripatro/SpectFormers) or of the SVT code
    (badripatro/svt, same trunk) to this model's layout.

    Unwraps ``model`` / ``state_dict`` / ``module.`` and renames ``head`` to ``head.fc`` (and the
    hierarchical trunk's keys). Filters and position embeddings learned for another ``img_size`` are
    resized bicubically.
    """
    hierarchical = isinstance(model, SpectFormerH)
    renames = _OFFICIAL_RENAMES + (_official_h_renames(len(model.stages)) if hierarchical else ())
    state_dict = rename_keys(unwrap_checkpoint(state_dict), renames)
    return resize_spectral_params(state_dict, model, None if hierarchical else model.patch_embed.grid_size)


_create_spectformer = backbone_creator(SpectFormer, checkpoint_filter_fn)
_create_spectformer_h = backbone_creator(SpectFormerH, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("spectformer"))

register_tiny_kwargs("zoo_spectformer", img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2,
                     spectral_depth=2)  # fmt: skip
register_tiny_kwargs("zoo_spectformer_h", img_size=32, stem_hidden_dim=8, embed_dims=(8, 16, 16, 16),
                     num_heads=(1, 2, 2, 2), depths=(1, 1, 1, 1))  # fmt: skip


# Vanilla SpectFormer-T/XS/S/B: GFNet's sizes, 4 spectral blocks, then attention with heads of 64 channels.
# SpectFormer-H-S/B/L: global filters in stages 1-2, attention in 3-4 (SVT-H takes the same sizes).
_SPECTFORMER_H_S = dict(stem_hidden_dim=32, embed_dims=(64, 128, 320, 448), num_heads=(2, 4, 10, 14),
                        depths=(3, 4, 6, 3), drop_path_rate=0.1)  # fmt: skip
_SPECTFORMER_H_B = dict(stem_hidden_dim=64, embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16),
                        depths=(3, 4, 12, 3), drop_path_rate=0.1)  # fmt: skip
_SPECTFORMER_H_L = dict(stem_hidden_dim=64, embed_dims=(96, 192, 384, 512), num_heads=(3, 6, 12, 16),
                        depths=(3, 6, 18, 3), drop_path_rate=0.3)  # fmt: skip
register_variants(
    _create_spectformer,
    zoo_spectformer_t=dict(_GFNET_TI, num_heads=4),
    zoo_spectformer_xs=dict(_GFNET_XS, num_heads=6),
    zoo_spectformer_s=dict(_GFNET_S, num_heads=6),
    zoo_spectformer_b=dict(_GFNET_B, num_heads=8),
)
register_variants(
    _create_spectformer_h,
    zoo_spectformer_h_s=_SPECTFORMER_H_S,
    zoo_spectformer_h_b=_SPECTFORMER_H_B,
    zoo_spectformer_h_l=_SPECTFORMER_H_L,
)
