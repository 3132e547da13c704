"""What every family's ``checkpoint_filter_fn`` does first: reach the state dict inside a training
checkpoint, and rename an official layout's keys with a table of regular expressions."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

__all__ = ["CONVNEXT_RENAMES", "Renames", "rename_key", "rename_keys", "unwrap_checkpoint"]

Renames = tuple[tuple[str, str | Callable[[re.Match], str]], ...]

# ConvNeXt's official layout, which the official code of several families keeps -> ours: the stem is
# ``downsample_layers.0``, stage i's downsampling ``downsample_layers.i`` and its blocks ``stages.i.j``.
CONVNEXT_RENAMES: Renames = (
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
)


def unwrap_checkpoint(checkpoint: dict, wrappers: tuple[str, ...] = ("model", "state_dict")) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint: descend into each of ``wrappers`` in turn where it holds a
    dict, then drop the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    state_dict = checkpoint
    for wrapper in wrappers:
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def rename_key(key: str, renames: Renames) -> str:
    """``key`` after each ``(pattern, replacement)`` of ``renames`` (``re.sub``), in order."""
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def rename_keys(state_dict: dict[str, torch.Tensor], renames: Renames) -> dict[str, torch.Tensor]:
    """``state_dict`` with every key renamed by :func:`rename_key`."""
    return {rename_key(key, renames): value for key, value in state_dict.items()}
