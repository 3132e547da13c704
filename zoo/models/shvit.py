"""SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design (Yun & Ro, CVPR 2024).

https://arxiv.org/abs/2401.16456

The state dict is the same as timm's ``shvit_s*`` models (timm's Hub weights load as they are) and
the official release checkpoints (ysj9909/SHViT, ``blocks1..3`` layout) load through
``checkpoint_filter_fn``. Every layer is a padded convolution or global attention, so any input
size works: an ``H x W`` image gives ``ceil(H/16) x ceil(W/16)`` tokens in the first stage.
``reparameterize()`` (also reached by ``timm.utils.reparameterize_model``) folds every BatchNorm
into the convolution or linear layer before it, and the identity of each depthwise residual into
the kernel's centre tap, as the official deployment code does.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    GroupNorm1,
    SelectAdaptivePool2d,
    SqueezeExcite,
    trunc_normal_,
    use_fused_attn,
)
from timm.models import generate_default_cfgs, reparameterize_model

from zoo.layers.checks import check_per_stage
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import unwrap_checkpoint

__all__ = ["SHViT"]


class ConvNorm(nn.Sequential):
    """Convolution without bias followed by BatchNorm (``c``, ``bn``); ``fuse()`` folds them into one conv."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ):
        super().__init__()
        depthwise = groups == in_chs == out_chs and stride == 1 and padding == kernel_size // 2
        if depthwise:  # through zoo.kernels.depthwise_conv2d; same parameters and keys as nn.Conv2d
            conv = DepthwiseConv2d(in_chs, kernel_size, bias=False)
        else:
            conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.add_module("c", conv)
        self.add_module("bn", nn.BatchNorm2d(out_chs))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """``bn(c(x)) = c'(x)`` with ``w' = w * s``, ``b' = beta - mean * s``, ``s = gamma / sqrt(var + eps)``."""
        c, bn = self.c, self.bn
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        if isinstance(c, DepthwiseConv2d):
            fused = DepthwiseConv2d(c.in_channels, c.kernel_size[0]).to(c.weight)
        else:
            fused = nn.Conv2d(
                c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                bias=True, device=c.weight.device, dtype=c.weight.dtype,
            )
        fused.weight.copy_(c.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class NormLinear(nn.Sequential):
    """BatchNorm1d followed by a linear layer (``bn``, ``l``): the classifier; ``fuse()`` folds the norm in."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))
        trunc_normal_(self.l.weight, std=std)
        nn.init.zeros_(self.l.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """``l(bn(x)) = (W diag(s)) x + W (beta - mean * s) + b`` with ``s = gamma / sqrt(var + eps)``."""
        bn, linear = self.bn, self.l
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        fused = nn.Linear(
            linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype
        )
        fused.weight.copy_(linear.weight * scale[None, :])
        fused.bias.copy_(linear.weight @ (bn.bias - bn.running_mean * scale) + linear.bias)
        return fused


class Residual(nn.Module):
    """``x + drop_path(m(x))``; a residual depthwise ConvNorm fuses into a single depthwise conv."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.m(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """A residual "same"-padded depthwise ConvNorm becomes one depthwise conv; anything else stays."""
        if not (isinstance(self.m, ConvNorm) and _is_same_depthwise(self.m.c)):
            return self
        fused = self.m.fuse()
        kh, kw = fused.kernel_size
        fused.weight[:, 0, kh // 2, kw // 2] += 1.0  # the identity: a 1 at the centre tap of each channel
        return fused


def _is_same_depthwise(conv: nn.Conv2d) -> bool:
    """Depthwise, stride 1, padded to keep the size: ``conv(x) + x`` is then a conv with the centre tap + 1."""
    kh, kw = conv.kernel_size
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == (kh // 2, kw // 2)
        and kh % 2 == kw % 2 == 1
    )


class FFN(nn.Module):
    """Pointwise feed-forward: ConvNorm 1x1 -> ReLU -> ConvNorm 1x1 (second norm initialized to zero)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden_dim)
        self.act = act_layer()
        self.pw2 = ConvNorm(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class PatchMerging(nn.Module):
    """2x downsampling: 1x1 expand (4x) -> ReLU -> depthwise 3x3 stride 2 -> ReLU -> SE -> 1x1 project."""

    def __init__(self, dim: int, out_dim: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        hidden_dim = 4 * dim
        self.conv1 = ConvNorm(dim, hidden_dim)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(hidden_dim, hidden_dim, 3, 2, 1, groups=hidden_dim)
        self.act2 = act_layer()
        self.se = SqueezeExcite(hidden_dim, 0.25)
        self.conv3 = ConvNorm(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.conv3(self.se(x))


class SHSA(nn.Module):
    """Single-head self-attention (SHSA) over the first ``pdim`` channels.

    ``x1, x2 = split(x, [pdim, C - pdim])``; ``q, k, v = qkv(GroupNorm(x1))`` with ``q, k`` of
    ``qk_dim`` channels; ``x1 = softmax(q k^T / sqrt(qk_dim)) v`` over all ``H*W`` tokens; the output
    projection mixes ``ReLU(cat(x1, x2))``, so the untouched channels still reach it.
    """

    def __init__(self, dim: int, qk_dim: int, pdim: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim
        self.pdim = pdim
        self.scale = qk_dim**-0.5
        self.fused_attn = use_fused_attn()
        self.pre_norm = GroupNorm1(pdim)
        self.qkv = ConvNorm(pdim, 2 * qk_dim + pdim)
        self.proj = nn.Sequential(act_layer(), ConvNorm(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        qkv = self.qkv(self.pre_norm(x1)).flatten(2).transpose(1, 2)
        q, k, v = qkv.unsqueeze(1).split([self.qk_dim, self.qk_dim, self.pdim], dim=-1)  # (B, 1, N, d)
        if self.fused_attn:
            x1 = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            x1 = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        x1 = x1.squeeze(1).transpose(1, 2).reshape(b, self.pdim, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))


class BasicBlock(nn.Module):
    """Residual depthwise 3x3 ConvNorm, residual SHSA (``mixer_type`` "s"; "i" skips it), residual FFN."""

    def __init__(
        self,
        dim: int,
        qk_dim: int,
        pdim: int,
        mixer_type: str,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if mixer_type not in ("s", "i"):
            raise ValueError(f"block type must be 's' (single-head attention) or 'i' (none), got {mixer_type!r}")
        self.conv = Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0), drop_path)
        self.mixer = Residual(SHSA(dim, qk_dim, pdim, act_layer), drop_path) if mixer_type == "s" else nn.Identity()
        self.ffn = Residual(FFN(dim, 2 * dim, act_layer), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))


def downsample_layers(dim: int, out_dim: int, act_layer: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """SHViT's downsampling: depthwise conv + FFN residuals, PatchMerging, then the same at ``out_dim``."""
    return nn.Sequential(
        Residual(ConvNorm(dim, dim, 3, 1, 1, groups=dim)),
        Residual(FFN(dim, 2 * dim, act_layer)),
        PatchMerging(dim, out_dim, act_layer),
        Residual(ConvNorm(out_dim, out_dim, 3, 1, 1, groups=out_dim)),
        Residual(FFN(out_dim, 2 * out_dim, act_layer)),
    )


class SHViTStage(Stage):
    """Optional 2x downsampling (``downsample.0-4``) followed by one BasicBlock per ``drop_path`` rate."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        downsample: bool,
        qk_dim: int,
        pdim: int,
        mixer_type: str,
        drop_path: list[float],
        act_layer: type[nn.Module] = nn.ReLU,
    ):
        downsampling = downsample_layers(dim, out_dim, act_layer) if downsample else nn.Identity()
        blocks = [BasicBlock(out_dim, qk_dim, pdim, mixer_type, rate, act_layer) for rate in drop_path]
        super().__init__(downsampling, blocks)


def _global_pool(pool_type: str) -> SelectAdaptivePool2d:
    """Global pooling to ``(B, C)``; no pooling (``""``) keeps the ``(B, C, H, W)`` map."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class SHViT(Backbone):
    """SHViT: a 16x convolutional stem and three stages at strides 16, 32 and 64.

    Stage ``i`` has ``depth[i]`` blocks of width ``embed_dim[i]``; ``types[i] == "s"`` gives its
    blocks single-head attention over ``partial_dim[i]`` channels with ``qk_dim[i]``-channel queries
    and keys, ``"i"`` gives convolution and FFN only. There is no final norm; the classifier
    (timm's layout: ``global_pool`` then ``head``, a BatchNorm + linear ``NormLinear``) is SHViT's own.
    """

    stem_name = "patch_embed"

    def __init__(
        self,
        embed_dim: tuple[int, ...] = (128, 256, 384),
        partial_dim: tuple[int, ...] = (32, 64, 96),
        qk_dim: tuple[int, ...] = (16, 16, 16),
        depth: tuple[int, ...] = (1, 2, 3),
        types: tuple[str, ...] = ("s", "s", "s"),
        drop_path_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.ReLU,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(embed_dim=embed_dim, partial_dim=partial_dim, qk_dim=qk_dim, depth=depth, types=types)
        if embed_dim[0] % 8:
            raise ValueError(
                f"embed_dim[0] must be a multiple of 8 (the stem widths are C/8, C/4, C/2), got {embed_dim[0]}"
            )
        stem = embed_dim[0]
        self.patch_embed = nn.Sequential(
            ConvNorm(self.in_chans, stem // 8, 3, 2, 1),
            act_layer(),
            ConvNorm(stem // 8, stem // 4, 3, 2, 1),
            act_layer(),
            ConvNorm(stem // 4, stem // 2, 3, 2, 1),
            act_layer(),
            ConvNorm(stem // 2, stem, 3, 2, 1),
        )
        self.build_pyramid(
            partial(SHViTStage, act_layer=act_layer), embed_dim, depth, drop_path_rate, stem_stride=16, qk_dim=qk_dim,
            pdim=partial_dim, mixer_type=types,
        )
        self.norm = nn.Identity()
        self.global_pool = _global_pool(self.global_pool)
        self.head = NormLinear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.l if isinstance(self.head, NormLinear) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = _global_pool(global_pool)
        reference = next(self.parameters())
        self.head = NormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.to(device=reference.device, dtype=reference.dtype).train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every BatchNorm into the conv / linear layer before it (and the depthwise residuals'
        identities into their kernels), in place, for inference; the outputs in eval mode do not change."""
        reparameterize_model(self, inplace=True)


# Official layout (ysj9909/SHViT model/shvit.py): the downsampling before stage i (i = 1, 2) is the first
# three entries of ``blocks{i+1}``: ``0.0`` / ``0.1`` (dw conv / FFN residuals), ``1`` (PatchMerging),
# ``2.0`` / ``2.1``; the stage's blocks follow from index 3.
_OFFICIAL_DOWNSAMPLE = {"0.0": 0, "0.1": 1, "1": 2, "2.0": 3, "2.1": 4}


def _official_to_timm_key(key: str) -> str:
    match = re.match(r"blocks([23])\.(0\.[01]|1|2\.[01])\.(.*)", key)
    if match:
        return f"stages.{int(match[1]) - 1}.downsample.{_OFFICIAL_DOWNSAMPLE[match[2]]}.{match[3]}"
    match = re.match(r"blocks(\d)\.(\d+)\.(.*)", key)
    if match:
        stage = int(match[1]) - 1
        return f"stages.{stage}.blocks.{int(match[2]) - (3 if stage > 0 else 0)}.{match[3]}"
    return key


def checkpoint_filter_fn(state_dict: dict, model: SHViT) -> dict[str, torch.Tensor]:
    """Convert a timm or official (ysj9909/SHViT) checkpoint to this model's layout.

    Unwraps ``model`` / ``state_dict`` / ``module.``, renames the official ``blocks1..3`` keys to
    timm's ``stages.{i}.downsample`` / ``stages.{i}.blocks`` and gives 1x1 conv weights stored as
    2-D tensors their two trailing unit dimensions (as the official loader does). SHViT has no
    recomputed buffers to drop.
    """
    target = model.state_dict()
    out = {}
    for key, value in unwrap_checkpoint(state_dict).items():
        key = _official_to_timm_key(key)
        if key in target and value.ndim == 2 and target[key].ndim == 4:
            value = value[:, :, None, None]
        out[key] = value
    return out


_create_shvit = backbone_creator(SHViT, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("shvit"))

register_tiny_kwargs("zoo_shvit", embed_dim=(16, 24, 32), partial_dim=(8, 8, 8), qk_dim=(8, 8, 8), depth=(1, 1, 1))


# SHViT-S1 to S4 (S4 at 256²): no attention in the first stage ("i"), single-head attention ("s") in the others.
register_variants(
    _create_shvit,
    zoo_shvit_s1=dict(embed_dim=(128, 224, 320), depth=(2, 4, 5), partial_dim=(32, 48, 68), types=("i", "s", "s")),
    zoo_shvit_s2=dict(embed_dim=(128, 308, 448), depth=(2, 4, 5), partial_dim=(32, 66, 96), types=("i", "s", "s")),
    zoo_shvit_s3=dict(embed_dim=(192, 352, 448), depth=(3, 5, 5), partial_dim=(48, 75, 96), types=("i", "s", "s")),
    zoo_shvit_s4=dict(embed_dim=(224, 336, 448), depth=(4, 7, 6), partial_dim=(48, 72, 96), types=("i", "s", "s")),
)
