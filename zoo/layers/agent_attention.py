"""Agent attention (Han et al., ECCV 2024), shared by its trunks.

https://arxiv.org/abs/2312.08874
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from .dwconv import DepthwiseConv2d
from .map_attention import MapAttention

__all__ = ["AgentAttention", "resize_agent_biases", "stage_agent_shapes"]


def _resize(bias: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims (a no-op at the same size)."""
    if tuple(bias.shape[-2:]) == tuple(size):
        return bias
    lead = bias.shape[:-2]
    return F.interpolate(bias.reshape(-1, 1, *bias.shape[-2:]), size=size, mode="bilinear").reshape(*lead, *size)


def _check_agent_shape(agent_shape) -> tuple[int, int]:
    """``agent_shape`` as an ``(h, w)`` tuple of positive ints, or a ValueError saying what is expected."""
    shape = tuple(agent_shape) if isinstance(agent_shape, (tuple, list)) else ()
    if len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"an agent grid must be a pair of positive ints (rows, columns), got {agent_shape!r}")
    return shape


def stage_agent_shapes(agent_shapes, num_stages: int) -> list[tuple[int, int] | None]:
    """One agent grid per stage (``None`` everywhere when ``agent_shapes`` is None), checked."""
    if agent_shapes is None:
        return [None] * num_stages
    if not isinstance(agent_shapes, (tuple, list)) or len(agent_shapes) != num_stages:
        raise ValueError(f"agent_shapes must hold one (rows, columns) grid per stage ({num_stages}), "
                         f"got {agent_shapes!r}")
    return [_check_agent_shape(shape) for shape in agent_shapes]


class AgentAttention(MapAttention):
    """Agent attention over a ``(B, H, W, C)`` map (paper Eq. 3).

    ``A`` = agent tokens (queries average-pooled to a grid, ``sqrt(n) x sqrt(n)`` by default). Agents
    first aggregate the values, ``V_A = softmax(A K^T / sqrt(d) + B1) V``, then broadcast them back,
    ``O = softmax(Q A^T / sqrt(d) + B2) V_A``, plus a 3x3 depthwise convolution of V (upsampled
    bilinearly to the query map when the keys come from a reduced map). The biases are a 7x7 table
    per agent interpolated to the map plus per-row and per-column terms: ``B1`` over the key map
    (``kv_resolution``), ``B2`` over the query map (``resolution``); other sizes interpolate them.

    ``agent_shape`` pools the queries to another grid (the official detection and segmentation
    backbones' ``downstream_agent_shapes``): the parameters keep their ``agent_num`` agents, and the
    biases, once resized to the map, are resized bilinearly along the agent grid as well.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], agent_num: int = 49,
                 kv_resolution: tuple[int, int] | None = None, qkv_bias: bool = True, proj_drop: float = 0.0,
                 agent_shape: tuple[int, int] | None = None):
        super().__init__(dim, num_heads, qkv_bias, proj_drop)
        pool_size = int(agent_num**0.5)
        if pool_size * pool_size != agent_num:
            raise ValueError(f"agent_num must be a perfect square, got {agent_num}")
        self.agent_num = agent_num
        self.bias_grid = (pool_size, pool_size)
        self.agent_shape = self.bias_grid if agent_shape is None else _check_agent_shape(agent_shape)
        h, w = resolution
        kv_h, kv_w = kv_resolution or resolution
        self.dwc = DepthwiseConv2d(dim, 3)
        self.pool = nn.AdaptiveAvgPool2d(self.agent_shape)
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, kv_h, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, kv_w))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, h, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, w, agent_num))
        for bias in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            trunc_normal_(bias, std=0.02)

    def _to_agent_grid(self, bias: torch.Tensor) -> torch.Tensor:
        """``(heads, agent_num, h, w)`` -> ``(heads, agents, h * w)``, resized along the agents from their
        stored grid to ``agent_shape`` (bilinearly, for every map position)."""
        heads, _, h, w = bias.shape
        if self.agent_shape == self.bias_grid:
            return bias.reshape(heads, self.agent_num, h * w)
        grid = bias.reshape(heads, *self.bias_grid, h * w).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=self.agent_shape, mode="bilinear").flatten(2).transpose(1, 2)

    def _biases(self, size: tuple[int, int], kv_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent-to-key ``(1, heads, agents, m)`` and query-to-agent ``(1, heads, n, agents)`` biases."""
        to_keys = _resize(self.an_bias, kv_size) + _resize((self.ah_bias + self.aw_bias)[0], kv_size)
        to_agents = _resize(self.na_bias, size) + _resize((self.ha_bias + self.wa_bias)[0].permute(0, 3, 1, 2), size)
        return self._to_agent_grid(to_keys).unsqueeze(0), self._to_agent_grid(to_agents).transpose(-1, -2).unsqueeze(0)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        agents = self.pool(q.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        to_keys, to_agents = self._biases((h, w), tuple(k.shape[1:3]))
        q_heads, k_heads, v_heads, agents = (self.split_heads(t) for t in (q, k, v, agents))
        agent_values = F.scaled_dot_product_attention(agents, k_heads, v_heads, attn_mask=to_keys.to(q.dtype))
        out = F.scaled_dot_product_attention(q_heads, agents, agent_values, attn_mask=to_agents.to(q.dtype))
        v_map = v.permute(0, 3, 1, 2)
        if v_map.shape[-2:] != (h, w):
            v_map = F.interpolate(v_map, size=(h, w), mode="bilinear")
        return out.transpose(1, 2).reshape(b, h, w, c) + self.dwc(v_map).permute(0, 2, 3, 1)


_BIAS_AXIS = {"ah_bias": 3, "aw_bias": 4, "ha_bias": 2, "wa_bias": 3}  # the spatial axis of each bias


def _resize_axis(t: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    moved = t.movedim(axis, -1)
    resized = F.interpolate(moved.reshape(-1, 1, moved.shape[-1]), size=length, mode="linear")
    return resized.reshape(*moved.shape[:-1], length).movedim(-1, axis)


def resize_agent_biases(state_dict: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """Resize the per-row/column agent biases of ``state_dict`` (already in ``model``'s key names) to the
    model's maps: checkpoints store them for the resolution they were trained at."""
    target = model.state_dict()
    for key, value in state_dict.items():
        axis = _BIAS_AXIS.get(key.rsplit(".", 1)[-1])
        if axis is not None and key in target and value.shape != target[key].shape:
            state_dict[key] = _resize_axis(value, axis, target[key].shape[axis])
    return state_dict
