"""Agent-CSwin: CSWin with agent attention (Han et al., ECCV 2024).

https://arxiv.org/abs/2312.08874

The blocks of stages 1 and 2 use agent attention over the whole stage map (the official configs'
attention types ``AABB`` with agent stripes ``56-28-14-7``, ``96-48-24-12`` at 384: one stripe is
the whole map), with 9 and 16 agent tokens; stages 3 and 4 keep cross-shaped window attention.
In these blocks CSWin's LePE, a 3x3 depthwise convolution of V, is exactly agent attention's own
depthwise term, so the shared ``AgentAttention`` serves unchanged. Official checkpoints
(LeapLabTHU/Agent-Attention) load through ``checkpoint_filter_fn``; for other input sizes the
position biases are interpolated to the map.
"""

from __future__ import annotations

import torch
from timm.models import generate_default_cfgs

from zoo.layers.agent_attention import AgentAttention, resize_agent_biases
from zoo.weights import pretrained_cfgs

from ._registry import register_tiny_kwargs, register_variants
from .cswin import _CSWIN_384, _GLOBAL_CSWIN_T, _TINY_KWARGS, CSWinTransformer, _create_cswin
from .cswin import checkpoint_filter_fn as cswin_checkpoint_filter_fn
from .cswin import downstream_cfg as cswin_downstream_cfg


def checkpoint_filter_fn(state_dict: dict, model: CSWinTransformer) -> dict[str, torch.Tensor]:
    """CSWin's conversion, then per-row/column agent biases resized to the model's stage resolutions."""
    return resize_agent_biases(cswin_checkpoint_filter_fn(state_dict, model), model)


def _create_agent_cswin(variant: str, pretrained: bool = False, **kwargs) -> CSWinTransformer:
    agent_nums = kwargs.pop("agent_num", (9, 16, 49, 49))

    def global_attn_layer(dim: int, num_heads: int, resolution: tuple[int, int], stage: int) -> AgentAttention:
        return AgentAttention(dim, num_heads, resolution, agent_num=agent_nums[stage])

    return _create_cswin(variant, pretrained, checkpoint_filter=checkpoint_filter_fn,
                         global_attn_layer=global_attn_layer, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("agent_cswin"))

# No downstream code of its own: the CSWin trunk's official segmentation backbone.
downstream_cfg = cswin_downstream_cfg

register_tiny_kwargs("zoo_agent_cswin", **_TINY_KWARGS, global_blocks=(1, 1, 0, 0), agent_num=(4, 4, 4, 1))

# Agent-CSwin-T/S/B: CSWin with deeper stages 1-2 (depths 2-4-18-1, 3-6-29-2) all of whose blocks use agent
# attention (``AABB``), 9 and 16 agents there; base_384 has stripes 1-2-12-12 in the CSWin stages.
_AGENT_CSWIN_S = dict(embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), global_blocks=(3, 6, 0, 0))
_AGENT_CSWIN_B = dict(_AGENT_CSWIN_S, embed_dim=96, num_heads=(4, 8, 16, 32))
register_variants(
    _create_agent_cswin,
    zoo_agent_cswin_tiny=_GLOBAL_CSWIN_T,
    zoo_agent_cswin_small=_AGENT_CSWIN_S,
    zoo_agent_cswin_base=_AGENT_CSWIN_B,
    zoo_agent_cswin_base_384=dict(_AGENT_CSWIN_B, **_CSWIN_384),
)
