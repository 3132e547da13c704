"""ParCNetV2: Oversized Kernel with Enhanced Attention (Xu et al., ICCV 2023).

https://arxiv.org/abs/2211.07157

A MetaFormer-style ConvNet (channels-last blocks) whose token mixer is a gated pair of depthwise
convolutions: an *oversized* separable convolution, ``(K, 1)`` then ``(1, K)`` with ``K = 2H - 1``
for the ``H x H`` map of the training resolution and zero padding ``K // 2``, so that every output
sees the whole map and the zero padding breaks shift invariance (an implicit position encoding),
plus a local 7x7 depthwise convolution. The channel mixer is the bifurcate gate unit (BGU),
``fc2(a * GELU(b))`` with ``a, b`` the two halves of ``fc1(x)``.

As in the official code (``interpolate=False`` in every released configuration) the kernel size
is fixed at construction from ``img_size`` and any input size works: on a map smaller than the
training one the taps that only ever meet the zero padding are cropped away (the output is
unchanged), on a larger one the kernel covers less than the whole map. ``kernel_interpolation=True``
is the official ``interpolate=True``: the kernels are bilinearly resized to ``2H - 1`` for every
input. Both large depthwise convolutions run through ``zoo.kernels.depthwise_conv2d``.

Official checkpoints (XuRuihan/ParCNetV2, timm train.py layout) load through
``checkpoint_filter_fn``; no ImageNet weights have been released.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple
from timm.models import generate_default_cfgs

from zoo.kernels import depthwise_conv2d
from zoo.layers.checks import check_per_stage
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["ParCNetV2"]


class CenteredL2Norm(nn.Module):
    """The official ``LayerNormGeneral(bias=False)``: ``w * (x - mean) / max(||x - mean||_2, eps)`` over
    the last (channel) dimension. Unlike LayerNorm it divides by the L2 norm, not the standard
    deviation (a factor ``sqrt(C)`` apart). Computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x.float() - x.float().mean(-1, keepdim=True)
        normed = centered / torch.linalg.vector_norm(centered, dim=-1, keepdim=True).clamp_min(self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class CenteredL2Norm2d(CenteredL2Norm):
    """:class:`CenteredL2Norm` over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Scale(nn.Module):
    """Learnable per-channel scale of a channels-last tensor (the official ``res_scale``)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _crop_center(weight: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """The central ``size`` taps of ``weight`` along ``dim`` (all of them if there are fewer)."""
    excess = weight.shape[dim] - size
    return weight.narrow(dim, excess // 2, size) if excess > 0 else weight


class OversizedConv2d(nn.Module):
    """Depthwise ``(K, 1)`` then ``(1, K)`` convolution with zero padding ``K // 2``, ``K = 2H - 1``.

    ``conv_h`` / ``conv_w`` hold the weights (the official module's names); the convolutions run
    through ``depthwise_conv2d``. With a fixed kernel, taps beyond ``2h - 1`` for an ``h``-row map
    only ever multiply zero padding, so they are cropped. With ``interpolate`` the kernels are
    resized (bilinear, ``align_corners=True``) to ``(2h - 1, 2w - 1)`` as the official
    ``interpolate=True`` does.
    """

    def __init__(self, dim: int, kernel_size: int | tuple[int, int], interpolate: bool = False):
        super().__init__()
        kernel_size = to_2tuple(kernel_size)
        if any(k % 2 != 1 for k in kernel_size):
            raise ValueError(f"the oversized kernel must have odd sizes (2H-1, 2W-1), got {kernel_size}")
        self.kernel_size = kernel_size
        self.interpolate = interpolate
        self.conv_h = nn.Conv2d(dim, dim, (kernel_size[0], 1), groups=dim, bias=False)
        self.conv_w = nn.Conv2d(dim, dim, (1, kernel_size[1]), groups=dim, bias=False)

    def instance_kernels(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        size_h, size_w = 2 * height - 1, 2 * width - 1
        weight_h, weight_w = self.conv_h.weight, self.conv_w.weight
        if self.interpolate:
            weight_h = F.interpolate(weight_h, (size_h, 1), mode="bilinear", align_corners=True)
            weight_w = F.interpolate(weight_w, (1, size_w), mode="bilinear", align_corners=True)
            return weight_h, weight_w
        return _crop_center(weight_h, size_h, 2), _crop_center(weight_w, size_w, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight_h, weight_w = self.instance_kernels(x.shape[-2], x.shape[-1])
        x = depthwise_conv2d(x, weight_h, padding="same")
        return depthwise_conv2d(x, weight_w, padding="same")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, interpolate={self.interpolate}"


class ParCV2Mixer(nn.Module):
    """``pwconv2(a * (Oversized(u) + DW7x7(u)))`` with ``a, b = pwconv1(x)``, ``u = GELU(b)``; channels-last
    in and out."""

    def __init__(self, dim: int, kernel_size: tuple[int, int], local_kernel_size: int = 7, interpolate: bool = False):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, 2 * dim, 1)
        self.act = nn.GELU()
        self.dwconv1 = OversizedConv2d(dim, kernel_size, interpolate)
        self.dwconv2 = DepthwiseConv2d(dim, local_kernel_size, bias=False)
        self.pwconv2 = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, x = self.pwconv1(x.permute(0, 3, 1, 2)).chunk(2, dim=1)
        x = self.act(x)
        x = self.pwconv2(gate * (self.dwconv1(x) + self.dwconv2(x)))
        return x.permute(0, 2, 3, 1)


class BifurcateGateUnit(nn.Module):
    """BGU: ``fc2(a * GELU(b))`` with ``a, b`` the halves of ``fc1(x)`` (hidden ``mlp_ratio * dim``)."""

    def __init__(self, dim: int, mlp_ratio: float = 5.0, drop: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden // 2, dim, bias=False)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.drop2(self.fc2(self.drop1(a * self.act(b))))


class ParCNetV2Block(nn.Module):
    """``x = s1 * x + DropPath(Mixer(N(x)))`` then ``x = s2 * x + DropPath(BGU(N(x)))`` (channels-last);
    the residual scales ``s`` are learnable in the last two stages only."""

    def __init__(
        self,
        dim: int,
        kernel_size: tuple[int, int],
        mlp_ratio: float = 5.0,
        drop_path: float = 0.0,
        res_scale: bool = False,
        interpolate: bool = False,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.norm1 = CenteredL2Norm(dim)
        self.token_mixer = ParCV2Mixer(dim, kernel_size, interpolate=interpolate)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.res_scale1 = Scale(dim) if res_scale else nn.Identity()
        self.norm2 = CenteredL2Norm(dim)
        self.mlp = BifurcateGateUnit(dim, mlp_ratio, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.res_scale2 = Scale(dim) if res_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.drop_path1(self.token_mixer(self.norm1(x)))
        return self.res_scale2(x) + self.drop_path2(self.mlp(self.norm2(x)))


class Stem(nn.Module):
    """7x7 convolution, stride 4, padding 2, then the norm; NCHW in, channels-last out."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, 7, stride=4, padding=2)
        self.norm = CenteredL2Norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """Norm, then a 3x3 convolution with stride 2 and padding 1; channels-last in and out."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = CenteredL2Norm(in_dim)
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ParCNetV2Stage(Stage):
    """Norm + 3x3 stride-2 convolution (except in the first stage), then one ParC V2 block per ``drop_path``
    rate; channels-last."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        kernel_size: tuple[int, int],
        downsample: bool,
        drop_path: list[float],
        res_scale: bool,
        mlp_ratio: float = 5.0,
        interpolate: bool = False,
        proj_drop: float = 0.0,
    ):
        downsampling = Downsample(in_dim, dim) if downsample else nn.Identity()
        blocks = [
            ParCNetV2Block(dim, kernel_size, mlp_ratio, rate, res_scale, interpolate, proj_drop) for rate in drop_path
        ]
        super().__init__(downsampling, blocks)


def stage_sizes(img_size: int, num_stages: int) -> list[int]:
    """Feature-map side of each stage for an ``img_size`` side (stem k7 s4 p2, then k3 s2 p1)."""
    size = (img_size - 3) // 4 + 1
    sizes = [size]
    for _ in range(num_stages - 1):
        size = (size + 1) // 2
        sizes.append(size)
    return sizes


class ParCNetV2(Backbone):
    """ParCNetV2: a stride-4 stem and four stages of ParC V2 blocks (stride 4, 8, 16, 32).

    The oversized kernels are ``2H - 1`` for the stage maps of an ``img_size`` input (111, 55, 27,
    13 at 224). Blocks run channels-last; ``forward_features`` is NCHW. The head pools, applies
    LayerNorm and the classifier.
    """

    output_fmt = "NHWC"
    min_input_size = 3

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        dims: tuple[int, ...] = (64, 128, 320, 512),
        depths: tuple[int, ...] = (3, 3, 12, 3),
        mlp_ratio: float = 5.0,
        res_scale_stages: tuple[bool, ...] = (False, False, True, True),
        kernel_interpolation: bool = False,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(dims=dims, depths=depths, res_scale_stages=res_scale_stages)
        img_size = to_2tuple(img_size)
        self.kernel_sizes = [
            (2 * h - 1, 2 * w - 1)
            for h, w in zip(stage_sizes(img_size[0], len(depths)), stage_sizes(img_size[1], len(depths)))
        ]

        self.stem = Stem(self.in_chans, dims[0])
        self.build_pyramid(
            partial(ParCNetV2Stage, mlp_ratio=mlp_ratio, interpolate=kernel_interpolation, proj_drop=proj_drop_rate),
            dims, depths, drop_path_rate, kernel_size=self.kernel_sizes, res_scale=res_scale_stages,
        )
        self.norm = nn.Identity()
        self.head = self.norm_mlp_classifier_head()
        self.apply(partial(init_trunc_normal, layers=(nn.Conv2d, nn.Linear)))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"head.norm.weight", "head.norm.bias"}

    def final_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's channels-last map, as NCHW (the head's layout)."""
        return x.permute(0, 3, 1, 2)


_OFFICIAL_RENAMES = (
    (r"^downsample_layers\.0\.conv\.", "stem.conv."),
    (r"^downsample_layers\.0\.post_norm\.", "stem.norm."),
    (r"^downsample_layers\.(\d+)\.pre_norm\.", r"stages.\1.downsample.norm."),
    (r"^downsample_layers\.(\d+)\.conv\.", r"stages.\1.downsample.conv."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)


def _resize_kernel(weight: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Bilinear (``align_corners=True``) resize of an oversized kernel, as the official interpolation."""
    return F.interpolate(weight.float(), tuple(target[-2:]), mode="bilinear", align_corners=True).to(weight.dtype)


def checkpoint_filter_fn(state_dict: dict, model: ParCNetV2) -> dict[str, torch.Tensor]:
    """Convert an official (XuRuihan/ParCNetV2) checkpoint to this model's layout.

    Unwraps ``state_dict`` / ``model`` and ``module.``, renames the stem,
    downsampling layers, blocks and head, and resizes oversized kernels trained at another
    resolution to this model's ``2H - 1`` (bilinear, as the official interpolation).
    """
    state_dict = unwrap_checkpoint(state_dict, ("state_dict", "model"))
    if "downsample_layers.0.conv.weight" in state_dict:
        state_dict = rename_keys(state_dict, _OFFICIAL_RENAMES)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if ".dwconv1.conv_" in key and key in target and value.shape != target[key].shape:
            value = _resize_kernel(value, target[key].shape)
        out[key] = value
    return out


_create_parcnetv2 = backbone_creator(ParCNetV2, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("parcnetv2"))

# The official detection/segmentation backbone (XuRuihan/ParCNetV2 `object_detection/backbone/parcnetv2.py`,
# `semantic_segmentation/backbone/parcnetv2.py`): the blocks' norm, `LayerNormGeneral(eps=1e-6, bias=False)`,
# as `norm{i}` on every output map.
downstream_cfg = dict(out_norm=CenteredL2Norm2d)

register_tiny_kwargs("zoo_parcnetv2", img_size=64, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1))


# ParCNetV2-XT/T/S/B at 224² (the oversized kernels follow from the default img_size).
register_variants(
    _create_parcnetv2,
    zoo_parcnetv2_xt=dict(dims=(48, 96, 192, 320), depths=(3, 3, 9, 2)),
    zoo_parcnetv2_t=dict(dims=(64, 128, 320, 512), depths=(3, 3, 12, 3)),
    zoo_parcnetv2_s=dict(dims=(64, 128, 320, 512), depths=(3, 9, 24, 3)),
    zoo_parcnetv2_b=dict(dims=(96, 192, 384, 576), depths=(3, 9, 24, 3)),
)
