"""LKCA: Large Kernel Convolutional Attention (Li et al., 2024; later "Interpreting and Improving Attention From
the Perspective of Large Kernel Convolution").

https://arxiv.org/abs/2401.05738

A ViT for small data sets whose self-attention is replaced by one large convolution over the token
grid: the values are convolved with a single ``(2S - 1) x (2S - 1)`` kernel shared by every channel,
which is attention with the Toeplitz matrix ``A[p, q] = K[p - q + S - 1]`` (``S x S`` tokens, no
queries or keys). The variants are those of the official code
(CatworldLee/LKCA-MiniViTsTrainer-Pytorch-CIFAR-TinyImageNet, ``models/largevit_cnn.py``): 32x32
inputs in 4x4 patches; no weights have been released. Checkpoints trained with the official code
load through ``checkpoint_filter_fn``.

Differences from the official model, none of which changes its outputs: the token grid is a
``(B, H, W, C)`` map; the unused ``cls_token`` of the official model is left out (one ``dim``-sized
parameter fewer); and other input sizes work (the patch grid is padded, the position embedding
resampled, the kernel applied with "same" zero padding, so offsets beyond the trained grid weigh
zero). The convolution runs through ``zoo.kernels.depthwise_conv2d``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import (
    LayerNorm2d,
    Mlp,
    NormMlpClassifierHead,
    resample_abs_pos_embed_nhwc,
)
from timm.models import generate_default_cfgs

from zoo.kernels import depthwise_conv2d
from zoo.layers.blocks import PreNormBlock
from zoo.weights import pretrained_cfgs

from ._backbone import IsotropicBackbone, backbone_creator
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["LKCAViT"]


class LargeKernelConvAttention(nn.Module):
    """``proj(K * v)``, ``v = W_v x``, with one ``(2 Gh - 1) x (2 Gw - 1)`` kernel ``K`` shared by all
    channels (zero-initialized), so every token sees every other one of a ``Gh x Gw`` grid."""

    def __init__(self, dim: int, inner_dim: int, grid_size: tuple[int, int]):
        super().__init__()
        self.v = nn.Linear(dim, inner_dim, bias=False)
        self.kernel = nn.Parameter(torch.zeros(1, 1, 2 * grid_size[0] - 1, 2 * grid_size[1] - 1))
        self.proj = nn.Linear(inner_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v(x).permute(0, 3, 1, 2)
        out = depthwise_conv2d(v, self.kernel.expand(v.shape[1], -1, -1, -1), padding="same")
        return self.proj(out.permute(0, 2, 3, 1))


class LKCABlock(PreNormBlock):
    """Pre-norm transformer block with large-kernel convolutional attention as the token mixer."""

    def __init__(self, dim: int, inner_dim: int, mlp_ratio: float, grid_size: tuple[int, int],
                 drop_path: float = 0.0):
        super().__init__(dim, LargeKernelConvAttention(dim, inner_dim, grid_size), Mlp(dim, int(dim * mlp_ratio)),
                         drop_path)


class LKCAViT(IsotropicBackbone):
    """ViT with LKCA blocks on a ``(B, H, W, C)`` token map: patch embedding plus a learned position
    embedding, ``depth`` blocks (each a stage of ``feature_info``), mean pooling, LayerNorm and a
    linear classifier. The attention width is ``heads * head_dim`` (the heads only set that width).
    ``drop_path_rate`` is the same for every block, as in the official code."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        num_classes: int = 100,
        dim: int = 192,
        depth: int = 9,
        heads: int = 12,
        head_dim: int = 16,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(num_classes=num_classes, **kwargs)
        self.min_input_size = patch_size
        self.num_features = self.head_hidden_size = dim
        grid = self.embed_patches(img_size, patch_size, dim, depth)
        self.pos_embed = nn.Parameter(torch.randn(1, *grid, dim))
        self.blocks = nn.Sequential(*[
            LKCABlock(dim, heads * head_dim, mlp_ratio, grid, drop_path_rate) for _ in range(depth)
        ])
        self.norm = nn.Identity()
        self.head = NormMlpClassifierHead(
            dim, self.num_classes, pool_type=self.global_pool, drop_rate=self.drop_rate,
            norm_layer=partial(LayerNorm2d, eps=1e-5),
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().stem_forward(x)
        pos_embed = self.pos_embed
        if pos_embed.shape[1:3] != x.shape[1:3]:
            pos_embed = resample_abs_pos_embed_nhwc(pos_embed, list(x.shape[1:3]))
        return x + pos_embed

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x.permute(0, 3, 1, 2), pre_logits=pre_logits)


# Official (``Large_ViT_cnn``) key -> ours.
_OFFICIAL_RENAMES = (
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.to_v\.", r"blocks.\1.attn.v."),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.dynamicqk$", r"blocks.\1.attn.kernel"),
    (r"^transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.norm\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.net\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.fn\.net\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^mlp_head\.0\.", "head.norm."),
    (r"^mlp_head\.1\.", "head.fc."),
    (r"^to_patch_embedding\.1\.", "patch_embed.proj."),
    (r"^pos_embedding$", "pos_embed"),
)


def checkpoint_filter_fn(state_dict: dict, model: LKCAViT) -> dict[str, torch.Tensor]:
    """Convert a checkpoint of the official code (``Large_ViT_cnn``) to this model's layout.

    The patch embedding's linear layer over ``(p1 p2 c)``-ordered patches becomes a convolution, the
    position embedding a ``(1, Gh, Gw, dim)`` map; the unused ``cls_token`` is dropped.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if "patch_embed.proj.weight" in state_dict:
        return state_dict
    state_dict = rename_keys({k: v for k, v in state_dict.items() if k != "cls_token"}, _OFFICIAL_RENAMES)
    dim, patch_embed = model.num_features, model.patch_embed
    state_dict["pos_embed"] = state_dict["pos_embed"].reshape(1, *patch_embed.grid_size, dim)
    linear = state_dict["patch_embed.proj.weight"]  # (dim, p1 * p2 * c)
    state_dict["patch_embed.proj.weight"] = linear.reshape(dim, *patch_embed.patch_size, -1).permute(0, 3, 1, 2)
    return state_dict


_create_lkca = backbone_creator(LKCAViT, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("lkca"))

register_tiny_kwargs("zoo_lkca", dim=16, depth=2, heads=2, head_dim=8)


# The official variants (models/create_model.py: vit-lkca, vit-05m-lkca, ..., vit-12m-lkca, the suffix giving the
# parameter count), for 4x4 patches of 32x32 images; head_dim = dim // heads.
register_variants(
    _create_lkca,
    zoo_lkca_vit=dict(dim=210, depth=10, heads=10, head_dim=21),
    zoo_lkca_vit_05m=dict(dim=100, depth=8, heads=4, head_dim=25),
    zoo_lkca_vit_1m=dict(dim=136, depth=9, heads=8, head_dim=17),
    zoo_lkca_vit_2m=dict(dim=192, depth=9, heads=12, head_dim=16),
    zoo_lkca_vit_4m=dict(dim=246, depth=11, heads=6, head_dim=41),
    zoo_lkca_vit_8m=dict(dim=306, depth=14, heads=6, head_dim=51),
    zoo_lkca_vit_12m=dict(dim=360, depth=12, heads=8, head_dim=45, mlp_ratio=3.0),
)
