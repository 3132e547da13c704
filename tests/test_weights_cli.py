"""`zoo weights list | convert | verify | push` on full-size Swin-T checkpoints (random values, official
key names and shapes); nothing reaches the network."""

import os
import re
import resource
import signal
import stat
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file

import zoo  # noqa: F401
from zoo.cli import main
from zoo.weights import iter_weights, publish


def zoo_weights(*argv: str) -> int:
    return main(["weights", *(str(a) for a in argv)])


def _official_swin_tiny(path) -> dict:
    """A full-size Swin-T checkpoint in microsoft/Swin-Transformer's layout; returns the zoo state dict."""
    with torch.device("meta"):
        model = timm.create_model("zoo_swin_tiny")
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02, generator=generator)
    state_dict = model.state_dict()
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    torch.save({"model": official}, path)
    return state_dict


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    src = root / "swin_tiny_patch4_window7_224.pth"
    state_dict = _official_swin_tiny(src)
    assert zoo_weights("convert", "zoo_swin_tiny.ms_in1k", src, root / "swin_tiny.ms_in1k") == 0
    return src, root / "swin_tiny.ms_in1k", state_dict


def test_list_shows_the_manifest(capsys):
    assert zoo_weights("list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["weight", "top-1", "size"]
    for _, entry in iter_weights():
        assert f"{entry['model']}.{entry['tag']}" in out

    assert zoo_weights("list", "zoo_swin_base_384.*", "--family", "swin") == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == [
        "zoo_swin_base_384.ms_in22k_ft_in1k",
        "zoo_swin_base_384.ms_in1k",
        "zoo_swin_base_384.ms_in22k",
    ]
    assert lines[0].split()[1:5] == ["86.4", "384x384", "1000", "mit"]

    assert zoo_weights("list", "--family", "nope") == 1
    assert "no weights manifest for family 'nope'" in capsys.readouterr().err


def test_convert_writes_a_hub_folder_with_the_same_tensors(converted, capsys):
    _, out_dir, state_dict = converted
    saved = load_file(out_dir / "model.safetensors")
    assert saved.keys() == state_dict.keys()
    assert all(torch.equal(saved[k], state_dict[k]) for k in state_dict)
    params = sum(v.numel() for v in state_dict.values()) / 1e6  # Swin has no buffers
    assert f"Params (M):** {params:.1f}" in (out_dir / "README.md").read_text()


def test_convert_reports_keys_and_refuses_another_model(converted, tmp_path, capsys):
    src, _, _ = converted
    assert zoo_weights("convert", "zoo_swin_small.ms_in1k", src, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"error: {src} is not a checkpoint of zoo_swin_small:" in err
    assert re.search(r"\d+ keys match, [1-9]\d* missing, 0 unexpected, 0 with another shape", err)
    assert "missing: layers.2.blocks.6.norm1.weight" in err and "It fits zoo_swin_tiny" in err
    assert not (tmp_path / "out").exists()

    assert zoo_weights("convert", "zoo_swin_tiny.in1k", src, tmp_path / "out") == 1
    assert "zoo_swin_tiny.in1k is not in the weights manifest; its weights: zoo_swin_tiny.ms_in1k" in (
        capsys.readouterr().err
    )


def test_verify(converted, capsys):
    src, out_dir, _ = converted
    for path in (src, out_dir):
        assert zoo_weights("verify", path, "zoo_swin_tiny.ms_in1k") == 0
        out = capsys.readouterr().out
        assert "the manifest has no sha256 for zoo_swin_tiny.ms_in1k" in out
        assert re.search(r"keys: \d+ keys match, 0 missing, 0 unexpected, 0 with another shape", out)
    assert zoo_weights("verify", src, "zoo_swin_base.ms_in1k") == 1
    assert "is not a checkpoint of zoo_swin_base" in capsys.readouterr().err


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls, sends nothing."""

    calls: list = []

    def __init__(self, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return "https://huggingface.co/zoo-models/swin_tiny.ms_in1k/commit/0"


def test_push_dry_run_then_upload(converted, capsys, monkeypatch):
    _, out_dir, _ = converted
    monkeypatch.setattr(publish, "HfApi", RecordingApi)
    monkeypatch.setattr(publish, "hub_unreachable", lambda: None)
    monkeypatch.setattr(RecordingApi, "calls", [])

    assert zoo_weights("push", out_dir, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would create model repo zoo-models/swin_tiny.ms_in1k if missing" in out
    assert "would upload 3 files" in out
    for name in ("README.md", "config.json", "model.safetensors"):
        assert re.search(rf"{name} +[\d.]+ MB +sha256 [0-9a-f]{{64}}", out)
    assert RecordingApi.calls == []

    assert zoo_weights("push", out_dir, "me/swin-t", "--private") == 0
    assert [(c[0], c[1]) for c in RecordingApi.calls] == [("create_repo", "me/swin-t"), ("upload_folder", "me/swin-t")]
    assert RecordingApi.calls[0][2]["private"] is True
    assert RecordingApi.calls[1][2]["folder_path"] == out_dir
    assert "uploaded: https://huggingface.co/" in capsys.readouterr().out


def test_push_refuses_a_folder_that_is_not_converted(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert zoo_weights("push", tmp_path, "me/x", "--dry-run") == 1
    assert "has no model.safetensors: create it with `zoo weights convert`" in capsys.readouterr().err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_converted_folder_has_the_permissions_of_a_new_folder(converted):
    _, out_dir, _ = converted
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o777 & ~_umask()


def _limit_file_size():
    """In the child: files beyond 1 MB cannot be written, as on a full disk (EFBIG instead of ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE stands in for a full disk")
def test_convert_onto_a_full_disk_writes_nothing(converted, tmp_path, zoo_command):
    src, _, _ = converted
    out = tmp_path / "swin"
    result = zoo_command("weights", "convert", "zoo_swin_tiny.ms_in1k", src, out, preexec_fn=_limit_file_size)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"zoo weights convert: error: cannot write {out} (")
    assert result.stderr.endswith("; nothing was written there\n")
    assert list(tmp_path.iterdir()) == []


def test_verify_of_a_deeper_checkpoint_leads_with_the_keys(converted, tmp_path, zoo_command):
    src, _, _ = converted
    official = torch.load(src, weights_only=True)["model"]
    for key in [k for k in official if k.startswith("layers.2.blocks.")]:  # stage 3 twice as deep
        block, rest = key.removeprefix("layers.2.blocks.").split(".", 1)
        official[f"layers.2.blocks.{int(block) + 6}.{rest}"] = official[key]
    deeper = tmp_path / "deeper.pth"
    torch.save({"model": official}, deeper)
    result = zoo_command("weights", "verify", deeper, "zoo_swin_tiny.ms_in1k")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr[result.stderr.index("zoo weights verify: error: ") :]  # after torch's warnings
    first, second, *rest = error.splitlines()
    assert first == f"zoo weights verify: error: {deeper} is not a checkpoint of zoo_swin_tiny:"
    assert re.match(r"\d+ of its \d+ keys belong to blocks zoo_swin_tiny does not have: layers\.2\.blocks\.6\.",
                    second)  # fmt: skip
    assert rest[-1].startswith("(the zoo_swin_tiny checkpoint filter cannot convert this checkpoint (AttributeError")


def test_push_without_network_is_one_line(converted, tmp_path, zoo_command):
    _, out_dir, _ = converted
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_unused", HF_HOME=str(tmp_path))
    env.pop("HF_HUB_OFFLINE", None)
    result = zoo_command("weights", "push", out_dir, "me/swin-t", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "zoo weights push: error: upload to me/swin-t failed: the Hub (http://127.0.0.1:9) could not be reached"
    )
    assert len(result.stderr.splitlines()) == 1


def test_list_without_a_match_says_so(zoo_command):
    result = zoo_command("weights", "list", "nomatch")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "zoo weights list: error: no weights match 'nomatch'; `zoo weights list` shows them all\n"
