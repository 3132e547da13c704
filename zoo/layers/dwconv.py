"""Depthwise convolution module running through ``zoo.kernels.depthwise_conv2d``."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import to_2tuple

from zoo.kernels import depthwise_conv2d

__all__ = ["DepthwiseConv2d"]


class DepthwiseConv2d(nn.Conv2d):
    """A stride-1 ``nn.Conv2d`` with ``groups = channels`` and "same" padding whose forward runs the
    zoo kernel (Triton on CUDA, ``F.conv2d`` elsewhere). Its parameters and state dict keys are
    those of the equivalent ``nn.Conv2d``, so official checkpoints load unchanged.

    ``kernel_size`` is an int or an ``(kh, kw)`` pair of odd sizes (SLaK's 51x5 and 5x51 strips);
    each side is padded by ``dilation * (k - 1) / 2``."""

    def __init__(self, channels: int, kernel_size: int | tuple[int, int], dilation: int = 1, bias: bool = True):
        kernel_size = to_2tuple(kernel_size)
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"DepthwiseConv2d needs odd kernel sizes for symmetric padding, got {kernel_size}")
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=tuple(dilation * (k - 1) // 2 for k in kernel_size),
            dilation=dilation,
            groups=channels,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, padding=self.padding, dilation=self.dilation)
