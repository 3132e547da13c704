"""Focused linear attention (FLatten Transformer, Han et al., ICCV 2023), shared by its trunks.

https://arxiv.org/abs/2308.00442
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_

from .dwconv import DepthwiseConv2d
from .map_attention import MapAttention
from .precision import autocast_disabled

__all__ = ["FocusedLinearAttention", "resize_positional_encodings"]


class FocusedLinearAttention(MapAttention):
    """Focused linear attention over a ``(B, H, W, C)`` map (paper Eq. 5-7).

    ``phi_p(x) = ||x|| * x**p / ||x**p||`` on ``ReLU(x) / softplus(s)`` sharpens the kernel
    features; attention is ``phi(Q) (phi(K)^T V) / (phi(Q) mean(phi(K)))`` plus a depthwise
    convolution of V (shared by all heads) that restores feature diversity. The keys carry a
    learned positional encoding of the key map (``kv_resolution``, the query map's unless a trunk
    reduces keys and values; it is resampled for other sizes). The feature map and both products run
    in float32: ``x**p`` overflows half precision.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], focusing_factor: int = 3,
                 kernel_size: int = 5, kv_resolution: tuple[int, int] | None = None, qkv_bias: bool = True,
                 proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        self.focusing_factor = focusing_factor
        self.resolution = tuple(resolution)
        self.kv_resolution = tuple(kv_resolution or resolution)
        self.dwc = DepthwiseConv2d(self.head_dim, kernel_size)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.kv_resolution[0] * self.kv_resolution[1], dim))
        trunc_normal_(self.positional_encoding, std=0.02)

    def _positional_encoding(self, size: tuple[int, int]) -> torch.Tensor:
        if size == self.kv_resolution:
            return self.positional_encoding
        return resample_abs_pos_embed(
            self.positional_encoding, list(size), list(self.kv_resolution), num_prefix_tokens=0
        )

    def _focus(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = (F.relu(x) + 1e-6) / scale
        norm = x.norm(dim=-1, keepdim=True)
        x = x**self.focusing_factor
        return x / x.norm(dim=-1, keepdim=True) * norm

    def _value_map(self, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Values ``(B, heads, m, d)`` as ``(B * heads, d, H, W)`` maps of the query size; values of a
        reduced key map are first interpolated linearly along the token sequence, as the official code does."""
        b, _, m, d = v.shape
        n = size[0] * size[1]
        if m != n:
            v = F.interpolate(v.transpose(-2, -1).reshape(b * self.num_heads, d, m), size=n, mode="linear")
            v = v.reshape(b, self.num_heads, d, n).transpose(-2, -1)
        return v.reshape(b * self.num_heads, *size, d).permute(0, 3, 1, 2)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        n, m, dtype = h * w, k.shape[1] * k.shape[2], q.dtype
        with autocast_disabled(q.device.type):
            scale = F.softplus(self.scale.float())
            q = self._focus(q.float().reshape(b, n, c), scale)
            k = self._focus(k.float().reshape(b, m, c) + self._positional_encoding(tuple(k.shape[1:3])).float(), scale)
            q, k = (t.reshape(b, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k))
            v = self.split_heads(v.float())
            normalizer = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
            kv = (k.transpose(-2, -1) * m**-0.5) @ (v * m**-0.5)
            out = (q @ kv * normalizer).transpose(1, 2).reshape(b, n, c)
        local = self.dwc(self._value_map(v, (h, w)).to(dtype))
        return (out.to(dtype) + local.reshape(b, c, n).transpose(1, 2)).reshape(b, h, w, c)


def resize_positional_encodings(state_dict: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample every ``positional_encoding`` of ``state_dict`` (already in ``model``'s key names) whose
    size differs from the model's: checkpoints store them for a square key map."""
    for key, value in state_dict.items():
        if not key.endswith("positional_encoding"):
            continue
        attn = model.get_submodule(key.rsplit(".", 1)[0])
        if isinstance(attn, FocusedLinearAttention) and value.shape != attn.positional_encoding.shape:
            old = int(value.shape[1] ** 0.5)
            state_dict[key] = resample_abs_pos_embed(
                value, list(attn.kv_resolution), [old, old], num_prefix_tokens=0
            )
    return state_dict
