"""BiFormer: Vision Transformer with Bi-Level Routing Attention (Zhu et al., CVPR 2023).

https://arxiv.org/abs/2303.08810

Bi-level routing attention (BRA) runs through ``zoo.kernels.routing_attention``: a fused Triton
kernel on CUDA that reads the routed regions in place, a PyTorch path elsewhere. The released
models use the legacy BRA of ``ops/bra_legacy.py`` (rayleizhu/BiFormer), which this file
reproduces; official checkpoints (``{'model': state_dict}``) load through ``checkpoint_filter_fn``.

Unlike the official classification models, any input size works: each BRA pads its map at the
bottom/right to a multiple of ``n_win`` before the qkv projection and crops the output back,
which is what the official ``auto_pad=True`` (used by its detection and segmentation backbones)
does. At sizes that need no padding (multiples of 112, such as 224²) the two are identical.

``zoo_biformer_stl`` is the Swin-Tiny-layout model of the paper's ablation (``models/biformer_stl.py``):
patchify stem, BatchNorm + 2x2 convolution downsampling, no convolutional position embedding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, calculate_drop_path_rates
from timm.models import generate_default_cfgs

from zoo.kernels import routing_attention
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal, pyramid_feature_info
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import CONVNEXT_RENAMES, rename_keys, unwrap_checkpoint

__all__ = ["BiFormer"]


class BiLevelRoutingAttention(nn.Module):
    """BRA (paper Eqs. 2-5) with the local context enhancement ``LCE(V)`` of the released models.

    Region-level routing keeps, for each of the ``n_win x n_win`` regions, the ``topk`` regions of
    highest query-key affinity; every token then attends to the tokens of its routed regions. The
    qkv projection, the depthwise ``lepe`` convolution on V and the output projection stay here.
    """

    def __init__(self, dim: int, num_heads: int, n_win: int, topk: int, side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.n_win = n_win
        self.topk = topk
        self.qkv = nn.Linear(dim, dim * 3)
        self.lepe = DepthwiseConv2d(dim, side_dwconv)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H, W, C)``; padded to a multiple of ``n_win`` and cropped back."""
        _, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, -w % self.n_win, 0, -h % self.n_win))
        b, hp, wp, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, hp, wp, 3, self.num_heads, self.head_dim).unbind(3)
        out = routing_attention(q, k, v, self.n_win, self.topk)
        v = v.reshape(b, hp, wp, c).permute(0, 3, 1, 2)
        out = out.reshape(b, hp, wp, c) + self.lepe(v).permute(0, 2, 3, 1)
        return self.proj(out[:, :h, :w])


