"""Structural re-parameterization of large-kernel depthwise convolutions (RepLKNet, SLaK, UniRepLKNet).

At training time a large depthwise kernel runs beside smaller ones, each followed by BatchNorm; at
inference the branches are one convolution. With BN in eval mode, ``BN(W * x) = (W * g/s) * x +
(b - m g/s)`` (``s = sqrt(var + eps)``; RepLKNet, Ding et al. 2022, Eq. 1-2), and depthwise
convolutions with the same centre and "same" padding add up as their kernels do once the smaller
ones are zero-padded to the large size. A dilated ``k x k`` kernel of rate ``r`` is the dense
``((k - 1) r + 1)``-sized kernel with zeros between its taps (UniRepLKNet, Ding et al. 2024, Sec. 3.2).

The helpers (``fuse_bn``, ``pad_kernel``, ``dilate_kernel``, ``depthwise_conv_like``) work on
tensors so that any branch structure can be folded with them; ``ReparamLargeKernelConv`` is the
RepLKNet / SLaK module, ``DilatedReparamBlock`` UniRepLKNet's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple

from .dwconv import DepthwiseConv2d

__all__ = [
    "DILATED_BRANCHES", "DepthwiseConvBn", "DilatedReparamBlock", "ReparamLargeKernelConv", "depthwise_conv_like",
    "dilate_kernel", "fuse_bn", "pad_kernel",
]

_BRANCHES = ("lkb_origin", "LoRA1", "LoRA2", "small_conv")


def fuse_bn(weight: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None):
    """The weight and bias of ``bn(conv(x))`` as one convolution (``bn`` in eval mode)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.running_mean if bias is None else bn.running_mean - bias
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), bn.bias - shift * scale


