"""ParC-Net: Position Aware Circular Convolution with Merits from ConvNets and Transformer
(Zhang et al., ECCV 2022; the official code calls the model EdgeFormer).

https://arxiv.org/abs/2203.03952

A MobileViT-like network: MobileNetV2 inverted residuals, and in the last three stages a block
that replaces MobileViT's transformer with ParC blocks. A ParC block splits its channels in two;
one half runs a global circular convolution along H then along W, the other along W then H,
each with a residual. The kernels are *meta-kernels* learnt at the training feature size and
bilinearly resized (``align_corners=True``) to the current map, so every output sees the whole
row or column; the first block of a stage also adds learnt position embeddings resized the same
way. The convolution is circular: the map is wrapped by ``size - 1`` rows (or columns) and
convolved without padding, through ``zoo.kernels.depthwise_conv2d``. A BatchNorm-Hardswish
channel MLP and squeeze-excitation channel attention follow.

The official code takes square inputs only (it sizes every kernel and embedding from the height);
here the H kernels and embeddings are resized to the height and the W ones to the width, which
is the same on square inputs, so any input size works.

Official checkpoints (hkzhang91/ParC-Net, ``checkpoint_ema_avg.pt``) load through
``checkpoint_filter_fn``. The official data pipeline feeds BGR images scaled to [0, 1] without
mean/std normalization; the filter reverses the stem's input channels so that the model takes
RGB (its output on an RGB image equals the official model's on the BGR image).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvMlp, ConvNormAct, to_2tuple
from timm.models import generate_default_cfgs

from zoo.kernels import depthwise_conv2d
from zoo.weights import pretrained_cfgs

from ._backbone import backbone_creator
from ._cvnets import CVNETS_RENAMES, CvnetsBackbone
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_key, unwrap_checkpoint

__all__ = ["ParCNet"]


def _line(size: int, axis: str) -> tuple[int, int]:
    """The spatial shape of a line of ``size`` taps along ``axis`` ('h' or 'w')."""
    return (size, 1) if axis == "h" else (1, size)


def resize_to(param: torch.Tensor, size: int, axis: str) -> torch.Tensor:
    """Bilinear (``align_corners=True``) resize of a meta-kernel or embedding to ``size`` along ``axis``."""
    if param.shape[2 if axis == "h" else 3] == size:
        return param
    return F.interpolate(param, _line(size, axis), mode="bilinear", align_corners=True)


def circular_conv(x: torch.Tensor, kernel: torch.Tensor, axis: str) -> torch.Tensor:
    """Depthwise circular convolution along ``axis`` with a kernel as long as the map:
    ``y[i] = sum_k kernel[k] * x[(i + k) mod n]``, i.e. wrap ``n - 1`` rows and convolve unpadded."""
    n = x.shape[2 if axis == "h" else 3]
    wrap = (0, 0, 0, n - 1) if axis == "h" else (0, n - 1, 0, 0)
    return depthwise_conv2d(F.pad(x, wrap, mode="circular"), kernel, padding=0)


class CircularConvBranch(nn.Module):
    """Half of a ParC block: ``[+PE_1] -> BN -> circular conv along the first axis -> [+PE_2] ->
    circular conv along the second axis``. Kernels and embeddings are meta-parameters of the
    training size, resized to the map (the H ones to its height, the W ones to its width)."""

    def __init__(self, dim: int, meta_kernel_size: tuple[int, int], first_axis: str, use_pe: bool):
        super().__init__()
        self.axes = (first_axis, "w" if first_axis == "h" else "h")
        sizes = [meta_kernel_size[0] if axis == "h" else meta_kernel_size[1] for axis in self.axes]
        self.norm = nn.BatchNorm2d(dim)
        lines = [_line(size, axis) for size, axis in zip(sizes, self.axes)]
        self.kernel_1 = nn.Parameter(torch.empty(dim, 1, *lines[0]))
        self.kernel_2 = nn.Parameter(torch.empty(dim, 1, *lines[1]))
        if use_pe:
            self.pe_1 = nn.Parameter(torch.randn(1, dim, *lines[0]))
            self.pe_2 = nn.Parameter(torch.randn(1, dim, *lines[1]))
        else:
            self.pe_1 = self.pe_2 = None
        for kernel, size in zip((self.kernel_1, self.kernel_2), sizes):
            nn.init.uniform_(kernel, -1 / math.sqrt(size), 1 / math.sqrt(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = {"h": x.shape[2], "w": x.shape[3]}
        first, second = self.axes
        if self.pe_1 is not None:
            x = x + resize_to(self.pe_1, sizes[first], first)
        x = circular_conv(self.norm(x), resize_to(self.kernel_1, sizes[first], first), first)
        if self.pe_2 is not None:
            x = x + resize_to(self.pe_2, sizes[second], second)
        return circular_conv(x, resize_to(self.kernel_2, sizes[second], second), second)


class ChannelAttention(nn.Module):
    """Squeeze-excitation with BatchNorm: ``x * HSigmoid(BN(W2 HSwish(BN(W1 avgpool(x)))))``, reduction 16."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.reduce = ConvNormAct(dim, dim // reduction, 1, bias=False, act_layer=nn.Hardswish)
        self.expand = ConvNormAct(dim // reduction, dim, 1, bias=False, act_layer=nn.Hardsigmoid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.expand(self.reduce(x.mean((2, 3), keepdim=True)))


class ParCBlock(nn.Module):
    """ParC block (``gcc_ca`` in the official code): circular convolutions H->W and W->H on the two
    channel halves (each with a residual), then ``x + CA(FFN(x))`` with ``FFN = BN -> 1x1 ->
    Hardswish -> 1x1``."""

    def __init__(self, dim: int, ffn_dim: int, meta_kernel_size: tuple[int, int], use_pe: bool, proj_drop: float = 0.0):
        super().__init__()
        self.branch_hw = CircularConvBranch(dim // 2, meta_kernel_size, "h", use_pe)
        self.branch_wh = CircularConvBranch(dim // 2, meta_kernel_size, "w", use_pe)
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, ffn_dim, act_layer=nn.Hardswish)
        self.drop = nn.Dropout(proj_drop)
        self.ca = ChannelAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hw, x_wh = x.chunk(2, dim=1)
        x = torch.cat((x_hw + self.branch_hw(x_hw), x_wh + self.branch_wh(x_wh)), dim=1)
        return x + self.ca(self.drop(self.mlp(self.norm(x))))


class ParCFusionBlock(nn.Module):
    """The official ``outer_frame_v1``, laid out like MobileViT's block: a grouped 3x3 and a 1x1
    convolution widen to ``parc_dim``, ParC blocks (position embeddings in the first only) and a
    BatchNorm mix globally, a grouped 1x1 projects back, and a 3x3 convolution fuses the result
    with the block input (concatenated)."""

    def __init__(
        self,
        dim: int,
        parc_dim: int,
        ffn_dim: int,
        depth: int,
        meta_kernel_size: tuple[int, int],
        proj_drop: float = 0.0,
    ):
        super().__init__()
        groups = math.gcd(dim, parc_dim)
        self.conv_kxk = ConvNormAct(dim, parc_dim, 3, groups=groups, act_layer=nn.SiLU)
        self.conv_1x1 = nn.Conv2d(parc_dim, parc_dim, 1, bias=False)
        self.blocks = nn.Sequential(
            *[ParCBlock(parc_dim, ffn_dim, meta_kernel_size, use_pe=i == 0, proj_drop=proj_drop) for i in range(depth)]
        )
        self.norm = nn.BatchNorm2d(parc_dim)
        self.conv_proj = ConvNormAct(parc_dim, dim, 1, groups=groups, act_layer=nn.SiLU)
        self.conv_fusion = ConvNormAct(2 * dim, dim, 3, act_layer=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(self.blocks(self.conv_1x1(self.conv_kxk(x))))
        return self.conv_fusion(torch.cat((self.conv_proj(x), shortcut), dim=1))


def _stage_sizes(img_size: int, strides: tuple[int, ...]) -> list[int]:
    """Feature-map side after each stage (stride-2 stem, then 3x3 convolutions with padding 1)."""
    size, sizes = math.ceil(img_size / 2), []
    for stride in strides:
        size = math.ceil(size / stride)
        sizes.append(size)
    return sizes


class ParCNet(CvnetsBackbone):
    """ParC-Net: stride-2 stem, five stages (strides 2 to 32) of inverted residuals, the last three
    ending in a ParC fusion block, then a 1x1 expansion, pooling and the classifier.

    The meta-kernels and position embeddings are sized to the stage maps of an ``img_size``
    input (32, 16, 8 at 256) and resized to the map for any other input. A stage is a plain
    sequence of blocks; there is no final norm, the 1x1 expansion ``final_conv`` follows the stages.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 256,
        stem_dim: int = 16,
        dims: tuple[int, ...] = (32, 64, 96, 128, 160),
        depths: tuple[int, ...] = (1, 3, 1, 1, 1),
        strides: tuple[int, ...] = (1, 2, 2, 2, 2),
        parc_dims: tuple[int, ...] = (0, 0, 192, 256, 320),
        parc_ffn_dims: tuple[int, ...] = (0, 0, 384, 512, 640),
        parc_depths: tuple[int, ...] = (0, 0, 2, 4, 3),
        expand_ratio: float = 4.0,
        final_dim: int = 640,
        proj_drop_rate: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not len(dims) == len(depths) == len(strides) == len(parc_dims) == len(parc_ffn_dims) == len(parc_depths):
            raise ValueError("dims, depths, strides, parc_dims, parc_ffn_dims and parc_depths need one entry per stage")
        img_size = to_2tuple(img_size)
        sizes = list(zip(_stage_sizes(img_size[0], strides), _stage_sizes(img_size[1], strides)))

        def fusion_block(i: int, dim: int) -> nn.Module | None:
            if not parc_depths[i]:
                return None
            return ParCFusionBlock(dim, parc_dims[i], parc_ffn_dims[i], parc_depths[i], sizes[i], proj_drop_rate)

        self.build_trunk(stem_dim, dims, depths, strides, expand_ratio, final_dim, fusion_block)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if ".pe_" in n}


# Official (cvnets ``edgeformer``) key -> ours, applied in order.
_OFFICIAL_RENAMES = (
    *CVNETS_RENAMES,
    (r"\.dim_adaptive\.0\.", ".conv_kxk."),
    (r"\.dim_adaptive\.1\.block\.conv\.", ".conv_1x1."),
    (r"\.channel_adaptive\.", ".conv_proj."),
    (r"\.local_global_fusion\.", ".conv_fusion."),
    (r"\.spatial_global_rep\.", ".blocks."),
    (r"\.meta_kernel_1_H$", ".branch_hw.kernel_1"),
    (r"\.meta_kernel_2_W$", ".branch_hw.kernel_2"),
    (r"\.meta_pe_1_H$", ".branch_hw.pe_1"),
    (r"\.meta_pe_2_W$", ".branch_hw.pe_2"),
    (r"\.pre_Norm_1\.", ".branch_hw.norm."),
    (r"\.meta_kernel_1_W$", ".branch_wh.kernel_1"),
    (r"\.meta_kernel_2_H$", ".branch_wh.kernel_2"),
    (r"\.meta_pe_1_W$", ".branch_wh.pe_1"),
    (r"\.meta_pe_2_H$", ".branch_wh.pe_2"),
    (r"\.pre_Norm_2\.", ".branch_wh.norm."),
    (r"\.ffn\.0\.", ".norm."),
    (r"\.ffn\.1\.", ".mlp.fc1."),
    (r"\.ffn\.4\.", ".mlp.fc2."),
    (r"\.ca\.fc\.0\.", ".ca.reduce.conv."),
    (r"\.ca\.fc\.1\.", ".ca.reduce.bn."),
    (r"\.ca\.fc\.3\.", ".ca.expand.conv."),
    (r"\.ca\.fc\.4\.", ".ca.expand.bn."),
    (r"\.block\.conv\.", ".conv."),
    (r"\.block\.norm\.", ".bn."),
)


def _official_key(key: str, model: ParCNet) -> str:
    key = rename_key(key, _OFFICIAL_RENAMES)
    # The ParC fusion block's trailing BatchNorm is the last entry of the official ``spatial_global_rep``.
    match = re.match(r"^(stages\.\d+\.\d+)\.blocks\.(\d+)\.(.*)$", key)
    if match and int(match.group(2)) == len(model.get_submodule(match.group(1)).blocks):
        key = f"{match.group(1)}.norm.{match.group(3)}"
    return key


def checkpoint_filter_fn(state_dict: dict, model: ParCNet) -> dict[str, torch.Tensor]:
    """Convert an official (hkzhang91/ParC-Net) checkpoint to this model's layout.

    Unwraps ``model_state_dict`` / ``state_dict`` / ``model`` and ``module.``, renames the cvnets
    keys, drops ``residual.*`` (the official model also registers its last stage's first block
    under that name) and reverses the stem's input channels (BGR-trained) so the model takes RGB.
    Checkpoints in this model's layout pass through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict, ("model_state_dict", "state_dict", "model"))
    if "conv_1.block.conv.weight" not in state_dict:
        return state_dict
    out = {}
    for key, value in state_dict.items():
        if key.startswith("residual."):
            continue
        if key == "conv_1.block.conv.weight":
            value = value.flip(1)
        out[_official_key(key, model)] = value
    return out


_create_parcnet = backbone_creator(ParCNet, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("parcnet"))

register_tiny_kwargs("zoo_parcnet_", img_size=64, stem_dim=8, dims=(8, 16, 16, 24, 32), depths=(1, 1, 1, 1, 1),
                     parc_dims=(0, 0, 16, 16, 32), parc_ffn_dims=(0, 0, 16, 16, 32), parc_depths=(0, 0, 1, 2, 1),
                     final_dim=64)  # fmt: skip


# ParC-Net-S (EdgeFormer-S) is the class's defaults: widths 32-64-96-128-160, ParC blocks 2-4-3 at
# 192/256/320 channels, 256².
register_variants(_create_parcnet, zoo_parcnet_s=dict())