class AttentionLePE(nn.Module):
    """Global multi-head attention plus a depthwise convolution of its input (the released models'
    last stage, ``topk=-2``); qkv without bias."""

    def __init__(self, dim: int, num_heads: int = 8, side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.lepe = DepthwiseConv2d(dim, side_dwconv)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h, w, c)
        out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class BiFormerBlock(nn.Module):
    """Optional depthwise-conv position embedding, then pre-norm attention and MLP; NCHW in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_win: int,
        topk: int,
        mlp_ratio: float = 3.0,
        side_dwconv: int = 5,
        pos_embed_kernel: int = 3,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.pos_embed = DepthwiseConv2d(dim, pos_embed_kernel) if pos_embed_kernel else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win, topk, side_dwconv)
        elif topk == -2:
            self.attn = AttentionLePE(dim, side_dwconv=side_dwconv)
        else:
            raise ValueError(f"topk must be positive (routing) or -2 (global attention with LePE), got {topk}")
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormerStage(Stage):
    """Downsampling (Identity in stage 0, where the stem downsamples) followed by the blocks."""


def _stem(in_chans: int, dim: int, swin_layout: bool) -> nn.Sequential:
    if swin_layout:
        return nn.Sequential(nn.Conv2d(in_chans, dim, kernel_size=4, stride=4), nn.BatchNorm2d(dim))
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(dim // 2),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(dim),
    )


def _downsample(dim: int, out_dim: int, swin_layout: bool) -> nn.Sequential:
    if swin_layout:
        return nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, out_dim, kernel_size=2, stride=2))
    return nn.Sequential(nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1), nn.BatchNorm2d(out_dim))


class BiFormer(Backbone):
    """BiFormer: a convolutional stem, four stages of BRA blocks (global attention in the last,
    ``topk=-2``), BatchNorm and a linear head; NCHW between stages.

    ``swin_layout=True`` builds BiFormer-STL (patchify stem, BatchNorm + 2x2 conv downsampling,
    no position-embedding conv).
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 8, 2),
        head_dim: int = 32,
        n_win: int = 7,
        topks: tuple[int, ...] = (1, 4, 16, -2),
        mlp_ratio: float = 3.0,
        side_dwconv: int = 5,
        swin_layout: bool = False,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not len(embed_dims) == len(depths) == len(topks):
            raise ValueError(f"embed_dims {embed_dims}, depths {depths} and topks {topks} need one entry per stage")
        self.num_features = self.head_hidden_size = embed_dims[-1]
        # The patchify stem and 2x2 downsampling of the Swin layout need 32 pixels; 3x3 stride-2 convs need 1.
        self.min_input_size = 32 if swin_layout else 1

        self.stem = _stem(self.in_chans, embed_dims[0], swin_layout)
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        for i, (dim, depth, topk) in enumerate(zip(embed_dims, depths, topks)):
            blocks = [
                BiFormerBlock(
                    dim,
                    dim // head_dim,
                    n_win,
                    topk,
                    mlp_ratio=mlp_ratio,
                    side_dwconv=side_dwconv,
                    pos_embed_kernel=0 if swin_layout else 3,
                    drop_path=drop_path[i][j],
                )
                for j in range(depth)
            ]
            downsample = _downsample(embed_dims[i - 1], dim, swin_layout) if i > 0 else nn.Identity()
            stages.append(BiFormerStage(downsample, blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_info = pyramid_feature_info(embed_dims)
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head = self.classifier_head()
        self.apply(init_trunc_normal)


# Official (rayleizhu/BiFormer) key -> ours, applied in order.
_OFFICIAL_RENAMES = (
    *CONVNEXT_RENAMES,
    (r"\.attn\.qkv\.qkv\.", ".attn.qkv."),
    (r"\.attn\.wo\.", ".attn.proj."),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.[23]\.", ".mlp.fc2."),  # Sequential index 3 in BiFormer (an Identity at 1), 2 in STL
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict, model: BiFormer) -> dict[str, torch.Tensor]:
    """Convert an official rayleizhu/BiFormer checkpoint (BiFormer or BiFormer-STL) to this layout.

    Unwraps ``model`` / ``state_dict`` / ``module.``; ``downsample_layers.0`` becomes the stem and
    ``downsample_layers.i`` the start of stage ``i``; the legacy BRA's ``qkv.qkv`` / ``wo`` become
    ``qkv`` / ``proj``, the MLP's Sequential indices ``fc1`` / ``fc2`` and ``head`` ``head.fc``.
    A state dict already in this layout passes through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if not any(k.startswith("downsample_layers.") for k in state_dict):
        return state_dict
    return rename_keys(state_dict, _OFFICIAL_RENAMES)


_create_biformer = backbone_creator(BiFormer, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("biformer"))

# The official detection/segmentation backbone (rayleizhu/BiFormer `object_detection/models_mm/biformer_mm.py`,
# `semantic_segmentation/models_mm/biformer_mm.py`): timm's LayerNorm2d on every output map (its `extra_norms.{i}`).
downstream_cfg = dict(out_norm=LayerNorm2d, official_out_norm_name="extra_norms.{}".format)

register_tiny_kwargs(
    "zoo_biformer", embed_dims=(16, 32, 32, 64), depths=(1, 1, 1, 1), head_dim=16, n_win=2, topks=(1, 2, 3, -2)
)


# BiFormer-T/S/B (paper Table 1; n_win 7, top-k 1-4-16 and global attention in the last stage, mlp ratio 3) and
# BiFormer-STL, BRA in the Swin-T layout (depths 2-2-6-2, mlp ratio 4) of the paper's ablation.
_BIFORMER_B = dict(embed_dims=(96, 192, 384, 768), depths=(4, 4, 18, 4))
register_variants(
    _create_biformer,
    zoo_biformer_tiny=dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2)),
    zoo_biformer_small=dict(embed_dims=(64, 128, 256, 512), depths=(4, 4, 18, 4)),
    zoo_biformer_base=_BIFORMER_B,
    zoo_biformer_stl=dict(_BIFORMER_B, depths=(2, 2, 6, 2), mlp_ratio=4.0, swin_layout=True),
)