def pad_kernel(kernel: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Zero-pad a ``(..., kh, kw)`` kernel on all sides to ``size``, keeping it centred (odd sizes)."""
    size = to_2tuple(size)
    pad_h, pad_w = (s - k for s, k in zip(size, kernel.shape[-2:]))
    if pad_h < 0 or pad_w < 0 or pad_h % 2 or pad_w % 2:
        raise ValueError(f"cannot centre a {tuple(kernel.shape[-2:])} kernel in {size}: sizes must be odd and larger")
    return F.pad(kernel, (pad_w // 2, pad_w // 2, pad_h // 2, pad_h // 2))


def dilate_kernel(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """The dense kernel equal to ``kernel`` applied with ``dilation``: its taps spread ``dilation``
    apart, zeros between."""
    kh, kw = kernel.shape[-2:]
    dense = kernel.new_zeros(*kernel.shape[:-2], (kh - 1) * dilation + 1, (kw - 1) * dilation + 1)
    dense[..., ::dilation, ::dilation] = kernel
    return dense


def depthwise_conv_like(kernel: torch.Tensor, bias: torch.Tensor) -> DepthwiseConv2d:
    """A "same" depthwise convolution with bias holding ``kernel`` (``(C, 1, kh, kw)``) and ``bias``."""
    conv = DepthwiseConv2d(kernel.shape[0], tuple(kernel.shape[-2:])).to(kernel)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv


class DepthwiseConvBn(nn.Module):
    """Depthwise "same" convolution without bias, then BatchNorm (state dict ``conv.weight``, ``bn.*``)."""

    def __init__(self, channels: int, kernel_size: int | tuple[int, int]):
        super().__init__()
        self.conv = DepthwiseConv2d(channels, kernel_size, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_bn(self.conv.weight, self.bn)


class ReparamLargeKernelConv(nn.Module):
    """Sum of depthwise conv-BN branches: a ``K x K`` kernel (``lkb_origin``), or SLaK's decomposition
    into ``K x s`` and ``s x K`` strips (``LoRA1``, ``LoRA2``), plus an optional ``s x s`` kernel
    (``small_conv``). Every branch keeps the map size, as the official implicit-GEMM convolution does
    (the ``K x s`` strip pads ``(K // 2, s // 2)``).

    ``reparameterize()`` replaces the branches with one ``K x K`` depthwise convolution with bias,
    ``lkb_reparam``: the official codes' deployed layout. Branch names are the official ones, so both
    forms load official state dicts as they are.
    """

    def __init__(self, channels: int, kernel_size: int, small_kernel: int | None = None, decomposed: bool = False):
        super().__init__()
        if small_kernel is not None and (small_kernel > kernel_size or small_kernel % 2 == 0):
            raise ValueError(f"small_kernel must be odd and at most kernel_size {kernel_size}, got {small_kernel}")
        if decomposed and small_kernel is None:
            raise ValueError("a decomposed large kernel needs small_kernel, the short side of its strips")
        self.channels = channels
        self.kernel_size = kernel_size
        if decomposed:
            self.LoRA1 = DepthwiseConvBn(channels, (kernel_size, small_kernel))
            self.LoRA2 = DepthwiseConvBn(channels, (small_kernel, kernel_size))
        else:
            self.lkb_origin = DepthwiseConvBn(channels, kernel_size)
        if small_kernel is not None:
            self.small_conv = DepthwiseConvBn(channels, small_kernel)

    def branches(self) -> list[DepthwiseConvBn]:
        return [getattr(self, name) for name in _BRANCHES if hasattr(self, name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "lkb_reparam"):
            return self.lkb_reparam(x)
        out = None
        for branch in self.branches():
            out = branch(x) if out is None else out + branch(x)
        return out

    def merged_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``K x K`` kernel and bias equal to the sum of the branches (BN in eval mode)."""
        kernel, bias = 0, 0
        for branch in self.branches():
            k, b = branch.fused_kernel_bias()
            kernel = kernel + pad_kernel(k, self.kernel_size)
            bias = bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches into ``lkb_reparam`` in place (a no-op once folded)."""
        if hasattr(self, "lkb_reparam"):
            return
        self.lkb_reparam = depthwise_conv_like(*self.merged_kernel_bias())
        for branch in _BRANCHES:
            if hasattr(self, branch):
                delattr(self, branch)


# The (kernel size, dilation) of the dilated branches beside a K x K kernel (UniRepLKNet's defaults).
DILATED_BRANCHES = {
    17: ((5, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    11: ((5, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    9: ((5, 1), (5, 2), (3, 3), (3, 4)),
    7: ((5, 1), (3, 2), (3, 3)),
    5: ((3, 1), (3, 2)),
}


class DilatedReparamBlock(nn.Module):
    """UniRepLKNet's dilated re-param block (Ding et al. 2024, Sec. 3.2): a ``K x K`` depthwise kernel
    and BatchNorm (``lk_origin``, ``origin_bn``) beside small dilated depthwise kernels, each with its
    BatchNorm (``dil_conv_k{k}_{r}``, ``dil_bn_k{k}_{r}``; the branches of ``DILATED_BRANCHES[K]``),
    summed. A ``k x k`` kernel of dilation ``r`` covers ``(k - 1) r + 1 <= K`` pixels.

    ``reparameterize()`` folds the BatchNorms, spreads each dilated kernel to its dense equivalent,
    pads it to ``K`` and adds it: ``lk_origin`` becomes one ``K x K`` convolution with bias, the
    official deployed layout. Names are the official ones, so both forms load official state dicts.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(f"kernel_size must be one of {sorted(DILATED_BRANCHES)}, got {kernel_size}")
        self.branch_specs = DILATED_BRANCHES[kernel_size]
        self.lk_origin = DepthwiseConv2d(channels, kernel_size, bias=False)
        self.origin_bn = nn.BatchNorm2d(channels)
        for k, r in self.branch_specs:
            setattr(self, f"dil_conv_k{k}_{r}", DepthwiseConv2d(channels, k, dilation=r, bias=False))
            setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def dilated_branches(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(getattr(self, f"dil_conv_k{k}_{r}"), getattr(self, f"dil_bn_k{k}_{r}")) for k, r in self.branch_specs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "origin_bn"):
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for conv, bn in self.dilated_branches():
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches and BatchNorms into ``lk_origin`` in place (a no-op once folded)."""
        if not hasattr(self, "origin_bn"):
            return
        size = self.lk_origin.kernel_size
        kernel, bias = fuse_bn(self.lk_origin.weight, self.origin_bn)
        for conv, bn in self.dilated_branches():
            branch_kernel, branch_bias = fuse_bn(conv.weight, bn)
            kernel = kernel + pad_kernel(dilate_kernel(branch_kernel, conv.dilation[0]), size)
            bias = bias + branch_bias
        self.lk_origin = depthwise_conv_like(kernel, bias)
        del self.origin_bn
        for k, r in self.branch_specs:
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
