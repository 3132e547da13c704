"""Agent-PVT: PVT with agent attention (Han et al., ECCV 2024).

https://arxiv.org/abs/2312.08874

Every block uses agent attention (the official configs' attention types ``AAAA``) with 9, 16, 49
and 49 agent tokens per stage and no spatial reduction of keys and values
(``PVT_LA_SR_RATIOS=1111``); ``sr_ratios`` builds reduced versions. Official checkpoints
(LeapLabTHU/Agent-Attention) load through ``checkpoint_filter_fn``; for other input sizes the
position embeddings and biases are interpolated to the maps. ``agent_shapes`` pools the agents of
each stage to another grid, as the official detection and segmentation code does (see ``downstream_cfg``).
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs

from zoo.layers.agent_attention import AgentAttention, resize_agent_biases, stage_agent_shapes
from zoo.layers.map_attention import SpatialReduction
from zoo.weights import pretrained_cfgs

from ._backbone import build_backbone
from ._registry import register_tiny_kwargs, register_variants
from .pvt import _PVT_T, _TINY_KWARGS, PyramidVisionTransformer
from .pvt import checkpoint_filter_fn as pvt_checkpoint_filter_fn

__all__ = ["ReducedAgentAttention"]


class ReducedAgentAttention(SpatialReduction, AgentAttention):
    """Agent attention with keys and values from PVT's spatially reduced map."""


def checkpoint_filter_fn(state_dict: dict, model: PyramidVisionTransformer) -> dict[str, torch.Tensor]:
    """PVT's conversion, then per-row/column agent biases resized to the model's stage resolutions."""
    return resize_agent_biases(pvt_checkpoint_filter_fn(state_dict, model), model)


def _create_agent_pvt(variant: str, pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    agent_nums = kwargs.pop("agent_num", (9, 16, 49, 49))
    agent_shapes = stage_agent_shapes(kwargs.pop("agent_shapes", None), len(agent_nums))

    def attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], sr_ratio: int, stage: int):
        return ReducedAgentAttention(dim, num_heads, resolution, agent_num=agent_nums[stage], sr_ratio=sr_ratio,
                                     agent_shape=agent_shapes[stage])

    return build_backbone(PyramidVisionTransformer, variant, pretrained, checkpoint_filter_fn,
                          attn_layer=attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("agent_pvt"))

# The official detection/segmentation backbone (LeapLabTHU/Agent-Attention `downstream/detection/mmdet/models/
# backbones/agent_pvt.py`) returns the stage maps as they are, its agents pooled to 12x12, 16x16, 28x28 and 28x28
# grids in every official detection and segmentation config (`downstream_agent_shapes`).
downstream_cfg = dict(model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28))))

register_tiny_kwargs("zoo_agent_pvt", **_TINY_KWARGS, agent_num=(4, 4, 4, 1))

# Agent-PVT-T/S/M/L: PVT's sizes (PVT paper Table 1) with agent attention, 9-16-49-49 agents per stage; medium_256
# is trained at 256² (biases and position embeddings for 64-32-16-8 maps).
register_variants(
    _create_agent_pvt,
    zoo_agent_pvt_tiny=_PVT_T,
    zoo_agent_pvt_small=dict(_PVT_T, depths=(3, 4, 6, 3)),
    zoo_agent_pvt_medium=dict(_PVT_T, depths=(3, 4, 18, 3)),
    zoo_agent_pvt_medium_256=dict(_PVT_T, img_size=256, depths=(3, 4, 18, 3)),
    zoo_agent_pvt_large=dict(_PVT_T, depths=(3, 8, 27, 3)),
)
