"""ONNX export: one model of every family, run by ONNX Runtime, against PyTorch."""

import importlib.util

import pytest
import timm
import torch

from zoo.cli import main
from zoo.models._registry import tiny_kwargs
from zoo.onnx_export import export_onnx, onnx_difference

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# One per model file; HorNet's global-filter variant for its FFTs, NAT and DiNAT for both dilations. The
# spectral families export their rfft2 / irfft2 (ONNX DFT) and SVT its wavelet transform (convolutions).
MODELS = [
    "zoo_swin_tiny", "zoo_flatten_swin_tiny", "zoo_agent_swin_tiny", "zoo_biformer_tiny", "zoo_nat_mini",
    "zoo_dinat_mini", "zoo_shvit_s1", "zoo_van_b0", "zoo_hornet_tiny_gf", "zoo_parcnet_s", "zoo_parcnetv2_b",
    "zoo_replknet_31b", "zoo_slak_tiny", "zoo_lkca_vit",
    "zoo_cswin_tiny", "zoo_flatten_cswin_tiny", "zoo_agent_cswin_tiny",
    "zoo_gfnet_h_ti", "zoo_spectformer_h_s", "zoo_svt_h_s", "zoo_affnet_et",
]  # fmt: skip
# Re-parameterizable families, exported again after reparameterize().
FOLDED_MODELS = ["zoo_replknet_31b", "zoo_slak_tiny"]


@pytest.mark.parametrize(
    "name, folded", [(name, False) for name in MODELS] + [(name, True) for name in FOLDED_MODELS]
)
def test_exported_graph_matches_pytorch_at_any_batch_size(tmp_path, name, folded):
    model = timm.create_model(name, num_classes=0, **tiny_kwargs(name)).eval()
    if folded:
        model.reparameterize()
    input_size = model.pretrained_cfg["input_size"]
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size)
    assert path.is_file() and not list(tmp_path.glob("*.partial"))
    for batch in (1, 3):
        difference, scale = onnx_difference(model, path, torch.randn(batch, *input_size))
        assert scale > 0
        assert difference <= 1e-4 * scale, f"batch {batch}: |difference| {difference:.3g}, |output| {scale:.3g}"


def test_command_exports_a_fixed_batch_and_checks_it(tmp_path, capsys):
    path = tmp_path / "van.onnx"
    argv = ["export-onnx", "zoo_van_b0", str(path), "--input-size", "3", "64", "64", "--num-classes", "5",
            "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "ONNX Runtime vs PyTorch on 2 random images" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 64, 64]
    assert session.get_outputs()[0].shape == [2, 5]


@pytest.mark.parametrize("input_size", [(3, 64), (3, 0, 64), (3.0, 64, 64)])
def test_bad_input_size_raises(tmp_path, input_size):
    model = timm.create_model("zoo_van_b0", **tiny_kwargs("zoo_van_b0"))
    with pytest.raises(ValueError, match=r"input_size must be three positive ints \(C, H, W\)"):
        export_onnx(model, tmp_path / "x.onnx", input_size)


def test_missing_exporter_dependency_is_named(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "onnxscript" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["export-onnx", "zoo_van_b0", str(tmp_path / "x.onnx"), "--input-size", "3", "32", "32"]) == 1
    assert "ONNX export needs 'onnxscript': pip install 'zoo[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
