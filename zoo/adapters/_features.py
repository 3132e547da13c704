"""A zoo model as the backbone of a detector or segmenter, shared by the torchvision and OpenMMLab adapters.

:class:`DenseBackbone` wraps a registered zoo model built with ``features_only=True`` (timm's feature
getter: NCHW maps of the stages in ``out_indices``, the head and final norm pruned) and adds what the
dense-prediction code of the families does around it:

- the family's own downstream construction, read from its model file's ``downstream_cfg``
  (``model_kwargs`` to build with, and ``out_norm``, a norm applied to every output map as ``norm<i>``);
- frozen stages (``frozen_stages``, mmdet's convention: 0 freezes the stem, ``k`` also stages ``0..k-1``);
- BatchNorm in eval mode while training (``norm_eval``) and conversion of BatchNorm layers;
- the stage and block of every parameter, for layer-wise learning-rate decay.

A model's stages are those of its ``feature_info``; its stem is every top-level module that comes
before the stages' container.
"""

from __future__ import annotations

import importlib
import re

import timm
import torch
import torch.nn as nn
from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["DenseBackbone", "downstream_cfg"]


def downstream_cfg(model_name: str) -> dict:
    """How the family's official detection/segmentation code builds ``model_name`` (empty if nothing special)."""
    arch = model_name.split(".")[0]
    if not arch.startswith("zoo_") or arch not in timm.list_models("zoo_*"):
        raise ValueError(f"{model_name!r} is not a registered zoo model (see `zoo list` or timm.list_models('zoo_*'))")
    module = importlib.import_module(timm.models.model_entrypoint(arch).__module__)
    return dict(getattr(module, "downstream_cfg", {}))


class DenseBackbone(nn.Module):
    """Multi-scale NCHW feature maps of a zoo model, built as its family's downstream backbone.

    Args:
        model_name: a registered zoo model, optionally with a pretrained tag (``zoo_swin_tiny.ms_in1k``).
        out_indices: the stages whose maps are returned (every stage by default).
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
        family = downstream_cfg(model_name)
        model_kwargs = {**family.get("model_kwargs", {}), **model_kwargs}
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
        self.batch_norm = batch_norm
        self._convert_batch_norm(batch_norm)
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
        return [*self.stem, *stages, *norms]

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
        return features

    def parameter_layout(self) -> dict[str, tuple[int, int | None]]:
        """``{parameter name: (stage, block)}`` of the model's parameters, for layer-wise learning-rate decay.

        The stem is stage -1. Within a stage, ``block`` is the index of the block (``blocks.<j>``), -1 for
        the stage's downsampling, None for anything else. The output norms are not the model's.
        """
        model = self.features.model
        stem = {id(p) for module in self.stem for p in module.parameters()}
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


def _block_of(name_in_stage: str) -> int | None:
    """The block index of a parameter named inside a stage: ``blocks.<j>`` -> j, downsampling -> -1."""
    block = re.match(r"blocks\.(\d+)\.", name_in_stage)
    if block:
        return int(block.group(1))
    return -1 if name_in_stage.startswith("downsample") else None
