"""Agent Attention: On the Integration of Softmax and Linear Attention (Han et al., ECCV 2024).

https://arxiv.org/abs/2312.08874

Agent-Swin is Swin whose first stages use agent attention over the whole stage map (the official
configs' ``window_size: 56``: one window at 224), with ``agent_num`` 9-16-49-49 agent tokens
pooled from the queries; the remaining blocks keep shifted-window attention on the shared
``window_attention`` kernel. Official checkpoints (LeapLabTHU/Agent-Attention) load through
``checkpoint_filter_fn``. For other input sizes the position biases are interpolated bilinearly to
the map, as the official detection and segmentation code does; ``agent_shapes`` pools the agents of
each stage to another grid, as that code does too (see ``downstream_cfg``).
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs

from zoo.layers.agent_attention import AgentAttention, resize_agent_biases, stage_agent_shapes
from zoo.weights import pretrained_cfgs

from ._registry import register_tiny_kwargs, register_variants
from .swin import _SWIN_B, _SWIN_S, _SWIN_T, SwinTransformer, _create_swin
from .swin import checkpoint_filter_fn as swin_checkpoint_filter_fn
from .swin import downstream_cfg as swin_downstream_cfg

__all__ = ["AgentAttention"]


def checkpoint_filter_fn(state_dict: dict, model: SwinTransformer) -> dict[str, torch.Tensor]:
    """Swin's conversion, then per-row/column agent biases resized to the model's stage resolutions."""
    return resize_agent_biases(swin_checkpoint_filter_fn(state_dict, model), model)


def _create_agent_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    agent_nums = kwargs.pop("agent_num", (9, 16, 49, 49))
    agent_shapes = stage_agent_shapes(kwargs.pop("agent_shapes", None), len(agent_nums))

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int) -> AgentAttention:
        return AgentAttention(dim, num_heads, resolution, agent_num=agent_nums[stage], agent_shape=agent_shapes[stage])

    return _create_swin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                        global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("agent_swin"))

# The official detection/segmentation backbone (LeapLabTHU/Agent-Attention `downstream/detection/mmdet/models/
# backbones/agent_swin.py`) is Swin's: full, shifted windows in every Swin stage and an nn.LayerNorm `norm{i}`
# (eps 1e-5) on every output map; and every official detection and segmentation config pools the agents to
# 9x9, 12x12, 14x14 and 7x7 grids (`downstream_agent_shapes`).
downstream_cfg = dict(
    swin_downstream_cfg,
    model_kwargs=dict(swin_downstream_cfg["model_kwargs"], agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7))),
)

register_tiny_kwargs(
    "zoo_agent_swin", img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
    global_blocks=(1, 2, 1, 0), agent_num=(4, 4, 4, 1),
)


# Agent-Swin-T/S/B: Swin's sizes with agent attention in the first ``global_blocks`` of each stage (the official
# ``AAAB``, ``AABB`` and ``AAMB2`` layouts); the 288 and 384 variants have windows 9 and 12.
register_variants(
    _create_agent_swin,
    zoo_agent_swin_tiny=dict(_SWIN_T, global_blocks=(2, 2, 6, 0)),
    zoo_agent_swin_small=dict(_SWIN_S, global_blocks=(2, 2, 0, 0)),
    zoo_agent_swin_small_288=dict(_SWIN_S, img_size=288, window_size=9, global_blocks=(2, 2, 0, 0)),
    zoo_agent_swin_base=dict(_SWIN_B, global_blocks=(2, 2, 2, 0)),
    zoo_agent_swin_base_384=dict(_SWIN_B, img_size=384, window_size=12, global_blocks=(2, 2, 2, 0)),
)
