"""Pretrained weights: download, verification, safe loading, conversion to the Hub format, publishing.

``timm.create_model("zoo_<model>.<tag>", pretrained=True)`` goes through :func:`build_model_with_cfg`,
a drop-in for timm's: it fetches the weight file named by the model's pretrained cfg (generated from
``weights/<family>.yaml``) with ``huggingface_hub`` (or from the official URL when there is no Hub
copy), checks its sha256 against the manifest when one is known, and hands the local file to timm,
whose loader runs the family's ``checkpoint_filter_fn`` (official layouts convert on load).
Failures become one :class:`WeightsError` that says where the weights come from and how to use a
local copy. Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors; a pickle
that needs code to load is refused.

``zoo weights convert | verify | push | list`` (:func:`add_weights_commands`) turn an official file
into a Hub-ready folder (``config.json``, ``model.safetensors``, model card), check a file, upload
a folder and list the manifest.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import timm
import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
from timm.models import build_model_with_cfg as timm_build_model_with_cfg
from timm.models import load_state_dict, resolve_pretrained_cfg, split_model_name_tag
from timm.models._hub import download_cached_file, get_cache_dir, hf_split, save_for_hf
from torch.utils.flop_counter import FlopCounterMode

from zoo.weights import families, iter_weights, weight_entry

__all__ = [
    "KeyReport",
    "WeightsError",
    "add_weights_commands",
    "build_model_with_cfg",
    "convert_checkpoint",
    "fetch_weights",
    "push_folder",
    "read_checkpoint",
    "sha256_file",
    "verify_checkpoint",
]

HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")  # timm's order when no filename is given

# Plain-data globals found in training checkpoints (argparse args, numpy scalar metrics): safe to
# unpickle, unlike arbitrary classes, whose reconstruction runs code. numpy 1.x pickles name the
# scalar constructor numpy.core.multiarray.scalar, numpy 2 numpy._core.multiarray.scalar.
_numpy_scalar = np._core.multiarray.scalar
SAFE_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    np.dtype,
    _numpy_scalar,
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType") and name != "ObjectDType"),
]


class WeightsError(RuntimeError):
    """A weight file that cannot be found, downloaded, verified or read, or that does not fit the model."""


# ----------------------------------------------------------------------------------------------
# Reading and checking files


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str | None, origin: str) -> None:
    """Raise if ``path`` does not have the sha256 the manifest gives for ``origin`` (skipped when unknown)."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(
            f"sha256 mismatch for {path} (from {origin}): expected {expected}, got {actual}. The file is "
            "corrupted, truncated or not the released one; delete it and download it again."
        )


def _refuse_code_pickle(path: Path, unsafe: list[str]) -> WeightsError:
    return WeightsError(
        f"refusing to load {path}: unpickling it would run arbitrary code (it needs {', '.join(unsafe)}). "
        "Only plain tensors and data are loaded (torch.load(weights_only=True)). If you trust the file, "
        "extract its state dict in a separate step, e.g. torch.save(torch.load(FILE, weights_only=False)"
        "['model'], 'clean.pth'), and use the clean file."
    )


