"""GFNet: Global Filter Networks for Image Classification (Rao et al., NeurIPS 2021).

https://arxiv.org/abs/2107.00645

Isotropic GFNet (Ti, XS, S, B: patch 16, one resolution) and the hierarchical GFNet-H (Ti, S, B:
four stages at strides 4-32). A block mixes tokens with a learned global filter in the Fourier
domain (``zoo.layers.spectral``) and has one residual connection around filter and MLP together.

Official checkpoints (raoyongming/GFNet, ``{'model': state_dict}``) load through
``checkpoint_filter_fn``. Unlike the official model, any input size works: the filters and the
position embedding, learned for the ``img_size`` the model is built with, are resized bilinearly
in the forward pass for any other map size; loading a checkpoint into a model built with another
``img_size`` resizes them once, bicubically, as the official fine-tuning does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    LayerScale,
    Mlp,
    calculate_drop_path_rates,
    resample_abs_pos_embed,
    trunc_normal_,
)
from timm.models import generate_default_cfgs

from zoo.layers.spectral import GlobalFilter, resize_filter
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, IsotropicBackbone, Stage, backbone_creator, init_trunc_normal, token_map_patch_embed
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["GFNet", "GFNetH", "GlobalFilterBlock", "resize_pos_embed"]


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def resize_pos_embed(pos_embed: torch.Tensor, old_size: tuple[int, int], new_size: tuple[int, int],
                     mode: str = "bilinear") -> torch.Tensor:
    """A ``(1, H*W, C)`` position embedding of an ``old_size`` grid, resized to ``new_size``."""
    if tuple(old_size) == tuple(new_size):
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed, list(new_size), list(old_size), num_prefix_tokens=0, interpolation=mode, antialias=False
    )


class GlobalFilterBlock(nn.Module):
    """``x + DropPath(gamma * MLP(LN(GF(LN(x)))))`` on ``(B, H, W, C)`` maps (paper Sec. 3.2); ``gamma``
    (LayerScale) only where ``init_values`` is given (GFNet-H)."""

    def __init__(self, dim: int, filter_size: tuple[int, int], mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, init_values: float | None = None):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.filter = GlobalFilter(dim, filter_size)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ls(self.mlp(self.norm2(self.filter(self.norm1(x))))))


class _PosEmbedBackbone(Backbone):
    """A backbone whose stem (``patch_embed``) output gets a learned position embedding ``pos_embed``
    of the stem's grid at ``img_size``, resized bilinearly for any other grid."""

    stem_name = "patch_embed"

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().stem_forward(x)
        b, h, w, c = x.shape
        pos_embed = resize_pos_embed(self.pos_embed, self.patch_embed.grid_size, (h, w))
        return self.pos_drop(x + pos_embed.reshape(1, h, w, c))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


class GFNet(_PosEmbedBackbone, IsotropicBackbone):
    """Isotropic GFNet: patch embedding, position embedding, ``depth`` global filter blocks.

    Each block is a stage of ``feature_info`` (stride ``patch_size``); the filters are learned for the
    ``img_size // patch_size`` grid. Subclasses change the blocks through ``make_block``, which also
    receives ``block_kwargs``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_kwargs: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim

        grid = self.embed_patches(img_size, patch_size, embed_dim, depth)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
        self.pos_drop = nn.Dropout(self.drop_rate)
        drop_path = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[
            self.make_block(i, embed_dim, grid, mlp_ratio, proj_drop_rate, drop_path[i], **(block_kwargs or {}))
            for i in range(depth)
        ])
        self.norm = _layer_norm(embed_dim)
        self.head = self.classifier_head()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_trunc_normal)

    def make_block(self, index: int, dim: int, grid: tuple[int, int], mlp_ratio: float, drop: float,
                   drop_path: float) -> nn.Module:
        """Block ``index`` of the model, on a ``grid`` map."""
        return GlobalFilterBlock(dim, grid, mlp_ratio, drop=drop, drop_path=drop_path)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed|^pos_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])


class Downsample(nn.Module):
    """GFNet-H's downsampling between stages: a 2x2 convolution of stride 2 on ``(B, H, W, C)`` maps
    (an odd side is padded by one)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, out_dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.permute(0, 3, 1, 2), (0, x.shape[2] % 2, 0, x.shape[1] % 2))
        return self.proj(x).permute(0, 2, 3, 1)


class GFNetHStage(Stage):
    """Optional downsampling followed by global filter blocks with LayerScale."""

    def __init__(self, dim: int, out_dim: int, grid: tuple[int, int], depth: int, downsample: bool,
                 mlp_ratio: float, drop: float, drop_path: list[float], init_values: float):
        downsampling = Downsample(dim, out_dim) if downsample else nn.Identity()
        super().__init__(downsampling, [
            GlobalFilterBlock(out_dim, grid, mlp_ratio, drop=drop, drop_path=drop_path[j], init_values=init_values)
            for j in range(depth)
        ])


