"""Agent-DeiT: DeiT with agent attention (Han et al., ECCV 2024).

https://arxiv.org/abs/2312.08874

An isotropic ViT with a class token. Agent attention's agents are pooled from the patch queries
only; the class token takes part as one more key (with a learned agent-to-class bias ``ac_bias``)
and one more query (class-to-agent bias ``ca_bias``), and receives no depthwise term. The official
variants: T and S with agent attention in all 12 blocks (49 agents), B in its first 4 blocks (81
agents) and plain softmax attention after. Official checkpoints (LeapLabTHU/Agent-Attention) load
through ``checkpoint_filter_fn``; other input sizes interpolate the position embedding and biases.

Between blocks the tokens travel as one ``(B, 1 + H, W, C)`` tensor: the class token repeated along
the first row, the ``H x W`` patch map below it, so every block knows the patch grid at any input
size and each block is a feature map (:meth:`AgentDeiT.stage_feature_map` drops the first row).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    Mlp,
    calculate_drop_path_rates,
    resample_abs_pos_embed,
    trunc_normal_,
)
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import Attention

from zoo.layers.agent_attention import AgentAttention, resize_agent_biases
from zoo.layers.blocks import PreNormBlock
from zoo.weights import pretrained_cfgs

from ._backbone import IsotropicBackbone, backbone_creator, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["AgentDeiT", "ClassTokenAgentAttention"]


def split_class_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1 + H, W, C)`` -> the class token ``(B, 1, C)`` and the patch map ``(B, H, W, C)``."""
    return x[:, 0, :1], x[:, 1:]


