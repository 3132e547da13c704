"""What ``zoo.adapters.mmdet`` and ``zoo.adapters.mmseg`` share: the ``ZooBackbone`` module and the
layer-wise learning-rate decay optimizer constructor. Needs mmengine only; the two adapters register
``ZooBackbone`` in their library's ``MODELS`` registry.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torchvision.ops import FrozenBatchNorm2d

from ._features import DenseBackbone

__all__ = ["LayerDecayOptimWrapperConstructor", "ZooBackbone"]

_BATCH_NORMS = {"BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm, "FrozenBN": FrozenBatchNorm2d}


class ZooBackbone(BaseModule):
    """Any registered zoo model as an OpenMMLab backbone, built as its family's downstream backbone.

    Args:
        model_name: a registered zoo model (``zoo_swin_tiny``).
        out_indices: the stages whose NCHW maps are returned (their channels: ``out_channels``); every
            stage by default. An isotropic model (ViT-like) takes four blocks, whose maps a simple feature
            pyramid rescales to strides 4, 8, 16 and 32 (by default the last block of each quarter).
        drop_path_rate: stochastic depth of the backbone (None keeps the model's default).
        frozen_stages: -1 trains everything; 0 freezes the stem; ``k`` also stages ``0..k-1``.
        norm_eval: keep the BatchNorm layers in eval mode while training.
        norm_cfg: ``dict(type="BN" | "SyncBN" | "FrozenBN")``: what the model's BatchNorm2d layers
            become (use it rather than the runner's ``sync_bn``, which drops timm's fused activations).
        init_cfg: mmengine's ``dict(type="Pretrained", checkpoint=...)``, where the checkpoint is a zoo
            pretrained tag (``"zoo_swin_tiny.ms_in1k"`` or ``".ms_in1k"``), a Hub id
            (``"hf-hub:org/name"``) or a file, official layouts included (the family's
            ``checkpoint_filter_fn`` converts it); with ``prefix="backbone."``, the backbone of a
            detection/segmentation checkpoint file (the family's official downstream one or a zoo one).
            Or any other mmengine initializer.
        model_kwargs: passed to ``timm.create_model``, over the family's downstream ones.

    A whole official detection/segmentation checkpoint also loads into a model with this backbone
    (``load_from`` in a config): its backbone keys, in the official layout, are converted on load.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] | None = None,
        drop_path_rate: float | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_cfg: dict | None = None,
        init_cfg: dict | None = None,
        **model_kwargs,
    ):
        super().__init__(init_cfg)
        norm_type = (norm_cfg or {}).get("type", "BN")
        if norm_type not in _BATCH_NORMS:
            raise ValueError(f"norm_cfg type must be one of {sorted(_BATCH_NORMS)}, got {norm_type!r}")
        if drop_path_rate is not None:
            model_kwargs["drop_path_rate"] = drop_path_rate
        self.model_name = model_name
        self.model_kwargs = model_kwargs
        self.body = DenseBackbone(
            model_name, out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval,
            batch_norm=_BATCH_NORMS[norm_type], **model_kwargs,
        )
        self.register_load_state_dict_pre_hook(self._convert_official_keys)

    def _convert_official_keys(self, module, state_dict: dict, prefix: str, *args) -> None:
        """Before loading: backbone keys in the family's official layout (``<prefix>layers.0...``, as in
        an official detector checkpoint) become this module's (``<prefix>body....``)."""
        official = [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "body.")]
        if not official:
            return
        converted = self.body.convert_official({k.removeprefix(prefix): state_dict.pop(k) for k in official})
        state_dict.update({f"{prefix}body.{k}": v for k, v in converted.items()})

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned map, for the neck's ``in_channels``."""
        return list(self.body.channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.body(x))

    def init_weights(self) -> None:
        if not (self.init_cfg and self.init_cfg.get("type") == "Pretrained"):
            super().init_weights()
            return
        if self.init_cfg.get("prefix"):
            self._load_downstream(self.init_cfg["checkpoint"], self.init_cfg["prefix"])
            self._is_init = True
            return
        name, overlay = self._pretrained_source(self.init_cfg["checkpoint"])
        pretrained = DenseBackbone(
            name, self.body.out_indices, pretrained=True, pretrained_cfg_overlay=overlay,
            batch_norm=self.body.batch_norm, **self.model_kwargs,
        )
        self.body.features.load_state_dict(pretrained.features.state_dict())
        self._is_init = True

    def _load_downstream(self, path: str, prefix: str) -> None:
        """The backbone (keys under ``prefix``) of a detection/segmentation checkpoint file."""
        from zoo.hub import WeightsError, read_checkpoint

        if not os.path.isfile(path):
            raise ValueError(f"init_cfg with prefix={prefix!r} takes a checkpoint file; {path!r} is not one")
        state_dict = {k.removeprefix(prefix): v for k, v in read_checkpoint(path).items() if k.startswith(prefix)}
        if not state_dict:
            raise WeightsError(f"{path} has no keys under {prefix!r}")
        self.load_state_dict(state_dict)

    def _pretrained_source(self, checkpoint: str) -> tuple[str, dict | None]:
        """``(model name with tag, pretrained cfg overlay)`` for a tag, a Hub id or a file."""
        arch = self.model_name.split(".")[0]
        if checkpoint.startswith("."):
            return arch + checkpoint, None
        if checkpoint.startswith(arch + "."):
            return checkpoint, None
        if checkpoint.startswith("hf-hub:"):
            return arch, dict(hf_hub_id=checkpoint.removeprefix("hf-hub:"), hf_hub_filename=None, url=None, file=None)
        if os.path.isfile(checkpoint):
            return arch, dict(file=checkpoint, hf_hub_id=None, hf_hub_filename=None, url=None)
        raise ValueError(
            f"init_cfg checkpoint {checkpoint!r} is neither a pretrained tag of {arch} ('{arch}.<tag>' or "
            "'.<tag>'), a Hub id ('hf-hub:<org>/<name>') nor an existing file"
        )


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (``custom_keys``, ``norm_decay_mult``, ...) plus layer-wise
    learning-rate decay over the stages and blocks of a :class:`ZooBackbone`.

    ``paramwise_cfg`` takes the keys of the ConvNeXt ``LearningRateDecayOptimizerConstructor`` that the
    official HorNet and ParCNetV2 configs use: ``decay_rate``, ``num_layers`` (N) and ``decay_type``.
    A parameter of layer ``l`` has its learning rate multiplied by ``decay_rate ** (N + 1 - l)``;
    the neck, heads and output norms are layer N + 1.

    - ``"stage_wise"``: the stem and every downsampling are layer 0, stage ``i``'s blocks layer ``i + 1``.
    - ``"layer_wise"``: the stem is layer 0; the stages before the deepest (second-last) one are layers
      1, 2, ...; the deepest stage's block ``j`` is layer ``s + j // 3`` (``s`` the next free layer); the
      last stage is layer N. A stage's downsampling and other non-block parameters share its first block's layer.

    The multiplier combines with ``custom_keys``' ``lr_mult``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.decay_rate = float(paramwise_cfg.pop("decay_rate", 1.0))
        self.decay_type = paramwise_cfg.pop("decay_type", "stage_wise")
        self.num_layers = paramwise_cfg.pop("num_layers", None)
        if self.decay_type not in ("stage_wise", "layer_wise"):
            raise ValueError(f"decay_type must be 'stage_wise' or 'layer_wise', got {self.decay_type!r}")
        if not 0.0 < self.decay_rate <= 1.0:
            raise ValueError(f"decay_rate must be in (0, 1], got {self.decay_rate}")
        if self.decay_rate != 1.0 and not isinstance(self.num_layers, int):
            raise ValueError(f"layer-wise decay needs num_layers (an int) in paramwise_cfg, got {self.num_layers!r}")
        if self.decay_rate != 1.0:
            # a non-empty paramwise_cfg makes the default constructor build one group per parameter
            paramwise_cfg.setdefault("custom_keys", {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = "", **kwargs) -> None:
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix or self.decay_rate == 1.0:
            return  # the default constructor recurses through this method: decay once, at the top
        scales = self.layer_scales(module)
        for group in params:
            scale = scales.get(id(group["params"][0]), 1.0)
            group["lr"] = group.get("lr", self.base_lr) * scale

    def layer_scales(self, model: nn.Module) -> dict[int, float]:
        """``{id(parameter): learning-rate multiplier}`` for the parameters of ``model``'s ZooBackbones."""
        scales = {}
        for backbone in model.modules():
            if not isinstance(backbone, ZooBackbone):
                continue
            params = dict(backbone.body.named_parameters())
            num_stages = len(backbone.body.stages)
            for name, (stage, block) in backbone.body.parameter_layout().items():
                layer = self.layer_id(stage, block, num_stages)
                scales[id(params[name])] = self.decay_rate ** (self.num_layers + 1 - layer)
        return scales

    def layer_id(self, stage: int, block: int | None, num_stages: int) -> int:
        if self.decay_type == "stage_wise":
            return 0 if stage < 0 or block == -1 else stage + 1
        deepest = num_stages - 2
        if stage < 0 or (stage == 0 and block == -1):
            return 0
        if stage < deepest:
            return stage + 1
        if stage == deepest:
            return deepest + 1 + max(block or 0, 0) // 3
        return self.num_layers
