"""Pyramid Vision Transformer trunks (PVT, Wang et al., ICCV 2021; PVTv2, Wang et al., CVMJ 2022) for the
attention modules published on them (FLatten, Agent attention).

https://arxiv.org/abs/2102.12122, https://arxiv.org/abs/2106.13797

Four stages, each opening with a patch embedding (a strided convolution then LayerNorm): PVT's
non-overlapping 4x4 / 2x2 patches plus a learned position embedding per stage, or PVTv2's overlapping
7x7 stride-4 / 3x3 stride-2 convolutions, a depthwise convolution in the MLP and a LayerNorm ending
each stage. Blocks run on ``(B, H, W, C)`` maps with a :class:`~zoo.layers.map_attention.MapAttention`
built by the family (``attn_layer``), its keys and values spatially reduced ``sr_ratios[i]`` times.
There is no final norm: the classifier averages the last map. Position embeddings are interpolated
bilinearly to the input's maps (as the official code does), so any input size works.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, calculate_drop_path_rates, to_2tuple, trunc_normal_
from timm.models import checkpoint_seq

from zoo.layers.blocks import PreNormBlock
from zoo.layers.dwconv import DepthwiseConv2d

from ._backbone import Backbone, Stage, init_trunc_normal, pyramid_feature_info
from ._state_dict import Renames, rename_keys, unwrap_checkpoint
from .cswin import ConvEmbed

__all__ = ["PVT_V2_RENAMES", "PyramidVisionTransformer", "checkpoint_filter_fn"]


class ConvMlp(nn.Module):
    """PVTv2's MLP on a ``(B, H, W, C)`` map: ``fc2(GELU(DWConv3x3(fc1(x))))``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConv2d(hidden_dim, 3)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.drop2(self.fc2(self.drop1(self.act(x))))


class PvtBlock(PreNormBlock):
    """Pre-norm block: ``attn`` then ``mlp``, each with a residual connection."""