def join_class_token(cls_token: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The class token ``(B, 1, C)`` and the patch map ``(B, H, W, C)`` -> ``(B, 1 + H, W, C)``."""
    return torch.cat([cls_token.unsqueeze(1).expand(-1, -1, x.shape[2], -1), x], dim=1)


class ClassTokenAgentAttention(AgentAttention):
    """Agent attention over ``(B, 1 + H * W, C)`` tokens led by a class token (official ``agent_deit.py``).

    Agents ``A`` pool the patch queries; with ``K``, ``V`` and ``Q`` over all tokens,
    ``V_A = softmax(A K^T / sqrt(d) + [ac_bias, B1]) V`` and ``O = softmax(Q A^T / sqrt(d) + [ca_bias; B2]) V_A``,
    plus the depthwise convolution of the patch values on the patch outputs.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], agent_num: int = 49,
                 qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, resolution, agent_num, qkv_bias=qkv_bias, proj_drop=proj_drop)
        self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1))
        self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, 1, agent_num))
        trunc_normal_(self.ac_bias, std=0.02)
        trunc_normal_(self.ca_bias, std=0.02)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        patch_q = q[:, 1:].reshape(b, *size, c)
        agents = self.pool(patch_q.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        to_keys, to_agents = self._biases(size, size)
        to_keys = torch.cat([self.ac_bias, to_keys], dim=-1)
        to_agents = torch.cat([self.ca_bias, to_agents], dim=-2)
        q, k, v, agents = (
            t.reshape(b, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v, agents)
        )
        agent_values = F.scaled_dot_product_attention(agents, k, v, attn_mask=to_keys.to(q.dtype))
        out = F.scaled_dot_product_attention(q, agents, agent_values, attn_mask=to_agents.to(q.dtype))
        out = out.transpose(1, 2).reshape(b, n, c)
        patch_v = v[:, :, 1:].transpose(1, 2).reshape(b, *size, c).permute(0, 3, 1, 2)
        local = self.dwc(patch_v).flatten(2).transpose(1, 2)
        out = torch.cat([out[:, :1], out[:, 1:] + local], dim=1)
        return self.proj_drop(self.proj(out))


class SoftmaxAttention(Attention):
    """timm's multi-head self-attention, called like :class:`ClassTokenAgentAttention` (the grid is unused)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return super().forward(x)


class DeiTBlock(PreNormBlock):
    """Pre-norm ViT block over the class token and the patches, on the packed ``(B, 1 + H, W, C)`` tensor."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, proj_drop: float = 0.0,
                 drop_path: float = 0.0):
        mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        super().__init__(dim, attn, mlp, drop_path, partial(nn.LayerNorm, eps=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_token, patches = split_class_token(x)
        b, h, w, c = patches.shape
        x = torch.cat([cls_token, patches.reshape(b, h * w, c)], dim=1)
        x = x + self.drop_path1(self.attn(self.norm1(x), (h, w)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return join_class_token(x[:, :1], x[:, 1:].reshape(b, h, w, c))


class ClassTokenHead(nn.Module):
    """Pools the packed tokens, the class token (``"token"``) or the mean patch (``"avg"``; ``""`` passes
    them through), then dropout and a linear classifier."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "token", drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.global_pool = _checked_pool(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = _checked_pool(pool_type)
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(dim=(1, 2))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _checked_pool(pool_type: str) -> str:
    if pool_type not in ("token", "avg", ""):
        raise ValueError(f"AgentDeiT: global_pool must be 'token', 'avg' or '', got {pool_type!r}")
    return pool_type


class AgentDeiT(IsotropicBackbone):
    """DeiT whose first ``agent_blocks`` blocks (all by default) use agent attention with ``agent_num``
    agents. Classifies the class token (``global_pool="token"``) or the mean patch (``"avg"``)."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        global_pool: str = "token",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        agent_num: int = 49,
        agent_blocks: int | None = None,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(global_pool=global_pool, **kwargs)
        self.min_input_size = patch_size
        self.num_features = self.head_hidden_size = embed_dim
        grid = self.embed_patches(img_size, patch_size, embed_dim, depth, dynamic_img_pad=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], embed_dim))
        agent_blocks = depth if agent_blocks is None else agent_blocks
        drop_path = calculate_drop_path_rates(drop_path_rate, depth)
        blocks = []
        for i in range(depth):
            if i < agent_blocks:
                attn = ClassTokenAgentAttention(embed_dim, num_heads, grid, agent_num, proj_drop=proj_drop_rate)
            else:
                attn = SoftmaxAttention(embed_dim, num_heads, qkv_bias=True, proj_drop=proj_drop_rate)
            blocks.append(DeiTBlock(embed_dim, attn, mlp_ratio, proj_drop_rate, drop_path[i]))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = ClassTokenHead(embed_dim, self.num_classes, self.global_pool, self.drop_rate)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_trunc_normal)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """The patch, class and position embeddings, then one group per block."""
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed", blocks=r"^blocks\.(\d+)")

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patches plus the position embedding (resampled for another grid), the class token on top."""
        x = super().stem_forward(x)
        grid = list(x.shape[1:3])
        pos_embed = self.pos_embed
        if grid != list(self.patch_embed.grid_size):
            pos_embed = resample_abs_pos_embed(pos_embed, grid, list(self.patch_embed.grid_size))
        cls_token = self.cls_token.expand(x.shape[0], -1, -1) + pos_embed[:, :1]
        return join_class_token(cls_token, x + pos_embed[:, 1:].reshape(1, *grid, -1))

    def stage_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return split_class_token(x)[1]


def checkpoint_filter_fn(state_dict: dict, model: AgentDeiT) -> dict[str, torch.Tensor]:
    """Convert an official Agent-DeiT checkpoint: unwrap ``model`` and ``module.``, ``head`` to ``head.fc``;
    resample the position embedding and resize the agent biases stored for another input size."""
    state_dict = unwrap_checkpoint(state_dict, ("model",))
    if "head.weight" in state_dict:
        state_dict = rename_keys(state_dict, ((r"^head\.", "head.fc."),))
    pos_embed = state_dict.get("pos_embed")
    if pos_embed is not None and pos_embed.shape != model.pos_embed.shape:
        old = int((pos_embed.shape[1] - 1) ** 0.5)
        state_dict["pos_embed"] = resample_abs_pos_embed(pos_embed, list(model.patch_embed.grid_size), [old, old])
    return resize_agent_biases(state_dict, model)


_create_agent_deit = backbone_creator(AgentDeiT, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("agent_deit"))

register_tiny_kwargs("zoo_agent_deit", img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, agent_num=4)


# Agent-DeiT-T/S/B, on DeiT's sizes: T and S with 49 agents in every block (S also at 448², a 28x28 patch grid),
# B with 81 agents in its first 4 blocks and softmax attention after.
_DEIT_S = dict(embed_dim=384, depth=12, num_heads=6, agent_num=49)
register_variants(
    _create_agent_deit,
    zoo_agent_deit_tiny=dict(embed_dim=192, depth=12, num_heads=3, agent_num=49),
    zoo_agent_deit_small=_DEIT_S,
    zoo_agent_deit_small_448=dict(_DEIT_S, img_size=448),
    zoo_agent_deit_base=dict(embed_dim=768, depth=12, num_heads=12, agent_num=81, agent_blocks=4),
)
