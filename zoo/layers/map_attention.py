"""The frame shared by attention modules on ``(B, H, W, C)`` maps (window, neighborhood, FLatten, Agent attention).

A :class:`MapAttention` maps a ``(B, H, W, C)`` map to a ``(B, H, W, C)`` map in three steps:
``project`` makes the query map and the key/value maps, ``mix`` (the attention itself, defined by
the subclass) mixes the tokens, and ``proj`` projects the result. By default one ``qkv`` Linear
makes all three at the input's resolution (Swin, CSWin); :class:`PaddedHeadsAttention` runs a fused
zoo kernel on them over a padded map (Swin's window attention, NAT's neighborhood attention). A trunk
whose keys and values come from a reduced map (PVT's spatial reduction, :class:`SpatialReduction`)
overrides ``build_projection`` and ``project``; ``mix`` then receives key/value maps smaller than the
query map, sized ``kv_resolution`` at construction.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MapAttention", "PaddedHeadsAttention", "SpatialReduction"]


class MapAttention(nn.Module):
    """``proj(mix(project(x)))`` over a ``(B, H, W, C)`` map; subclasses define ``mix``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{type(self).__name__}: dim {dim} must be a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.build_projection(dim, qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def build_projection(self, dim: int, qkv_bias: bool) -> None:
        """Create the modules ``project`` uses: one Linear for queries, keys and values."""
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, H, W, C)`` -> the query map ``(B, H, W, C)`` and the key and value maps ``(B, h, w, C)``."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q, k, v

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The token mixing: query, key and value maps -> a ``(B, H, W, C)`` map before ``proj``."""
        raise NotImplementedError

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, w, C)`` -> ``(B, heads, h * w, head_dim)``."""
        b, h, w, _ = x.shape
        return x.reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_drop(self.proj(self.mix(*self.project(x))))


class PaddedHeadsAttention(MapAttention):
    """A :class:`MapAttention` whose token mixing is a fused kernel on ``(B, H, W, heads, head_dim)`` queries,
    keys and values (window attention, neighborhood attention) that needs a map of some minimum or multiple
    size: the map is padded at the bottom and right by ``padding``, attended by ``attend`` and cropped back."""

    def padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns to add below and to the right of an ``h x w`` map."""
        raise NotImplementedError

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The kernel: ``(B, H, W, heads, head_dim)`` q, k, v of the padded map -> the mixed heads, same shape."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        pad_h, pad_w = self.padding(h, w)
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        b, hp, wp, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, hp, wp, 3, self.num_heads, self.head_dim).unbind(3)
        x = self.attend(q, k, v).reshape(b, hp, wp, c)[:, :h, :w]
        return self.proj_drop(self.proj(x))


class SpatialReduction:
    """Mixin for a :class:`MapAttention` taking ``(dim, num_heads, resolution, ...)``: queries from the
    map, keys and values from the map reduced ``sr_ratio`` times by a strided convolution and a
    LayerNorm (PVT's spatial-reduction attention, Wang et al. 2021, Eq. 3-4; no reduction at
    ``sr_ratio=1``). Module names are PVT's: ``q``, ``kv``, ``sr``, ``norm``.

    Usage: ``class ReducedAttention(SpatialReduction, SomeMapAttention)``.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], *args, sr_ratio: int = 1, **kwargs):
        if sr_ratio < 1:
            raise ValueError(f"{type(self).__name__}: sr_ratio must be a positive integer, got {sr_ratio}")
        self.sr_ratio = sr_ratio  # read by build_projection, which the base __init__ calls
        kv_resolution = tuple(r // sr_ratio for r in resolution)
        super().__init__(dim, num_heads, resolution, *args, kv_resolution=kv_resolution, **kwargs)

    def build_projection(self, dim: int, qkv_bias: bool) -> None:
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, self.sr_ratio, self.sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.q(x)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        k, v = self.kv(x).chunk(2, dim=-1)
        return q, k, v
