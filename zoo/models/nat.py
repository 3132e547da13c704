"""Neighborhood Attention Transformer (NAT) and Dilated Neighborhood Attention Transformer (DiNAT).

NAT: Hassani et al., CVPR 2023, https://arxiv.org/abs/2204.07143
DiNAT: Hassani & Shi, 2022, https://arxiv.org/abs/2209.15001

DiNAT is NAT with every other layer's neighborhood dilated, so one model class serves both.
Neighborhood attention runs through ``zoo.kernels.neighborhood_attention2d`` (Triton on CUDA, a
PyTorch path elsewhere, CPU included) with NATTEN <= 0.17 semantics and relative position bias,
which is what the released checkpoints need and what NATTEN 0.20 removed.

Official checkpoints (SHI-Labs/Neighborhood-Attention-Transformer, bare state dicts) and the
Hugging Face transformers copies on the Hub (``shi-labs/nat-*``, ``shi-labs/dinat-*``) both load
through ``checkpoint_filter_fn``. A map smaller than ``kernel_size * dilation`` is zero-padded at
the bottom/right before the qkv projection and cropped back, as NATTEN's module did, so any input
size works.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d, calculate_drop_path_rates, trunc_normal_
from timm.models import generate_default_cfgs

from zoo.kernels import neighborhood_attention2d
from zoo.layers.blocks import MlpBlock
from zoo.layers.map_attention import PaddedHeadsAttention
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal, pyramid_feature_info
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_key, rename_keys, unwrap_checkpoint

__all__ = ["NAT"]


class ConvTokenizer(nn.Module):
    """Two 3x3 stride-2 convolutions (no activation between them), then LayerNorm; NCHW in, NHWC out."""

    def __init__(self, in_chans: int, embed_dim: int, norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """3x3 stride-2 convolution without bias, then LayerNorm; NHWC in and out."""

    def __init__(self, dim: int, out_dim: int, norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = norm_layer(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NeighborhoodAttention(PaddedHeadsAttention):
    """Multi-head (dilated) neighborhood attention with relative position bias (NAT Eq. 2-3). A map smaller
    than the dilated window is padded, then cropped back."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        dilation: int = 1,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)

    def padding(self, h: int, w: int) -> tuple[int, int]:
        window = self.kernel_size * self.dilation
        return max(0, window - h), max(0, window - w)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return neighborhood_attention2d(q, k, v, self.kernel_size, self.dilation, rpb=self.rpb)


