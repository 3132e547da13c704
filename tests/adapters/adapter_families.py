"""One registered model of every family (the first name of each model file), for the adapter tests."""

import timm

import zoo  # noqa: F401  (registers the models)


def _one_model_per_family() -> list[str]:
    first = {}
    for name in timm.list_models("zoo_*"):
        first.setdefault(timm.models.model_entrypoint(name).__module__, name)
    return sorted(first.values())


FAMILY_MODELS = _one_model_per_family()