def check_readable(path: str | os.PathLike) -> None:
    """Cheap structural checks before a full load: a safetensors header covering the whole file, or a
    torch zip archive whose pickle needs no code. Raises :class:`WeightsError` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} {'is not a file' if path.exists() else 'does not exist'}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from e
        return
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        if head.startswith(b"\x80"):
            return  # the legacy (pre-zip) torch.save format has no cheap check; torch.load tells
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupted?)")
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupted?): {e}") from e
    if unsafe:
        raise _refuse_code_pickle(path, unsafe)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors or a torch pickle, loaded with ``weights_only=True``),
    unwrapped as timm does (EMA weights first, then ``state_dict`` / ``model``, ``module.`` removed)."""
    check_readable(path)
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            return load_state_dict(str(path), weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise WeightsError(f"cannot read {path} as a checkpoint (truncated, corrupted or not weights): {e}") from e


# ----------------------------------------------------------------------------------------------
# Fetching the weights of a pretrained cfg


def _model_and_tag(cfg: dict) -> str:
    return f"{cfg.get('architecture')}.{cfg.get('tag')}" if cfg.get("tag") else str(cfg.get("architecture"))


def _hub_reason(error: Exception, repo_id: str) -> str:
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        where = "offline (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else "the Hub could not be reached"
        return f"{where} and the file is not in the local Hugging Face cache"
    if isinstance(error, GatedRepoError):
        return f"the repo is gated: accept its terms at https://huggingface.co/{repo_id} and log in (hf auth login)"
    if isinstance(error, RepositoryNotFoundError):
        return "the repo does not exist or is private"
    if isinstance(error, RevisionNotFoundError):
        return "the revision does not exist"
    if isinstance(error, EntryNotFoundError):
        return "the repo has no such file"
    return f"{type(error).__name__}: {error}"


def _download_from_hub(cfg: dict, cache_dir) -> tuple[Path, str]:
    """``(local path, filename)`` of the Hub copy; raises WeightsError with the reason."""
    repo_id, revision = hf_split(cfg["hf_hub_id"])
    filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_FILENAMES
    tried: dict[str, list[str]] = {}  # reason -> file names
    for filename in filenames:
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, library_name="zoo")
            return Path(path), filename
        except (EntryNotFoundError, OSError, ValueError) as e:
            tried.setdefault(_hub_reason(e, repo_id), []).append(filename)
            if not isinstance(e, EntryNotFoundError):
                break
    raise WeightsError("; ".join(f"{reason} ({', '.join(names)})" for reason, names in tried.items()))


def _download_from_url(url: str, cache_dir) -> Path:
    cached = Path(cache_dir or get_cache_dir()) / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    if constants.is_offline_mode():
        raise WeightsError(f"offline (HF_HUB_OFFLINE is set) and not in the download cache ({cached})")
    try:
        return Path(download_cached_file(url, check_hash=False, progress=True, cache_dir=cache_dir))
    except (OSError, ValueError) as e:
        raise WeightsError(f"download failed: {e}") from e


def _not_found_message(cfg: dict, reasons: list[str]) -> str:
    name = _model_and_tag(cfg)
    lines = [f"cannot get the pretrained weights of {name}:"]
    lines += [f"  - {reason}" for reason in reasons]
    lines.append("The weights come from:")
    if cfg.get("hf_hub_id"):
        lines.append(f"  - the Hugging Face Hub: https://huggingface.co/{hf_split(cfg['hf_hub_id'])[0]}")
    if cfg.get("url"):
        lines.append(f"  - the official release: {cfg['url']}")
    lines += [
        "With a local copy of the file (e.g. downloaded elsewhere), either convert it once:",
        f"    zoo weights convert {name} FILE DIR",
        '    timm.create_model("local-dir:DIR", pretrained=True)',
        "or load it directly:",
        f'    timm.create_model("{name}", pretrained=True, pretrained_cfg_overlay=dict(file="FILE"))',
    ]
    return "\n".join(lines)


def _expected_sha256(cfg: dict, origin: str, filename: str | None = None) -> str | None:
    """The manifest's sha256 for the file ``cfg`` points at, when the cfg still points where the manifest does."""
    entry = weight_entry(_model_and_tag(cfg)) if cfg.get("tag") else None
    if entry is None:
        return None
    if origin == "hub":
        designated = entry.get("hf_hub_filename") or HUB_FILENAMES[0]
        same = entry.get("hf_hub_id") == cfg.get("hf_hub_id") and filename == designated
        return entry.get("hf_hub_sha256") if same else None
    return entry.get("sha256") if entry.get("source_url") == cfg.get("url") else None


