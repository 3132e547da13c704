"""RepLKNet: Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs (Ding et al., CVPR 2022).

https://arxiv.org/abs/2203.06717

Official checkpoints (DingXiaoH/RepLKNet-pytorch) load through ``checkpoint_filter_fn`` in their
training-time form, in their re-parameterized form (``lkb_reparam``: the filter folds the model
first) and as mmpretrain's converted files. The module layout is the official one except that each
transition (1x1 conv then stride-2 depthwise 3x3) opens the next stage as its ``downsample``, so a
stage's output is the map the official code returns for that index. The large-kernel depthwise
convolutions, their parallel 5x5 kernels and the folded kernels run through
``zoo.kernels.depthwise_conv2d``. ``reparameterize()`` (also reached by
``timm.utils.reparameterize_model``) folds each block's large and small kernel and their BatchNorms
into one convolution.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, DropPath
from timm.models import generate_default_cfgs, reparameterize_model

from zoo.layers.checks import check_per_stage
from zoo.layers.reparam import ReparamLargeKernelConv
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import unwrap_checkpoint

__all__ = ["RepLKNet"]


class RepLKBlock(nn.Module):
    """``x + drop_path(pw2(ReLU(LK(pw1(BN(x))))))``; pw1 is 1x1 conv-BN-ReLU into ``dw_dim`` channels,
    LK the large depthwise kernel beside a small one (paper Fig. 4), pw2 1x1 conv-BN back."""

    def __init__(self, dim: int, dw_dim: int, kernel_size: int, small_kernel: int | None, drop_path: float = 0.0):
        super().__init__()
        self.prelkb_bn = nn.BatchNorm2d(dim)
        self.pw1 = ConvNormAct(dim, dw_dim, 1)
        self.large_kernel = ReparamLargeKernelConv(dw_dim, kernel_size, small_kernel)
        self.lk_nonlinear = nn.ReLU()
        self.pw2 = ConvNormAct(dw_dim, dim, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lk_nonlinear(self.large_kernel(self.pw1(self.prelkb_bn(x))))
        return x + self.drop_path(self.pw2(out))


class ConvFFN(nn.Module):
    """``x + drop_path(pw2(GELU(pw1(BN(x)))))`` with 1x1 conv-BN layers."""

    def __init__(self, dim: int, hidden_dim: int, drop_path: float = 0.0):
        super().__init__()
        self.preffn_bn = nn.BatchNorm2d(dim)
        self.pw1 = ConvNormAct(dim, hidden_dim, 1, apply_act=False)
        self.nonlinear = nn.GELU()
        self.pw2 = ConvNormAct(hidden_dim, dim, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x)))))


class RepLKNetStage(Stage):
    """Optional transition (1x1 conv-BN-ReLU, stride-2 depthwise 3x3 conv-BN-ReLU), then one pair of RepLK
    block and ConvFFN per ``drop_path`` rate."""

    def __init__(self, in_dim: int, dim: int, kernel_size: int, small_kernel: int | None, dw_ratio: float,
                 ffn_ratio: float, drop_path: list[float], downsample: bool):
        downsampling = nn.Sequential(
            ConvNormAct(in_dim, dim, 1),
            ConvNormAct(dim, dim, 3, stride=2, groups=dim),
        ) if downsample else nn.Identity()
        blocks = []
        for rate in drop_path:
            blocks.append(RepLKBlock(dim, int(dim * dw_ratio), kernel_size, small_kernel, rate))
            blocks.append(ConvFFN(dim, int(dim * ffn_ratio), rate))
        super().__init__(downsampling, blocks)


class RepLKNet(Backbone):
    """RepLKNet: a stride-4 convolutional stem, four stages of RepLK blocks and ConvFFNs, BatchNorm,
    average pooling and a linear classifier. ``small_kernel=None`` builds the large kernels alone
    (RepLKNet-XL)."""

    def __init__(
        self,
        large_kernel_sizes: tuple[int, ...] = (31, 29, 27, 13),
        depths: tuple[int, ...] = (2, 2, 18, 2),
        dims: tuple[int, ...] = (128, 256, 512, 1024),
        small_kernel: int | None = 5,
        dw_ratio: float = 1.0,
        ffn_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(large_kernel_sizes=large_kernel_sizes, depths=depths, dims=dims)
        stem_dim = dims[0]
        self.stem = nn.Sequential(
            ConvNormAct(self.in_chans, stem_dim, 3, stride=2),
            ConvNormAct(stem_dim, stem_dim, 3, groups=stem_dim),
            ConvNormAct(stem_dim, stem_dim, 1),
            ConvNormAct(stem_dim, stem_dim, 3, stride=2, groups=stem_dim),
        )
        self.build_pyramid(
            partial(RepLKNetStage, small_kernel=small_kernel, dw_ratio=dw_ratio, ffn_ratio=ffn_ratio),
            dims, depths, drop_path_rate, kernel_size=large_kernel_sizes,
        )
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = self.classifier_head()

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every block's large kernel, small kernel and their BatchNorms into one depthwise
        convolution (``lkb_reparam``), in place; the outputs in eval mode do not change."""
        reparameterize_model(self, inplace=True)


