"""Swin Transformer: Hierarchical Vision Transformer using Shifted Windows (Liu et al., ICCV 2021).

https://arxiv.org/abs/2103.14030

The state dict is the same as timm's ``swin_*_patch4_window*`` models (timm's Hub weights load
as they are) and official checkpoints from microsoft/Swin-Transformer load through
``checkpoint_filter_fn``. Unlike the official model, any input size works: each block pads its
map to a multiple of the window (and crops back), as the official detection code does. Window
attention runs through ``zoo.kernels.window_attention``: a fused Triton kernel on CUDA, a
PyTorch path elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    LayerNorm2d,
    Mlp,
    PatchEmbed,
    calculate_drop_path_rates,
    resample_patch_embed,
    resize_rel_pos_bias_table,
    to_2tuple,
    trunc_normal_,
)
from timm.models import generate_default_cfgs

from zoo.kernels import window_attention
from zoo.layers.blocks import PreNormBlock
from zoo.layers.map_attention import PaddedHeadsAttention
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, build_backbone, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_key, unwrap_checkpoint

__all__ = ["SwinTransformer"]


def stage_window_and_shift(resolution: tuple[int, int], window_size: tuple[int, int], shifted: bool,
                           fit_window_to_map: bool = True):
    """Swin's rule: a stage whose map fits in one window uses a window of the map's size and no shift.

    Without ``fit_window_to_map`` every stage keeps the full window and shifts it by half, whatever
    its map size, as the official detection and segmentation backbone does.
    """
    if not fit_window_to_map:
        return window_size, tuple(w // 2 if shifted else 0 for w in window_size)
    window = tuple(min(r, w) for r, w in zip(resolution, window_size))
    shift = tuple(0 if (r <= w or not shifted) else w // 2 for r, w in zip(resolution, window))
    return window, shift


class WindowAttention(PaddedHeadsAttention):
    """Multi-head self-attention inside (shifted) windows with Swin's relative position bias.

    Takes a ``(B, H, W, C)`` map of any size: it is padded to a multiple of the window (as the
    official detection code does) and cropped back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], shift_size: tuple[int, int] = (0, 0),
                 qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        self.window_size = window_size
        self.shift_size = shift_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads)
        )
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def padding(self, h: int, w: int) -> tuple[int, int]:
        return -h % self.window_size[0], -w % self.window_size[1]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return window_attention(q, k, v, self.window_size, self.shift_size, rpb=self.relative_position_bias_table)


