"""HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions (Rao et al., NeurIPS 2022).

https://arxiv.org/abs/2207.14284

A ConvNeXt macro design whose token mixer is the recursive gated convolution gnConv (paper
Sec. 3.1): a 1x1 projection splits the input into ``p0`` and the gates ``q_0..q_{n-1}``, a
depthwise 7x7 convolution (or a global-local filter in the GF variants) mixes the gates
spatially, ``p_{k+1} = f_k(p_k) * q_k`` recurses over orders 2-5 (stages 1-4) with channel
widths ``C / 2^(n-1), ..., C / 2, C``, and the gates are scaled by 1/3. The depthwise convolutions run through
``zoo.kernels.depthwise_conv2d``. The GF variants' global filter (stages 3-4) is learned in the
frequency domain at the map size of ``img_size``; like the official code it is bilinearly
resized for any other size, and the FFTs always run in fp32, also under autocast.

Official checkpoints (raoyongming/HorNet) load through ``checkpoint_filter_fn``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    LayerNorm2d,
    Mlp,
    calculate_drop_path_rates,
    to_2tuple,
    trunc_normal_,
)
from timm.models import generate_default_cfgs

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.precision import autocast_disabled
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal, pyramid_feature_info
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import CONVNEXT_RENAMES, rename_keys, unwrap_checkpoint

__all__ = ["HorNet"]


def resize_complex_weight(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a ``(C, h, w, 2)`` frequency-domain filter to ``(C, *size, 2)`` (align_corners,
    real and imaginary parts separately), as the official code does for other input sizes."""
    weight = F.interpolate(weight.permute(3, 0, 1, 2), size=size, mode="bilinear", align_corners=True)
    return weight.permute(1, 2, 3, 0)


class GlobalLocalFilter(nn.Module):
    """Half of the channels through a 3x3 depthwise conv, half through a learned global filter
    (``irfft2(rfft2(x) * W)``), interleaved channel by channel, between two LayerNorms."""

    def __init__(self, dim: int, filter_size: tuple[int, int]):
        super().__init__()
        self.dw = DepthwiseConv2d(dim // 2, 3, bias=False)
        self.complex_weight = nn.Parameter(torch.zeros(dim // 2, *filter_size, 2))
        trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def _global_filter(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if x.shape[0] == 0:  # MKL's FFT refuses an empty batch
            return x.float()
        with autocast_disabled(x.device.type):
            freq = torch.fft.rfft2(x.float(), dim=(2, 3), norm="ortho")
            weight = self.complex_weight.float()
            if weight.shape[1:3] != freq.shape[2:4]:
                weight = resize_complex_weight(weight, freq.shape[2:4])
            freq = freq * torch.view_as_complex(weight.contiguous())
            return torch.fft.irfft2(freq, s=(height, width), dim=(2, 3), norm="ortho")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, spectral = self.pre_norm(x).chunk(2, dim=1)
        local = self.dw(local)
        spectral = self._global_filter(spectral).to(local.dtype)
        return self.post_norm(torch.stack((local, spectral), dim=2).flatten(1, 2))


class GnConv(nn.Module):
    """Recursive gated convolution of order ``order`` (paper Sec. 3.1)."""

    def __init__(self, dim: int, order: int, filter_size: tuple[int, int] | None = None, scale: float = 1.0 / 3):
        super().__init__()
        if dim % 2 ** (order - 1):
            raise ValueError(f"gnConv of order {order} needs a width divisible by {2 ** (order - 1)}, got {dim}")
        self.dims = [dim // 2**i for i in reversed(range(order))]
        gate_dim = sum(self.dims)
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        if filter_size is None:
            self.dwconv = DepthwiseConv2d(gate_dim, 7)
        else:
            self.dwconv = GlobalLocalFilter(gate_dim, filter_size)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, gates = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(gates) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for pw, gate in zip(self.pws, gates[1:]):
            p = pw(p) * gate
        return self.proj_out(p)


class HorNetBlock(nn.Module):
    """``x + g1 * gnConv(LN(x))`` then a channels-last MLP ``x + g2 * Mlp(LN(x))`` (layer scale 1e-6)."""

    def __init__(
        self,
        dim: int,
        order: int,
        filter_size: tuple[int, int] | None = None,
        scale: float = 1.0 / 3,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, filter_size, scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1[:, None, None] * self.gnconv(self.norm1(x)))
        y = self.gamma2 * self.mlp(self.norm2(x.permute(0, 2, 3, 1)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class HorNetStage(Stage):
    """LayerNorm + 2x2 stride-2 convolution (except in the first stage), then ``depth`` blocks
    ``HorNetBlock(dim, order, drop_path=drop_path[i], **block_kwargs)``."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, order: int,
                 drop_path: list[float] | None = None, **block_kwargs):
        downsampling = nn.Identity()
        if downsample:
            downsampling = nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, 2, stride=2))
        drop_path = drop_path or [0.0] * depth
        super().__init__(downsampling, [HorNetBlock(dim, order, drop_path=dp, **block_kwargs) for dp in drop_path])


def _global_filter_size(img_size: tuple[int, int], reduction: int) -> tuple[int, int]:
    """The ``rfft2`` grid ``(H, W // 2 + 1)`` of the ``H x W`` map at stride ``reduction`` of an ``img_size`` input."""
    height, width = img_size[0] // reduction, img_size[1] // reduction
    return height, width // 2 + 1


class HorNet(Backbone):
    """HorNet: 4x4 patchify stem, four stages of gnConv blocks at strides 4-32, GAP -> LN -> linear head.

    ``img_size`` only sets the size of the global filters (the frequency grid of the stage's map at
    that input size); any input size of at least 32x32 works. The final LayerNorm acts on the pooled
    features, in the head.
    """

    min_input_size = 32

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        base_dim: int = 64,
        depths: tuple[int, ...] = (2, 3, 18, 2),
        orders: tuple[int, ...] = (2, 3, 4, 5),
        global_filter_stages: tuple[int, ...] = (),
        scale: float = 1.0 / 3,
        mlp_ratio: float = 4.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(depths) != len(orders):
            raise ValueError(f"depths {depths} and orders {orders} need one entry per stage")
        img_size = to_2tuple(img_size)
        dims = [base_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]

        self.stem = nn.Sequential(nn.Conv2d(self.in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.stages = nn.Sequential(*[
            HorNetStage(
                dims[max(i - 1, 0)],
                dims[i],
                depth,
                downsample=i > 0,
                order=orders[i],
                drop_path=drop_path[i],
                filter_size=_global_filter_size(img_size, 4 * 2**i) if i in global_filter_stages else None,
                scale=scale,
                mlp_ratio=mlp_ratio,
                drop=proj_drop_rate,
                layer_scale_init_value=layer_scale_init_value,
            )
            for i, depth in enumerate(depths)
        ])
        self.feature_info = pyramid_feature_info(dims)
        self.norm = nn.Identity()
        self.head = self.norm_mlp_classifier_head()
        self.apply(partial(init_trunc_normal, layers=(nn.Conv2d, nn.Linear)))
        if isinstance(self.head.fc, nn.Linear):
            self.head.fc.weight.data.mul_(head_init_scale)
            self.head.fc.bias.data.mul_(head_init_scale)


_OFFICIAL_RENAMES = (
    *CONVNEXT_RENAMES,
    (r"\.pwconv([12])\.", r".mlp.fc\1."),
    (r"^head\.", "head.fc."),
    (r"^norm\.", "head.norm."),
)


def checkpoint_filter_fn(state_dict: dict, model: HorNet) -> dict[str, torch.Tensor]:
    """Convert an official HorNet checkpoint (``{'model': ...}``, a ``module.``-prefixed or a bare state
    dict) to this model's layout, resizing global filters trained at another size to the model's."""
    state_dict = unwrap_checkpoint(state_dict)
    if "downsample_layers.0.0.weight" in state_dict:
        state_dict = rename_keys(state_dict, _OFFICIAL_RENAMES)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith("complex_weight") and key in target and value.shape != target[key].shape:
            value = resize_complex_weight(value.float(), target[key].shape[1:3])
        out[key] = value
    return out


_create_hornet = backbone_creator(HorNet, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("hornet"))

# The official detection/segmentation backbone (raoyongming/HorNet `object_detection/models/hornet.py`): a
# channels-first LayerNorm (eps 1e-6) `norm{i}` on every output map.
downstream_cfg = dict(out_norm=LayerNorm2d)

register_tiny_kwargs("zoo_hornet", img_size=64, base_dim=16, depths=(1, 1, 1, 1))

# HorNet-T/S/B/L (paper Table 1: C, depths 2-3-18-2, gnConv orders 2-5) with 7x7 depthwise gates, or with
# global-local filters in stages 3-4 (_gf); HorNet-L is pre-trained on ImageNet-22k, and large_gf_384 at 384²
# has global filters sized 24x13 and 12x7.
_GF = dict(global_filter_stages=(2, 3))
register_variants(
    _create_hornet,
    zoo_hornet_tiny=dict(base_dim=64),
    zoo_hornet_tiny_gf=dict(base_dim=64, **_GF),
    zoo_hornet_small=dict(base_dim=96),
    zoo_hornet_small_gf=dict(base_dim=96, **_GF),
    zoo_hornet_base=dict(base_dim=128),
    zoo_hornet_base_gf=dict(base_dim=128, **_GF),
    zoo_hornet_large=dict(base_dim=192),
    zoo_hornet_large_gf=dict(base_dim=192, **_GF),
    zoo_hornet_large_gf_384=dict(base_dim=192, img_size=384, **_GF),
)
