"""The weights manifest: one YAML file per family listing every released weight.

The models' ``pretrained_cfg``s are generated from it, so nothing is written twice:

    default_cfgs = generate_default_cfgs(pretrained_cfgs("swin"))

A file has a ``defaults`` section (fields shared by the family's weights), a ``weights`` list (one
entry per released weight, its fields override the defaults), an optional
``models_without_weights`` mapping (registered models with no release: ``name: {overrides}``) and
an optional ``reported`` mapping (``name: {params_m, gflops}`` from the paper, shown by ``zoo list``).

Fields of an entry (with the defaults merged in):

- ``model``, ``tag``: the weight is ``model.tag``; tags are unique per model.
- ``source_url``: where the official file is released; it becomes the cfg's ``url`` (the fallback
  when there is no Hub copy). ``source_format``: the layout of that file, ``official`` (the
  authors' key names, converted on load by the family's ``checkpoint_filter_fn``) or ``timm``.
- ``sha256``: sha256 of the file at ``source_url``, or null when unknown.
- ``hf_hub_id``: a Hub repo holding a copy (``timm/swin_*``, ``Visual-Attention-Network/VAN-*``,
  ...), downloaded first; ``hf_hub_filename`` names the file when it is not ``model.safetensors`` /
  ``pytorch_model.bin``. ``hf_hub_sha256``: sha256 of that Hub file (``hf_hub_filename``, else
  ``model.safetensors``), or null when unknown.
- ``zoo_hub_id``: the zoo's own Hub repo for the converted weight (``zoo weights push``).
- ``input_size`` (resolution), ``crop_pct``, ``interpolation``, ``normalization`` (a key of
  ``NORMALIZATION``, or explicit ``mean`` / ``std``), ``num_classes``: the evaluation settings.
- ``top1``: the reported ImageNet top-1 (%), null for weights without an ImageNet-1k head.
- ``license``: the weights' license (an SPDX-like id as the Hub uses: ``mit``, ``apache-2.0``, ...).
- Any other field of timm's ``PretrainedCfg`` (``pool_size``, ``first_conv``, ``classifier``,
  ``paper_ids``, ``origin_url``, ...) passes through to the cfg unchanged.

Downloaded files are checked against ``sha256`` / ``hf_hub_sha256`` when known (``zoo.hub``).

The tools behind ``zoo weights`` sit beside the manifest: ``zoo.weights.convert`` (an official file
checked and turned into a Hub-ready folder), ``zoo.weights.card`` (its model card) and
``zoo.weights.publish`` (the upload).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterator
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
from timm.models import PretrainedCfg

__all__ = [
    "MANIFEST_ONLY_KEYS",
    "check_manifest",
    "families",
    "iter_weights",
    "manifest",
    "pretrained_cfgs",
    "weight_entry",
    "weights_table",
]

NORMALIZATION = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
}

# Manifest fields that are not part of timm's PretrainedCfg (timm refuses unknown keys).
MANIFEST_ONLY_KEYS = (
    "model",
    "tag",
    "source_url",
    "source_format",
    "zoo_hub_id",
    "sha256",
    "hf_hub_sha256",
    "top1",
    "normalization",
)
PRETRAINED_CFG_KEYS = frozenset(field.name for field in dataclasses.fields(PretrainedCfg))
SOURCE_FORMATS = ("official", "timm")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w.-]+)?")


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
    listed under ``models_without_weights`` (so every model has a pretrained cfg)."""
    data = manifest(family)
    defaults = data["defaults"]
    cfgs = {}
    for entry in data["weights"]:
        cfgs[f"{entry['model']}.{entry['tag']}"] = entry_cfg(entry, defaults)
    for model, overrides in (data.get("models_without_weights") or {}).items():
        cfgs[model] = entry_cfg(overrides or {}, defaults)
    return cfgs


def iter_weights(family: str | None = None) -> Iterator[tuple[str, dict]]:
    """``(family, entry merged with its defaults)`` for every weight, in manifest order."""
    for name in (family,) if family else families():
        data = manifest(name)
        for entry in data["weights"]:
            yield name, {**data["defaults"], **entry}