class GFNetH(_PosEmbedBackbone):
    """Hierarchical GFNet (GFNet-H): a stride-4 patch embedding with a position embedding, then four
    stages of global filter blocks at strides 4, 8, 16 and 32. The filters of stage ``i`` are learned
    for the ``img_size / (patch_size * 2**i)`` map (rounded up)."""

    stages_name = "stages"
    output_fmt = "NHWC"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (3, 3, 10, 3),
        mlp_ratio: float = 4.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float = 1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(embed_dims) != len(depths):
            raise ValueError(f"embed_dims {embed_dims} and depths {depths} must have one entry per stage")
        self.num_features = self.head_hidden_size = embed_dims[-1]

        self.patch_embed = token_map_patch_embed(img_size, patch_size, self.in_chans, embed_dims[0])
        grid = self.patch_embed.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dims[0]))
        self.pos_drop = nn.Dropout(self.drop_rate)
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            stage_grid = (math.ceil(grid[0] / 2**i), math.ceil(grid[1] / 2**i))
            stages.append(GFNetHStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], stage_grid, depth, downsample=i > 0, mlp_ratio=mlp_ratio,
                drop=proj_drop_rate, drop_path=drop_path[i], init_values=init_values,
            ))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=patch_size * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = _layer_norm(self.num_features)
        self.head = self.classifier_head()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_trunc_normal)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed|^pos_embed", blocks=super().group_matcher(coarse)["blocks"])


def resize_spectral_param(key: str, value: torch.Tensor, target: torch.Size, grid: tuple[int, int]) -> torch.Tensor:
    """Fit a checkpoint's filter or position embedding to the ``target`` shape of a model built for
    another ``img_size`` (``grid``: its patch grid): bicubic interpolation, as the official
    fine-tuning at a new resolution does."""
    if value.shape == target:
        return value
    if key.endswith("complex_weight"):
        return resize_filter(value.float(), target[:2], mode="bicubic")
    if key.endswith("pos_embed"):
        old = math.isqrt(value.shape[1])
        return resize_pos_embed(value.float(), (old, old), grid, mode="bicubic")
    return value


def resize_spectral_params(state_dict: dict[str, torch.Tensor], model: nn.Module,
                           grid: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    """``state_dict`` (in ``model``'s layout) with every filter and position embedding learned for another
    ``img_size`` fitted to ``model`` by :func:`resize_spectral_param` (``grid``: the model's patch grid)."""
    targets = {k: v.shape for k, v in model.state_dict().items()}
    return {k: resize_spectral_param(k, v, targets[k], grid) if k in targets else v for k, v in state_dict.items()}


# Official (raoyongming/GFNet) key -> ours: the classifier, and GFNet-H's LayerScale ``gamma``.
_OFFICIAL_RENAMES = (
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
    (r"(?<!\.ls)\.gamma$", ".ls.gamma"),
)
# GFNet-H's: ``patch_embed.{0..3}`` are the stem and the stages' downsampling, ``blocks.{i}.{j}`` the stages' blocks.
_OFFICIAL_H_RENAMES = (
    (r"^patch_embed\.0\.", "patch_embed."),
    (r"^patch_embed\.(\d)\.", r"stages.\1.downsample."),
    (r"^blocks\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
)


def checkpoint_filter_fn(state_dict: dict, model: GFNet | GFNetH) -> dict[str, torch.Tensor]:
    """Convert an official GFNet / GFNet-H checkpoint (raoyongming/GFNet) to this model's layout: unwrap
    ``model`` / ``state_dict`` / ``module.``, rename the keys, and resize the filters and position embedding
    learned for another ``img_size`` bicubically."""
    renames = _OFFICIAL_RENAMES + (_OFFICIAL_H_RENAMES if isinstance(model, GFNetH) else ())
    state_dict = rename_keys(unwrap_checkpoint(state_dict), renames)
    return resize_spectral_params(state_dict, model, model.patch_embed.grid_size)


_create_gfnet = backbone_creator(GFNet, checkpoint_filter_fn)
_create_gfnet_h = backbone_creator(GFNetH, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("gfnet"))

register_tiny_kwargs("zoo_gfnet", img_size=32, patch_size=8, embed_dim=16, depth=2)
register_tiny_kwargs("zoo_gfnet_h", img_size=32, embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))


# GFNet-Ti/XS/S/B (width and depth; patch 16) and GFNet-H-Ti/S/B (four stages, LayerScale), 224².
# SpectFormer's vanilla variants share the GFNet sizes.
_GFNET_TI = dict(embed_dim=256, depth=12)
_GFNET_XS = dict(embed_dim=384, depth=12)
_GFNET_S = dict(embed_dim=384, depth=19, drop_path_rate=0.15)
_GFNET_B = dict(embed_dim=512, depth=19, drop_path_rate=0.25)
register_variants(
    _create_gfnet,
    zoo_gfnet_ti=_GFNET_TI,
    zoo_gfnet_xs=_GFNET_XS,
    zoo_gfnet_s=_GFNET_S,
    zoo_gfnet_b=_GFNET_B,
)
register_variants(
    _create_gfnet_h,
    zoo_gfnet_h_ti=dict(embed_dims=(64, 128, 256, 512), depths=(3, 3, 10, 3), drop_path_rate=0.1, init_values=1e-3),
    zoo_gfnet_h_s=dict(embed_dims=(96, 192, 384, 768), depths=(3, 3, 10, 3), drop_path_rate=0.2, init_values=1e-5),
    zoo_gfnet_h_b=dict(embed_dims=(96, 192, 384, 768), depths=(3, 3, 27, 3), drop_path_rate=0.4, init_values=1e-6),
)
