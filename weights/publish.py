"""``zoo weights push``: upload a converted folder to the Hugging Face Hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from zoo.hub import WeightsError, check_readable, hub_unreachable, sha256_file
from zoo.weights import weight_entry

__all__ = ["push_folder"]


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
    unreachable = None if constants.is_offline_mode() else hub_unreachable()
    if unreachable:  # fail at once instead of after huggingface_hub's retries
        raise WeightsError(f"upload to {repo_id} failed: {unreachable}")
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
