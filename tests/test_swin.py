"""Swin: parity with timm's Swin, official checkpoints, timm Hub weights, input handling."""

import json
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._manipulate import reinit_non_persistent_buffers

import zoo  # noqa: F401

VARIANTS = {
    "zoo_swin_tiny": "swin_tiny_patch4_window7_224",
    "zoo_swin_small": "swin_small_patch4_window7_224",
    "zoo_swin_base": "swin_base_patch4_window7_224",
    "zoo_swin_base_384": "swin_base_patch4_window12_384",
    "zoo_swin_large": "swin_large_patch4_window7_224",
    "zoo_swin_large_384": "swin_large_patch4_window12_384",
}
SHALLOW = dict(depths=(1, 2, 1, 1))


def _pair(name, reference_kwargs=None, **kwargs):
    """timm's model and ours holding the same random weights (built on meta: init is the slow part)."""
    with torch.device("meta"):
        reference = timm.create_model(VARIANTS[name], **kwargs, **(reference_kwargs or {}))
        ours = timm.create_model(name, **kwargs)
    reference.to_empty(device="cpu")
    reinit_non_persistent_buffers(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in reference.parameters():
            param.normal_(0, 0.05, generator=generator)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return reference.eval(), ours.eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_timm(name):
    reference, ours = _pair(name, **SHALLOW)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    size = reference.pretrained_cfg["input_size"][-1]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_full_depth_parameter_counts_match_timm():
    for name, timm_name in VARIANTS.items():
        with torch.device("meta"):
            ours = timm.create_model(name)
            reference = timm.create_model(timm_name)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_other_input_sizes_match_timm_dynamic_size():
    # 448x224 gives maps of 112x56 .. 14x7: every stage a window multiple, so padding plays no role.
    reference, ours = _pair("zoo_swin_tiny", dict(strict_img_size=False), **SHALLOW)
    x = torch.randn(1, 3, 448, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_any_input_size_pads_and_crops():
    model = timm.create_model("zoo_swin_tiny", **SHALLOW, num_classes=0).eval()
    with torch.no_grad():
        for size in [(100, 150), (31, 29), (225, 224)]:
            x = torch.randn(1, 3, *size)
            _, intermediates = model.forward_intermediates(x)
            for feature, r in zip(intermediates, (4, 8, 16, 32)):
                expected = (-(-size[0] // r), -(-size[1] // r))
                assert feature.shape[-2:] == expected


def test_bad_input_messages():
    model = timm.create_model("zoo_swin_tiny", **SHALLOW).eval()
    with pytest.raises(ValueError, match=r"4-D image batch \(B, 3, H, W\)"):
        model(torch.randn(2, 3 * 224 * 224))
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="at least 28x28"):
        model(torch.randn(1, 3, 20, 64))


def _official_layout(timm_state_dict: dict, window: int, depths) -> dict:
    """The same weights under microsoft/Swin-Transformer's key names, with its buffers."""
    official = {}
    for key, value in timm_state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    n = window * window
    for stage, depth in enumerate(depths):
        for block in range(depth):
            prefix = f"layers.{stage}.blocks.{block}"
            official[f"{prefix}.attn.relative_position_index"] = torch.randint(0, n, (n, n))
            if block % 2:
                official[f"{prefix}.attn_mask"] = torch.zeros(4, n, n)
    return official


def test_official_checkpoint_loads(tmp_path):
    reference = timm.create_model("swin_tiny_patch4_window7_224", **SHALLOW).eval()
    official = _official_layout(reference.state_dict(), 7, SHALLOW["depths"])
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": official, "epoch": 299}, path)

    model = timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **SHALLOW).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_official_checkpoint_of_other_architecture_is_refused(tmp_path):
    other = timm.create_model("zoo_swin_base", **SHALLOW).state_dict()
    path = tmp_path / "base.pth"
    torch.save({"model": other}, path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model("zoo_swin_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SHALLOW)


def _fake_hub_cache(cache, repo_id: str, state_dict: dict) -> None:
    """A Hugging Face cache laid out as the Hub client writes it, holding one snapshot of ``repo_id``."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    save_file(state_dict, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": repo_id.split("/")[1].split(".")[0]}))


def test_pretrained_from_timm_hub_weights_offline(tmp_path, offline_hub_python):
    """``pretrained=True`` goes through timm's Hub download path to the timm/ repo, offline."""
    reference, _ = _pair("zoo_swin_tiny")
    _fake_hub_cache(tmp_path, "timm/swin_tiny_patch4_window7_224.ms_in1k", reference.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference(x)
    torch.save(x, tmp_path / "x.pt")
    model = "timm.create_model('zoo_swin_tiny.ms_in1k', pretrained=True).eval()"
    offline_hub_python(
        f"with torch.no_grad():\n    torch.save({model}(torch.load(r'{tmp_path / 'x.pt'}')), r'{tmp_path / 'y.pt'}')",
        tmp_path,
    )
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, rtol=1e-4, atol=1e-4)
