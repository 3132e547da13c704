"""The timm backbone contract, written once for every zoo family.

A family's model class subclasses :class:`Backbone` and declares, in ``__init__``:

- ``self.<stem_name>``: the module that turns the image into the first stage's input
  (``stem_name = None`` when the first stage embeds the image itself, as VAN's does);
- ``self.<stages_name>``: an ``nn.Sequential`` of stages; a stage is one entry of
  ``feature_info`` (a resolution level of a hierarchical model, or one block of an isotropic one);
- ``self.norm``: the norm applied to the last stage's output in ``forward_features``
  (``nn.Identity()`` where the family has none or keeps it in the head);
- ``self.head``: a timm classifier head (``ClassifierHead`` / ``NormMlpClassifierHead``), called
  as ``head(x, pre_logits=...)`` and reset with ``head.reset(num_classes, pool_type)``;
- ``num_classes``, ``in_chans``, ``global_pool``, ``num_features``, ``head_hidden_size`` and
  ``feature_info`` as timm expects them;

and, as class attributes, the layout of its stage outputs (``output_fmt``: ``"NCHW"`` or
``"NHWC"``) and the smallest input it takes (``min_input_size``). It then has timm's whole feature
API: ``forward_features``, ``forward_head``, ``forward_intermediates``,
``prune_intermediate_layers``, ``set_grad_checkpointing``, ``get_classifier``, ``reset_classifier``
and ``group_matcher``, with the input checked before the stem.

Isotropic models (GFNet, SpectFormer's vanilla variants) fit the same way: each block is a
"stage" of ``feature_info`` (all at the patch stride), the patch embedding is the stem, and the
token sequence is kept as an ``(B, H, W, C)`` map (``output_fmt = "NHWC"``), so the intermediates
are feature maps. A family whose stage output is not a map (a class token in front of the
patches) overrides :meth:`Backbone.stage_feature_map`.

Stages that checkpoint their own blocks carry a ``grad_checkpointing`` attribute, which
``set_grad_checkpointing`` sets; any other stage is checkpointed whole.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from timm.layers import NormMlpClassifierHead
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from zoo.hub import build_model_with_cfg
from zoo.layers.checks import check_image_batch

__all__ = ["Backbone", "build_backbone"]

_FORMATS = ("NCHW", "NHWC")


class Backbone(nn.Module):
    """Base class of the zoo's models: timm's feature API over a stem, stages, a norm and a head."""

    stem_name: str | None = "stem"
    stages_name: str = "stages"
    output_fmt: str = "NCHW"
    min_input_size: int | tuple[int, int] = 1

    grad_checkpointing: bool = False

    # -- the parts a family declares -------------------------------------------------------------

    @property
    def body(self) -> nn.Sequential:
        """The stages, whatever the family calls them."""
        return getattr(self, self.stages_name)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Check the image batch, then run the stem."""
        check_image_batch(x, self.in_chans, self.min_input_size, type(self).__name__, next(self.parameters()).dtype)
        return x if self.stem_name is None else getattr(self, self.stem_name)(x)

    def stage_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's output as a ``output_fmt`` feature map (the output itself, unless overridden)."""
        return x

    # -- running the stages ----------------------------------------------------------------------

    def stage_forward(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not hasattr(stage, "grad_checkpointing") and not torch.jit.is_scripting():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> the last stage's output after the final norm, in ``output_fmt``."""
        x = self.stem_forward(x)
        for stage in self.body:
            x = self.stage_forward(stage, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the stages, returning the feature maps of the stages in ``indices`` (in ``output_fmt``)
        and, unless ``intermediates_only``, the output of ``forward_features``. ``norm`` applies the
        final norm to the last stage's map when it is taken."""
        if output_fmt not in _FORMATS:
            raise ValueError(f"output_fmt must be one of {_FORMATS}, got {output_fmt!r}")
        stages = self.body
        take_indices, max_index = feature_take_indices(len(stages), indices)
        if stop_early and not torch.jit.is_scripting():
            stages = stages[: max_index + 1]
        last = len(self.body) - 1
        intermediates = []
        x = self.stem_forward(x)
        for i, stage in enumerate(stages):
            x = self.stage_forward(stage, x)
            if i in take_indices:
                feature = self.norm(x) if norm and i == last else x
                intermediates.append(self._to_format(self.stage_feature_map(feature), output_fmt))
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.body):
            x = self.norm(x)
        return x, intermediates

    def _to_format(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        if fmt == self.output_fmt:
            return x
        return x.permute(0, 3, 1, 2).contiguous() if fmt == "NCHW" else x.permute(0, 2, 3, 1)

    # -- timm's model API ------------------------------------------------------------------------

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and the final norm and head) that the intermediates at ``indices`` do not need."""
        take_indices, max_index = feature_take_indices(len(self.body), indices)
        pruned_end = max_index < len(self.body) - 1
        setattr(self, self.stages_name, self.body[: max_index + 1])
        if prune_norm or pruned_end:
            self.norm = nn.Identity()
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
            if pruned_end and isinstance(self.head, NormMlpClassifierHead):
                self.head.reset(0, pool_type="", reset_other=True)  # its norm was sized for the dropped stages
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.body:
            if hasattr(stage, "grad_checkpointing"):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)
        if global_pool is not None:
            self.global_pool = global_pool

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay: the stem, then each stage's
        downsampling and blocks in order, the final norm last."""
        stages = self.stages_name
        return dict(
            stem=rf"^{self.stem_name}" if self.stem_name else rf"^{stages}\.0\.downsample",
            blocks=rf"^{stages}\.(\d+)" if coarse else [
                (rf"^{stages}\.(\d+)\.downsample", (0,)),
                (rf"^{stages}\.(\d+)\.\w+\.(\d+)", None),
                (rf"^{stages}\.(\d+)\.", (99999,)),
                (r"^norm", (99999,)),
            ],
        )


def build_backbone(
    model_cls: type[Backbone] | Callable[..., Backbone],
    variant: str,
    pretrained: bool,
    num_stages: int,
    checkpoint_filter_fn: Callable | None,
    **kwargs,
) -> Backbone:
    """``build_model_with_cfg`` for a zoo backbone: the family's checkpoint filter loads official
    layouts, and ``features_only`` wraps the model in timm's feature getter (every stage by default)."""
    out_indices = kwargs.pop("out_indices", tuple(range(num_stages)))
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )
