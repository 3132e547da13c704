"""FLatten Transformer: Vision Transformer using Focused Linear Attention (Han et al., ICCV 2023).

https://arxiv.org/abs/2308.00442

FLatten-Swin is Swin with the blocks of stages 1 and 2 replaced by focused linear attention over
the whole stage map (the official configs' ``window_size: 56`` with attention types ``LLSS``:
at 224 a 56-window is the whole map); stages 3 and 4 keep shifted-window attention on the shared
``window_attention`` kernel. Official checkpoints (LeapLabTHU/FLatten-Transformer) load through
``checkpoint_filter_fn``; other input sizes interpolate the positional encoding of the linear
attention blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs

from zoo.layers.flatten_attention import FocusedLinearAttention, resize_positional_encodings
from zoo.weights import pretrained_cfgs

from ._registry import register_tiny_kwargs, register_variants
from .swin import _SWIN_B, _SWIN_S, _SWIN_T, SwinTransformer, _create_swin
from .swin import checkpoint_filter_fn as swin_checkpoint_filter_fn
from .swin import downstream_cfg as swin_downstream_cfg

__all__ = ["FocusedLinearAttention"]


def checkpoint_filter_fn(state_dict: dict, model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Swin's conversion, then positional encodings resized to the model's stage resolutions."""
    return resize_positional_encodings(swin_checkpoint_filter_fn(state_dict, model), model)


def _create_flatten_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    focusing_factor, kernel_size = kwargs.pop("focusing_factor", 3), kwargs.pop("kernel_size", 5)

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int) -> nn.Module:
        return FocusedLinearAttention(dim, num_heads, resolution, focusing_factor, kernel_size)

    return _create_swin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                        global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("flatten_swin"))

# No downstream code of its own: Swin's official detection/segmentation backbone (Swin-Transformer-Object-
# Detection): full, shifted windows in every Swin stage and an nn.LayerNorm `norm{i}` (eps 1e-5) on every output.
downstream_cfg = swin_downstream_cfg

register_tiny_kwargs(
    "zoo_flatten_swin", img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
    global_blocks=(1, 2, 0, 0),
)


# FLatten-Swin-T/S/B: Swin's sizes with focused linear attention in stages 1-2; base_384 has window 12.
register_variants(
    _create_flatten_swin,
    zoo_flatten_swin_tiny=dict(_SWIN_T, global_blocks=(2, 2, 0, 0)),
    zoo_flatten_swin_small=dict(_SWIN_S, global_blocks=(2, 2, 0, 0)),
    zoo_flatten_swin_base=dict(_SWIN_B, global_blocks=(2, 2, 0, 0)),
    zoo_flatten_swin_base_384=dict(_SWIN_B, img_size=384, window_size=12, global_blocks=(2, 2, 0, 0)),
)