def weight_entry(model_and_tag: str) -> dict | None:
    """The manifest entry (merged with defaults) of ``model.tag``, or None if it is not listed.

    Without a tag, the model's first entry (its default weight, as timm picks it).
    """
    model = model_and_tag.split(".")[0]
    for _, entry in iter_weights():
        if f"{entry['model']}.{entry['tag']}" == model_and_tag or (
            "." not in model_and_tag and entry["model"] == model
        ):
            return entry
    return None


def weights_table(pattern: str = "*", family: str | None = None) -> list[str]:
    """One line per manifest weight matching ``pattern`` (``model.tag`` glob)."""
    rows = [("weight", "top-1", "size", "classes", "license", "sha256", "Hub copy")]
    for _, entry in iter_weights(family):
        name = f"{entry['model']}.{entry['tag']}"
        if not fnmatch.fnmatch(name, pattern):
            continue
        rows.append(
            (
                name,
                "-" if entry.get("top1") is None else f"{entry['top1']:.1f}",
                "x".join(str(v) for v in entry["input_size"][1:]),
                str(entry["num_classes"]),
                entry["license"],
                "yes" if entry.get("sha256") or entry.get("hf_hub_sha256") else "-",
                entry.get("hf_hub_id") or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _entry_problems(entry: dict) -> list[str]:
    problems = []
    unknown = set(entry) - PRETRAINED_CFG_KEYS - set(MANIFEST_ONLY_KEYS)
    if unknown:
        problems.append(f"unknown fields {sorted(unknown)} (neither manifest fields nor PretrainedCfg fields)")
    if not str(entry.get("model", "")).startswith("zoo_"):
        problems.append("'model' must name a zoo_ model")
    if not entry.get("tag") or "." in str(entry["tag"]):
        problems.append("'tag' must be a non-empty name without dots")
    if not re.match(r"https?://", str(entry.get("source_url", ""))):
        problems.append("'source_url' must be the http(s) URL of the official file")
    if entry.get("source_format") not in SOURCE_FORMATS:
        problems.append(f"'source_format' must be one of {SOURCE_FORMATS}")
    if not isinstance(entry.get("license"), str) or not entry["license"]:
        problems.append("'license' is required")
    size = entry.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        problems.append("'input_size' must be [C, H, W] (the resolution)")
    if "top1" not in entry or not (entry["top1"] is None or 0 < entry["top1"] <= 100):
        problems.append("'top1' must be the reported top-1 in % or null")
    if not isinstance(entry.get("num_classes"), int) or entry["num_classes"] <= 0:
        problems.append("'num_classes' must be a positive integer")
    if not 0 < entry.get("crop_pct", 0) <= 1:
        problems.append("'crop_pct' must be in (0, 1]")
    if entry.get("normalization", "imagenet") not in NORMALIZATION and not ("mean" in entry and "std" in entry):
        problems.append(f"'normalization' must be one of {sorted(NORMALIZATION)} or mean/std given")
    for key in ("sha256", "hf_hub_sha256"):
        if entry.get(key) is not None and not _SHA256.fullmatch(str(entry[key])):
            problems.append(f"{key!r} must be 64 lowercase hex digits or null")
    for key in ("hf_hub_id", "zoo_hub_id"):
        if entry.get(key) is not None and not _REPO_ID.fullmatch(str(entry[key])):
            problems.append(f"{key!r} must be a Hub repo id 'org/name'")
    if not entry.get("zoo_hub_id"):
        problems.append("'zoo_hub_id' (the zoo's target Hub repo) is required")
    return problems


def check_manifest(family: str) -> list[str]:
    """Every problem found in ``weights/<family>.yaml``, as readable lines (empty when it is well-formed)."""
    problems, seen = [], set()
    for _, entry in iter_weights(family):
        name = f"{entry.get('model')}.{entry.get('tag')}"
        if name in seen:
            problems.append(f"{name}: listed twice")
        seen.add(name)
        problems.extend(f"{name}: {problem}" for problem in _entry_problems(entry))
    return problems
