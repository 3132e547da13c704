"""The ``zoo`` command: ``zoo list``, ``zoo info NAME``, ``zoo weights convert|verify|push|list`` and
``zoo export-onnx``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from timm.models import split_model_name_tag

import zoo
from zoo.hub import WeightsError
from zoo.onnx_export import OnnxCheckError, check_onnx, export_onnx
from zoo.weights import families, manifest, weights_table
from zoo.weights.card import count_gmacs
from zoo.weights.convert import convert_checkpoint, verify_checkpoint
from zoo.weights.publish import push_folder


@dataclass
class ModelSummary:
    name: str
    params_m: float
    gmacs: float
    input_size: tuple[int, int, int]
    tags: list[str]
    reported_params_m: float | None = None
    reported_gflops: float | None = None


def _reported_figures() -> dict[str, dict]:
    figures = {}
    for family in families():
        figures.update(manifest(family).get("reported") or {})
    return figures


def summarize(name: str, reported: dict | None = None) -> ModelSummary:
    """Parameters and multiply-accumulates of ``name`` at its default input size.

    The model is built on the meta device, so nothing is allocated and no weights are initialized.
    """
    with torch.device("meta"):
        model = timm.create_model(name).eval()
    input_size = tuple(model.pretrained_cfg["input_size"])
    figures = (reported or {}).get(name, {})
    return ModelSummary(
        name=name,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        gmacs=count_gmacs(model, input_size),
        input_size=input_size,
        tags=[n.split(".", 1)[1] for n in timm.list_pretrained(f"{name}.*")],
        reported_params_m=figures.get("params_m"),
        reported_gflops=figures.get("gflops"),
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(summaries: list[ModelSummary]) -> str:
    lines = [
        "| model | params (M) | official params (M) | GMACs | official GFLOPs | input | pretrained tags |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for s in summaries:
        size = "x".join(str(v) for v in s.input_size[1:])
        tags = ", ".join(f"`{t}`" for t in s.tags) or "—"
        lines.append(
            f"| `{s.name}` | {s.params_m:.1f} | {_fmt(s.reported_params_m)} | {s.gmacs:.2f} | "
            f"{_fmt(s.reported_gflops)} | {size} | {tags} |"
        )
    return "\n".join(lines)


README_MARKERS = ("<!-- model-table:start -->", "<!-- model-table:end -->")


def _write_readme_table(path: Path, table: str) -> None:
    """Replace the text between the README's model-table markers with ``table``."""
    text = path.read_text()
    start, end = (text.find(marker) for marker in README_MARKERS)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no {README_MARKERS[0]} ... {README_MARKERS[1]} section")
    path.write_text(text[: start + len(README_MARKERS[0])] + "\n" + table + "\n" + text[end:])


class CommandError(Exception):
    """A failure that ``zoo`` reports as one line, ``zoo COMMAND: error: ...``, with exit status 1."""


def _check_model_name(name: str) -> str:
    """``name`` (``model`` or ``model.tag``) if timm has it."""
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise CommandError(f"unknown model {arch!r}; `zoo list` shows the registered ones")
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise CommandError(f"{arch} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}")
    return name


