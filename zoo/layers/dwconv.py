"""Depthwise convolution module running through ``zoo.kernels.depthwise_conv2d``."""

from __future__ import annotations

import torch
import torch.nn as nn

from zoo.kernels import depthwise_conv2d

__all__ = ["DepthwiseConv2d"]


class DepthwiseConv2d(nn.Conv2d):
    """A stride-1 ``nn.Conv2d`` with ``groups = channels`` and "same" padding whose forward runs the
    zoo kernel (Triton on CUDA, ``F.conv2d`` elsewhere). Its parameters and state dict keys are
    those of the equivalent ``nn.Conv2d``, so official checkpoints load unchanged."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f"DepthwiseConv2d needs an odd kernel size for symmetric padding, got {kernel_size}")
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=channels,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, padding=self.padding, dilation=self.dilation)
