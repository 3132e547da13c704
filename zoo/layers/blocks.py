"""The pre-norm residual blocks that the transformer families share."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale, Mlp


class PreNormBlock(nn.Module):
    """``x + DropPath(LS(attn(norm1(x))))`` then ``x + DropPath(LS(mlp(norm2(x))))`` (ViT's block,
    Dosovitskiy et al. Eq. 2-3), with layer scale ``LS`` only where ``layer_scale`` is given.

    ``attn`` is the family's token mixer and ``mlp`` its channel mixer, both shape-preserving modules.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, layer_scale: float | None = None):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class MlpBlock(PreNormBlock):
    """:class:`PreNormBlock` with timm's ``Mlp`` (hidden width ``dim * mlp_ratio``, GELU, dropout ``proj_drop``) as
    its channel mixer: the transformer block of the families whose own part is the token mixer ``attn``."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, proj_drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 layer_scale: float | None = None):
        super().__init__(dim, attn, Mlp(dim, int(dim * mlp_ratio), drop=proj_drop), drop_path, norm_layer, layer_scale)