def _measure(names: list[str], reported: dict) -> list[ModelSummary]:
    """The summaries of ``names``, with progress on stderr: a bar on a terminal, a line per model elsewhere."""
    console = Console(stderr=True)
    if console.is_terminal:
        return [summarize(n, reported) for n in track(names, "Measuring models", console=console, transient=True)]
    summaries = []
    for i, name in enumerate(names, 1):
        print(f"measuring {name} ({i}/{len(names)})", file=sys.stderr, flush=True)
        summaries.append(summarize(name, reported))
    return summaries


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _cmd_list(args: argparse.Namespace) -> int:
    names = timm.list_models(args.filter)
    if not names:
        raise CommandError(f"no model matches {args.filter!r}")
    summaries = _measure(names, _reported_figures())
    if args.readme:
        _write_readme_table(args.readme, markdown_table(summaries))
        return 0
    if args.markdown:
        print(markdown_table(summaries))
        return 0
    columns = ("model", "params (M)", "GMACs", "input", "pretrained tags")
    rows = [
        (s.name, f"{s.params_m:.1f}", f"{s.gmacs:.2f}", "x".join(map(str, s.input_size)), ", ".join(s.tags) or "—")
        for s in summaries
    ]
    if not sys.stdout.isatty():  # full names and one row per line, for scripts
        print("\n".join(_aligned([columns, *rows])))
        return 0
    table = Table(title=f"{len(summaries)} models")
    for column in columns:
        table.add_column(column, justify="right" if column in ("params (M)", "GMACs") else "left")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    name = split_model_name_tag(_check_model_name(args.name))[0]
    summary = summarize(name, _reported_figures())
    model = timm.create_model(args.name, pretrained=False)
    info = {
        "model": name,
        "params_m": round(summary.params_m, 3),
        "gmacs": round(summary.gmacs, 3),
        "input_size": summary.input_size,
        "pretrained_tags": summary.tags,
        "reported": {"params_m": summary.reported_params_m, "gflops": summary.reported_gflops},
        "feature_info": [{k: v for k, v in f.items() if k != "module"} for f in model.feature_info],
        "pretrained_cfg": model.pretrained_cfg,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def _cmd_weights_convert(args: argparse.Namespace) -> int:
    report = convert_checkpoint(args.weight, args.src, args.out_dir, overwrite=args.overwrite)
    print(f"keys: {report.summary()}")
    print(f"wrote {args.out_dir}: config.json, model.safetensors, README.md")
    print(f'load it with timm.create_model("local-dir:{args.out_dir}", pretrained=True) after `import zoo`')
    return 0


def _cmd_weights_verify(args: argparse.Namespace) -> int:
    print("\n".join(verify_checkpoint(args.file, args.weight)))
    return 0


def _cmd_weights_push(args: argparse.Namespace) -> int:
    lines = push_folder(
        args.folder,
        args.repo_id,
        dry_run=args.dry_run,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
    )
    print("\n".join(lines))
    return 0


def _cmd_weights_list(args: argparse.Namespace) -> int:
    if args.family and args.family not in families():
        raise CommandError(f"no weights manifest for family {args.family!r}; known: {', '.join(families())}")
    lines = weights_table(args.pattern, args.family)
    if len(lines) == 1:
        where = f" in the {args.family} manifest" if args.family else ""
        raise CommandError(f"no weights match {args.pattern!r}{where}; `zoo weights list` shows them all")
    print("\n".join(lines))
    return 0


def _add_weights_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, convert, verify and publish pretrained weights",
        description="Pretrained weights: the manifest, conversion of official files, verification, Hub upload.",
    )
    commands = parser.add_subparsers(dest="weights_command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="the released weights in the manifest")
    p.add_argument("pattern", nargs="?", default="*", help="MODEL.TAG glob (default: all)")
    p.add_argument("--family", help="only this family's manifest")
    p.set_defaults(func=_cmd_weights_list, parser=p)

    p = commands.add_parser("convert", help="official checkpoint -> Hub-ready folder (safetensors, config, card)")
    p.add_argument("weight", metavar="MODEL.TAG", help="the manifest weight the file is, e.g. zoo_swin_tiny.ms_in1k")
    p.add_argument("src", metavar="SRC", help="the official checkpoint file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    p.set_defaults(func=_cmd_weights_convert, parser=p)

    p = commands.add_parser("verify", help="check a file's sha256 against the manifest and its keys against the model")
    p.add_argument("file", metavar="FILE", help="a checkpoint file, or a converted folder")
    p.add_argument("weight", metavar="MODEL.TAG")
    p.set_defaults(func=_cmd_weights_verify, parser=p)

    p = commands.add_parser("push", help="upload a converted folder to the Hugging Face Hub")
    p.add_argument("folder", metavar="OUT_DIR", help="a folder written by `zoo weights convert`")
    p.add_argument("repo_id", metavar="REPO_ID", nargs="?", help="target repo (default: the manifest's zoo_hub_id)")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded, send nothing")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to upload to (default: main)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_cmd_weights_push, parser=p)


def _cmd_export(args: argparse.Namespace) -> int:
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    name = args.model if args.model.startswith(("hf-hub:", "local-dir:")) else _check_model_name(args.model)
    model = timm.create_model(name, pretrained=args.pretrained, **kwargs)
    input_size = tuple(args.input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    try:
        path = export_onnx(model, args.output, input_size, batch_size=args.batch_size, opset=args.opset)
    except ValueError as e:  # an input size or batch size the model cannot take
        args.parser.error(str(e))
    except ModuleNotFoundError as e:
        raise CommandError(str(e)) from e
    print(f"wrote {path}: image ({args.batch_size or 'batch'}, {', '.join(map(str, input_size))}) -> output")
    if args.no_check:
        return 0
    try:
        for batch, difference, scale in check_onnx(model, path, input_size, args.batch_size, args.tolerance):
            print(
                f"ONNX Runtime vs PyTorch on {batch} random images: max |difference| {difference:.3g}, "
                f"max |output| {scale:.3g}"
            )
    except (ModuleNotFoundError, OnnxCheckError) as e:
        raise CommandError(str(e)) from e
    return 0


def _add_export_command(subparsers: argparse._SubParsersAction) -> None:
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
                   help="largest accepted difference, as a fraction of max |output| (default: 1e-4)")  # fmt: skip
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison (batches 1 and 3)")
    p.set_defaults(func=_cmd_export, parser=p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=f"zoo {zoo.__version__}: vision backbones for timm")
    commands = parser.add_subparsers(dest="command", required=True)

    list_parser = commands.add_parser("list", help="table of the registered models")
    list_parser.add_argument("filter", nargs="?", default="zoo_*", help="model-name pattern (default: zoo_*)")
    list_parser.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    list_parser.add_argument("--readme", type=Path, metavar="PATH",
                             help="write the markdown table into PATH between its model-table markers")  # fmt: skip
    list_parser.set_defaults(func=_cmd_list, parser=list_parser)

    info_parser = commands.add_parser("info", help="details of one model")
    info_parser.add_argument("name", help="model name, optionally with a .tag")
    info_parser.set_defaults(func=_cmd_info, parser=info_parser)

    _add_weights_commands(commands)
    _add_export_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``zoo``; a failure is one line on stderr, ``zoo COMMAND: error: ...``, and exit status 1
    (2 for usage errors, as argparse gives them)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, WeightsError) as e:
        print(f"{args.parser.prog}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