class SwinTransformerBlock(PreNormBlock):
    """Pre-norm block: token mixing then MLP, each with a residual connection (paper Eq. 3).

    The mixer is Swin's (S)W-MSA unless another ``(B, H, W, C) -> (B, H, W, C)`` module is given
    (FLatten's and Agent attention's global blocks reuse the block that way).
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], shift_size: tuple[int, int],
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, proj_drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer: type[nn.Module] = nn.LayerNorm, attn: nn.Module | None = None):
        attn = attn or WindowAttention(dim, num_heads, window_size, shift_size, qkv_bias, proj_drop)
        super().__init__(dim, attn, Mlp(dim, int(dim * mlp_ratio), drop=proj_drop), drop_path, norm_layer)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C channels), normalize and project to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int, norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = x.shape[1:3]
        # Channel order x0, x1, x2, x3 of the official code: (0,0), (1,0), (0,1), (1,1).
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(Stage):
    """Optional 2x downsampling followed by ``depth`` blocks alternating W-MSA and SW-MSA.

    The first ``global_blocks`` blocks instead mix tokens with ``global_attn_layer(dim, num_heads,
    resolution, stage)``, a module attending over the whole stage map. ``fit_window_to_map``: see
    :func:`stage_window_and_shift`.
    """

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int, downsample: bool,
                 num_heads: int, window_size: tuple[int, int], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, drop_path: list[float] | float = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm, global_blocks: int = 0,
                 global_attn_layer: Callable[..., nn.Module] | None = None, stage: int = 0,
                 fit_window_to_map: bool = True):
        downsampling = PatchMerging(dim, out_dim, norm_layer) if downsample else nn.Identity()
        blocks = []
        for i in range(depth):
            window, shift = stage_window_and_shift(resolution, window_size, i % 2 == 1, fit_window_to_map)
            attn = global_attn_layer(out_dim, num_heads, resolution, stage) if i < global_blocks else None
            blocks.append(SwinTransformerBlock(
                out_dim, num_heads, window, shift, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop, drop_path=drop_path[i] if isinstance(drop_path, list) else drop_path,
                norm_layer=norm_layer, attn=attn,
            ))
        super().__init__(downsampling, blocks)


class SwinTransformer(Backbone):
    """Swin Transformer with timm's module layout (downsampling at the start of stages 1-3).

    Stages run on NHWC maps. Window sizes are fixed at construction from ``img_size`` (a stage
    whose map is smaller than the window uses the map's size), so the weights are those of the
    model built at that size; any other input size is padded per block to the window.
    ``fit_window_to_map=False`` keeps the full, shifted window in every stage instead, whatever the
    map size: the official detection/segmentation backbone (see ``downstream_cfg``).
    ``global_blocks[i]`` blocks at the start of stage ``i`` use ``global_attn_layer`` instead of
    window attention (FLatten, Agent).
    """

    stem_name = "patch_embed"
    stages_name = "layers"
    output_fmt = "NHWC"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        global_blocks: tuple[int, ...] = (0, 0, 0, 0),
        global_attn_layer: Callable[..., nn.Module] | None = None,
        fit_window_to_map: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} must have one entry per stage")
        self.patch_size = patch_size
        self.window_size = to_2tuple(window_size)
        self.min_input_size = patch_size * min(self.window_size)
        num_stages = len(depths)
        dims = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=self.in_chans, embed_dim=dims[0],
            norm_layer=norm_layer, output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True,
        )
        grid = self.patch_embed.grid_size
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i in range(num_stages):
            scale = 2**i
            stages.append(SwinTransformerStage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i],
                resolution=(math.ceil(grid[0] / scale), math.ceil(grid[1] / scale)),
                depth=depths[i], downsample=i > 0, num_heads=num_heads[i], window_size=self.window_size,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, drop_path=drop_path[i],
                norm_layer=norm_layer, global_blocks=global_blocks[i], global_attn_layer=global_attn_layer, stage=i,
                fit_window_to_map=fit_window_to_map,
            ))
            self.feature_info.append(dict(num_chs=dims[i], reduction=patch_size * scale, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = self.classifier_head()
        self.apply(init_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


# Official (microsoft/Swin-Transformer) key -> ours: downsampling ends a stage there, starts the next here.
_OFFICIAL_RENAMES = (
    (r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample"),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict, model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Convert a timm or official (microsoft/Swin-Transformer) checkpoint to this model's layout.

    Unwraps ``model`` / ``state_dict`` / ``module.``, drops the recomputed buffers, moves the
    official end-of-stage downsampling to the start of the next stage, renames ``head`` to
    ``head.fc`` and resizes patch embedding and relative position bias tables that do not match.
    """
    state_dict = unwrap_checkpoint(state_dict)
    official_layout = "layers.0.downsample.reduction.weight" in state_dict
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask", "relative_coords_table")):
            continue
        if official_layout:
            key = rename_key(key, _OFFICIAL_RENAMES)
        if key == "patch_embed.proj.weight":
            target = model.patch_embed.proj.weight.shape[-2:]
            if value.shape[-2:] != target:
                value = resample_patch_embed(value, list(target), interpolation="bicubic", antialias=True)
        if key.endswith("relative_position_bias_table"):
            attn = model.get_submodule(key.rsplit(".", 1)[0])
            if value.shape != attn.relative_position_bias_table.shape:
                value = resize_rel_pos_bias_table(
                    value, new_window_size=attn.window_size, new_bias_shape=attn.relative_position_bias_table.shape
                )
        out[key] = value
    return out


def _create_swin(variant: str, pretrained: bool = False, checkpoint_filter=checkpoint_filter_fn,
                 **kwargs) -> SwinTransformer:
    return build_backbone(SwinTransformer, variant, pretrained, checkpoint_filter, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("swin"))

# The backbone of the official detection/segmentation code (Swin-Transformer-Object-Detection, mmdet's
# SwinTransformer), which ``zoo.adapters`` build: full windows shifted in every stage, an nn.LayerNorm
# (``norm0..3``, eps 1e-5) on every output map, and the patch merging at the end of a stage (frozen with it).
downstream_cfg = dict(
    model_kwargs=dict(fit_window_to_map=False),
    out_norm=partial(LayerNorm2d, eps=1e-5),
    downsample_ends_stage=True,
)

register_tiny_kwargs(
    "zoo_swin", img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4
)


# Swin-T/S/B/L (paper Table 1: C and depths); the _384 variants are fine-tuned at 384² with window 12.
_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_SWIN_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
register_variants(
    _create_swin,
    zoo_swin_tiny=_SWIN_T,
    zoo_swin_small=_SWIN_S,
    zoo_swin_base=_SWIN_B,
    zoo_swin_base_384=dict(_SWIN_B, img_size=384, window_size=12),
    zoo_swin_large=_SWIN_L,
    zoo_swin_large_384=dict(_SWIN_L, img_size=384, window_size=12),
)
