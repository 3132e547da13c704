"""SLaK: More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity (Liu et al., ICLR 2023).

https://arxiv.org/abs/2207.03620

ConvNeXt's macro design with each block's 7x7 depthwise convolution replaced by a decomposed large
kernel: a ``K x 5`` and a ``5 x K`` depthwise strip beside a 5x5 kernel, each followed by BatchNorm
(K = 51, 49, 47, 13 per stage), and widths scaled by 1.3. The official model always runs MegEngine's
implicit-GEMM convolution, which ignores the padding it is given and pads ``(kh // 2, kw // 2)``
(the 51x5 strip pads (25, 2)): every branch here keeps the map size the same way, through
``zoo.kernels.depthwise_conv2d``. The released weights come from dynamic sparse training (40% of the
large-kernel weights are zero); they are stored, and run, dense.

Official checkpoints (VITA-Group/SLaK) load through ``checkpoint_filter_fn``. ``reparameterize()``
(also reached by ``timm.utils.reparameterize_model``) folds each block's three branches and their
BatchNorms into one ``K x K`` convolution, the official module's deployed layout (``lkb_reparam``),
whose checkpoints load too. The folded kernel has more taps than the three branches together
(``K^2`` against ``10 K + 25``), so it trades arithmetic for a single convolution.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, Mlp
from timm.models import generate_default_cfgs, reparameterize_model

from zoo.layers.checks import check_per_stage
from zoo.layers.reparam import ReparamLargeKernelConv
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import CONVNEXT_RENAMES, rename_keys, unwrap_checkpoint

__all__ = ["SLaK"]


class SLaKBlock(nn.Module):
    """``x + drop_path(gamma * MLP(LN(LK(x))))``, LK the sum of the large-kernel branches."""

    def __init__(self, dim: int, kernel_size: int, small_kernel: int, decomposed: bool = True,
                 drop_path: float = 0.0, layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.large_kernel = ReparamLargeKernelConv(dim, kernel_size, small_kernel, decomposed=decomposed)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.large_kernel(x).permute(0, 2, 3, 1)
        y = (self.gamma * self.mlp(self.norm(y))).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class SLaKStage(Stage):
    """Optional 2x downsampling (LayerNorm, 2x2 stride-2 conv), then ``depth`` SLaK blocks."""

    def __init__(self, in_dim: int, dim: int, kernel_size: int, small_kernel: int, decomposed: bool,
                 drop_path: list[float], layer_scale_init_value: float, downsample: bool):
        downsampling = nn.Sequential(
            LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, kernel_size=2, stride=2)
        ) if downsample else nn.Identity()
        super().__init__(downsampling, [
            SLaKBlock(dim, kernel_size, small_kernel, decomposed, rate, layer_scale_init_value) for rate in drop_path
        ])


class SLaK(Backbone):
    """SLaK: a 4x4 stride-4 patch stem, four stages of SLaK blocks, pooling, LayerNorm and a linear
    classifier. Stage widths are ``int(dim * width_factor)``; ``decomposed=False`` gives the plain
    ``K x K`` + small-kernel block of the official ablations."""

    min_input_size = 32

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        width_factor: float = 1.3,
        kernel_sizes: tuple[int, ...] = (51, 49, 47, 13),
        small_kernel: int = 5,
        decomposed: bool = True,
        layer_scale_init_value: float = 1e-6,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(depths=depths, dims=dims, kernel_sizes=kernel_sizes)
        dims = [int(d * width_factor) for d in dims]
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6)
        )
        self.build_pyramid(
            partial(SLaKStage, small_kernel=small_kernel, decomposed=decomposed,
                    layer_scale_init_value=layer_scale_init_value),
            dims, depths, drop_path_rate, kernel_size=kernel_sizes,
        )
        self.norm = nn.Identity()
        self.head = self.norm_mlp_classifier_head()
        self.apply(partial(init_trunc_normal, layers=(nn.Conv2d, nn.Linear)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every block's branches and their BatchNorms into one ``K x K`` depthwise convolution
        (``lkb_reparam``), in place; the outputs in eval mode do not change."""
        reparameterize_model(self, inplace=True)


# Official (VITA-Group/SLaK) key -> ours, applied in order.
_OFFICIAL_RENAMES = (
    *CONVNEXT_RENAMES,
    (r"\.pwconv([12])\.", r".mlp.fc\1."),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)


def checkpoint_filter_fn(state_dict: dict, model: SLaK) -> dict[str, torch.Tensor]:
    """Convert an official (VITA-Group/SLaK) checkpoint, in ConvNeXt's layout (``CONVNEXT_RENAMES``), to this
    model's: ``pwconv1/2`` become ``mlp.fc1/2``, the final norm and classifier ``head.norm`` / ``head.fc``. A
    checkpoint in the re-parameterized form (``lkb_reparam`` weights) folds ``model`` so that it takes them."""
    out = rename_keys(unwrap_checkpoint(state_dict), _OFFICIAL_RENAMES)
    if any(".lkb_reparam." in key for key in out):
        model.reparameterize()
    return out


_create_slak = backbone_creator(SLaK, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("slak"))

# The official detection/segmentation backbone (``{detection,segmentation}/slak.py``) drops the head, normalizes
# every returned map with a channels-first LayerNorm (eps 1e-6) named ``norm{i}`` and is configured with layer
# scales initialized to 1 (the pretrained ones replace them).
downstream_cfg = dict(model_kwargs=dict(layer_scale_init_value=1.0), out_norm=partial(LayerNorm2d, eps=1e-6))

register_tiny_kwargs(
    "zoo_slak", dims=(8, 16, 16, 24), width_factor=1.0, depths=(1, 1, 1, 1), kernel_sizes=(13, 11, 7, 5),
    small_kernel=3,
)


# SLaK-T/S/B (ConvNeXt-T/S/B's depths and widths, x1.3): kernels 51-49-47-13 as K x 5 + 5 x K + 5x5 (the defaults).
register_variants(
    _create_slak,
    zoo_slak_tiny=dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    zoo_slak_small=dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    zoo_slak_base=dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
)
