"""CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows (Dong et al., CVPR 2022).

https://arxiv.org/abs/2107.00652

Cross-shaped window self-attention splits the heads in two halves: one attends within vertical
stripes ``(H, sw)``, the other within horizontal stripes ``(sw, W)``; the last stage attends over
the whole map. A stripe is a rectangular window, so the attention runs on the shared
``window_attention`` kernel, and LePE (a 3x3 depthwise convolution of V inside each stripe) on
``depthwise_conv2d``. Official checkpoints (microsoft/CSWin-Transformer) load through
``checkpoint_filter_fn``. Any input size works: each branch zero-pads q, k, v to a multiple of its
stripe (centred) and crops back, as the official segmentation code does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, calculate_drop_path_rates, to_2tuple
from timm.models import generate_default_cfgs

from zoo.kernels import window_attention
from zoo.layers.blocks import MlpBlock
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, build_backbone, init_trunc_normal, pyramid_feature_info
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import Renames, rename_key, unwrap_checkpoint

__all__ = ["CSWinTransformer", "CrossShapedWindowAttention"]


def _stripe_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * stripes, C, wh, ww)``."""
    b, h, w, c = x.shape
    (wh, ww), count = window, (h // window[0]) * (w // window[1])
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b * count, c, wh, ww)


def _stripe_merge(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B * stripes, C, wh, ww)`` -> ``(B, H, W, C)``."""
    _, c, wh, ww = x.shape
    h, w = size
    b = x.shape[0] // ((h // wh) * (w // ww))
    return x.reshape(b, h // wh, w // ww, c, wh, ww).permute(0, 1, 4, 2, 5, 3).reshape(b, h, w, c)


class CrossShapedWindowAttention(nn.Module):
    """Cross-shaped window self-attention (paper Sec. 3.2) with LePE (Sec. 3.3).

    The first half of the heads attends within vertical stripes ``(H, split_size)``, the second
    within horizontal stripes ``(split_size, W)``; with ``full_map`` all heads attend over the whole
    map. Each branch adds ``LePE(V)``, a 3x3 depthwise convolution of its values inside each stripe.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int, full_map: bool = False, qkv_bias: bool = True,
                 proj_drop: float = 0.0):
        super().__init__()
        branches = 1 if full_map else 2
        if dim % num_heads or num_heads % branches:
            raise ValueError(
                f"CrossShapedWindowAttention: num_heads {num_heads} must divide dim {dim}"
                + ("" if full_map else " and be even (half the heads per stripe direction)")
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.split_size = split_size
        self.full_map = full_map
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.lepe = nn.ModuleList(DepthwiseConv2d(dim // branches, 3) for _ in range(branches))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def stripes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The window of each branch for an ``(H, W)`` map (plain ints, also while tracing)."""
        h, w = int(size[0]), int(size[1])
        return [(h, w)] if self.full_map else [(h, self.split_size), (self.split_size, w)]

    def _branch(self, qkv: torch.Tensor, window: tuple[int, int], lepe: nn.Module) -> torch.Tensor:
        """Stripe attention plus LePE for one group of heads, ``qkv``: ``(B, H, W, 3, C')``."""
        b, h, w, _, c = qkv.shape
        pad_h, pad_w = -h % window[0], -w % window[1]
        top, left = pad_h // 2, pad_w // 2
        qkv = F.pad(qkv, (0, 0, 0, 0, left, pad_w - left, top, pad_h - top))
        size = (h + pad_h, w + pad_w)
        q, k, v = (t.reshape(b, *size, c // self.head_dim, self.head_dim) for t in qkv.unbind(3))
        out = window_attention(q, k, v, window).reshape(b, *size, c)
        out = out + _stripe_merge(lepe(_stripe_partition(v.reshape(b, *size, c), window)), size)
        return out[:, top : top + h, left : left + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        windows = self.stripes((h, w))
        qkv = self.qkv(x).reshape(b, h, w, 3, c).chunk(len(windows), dim=-1)
        out = torch.cat([self._branch(*args) for args in zip(qkv, windows, self.lepe)], dim=-1)
        return self.proj_drop(self.proj(out))


class ConvEmbed(nn.Module):
    """A strided convolution then LayerNorm (CSWin's 7x7 stride-4 stem and 3x3 stride-2 merge), NHWC out."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int, input_fmt: str = "NCHW",
                 norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.input_fmt = input_fmt
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding)
        self.norm = norm_layer(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fmt == "NHWC":
            x = x.permute(0, 3, 1, 2)
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class CSWinStage(Stage):
    """Optional 2x downsampling followed by ``depth`` CSWin blocks (paper Sec. 3.4): pre-norm cross-shaped window
    attention, then an MLP, each with a residual connection.

    The first ``global_blocks`` blocks instead mix tokens with ``global_attn_layer(dim, num_heads,
    resolution, stage)``, a module attending over the whole stage map (FLatten, Agent attention).
    """

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int, downsample: bool,
                 num_heads: int, split_size: int, full_map: bool, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, drop_path: list[float] | float = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm, global_blocks: int = 0,
                 global_attn_layer: Callable[..., nn.Module] | None = None, stage: int = 0):
        downsampling = ConvEmbed(dim, out_dim, 3, 2, 1, "NHWC", norm_layer) if downsample else nn.Identity()
        blocks = []
        for i in range(depth):
            if i < global_blocks:
                attn = global_attn_layer(out_dim, num_heads, resolution, stage)
            else:
                attn = CrossShapedWindowAttention(out_dim, num_heads, split_size, full_map, qkv_bias, proj_drop)
            blocks.append(MlpBlock(
                out_dim, attn, mlp_ratio, proj_drop,
                drop_path[i] if isinstance(drop_path, list) else drop_path, norm_layer,
            ))
        super().__init__(downsampling, blocks)


class CSWinTransformer(Backbone):
    """CSWin Transformer on NHWC maps: a 7x7 stride-4 convolutional stem, then four stages of
    cross-shaped window attention joined by 3x3 stride-2 convolutions.

    A stage attends over its whole map when it is the last stage or when its map at ``img_size``
    is one stripe wide (as the official model decides); the others use stripes of width
    ``split_size[i]`` at any input size. ``global_blocks[i]`` blocks at the start of stage ``i``
    use ``global_attn_layer`` instead (FLatten, Agent attention).
    """

    stem_name = "stem"
    stages_name = "stages"
    output_fmt = "NHWC"
    min_input_size = 4

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        embed_dim: int = 64,
        depths: tuple[int, ...] = (1, 2, 21, 1),
        split_size: tuple[int, ...] = (1, 2, 7, 7),
        num_heads: tuple[int, ...] = (2, 4, 8, 16),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        global_blocks: tuple[int, ...] = (0, 0, 0, 0),
        global_attn_layer: Callable[..., nn.Module] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_stages = len(depths)
        if not len(num_heads) == len(split_size) == len(global_blocks) == num_stages:
            raise ValueError(
                f"depths {depths}, num_heads {num_heads}, split_size {split_size} and global_blocks "
                f"{global_blocks} must have one entry per stage"
            )
        dims = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.stem = ConvEmbed(self.in_chans, dims[0], 7, 4, 2, "NCHW", norm_layer)
        grid = [(s - 3) // 4 + 1 for s in to_2tuple(img_size)]  # the stem's output size
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        for i in range(num_stages):
            resolution = tuple(grid)
            stages.append(CSWinStage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i], resolution=resolution, depth=depths[i], downsample=i > 0,
                num_heads=num_heads[i], split_size=split_size[i],
                full_map=i == num_stages - 1 or resolution == (split_size[i], split_size[i]),
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, drop_path=drop_path[i],
                norm_layer=norm_layer, global_blocks=global_blocks[i], global_attn_layer=global_attn_layer, stage=i,
            ))
            grid = [(g + 1) // 2 for g in grid]
        self.stages = nn.Sequential(*stages)
        self.feature_info = pyramid_feature_info(dims)
        self.norm = norm_layer(self.num_features)
        self.head = self.classifier_head()
        self.apply(init_trunc_normal)


_OFFICIAL_RENAMES: Renames = (
    (r"^stage1_conv_embed\.0\.", "stem.conv."),
    (r"^stage1_conv_embed\.2\.", "stem.norm."),
    (r"^merge(\d+)\.", r"stages.\1.downsample."),
    (r"^stage(\d+)\.(\d+)\.(qkv|proj)\.", r"stage\1.\2.attn.\3."),
    (r"^stage(\d+)\.(\d+)\.attns\.(\d+)\.get_v\.", r"stage\1.\2.attn.lepe.\3."),
    (r"^stage(\d+)\.(\d+)\.attns\.0\.", r"stage\1.\2.attn."),
    (r"^stage(\d+)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict, model: CSWinTransformer) -> dict[str, torch.Tensor]:
    """Convert an official (microsoft/CSWin-Transformer, or its FLatten / Agent versions) checkpoint.

    Unwraps ``state_dict_ema`` / ``state_dict`` / ``model`` and ``module.``, then renames: the stem
    ``stage1_conv_embed.{0,2}`` to ``stem.{conv,norm}``, ``merge{i}`` to ``stages.{i}.downsample``,
    ``stage{i}.{j}`` to ``stages.{i-1}.blocks.{j}`` with the block's ``qkv`` / ``proj`` and its
    branches' LePE ``attns.{k}.get_v`` moved into ``attn``, and ``head`` to ``head.fc``. A global
    block's single branch is its attention module; its LePE is that module's ``lepe`` (FLatten) or,
    for agent attention, whose 3x3 depthwise convolution of V is the same operation, its ``dwc``.
    Checkpoints already in this layout pass through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict, ("state_dict_ema", "state_dict", "model"))
    if "stage1_conv_embed.0.weight" not in state_dict:
        return state_dict
    expected = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        key = rename_key(key, _OFFICIAL_RENAMES)
        if key not in expected and ".attn.lepe.0." in key:
            single = key.replace(".attn.lepe.0.", ".attn.lepe.")
            key = single if single in expected else key.replace(".attn.lepe.0.", ".attn.dwc.")
        out[key] = value
    return out


def _create_cswin(variant: str, pretrained: bool = False, checkpoint_filter=checkpoint_filter_fn,
                  **kwargs) -> CSWinTransformer:
    return build_backbone(CSWinTransformer, variant, pretrained, checkpoint_filter, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("cswin"))

# The official segmentation backbone (microsoft/CSWin-Transformer `segmentation/backbone/cswin_transformer.py`):
# an nn.LayerNorm on every output map, named `norm1..norm4` there and `norm0..norm3` here; like this model it
# attends over the whole map in the last stage and in full-height / full-width stripes elsewhere at any size.
downstream_cfg = dict(out_norm=partial(LayerNorm2d, eps=1e-5), official_out_norm_name=lambda i: f"norm{i + 1}")

_TINY_KWARGS = dict(img_size=64, embed_dim=16, depths=(1, 1, 1, 1), split_size=(1, 2, 2, 2), num_heads=(2, 2, 4, 4))
register_tiny_kwargs("zoo_cswin", **_TINY_KWARGS)


# CSWin-T/S/B/L (paper Table 1: C, depths and heads); the _384 variants are fine-tuned at 384² with stripes
# 1-2-12-12, and CSWin-L is pre-trained on ImageNet-22k.
_CSWIN_S = dict(embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16))
_CSWIN_B = dict(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32))
_CSWIN_L = dict(embed_dim=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 24))
_CSWIN_384 = dict(img_size=384, split_size=(1, 2, 12, 12))
register_variants(
    _create_cswin,
    zoo_cswin_tiny=dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16)),
    zoo_cswin_small=_CSWIN_S,
    zoo_cswin_base=_CSWIN_B,
    zoo_cswin_base_384=dict(_CSWIN_B, **_CSWIN_384),
    zoo_cswin_large=_CSWIN_L,
    zoo_cswin_large_384=dict(_CSWIN_L, **_CSWIN_384),
)

# The CSWin-T of the FLatten and Agent versions: deeper stages 1-2 (depths 2-4-18-1) whose blocks all use their
# global attention.
_GLOBAL_CSWIN_T = dict(embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), global_blocks=(2, 4, 0, 0))
