"""ONNX export of any timm model (the zoo's included), checked against PyTorch with ONNX Runtime.

    zoo export-onnx zoo_swin_tiny swin_tiny.onnx --pretrained
    zoo export-onnx hf-hub:org/name model.onnx --input-size 3 384 384

The graph comes from ``torch.export`` (``torch.onnx.export(..., dynamo=True)``): the batch size
stays symbolic, the image size is the one exported (the window and region partitions are fixed by
it). The CPU reference paths of the zoo's kernels are what gets traced.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["export_onnx", "onnx_difference"]

_EXTRA = "pip install 'zoo[onnx]' (onnx, onnxscript, onnxruntime)"


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
    into place, so an interrupted export never leaves a truncated file at ``path``.
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

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(images)
    got = torch.from_numpy(session.run(None, {"image": images.numpy()})[0])
    if got.shape != expected.shape:
        raise RuntimeError(f"the ONNX graph gives shape {tuple(got.shape)}, the model {tuple(expected.shape)}")
    return (got - expected).abs().max().item(), expected.abs().max().item()


def _cmd_export(args: argparse.Namespace) -> int:
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    input_size = tuple(args.input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    batch = args.batch_size or 3
    try:
        path = export_onnx(model, args.output, input_size, batch_size=args.batch_size, opset=args.opset)
        print(f"wrote {path}: image ({args.batch_size or 'batch'}, {', '.join(map(str, input_size))}) -> output")
        if args.no_check:
            return 0
        difference, scale = onnx_difference(model, path, torch.randn(batch, *input_size))
    except ModuleNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"ONNX Runtime vs PyTorch on {batch} random images: max |difference| {difference:.3g}, "
          f"max |output| {scale:.3g}")
    if difference > args.tolerance * scale:
        print(f"the difference exceeds {args.tolerance:g} x max |output|", file=sys.stderr)
        return 1
    return 0


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export-onnx`` to the ``zoo`` command's subparsers."""
    p = subparsers.add_parser("export-onnx", help="export a model to ONNX and check it with ONNX Runtime")
    p.add_argument("model", help="a timm model name (zoo_*, hf-hub:..., local-dir:...)")
    p.add_argument("output", type=Path, help="the .onnx file to write")
    p.add_argument("--pretrained", action="store_true", help="with its pretrained weights")
    p.add_argument("--num-classes", type=int, help="classifier size (0: pooled features)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="the exported image size (default: the model's pretrained_cfg input_size)")  # fmt: skip
    p.add_argument("--batch-size", type=int, help="fix the batch size (default: symbolic)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted difference, as a fraction of max |output| (default: 1e-4)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    p.set_defaults(func=_cmd_export)
