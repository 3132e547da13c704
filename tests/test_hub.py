"""Pretrained weights: the manifest, `pretrained=True` through the real Hub download path (offline,
from a local Hugging Face cache), sha256 checks, safe loading, conversion to the Hub format."""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import partial

import _family_checks as checks
import numpy as np
import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import zoo  # noqa: F401
from zoo.hub import WeightsError, read_checkpoint
from zoo.weights import check_manifest, families, iter_weights, manifest, pretrained_cfgs
from zoo.weights.convert import convert_checkpoint, verify_checkpoint

SHALLOW = dict(depths=(1, 2, 1, 1))  # full widths (the checkpoint shapes), fewer blocks
SWIN_TINY = next(entry for _, entry in iter_weights("swin") if entry["model"] == "zoo_swin_tiny")
SWIN_HUB_ID, SWIN_URL = SWIN_TINY["hf_hub_id"], SWIN_TINY["source_url"]  # of zoo_swin_tiny.ms_in1k


# ----------------------------------------------------------------------------------------------
# Helpers: weights in the official layout, a Hugging Face cache as the Hub client writes it


def _random_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """``name`` with random weights (built on meta and filled: timm's init is the slow part)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05, generator=generator)
        for buffer_name, buffer in model.named_buffers():  # batch-norm statistics
            buffer.fill_(1 if buffer_name.endswith("running_var") else 0)
    return model.eval()


def _swin_official(state_dict: dict, depths, window: int = 7) -> dict:
    """microsoft/Swin-Transformer's layout of a zoo Swin state dict: downsampling at the end of the
    previous stage, ``head`` instead of ``head.fc``, and its recomputed buffers."""
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value.clone()
    n = window * window
    for stage, depth in enumerate(depths):
        for block in range(depth):
            official[f"layers.{stage}.blocks.{block}.attn.relative_position_index"] = torch.randint(0, n, (n, n))
    return {"model": official}


def _van_official(state_dict: dict) -> dict:
    """Visual-Attention-Network/VAN-Classification's layout of a zoo VAN state dict, as its timm
    checkpoint saver writes it (with training arguments and the best metric)."""
    official = checks.to_pvt_layout({key: value.clone() for key, value in state_dict.items()})
    return {"state_dict": official, "args": argparse.Namespace(model="van_tiny"), "metric": np.float64(75.4)}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _put_in_hf_cache(cache, repo_id: str, filename: str, write) -> None:
    """Write one file of ``repo_id`` into a Hugging Face cache: a blob named by its sha256, a snapshot
    symlink and ``refs/main``, as ``hf_hub_download`` leaves them."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    staging = repo / "blobs" / "incoming"
    write(staging)
    blob = staging.rename(repo / "blobs" / _sha256(staging))
    snapshot = repo / "snapshots" / revision / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with the Hub client offline (as HF_HUB_OFFLINE=1 sets it)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    return cache


def _manifest_entry(family: str, model: str, tag: str) -> dict:
    return next(e for e in manifest(family)["weights"] if e["model"] == model and e["tag"] == tag)


def _outputs(model, seed: int = 1, size: int = 112) -> torch.Tensor:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def _listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ----------------------------------------------------------------------------------------------
# The manifest


@pytest.mark.parametrize("family", families())
def test_manifest_is_well_formed(family):
    assert check_manifest(family) == []
    for _, entry in iter_weights(family):
        assert timm.is_model(entry["model"]), f"{entry['model']} in weights/{family}.yaml is not registered"
    for model in manifest(family).get("models_without_weights") or {}:
        assert timm.is_model(model), f"{model} in weights/{family}.yaml is not registered"


def test_every_registered_model_is_in_a_manifest():
    listed = {entry["model"] for _, entry in iter_weights()}
    for family in families():
        listed |= set(manifest(family).get("models_without_weights") or {})
    assert sorted(set(timm.list_models("zoo_*")) - listed) == []


