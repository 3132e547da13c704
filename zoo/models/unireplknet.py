"""UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series
and Image Recognition (Ding et al., CVPR 2024).

https://arxiv.org/abs/2311.15599

A ConvNeXt-like macro design (a two-conv stem, stride-2 3x3 downsampling, LayerNorm) whose blocks are
``x + drop_path(gamma * BN(pwconv2(GRN(GELU(pwconv1(SE(BN(DW(x)))))))))``: DW is a 3x3 depthwise
convolution or a dilated re-param block (a 13x13 kernel beside dilated 5x5 ... 3x3 kernels, each with
BatchNorm), SE a squeeze-and-excitation with C/4 hidden units, GRN ConvNeXt V2's global response
normalization. The large and dilated depthwise convolutions run through ``zoo.kernels.depthwise_conv2d``.

Official checkpoints (AILab-CVC/UniRepLKNet, the Hub files of ``DingXiaoH/UniRepLKNet``) load through
``checkpoint_filter_fn`` in their training-time form and in their deployed form. ``reparameterize()``
(also reached by ``timm.utils.reparameterize_model``) gives the deployed form: the dilated branches,
the BatchNorm after DW into DW's kernel; GRN's beta, the BatchNorm after pwconv2 and the layer scale
into pwconv2.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d, LayerScale2d, SEModule
from timm.models import generate_default_cfgs, reparameterize_model

from zoo.layers.checks import check_per_stage
from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.reparam import DilatedReparamBlock, depthwise_conv_like, fuse_bn
from zoo.weights import pretrained_cfgs

from ._backbone import Backbone, Stage, backbone_creator, init_trunc_normal
from ._registry import register_tiny_kwargs, register_variants
from ._state_dict import CONVNEXT_RENAMES, rename_keys, unwrap_checkpoint

__all__ = ["UniRepLKNet"]


class GlobalResponseNorm(nn.Module):
    """GRN on ``(B, H, W, C)`` maps (ConvNeXt V2, Woo et al. 2023, Eq. 1-3):
    ``(1 + weight * N(x)) * x + bias`` with ``N(x) = ||x||_c / (mean_c ||x||_c + 1e-6)``, ``||x||_c``
    the L2 norm of channel ``c`` over the map. The deployed form has no ``bias`` (it is folded into the
    next linear layer)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(p=2, dim=(1, 2), keepdim=True)
        x = x + self.weight * (x * (norm / (norm.mean(dim=-1, keepdim=True) + self.eps)))
        return x if self.bias is None else x + self.bias


