"""One registered model of every family (the first name of each model file), for the adapter tests."""

import timm
import torch

import zoo  # noqa: F401  (registers the models)
from zoo.models import tiny_kwargs


def _one_model_per_family() -> list[str]:
    first = {}
    for name in timm.list_models("zoo_*"):
        first.setdefault(timm.models.model_entrypoint(name).__module__, name)
    return sorted(first.values())


FAMILY_MODELS = _one_model_per_family()


def is_isotropic(model_name: str) -> bool:
    """Every block at one stride (ViT-like): the adapters put a simple feature pyramid on four blocks."""
    with torch.device("meta"):
        model = timm.create_model(model_name, **tiny_kwargs(model_name))
    return len({info["reduction"] for info in model.feature_info}) == 1 and len(model.feature_info) > 1


def dense_kwargs(model_name: str) -> dict:
    """The family's tiny instance, four blocks deep where the model is isotropic (one per pyramid level)."""
    kwargs = tiny_kwargs(model_name)
    if is_isotropic(model_name):
        kwargs["depth"] = max(kwargs["depth"], 4)
    return kwargs
