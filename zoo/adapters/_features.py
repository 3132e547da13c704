"""A zoo model as the backbone of a detector or segmenter, shared by the torchvision and OpenMMLab adapters.

:class:`DenseBackbone` wraps a registered zoo model built with ``features_only=True`` (timm's feature
getter: NCHW maps of the stages in ``out_indices``, the head and final norm pruned) and adds what the
dense-prediction code of the families does around it:

- the family's own downstream construction, read from its model file's ``downstream_cfg``
  (``model_kwargs`` to build with; ``out_norm``, a norm applied to every output map as ``norm<i>``, and
  ``official_out_norm_name``, its name in official checkpoints if other than ``norm<i>``; ``variants``,
  overrides for single models of the family;
  ``downsample_ends_stage``, where the official code puts a stage's downsampling, see below);
- a simple feature pyramid for isotropic models (every block at one stride, as in ViT): four blocks'
  maps rescaled to strides 4, 8, 16 and 32 (:class:`SimpleFeaturePyramid`);
- frozen stages (``frozen_stages``, mmdet's convention: 0 freezes the stem, ``k`` also stages ``0..k-1``;
  where the official code downsamples at the end of a stage (Swin's patch merging), the downsampling
  that follows stage ``k-1`` is frozen with it, as there);
- loading of official downstream checkpoints (:meth:`DenseBackbone.convert_official`);
- BatchNorm in eval mode while training (``norm_eval``) and conversion of BatchNorm layers;
- the stage and block of every parameter, for layer-wise learning-rate decay.

A model's stages are those of its ``feature_info``; its stem is every top-level module that comes
before the stages' container.
"""

from __future__ import annotations

import importlib
import math
import re

import timm
import torch
import torch.nn as nn
from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["DenseBackbone", "SimpleFeaturePyramid", "downstream_cfg"]

PYRAMID_STRIDES = (4, 8, 16, 32)


def downstream_cfg(model_name: str) -> dict:
    """How the family's official detection/segmentation code builds ``model_name`` (empty if nothing special)."""
    arch = model_name.split(".")[0]
    if not arch.startswith("zoo_") or arch not in timm.list_models("zoo_*"):
        raise ValueError(f"{model_name!r} is not a registered zoo model (see `zoo list` or timm.list_models('zoo_*'))")
    module = importlib.import_module(timm.models.model_entrypoint(arch).__module__)
    family = dict(getattr(module, "downstream_cfg", {}))
    variant = family.pop("variants", {}).get(arch, {})
    return {**family, **variant}


class SimpleFeaturePyramid(nn.Module):
    """Maps of one stride rescaled to a pyramid of strides (BEiT's and mmseg's ``Feature2Pyramid``).

    Level ``i`` turns its input (at ``in_stride``) into stride ``out_strides[i]``: twice as fine per
    2x2 transposed convolution (with BatchNorm and GELU between two of them), the same map, or
    max-pooled to a coarser stride.
    """

    def __init__(self, channels: int, in_stride: int, out_strides: tuple[int, ...] = PYRAMID_STRIDES,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.levels = nn.ModuleList(self._level(channels, in_stride, s, norm_layer) for s in out_strides)

    @staticmethod
    def _level(channels: int, in_stride: int, out_stride: int, norm_layer: type[nn.Module]) -> nn.Module:
        scale = in_stride / out_stride
        if scale < 1:
            return nn.MaxPool2d(round(1 / scale))
        upsamplings = round(math.log2(scale))
        if 2**upsamplings != scale:
            raise ValueError(f"cannot rescale stride {in_stride} to {out_stride}: the ratio must be a power of 2")
        layers = []
        for i in range(upsamplings):
            if i:
                layers += [norm_layer(channels), nn.GELU()]
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level(f) for level, f in zip(self.levels, features)]