def fetch_weights(cfg: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local file of the weights ``cfg`` names (Hub copy first, official URL when there is none),
    downloaded if needed and checked against the manifest's sha256 when it is known."""
    if not (cfg.get("hf_hub_id") or cfg.get("url")):
        raise WeightsError(
            f"{_model_and_tag(cfg)} has no released weights (`zoo weights list` shows those that do); "
            "use pretrained=False, or pretrained_cfg_overlay=dict(file=...) for a checkpoint of your own."
        )
    try:
        if cfg.get("hf_hub_id"):
            path, filename = _download_from_hub(cfg, cache_dir)
            origin, expected = f"hf-hub:{cfg['hf_hub_id']}", _expected_sha256(cfg, "hub", filename)
        else:
            path = _download_from_url(cfg["url"], cache_dir)
            origin, expected = cfg["url"], _expected_sha256(cfg, "url")
    except WeightsError as e:
        raise WeightsError(_not_found_message(cfg, [str(e)])) from e
    check_sha256(path, expected, origin)
    return path


def _uses_registry_source(cfg: dict) -> bool:
    """Whether timm would load ``cfg``'s weights from its registry locations (Hub id / URL) rather
    than from a file, a state dict, a ``local-dir:`` folder or an ``hf-hub:`` model name."""
    return cfg.get("source") not in ("hf-hub", "local-dir") and not cfg.get("file") and not cfg.get("state_dict")


def build_model_with_cfg(model_cls: type | Callable, variant: str, pretrained: bool, **kwargs):
    """timm's ``build_model_with_cfg`` with the zoo's weight fetching (see the module docstring).

    Same signature and behaviour as timm's; with ``pretrained``, registry weights are fetched and
    verified here and passed to timm as ``pretrained_cfg_overlay=dict(file=...)``, so timm's
    loader applies ``pretrained_filter_fn``, the classifier and input-channel adaptation.
    """
    if not pretrained:
        return timm_build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")).to_dict()
    if cfg.get("custom_load"):
        return timm_build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    if _uses_registry_source(cfg):
        path = fetch_weights(cfg, kwargs.get("cache_dir"))
        check_readable(path)
        kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), "file": str(path)}
    elif cfg.get("file") and cfg.get("source") != "local-dir":
        check_readable(cfg["file"])
    with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
        return timm_build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


# ----------------------------------------------------------------------------------------------
# Matching a checkpoint to a model


@dataclass
class KeyReport:
    """How a (filtered) state dict fits a model: keys the model lacks, has extra, or of other shapes."""

    matched: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @classmethod
    def compare(cls, state_dict: dict, model: torch.nn.Module) -> KeyReport:
        expected = model.state_dict()
        report = cls(matched=0, unexpected=[k for k in state_dict if k not in expected])
        for key, target in expected.items():
            if key not in state_dict:
                report.missing.append(key)
            elif tuple(state_dict[key].shape) != tuple(target.shape):
                report.mismatched.append((key, tuple(state_dict[key].shape), tuple(target.shape)))
            else:
                report.matched += 1
        return report

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        lines = [
            f"{self.matched} keys match, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} with another shape"
        ]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
                lines.append(f"  {title}: {', '.join(keys[:limit])}{more}")
        for key, got, want in self.mismatched[:limit]:
            lines.append(f"  {key}: checkpoint {list(got)}, model {list(want)}")
        if len(self.mismatched) > limit:
            lines.append(f"  (+{len(self.mismatched) - limit} more shape mismatches)")
        return "\n".join(lines)


def _family_module(model_name: str):
    return importlib.import_module(timm.models.model_entrypoint(model_name).__module__)


def _filter_fn(model_name: str) -> Callable:
    """The family's ``checkpoint_filter_fn`` (identity for a family without one)."""
    return getattr(_family_module(model_name), "checkpoint_filter_fn", lambda state_dict, model: state_dict)


def _apply_filter(model_name: str, state_dict: dict, model: torch.nn.Module) -> dict:
    try:
        return _filter_fn(model_name)(dict(state_dict), model)
    except (KeyError, AttributeError, RuntimeError, ValueError, IndexError) as e:
        raise WeightsError(
            f"the {model_name} checkpoint filter cannot convert this checkpoint ({type(e).__name__}: {e})"
        ) from e


