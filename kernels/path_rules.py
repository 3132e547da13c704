"""Where a Triton kernel is used and where the PyTorch path is faster, with the measurements behind it.

``ZOO_KERNELS=auto`` (the default) runs CUDA tensors through the Triton kernels only where these
rules say they win; ``ZOO_KERNELS=triton`` forces the kernels everywhere (the tests, the
benchmarks). Each rule below sits next to the figures it is drawn from. ``speedup`` is always the
time of the PyTorch path divided by the time of the dedicated kernel (above 1: the kernel wins).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Measurement:
    source: str
    case: str
    speedup: float


# --------------------------------------------------------------------------------------------------
# depthwise_conv2d
# --------------------------------------------------------------------------------------------------

DEPTHWISE_MEASUREMENTS = (
    # Issue 13: NVIDIA H200, torch 2.11 + triton 3.6, bf16 autocast, NCHW, whole models, ms per batch,
    # zoo Triton path vs the same model with ZOO_KERNELS=reference. Swin-T, which has no depthwise
    # convolution, gained 1.18x train / 1.90x infer from the window kernel in the same run, so these
    # losses are the small depthwise convolutions'.
    Measurement("issue 13, H200", "SHViT-S4 (128, 256), 3x3, train: 66.3 ms vs 50.1 ms", 50.1 / 66.3),
    Measurement("issue 13, H200", "SHViT-S4 (128, 256), 3x3, infer: 22.9 ms vs 18.1 ms", 18.1 / 22.9),
    Measurement("issue 13, H200", "Agent-Swin-T (64, 224), 3x3, train: 78.4 ms vs 56.8 ms", 56.8 / 78.4),
    Measurement("issue 13, H200", "Agent-Swin-T (64, 224), 3x3, infer: 17.8 ms vs 18.1 ms", 18.1 / 17.8),
    # FLatten also runs window attention through Triton (a 1.2-1.9x gain on Swin-T): even so, its
    # 5x5 convolutions leave the training step slower than the reference path.
    Measurement("issue 13, H200", "FLatten-Swin-T (64, 224), 5x5, train: 65.7 ms vs 63.1 ms", 63.1 / 65.7),
    # A dedicated large-kernel depthwise kernel (MegEngine's implicit GEMM, NCHW) against PyTorch's
    # default, which for NCHW above 5x5 is its native direct kernel (cuDNN takes NCHW depthwise only
    # for fp16/bf16 square 1, 3 or 5 filters; channels_last always goes to cuDNN: aten Convolution.cpp,
    # check_cudnn_depthwise_workload_with_filter).
    Measurement("pytorch/pytorch#74363 (RepLKNet authors, V100/2080Ti era)", "7x7 vs PyTorch default", 2.0),
    Measurement("pytorch/pytorch#74363 (RepLKNet authors, V100/2080Ti era)", "31x31 vs PyTorch default", 20.0),
)

# Up to this many taps per axis (3x3 SHViT and Agent, 5x5 FLatten and VAN), PyTorch/cuDNN wins: the
# H200 rows above, train and infer alike.
SMALL_KERNEL_MAX = 5
# From this many taps per axis (RepLKNet 31/29/27/13, UniRepLKNet 13, SLaK 51x5 / 5x51, ParCNet's
# map-sized filters), the dedicated kernel wins in either layout: pytorch#74363's 20x at 31x31 over the
# native kernel; cuDNN's channels_last depthwise path is tuned for the small filters it is built around.
LARGE_KERNEL_MIN = 13


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, dilation, top/left padding and output size of one depthwise convolution."""

    kernel: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]
    out_size: tuple[int, int]

    def transposed(self, in_size: tuple[int, int]) -> ConvGeometry:
        """The geometry of ``dL/dx`` as a convolution of ``dL/dy`` with the flipped kernel."""
        pad = tuple(d * (k - 1) - p for k, d, p in zip(self.kernel, self.dilation, self.pad))
        return ConvGeometry(self.kernel, self.dilation, pad, tuple(in_size))


@dataclass(frozen=True)
class DepthwiseCall:
    """What the choice between the Triton kernel and ``F.conv2d(groups=C)`` looks at."""

    geometry: ConvGeometry
    in_size: tuple[int, int]
    channels: int
    channels_last: bool
    dtype: torch.dtype
    training: bool

    def taps_in_map(self) -> tuple[int, int]:
        """Per axis, how many taps ever read a row (column) inside the map; the others only meet
        padding. A 13x13 kernel on a 7x7 map reads 13 taps per axis, on a 3x3 map only 5."""
        g, reach = self.geometry, []
        for k, d, p, size, out in zip(g.kernel, g.dilation, g.pad, self.in_size, g.out_size):
            # Tap i reads input row o - p + i * d for outputs o in [0, out): some of them lie in [0, size).
            first = max(0, -((out - 1 - p) // d))
            last = min(k - 1, (size - 1 + p) // d)
            reach.append(max(0, last - first + 1))
        return tuple(reach)


def depthwise_prefers_triton(call: DepthwiseCall) -> bool:
    """Whether the Triton kernel is measured (or published) faster than PyTorch for this call.

    * at most ``SMALL_KERNEL_MAX`` taps per axis reaching the map: PyTorch (H200, issue 13);
    * at least ``LARGE_KERNEL_MIN``: Triton (pytorch#74363);
    * in between (HorNet's and ConvNeXt's 7x7, VAN's 7x7 with dilation 3, InceptionNeXt's 1x11):
      Triton on NCHW input, where PyTorch runs its native direct kernel that a dedicated kernel beats
      2x already at 7x7 (pytorch#74363); cuDNN on channels_last, where it is PyTorch's path and no
      measurement shows it beaten.

    Channels, dtype and direction (inference or training) are part of the call, but no measurement
    so far separates them: the H200 losses hold for training and inference, and the published wins
    are for the filter size.
    """
    reach = max(call.taps_in_map())
    if reach <= SMALL_KERNEL_MAX:
        return False
    if reach >= LARGE_KERNEL_MIN:
        return True
    return not call.channels_last


# --------------------------------------------------------------------------------------------------
# routing_attention
# --------------------------------------------------------------------------------------------------

ROUTING_MEASUREMENTS = (
    # Issue 13: H200, benchmarks/bench_routing_attention.py, forward + backward against the official
    # gather formulation (topk-fold gather, matmul, softmax, matmul). Half precision wins everywhere.
    Measurement("issue 13, H200", "bf16, BiFormer-T stages 1-3 at 224 and 512", 1.65),
    Measurement("issue 13, H200", "fp16, BiFormer-T stages 1-3 at 224 and 512", 1.5),
    # fp32 with exact products (PyTorch's default, TF32 off) loses at topk 1: there the gather copies
    # nothing, the reference is a dense batched attention on cuBLAS/CUTLASS fp32 kernels, and Triton's
    # fp32 ``tl.dot`` with ``input_precision="ieee"`` runs as FMA loops without tensor cores, more
    # so the larger the region.
    Measurement("issue 13, H200", "fp32, stage 1 at 224: 8x8-token regions, topk 1", 0.73),
    Measurement("issue 13, H200", "fp32, stage 1 at 512: 16x16-token regions, topk 1 (14.1 ms vs 4.5 ms)", 0.32),
)


def routing_prefers_triton(dtype: torch.dtype, exact_fp32_products: bool, topk: int) -> bool:
    """Triton, except for fp32 with exact (non-TF32) products at topk 1, which the reference path wins
    (the fp32 rows above). With TF32 allowed the kernels use tensor cores, as in half precision."""
    return not (dtype == torch.float32 and exact_fp32_products and topk == 1)
