"""FLatten-CSwin: CSWin with focused linear attention (Han et al., ICCV 2023).

https://arxiv.org/abs/2308.00442

The blocks of stages 1 and 2 use focused linear attention over the whole stage map (the official
configs' attention types ``LLSS`` with linear-attention stripes ``56-28-14-7``: at 224 a stripe of
56 is the whole map), plus CSWin's LePE; stages 3 and 4 keep cross-shaped window attention.
Official checkpoints (LeapLabTHU/FLatten-Transformer) load through ``checkpoint_filter_fn``; other
input sizes interpolate the positional encodings.
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.flatten_attention import FocusedLinearAttention, resize_positional_encodings
from zoo.weights import pretrained_cfgs

from ._registry import register_tiny_kwargs, register_variants
from .cswin import _GLOBAL_CSWIN_T, _TINY_KWARGS, CSWinTransformer, _create_cswin
from .cswin import checkpoint_filter_fn as cswin_checkpoint_filter_fn
from .cswin import downstream_cfg as cswin_downstream_cfg

__all__ = ["FocusedLinearAttentionLePE"]


class FocusedLinearAttentionLePE(FocusedLinearAttention):
    """Focused linear attention plus CSWin's LePE, a 3x3 depthwise convolution of V over all channels."""

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], focusing_factor: int = 3,
                 kernel_size: int = 5, **kwargs):
        super().__init__(dim, num_heads, resolution, focusing_factor, kernel_size, **kwargs)
        self.lepe = DepthwiseConv2d(dim, 3)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return super().mix(q, k, v) + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def checkpoint_filter_fn(state_dict: dict, model: CSWinTransformer) -> dict[str, torch.Tensor]:
    """CSWin's conversion, then positional encodings resized to the model's stage resolutions."""
    return resize_positional_encodings(cswin_checkpoint_filter_fn(state_dict, model), model)


def _create_flatten_cswin(variant: str, pretrained: bool = False, **kwargs) -> CSWinTransformer:
    focusing_factor, kernel_size = kwargs.pop("focusing_factor", 3), kwargs.pop("kernel_size", 5)

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int):
        return FocusedLinearAttentionLePE(dim, num_heads, resolution, focusing_factor, kernel_size)

    return _create_cswin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                         global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("flatten_cswin"))

# No downstream code of its own: the CSWin trunk's official segmentation backbone.
downstream_cfg = cswin_downstream_cfg

register_tiny_kwargs("zoo_flatten_cswin", **_TINY_KWARGS, global_blocks=(1, 1, 0, 0))

# FLatten-CSwin-T: focused linear attention in stages 1-2 (``LLSS``).
register_variants(
    _create_flatten_cswin,
    zoo_flatten_cswin_tiny=_GLOBAL_CSWIN_T,
)
