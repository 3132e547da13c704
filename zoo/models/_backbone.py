"""The timm backbone contract, written once for every zoo family.

A family's model class subclasses :class:`Backbone`, takes its architecture's arguments and passes
the rest (timm's classifier arguments ``in_chans``, ``num_classes``, ``global_pool`` and
``drop_rate``) on to ``Backbone.__init__``, which keeps them as attributes; it declares, in its own
``__init__``:

- ``self.<stem_name>``: the module that turns the image into the first stage's input
  (``stem_name = None`` when the first stage embeds the image itself, as VAN's does);
- ``self.<stages_name>``: an ``nn.Sequential`` of stages; a stage is one entry of
  ``feature_info`` (a resolution level of a hierarchical model, or one block of an isotropic one);
- ``self.norm``: the norm applied to the last stage's output in ``forward_features``
  (``nn.Identity()`` where the family has none, keeps it in the head, as ``NormMlpClassifierHead``
  does, or ends each stage with its own);
- ``self.head``: a timm classifier head (``ClassifierHead`` / ``NormMlpClassifierHead``), called
  as ``head(x, pre_logits=...)`` and reset with ``head.reset(num_classes, pool_type)``;
- ``num_features``, ``head_hidden_size`` and ``feature_info`` as timm expects them;

and, as class attributes, the layout of its stage outputs (``output_fmt``: ``"NCHW"`` or
``"NHWC"``) and the smallest input it takes (``min_input_size``). It then has timm's whole feature
API: ``forward_features``, ``forward_head``, ``forward_intermediates``,
``prune_intermediate_layers``, ``set_grad_checkpointing``, ``get_classifier``, ``reset_classifier``
and ``group_matcher``, with the input checked before the stem.

Stages are usually :class:`Stage` (a downsampling module then a sequence of blocks) or a subclass
of it. :meth:`Backbone.build_pyramid` builds the stages of a pyramid (stride-4 stem, then 2x per stage)
with their ``feature_info`` (:func:`pyramid_feature_info` declares that alone for families that build
their own stages), and :meth:`Backbone.classifier_head` / :meth:`Backbone.norm_mlp_classifier_head`
the head from the classifier arguments. :func:`backbone_creator` gives the family's
``create(variant, pretrained, **kwargs)`` for ``register_variants``.

Where a family differs, it overrides one small method: :meth:`Backbone.final_features` when something
other than the norm follows the last stage (ParCNet's 1x1 expansion, ParCNetV2's return to NCHW),
``forward_head`` / ``get_classifier`` / ``reset_classifier`` when its head is not a timm
classifier head (SHViT's BatchNorm + linear classifier after a separate pooling).

Isotropic models (GFNet, SpectFormer's vanilla variants, LKCA, Agent-DeiT) subclass
:class:`IsotropicBackbone`, with the blocks as the stages: ``stages_name = "blocks"``,
``self.blocks = nn.Sequential(*blocks)`` and one ``feature_info`` entry per block (``reduction`` = the
patch size, ``module=f"blocks.{i}"``), both made by :meth:`IsotropicBackbone.embed_patches`. The
stem is the patch embedding (:func:`token_map_patch_embed`, timm's ``PatchEmbed(..., output_fmt="NHWC")``,
plus the position embedding where there is one) and the tokens stay an ``(B, H, W, C)`` map between blocks
(``output_fmt = "NHWC"``, head ``ClassifierHead(..., input_fmt="NHWC")``), so every block's output
is a feature map for ``forward_intermediates`` and ``features_only``, ``prune_intermediate_layers``
drops the blocks after the last one taken and ``set_grad_checkpointing`` checkpoints block by
block. A family whose blocks carry something besides the map (a class token in front of the
patches) overrides :meth:`Backbone.stage_feature_map` to return the map alone.

Stages that checkpoint their own blocks carry a ``grad_checkpointing`` attribute, which
``set_grad_checkpointing`` sets; a plain ``nn.Sequential`` stage is checkpointed block by block,
any other stage whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, NormMlpClassifierHead, PatchEmbed, calculate_drop_path_rates, trunc_normal_
from timm.models import checkpoint_seq
from timm.models._features import FeatureGetterNet, feature_take_indices
from torch.utils.checkpoint import checkpoint

from zoo.hub import build_model_with_cfg
from zoo.layers.checks import check_image_batch

__all__ = [
    "Backbone",
    "IsotropicBackbone",
    "Stage",
    "StageFeatures",
    "backbone_creator",
    "build_backbone",
    "init_conv_fan_out",
    "init_trunc_normal",
    "pyramid_feature_info",
    "token_map_patch_embed",
]

_FORMATS = ("NCHW", "NHWC")


class Stage(nn.Module):
    """One resolution level: ``downsample`` (``nn.Identity()`` where the stem or nothing downsamples),
    then ``blocks``, each recomputed in the backward pass when ``grad_checkpointing`` is set."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Backbone(nn.Module):
    """Base class of the zoo's models: timm's feature API over a stem, stages, a norm and a head."""

    stem_name: str | None = "stem"
    stages_name: str = "stages"
    output_fmt: str = "NCHW"
    min_input_size: int | tuple[int, int] = 1

    grad_checkpointing: bool = False

    def __init__(self, *, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg", drop_rate: float = 0.0):
        """timm's classifier arguments: the image's channels, the classes (0 for none), the pooling and the
        dropout before the classifier."""
        super().__init__()
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop_rate = drop_rate

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

    def final_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output -> ``forward_features``' output: the final norm."""
        return self.norm(x)

    def classifier_head(self) -> ClassifierHead:
        """timm's ``ClassifierHead`` for this model: ``global_pool`` over the ``num_features`` channels of an
        ``output_fmt`` map (set ``num_features`` first), ``drop_rate`` dropout, then the linear classifier."""
        return ClassifierHead(self.num_features, self.num_classes, pool_type=self.global_pool,
                              drop_rate=self.drop_rate, input_fmt=self.output_fmt)

    def norm_mlp_classifier_head(self) -> NormMlpClassifierHead:
        """timm's ``NormMlpClassifierHead`` (ConvNeXt's head) for this model: ``global_pool`` over the
        ``num_features`` channels of an NCHW map, LayerNorm (eps 1e-6), ``drop_rate`` dropout, then the linear
        classifier. The head holds the final norm, so ``self.norm`` is ``nn.Identity()``."""
        return NormMlpClassifierHead(self.num_features, self.num_classes, pool_type=self.global_pool,
                                     drop_rate=self.drop_rate)

    def build_pyramid(
        self,
        stage: Callable[..., nn.Module],
        dims: Sequence[int],
        depths: Sequence[int],
        drop_path_rate: float,
        stem_stride: int = 4,
        **per_stage: Sequence,
    ) -> None:
        """Set ``self.<stages_name>`` to the stages of a pyramid whose stem has stride ``stem_stride`` and whose
        later stages each halve the map, with ``feature_info``, ``num_features`` and ``head_hidden_size``.

        Stage ``i`` is ``stage(dims[i - 1], dims[i], drop_path=rates, downsample=i > 0, name=values[i], ...)``
        for every ``name=values`` in ``per_stage`` (``dims[0]`` as the first stage's input width); ``rates``
        holds the stochastic-depth rate of each of its ``depths[i]`` blocks, rising linearly from 0 to
        ``drop_path_rate`` over the whole model.
        """
        drop_path = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages = []
        for i, dim in enumerate(dims):
            settings = {name: values[i] for name, values in per_stage.items()}
            stages.append(stage(dims[max(i - 1, 0)], dim, drop_path=drop_path[i], downsample=i > 0, **settings))
        setattr(self, self.stages_name, nn.Sequential(*stages))
        self.feature_info = pyramid_feature_info(dims, stem_stride, self.stages_name)
        self.num_features = self.head_hidden_size = dims[-1]

    # -- running the stages ----------------------------------------------------------------------

    def stage_forward(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.grad_checkpointing or hasattr(stage, "grad_checkpointing") or torch.jit.is_scripting():
            return stage(x)
        if isinstance(stage, nn.Sequential):
            return checkpoint_seq(stage, x)
        return checkpoint(stage, x, use_reentrant=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> the last stage's output after ``final_features`` (the final norm)."""
        x = self.stem_forward(x)
        for stage in self.body:
            x = self.stage_forward(stage, x)
        return self.final_features(x)

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
        final norm to the last stage's map when it is taken (nothing where the norm is an identity)."""
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
            x = self.final_features(x)
        return x, intermediates

    def _to_format(self, x: torch.Tensor, fmt: str) -> torch.Tensor:
        if fmt == self.output_fmt:
            return x
        return x.permute(0, 3, 1, 2).contiguous() if fmt == "NCHW" else x.permute(0, 2, 3, 1)

    # -- timm's model API ------------------------------------------------------------------------

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (and the final norm and head) that the intermediates at ``indices`` do not need.

        A ``NormMlpClassifierHead`` holds the final norm, which goes with the head under ``prune_norm``
        or when the last stage goes."""
        take_indices, max_index = feature_take_indices(len(self.body), indices)
        pruned_end = max_index < len(self.body) - 1
        setattr(self, self.stages_name, self.body[: max_index + 1])
        if prune_norm or pruned_end:
            self.norm = nn.Identity()
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, "")
            if (prune_norm or pruned_end) and isinstance(self.head, NormMlpClassifierHead):
                self.head.reset(0, pool_type="", reset_other=True)
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


def token_map_patch_embed(
    img_size: int | tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, **kwargs
) -> PatchEmbed:
    """timm's ``PatchEmbed`` as the stem of a token-map family: ``(B, H, W, C)`` out, any input size
    (``dynamic_img_pad=True``, the default here, pads it up to a multiple of the patch)."""
    kwargs.setdefault("dynamic_img_pad", True)
    return PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                      output_fmt="NHWC", strict_img_size=False, **kwargs)


class IsotropicBackbone(Backbone):
    """The isotropic layout of the module docstring: the patch embedding ``patch_embed`` as the stem, the
    blocks as the stages on an ``(B, H, W, C)`` token map, a learned position embedding ``pos_embed``
    (exempt from weight decay, grouped with the stem)."""

    stem_name = "patch_embed"
    stages_name = "blocks"
    output_fmt = "NHWC"

    def embed_patches(self, img_size: int | tuple[int, int], patch_size: int, embed_dim: int, depth: int,
                      **kwargs) -> tuple[int, int]:
        """``self.patch_embed`` (:func:`token_map_patch_embed`) and one ``feature_info`` entry per block, at
        stride ``patch_size``; returns the patch grid at ``img_size``."""
        self.patch_embed = token_map_patch_embed(img_size, patch_size, self.in_chans, embed_dim, **kwargs)
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        return self.patch_embed.grid_size

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """The patch and position embeddings, then one group per block."""
        return dict(stem=r"^patch_embed|^pos_embed", blocks=r"^blocks\.(\d+)")


def init_trunc_normal(module: nn.Module, layers: tuple[type[nn.Module], ...] = (nn.Linear,)) -> None:
    """Truncated-normal weights (std 0.02) and zero biases for the ``layers`` types, the usual
    initialization of attention and ConvNeXt-style families: ``model.apply(init_trunc_normal)``."""
    if isinstance(module, layers):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def init_conv_fan_out(module: nn.Module) -> None:
    """:func:`init_trunc_normal` for linears, and convolutions drawn from N(0, 2 / fan_out) with the fan-out
    over one group's kernel taps and output channels (He, fan-out mode) and zero biases: the
    initialization of the PVTv2-derived families: ``model.apply(init_conv_fan_out)``."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    else:
        init_trunc_normal(module)


class StageFeatures(FeatureGetterNet):
    """timm's feature getter (``features_only``) over every stage, unless ``out_indices`` chooses."""

    def __init__(self, model: Backbone, out_indices: int | tuple[int, ...] | None = None, **kwargs):
        if out_indices is None:
            out_indices = tuple(range(len(model.feature_info)))
        super().__init__(model, out_indices=out_indices, **kwargs)


def build_backbone(
    model_cls: type[Backbone] | Callable[..., Backbone],
    variant: str,
    pretrained: bool,
    checkpoint_filter_fn: Callable | None,
    **kwargs,
) -> Backbone:
    """``build_model_with_cfg`` for a zoo backbone: the family's checkpoint filter loads official
    layouts, and ``features_only`` gives :class:`StageFeatures` (``out_indices`` passes through)."""
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls=StageFeatures, out_indices=None),
        **kwargs,
    )


def backbone_creator(model_cls: type[Backbone], checkpoint_filter_fn: Callable | None) -> Callable[..., Backbone]:
    """A family's ``create(variant, pretrained=False, **kwargs)`` for ``register_variants``: :func:`build_backbone`
    of ``model_cls`` with the family's checkpoint filter, a function of ``model_cls``' module."""

    def create(variant: str, pretrained: bool = False, **kwargs) -> Backbone:
        return build_backbone(model_cls, variant, pretrained, checkpoint_filter_fn, **kwargs)

    create.__name__ = create.__qualname__ = f"create_{model_cls.__name__}"
    create.__module__ = model_cls.__module__
    return create


def pyramid_feature_info(dims: Sequence[int], stem_stride: int = 4, stages_name: str = "stages") -> list[dict]:
    """``feature_info`` of a hierarchical model's stages: stage ``i`` gives ``dims[i]`` channels at stride
    ``stem_stride * 2**i`` (its input downsampled ``stem_stride`` times before stage 0, then 2 times per stage)."""
    return [
        dict(num_chs=dim, reduction=stem_stride * 2**i, module=f"{stages_name}.{i}") for i, dim in enumerate(dims)
    ]