def test_pretrained_cfgs_come_from_the_manifest():
    entry = {**manifest("swin")["defaults"], **_manifest_entry("swin", "zoo_swin_base_384", "ms_in22k_ft_in1k")}
    cfg = timm.models.get_pretrained_cfg("zoo_swin_base_384.ms_in22k_ft_in1k").to_dict()
    assert cfg == {**cfg, **pretrained_cfgs("swin")["zoo_swin_base_384.ms_in22k_ft_in1k"]}
    assert cfg["url"] == entry["source_url"] and cfg["hf_hub_id"] == entry["hf_hub_id"]
    assert cfg["input_size"] == (3, 384, 384) and cfg["crop_pct"] == entry["crop_pct"]
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["license"] == entry["license"]


def test_manifest_check_reports_problems(monkeypatch):
    entry = _manifest_entry("swin", "zoo_swin_tiny", "ms_in1k")
    monkeypatch.setitem(entry, "sha256", "not-a-digest")
    monkeypatch.delitem(entry, "top1")
    monkeypatch.setitem(entry, "resolution", 224)
    problems = "\n".join(check_manifest("swin"))
    assert "'sha256' must be 64 lowercase hex" in problems
    assert "'top1'" in problems and "unknown fields ['resolution']" in problems


# ----------------------------------------------------------------------------------------------
# pretrained=True through the Hub client


def test_official_checkpoint_on_the_hub_loads_offline_in_a_subprocess(tmp_path, offline_hub_python):
    """The real path with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set: an official-layout .pth on a Hub repo."""
    reference = _random_model("zoo_swin_tiny", **SHALLOW)
    official = _swin_official(reference.state_dict(), SHALLOW["depths"])
    _put_in_hf_cache(tmp_path, "acme/swin-tiny-official", "swin_tiny.pth", lambda p: torch.save(official, p))
    overlay = "pretrained_cfg_overlay=dict(hf_hub_id='acme/swin-tiny-official', hf_hub_filename='swin_tiny.pth')"
    model = f"timm.create_model('zoo_swin_tiny.ms_in1k', pretrained=True, depths=(1, 2, 1, 1), {overlay})"
    offline_hub_python(f"torch.save({model}.state_dict(), r'{tmp_path / 'loaded.pt'}')", tmp_path)
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=True)
    expected = reference.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_hub_copy_is_checked_against_the_manifest_sha256(offline_cache, monkeypatch):
    reference = _random_model("zoo_swin_tiny", **SHALLOW)
    _put_in_hf_cache(offline_cache, SWIN_HUB_ID, "model.safetensors", lambda p: save_file(reference.state_dict(), p))
    entry = _manifest_entry("swin", "zoo_swin_tiny", "ms_in1k")
    blob = next((offline_cache / f"models--{SWIN_HUB_ID.replace('/', '--')}" / "blobs").iterdir())

    monkeypatch.setitem(entry, "hf_hub_sha256", blob.name)
    model = timm.create_model("zoo_swin_tiny.ms_in1k", pretrained=True, cache_dir=offline_cache, **SHALLOW)
    torch.testing.assert_close(_outputs(model), _outputs(reference), rtol=0, atol=0)

    monkeypatch.setitem(entry, "hf_hub_sha256", "0" * 64)
    with pytest.raises(WeightsError, match=f"sha256 mismatch .*expected {'0' * 64}, got {blob.name}"):
        timm.create_model("zoo_swin_tiny.ms_in1k", pretrained=True, cache_dir=offline_cache, **SHALLOW)


def test_van_official_file_on_its_hub_repo(tmp_path, offline_cache, monkeypatch):
    """VAN's manifest entry points at the authors' Hub repo, which holds the official training
    checkpoint: it is fetched, sha256-checked, converted on load; `convert` gives the same model."""
    entry = _manifest_entry("van", "zoo_van_b0", "in1k")
    reference = _random_model("zoo_van_b0")
    write = lambda p: torch.save(_van_official(reference.state_dict()), p)  # noqa: E731
    _put_in_hf_cache(offline_cache, entry["hf_hub_id"], entry["hf_hub_filename"], write)
    snapshot = next((offline_cache / f"models--{entry['hf_hub_id'].replace('/', '--')}" / "snapshots").iterdir())
    official_file = snapshot / entry["hf_hub_filename"]
    monkeypatch.setitem(entry, "hf_hub_sha256", _sha256(official_file))

    model = timm.create_model("zoo_van_b0.in1k", pretrained=True, cache_dir=offline_cache)
    expected = reference.state_dict()
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)

    convert_checkpoint("zoo_van_b0.in1k", official_file, tmp_path / "van_b0")
    converted = timm.create_model(f"local-dir:{tmp_path / 'van_b0'}", pretrained=True)
    torch.testing.assert_close(_outputs(converted), _outputs(model), rtol=0, atol=0)


def test_offline_without_the_file_says_where_weights_come_from(offline_cache):
    with pytest.raises(WeightsError) as error:
        timm.create_model("zoo_swin_tiny.ms_in1k", pretrained=True, cache_dir=offline_cache, **SHALLOW)
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message and "not in the local Hugging Face cache" in message
    assert f"https://huggingface.co/{SWIN_HUB_ID}" in message and SWIN_URL in message
    assert "zoo weights convert zoo_swin_tiny.ms_in1k FILE DIR" in message
    assert 'timm.create_model("local-dir:DIR", pretrained=True)' in message
    assert "pretrained_cfg_overlay=dict(file=" in message


def test_unreachable_hub_without_the_offline_flag_fails_at_once_in_a_subprocess(tmp_path):
    """No HF_HUB_OFFLINE and a Hub endpoint that refuses connections: the clear error comes without going
    through huggingface_hub's retry cycle (about 25 s) for each candidate file."""
    script = (
        "import time, timm, zoo\n"
        "from zoo.hub import WeightsError\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    timm.create_model('zoo_swin_tiny.ms_in1k', pretrained=True)\n"
        "except WeightsError as e:\n"
        "    print(f'{time.monotonic() - start:.1f}')\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    seconds, message = result.stdout.split("\n", 1)
    assert "cannot get the pretrained weights of zoo_swin_tiny.ms_in1k" in message
    assert "the Hub (http://127.0.0.1:9) could not be reached" in message
    assert "not in the local Hugging Face cache (model.safetensors, pytorch_model.bin)" in message
    assert float(seconds) < 20, f"the error took {seconds} s"


def test_official_url_is_the_fallback_without_a_hub_copy(tmp_path, offline_cache, monkeypatch):
    """No Hub id: the official file from the download cache, checked against the manifest's sha256."""
    reference = _random_model("zoo_swin_tiny", **SHALLOW)
    path = tmp_path / "downloads" / os.path.basename(SWIN_URL)
    path.parent.mkdir()
    torch.save(_swin_official(reference.state_dict(), SHALLOW["depths"]), path)
    entry = _manifest_entry("swin", "zoo_swin_tiny", "ms_in1k")
    monkeypatch.setitem(entry, "sha256", _sha256(path))
    kwargs = dict(pretrained=True, cache_dir=path.parent, pretrained_cfg_overlay=dict(hf_hub_id=None), **SHALLOW)

    model = timm.create_model("zoo_swin_tiny.ms_in1k", **kwargs)
    torch.testing.assert_close(_outputs(model), _outputs(reference), rtol=0, atol=0)

    monkeypatch.setitem(entry, "sha256", "f" * 64)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        timm.create_model("zoo_swin_tiny.ms_in1k", **kwargs)
    path.unlink()
    with pytest.raises(WeightsError, match="offline .* not in the download cache"):
        timm.create_model("zoo_swin_tiny.ms_in1k", **kwargs)


def test_model_without_weights_says_so(offline_cache):
    overlay = dict(hf_hub_id=None, url=None)
    with pytest.raises(WeightsError, match="has no released weights"):
        timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **SHALLOW)


# ----------------------------------------------------------------------------------------------
# Safe loading of files


class TrainingConfig:
    """An object in a checkpoint whose unpickling would import and run this module's code."""


def test_pickle_that_needs_code_is_refused(tmp_path):
    reference = _random_model("zoo_swin_tiny", **SHALLOW)
    checkpoint = _swin_official(reference.state_dict(), SHALLOW["depths"])
    checkpoint["config"] = TrainingConfig()
    path = tmp_path / "with_code.pth"
    torch.save(checkpoint, path)
    for load in (
        lambda: read_checkpoint(path),
        lambda: timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))),
    ):
        with pytest.raises(WeightsError, match="would run arbitrary code .*TrainingConfig"):
            load()


def _as_written_by_numpy1(src, dst) -> None:
    """``src`` as numpy 1.x pickles it: its scalar constructor lives in ``numpy.core``, not ``numpy._core``."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as rewritten:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                assert b"numpy.core.multiarray\nscalar" in data
            rewritten.writestr(item, data)


def test_plain_training_metadata_loads(tmp_path):
    """argparse args and numpy scalar metrics, common in official checkpoints, are plain data."""
    state_dict = {"w": torch.randn(3)}
    path = tmp_path / "train.pth.tar"
    torch.save({"state_dict": state_dict, "args": argparse.Namespace(lr=1e-3), "metric": np.float64(75.4)}, path)
    _as_written_by_numpy1(path, tmp_path / "numpy1.pth.tar")
    for checkpoint in (path, tmp_path / "numpy1.pth.tar"):
        assert torch.equal(read_checkpoint(checkpoint)["w"], state_dict["w"])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_damaged_file_gives_a_clear_error(tmp_path, damage, suffix):
    state_dict = {"w": torch.randn(64, 64)}
    path = tmp_path / f"weights{suffix}"
    save_file(state_dict, path) if suffix == ".safetensors" else torch.save(state_dict, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.raises(WeightsError, match=f"{re.escape(str(path))} .*(truncated|corrupted)"):
        read_checkpoint(path)
    with pytest.raises(WeightsError, match="truncated|corrupted"):
        timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# ----------------------------------------------------------------------------------------------
# Conversion to the Hub format


@pytest.fixture(scope="module")
def swin_official_file(tmp_path_factory):
    reference = _random_model("zoo_swin_tiny", **SHALLOW)
    path = tmp_path_factory.mktemp("official") / "swin_tiny_patch4_window7_224.pth"
    torch.save(_swin_official(reference.state_dict(), SHALLOW["depths"]), path)
    return reference, path


def test_convert_then_local_dir_or_hub_gives_identical_outputs(tmp_path, swin_official_file, offline_cache):
    """The converted folder loads with `local-dir:`, and as a Hub repo with `hf-hub:`, to the model that
    `pretrained=True` builds from the official file."""
    reference, src = swin_official_file
    out = tmp_path / "swin_tiny.ms_in1k"
    report = convert_checkpoint("zoo_swin_tiny.ms_in1k", src, out, **SHALLOW)
    assert report.ok and report.matched == len(reference.state_dict())
    assert _listing(out) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(_listing(tmp_path)) == ["hf_cache", "swin_tiny.ms_in1k"]  # no staging folder left behind

    direct = timm.create_model(
        "zoo_swin_tiny.ms_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(src)), **SHALLOW
    )
    expected = _outputs(direct)
    torch.testing.assert_close(expected, _outputs(reference), rtol=0, atol=0)
    converted = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.testing.assert_close(_outputs(converted), expected, rtol=0, atol=0)
    for name in ("config.json", "model.safetensors"):
        _put_in_hf_cache(offline_cache, "zoo-models/swin_tiny.ms_in1k", name, partial(shutil.copyfile, out / name))
    published = timm.create_model("hf-hub:zoo-models/swin_tiny.ms_in1k", pretrained=True, cache_dir=offline_cache)
    torch.testing.assert_close(_outputs(published), expected, rtol=0, atol=0)

    config = json.loads((out / "config.json").read_text())
    entry = {**manifest("swin")["defaults"], **_manifest_entry("swin", "zoo_swin_tiny", "ms_in1k")}
    assert config["architecture"] == "zoo_swin_tiny" and config["model_args"]["depths"] == [1, 2, 1, 1]
    assert config["pretrained_cfg"]["tag"] == "ms_in1k"
    assert config["pretrained_cfg"]["crop_pct"] == entry["crop_pct"]
    assert config["pretrained_cfg"]["num_classes"] == entry["num_classes"]
    card = (out / "README.md").read_text()
    params = sum(p.numel() for p in reference.parameters()) / 1e6
    for expected in (
        entry["source_url"],
        f"license: {entry['license']}",
        f"top-1 (reported):** {entry['top1']}",
        f"Params (M):** {params:.1f}",
        "GMACs:** ",
        'hf-hub:zoo-models/swin_tiny.ms_in1k"',
    ):
        assert expected in card
    assert "GMACs:** n/a" not in card


def test_convert_refuses_a_checkpoint_of_another_model(tmp_path):
    other = _random_model("zoo_swin_base", **SHALLOW)
    src = tmp_path / "swin_base.pth"
    torch.save(_swin_official(other.state_dict(), SHALLOW["depths"]), src)
    with pytest.raises(WeightsError) as error:
        convert_checkpoint("zoo_swin_tiny.ms_in1k", src, tmp_path / "out", **SHALLOW)
    message = str(error.value)
    assert f"{src} is not a checkpoint of zoo_swin_tiny" in message
    assert "patch_embed.proj.weight: checkpoint [128, 3, 4, 4], model [96, 3, 4, 4]" in message
    assert re.search(r"It fits .*zoo_swin_base\b", message)
    assert _listing(tmp_path) == ["swin_base.pth"]


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_convert_of_a_damaged_file_writes_nothing(tmp_path, swin_official_file, damage):
    _, src = swin_official_file
    data = bytearray(src.read_bytes())
    if damage == "truncated":
        del data[len(data) // 3 :]
    else:
        data[:4096] = os.urandom(4096)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="truncated|corrupted"):
        convert_checkpoint("zoo_swin_tiny.ms_in1k", bad, tmp_path / "out", **SHALLOW)
    assert _listing(tmp_path) == ["bad.pth"]


def test_convert_keeps_an_existing_folder(tmp_path, swin_official_file):
    _, src = swin_official_file
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(WeightsError, match="exists and is not empty; pass --overwrite"):
        convert_checkpoint("zoo_swin_tiny.ms_in1k", src, out, **SHALLOW)
    convert_checkpoint("zoo_swin_tiny.ms_in1k", src, out, overwrite=True, **SHALLOW)
    assert _listing(out) == ["README.md", "config.json", "model.safetensors"]


def test_verify_checks_sha256_and_keys(tmp_path, swin_official_file, monkeypatch):
    _, src = swin_official_file
    entry = _manifest_entry("swin", "zoo_swin_tiny", "ms_in1k")
    lines = verify_checkpoint(src, "zoo_swin_tiny.ms_in1k", **SHALLOW)
    assert "manifest has no sha256" in lines[0] and lines[1].startswith("keys: ")
    monkeypatch.setitem(entry, "sha256", _sha256(src))
    assert "matches the official file" in verify_checkpoint(src, "zoo_swin_tiny.ms_in1k", **SHALLOW)[0]
    monkeypatch.setitem(entry, "sha256", "a" * 64)
    with pytest.raises(WeightsError, match="matches no released file"):
        verify_checkpoint(src, "zoo_swin_tiny.ms_in1k", **SHALLOW)
    with pytest.raises(WeightsError, match="is not a checkpoint of zoo_swin_small"):
        verify_checkpoint(src, "zoo_swin_small.ms_in1k", depths=(1, 2, 3, 1))