def _same_family_matches(model_name: str, state_dict: dict, model_kwargs: dict, keys: set | None) -> list[str]:
    """Other models of ``model_name``'s family that ``state_dict`` fits (classifier size aside).

    ``keys``, the checkpoint's keys as ``model_name``'s filter renames them, skips the candidates
    with other keys before running their filter (which may resize tensors).
    """
    module = _family_module(model_name).__name__
    matches = []
    for candidate in timm.list_models("zoo_*"):
        if candidate == model_name or timm.models.model_entrypoint(candidate).__module__ != module:
            continue
        try:
            with torch.device("meta"):
                model = timm.create_model(candidate, **model_kwargs)
            if keys is not None and keys != model.state_dict().keys():
                continue
            report = KeyReport.compare(_apply_filter(candidate, state_dict, model), model)
        except Exception:  # a candidate that cannot even take the checkpoint is not a match
            continue
        classifier = model.pretrained_cfg.get("classifier") or ""
        if not (report.missing or report.unexpected) and all(k.startswith(classifier) for k, *_ in report.mismatched):
            matches.append(candidate)
    return matches


def _check_fits(model_name: str, state_dict: dict, model: torch.nn.Module, model_kwargs: dict, source) -> dict:
    """The filtered state dict, or a WeightsError listing what does not fit (and which model it fits)."""
    keys = None
    try:
        filtered = _apply_filter(model_name, state_dict, model)
        report = KeyReport.compare(filtered, model)
        if report.ok:
            return filtered
        problem, keys = report.summary(), set(filtered)
    except WeightsError as e:
        problem = str(e)
    lines = [f"{source} is not a checkpoint of {model_name}:", problem]
    matches = _same_family_matches(model_name, state_dict, model_kwargs, keys)
    if matches:
        lines.append(f"It fits {', '.join(matches)}: convert it as that model.")
    raise WeightsError("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Converting, verifying, publishing


def _resolve_weight(model_and_tag: str) -> tuple[str, str, dict]:
    """``(model, tag, manifest entry)``; the model's default weight when no tag is given."""
    model_name, tag = split_model_name_tag(model_and_tag)
    entry = weight_entry(f"{model_name}.{tag}" if tag else model_name)
    if entry is None:
        known = [f"{e['model']}.{e['tag']}" for _, e in iter_weights() if e["model"] == model_name]
        hint = f"; its weights: {', '.join(known)}" if known else "; `zoo weights list` shows the released weights"
        raise WeightsError(f"{model_and_tag} is not in the weights manifest{hint}")
    return model_name, entry["tag"], entry


def count_gmacs(model: torch.nn.Module, input_size) -> float:
    """Multiply-accumulates (G) of one forward pass at ``input_size``: torch's FLOP counter / 2 (FFTs,
    which it does not count, are left out). A model on the meta device costs nothing to run."""
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size, device=device))
    return counter.get_total_flops() / 2e9


def model_card(entry: dict, model: torch.nn.Module, repo_id: str) -> str:
    """The README of a converted weight: Hub metadata, source, license, accuracy, size and usage."""
    name = f"{entry['model']}.{entry['tag']}"
    input_size = tuple(model.pretrained_cfg["input_size"])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gmacs = count_gmacs(model, input_size)
    top1 = f"{entry['top1']}" if entry.get("top1") is not None else "n/a (no ImageNet-1k head)"
    details = [
        f"- **Architecture:** `{entry['model']}` (zoo, registered in timm)",
        f"- **Params (M):** {params:.1f}",
        f"- **GMACs:** {gmacs:.2f} at {input_size[1]}x{input_size[2]} (FFTs not counted)",
        f"- **Image size:** {input_size[1]}x{input_size[2]}, crop_pct {entry.get('crop_pct')}, "
        f"{entry.get('interpolation', 'bicubic')} interpolation",
        f"- **Classes:** {entry['num_classes']}",
        f"- **ImageNet-1k top-1 (reported):** {top1}",
        f"- **Source:** {entry['source_url']} ({entry.get('source_format', 'official')} layout"
        + (f", sha256 `{entry['sha256']}`)" if entry.get("sha256") else ")"),
    ]
    if entry.get("hf_hub_id"):
        details.append(f"- **Hub copy of the source:** https://huggingface.co/{hf_split(entry['hf_hub_id'])[0]}")
    paper = ", ".join(str(entry[k]) for k in ("paper_name", "paper_ids") if entry.get(k))
    if paper:
        details.append(f"- **Paper:** {paper}")
    if entry.get("origin_url"):
        details.append(f"- **Original code:** {entry['origin_url']}")
    details.append(f"- **License:** {entry['license']} (the license of the original weights)")
    return "\n".join(
        [
            "---",
            "tags:",
            "- image-classification",
            "- timm",
            "- zoo",
            "library_name: timm",
            f"license: {entry['license']}",
            "---",
            f"# {name}",
            "",
            f"`{name}` converted from the official release to timm's format (safetensors) by "
            "`zoo weights convert`. The tensors are those of the source file under the zoo's key names.",
            "",
            "## Model details",
            *details,
            "",
            "## Usage",
            "```python",
            "import timm",
            "import zoo  # registers the zoo architectures in timm",
            "",
            f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
            "config = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**config)",
            "# logits = model(transform(image).unsqueeze(0))",
            "```",
            "",
            f'The same weights load as `timm.create_model("{name}", pretrained=True)`.',
            "",
        ]
    )


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise WeightsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


