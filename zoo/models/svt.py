"""SVT: Scattering Vision Transformer: Spectral Mixing Matters (Patro & Agneeswaran, NeurIPS 2023).

https://arxiv.org/abs/2311.01310

SVT-H (S, B, L) is SpectFormer-H's trunk (``zoo.models.spectformer.SpectFormerH``) whose first stage
mixes tokens by scattering: a one-level dual-tree complex wavelet transform (DTCWT) splits the map
into a low-pass band, gated by a learned weight per channel and position, and six oriented complex
high-pass bands, mixed over channels by a block-diagonal complex two-layer MLP ("Einstein
multiplication"); the inverse DTCWT returns to the map. Stages 2-4 use attention.

The DTCWT filters come from ``pytorch_wavelets``, an optional dependency (``pip install
'zoo[wavelets]'``), whose transform modules hold them under the official parameter names. The
level-1 filtering itself runs here (``dtcwt_forward`` / ``dtcwt_inverse``, equal to the library's
to the last bit): the library computes its padding indices with NumPy from the tensor sizes and
fills its outputs in place inside ``autograd.Function``s, which neither ``torch.jit.trace`` nor
``torch.export`` can follow.
No weights have been released. A checkpoint of the official code (badripatro/svt,
``{'model': state_dict}``) loads through ``checkpoint_filter_fn``. Any input size works: the
low-pass weight, learned for the stage-1 map at ``img_size``, is resized bilinearly for other map
sizes (bicubically, once, when a checkpoint is loaded into a model built for another ``img_size``),
and an odd-sized map is padded by one row or column for the transform and cropped back.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs

from zoo.layers.precision import autocast_disabled
from zoo.layers.spectral import block_complex_linear, resize_filter
from zoo.weights import pretrained_cfgs

from ._backbone import build_backbone
from ._registry import register_tiny_kwargs, register_variants
from .spectformer import _SPECTFORMER_H_B, _SPECTFORMER_H_L, _SPECTFORMER_H_S, SpectFormerH
from .spectformer import checkpoint_filter_fn as spectformer_checkpoint_filter_fn

__all__ = ["ScatteringMixer"]

WAVELETS_EXTRA = "pip install 'zoo[wavelets]'"


def _dtcwt() -> tuple[nn.Module, nn.Module]:
    """pytorch_wavelets' forward and inverse one-level DTCWT of the official model (near_sym_b /
    qshift_b filters); they hold the filters (``h0o``, ``h1o``, ``g0o``, ``g1o``)."""
    try:
        with warnings.catch_warnings():  # its import of pkg_resources warns on every load
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            from pytorch_wavelets import DTCWTForward, DTCWTInverse
    except ImportError as error:
        raise ImportError(
            f"SVT's scattering layer needs pytorch_wavelets (the dual-tree complex wavelet transform): {WAVELETS_EXTRA}"
        ) from error
    return DTCWTForward(J=1, biort="near_sym_b", qshift="qshift_b"), DTCWTInverse(biort="near_sym_b", qshift="qshift_b")


def _filter(x: torch.Tensor, h: torch.Tensor, dim: int) -> torch.Tensor:
    """Depthwise filtering of ``(B, C, H, W)`` along ``dim`` (2: columns, 3: rows) by the ``(1, 1, k, 1)``
    filter ``h``, with half-sample symmetric extension (pytorch_wavelets' ``colfilter`` / ``rowfilter``)."""
    size, half = int(x.shape[dim]), h.shape[2] // 2
    index = torch.arange(-half, size + half, device=x.device) % (2 * size)
    index = torch.where(index < size, index, 2 * size - 1 - index)
    kernel = (h if dim == 2 else h.transpose(2, 3)).to(x.dtype).repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x.index_select(dim, index), kernel, groups=x.shape[1])


