"""Pretrained weights at ``pretrained=True``: download, sha256 verification, safe reading, fit checks.

``timm.create_model("zoo_<model>.<tag>", pretrained=True)`` goes through :func:`build_model_with_cfg`,
a drop-in for timm's: it fetches the weight file named by the model's pretrained cfg (generated from
``weights/<family>.yaml``) with ``huggingface_hub`` (or from the official URL when there is no Hub
copy), checks its sha256 against the manifest when one is known, and hands the local file to timm,
whose loader runs the family's ``checkpoint_filter_fn`` (official layouts convert on load).
Failures become one :class:`WeightsError` that says where the weights come from and how to use a
local copy. Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors; a pickle
that needs code to load is refused. :func:`check_fits` says how a checkpoint does not fit a model.

Converting, verifying and publishing weights (``zoo weights``) live beside the manifest, in
``zoo.weights.convert`` and ``zoo.weights.publish``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import timm
import torch
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from safetensors import SafetensorError, safe_open
from timm.models import build_model_with_cfg as timm_build_model_with_cfg
from timm.models import load_state_dict, resolve_pretrained_cfg
from timm.models._hub import download_cached_file, get_cache_dir, hf_split

from zoo.weights import weight_entry

__all__ = [
    "KeyReport",
    "WeightsError",
    "apply_checkpoint_filter",
    "build_model_with_cfg",
    "check_fits",
    "check_readable",
    "fetch_weights",
    "hub_unreachable",
    "read_checkpoint",
    "sha256_file",
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


def _hub_reason(error: Exception, repo_id: str, unreachable: str = "the Hub could not be reached") -> str:
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        where = "offline (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else unreachable
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


def hub_unreachable() -> str | None:
    """Why the Hub endpoint gives no answer at all (refused, unresolvable, timed out), or None if it answers.

    One request without retries: ``hf_hub_download`` retries a failed connection with backoff for about
    25 s per file, so without this probe a machine offline without ``HF_HUB_OFFLINE`` would wait that
    long for every candidate file before the cache is consulted.
    """
    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # the transport errors of whichever HTTP client huggingface_hub uses
        return f"the Hub ({constants.ENDPOINT}) could not be reached ({type(e).__name__}: {e})"
    return None


def _download_from_hub(cfg: dict, cache_dir) -> tuple[Path, str]:
    """``(local path, filename)`` of the Hub copy; raises WeightsError with the reason.

    When the Hub cannot be reached, every candidate file is looked up in the local cache only.
    """
    repo_id, revision = hf_split(cfg["hf_hub_id"])
    filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_FILENAMES
    unreachable = None if constants.is_offline_mode() else hub_unreachable()
    tried: dict[str, list[str]] = {}  # reason -> file names
    for filename in filenames:
        try:
            path = hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                library_name="zoo",
                local_files_only=unreachable is not None,
            )
            return Path(path), filename
        except LocalEntryNotFoundError as e:  # offline or unreachable, and not cached: the cache only from here
            unreachable = unreachable or "the Hub could not be reached"
            tried.setdefault(_hub_reason(e, repo_id, unreachable), []).append(filename)
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


def _first(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


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
                lines.append(f"  {title}: {_first(keys, limit)}")
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


def apply_checkpoint_filter(model_name: str, state_dict: dict, model: torch.nn.Module) -> dict:
    """``state_dict`` through ``model_name``'s family's ``checkpoint_filter_fn``: official layouts
    converted, position tables resized to ``model``."""
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
            report = KeyReport.compare(apply_checkpoint_filter(candidate, state_dict, model), model)
        except Exception:  # a candidate that cannot even take the checkpoint is not a match
            continue
        classifier = model.pretrained_cfg.get("classifier") or ""
        if not (report.missing or report.unexpected) and all(k.startswith(classifier) for k, *_ in report.mismatched):
            matches.append(candidate)
    return matches


def _keys_beyond_depth(state_dict: dict, model: torch.nn.Module) -> list[str]:
    """The keys of ``state_dict`` that index past the end of one of ``model``'s block lists: a deeper model's."""
    beyond = []
    for key in state_dict:
        module = model
        for part in key.removeprefix("module.").split(".")[:-1]:
            is_list = isinstance(module, (torch.nn.Sequential, torch.nn.ModuleList))
            if is_list and part.isdigit() and int(part) >= len(module):
                beyond.append(key)
                break
            module = module._modules.get(part)
            if module is None:
                break
    return beyond


def check_fits(model_name: str, state_dict: dict, model: torch.nn.Module, model_kwargs: dict, source) -> dict:
    """The filtered state dict, or a WeightsError listing what does not fit (and which model it fits).

    When the family's filter cannot even convert the checkpoint because it has more blocks than the
    model, those keys come first and the filter's own error last.
    """
    keys, filter_error = None, None
    try:
        filtered = apply_checkpoint_filter(model_name, state_dict, model)
        report = KeyReport.compare(filtered, model)
        if report.ok:
            return filtered
        problem, keys = report.summary(), set(filtered)
    except WeightsError as e:
        beyond = _keys_beyond_depth(state_dict, model)
        problem, filter_error = str(e), None
        if beyond:
            problem = f"{len(beyond)} of its {len(state_dict)} keys belong to blocks {model_name} does not have: "
            problem, filter_error = problem + _first(beyond), e
    lines = [f"{source} is not a checkpoint of {model_name}:", problem]
    matches = _same_family_matches(model_name, state_dict, model_kwargs, keys)
    if matches:
        lines.append(f"It fits {', '.join(matches)}: convert it as that model.")
    if filter_error:
        lines.append(f"({filter_error})")
    raise WeightsError("\n".join(lines))


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