def checkpoint_filter_fn(state_dict: dict, model: RepLKNet) -> dict[str, torch.Tensor]:
    """Convert an official (DingXiaoH/RepLKNet-pytorch) or mmpretrain checkpoint to this model's layout.

    Unwraps ``model`` / ``state_dict`` and ``module.`` / ``backbone.``, moves ``transitions.{i}`` to
    ``stages.{i+1}.downsample``, renames the classifier to ``head.fc`` (mmpretrain keeps the final
    BatchNorm as the last stage's ``norm``). A checkpoint in the re-parameterized form
    (``lkb_reparam`` weights) folds ``model`` so that it takes them.
    """
    last_stage = len(model.stages) - 1
    out = {}
    for key, value in unwrap_checkpoint(state_dict).items():
        if key.startswith("backbone."):
            key = re.sub(rf"^stages\.{last_stage}\.norm\.", "norm.", key.removeprefix("backbone."))
        key = re.sub(r"^transitions\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.", key)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value
    if any(".lkb_reparam." in key for key in out):
        model.reparameterize()
    return out


_create_replknet = backbone_creator(RepLKNet, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("replknet"))

# The official detection/segmentation backbone (``segmentation/replknet.py``) returns the stage maps of
# RepLKNet-31B/L as they are; its XL configs (``norm_intermediate_features=True``) add a BatchNorm to every
# returned map, stored as ``stages.{i}.norm``.
downstream_cfg = dict(
    variants=dict(zoo_replknet_xl_320=dict(out_norm=nn.BatchNorm2d, official_out_norm_name="stages.{}.norm".format))
)

register_tiny_kwargs("zoo_replknet", dims=(8, 16, 16, 24), depths=(1, 1, 1, 1), large_kernel_sizes=(13, 11, 7, 5))


# RepLKNet-31B/L (kernels 31-29-27-13, each beside a 5x5 kernel) and RepLKNet-XL (kernels 27-27-27-13 without small
# kernels, depthwise width x1.5); the suffix is the resolution the weights are evaluated at (224² where there is none).
_REPLKNET_31B = dict(large_kernel_sizes=(31, 29, 27, 13), depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024))
register_variants(
    _create_replknet,
    zoo_replknet_31b=_REPLKNET_31B,
    zoo_replknet_31b_384=_REPLKNET_31B,
    zoo_replknet_31l_384=dict(_REPLKNET_31B, dims=(192, 384, 768, 1536)),
    zoo_replknet_xl_320=dict(
        large_kernel_sizes=(27, 27, 27, 13), depths=(2, 2, 18, 2), dims=(256, 512, 1024, 2048), small_kernel=None,
        dw_ratio=1.5,
    ),
)
