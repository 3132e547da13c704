"""Structural re-parameterization of large-kernel depthwise convolutions (RepLKNet, SLaK, UniRepLKNet).

At training time a large depthwise kernel runs beside smaller ones, each followed by BatchNorm; at
inference the branches are one convolution. With BN in eval mode, ``BN(W * x) = (W * g/s) * x +
(b - m g/s)`` (``s = sqrt(var + eps)``; RepLKNet, Ding et al. 2022, Eq. 1-2), and depthwise
convolutions with the same centre and "same" padding add up as their kernels do once the smaller
ones are zero-padded to the large size. A dilated ``k x k`` kernel of rate ``r`` is the dense
``((k - 1) r + 1)``-sized kernel with zeros between its taps (UniRepLKNet, Ding et al. 2024, Sec. 3.2).

The helpers (``fuse_bn``, ``pad_kernel``, ``dilate_kernel``) work on tensors so that any branch
structure can be folded with them; ``ReparamLargeKernelConv`` is the RepLKNet / SLaK module.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple

from .dwconv import DepthwiseConv2d

__all__ = ["DepthwiseConvBn", "ReparamLargeKernelConv", "dilate_kernel", "fuse_bn", "pad_kernel"]

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
        kernel, bias = self.merged_kernel_bias()
        self.lkb_reparam = DepthwiseConv2d(self.channels, self.kernel_size).to(kernel)
        self.lkb_reparam.weight.copy_(kernel)
        self.lkb_reparam.bias.copy_(bias)
        for branch in _BRANCHES:
            if hasattr(self, branch):
                delattr(self, branch)