@contextmanager
def _staging_dir(out_dir: Path):
    """A sibling temporary folder that replaces ``out_dir`` only when the block succeeds."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.unlink()
    os.replace(staging, out_dir)


def convert_checkpoint(
    model_and_tag: str,
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    **model_kwargs,
) -> KeyReport:
    """Convert an official checkpoint of ``model.tag`` into a Hub-ready folder.

    ``out_dir`` gets ``config.json`` (the pretrained cfg), ``model.safetensors`` and a model card;
    it is written only once everything succeeded. ``model_kwargs`` build a non-default instance
    (they are recorded in ``config.json``). Raises :class:`WeightsError` for an unreadable file or
    a checkpoint that does not fit the model.
    """
    model_name, tag, entry = _resolve_weight(model_and_tag)
    src, out_dir = Path(src), Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    state_dict = read_checkpoint(src)
    with torch.device("meta"):  # shapes only: the checkpoint's tensors are assigned below
        model = timm.create_model(model_name, pretrained_cfg=tag, **model_kwargs).eval()
    filtered = _check_fits(model_name, state_dict, model, model_kwargs, src)
    report = KeyReport.compare(filtered, model)
    repo_id = entry.get("zoo_hub_id") or f"zoo-models/{model_name.removeprefix('zoo_')}.{tag}"
    card = model_card(entry, model, repo_id)
    # The model's dtypes (as pretrained=True loads it), each tensor its own contiguous storage.
    target = model.state_dict()
    tensors = {
        key: value.to(dtype=target[key].dtype, memory_format=torch.contiguous_format, copy=True)
        for key, value in filtered.items()
    }
    model.load_state_dict(tensors, strict=True, assign=True)
    with _staging_dir(out_dir) as staging:
        save_for_hf(model, staging, safe_serialization=True)
        (staging / "README.md").write_text(card, encoding="utf-8")
    return report


def verify_checkpoint(path: str | os.PathLike, model_and_tag: str, **model_kwargs) -> list[str]:
    """Check ``path`` against the manifest's sha256 and ``model.tag``'s state dict.

    Returns the report lines; raises :class:`WeightsError` on a sha256 mismatch, an unreadable
    file or keys that do not fit.
    """
    model_name, tag, entry = _resolve_weight(model_and_tag)
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    check_readable(path)
    digest = sha256_file(path)
    known = {entry.get("sha256"): f"the official file ({entry['source_url']})"}
    if entry.get("hf_hub_sha256"):
        known[entry["hf_hub_sha256"]] = f"the Hub copy ({entry['hf_hub_id']})"
    known.pop(None, None)
    if digest in known:
        lines = [f"sha256 {digest}: matches {known[digest]}"]
    elif known:
        raise WeightsError(
            f"sha256 of {path} is {digest}, which matches no released file of {model_name}.{tag} "
            f"(expected {' or '.join(known)}): the file is corrupted or another release"
        )
    else:
        lines = [f"sha256 {digest}: the manifest has no sha256 for {model_name}.{tag}, not compared"]
    state_dict = read_checkpoint(path)
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained_cfg=tag, **model_kwargs)
    report = KeyReport.compare(_check_fits(model_name, state_dict, model, model_kwargs, path), model)
    lines.append(f"keys: {report.summary()}")
    return lines


def _folder_plan(folder: Path) -> tuple[dict, list[str]]:
    """The config of a converted folder and a line per file; raises if it is not Hub-ready."""
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise WeightsError(f"{folder} has no {name}: create it with `zoo weights convert`")
    config = json.loads((folder / "config.json").read_text())
    check_readable(folder / "model.safetensors")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    lines = [f"  {p.relative_to(folder)}  {p.stat().st_size / 1e6:.1f} MB  sha256 {sha256_file(p)}" for p in files]
    return config, lines


def push_folder(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    dry_run: bool = False,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    api: HfApi | None = None,
) -> list[str]:
    """Upload a converted folder to ``repo_id`` (default: the manifest's ``zoo_hub_id``).

    Returns the plan lines; with ``dry_run`` nothing is sent.
    """
    folder = Path(folder)
    config, file_lines = _folder_plan(folder)
    pretrained_cfg = config.get("pretrained_cfg", {})
    name = f"{config['architecture']}.{pretrained_cfg['tag']}" if pretrained_cfg.get("tag") else config["architecture"]
    if repo_id is None:
        entry = weight_entry(name)
        if not entry or not entry.get("zoo_hub_id"):
            raise WeightsError(f"no zoo_hub_id in the manifest for {name}: give the repo id")
        repo_id = entry["zoo_hub_id"]
    commit_message = commit_message or f"Add {name} weights (converted by zoo)"
    verb = "would" if dry_run else "will"
    lines = [
        f"{verb} create {'private ' if private else ''}model repo {repo_id} if missing",
        f"{verb} upload {len(file_lines)} files from {folder} to {repo_id}"
        + (f"@{revision}" if revision else "")
        + f" ({commit_message!r}):",
        *file_lines,
    ]
    if dry_run:
        return lines
    api = api or HfApi(library_name="zoo")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=[".*"],
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        raise WeightsError(
            f"upload to {repo_id} failed: {e}\nLog in with `hf auth login` (or set HF_TOKEN) with write access."
        ) from e
    lines.append(f"uploaded: {getattr(commit, 'commit_url', commit)}")
    return lines


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


# ----------------------------------------------------------------------------------------------
# The `zoo weights` command


def _reports_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


@_reports_errors
def _cmd_convert(args: argparse.Namespace) -> int:
    report = convert_checkpoint(args.weight, args.src, args.out_dir, overwrite=args.overwrite)
    print(f"keys: {report.summary()}")
    print(f"wrote {args.out_dir}: config.json, model.safetensors, README.md")
    print(f'load it with timm.create_model("local-dir:{args.out_dir}", pretrained=True) after `import zoo`')
    return 0


@_reports_errors
def _cmd_verify(args: argparse.Namespace) -> int:
    print("\n".join(verify_checkpoint(args.file, args.weight)))
    return 0


@_reports_errors
def _cmd_push(args: argparse.Namespace) -> int:
    lines = push_folder(
        args.folder,
        args.repo_id,
        dry_run=args.dry_run,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
    )
    print("\n".join(lines))
    return 0


@_reports_errors
def _cmd_list(args: argparse.Namespace) -> int:
    if args.family and args.family not in families():
        raise WeightsError(f"no weights manifest for family {args.family!r}; known: {', '.join(families())}")
    lines = weights_table(args.pattern, args.family)
    print("\n".join(lines))
    return 0 if len(lines) > 1 else 1


def add_weights_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``weights`` (with ``list``, ``convert``, ``verify``, ``push``) to the ``zoo`` command's subparsers."""
    parser = subparsers.add_parser(
        "weights",
        help="list, convert, verify and publish pretrained weights",
        description="Pretrained weights: the manifest, conversion of official files, verification, Hub upload.",
    )
    commands = parser.add_subparsers(dest="weights_command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="the released weights in the manifest")
    p.add_argument("pattern", nargs="?", default="*", help="MODEL.TAG glob (default: all)")
    p.add_argument("--family", help="only this family's manifest")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser("convert", help="official checkpoint -> Hub-ready folder (safetensors, config, card)")
    p.add_argument("weight", metavar="MODEL.TAG", help="the manifest weight the file is, e.g. zoo_swin_tiny.ms_in1k")
    p.add_argument("src", metavar="SRC", help="the official checkpoint file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    p.set_defaults(func=_cmd_convert)

    p = commands.add_parser("verify", help="check a file's sha256 against the manifest and its keys against the model")
    p.add_argument("file", metavar="FILE", help="a checkpoint file, or a converted folder")
    p.add_argument("weight", metavar="MODEL.TAG")
    p.set_defaults(func=_cmd_verify)

    p = commands.add_parser("push", help="upload a converted folder to the Hugging Face Hub")
    p.add_argument("folder", metavar="OUT_DIR", help="a folder written by `zoo weights convert`")
    p.add_argument("repo_id", metavar="REPO_ID", nargs="?", help="target repo (default: the manifest's zoo_hub_id)")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded, send nothing")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to upload to (default: main)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_cmd_push)
    return parser


# ----------------------------------------------------------------------------------------------
# Loading a weights file into a built model


def load_weights_file(
    model: torch.nn.Module, path: str | os.PathLike, use_ema: bool = False, new_classifier: bool = False
) -> KeyReport:
    """Load the weights in ``path`` into ``model`` as ``pretrained=True`` loads a pretrained file.

    Accepts what ``pretrained_cfg_overlay=dict(file=...)`` accepts: official-layout checkpoints,
    timm / zoo state dicts (wrapped in ``state_dict`` / ``model`` or not, ``module.`` prefixes) and
    safetensors files, read safely (:func:`check_readable`); ``use_ema`` takes a training checkpoint's
    EMA weights when it has them. The model family's ``checkpoint_filter_fn`` (the filter its
    ``pretrained=True`` uses) converts official layouts and resizes position-bias tables and patch
    embeddings to the model's size, and a stem built for other input channels is adapted as timm does.
    With ``new_classifier``, a classifier of another size is left as initialized (fine-tuning on
    other classes). Returns the key report; raises :class:`WeightsError` with it when keys or shapes
    do not fit.
    """
    check_readable(path)
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            state_dict = load_state_dict(str(path), use_ema=use_ema, weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise WeightsError(f"cannot read {path} as a checkpoint (truncated, corrupted or not weights): {e}") from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") or type(model).__name__
    family = importlib.import_module(timm.models.model_entrypoint(arch).__module__) if timm.is_model(arch) else None
    checkpoint_filter = getattr(family, "checkpoint_filter_fn", None)
    filter_failure = None  # a checkpoint of another architecture can break the filter: the key report says more
    if checkpoint_filter is not None:
        try:
            state_dict = checkpoint_filter(dict(state_dict), model)
        except (KeyError, AttributeError, RuntimeError, ValueError, IndexError) as e:
            filter_failure = f"  (the {arch} checkpoint filter cannot convert it: {type(e).__name__}: {e})"
    own = model.state_dict()
    for key in _layer_keys(cfg.get("first_conv"), "weight"):
        if key in state_dict and key in own and state_dict[key].shape[1:2] != own[key].shape[1:2]:
            state_dict[key] = timm.models.adapt_input_conv(own[key].shape[1], state_dict[key])
    classifier = _layer_keys(cfg.get("classifier"), "weight", "bias")
    dropped = set()
    if new_classifier:
        dropped = {k for k in classifier if k in state_dict and k in own and state_dict[k].shape != own[k].shape}
        state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
    report = KeyReport.compare(state_dict, model)
    report.missing = [k for k in report.missing if k not in dropped]
    if not report.ok:
        head_only = not (report.missing or report.unexpected) and all(k in classifier for k, *_ in report.mismatched)
        if head_only:
            _, got, want = report.mismatched[0]
            problem = f"  it has {got[0]} classes, the model has {want[0]}"
        else:
            problem = report.summary()
        lines = [f"{path} is not a checkpoint of {arch}:", problem, filter_failure]
        raise WeightsError("\n".join(line for line in lines if line))
    model.load_state_dict(state_dict, strict=not dropped)
    return report


def _layer_keys(names: str | tuple | list | None, *suffixes: str) -> list[str]:
    """``name.suffix`` of each layer a pretrained cfg names (``first_conv``, ``classifier``: one or several)."""
    names = names if isinstance(names, (list, tuple)) else [names] if names else []
    return [f"{name}.{suffix}" for name in names for suffix in suffixes]
