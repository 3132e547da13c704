"""FLatten-PVT and FLatten-PVTv2: PVT trunks with focused linear attention (Han et al., ICCV 2023).

https://arxiv.org/abs/2308.00442

Every block uses focused linear attention (the official configs' attention types ``LLLL``) with no
spatial reduction of keys and values (``PVT_LA_SR_RATIOS=1111``); ``sr_ratios`` builds reduced
versions. Official checkpoints (LeapLabTHU/FLatten-Transformer) load through ``checkpoint_filter_fn``;
other input sizes interpolate the position embeddings and positional encodings.
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs

from zoo.layers.flatten_attention import FocusedLinearAttention, resize_positional_encodings
from zoo.layers.map_attention import SpatialReduction
from zoo.weights import pretrained_cfgs

from ._backbone import build_backbone
from ._registry import register_tiny_kwargs, register_variants
from .pvt import _PVT_T, _TINY_KWARGS, PyramidVisionTransformer
from .pvt import checkpoint_filter_fn as pvt_checkpoint_filter_fn

__all__ = ["ReducedFocusedLinearAttention"]


class ReducedFocusedLinearAttention(SpatialReduction, FocusedLinearAttention):
    """Focused linear attention with keys and values from PVT's spatially reduced map."""


def checkpoint_filter_fn(state_dict: dict, model: PyramidVisionTransformer) -> dict[str, torch.Tensor]:
    """PVT's conversion, then positional encodings resized to the model's stage resolutions."""
    return resize_positional_encodings(pvt_checkpoint_filter_fn(state_dict, model), model)


def _create_flatten_pvt(variant: str, pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    focusing_factor, kernel_size = kwargs.pop("focusing_factor", 3), kwargs.pop("kernel_size", 5)

    def attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], sr_ratio: int, stage: int):
        return ReducedFocusedLinearAttention(dim, num_heads, resolution, focusing_factor, kernel_size,
                                             sr_ratio=sr_ratio)

    return build_backbone(PyramidVisionTransformer, variant, pretrained, checkpoint_filter_fn,
                          attn_layer=attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("flatten_pvt"))

register_tiny_kwargs("zoo_flatten_pvt", **_TINY_KWARGS)  # FLatten-PVTv2 too

# FLatten-PVT-T (PVT-T's sizes) and FLatten-PVTv2-B0 (PVTv2-B0's widths on the PVTv2 trunk), neither reducing
# keys and values.
register_variants(
    _create_flatten_pvt,
    zoo_flatten_pvt_tiny=_PVT_T,
    zoo_flatten_pvtv2_b0=dict(_PVT_T, embed_dims=(32, 64, 160, 256), v2=True),
)
