"""AFFNet: Adaptive Frequency Filters As Efficient Global Token Mixers (Huang et al., ICCV 2023).

https://arxiv.org/abs/2307.14008

A MobileViT-like network: MobileNetV2 inverted residuals, and in the last three stages an AFF
layer in place of MobileViT's transformer. An AFF block mixes locally with an inverted residual,
then globally with the AFF token mixer: the map is moved to the frequency domain, multiplied by a
mask that a block-diagonal complex MLP predicts from the spectrum itself (a semantic-adaptive
filter, paper Sec. 3), and moved back. The filter holds no spatial parameter, so the
model takes any input size as it is: nothing is tied to the training resolution.

Official checkpoints (microsoft/TokenMixers, ``Adaptive Frequency Filters/``; cvnets layout) load
through ``checkpoint_filter_fn``. The official configuration files are not in git; this model uses
the settings of the MobileViT configurations the official code derives from: BatchNorm, SiLU
(``swish``, also inside the filter's mask MLP) and cvnets' ``layer_norm`` in the AFF layers (which
adds ``eps`` to the standard deviation), with ``attn_norm="layer_norm_2d"`` for GroupNorm(1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct, DropPath, GroupNorm1, calculate_drop_path_rates
from timm.models import generate_default_cfgs
from timm.models._efficientnet_blocks import InvertedResidual

from zoo.layers.precision import autocast_disabled
from zoo.layers.spectral import block_complex_linear
from zoo.weights import pretrained_cfgs

from ._backbone import backbone_creator
from ._cvnets import CVNETS_RENAMES, CvnetsBackbone
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import rename_keys, unwrap_checkpoint

__all__ = ["AFFNet", "AdaptiveFrequencyFilter", "StdLayerNorm2d"]


class StdLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map as cvnets' ``layer_norm`` computes it:
    ``(x - mean) / (std + eps)``, ``eps`` added to the (biased) standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / (std + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


_ATTN_NORMS = {"layer_norm": StdLayerNorm2d, "layer_norm_2d": GroupNorm1}


class AdaptiveFrequencyFilter(nn.Module):
    """The AFF token mixer on NCHW maps (paper Sec. 3): ``x + irfft2(X * M(X))`` with ``X = rfft2(x)``
    (orthonormal) and the mask ``M = softshrink(W2 act(W1 X + b1) + b2)``, ``W1, W2`` block-diagonal
    complex linear layers over ``num_blocks`` channel groups. Computed in float32 under any autocast."""

    def __init__(self, dim: int, num_blocks: int = 8, act_layer: type[nn.Module] = nn.SiLU,
                 sparsity_threshold: float = 0.01):
        super().__init__()
        if dim % num_blocks:
            raise ValueError(f"num_blocks {num_blocks} must divide the width {dim}")
        self.num_blocks = num_blocks
        self.sparsity_threshold = sparsity_threshold
        block = dim // num_blocks
        self.w1 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block, block))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block, block))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, num_blocks, block))
        self.act = act_layer()

    def mask(self, freq: torch.Tensor) -> torch.Tensor:
        """The complex mask of a ``(B, H, W', C)`` spectrum."""
        blocks = freq.unflatten(-1, (self.num_blocks, -1))
        real, imag = block_complex_linear(blocks.real, blocks.imag, self.w1.float(), self.b1.float())
        real, imag = block_complex_linear(self.act(real), self.act(imag), self.w2.float(), self.b2.float())
        real = F.softshrink(real, self.sparsity_threshold)
        imag = F.softshrink(imag, self.sparsity_threshold)
        return torch.complex(real, imag).flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if x.shape[0] == 0:  # MKL's FFT refuses an empty batch
            return x
        with autocast_disabled(x.device.type):
            freq = torch.fft.rfft2(x.float().permute(0, 2, 3, 1), dim=(1, 2), norm="ortho")
            filtered = freq * self.mask(freq)
            out = torch.fft.irfft2(filtered, s=(height, width), dim=(1, 2), norm="ortho").permute(0, 3, 1, 2)
        return out.to(x.dtype) + x


class AFFBlock(nn.Module):
    """``x + DropPath(AFF(norm2(MV2(norm1(x)))))``: local mixing by an inverted residual (``mlp_ratio``
    expansion, its own skip), then global mixing by the adaptive frequency filter (its own skip)."""

    def __init__(self, dim: int, mlp_ratio: float, attn_norm: type[nn.Module], act_layer: type[nn.Module],
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = attn_norm(dim)
        self.mlp = InvertedResidual(dim, dim, exp_ratio=mlp_ratio, act_layer=act_layer)
        self.norm2 = attn_norm(dim)
        self.filter = AdaptiveFrequencyFilter(dim, act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.filter(self.norm2(self.mlp(self.norm1(x)))))


class AFFLayer(nn.Module):
    """The official ``AFFBlock``, laid out like MobileViT's block: AFF blocks and a norm, a 1x1
    projection (no activation), then a 1x1 convolution fusing it with the layer input (concatenated)."""

    def __init__(self, dim: int, mlp_ratio: float, depth: int, attn_norm: type[nn.Module],
                 act_layer: type[nn.Module], drop_path: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(*[AFFBlock(dim, mlp_ratio, attn_norm, act_layer, rate) for rate in drop_path])
        self.norm = attn_norm(dim)
        self.conv_proj = ConvNormAct(dim, dim, 1, apply_act=False)
        self.fusion = ConvNormAct(2 * dim, dim, 1, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_proj(self.norm(self.blocks(x)))
        return self.fusion(torch.cat((shortcut, x), dim=1))


class AFFNet(CvnetsBackbone):
    """AFFNet: stride-2 stem, five stages (strides 2 to 32) of inverted residuals, the last three
    ending in an AFF layer, then a 1x1 expansion, pooling and the classifier. A stage is a plain
    sequence of blocks; there is no final norm, the 1x1 expansion ``final_conv`` follows the stages."""

    def __init__(
        self,
        stem_dim: int = 16,
        dims: tuple[int, ...] = (32, 64, 128, 256, 320),
        depths: tuple[int, ...] = (1, 3, 1, 1, 1),
        strides: tuple[int, ...] = (1, 2, 2, 2, 2),
        aff_depths: tuple[int, ...] = (0, 0, 2, 4, 3),
        expand_ratio: float = 4.0,
        mlp_ratio: float = 2.0,
        final_dim: int = 960,
        attn_norm: str = "layer_norm",
        act_layer: type[nn.Module] = nn.SiLU,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not len(dims) == len(depths) == len(strides) == len(aff_depths):
            raise ValueError("dims, depths, strides and aff_depths need one entry per stage")
        if attn_norm not in _ATTN_NORMS:
            raise ValueError(f"attn_norm must be one of {sorted(_ATTN_NORMS)}, got {attn_norm!r}")
        norm = _ATTN_NORMS[attn_norm]
        drop_path = calculate_drop_path_rates(drop_path_rate, list(aff_depths), stagewise=True)

        def aff_layer(i: int, dim: int) -> nn.Module | None:
            return AFFLayer(dim, mlp_ratio, aff_depths[i], norm, act_layer, drop_path[i]) if aff_depths[i] else None

        self.build_trunk(stem_dim, dims, depths, strides, expand_ratio, final_dim, aff_layer, act_layer)


# Official (cvnets ``affnet``) key -> ours, applied in order.
_OFFICIAL_RENAMES = (
    *CVNETS_RENAMES,
    (r"\.global_rep\.\d+\.(weight|bias)$", r".norm.\1"),  # the norm after the AFF blocks
    (r"\.global_rep\.", ".blocks."),
    (r"\.block\.conv\.", ".conv."),
    (r"\.block\.norm\.", ".bn."),
)


def checkpoint_filter_fn(state_dict: dict, model: AFFNet) -> dict[str, torch.Tensor]:
    """Convert an official (microsoft/TokenMixers AFFNet, cvnets) checkpoint to this model's layout.

    Unwraps ``model_state_dict`` / ``state_dict`` / ``model`` and ``module.`` and renames the cvnets
    keys. Checkpoints in this model's layout pass through unchanged.
    """
    state_dict = unwrap_checkpoint(state_dict, ("model_state_dict", "state_dict", "model"))
    if "conv_1.block.conv.weight" not in state_dict:
        return state_dict
    return rename_keys(state_dict, _OFFICIAL_RENAMES)


_create_affnet = backbone_creator(AFFNet, checkpoint_filter_fn)

default_cfgs = generate_default_cfgs(pretrained_cfgs("affnet"))

register_tiny_kwargs("zoo_affnet", stem_dim=8, dims=(8, 16, 16, 16, 32), depths=(1, 1, 1, 1, 1),
                     aff_depths=(0, 0, 1, 1, 1), expand_ratio=2.0, final_dim=64)  # fmt: skip


# AFFNet-ET, AFFNet-T and AFFNet (the official modes ``xx_small``, ``x_small`` and ``small``), at 256²: the
# stage widths and the MobileNetV2 expansion; the 1x1 expansion is 4x the last width, at most 960.
register_variants(
    _create_affnet,
    zoo_affnet_et=dict(dims=(32, 48, 64, 104, 144), expand_ratio=2.0, final_dim=576),
    zoo_affnet_t=dict(dims=(32, 48, 96, 160, 192), expand_ratio=4.0, final_dim=768),
    zoo_affnet=dict(dims=(32, 64, 128, 256, 320), expand_ratio=4.0, final_dim=960),
)