class PvtStage(Stage):
    """A patch embedding, PVT's position embedding (``pos_embed``, ``None`` for PVTv2) added after it,
    the blocks, then PVTv2's stage norm (``nn.Identity()`` for PVT)."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module], pos_embed: nn.Parameter | None,
                 resolution: tuple[int, int], norm: nn.Module):
        super().__init__(downsample, blocks)
        self.resolution = resolution
        self.pos_embed = pos_embed
        self.norm = norm

    def _pos_embed(self, size: tuple[int, int]) -> torch.Tensor:
        if size == self.resolution:
            return self.pos_embed.reshape(1, *size, -1)
        grid = self.pos_embed.reshape(1, *self.resolution, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=size, mode="bilinear").permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.pos_embed is not None:
            x = x + self._pos_embed(tuple(x.shape[1:3]))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.norm(checkpoint_seq(self.blocks, x))
        return self.norm(self.blocks(x))


class PyramidVisionTransformer(Backbone):
    """PVT (``v2=False``) or PVTv2 (``v2=True``) on NHWC maps.

    ``attn_layer(dim, num_heads, resolution, sr_ratio, stage)`` builds each block's attention for a
    stage map of ``resolution`` at ``img_size``. The first stage embeds the image itself (no stem).
    """

    stem_name = None
    stages_name = "stages"
    output_fmt = "NHWC"
    min_input_size = 32

    def __init__(
        self,
        attn_layer: Callable[..., nn.Module],
        img_size: int | tuple[int, int] = 224,
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        sr_ratios: tuple[int, ...] = (1, 1, 1, 1),
        v2: bool = False,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_stages = len(depths)
        if not len(embed_dims) == len(num_heads) == len(mlp_ratios) == len(sr_ratios) == num_stages:
            raise ValueError(
                f"depths {depths}, embed_dims {embed_dims}, num_heads {num_heads}, mlp_ratios {mlp_ratios} and "
                f"sr_ratios {sr_ratios} must have one entry per stage"
            )
        self.num_features = self.head_hidden_size = embed_dims[-1]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        grid = to_2tuple(img_size)
        stages = []
        for i in range(num_stages):
            dim = embed_dims[i]
            in_dim, in_fmt = (self.in_chans, "NCHW") if i == 0 else (embed_dims[i - 1], "NHWC")
            if v2:
                kernel, stride = (7, 4) if i == 0 else (3, 2)
                downsample = ConvEmbed(in_dim, dim, kernel, stride, kernel // 2, in_fmt)
                grid = tuple((g - 1) // stride + 1 for g in grid)
            else:
                stride = 4 if i == 0 else 2
                downsample = ConvEmbed(in_dim, dim, stride, stride, 0, in_fmt)
                grid = tuple(g // stride for g in grid)
            blocks = []
            for j in range(depths[i]):
                hidden = int(dim * mlp_ratios[i])
                mlp = ConvMlp(dim, hidden, proj_drop_rate) if v2 else Mlp(dim, hidden, drop=proj_drop_rate)
                attn = attn_layer(dim, num_heads[i], grid, sr_ratios[i], i)
                blocks.append(PvtBlock(dim, attn, mlp, drop_path[i][j], norm_layer))
            pos_embed = None if v2 else nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
            if pos_embed is not None:
                trunc_normal_(pos_embed, std=0.02)
            stages.append(PvtStage(downsample, blocks, pos_embed, grid, norm_layer(dim) if v2 else nn.Identity()))
        self.stages = nn.Sequential(*stages)
        self.feature_info = pyramid_feature_info(embed_dims)
        self.norm = nn.Identity()
        self.head = self.classifier_head()
        self.apply(init_trunc_normal)


# PVTv2's official layout, which VAN's official code keeps -> ours: stage i's (from 1) patch embedding, blocks and
# norm are ``patch_embed{i}``, ``block{i}`` and ``norm{i}``, the MLP's depthwise convolution ``dwconv.dwconv``.
PVT_V2_RENAMES: Renames = (
    (r"^patch_embed(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample."),
    (r"^block(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks."),
    (r"^norm(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"^head\.", "head.fc."),
)

# PVT's differ only in the patch embedding's convolution (``proj`` there, ``conv`` here) and PVT's position embeddings.
_OFFICIAL_RENAMES: Renames = (
    (r"^(patch_embed\d+)\.proj\.", r"\1.conv."),
    (r"^pos_embed(\d+)$", lambda m: f"stages.{int(m.group(1)) - 1}.pos_embed"),
    *PVT_V2_RENAMES,
)


def checkpoint_filter_fn(state_dict: dict, model: PyramidVisionTransformer) -> dict[str, torch.Tensor]:
    """Convert an official PVT / PVTv2 checkpoint (LeapLabTHU's FLatten and Agent versions).

    Unwraps ``state_dict`` / ``model`` and ``module.``, then renames ``patch_embed{i}.{proj,norm}`` to
    ``stages.{i-1}.downsample.{conv,norm}``, ``pos_embed{i}`` to ``stages.{i-1}.pos_embed``,
    ``block{i}.{j}`` to ``stages.{i-1}.blocks.{j}``, PVTv2's ``norm{i}`` to ``stages.{i-1}.norm`` and
    ``mlp.dwconv.dwconv`` to ``mlp.dwconv``, ``head`` to ``head.fc``; drops the final ``norm`` that
    the official FLatten-PVT declares but never applies; interpolates position embeddings stored for
    another input size. Checkpoints already in this layout pass through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict, ("state_dict", "model"))
    if any(k.startswith("patch_embed1.") for k in state_dict):
        state_dict = rename_keys({k: v for k, v in state_dict.items() if not k.startswith("norm.")}, _OFFICIAL_RENAMES)
    for i, stage in enumerate(model.stages):
        key = f"stages.{i}.pos_embed"
        if key in state_dict and stage.pos_embed is not None and state_dict[key].shape != stage.pos_embed.shape:
            old = int(state_dict[key].shape[1] ** 0.5)
            grid = state_dict[key].reshape(1, old, old, -1).permute(0, 3, 1, 2)
            state_dict[key] = F.interpolate(grid, size=stage.resolution, mode="bilinear").flatten(2).transpose(1, 2)
    return state_dict


# PVT-T (PVT paper Table 1), the sizes the FLatten and Agent versions start from, and a tiny PVT for their tests.
_PVT_T = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
_TINY_KWARGS = dict(img_size=64, embed_dims=(16, 16, 32, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
