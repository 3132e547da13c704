"""The weights manifest: one YAML file per family listing every released weight.

Each entry names the model and tag, where the weights come from (official URL and format, the
Hub repo of a copy when one exists, the zoo's own target Hub repo), the file's sha256 when known,
the evaluation settings (resolution, crop_pct, mean/std, number of classes), the reported ImageNet
top-1 and the license. The models' ``pretrained_cfg``s are generated from it, so nothing is
written twice:

    default_cfgs = generate_default_cfgs(pretrained_cfgs("swin"))
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

__all__ = ["manifest", "families", "pretrained_cfgs", "MANIFEST_ONLY_KEYS"]

NORMALIZATION = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
}

# Manifest fields that are not part of timm's PretrainedCfg (timm keeps unknown keys out of it).
MANIFEST_ONLY_KEYS = ("model", "tag", "source_url", "source_format", "zoo_hub_id", "sha256", "top1", "normalization")


@cache
def families() -> tuple[str, ...]:
    """The families that have a manifest file."""
    return tuple(sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")))


@cache
def manifest(family: str) -> dict:
    """The parsed manifest of ``family``: ``{"defaults": {...}, "weights": [entry, ...]}``."""
    path = resources.files(__name__) / f"{family}.yaml"
    if not path.is_file():
        raise KeyError(f"no weights manifest for family {family!r}; known: {', '.join(families())}")
    data = yaml.safe_load(path.read_text())
    for key in ("defaults", "weights"):
        if key not in data:
            raise ValueError(f"weights/{family}.yaml must have a top-level {key!r} section")
    return data


def entry_cfg(entry: dict, defaults: dict) -> dict:
    """One manifest entry merged over its family's defaults, as a timm pretrained cfg dict."""
    merged = {**defaults, **entry}
    mean, std = NORMALIZATION[merged.get("normalization", "imagenet")]
    cfg = {k: v for k, v in merged.items() if k not in MANIFEST_ONLY_KEYS}
    cfg.setdefault("mean", mean)
    cfg.setdefault("std", std)
    for key in ("input_size", "pool_size", "test_input_size", "min_input_size"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    if merged.get("source_url") and "url" not in cfg:
        cfg["url"] = merged["source_url"]
    return cfg


def pretrained_cfgs(family: str) -> dict[str, dict]:
    """``{"model.tag": cfg}`` for every weight of ``family``, plus an untagged cfg for each model
    listed under ``models`` that has no released weight (so every model has a pretrained cfg)."""
    data = manifest(family)
    defaults = data["defaults"]
    cfgs = {}
    for entry in data["weights"]:
        cfgs[f"{entry['model']}.{entry['tag']}"] = entry_cfg(entry, defaults)
    for model, overrides in (data.get("models_without_weights") or {}).items():
        cfgs[model] = entry_cfg(overrides or {}, defaults)
    return cfgs


def weight_entry(model_and_tag: str) -> dict | None:
    """The manifest entry (merged with defaults) of ``model.tag``, or None if it is not listed."""
    model = model_and_tag.split(".")[0]
    for family in families():
        data = manifest(family)
        for entry in data["weights"]:
            if f"{entry['model']}.{entry['tag']}" == model_and_tag or (
                "." not in model_and_tag and entry["model"] == model
            ):
                return {**data["defaults"], **entry}
    return None
