"""Fused kernels shared by the zoo's model families.

Each op has a reference PyTorch path (any device) and a Triton path (CUDA, or the Triton
interpreter on CPU); see ``zoo.kernels._dispatch`` for how one is chosen.
"""

from .depthwise_conv import depthwise_conv2d
from .neighborhood_attention import neighborhood_attention2d
from .routing_attention import routing_attention
from .window_attention import window_attention

__all__ = ["depthwise_conv2d", "neighborhood_attention2d", "routing_attention", "window_attention"]