class NATStage(Stage):
    """Optional 2x convolutional downsampling followed by ``len(dilations)`` NAT blocks: pre-norm neighborhood
    attention, then an MLP, each with optional layer scale and a residual connection."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        dilations: tuple[int, ...],
        downsample: bool,
        num_heads: int,
        kernel_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: list[float] | None = None,
        layer_scale: float | None = None,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ):
        downsampling = ConvDownsampler(dim, out_dim, norm_layer) if downsample else nn.Identity()
        drop_path = drop_path or [0.0] * len(dilations)
        blocks = [
            MlpBlock(
                out_dim,
                NeighborhoodAttention(out_dim, num_heads, kernel_size, dilation, qkv_bias, proj_drop),
                mlp_ratio=mlp_ratio,
                proj_drop=proj_drop,
                drop_path=dp,
                norm_layer=norm_layer,
                layer_scale=layer_scale,
            )
            for dilation, dp in zip(dilations, drop_path)
        ]
        super().__init__(downsampling, blocks)


class NAT(Backbone):
    """NAT / DiNAT: convolutional tokenizer, four stages of neighborhood attention, LayerNorm, head.

    Downsampling sits at the start of stages 1-3 (the official code ends stages 0-2 with it);
    ``checkpoint_filter_fn`` moves official weights accordingly. ``dilations`` gives one dilation
    per block (``None``: all 1, i.e. NAT).
    """

    stem_name = "patch_embed"
    output_fmt = "NHWC"

    def __init__(
        self,
        embed_dim: int = 64,
        depths: tuple[int, ...] = (3, 4, 6, 5),
        num_heads: tuple[int, ...] = (2, 4, 8, 16),
        kernel_size: int = 7,
        dilations: tuple[tuple[int, ...], ...] | None = None,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        layer_scale: float | None = None,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **kwargs,
    ):
        super().__init__(**kwargs)
        dilations = dilations or tuple((1,) * d for d in depths)
        if not len(depths) == len(num_heads) == len(dilations):
            raise ValueError(f"depths {depths}, num_heads {num_heads} and dilations must have one entry per stage")
        if tuple(len(d) for d in dilations) != tuple(depths):
            raise ValueError(f"dilations must give one dilation per block: depths {depths}, got {dilations}")
        num_stages = len(depths)
        dims = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = ConvTokenizer(self.in_chans, embed_dim, norm_layer)
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.stages = nn.Sequential(*[
            NATStage(
                dim=dims[max(i - 1, 0)],
                out_dim=dims[i],
                dilations=tuple(dilations[i]),
                downsample=i > 0,
                num_heads=num_heads[i],
                kernel_size=kernel_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                drop_path=drop_path[i],
                layer_scale=layer_scale,
                norm_layer=norm_layer,
            )
            for i in range(num_stages)
        ])
        self.feature_info = pyramid_feature_info(dims)
        self.norm = norm_layer(self.num_features)
        self.head = self.classifier_head()
        self.apply(init_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(".rpb")}


# Hugging Face transformers (NatForImageClassification / DinatForImageClassification) names.
_TRANSFORMERS_RENAMES = (
    (r"^(?:di)?nat\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^(?:di)?nat\.embeddings\.norm\.", "patch_embed.norm."),
    (r"^(?:di)?nat\.encoder\.levels\.", "levels."),
    (r"^(?:di)?nat\.layernorm\.", "norm."),
    (r"^classifier\.", "head."),
    (r"\.layers\.(\d+)\.", r".blocks.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.rpb$", ".attn.rpb"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)


def _from_transformers(state_dict: dict) -> dict:
    """Rename a transformers NAT/DiNAT state dict to the official layout (fusing q, k, v into qkv)."""
    out = {}
    for key, value in state_dict.items():
        if ".attention.self.key." in key or ".attention.self.value." in key:
            continue
        if ".attention.self.query." in key:
            q, k, v = (state_dict[key.replace(".query.", f".{n}.")] for n in ("query", "key", "value"))
            key, value = key.replace(".attention.self.query.", ".attn.qkv."), torch.cat([q, k, v])
        if key.endswith(".layer_scale_parameters"):
            prefix = key.removesuffix("layer_scale_parameters")
            for i, gamma in enumerate(value, start=1):
                out[rename_key(f"{prefix}gamma{i}", _TRANSFORMERS_RENAMES)] = gamma
            continue
        out[rename_key(key, _TRANSFORMERS_RENAMES)] = value
    return out


# Official (SHI-Labs) key -> ours, applied in order.
_OFFICIAL_RENAMES = (
    (r"^levels\.(\d+)\.downsample", lambda m: f"stages.{int(m.group(1)) + 1}.downsample"),
    (r"^levels\.", "stages."),
    (r"\.gamma([12])$", r".ls\1.gamma"),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict, model: NAT) -> dict[str, torch.Tensor]:
    """Convert an official (SHI-Labs) or Hugging Face transformers NAT/DiNAT checkpoint to this layout.

    Unwraps ``model`` / ``state_dict`` / ``module.``, maps the transformers names onto the official
    ones, moves the official end-of-level downsampling to the start of the next stage, and renames
    ``gamma1/2`` to ``ls1/2.gamma`` and ``head`` to ``head.fc``. A state dict already in this layout
    passes through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if any(k.startswith(("nat.", "dinat.")) for k in state_dict):
        state_dict = _from_transformers(state_dict)
    if not any(k.startswith("levels.") for k in state_dict):
        return state_dict
    return rename_keys(state_dict, _OFFICIAL_RENAMES)


_create_nat = backbone_creator(NAT, checkpoint_filter_fn)


def _create_dinat(variant: str, pretrained: bool = False, **kwargs) -> NAT:
    """NAT with DiNAT's schedule unless ``dilations`` is given: blocks alternate dilation 1 and
    8/4/2 in stages 0-2 (the dilated window spans the 56/28/14 map at 224²); stage 3 is undilated."""
    depths = kwargs["depths"]
    kwargs.setdefault(
        "dilations",
        tuple(tuple(1 if j % 2 == 0 else d for j in range(depth)) for depth, d in zip(depths, (8, 4, 2, 1))),
    )
    return _create_nat(variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("nat"))

# The official detection/segmentation backbones (SHI-Labs/Neighborhood-Attention-Transformer `detection/nat.py`,
# `detection/dinat.py`, and their `segmentation/` copies): an nn.LayerNorm `norm{i}` on every output map; a
# level's downsampler ends it there.
downstream_cfg = dict(out_norm=partial(LayerNorm2d, eps=1e-5), downsample_ends_stage=True)

register_tiny_kwargs("zoo_nat", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=3)
register_tiny_kwargs("zoo_dinat", embed_dim=16, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=3)

# NAT-Mini/Tiny/Small/Base (NAT paper Table 1, kernel 7) with each size's stochastic depth, and DiNAT's, the same
# sizes with every other block dilated (see _create_dinat); NAT-Small and both Bases have layer scale, DiNAT-Small
# does not.
_MINI = dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2)
_TINY = dict(_MINI, depths=(3, 4, 18, 5))
_SMALL = dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0, drop_path_rate=0.3)
_BASE = dict(_SMALL, embed_dim=128, num_heads=(4, 8, 16, 32), drop_path_rate=0.5, layer_scale=1e-5)
register_variants(
    _create_nat,
    zoo_nat_mini=_MINI,
    zoo_nat_tiny=_TINY,
    zoo_nat_small=dict(_SMALL, layer_scale=1e-5),
    zoo_nat_base=_BASE,
)
register_variants(
    _create_dinat,
    zoo_dinat_mini=_MINI,
    zoo_dinat_tiny=_TINY,
    zoo_dinat_small=_SMALL,
    zoo_dinat_base=_BASE,
)
