"""Registering zoo models in timm's registry.

Every zoo model is a timm model whose name starts with ``zoo_``. ``register_model`` wraps timm's
decorator so that a name timm already knows is an error instead of a silent overwrite, and so
that each family records the keyword arguments of a tiny instance, which the model contract test
uses to walk every registered model through timm's API quickly.
"""

from __future__ import annotations

from collections.abc import Callable

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