def _quads_to_complex(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The two complex subbands ``(a - d) + i (b + c)`` and ``(a + d) + i (b - c)`` of the 2x2 quads
    ``[[a, b], [c, d]]``, as (real, imaginary, real, imaginary)."""
    y = y / math.sqrt(2)
    a, b, c, d = y[:, :, 0::2, 0::2], y[:, :, 0::2, 1::2], y[:, :, 1::2, 0::2], y[:, :, 1::2, 1::2]
    return a - d, b + c, a + d, b - c


def _complex_to_quads(w1r, w1i, w2r, w2i) -> torch.Tensor:
    """The inverse of ``_quads_to_complex``: the quads of two complex subbands, interleaved into one map."""
    quads = torch.stack([torch.stack([w1r + w2r, w1i + w2i], -1), torch.stack([w1i - w2i, w2r - w1r], -1)], -3)
    b, c, h, _, w, _ = quads.shape
    return quads.reshape(b, c, 2 * h, 2 * w) / math.sqrt(2)


# The six orientations (15, 45, 75, 105, 135, 165 degrees) as (subband, its first or second complex half).
_ORIENTATIONS = (("lh", 0), ("hh", 0), ("hl", 0), ("hl", 1), ("hh", 1), ("lh", 1))


def dtcwt_forward(x: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of the 2D DTCWT of an even-sized ``(B, C, H, W)`` map: the low-pass ``(B, C, H, W)`` and the
    high-pass ``(B, C, 6, H/2, W/2, 2)`` (real, imaginary), as pytorch_wavelets' ``DTCWTForward(J=1)``."""
    lo, hi = _filter(x, h0, 3), _filter(x, h1, 3)
    bands = {"lh": _quads_to_complex(_filter(lo, h1, 2)), "hl": _quads_to_complex(_filter(hi, h0, 2)),
             "hh": _quads_to_complex(_filter(hi, h1, 2))}  # fmt: skip
    high = torch.stack([torch.stack(bands[band][2 * half: 2 * half + 2], -1) for band, half in _ORIENTATIONS], 2)
    return _filter(lo, h0, 2), high


def dtcwt_inverse(low: torch.Tensor, high: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
    """The inverse of ``dtcwt_forward`` with the synthesis filters ``g0``, ``g1`` (``DTCWTInverse``)."""
    r = high.unbind(2)
    lh = _complex_to_quads(*r[0].unbind(-1), *r[5].unbind(-1))
    hl = _complex_to_quads(*r[2].unbind(-1), *r[3].unbind(-1))
    hh = _complex_to_quads(*r[1].unbind(-1), *r[4].unbind(-1))
    hi = _filter(hh, g1, 2) + _filter(hl, g0, 2)
    lo = _filter(lh, g1, 2) + _filter(low, g0, 2)
    return _filter(hi, g1, 3) + _filter(lo, g0, 3)


class ScatteringMixer(nn.Module):
    """SVT's scattering token mixer on ``(B, H, W, C)`` maps, learned for ``size`` (the map's ``(H, W)``).

    Low-pass band ``L``: ``L * W_ll`` (``W_ll``: ``(C, H, W)``). High-pass bands ``Z`` (complex,
    ``(C, 6, H/2, W/2)``): ``Z <- W2 ReLU(W1 Z + b1) + b2``, with ``W1``, ``W2`` block-diagonal
    complex ``C x C`` matrices of ``num_blocks`` blocks (ReLU on real and imaginary parts apart).
    Runs in float32 under any autocast; the parameters keep the official names.
    """

    def __init__(self, dim: int, size: tuple[int, int], num_blocks: int = 4):
        super().__init__()
        if dim % num_blocks:
            raise ValueError(f"num_blocks {num_blocks} must divide the width {dim}")
        self.num_blocks = num_blocks
        block = dim // num_blocks
        self.complex_weight_ll = nn.Parameter(torch.randn(dim, *size) * 0.02)
        self.complex_weight_lh_1 = nn.Parameter(torch.randn(2, num_blocks, block, block) * 0.02)
        self.complex_weight_lh_2 = nn.Parameter(torch.randn(2, num_blocks, block, block) * 0.02)
        self.complex_weight_lh_b1 = nn.Parameter(torch.randn(2, num_blocks, block) * 0.02)
        self.complex_weight_lh_b2 = nn.Parameter(torch.randn(2, num_blocks, block) * 0.02)
        self.xfm, self.ifm = _dtcwt()

    def mix_high_pass(self, high: torch.Tensor) -> torch.Tensor:
        """The complex channel MLP on the ``(B, C, 6, h, w, 2)`` high-pass bands."""
        b, c, orientations, h, w, _ = high.shape
        block = c // self.num_blocks
        real, imag = high.permute(5, 0, 2, 3, 4, 1).reshape(2, b, orientations, h, w, self.num_blocks, block).unbind(0)
        real, imag = block_complex_linear(real, imag, self.complex_weight_lh_1, self.complex_weight_lh_b1)
        real, imag = F.relu(real), F.relu(imag)
        real, imag = block_complex_linear(real, imag, self.complex_weight_lh_2, self.complex_weight_lh_b2)
        return torch.stack([real, imag], dim=-1).reshape(b, orientations, h, w, c, 2).permute(0, 4, 1, 2, 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        with autocast_disabled(x.device.type):
            y = F.pad(x.float().permute(0, 3, 1, 2), (0, width % 2, 0, height % 2), mode="replicate")
            low, high = dtcwt_forward(y, self.xfm.h0o, self.xfm.h1o)
            low = low * resize_filter(self.complex_weight_ll.float(), low.shape[-2:], dims=(1, 2))
            y = dtcwt_inverse(low, self.mix_high_pass(high), self.ifm.g0o, self.ifm.g1o)
        return y[:, :, :height, :width].permute(0, 2, 3, 1).to(x.dtype)


def checkpoint_filter_fn(state_dict: dict, model: SpectFormerH) -> dict[str, torch.Tensor]:
    """SpectFormer-H's conversion of the official layout (SVT shares its trunk), with the low-pass
    weights learned for another ``img_size`` resized bicubically."""
    out = spectformer_checkpoint_filter_fn(state_dict, model)
    targets = {k: v.shape for k, v in model.state_dict().items()}
    for key, value in out.items():
        if key.endswith("complex_weight_ll") and key in targets and value.shape != targets[key]:
            out[key] = resize_filter(value.float(), targets[key][1:], dims=(1, 2), mode="bicubic")
    return out


def _create_svt(variant: str, pretrained: bool = False, **kwargs) -> SpectFormerH:
    kwargs = dict(spectral_stages=1, spectral_layer=ScatteringMixer, **kwargs)
    return build_backbone(SpectFormerH, variant, pretrained, checkpoint_filter_fn, **kwargs)


default_cfgs = generate_default_cfgs(pretrained_cfgs("svt"))

register_tiny_kwargs("zoo_svt_h", img_size=32, stem_hidden_dim=8, embed_dims=(8, 16, 16, 16),
                     num_heads=(1, 2, 2, 2), depths=(1, 1, 1, 1))  # fmt: skip


# SVT-H-S/B/L: SpectFormer-H's sizes, with scattering in stage 1 and attention in stages 2-4.
register_variants(
    _create_svt,
    zoo_svt_h_s=_SPECTFORMER_H_S,
    zoo_svt_h_b=_SPECTFORMER_H_B,
    zoo_svt_h_l=_SPECTFORMER_H_L,
)
