"""Running part of a forward in float32 under autocast."""

from __future__ import annotations

import contextlib

import torch


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off for ``device_type``; a no-op on devices without autocast (e.g. meta)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
