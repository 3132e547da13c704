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
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import generate_default_cfgs

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.precision import autocast_disabled
from zoo.weights import pretrained_cfgs

from ._registry import register_model, register_tiny_kwargs
from .swin import SwinTransformer, _create_swin
from .swin import checkpoint_filter_fn as swin_checkpoint_filter_fn

__all__ = ["FocusedLinearAttention"]


class FocusedLinearAttention(nn.Module):
    """Focused linear attention over a ``(B, H, W, C)`` map (paper Eq. 5-7).

    ``phi_p(x) = ||x|| * x**p / ||x**p||`` on ``ReLU(x) / softplus(s)`` sharpens the kernel
    features; attention is ``phi(Q) (phi(K)^T V) / (phi(Q) sum(phi(K)))`` plus a depthwise
    convolution of V (shared by all heads) that restores feature diversity. The feature map and
    both products run in float32: ``x**p`` overflows half precision.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], focusing_factor: int = 3,
                 kernel_size: int = 5, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.focusing_factor = focusing_factor
        self.resolution = tuple(resolution)
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = DepthwiseConv2d(head_dim, kernel_size)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.resolution[0] * self.resolution[1], dim))
        trunc_normal_(self.positional_encoding, std=0.02)

    def _positional_encoding(self, size: tuple[int, int]) -> torch.Tensor:
        if size == self.resolution:
            return self.positional_encoding
        return resample_abs_pos_embed(self.positional_encoding, list(size), list(self.resolution), num_prefix_tokens=0)

    def _focus(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = (F.relu(x) + 1e-6) / scale
        norm = x.norm(dim=-1, keepdim=True)
        x = x**self.focusing_factor
        return x / x.norm(dim=-1, keepdim=True) * norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        with autocast_disabled(x.device.type):
            q, k, v = q.float(), k.float(), v.float()
            scale = F.softplus(self.scale.float())
            q = self._focus(q, scale)
            k = self._focus(k + self._positional_encoding((h, w)).float(), scale)
            q, k, v = (t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2) for t in (q, k, v))
            normalizer = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
            kv = (k.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
            out = (q @ kv * normalizer).transpose(1, 2).reshape(b, n, c)
        v_map = v.reshape(b * self.num_heads, h, w, c // self.num_heads).permute(0, 3, 1, 2).to(x.dtype)
        out = out.to(x.dtype) + self.dwc(v_map).reshape(b, c, n).transpose(1, 2)
        return self.proj_drop(self.proj(out)).reshape(b, h, w, c)


def checkpoint_filter_fn(state_dict: dict, model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Swin's conversion, then positional encodings resized to the model's stage resolutions."""
    out = swin_checkpoint_filter_fn(state_dict, model)
    for key, value in out.items():
        if key.endswith("attn.positional_encoding"):
            attn = model.get_submodule(key.rsplit(".", 1)[0])
            if value.shape != attn.positional_encoding.shape:
                old = int(value.shape[1] ** 0.5)
                out[key] = resample_abs_pos_embed(value, list(attn.resolution), [old, old], num_prefix_tokens=0)
    return out


def _create_flatten_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    focusing_factor, kernel_size = kwargs.pop("focusing_factor", 3), kwargs.pop("kernel_size", 5)

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int) -> nn.Module:
        return FocusedLinearAttention(dim, num_heads, resolution, focusing_factor, kernel_size)

    return _create_swin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                        global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("flatten_swin"))

register_tiny_kwargs(
    "zoo_flatten_swin", img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
    global_blocks=(1, 2, 0, 0),
)


@register_model
def zoo_flatten_swin_tiny(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-T: Swin-T with focused linear attention in stages 1-2."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, global_blocks=(2, 2, 0, 0))
    return _create_flatten_swin("zoo_flatten_swin_tiny", pretrained, **dict(args, **kwargs))


@register_model
def zoo_flatten_swin_small(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-S: Swin-S with focused linear attention in stages 1-2."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7,
                global_blocks=(2, 2, 0, 0))
    return _create_flatten_swin("zoo_flatten_swin_small", pretrained, **dict(args, **kwargs))


@register_model
def zoo_flatten_swin_base(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-B: Swin-B with focused linear attention in stages 1-2."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7,
                global_blocks=(2, 2, 0, 0))
    return _create_flatten_swin("zoo_flatten_swin_base", pretrained, **dict(args, **kwargs))


@register_model
def zoo_flatten_swin_base_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-B at 384: window 12 in stages 3-4."""
    args = dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12,
                global_blocks=(2, 2, 0, 0))
    return _create_flatten_swin("zoo_flatten_swin_base_384", pretrained, **dict(args, **kwargs))
