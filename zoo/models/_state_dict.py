"""What every family's ``checkpoint_filter_fn`` does first: reach the state dict inside a training
checkpoint, and rename an official layout's keys with a table of regular expressions."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

__all__ = ["Renames", "rename_key", "rename_keys", "unwrap_checkpoint"]

Renames = tuple[tuple[str, str | Callable[[re.Match], str]], ...]


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
