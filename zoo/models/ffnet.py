"""FFNet: MetaMixer Is All You Need (Yun et al., 2024).

https://arxiv.org/abs/2406.02021

FFNification turns self-attention into a feed-forward-like token mixer made of convolutions: a 1x1
conv-BN (query projection), then depthwise "key" and "value" convolutions with GELU between them,
7x7 kernels re-parameterized from a 7x7 and a 3x3 branch (``RepVGGDW``) in the last two stages
(paper Sec. 3, Fig. 3). Each block is ``x + ls * FFNifiedAttention(x)`` followed by
``x + ls * ConvFFN(x)`` (depthwise conv-BN, 1x1 expansion x3, GELU, 1x1). Stages after the first open
with a stride-2 RepVGG-style depthwise conv doubling the width and ``x + W BN(x)``.

Official checkpoints (ysj9909/FFNet) load through ``checkpoint_filter_fn``, in their training-time
form and in the fused form that ``timm.utils.reparameterize_model`` gives the official model (conv-BN
pairs and branches fused). ``reparameterize()`` folds this model the same way. The stride-1 depthwise
convolutions run through ``zoo.kernels.depthwise_conv2d``. The official blocks can add a
squeeze-and-excitation module (``use_ses``), which no released variant uses; it is left out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d
from timm.models import generate_default_cfgs, reparameterize_model

from zoo.layers.checks import check_per_stage
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.reparam import depthwise_conv_like, fuse_bn, pad_kernel
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["FFNet"]


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A convolution shaped as ``conv`` (the zoo's depthwise module where ``conv`` is one), with bias,
    holding ``weight`` and ``bias``."""
    if isinstance(conv, DepthwiseConv2d):
        return depthwise_conv_like(weight, bias)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups).to(weight)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused


class ConvBn(nn.Sequential):
    """A convolution without bias padded by ``kernel_size // 2``, then BatchNorm (``c``, ``bn``); a
    stride-1 depthwise one runs through the zoo kernel. ``fuse()`` returns one convolution."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        if groups == in_dim == out_dim > 1 and stride == 1:
            self.c = DepthwiseConv2d(in_dim, kernel_size, bias=False)
        else:
            self.c = nn.Conv2d(in_dim, out_dim, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_bn(self.c.weight, self.bn)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return _conv_like(self.c, *self.fused_kernel_bias())


class RepVGGDW(nn.Module):
    """``ConvBn_k(x) + ConvBn_{k//2}(x)``, grouped by input channel (depthwise, or widening by an integer
    factor); ``fuse()`` pads the small kernel to ``k`` and adds the two."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 7, stride: int = 1):
        super().__init__()
        self.conv = ConvBn(in_dim, out_dim, kernel_size, stride, groups=in_dim)
        self.conv1 = ConvBn(in_dim, out_dim, kernel_size // 2, stride, groups=in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        kernel, bias = self.conv.fused_kernel_bias()
        small_kernel, small_bias = self.conv1.fused_kernel_bias()
        return _conv_like(self.conv.c, kernel + pad_kernel(small_kernel, kernel.shape[-1]), bias + small_bias)


class BnConvResidual(nn.Module):
    """``x + W BN(x)``, W a 1x1 convolution without bias. ``fuse()`` gives the 1x1 convolution
    ``W diag(s) + I`` with bias ``W (beta - mu s)``, ``s = gamma / sqrt(var + eps)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(dim), c=nn.Conv2d(dim, dim, 1, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        bn, weight = self.conv.bn, self.conv.c.weight
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        identity = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)[..., None, None]
        bias = weight[:, :, 0, 0] @ (bn.bias - bn.running_mean * scale)
        return _conv_like(self.conv.c, weight * scale[None, :, None, None] + identity, bias)


def _depthwise(dim: int, kernel_size: int, conv_bn: bool) -> nn.Module:
    """FFNet's depthwise layer: a re-parameterizable 7x7 + 3x3 pair for ``kernel_size`` 7, else one
    depthwise conv-BN (``conv_bn``) or one depthwise conv with bias."""
    if kernel_size == 7:
        return RepVGGDW(dim, dim, kernel_size)
    return ConvBn(dim, dim, kernel_size, groups=dim) if conv_bn else DepthwiseConv2d(dim, kernel_size)


class FFNifiedAttention(nn.Module):
    """``conv2(GELU(conv1(fc(x))))``: 1x1 conv-BN, then the two depthwise convolutions (paper Eq. 5)."""

    def __init__(self, dim: int, kernel_size1: int, kernel_size2: int):
        super().__init__()
        self.fc = ConvBn(dim, dim)
        self.conv1 = _depthwise(dim, kernel_size1, conv_bn=False)
        self.act = nn.GELU()
        self.conv2 = _depthwise(dim, kernel_size2, conv_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(self.fc(x))))


class ConvFFN(nn.Module):
    """``fc2(GELU(fc1(conv(x))))``: a depthwise conv-BN, then a 1x1 MLP of ``expansion_ratio``."""

    def __init__(self, dim: int, kernel_size: int, expansion_ratio: float):
        super().__init__()
        hidden_dim = int(dim * expansion_ratio)
        self.conv = _depthwise(dim, kernel_size, conv_bn=True)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class Residual(nn.Module):
    """``x + drop_path(main(x) * layer_scale)`` (no layer scale when ``layer_scale_init_value`` is None)."""

    def __init__(self, main: nn.Module, dim: int, drop_path: float, layer_scale_init_value: float | None):
        super().__init__()
        self.main = main
        self.layer_scale = (
            nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value)) if layer_scale_init_value else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return x + self.drop_path(y if self.layer_scale is None else y * self.layer_scale)


class FFBlock(nn.Module):
    """FFNified attention, then the convolutional FFN, each residual with optional layer scale."""

    def __init__(self, dim: int, kernel_size: int, kernel_size1: int, kernel_size2: int, expansion_ratio: float,
                 drop_path: float, layer_scale_init_value: float | None):
        super().__init__()
        residual = partial(Residual, dim=dim, drop_path=drop_path, layer_scale_init_value=layer_scale_init_value)
        self.token_mixer = residual(FFNifiedAttention(dim, kernel_size1, kernel_size2))
        self.channel_mixer = residual(ConvFFN(dim, kernel_size, expansion_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class PatchMerging(nn.Module):
    """Stride-2 7x7 + 3x3 convolutions grouped by input channel into ``out_dim``, then ``x + W BN(x)``."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        if out_dim % dim:
            raise ValueError(f"a stage's width must be a multiple of the previous one, got {dim} -> {out_dim}")
        self.proj = nn.Sequential(RepVGGDW(dim, out_dim, 7, stride=2), BnConvResidual(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class FFNetStage(Stage):
    """Optional patch merging, then ``depth`` FFNet blocks."""

    def __init__(self, in_dim: int, dim: int, kernel_sizes: tuple[int, int, int], expansion_ratio: float,
                 drop_path: list[float], layer_scale_init_value: float | None, downsample: bool):
        downsampling = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        super().__init__(downsampling, [
            FFBlock(dim, *kernel_sizes, expansion_ratio, rate, layer_scale_init_value) for rate in drop_path
        ])


class FFNet(Backbone):
    """FFNet: a stride-4 stem (3x3 stride-2 conv-BN, GELU, 3x3 stride-2 conv-BN), four stages,
    BatchNorm, average pooling and a linear classifier. Per stage, ``kernel_sizes`` is the FFN's
    depthwise kernel, ``kernel_sizes1`` / ``kernel_sizes2`` the token mixer's two (7: re-parameterized
    7x7 + 3x3)."""

    stem_name = "patch_embed"

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 2, 8, 2),
        embed_dims: tuple[int, ...] = (80, 160, 320, 640),
        stem_dim: int = 64,
        kernel_sizes: tuple[int, ...] = (3, 3, 3, 3),
        kernel_sizes1: tuple[int, ...] = (3, 3, 7, 7),
        kernel_sizes2: tuple[int, ...] = (3, 3, 7, 7),
        expansion_ratio: float = 3.0,
        layer_scale_init_value: float | None = None,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(depths=depths, embed_dims=embed_dims, kernel_sizes=kernel_sizes, kernel_sizes1=kernel_sizes1,
                        kernel_sizes2=kernel_sizes2)
        self.patch_embed = nn.Sequential(
            ConvBn(self.in_chans, stem_dim, 3, stride=2), nn.GELU(), ConvBn(stem_dim, embed_dims[0], 3, stride=2)
        )
        self.build_pyramid(
            partial(FFNetStage, expansion_ratio=expansion_ratio, layer_scale_init_value=layer_scale_init_value),
            embed_dims, depths, drop_path_rate, kernel_sizes=list(zip(kernel_sizes, kernel_sizes1, kernel_sizes2)),
        )
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.head = self.classifier_head()
        self.apply(partial(init_trunc_normal, layers=(nn.Conv2d, nn.Linear)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse every conv-BN pair, RepVGG branch pair and ``x + W BN(x)`` into one convolution, in
        place, as ``timm.utils.reparameterize_model`` does to the official model; the outputs in eval
        mode do not change."""
        reparameterize_model(self, inplace=True)


def _official_stage_key(match: re.Match) -> str:
    """The official stages hold the patch merging as their first module and the blocks after it."""
    stage, index = int(match[1]), int(match[2])
    if stage == 0:
        return f"stages.0.blocks.{index}."
    return f"stages.{stage}.downsample." if index == 0 else f"stages.{stage}.blocks.{index - 1}."


_OFFICIAL_RENAMES = (
    (r"^stages\.(\d+)\.(\d+)\.", _official_stage_key),
    (r"\.token_mixer\.0\.", ".token_mixer."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)


def checkpoint_filter_fn(state_dict: dict, model: FFNet) -> dict[str, torch.Tensor]:
    """Convert an official (ysj9909/FFNet) checkpoint to this model's layout.

    Unwraps ``model`` / ``state_dict`` and ``module.``, moves each stage's first module (patch merging)
    to ``downsample`` and the rest under ``blocks``, drops the index of the token mixer's
    ``Sequential`` and renames the classifier to ``head.fc``. A checkpoint in the fused form (the stem's
    first convolution with a bias) fuses ``model`` so that it takes it.
    """
    out = rename_keys(unwrap_checkpoint(state_dict), _OFFICIAL_RENAMES)
    if "patch_embed.0.bias" in out:
        model.reparameterize()
    return out


_create_ffnet = backbone_creator(FFNet, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("ffnet"))

# The official detection/segmentation backbone (``detection/mmdet_custom/models/backbones/ffnet.py``) drops the
# head and normalizes every returned map with a channels-first LayerNorm (eps 1e-6) named ``norm{i}``.
downstream_cfg = dict(out_norm=partial(LayerNorm2d, eps=1e-6))

register_tiny_kwargs(
    "zoo_ffnet", embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), stem_dim=8, kernel_sizes=(3, 7, 3, 7),
    kernel_sizes1=(3, 3, 7, 7), kernel_sizes2=(3, 7, 7, 3),
)

# FFNet-1 to 4 at 256²; the _384 variants are FFNet-3/4 evaluated at 384². The depthwise kernels of
# the FFN are 3x3 in FFNet-1, 7x7 (a re-parameterized 7x7 + 3x3) in the others; FFNet-3/4 add layer scale.
_FFNET_3 = dict(depths=(4, 4, 22, 5), embed_dims=(96, 192, 384, 768), kernel_sizes=(7, 7, 7, 7),
                layer_scale_init_value=1e-6)
_FFNET_4 = dict(depths=(4, 4, 27, 3), embed_dims=(128, 256, 512, 1024), kernel_sizes=(7, 7, 7, 7),
                layer_scale_init_value=1e-6)
register_variants(
    _create_ffnet,
    zoo_ffnet_1=dict(depths=(2, 2, 8, 2), embed_dims=(80, 160, 320, 640), kernel_sizes=(3, 3, 3, 3)),
    zoo_ffnet_2=dict(depths=(3, 3, 15, 3), embed_dims=(88, 176, 352, 704), kernel_sizes=(7, 7, 7, 7)),
    zoo_ffnet_3=_FFNET_3,
    zoo_ffnet_3_384=_FFNET_3,
    zoo_ffnet_4=_FFNET_4,
    zoo_ffnet_4_384=_FFNET_4,
)
