"""``zoo weights convert`` and ``zoo weights verify``: an official checkpoint checked against the manifest
and the model, and turned into a Hub-ready folder (``config.json``, ``model.safetensors``, model card)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from timm.models import split_model_name_tag
from timm.models._hub import save_for_hf

from zoo.hub import KeyReport, WeightsError, check_fits, check_readable, read_checkpoint, sha256_file
from zoo.weights import iter_weights, weight_entry
from zoo.weights.card import model_card

__all__ = ["convert_checkpoint", "verify_checkpoint"]


def _resolve_weight(model_and_tag: str) -> tuple[str, str, dict]:
    """``(model, tag, manifest entry)``; the model's default weight when no tag is given."""
    model_name, tag = split_model_name_tag(model_and_tag)
    entry = weight_entry(f"{model_name}.{tag}" if tag else model_name)
    if entry is None:
        known = [f"{e['model']}.{e['tag']}" for _, e in iter_weights() if e["model"] == model_name]
        hint = f"; its weights: {', '.join(known)}" if known else "; `zoo weights list` shows the released weights"
        raise WeightsError(f"{model_and_tag} is not in the weights manifest{hint}")
    return model_name, entry["tag"], entry


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise WeightsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _staging_dir(out_dir: Path):
    """A sibling temporary folder that replaces ``out_dir`` only when the block succeeds.

    The folder gets the permissions of any new folder (``0o777`` less the umask), not the ``0o700`` of
    a temporary one. A failed write (a full disk, a read-only folder) removes it and is a WeightsError.
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as e:
        raise WeightsError(f"cannot create {out_dir}: {e}") from e
    try:
        yield staging
    except (OSError, SafetensorError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise WeightsError(f"cannot write {out_dir} ({e}); nothing was written there") from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o777 & ~_umask())
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
    filtered = check_fits(model_name, state_dict, model, model_kwargs, src)
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
    report = KeyReport.compare(check_fits(model_name, state_dict, model, model_kwargs, path), model)
    lines.append(f"keys: {report.summary()}")
    return lines
