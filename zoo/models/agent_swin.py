"""Agent Attention: On the Integration of Softmax and Linear Attention (Han et al., ECCV 2024).

https://arxiv.org/abs/2312.08874

Agent-Swin is Swin whose first stages use agent attention over the whole stage map (the official
configs' ``window_size: 56``: one window at 224), with ``agent_num`` 9-16-49-49 agent tokens
pooled from the queries; the remaining blocks keep shifted-window attention on the shared
``window_attention`` kernel. Official checkpoints (LeapLabTHU/Agent-Attention) load through
``checkpoint_filter_fn``. For other input sizes the position biases are interpolated bilinearly to
the map, as the official detection and segmentation code does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import generate_default_cfgs

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._registry import register_model, register_tiny_kwargs
from .swin import SwinTransformer, _create_swin
from .swin import checkpoint_filter_fn as swin_checkpoint_filter_fn

__all__ = ["AgentAttention"]


def _resize(bias: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims (a no-op at the same size)."""
    if tuple(bias.shape[-2:]) == tuple(size):
        return bias
    lead = bias.shape[:-2]
    return F.interpolate(bias.reshape(-1, 1, *bias.shape[-2:]), size=size, mode="bilinear").reshape(*lead, *size)


class AgentAttention(nn.Module):
    """Agent attention over a ``(B, H, W, C)`` map (paper Eq. 3).

    ``A`` = agent tokens (queries average-pooled to a ``sqrt(n) x sqrt(n)`` grid). Agents first
    aggregate the values, ``V_A = softmax(A K^T / sqrt(d) + B1) V``, then broadcast them back,
    ``O = softmax(Q A^T / sqrt(d) + B2) V_A``, plus a 3x3 depthwise convolution of V. The biases
    ``B1``/``B2`` are a 7x7 table per agent interpolated to the map plus per-row and per-column terms.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], agent_num: int = 49,
                 qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        pool_size = int(agent_num**0.5)
        if pool_size * pool_size != agent_num:
            raise ValueError(f"agent_num must be a perfect square, got {agent_num}")
        self.num_heads = num_heads
        self.agent_num = agent_num
        h, w = resolution
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = DepthwiseConv2d(dim, 3)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, h, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, w))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, h, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, w, agent_num))
        for bias in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            trunc_normal_(bias, std=0.02)

    def _biases(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent-to-token ``(1, heads, agents, N)`` and token-to-agent ``(1, heads, N, agents)`` biases."""
        n = size[0] * size[1]
        to_tokens = _resize(self.an_bias, size) + _resize((self.ah_bias + self.aw_bias)[0], size)
        to_agents = _resize(self.na_bias, size) + _resize((self.ha_bias + self.wa_bias)[0].permute(0, 3, 1, 2), size)
        return (to_tokens.reshape(1, self.num_heads, self.agent_num, n),
                to_agents.reshape(1, self.num_heads, self.agent_num, n).transpose(-1, -2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        agents = self.pool(q.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, self.agent_num).transpose(1, 2)
        q, k, v, agents = (t.reshape(b, t.shape[1], self.num_heads, c // self.num_heads).transpose(1, 2)
                           for t in (q, k, v, agents))
        to_tokens, to_agents = self._biases((h, w))
        agent_values = F.scaled_dot_product_attention(agents, k, v, attn_mask=to_tokens.to(q.dtype))
        out = F.scaled_dot_product_attention(q, agents, agent_values, attn_mask=to_agents.to(q.dtype))
        out = out.transpose(1, 2).reshape(b, n, c)
        v_map = v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        out = out + self.dwc(v_map).permute(0, 2, 3, 1).reshape(b, n, c)
        return self.proj_drop(self.proj(out)).reshape(b, h, w, c)


_BIAS_AXIS = {"ah_bias": 3, "aw_bias": 4, "ha_bias": 2, "wa_bias": 3}  # the spatial axis of each bias


def _resize_axis(t: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    moved = t.movedim(axis, -1)
    resized = F.interpolate(moved.reshape(-1, 1, moved.shape[-1]), size=length, mode="linear")
    return resized.reshape(*moved.shape[:-1], length).movedim(-1, axis)


def checkpoint_filter_fn(state_dict: dict, model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Swin's conversion, then per-row/column agent biases resized to the model's stage resolutions."""
    out = swin_checkpoint_filter_fn(state_dict, model)
    target = model.state_dict()
    for key, value in out.items():
        axis = _BIAS_AXIS.get(key.rsplit(".", 1)[-1])
        if axis is not None and value.shape != target[key].shape:
            out[key] = _resize_axis(value, axis, target[key].shape[axis])
    return out


def _create_agent_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    agent_nums = kwargs.pop("agent_num", (9, 16, 49, 49))

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int) -> AgentAttention:
        return AgentAttention(dim, num_heads, resolution, agent_num=agent_nums[stage])

    return _create_swin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                        global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("agent_swin"))

register_tiny_kwargs(
    "zoo_agent_swin", img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
    global_blocks=(1, 2, 1, 0), agent_num=(4, 4, 4, 1),
)


@register_model
def zoo_agent_swin_tiny(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-T: agent attention in stages 1-3 (``AAAB``)."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, global_blocks=(2, 2, 6, 0))
    return _create_agent_swin("zoo_agent_swin_tiny", pretrained, **dict(args, **kwargs))


@register_model
def zoo_agent_swin_small(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-S: agent attention in stages 1-2 (``AABB``)."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7,
                global_blocks=(2, 2, 0, 0))
    return _create_agent_swin("zoo_agent_swin_small", pretrained, **dict(args, **kwargs))


@register_model
def zoo_agent_swin_small_288(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-S at 288: window 9 in the Swin stages."""
    args = dict(img_size=288, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=9,
                global_blocks=(2, 2, 0, 0))
    return _create_agent_swin("zoo_agent_swin_small_288", pretrained, **dict(args, **kwargs))


@register_model
def zoo_agent_swin_base(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-B: agent attention in stages 1-2 and the first 2 blocks of stage 3 (``AAMB2``)."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7,
                global_blocks=(2, 2, 2, 0))
    return _create_agent_swin("zoo_agent_swin_base", pretrained, **dict(args, **kwargs))


@register_model
def zoo_agent_swin_base_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-B at 384: window 12 in the Swin stages."""
    args = dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12,
                global_blocks=(2, 2, 2, 0))
    return _create_agent_swin("zoo_agent_swin_base_384", pretrained, **dict(args, **kwargs))
