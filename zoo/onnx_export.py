"""ONNX export of any timm model (the zoo's included), checked against PyTorch with ONNX Runtime.

    zoo export-onnx zoo_swin_tiny swin_tiny.onnx --pretrained
    zoo export-onnx hf-hub:org/name model.onnx --input-size 3 384 384

The graph comes from ``torch.export`` (``torch.onnx.export(..., dynamo=True)``): the batch size
stays symbolic, the image size is the one exported (the window and region partitions are fixed by
it). The CPU reference paths of the zoo's kernels are what gets traced.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["OnnxCheckError", "check_onnx", "export_onnx", "onnx_difference"]

_EXTRA = "pip install 'zoo[onnx]' (onnx, onnxscript, onnxruntime)"


class OnnxCheckError(RuntimeError):
    """An exported graph that ONNX Runtime cannot run or whose outputs differ from PyTorch's."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"ONNX export needs {module!r}: {_EXTRA}", name=module)


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int],
    batch_size: int | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX graph with input ``image`` ``(B, C, H, W)`` and output ``output``.

    ``B`` is symbolic unless ``batch_size`` fixes it. The file is written next to ``path`` and renamed
    into place, so an interrupted export never leaves a truncated file at ``path``. An ``input_size``
    the model cannot take is a ValueError, raised before exporting.
    """
    _require("onnxscript")
    if len(input_size) != 3 or not all(isinstance(s, int) and s > 0 for s in input_size):
        raise ValueError(f"input_size must be three positive ints (C, H, W), got {input_size!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None (symbolic), got {batch_size!r}")
    path = Path(path)
    model = model.eval()
    # An example batch of 2: torch.export fixes dimensions whose example size is 1.
    example = torch.randn(batch_size or 2, *input_size)
    try:  # an input the model refuses fails here with its own message, not deep in the exporter's trace
        with torch.no_grad():
            model(example)
    except ValueError as e:
        raise ValueError(f"input_size {tuple(input_size)} does not fit the model: {e}") from e
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if batch_size is None else None
    # The math kernel of SDPA: the fused CPU kernels return another memory layout than the one the
    # exporter's decomposition of SDPA produces, which then breaks a later reshape.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["output"],
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            verbose=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    program.save(str(partial))
    os.replace(partial, path)
    return path


def onnx_difference(model: torch.nn.Module, path: str | Path, images: torch.Tensor) -> tuple[float, float]:
    """``(max |onnx - torch|, max |torch|)`` of the outputs for ``images``, the ONNX file run by ONNX Runtime."""
    _require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failing node raises with its message; no second copy in the log
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(images)
    got = torch.from_numpy(session.run(None, {"image": images.numpy()})[0])
    if got.shape != expected.shape:
        raise RuntimeError(f"the ONNX graph gives shape {tuple(got.shape)}, the model {tuple(expected.shape)}")
    return (got - expected).abs().max().item(), expected.abs().max().item()


def check_onnx(
    model: torch.nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int],
    batch_size: int | None = None,
    tolerance: float = 1e-4,
) -> list[tuple[int, float, float]]:
    """Run the exported ``path`` in ONNX Runtime against ``model`` on random images.

    Checks batches of 1 and 3 when the batch is symbolic (``batch_size`` None), else ``batch_size``.
    Returns ``(batch, max |difference|, max |output|)`` per batch. A graph that fails to run or differs
    by more than ``tolerance`` x max |output| is deleted and an :class:`OnnxCheckError` says what failed.
    """
    results = []
    for batch in (batch_size,) if batch_size else (1, 3):
        try:
            difference, scale = onnx_difference(model, path, torch.randn(batch, *input_size))
        except ModuleNotFoundError:
            raise
        except Exception as e:  # whatever ONNX Runtime raises for a graph it cannot run
            problem = f"ONNX Runtime cannot run it at batch {batch} ({type(e).__name__}: {str(e).strip()})"
        else:
            results.append((batch, difference, scale))
            if difference <= tolerance * scale:
                continue
            problem = (
                f"at batch {batch} its outputs differ from PyTorch's by {difference:.3g}, more than "
                f"{tolerance:g} x max |output| ({scale:.3g})"
            )
        Path(path).unlink(missing_ok=True)
        raise OnnxCheckError(f"the exported graph failed the check and {path} was removed: {problem}")
    return results