class DenseBackbone(nn.Module):
    """Multi-scale NCHW feature maps of a zoo model, built as its family's downstream backbone.

    An isotropic model (every block at one stride, e.g. DeiT, GFNet) returns the maps of four blocks
    (``out_indices``, by default the last block of each quarter of the depth), rescaled to strides 4,
    8, 16 and 32 by a :class:`SimpleFeaturePyramid`; its "stages" are its blocks.

    Args:
        model_name: a registered zoo model, optionally with a pretrained tag (``zoo_swin_tiny.ms_in1k``).
        out_indices: the stages whose maps are returned (every stage by default); the four blocks of an
            isotropic model.
        pretrained: load the model's pretrained weights.
        frozen_stages: -1 trains everything; 0 freezes the stem; ``k`` also stages ``0..k-1`` (and their
            output norms).
        norm_eval: keep the BatchNorm layers in eval mode (frozen statistics) while training.
        batch_norm: what the model's BatchNorm2d layers become: ``nn.BatchNorm2d`` (left as they are),
            ``FrozenBatchNorm2d`` or ``nn.SyncBatchNorm``.
        model_kwargs: passed to ``timm.create_model`` (over the family's downstream ``model_kwargs``).
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] | None = None,
        pretrained: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        batch_norm: type[nn.Module] = nn.BatchNorm2d,
        **model_kwargs,
    ):
        super().__init__()
        self.model_name = model_name
        family = downstream_cfg(model_name)
        model_kwargs = {**family.get("model_kwargs", {}), **model_kwargs}
        isotropic_stride = _isotropic_stride(model_name, model_kwargs)
        if isotropic_stride:
            out_indices = _pyramid_blocks(model_name, model_kwargs, out_indices)
        if out_indices is not None:
            model_kwargs["out_indices"] = tuple(out_indices)
        self.features = timm.create_model(model_name, pretrained=pretrained, features_only=True, **model_kwargs)
        self.out_indices = tuple(self.features.out_indices)
        self.channels = self.features.feature_info.channels()
        self.strides = self.features.feature_info.reduction()
        out_norm = family.get("out_norm")
        self.out_norm_names = [f"norm{i}" for i in self.out_indices] if out_norm else []
        for name, channels in zip(self.out_norm_names, self.channels):
            self.add_module(name, out_norm(channels))
        official_name = family.get("official_out_norm_name", "norm{}".format)
        self.official_out_norm_names = {official_name(i): f"norm{i}" for i in self.out_indices} if out_norm else {}
        self.downsample_ends_stage = family.get("downsample_ends_stage", False)
        self.batch_norm = batch_norm
        self._convert_batch_norm(batch_norm)
        self.pyramid = None
        if isotropic_stride:
            norm = nn.SyncBatchNorm if batch_norm is nn.SyncBatchNorm else nn.BatchNorm2d
            self.pyramid = SimpleFeaturePyramid(self.channels[0], isotropic_stride, norm_layer=norm)
            self.strides = list(PYRAMID_STRIDES)
        self.stem, self.stages = self._stem_and_stages(self.features.model)
        self.norm_eval = norm_eval
        self.freeze_stages(frozen_stages)

    @staticmethod
    def _stem_and_stages(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
        """The stem's modules and the stages the feature getter kept (those up to the last returned)."""
        stage_names = [info["module"] for info in model.feature_info]
        container = stage_names[0].rsplit(".", 1)[0]
        stem = []
        for name, child in model.named_children():
            if name == container.split(".")[0]:
                break
            stem.append(child)
        kept = len(model.get_submodule(container))
        return stem, [model.get_submodule(name) for name in stage_names[:kept]]

    def _convert_batch_norm(self, batch_norm: type[nn.Module]) -> None:
        if batch_norm is FrozenBatchNorm2d:
            self.features = freeze_batch_norm_2d(self.features)
        elif batch_norm is nn.SyncBatchNorm:
            self.features = convert_sync_batchnorm(self.features)
        elif batch_norm is not nn.BatchNorm2d:
            raise ValueError(
                f"batch_norm must be nn.BatchNorm2d, FrozenBatchNorm2d or nn.SyncBatchNorm, got {batch_norm}"
            )

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stages = self.stages[: self.frozen_stages]
        norms = [getattr(self, f"norm{i}") for i in range(self.frozen_stages) if f"norm{i}" in self.out_norm_names]
        following = []
        if self.downsample_ends_stage and 0 < self.frozen_stages < len(self.stages):
            following = [self.stages[self.frozen_stages].downsample]
        return [*self.stem, *stages, *following, *norms]

    def freeze_stages(self, frozen_stages: int) -> None:
        """Stop training the stem (``frozen_stages >= 0``) and stages ``0..frozen_stages-1`` with their
        output norms: no gradients, eval mode."""
        if not -1 <= frozen_stages <= len(self.stages):
            raise ValueError(f"frozen_stages must be in [-1, {len(self.stages)}] (the number of stages), "
                             f"got {frozen_stages}")
        self.frozen_stages = frozen_stages
        self._freeze()

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        if self.frozen_stages >= 0:  # position embeddings and class tokens belong to the stem
            for param in self.features.model.parameters(recurse=False):
                param.requires_grad = False

    def train(self, mode: bool = True) -> DenseBackbone:
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.features(x)
        if self.out_norm_names:
            features = [getattr(self, name)(f) for name, f in zip(self.out_norm_names, features)]
        if self.pyramid is not None:
            features = self.pyramid(features)
        return features

    def convert_official(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The backbone part of an official downstream checkpoint (keys without the detector's
        ``backbone.`` prefix) as this module's state dict.

        The output norms are renamed from their official names (``norm<i>`` unless the family says
        otherwise); the rest goes through the family's ``checkpoint_filter_fn`` (official layouts,
        resized position tables). Raises ``WeightsError`` naming the keys when the checkpoint does not
        fit the model.
        """
        from zoo.hub import KeyReport, WeightsError, apply_checkpoint_filter

        norms, model_keys = {}, {}
        for key, value in state_dict.items():
            module, _, param = key.rpartition(".")
            if module in self.official_out_norm_names:
                norms[f"{self.official_out_norm_names[module]}.{param}"] = value
            else:
                model_keys[key] = value
        model = self.features.model
        converted = apply_checkpoint_filter(self.model_name, model_keys, model)
        own = model.state_dict()
        report = KeyReport.compare({k: v for k, v in converted.items() if k in own}, model)
        if not report.ok:
            raise WeightsError(f"the checkpoint is not a {self.model_name} downstream backbone:\n{report.summary()}")
        missing_norms = [f"{name}.weight" for name in self.out_norm_names if f"{name}.weight" not in norms]
        if missing_norms:
            raise WeightsError(f"the checkpoint has no output norms {missing_norms} of a {self.model_name} "
                               "downstream backbone")
        body = {f"features.model.{k}": v for k, v in converted.items() if k in own}
        return {**body, **norms}

    def parameter_layout(self) -> dict[str, tuple[int, int | None]]:
        """``{parameter name: (stage, block)}`` of the model's parameters, for layer-wise learning-rate decay.

        The stem (with the model's own parameters: position embeddings, class tokens) is stage -1. Within
        a stage, ``block`` is the index of the block (``blocks.<j>``), -1 for
        the stage's downsampling, None for anything else. The output norms are not the model's.
        """
        model = self.features.model
        stem = {id(p) for module in self.stem for p in module.parameters()}
        stem |= {id(p) for p in model.parameters(recurse=False)}
        layout = {}
        for name, param in model.named_parameters():
            key = f"features.model.{name}"
            if id(param) in stem:
                layout[key] = (-1, None)
                continue
            for stage, info in enumerate(model.feature_info):
                rest = name.removeprefix(info["module"] + ".")
                if rest != name:
                    layout[key] = (stage, _block_of(rest))
                    break
        return layout


def _isotropic_stride(model_name: str, model_kwargs: dict) -> int | None:
    """The one stride of every block of an isotropic model (None for a model with stages)."""
    with torch.device("meta"):
        model = timm.create_model(model_name, **model_kwargs)
    strides = {info["reduction"] for info in model.feature_info}
    return strides.pop() if len(strides) == 1 and len(model.feature_info) > 1 else None


def _pyramid_blocks(model_name: str, model_kwargs: dict, out_indices) -> tuple[int, ...]:
    """The four blocks whose maps make the pyramid: ``out_indices``, by default the last block of each
    quarter of the depth (2, 5, 8, 11 of 12, as mmseg's ViT configs take)."""
    with torch.device("meta"):
        depth = len(timm.create_model(model_name, **model_kwargs).feature_info)
    if out_indices is None:
        if depth < 4:
            raise ValueError(f"{model_name} has {depth} blocks; its feature pyramid takes the maps of four")
        return tuple(depth * (i + 1) // 4 - 1 for i in range(4))
    out_indices = tuple(out_indices)
    if len(out_indices) != 4 or len(set(out_indices)) != 4:
        raise ValueError(f"{model_name} is isotropic: out_indices must name four distinct blocks (one per "
                         f"pyramid level, strides {PYRAMID_STRIDES}), got {out_indices}")
    return out_indices


def _block_of(name_in_stage: str) -> int | None:
    """The block index of a parameter named inside a stage: ``blocks.<j>`` -> j, downsampling -> -1."""
    block = re.match(r"blocks\.(\d+)\.", name_in_stage)
    if block:
        return int(block.group(1))
    return -1 if name_in_stage.startswith("downsample") else None
