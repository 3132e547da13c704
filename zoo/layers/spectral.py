"""Learned frequency-domain filters shared by the spectral token mixers (GFNet, SpectFormer, SVT, AFFNet).

GFNet's global filter (Rao et al., NeurIPS 2021, Sec. 3.2) mixes tokens by a learned elementwise
product in the 2D Fourier domain, ``x <- irfft2(K * rfft2(x))``: a circular convolution of the map
with a kernel as large as the map. ``K`` is stored as the real view ``(h, w // 2 + 1, C, 2)`` of a
complex ``(h, w // 2 + 1, C)`` tensor, where ``(h, w)`` is the map size it was learned for.

A filter learned at one map size is used at another by resizing it over its two frequency
dimensions (real and imaginary parts alike):

- in the forward pass, bilinearly with aligned corners (``resize_filter``), as the authors' dense
  prediction code does for images of any size;
- once, bicubically with aligned corners, when a checkpoint is loaded into a model built for
  another ``img_size`` (``resize_filter(..., mode="bicubic")``), as their ``--finetune`` does.

The FFTs run in float32 with autocast off: half-precision FFTs (cuFFT) only take power-of-two
sizes and lose the filter's precision.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.layers.precision import autocast_disabled

__all__ = ["GlobalFilter", "block_complex_linear", "filter_shape", "global_filter", "resize_filter"]


def filter_shape(height: int, width: int) -> tuple[int, int]:
    """The frequency grid of ``rfft2`` over an ``height x width`` map: ``(height, width // 2 + 1)``."""
    return height, width // 2 + 1


def resize_filter(
    weight: torch.Tensor, size: tuple[int, int], dims: tuple[int, int] = (0, 1), mode: str = "bilinear"
) -> torch.Tensor:
    """Resize ``weight`` over its dimensions ``dims`` (two adjacent ones) to ``size``, interpolating
    with aligned corners so that the corner (zero and highest) frequencies stay where they are."""
    if tuple(weight.shape[d] for d in dims) == tuple(size):
        return weight
    if dims[1] != dims[0] + 1:
        raise ValueError(f"the two resized dimensions must be adjacent, got {dims}")
    moved = weight.movedim(dims, (-2, -1))
    batch_shape = moved.shape[:-2]
    resized = F.interpolate(moved.reshape(1, -1, *moved.shape[-2:]), size=tuple(size), mode=mode, align_corners=True)
    return resized.reshape(*batch_shape, *size).movedim((-2, -1), dims)


def global_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``irfft2(rfft2(x) * K)`` over the spatial dimensions of an NHWC map ``x`` (orthonormal FFTs).

    ``weight``: the real view ``(h, w', C, 2)`` of ``K``, resized bilinearly when ``(h, w')`` is not
    the frequency grid of ``x``. Computed in float32 under any autocast; returns ``x``'s dtype.
    """
    height, width = x.shape[1:3]
    if x.shape[0] == 0:  # MKL's FFT refuses an empty batch
        return x
    with autocast_disabled(x.device.type):
        freq = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
        weight = resize_filter(weight.float(), freq.shape[1:3])
        freq = freq * torch.view_as_complex(weight.contiguous())
        out = torch.fft.irfft2(freq, s=(height, width), dim=(1, 2), norm="ortho")
    return out.to(x.dtype)


class GlobalFilter(nn.Module):
    """GFNet's global filter layer on ``(B, H, W, C)`` maps, learned for ``size`` (the map's ``(H, W)``)."""

    def __init__(self, dim: int, size: tuple[int, int]):
        super().__init__()
        self.complex_weight = nn.Parameter(torch.randn(*filter_shape(*size), dim, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_filter(x, self.complex_weight)


def block_complex_linear(
    real: torch.Tensor, imag: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A block-diagonal complex linear layer over the last two dimensions ``(..., blocks, d)``
    (AFNO, Guibas et al. 2022): ``z @ W + b`` per block with ``z = real + i imag``.

    ``weight``: ``(2, blocks, d, k)`` and ``bias``: ``(2, blocks, k)``, real and imaginary parts
    stacked first. Returns the real and imaginary parts ``(..., blocks, k)``.
    """

    def matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...bd,bdk->...bk", x, w)

    out_real = matmul(real, weight[0]) - matmul(imag, weight[1]) + bias[0]
    out_imag = matmul(real, weight[1]) + matmul(imag, weight[0]) + bias[1]
    return out_real, out_imag
