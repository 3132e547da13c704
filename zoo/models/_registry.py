"""Registering zoo models in timm's registry.

Every zoo model is a timm model whose name starts with ``zoo_``. ``register_model`` wraps timm's
decorator so that a name timm already knows is an error instead of a silent overwrite;
``register_variants`` registers a family's whole table of variants through it. Each family also
records the keyword arguments of a tiny instance, which the model contract test uses to walk every
registered model through timm's API quickly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from timm.models import _registry as timm_registry

PREFIX = "zoo_"

_tiny_kwargs: dict[str, dict] = {}


def register_model(fn: Callable) -> Callable:
    """``timm.models.register_model`` for zoo models: checks the prefix and refuses duplicates."""
    name = fn.__name__
    if not name.startswith(PREFIX):
        raise ValueError(f"zoo model names must start with {PREFIX!r}, got {name!r}")
    if name in timm_registry._model_entrypoints:
        raise RuntimeError(f"cannot register {name!r}: timm already has a model of that name")
    return timm_registry.register_model(fn)


def register_variants(create: Callable[..., Any], **variants: dict[str, Any]) -> None:
    """Register one timm entry point per variant: ``timm.create_model(name, pretrained, **kwargs)`` calls
    ``create(name, pretrained, **variant_kwargs)`` updated with the caller's ``kwargs``.

    The entry points become functions of ``create``'s module, as ``@register_model`` functions would be
    (``from zoo.models.swin import zoo_swin_tiny`` works), so register them after the module's
    ``default_cfgs``, which timm reads at registration.
    """
    module = sys.modules[create.__module__]
    for name, model_kwargs in variants.items():
        entrypoint = _variant_entrypoint(create, name, model_kwargs)
        register_model(entrypoint)
        setattr(module, name, entrypoint)


def _variant_entrypoint(create: Callable[..., Any], name: str, model_kwargs: dict[str, Any]) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs):
        return create(name, pretrained, **dict(model_kwargs, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = create.__module__
    entrypoint.__doc__ = f"``{name}``: ``{create.__name__}`` with {model_kwargs}, updated with ``kwargs``."
    return entrypoint


def register_tiny_kwargs(name_prefix: str, **kwargs) -> None:
    """Record the kwargs that build a tiny instance of every model whose name starts with ``name_prefix``.

    They must give a model small enough for a forward and backward pass in well under a second.
    """
    if not name_prefix.startswith(PREFIX):
        raise ValueError(f"tiny kwargs are keyed by a model-name prefix starting with {PREFIX!r}")
    _tiny_kwargs[name_prefix] = kwargs


def tiny_kwargs(model_name: str) -> dict:
    """The tiny-instance kwargs registered for the longest prefix of ``model_name``."""
    arch = model_name.split(".")[0]
    matches = [prefix for prefix in _tiny_kwargs if arch.startswith(prefix)]
    if not matches:
        raise KeyError(f"no tiny kwargs registered for {arch!r}; call register_tiny_kwargs in its model file")
    return dict(_tiny_kwargs[max(matches, key=len)])
