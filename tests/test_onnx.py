"""ONNX export: one model of every family, run by ONNX Runtime, against PyTorch."""

import importlib
import importlib.util
import os

import pytest
import timm
import torch

from zoo.cli import main
from zoo.kernels._dispatch import chunks
from zoo.models._registry import tiny_kwargs
from zoo.onnx_export import export_onnx, onnx_difference

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# One per model file; HorNet's global-filter variant for its FFTs, NAT and DiNAT for both dilations. The
# spectral families export their rfft2 / irfft2 (ONNX DFT) and SVT its wavelet transform (convolutions).
MODELS = [
    "zoo_swin_tiny", "zoo_flatten_swin_tiny", "zoo_agent_swin_tiny", "zoo_biformer_tiny", "zoo_nat_mini",
    "zoo_dinat_mini", "zoo_shvit_s1", "zoo_van_b0", "zoo_hornet_tiny_gf", "zoo_parcnet_s", "zoo_parcnetv2_b",
    "zoo_replknet_31b", "zoo_slak_tiny", "zoo_lkca_vit", "zoo_unireplknet_a", "zoo_ffnet_3",
    "zoo_cswin_tiny", "zoo_flatten_cswin_tiny", "zoo_agent_cswin_tiny",
    "zoo_gfnet_h_ti", "zoo_spectformer_h_s", "zoo_svt_h_s",
    "zoo_flatten_pvt_tiny", "zoo_flatten_pvtv2_b0", "zoo_agent_pvt_tiny", "zoo_agent_deit_tiny",
    "zoo_gfnet_h_ti", "zoo_spectformer_h_s", "zoo_svt_h_s", "zoo_affnet_et",
]  # fmt: skip
# Re-parameterizable families, exported again after reparameterize().
FOLDED_MODELS = ["zoo_replknet_31b", "zoo_slak_tiny", "zoo_unireplknet_a", "zoo_ffnet_3"]


# Memory budgets of the reference kernels that split the tiny models' maps into several chunks. The
# neighborhood kernel's budget covers a few rows of the whole batch, so its rows per chunk depend on
# the batch size, as they do at full size; the other two chunk by image and by region.
SMALL_BUDGETS = {"neighborhood_attention": 2**16, "routing_attention": 1, "window_attention": 1}


@pytest.fixture
def reference_chunks(monkeypatch):
    """The reference kernels on :data:`SMALL_BUDGETS`; returns the chunk counts of the eager calls."""
    counts = []

    def counting_chunks(total, size):
        slices = chunks(total, size)
        if not torch.compiler.is_exporting():
            counts.append(len(slices))
        return slices

    for op, budget in SMALL_BUDGETS.items():
        module = importlib.import_module(f"zoo.kernels.{op}")  # zoo.kernels.<op> is also the op's function
        monkeypatch.setattr(module, "_REFERENCE_CHUNK_BYTES", budget)
        monkeypatch.setattr(module, "chunks", counting_chunks)
    return counts


@pytest.mark.parametrize(
    "name, folded", [(name, False) for name in MODELS] + [(name, True) for name in FOLDED_MODELS]
)
def test_exported_graph_matches_pytorch_at_any_batch_size(tmp_path, name, folded, reference_chunks):
    model = timm.create_model(name, num_classes=0, **tiny_kwargs(name)).eval()
    if folded:
        model.reparameterize()
    input_size = model.pretrained_cfg["input_size"]
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size)
    assert path.is_file() and not list(tmp_path.glob("*.partial"))
    for batch in (1, 3):
        reference_chunks.clear()
        difference, scale = onnx_difference(model, path, torch.randn(batch, *input_size))
        assert scale > 0
        assert difference <= 1e-4 * scale, f"batch {batch}: |difference| {difference:.3g}, |output| {scale:.3g}"
        if batch > 1:  # the window kernel chunks by image
            assert all(count > 1 for count in reference_chunks), "a map fits in one reference chunk"


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


def test_command_refuses_an_input_size_before_exporting(tmp_path, zoo_command):
    path = tmp_path / "x.onnx"
    result = zoo_command("export-onnx", "zoo_van_b0", path, "--input-size", "1", "64", "64")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "zoo export-onnx: error: input_size (1, 64, 64) does not fit the model: VAN expects 3 input channels"
    )
    assert not path.exists()


def test_command_names_an_unknown_model(tmp_path, zoo_command):
    result = zoo_command("export-onnx", "zoo_nope", tmp_path / "x.onnx")
    assert result.returncode == 1
    assert result.stderr == "zoo export-onnx: error: unknown model 'zoo_nope'; `zoo list` shows the registered ones\n"


def test_command_offline_without_the_weights_says_where_they_come_from(tmp_path, zoo_command):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), TORCH_HOME=str(tmp_path))
    result = zoo_command("export-onnx", "zoo_van_b0", tmp_path / "x.onnx", "--pretrained", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("zoo export-onnx: error: cannot get the pretrained weights of zoo_van_b0.in1k:")
    assert not (tmp_path / "x.onnx").exists()


def test_a_graph_that_fails_in_onnx_runtime_is_removed(tmp_path, monkeypatch, capsys):
    def failing_run(self, *args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Reshape node: requested shape {-1,56,56,64}")

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", failing_run)
    path = tmp_path / "van.onnx"
    assert main(["export-onnx", "zoo_van_b0", str(path), "--input-size", "3", "32", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"zoo export-onnx: error: the exported graph failed the check and {path} was removed: ")
    assert "ONNX Runtime cannot run it at batch 1 (RuntimeError: [ONNXRuntimeError]" in err
    assert not path.exists()
