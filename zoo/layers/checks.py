"""Input validation shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_per_stage(**per_stage: Sequence) -> None:
    """Raise a ValueError unless the per-stage settings in ``per_stage`` (by argument name) have one entry per
    stage: all as many entries as the first."""
    if len({len(values) for values in per_stage.values()}) > 1:
        described = [f"{name} {tuple(values)}" for name, values in per_stage.items()]
        raise ValueError(f"{', '.join(described[:-1])} and {described[-1]} need one entry per stage")


def check_image_batch(
    x: torch.Tensor,
    in_chans: int,
    min_size: int | tuple[int, int],
    model: str,
    dtype: torch.dtype | None = None,
) -> None:
    """Raise a ValueError unless ``x`` is a floating-point ``(B, in_chans, H, W)`` batch with H, W >= ``min_size``,
    of ``dtype`` (the model's weights) when given, unless autocast is on. A channels-last ``(B, H, W, C)``
    image gets the permute that fixes it."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    min_h, min_w = (min_size, min_size) if isinstance(min_size, int) else min_size
    if x.dim() != 4:
        raise ValueError(
            f"{model} expects a 4-D image batch (B, {in_chans}, H, W), got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{model} expects a floating-point image batch (normalized float32), got {x.dtype}; convert it with "
            "x.float() / 255 and normalize it with the model's mean and std (timm.data.resolve_data_config)"
        )
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{model} has {dtype} weights and expects a {dtype} batch, got {x.dtype}; convert it with "
            f"x.to({dtype}), or run the model under torch.autocast"
        )
    if x.shape[1] != in_chans and x.shape[3] == in_chans:
        raise ValueError(
            f"{model} expects channels first (B, {in_chans}, H, W), got a channels-last tensor of shape "
            f"{tuple(x.shape)}; pass x.permute(0, 3, 1, 2)"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{model} expects {in_chans} input channels (B, {in_chans}, H, W), got {x.shape[1]} channels "
            f"in a tensor of shape {tuple(x.shape)}; create the model with in_chans={x.shape[1]} to change it"
        )
    if x.shape[2] < min_h or x.shape[3] < min_w:
        raise ValueError(
            f"{model} needs an input of at least {min_h}x{min_w} pixels, got {x.shape[2]}x{x.shape[3]}"
        )
