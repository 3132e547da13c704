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

import re
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    DropPath,
    LayerNorm2d,
    Mlp,
    NormMlpClassifierHead,
    calculate_drop_path_rates,
    to_2tuple,
    trunc_normal_,
)
from timm.models import checkpoint_seq, generate_default_cfgs
from timm.models._features import feature_take_indices

from zoo.hub import build_model_with_cfg
from zoo.layers.checks import check_image_batch
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.precision import autocast_disabled
from zoo.weights import pretrained_cfgs

from ._registry import register_model, register_tiny_kwargs

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


class HorNetStage(nn.Module):
    """LayerNorm + 2x2 stride-2 convolution (except in the first stage), then ``depth`` HorNet blocks."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        downsample: bool,
        order: int,
        filter_size: tuple[int, int] | None = None,
        scale: float = 1.0 / 3,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: list[float] | None = None,
        layer_scale_init_value: float = 1e-6,
    ):
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, 2, stride=2))
        else:
            self.downsample = nn.Identity()
        drop_path = drop_path or [0.0] * depth
        self.blocks = nn.Sequential(
            *[
                HorNetBlock(
                    dim,
                    order,
                    filter_size,
                    scale,
                    mlp_ratio=mlp_ratio,
                    drop=drop,
                    drop_path=drop_path[i],
                    layer_scale_init_value=layer_scale_init_value,
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class HorNet(nn.Module):
    """HorNet: 4x4 patchify stem, four stages of gnConv blocks at strides 4-32, GAP -> LN -> linear head.

    ``img_size`` only sets the size of the global filters (the frequency grid of the stage's map at
    that input size); any input size of at least 32x32 works.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        base_dim: int = 64,
        depths: tuple[int, ...] = (2, 3, 18, 2),
        orders: tuple[int, ...] = (2, 3, 4, 5),
        global_filter_stages: tuple[int, ...] = (),
        scale: float = 1.0 / 3,
        mlp_ratio: float = 4.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if len(depths) != len(orders):
            raise ValueError(f"depths {depths} and orders {orders} need one entry per stage")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        img_size = to_2tuple(img_size)
        dims = [base_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]

        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            reduction = 4 * 2**i
            filter_size = None
            if i in global_filter_stages:
                height, width = img_size[0] // reduction, img_size[1] // reduction
                filter_size = (height, width // 2 + 1)
            stages.append(
                HorNetStage(
                    dims[max(i - 1, 0)],
                    dims[i],
                    depth,
                    downsample=i > 0,
                    order=orders[i],
                    filter_size=filter_size,
                    scale=scale,
                    mlp_ratio=mlp_ratio,
                    drop=proj_drop_rate,
                    drop_path=drop_path[i],
                    layer_scale_init_value=layer_scale_init_value,
                )
            )
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=partial(LayerNorm2d, eps=1e-6),
        )
        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):
            self.head.fc.weight.data.mul_(head_init_scale)
            self.head.fc.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)
        if global_pool is not None:
            self.global_pool = global_pool

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans, 32, type(self).__name__)
        return self.stem(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Run the stages, returning the outputs of ``indices`` (NCHW) and, unless
        ``intermediates_only``, the final features. The final LayerNorm acts on pooled features
        (it belongs to the head), so ``norm`` changes nothing."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        intermediates = []
        x = self._stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and head) that the intermediates at ``indices`` do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.head.reset(0, pool_type="", reset_other=True)
            self.num_classes, self.global_pool = 0, ""
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` image -> ``(B, C', H/32, W/32)`` features (before pooling and the final norm)."""
        return self.stages(self._stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_OFFICIAL_RENAMES = (
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.pwconv([12])\.", r".mlp.fc\1."),
    (r"^head\.", "head.fc."),
    (r"^norm\.", "head.norm."),
)


def checkpoint_filter_fn(state_dict: dict, model: HorNet) -> dict[str, torch.Tensor]:
    """Convert an official HorNet checkpoint (``{'model': ...}``, a ``module.``-prefixed or a bare state
    dict) to this model's layout, resizing global filters trained at another size to the model's."""
    state_dict = state_dict.get("model", state_dict)
    state_dict = state_dict.get("state_dict", state_dict)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    official_layout = "downsample_layers.0.0.weight" in state_dict
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if official_layout:
            for pattern, replacement in _OFFICIAL_RENAMES:
                key = re.sub(pattern, replacement, key)
        if key.endswith("complex_weight") and key in target and value.shape != target[key].shape:
            value = resize_complex_weight(value.float(), target[key].shape[1:3])
        out[key] = value
    return out


def _create_hornet(variant: str, pretrained: bool = False, **kwargs) -> HorNet:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 3, 18, 2))))))
    return build_model_with_cfg(
        HorNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


default_cfgs = generate_default_cfgs(pretrained_cfgs("hornet"))

register_tiny_kwargs("zoo_hornet", img_size=64, base_dim=16, depths=(1, 1, 1, 1))

_GF = dict(global_filter_stages=(2, 3))


@register_model
def zoo_hornet_tiny(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-T (7x7): C=64, depths 2-3-18-2, gnConv orders 2-5."""
    args = dict(base_dim=64, depths=(2, 3, 18, 2))
    return _create_hornet("zoo_hornet_tiny", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_tiny_gf(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-T (GF): C=64, depths 2-3-18-2, global-local filters in stages 3-4."""
    args = dict(base_dim=64, depths=(2, 3, 18, 2), **_GF)
    return _create_hornet("zoo_hornet_tiny_gf", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_small(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-S (7x7): C=96, depths 2-3-18-2."""
    args = dict(base_dim=96, depths=(2, 3, 18, 2))
    return _create_hornet("zoo_hornet_small", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_small_gf(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-S (GF): C=96, depths 2-3-18-2, global-local filters in stages 3-4."""
    args = dict(base_dim=96, depths=(2, 3, 18, 2), **_GF)
    return _create_hornet("zoo_hornet_small_gf", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_base(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-B (7x7): C=128, depths 2-3-18-2."""
    args = dict(base_dim=128, depths=(2, 3, 18, 2))
    return _create_hornet("zoo_hornet_base", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_base_gf(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-B (GF): C=128, depths 2-3-18-2, global-local filters in stages 3-4."""
    args = dict(base_dim=128, depths=(2, 3, 18, 2), **_GF)
    return _create_hornet("zoo_hornet_base_gf", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_large(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-L (7x7): C=192, depths 2-3-18-2 (ImageNet-22k)."""
    args = dict(base_dim=192, depths=(2, 3, 18, 2))
    return _create_hornet("zoo_hornet_large", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_large_gf(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-L (GF): C=192, depths 2-3-18-2, global-local filters in stages 3-4 (ImageNet-22k)."""
    args = dict(base_dim=192, depths=(2, 3, 18, 2), **_GF)
    return _create_hornet("zoo_hornet_large_gf", pretrained, **dict(args, **kwargs))


@register_model
def zoo_hornet_large_gf_384(pretrained: bool = False, **kwargs) -> HorNet:
    """HorNet-L (GF) at 384x384: global filters sized 24x13 and 12x7 (ImageNet-22k)."""
    args = dict(img_size=384, base_dim=192, depths=(2, 3, 18, 2), **_GF)
    return _create_hornet("zoo_hornet_large_gf_384", pretrained, **dict(args, **kwargs))