class UniRepLKNetBlock(nn.Module):
    """``x + drop_path(layer_scale(ffn_norm(pwconv2(grn(act(pwconv1(se(norm(dwconv(x))))))))))``; the
    pointwise layers run channels-last. ``kernel_size`` 3 or 5 gives a plain depthwise convolution,
    7 and up a dilated re-param block."""

    def __init__(self, dim: int, kernel_size: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 ffn_ratio: float = 4.0):
        super().__init__()
        if kernel_size in (3, 5):
            self.dwconv = DepthwiseConv2d(dim, kernel_size, bias=False)
        else:
            self.dwconv = DilatedReparamBlock(dim, kernel_size)
        self.norm = nn.BatchNorm2d(dim)
        self.se = SEModule(dim, rd_channels=dim // 4)
        hidden_dim = int(ffn_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden_dim)
        self.pwconv2 = nn.Linear(hidden_dim, dim, bias=False)
        self.ffn_norm = nn.BatchNorm2d(dim)
        self.layer_scale = LayerScale2d(dim, layer_scale_init_value)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x))).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y)))).permute(0, 3, 1, 2)
        return x + self.drop_path(self.layer_scale(self.ffn_norm(y)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold into the official deployed form, in place (a no-op once folded): DW's branches and
        ``norm`` into one convolution with bias; ``pwconv2(GRN(h)) = W GRN_0(h) + W beta``, so with
        ``ffn_norm`` and the layer scale ``gamma`` pwconv2 becomes ``gamma s W`` with bias
        ``gamma (b_bn + s (W beta - mu))``, ``s = w_bn / sqrt(var + eps)``."""
        if isinstance(self.norm, nn.Identity):
            return
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
            self.dwconv.lk_origin = depthwise_conv_like(*fuse_bn(self.dwconv.lk_origin.weight, self.norm,
                                                                 self.dwconv.lk_origin.bias))
        else:
            self.dwconv = depthwise_conv_like(*fuse_bn(self.dwconv.weight, self.norm))
        self.norm = nn.Identity()

        weight = self.pwconv2.weight
        scale = self.ffn_norm.weight / torch.sqrt(self.ffn_norm.running_var + self.ffn_norm.eps)
        bias = self.ffn_norm.bias + (weight @ self.grn.bias - self.ffn_norm.running_mean) * scale
        gamma = self.layer_scale.gamma
        self.pwconv2 = nn.Linear(weight.shape[1], weight.shape[0]).to(weight)
        self.pwconv2.weight.copy_(weight * (gamma * scale)[:, None])
        self.pwconv2.bias.copy_(gamma * bias)
        self.grn.bias = None
        self.ffn_norm = nn.Identity()
        self.layer_scale = nn.Identity()


class UniRepLKNetStage(Stage):
    """Optional 3x3 stride-2 convolution and LayerNorm, then one block per entry of ``kernel_sizes``."""

    def __init__(self, in_dim: int, dim: int, kernel_sizes: tuple[int, ...], drop_path: list[float],
                 layer_scale_init_value: float, downsample: bool):
        downsampling = nn.Sequential(
            nn.Conv2d(in_dim, dim, kernel_size=3, stride=2, padding=1), LayerNorm2d(dim, eps=1e-6)
        ) if downsample else nn.Identity()
        super().__init__(downsampling, [
            UniRepLKNetBlock(dim, kernel_size, rate, layer_scale_init_value)
            for kernel_size, rate in zip(kernel_sizes, drop_path)
        ])


class UniRepLKNet(Backbone):
    """UniRepLKNet: a stride-4 stem (3x3 stride-2 conv to C/2, LayerNorm, GELU, 3x3 stride-2 conv,
    LayerNorm), four stages, average pooling, LayerNorm and a linear classifier. ``kernel_sizes``
    holds one kernel size per block (3 or 5: plain depthwise; 7, 9, 11, 13, 15, 17: dilated re-param)."""

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 27, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        kernel_sizes: tuple[tuple[int, ...], ...] | None = None,
        layer_scale_init_value: float = 1e-6,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_per_stage(depths=depths, dims=dims)
        kernel_sizes = kernel_sizes or _default_kernel_sizes(depths)
        if [len(k) for k in kernel_sizes] != list(depths):
            raise ValueError(f"kernel_sizes {kernel_sizes} need one kernel size per block of depths {depths}")
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1),
            LayerNorm2d(dims[0] // 2, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        self.build_pyramid(
            partial(UniRepLKNetStage, layer_scale_init_value=layer_scale_init_value), dims, depths, drop_path_rate,
            kernel_sizes=kernel_sizes,
        )
        self.norm = nn.Identity()
        self.head = self.norm_mlp_classifier_head()
        self.apply(partial(init_trunc_normal, layers=(nn.Conv2d, nn.Linear)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every block into the official deployed form, in place; the outputs in eval mode do
        not change."""
        reparameterize_model(self, inplace=True)


def _default_kernel_sizes(depths: tuple[int, ...], third_stage: tuple[int, ...] = (13,)) -> tuple[tuple[int, ...], ...]:
    """The official kernel sizes: 3 in the first stage, 13 in the second and last, ``third_stage``
    repeated in the third (13 for A-N, 13, 3 for T, 13, 3, 3 for S-XL)."""
    if len(depths) != 4:
        raise ValueError(f"the default kernel sizes are for four stages, got depths {depths}")
    third = tuple(third_stage[i % len(third_stage)] for i in range(depths[2]))
    return (3,) * depths[0], (13,) * depths[1], third, (13,) * depths[3]


_OFFICIAL_RENAMES = (
    *CONVNEXT_RENAMES,
    (r"\.se\.down\.", ".se.fc1."),
    (r"\.se\.up\.", ".se.fc2."),
    (r"\.pwconv1\.1\.", ".pwconv1."),
    (r"\.act\.1\.gamma$", ".grn.weight"),
    (r"\.act\.1\.beta$", ".grn.bias"),
    (r"\.pwconv2\.0\.", ".pwconv2."),
    (r"\.pwconv2\.2\.", ".ffn_norm."),
    (r"(blocks\.\d+)\.gamma$", r"\1.layer_scale.gamma"),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)


def checkpoint_filter_fn(state_dict: dict, model: UniRepLKNet) -> dict[str, torch.Tensor]:
    """Convert an official (AILab-CVC/UniRepLKNet) checkpoint, in ConvNeXt's layout (``CONVNEXT_RENAMES``), to
    this model's: the SE, GRN (``act.1``), pwconv and layer-scale keys get our names, the final norm and classifier
    become ``head.norm`` / ``head.fc``. A checkpoint in the deployed form (pwconv2 with a bias) folds ``model`` so
    that it takes it."""
    out = rename_keys(unwrap_checkpoint(state_dict), _OFFICIAL_RENAMES)
    out = {key: value.flatten() if ".grn." in key else value for key, value in out.items()}
    if any(key.endswith(".pwconv2.bias") for key in out):
        model.reparameterize()
    return out


_create_unireplknet = backbone_creator(UniRepLKNet, checkpoint_filter_fn)


default_cfgs = generate_default_cfgs(pretrained_cfgs("unireplknet"))

# The official detection/segmentation backbone (``{detection,segmentation}/mm*_custom/models/backbones/unireplknet.py``)
# drops the head and normalizes every returned map with a channels-first LayerNorm (eps 1e-6) named ``norm{i}``.
downstream_cfg = dict(out_norm=partial(LayerNorm2d, eps=1e-6))

register_tiny_kwargs(
    "zoo_unireplknet", dims=(8, 16, 16, 24), depths=(1, 1, 2, 1), kernel_sizes=((3,), (13,), (7, 3), (5,))
)

# UniRepLKNet-A/F/P/N/T/S (ImageNet-1k, 224²) and S/B/L/XL pretrained on ImageNet-22k and fine-tuned at 384² (the
# _384 variants); the sizes share depths and per-block kernel sizes (third stage: 13s for A-N, 13, 3 alternating for
# T, 13, 3, 3 repeated for S-XL).
_A_TO_P = dict(depths=(2, 2, 6, 2), kernel_sizes=_default_kernel_sizes((2, 2, 6, 2)))
_N = dict(depths=(2, 2, 8, 2), kernel_sizes=_default_kernel_sizes((2, 2, 8, 2)))
_T = dict(depths=(3, 3, 18, 3), kernel_sizes=_default_kernel_sizes((3, 3, 18, 3), (13, 3)))
_S_TO_XL = dict(depths=(3, 3, 27, 3), kernel_sizes=_default_kernel_sizes((3, 3, 27, 3), (13, 3, 3)))
register_variants(
    _create_unireplknet,
    zoo_unireplknet_a=dict(_A_TO_P, dims=(40, 80, 160, 320)),
    zoo_unireplknet_f=dict(_A_TO_P, dims=(48, 96, 192, 384)),
    zoo_unireplknet_p=dict(_A_TO_P, dims=(64, 128, 256, 512)),
    zoo_unireplknet_n=dict(_N, dims=(80, 160, 320, 640)),
    zoo_unireplknet_t=dict(_T, dims=(80, 160, 320, 640)),
    zoo_unireplknet_s=dict(_S_TO_XL, dims=(96, 192, 384, 768)),
    zoo_unireplknet_s_384=dict(_S_TO_XL, dims=(96, 192, 384, 768)),
    zoo_unireplknet_b_384=dict(_S_TO_XL, dims=(128, 256, 512, 1024)),
    zoo_unireplknet_l_384=dict(_S_TO_XL, dims=(192, 384, 768, 1536)),
    zoo_unireplknet_xl_384=dict(_S_TO_XL, dims=(256, 512, 1024, 2048)),
)
