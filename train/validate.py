"""``zoo-validate``: top-1 / top-5 accuracy and loss of a model or checkpoint on a data set.

Images go through the model's pretrained-cfg eval transform (resize by crop_pct, center crop,
mean/std), overridable from the command line like timm's validate.py.
"""

import argparse
import contextlib
import difflib
import json
import logging
import sys
import time

import timm
import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config
from timm.models import parse_model_name, split_model_name_tag

from zoo.hub import WeightsError

from .args import ConfigError, KeyValues
from .checkpoint import CheckpointError, load_checkpoint_file, load_weights
from .data import DataError, ImageClassDataset, SkipReport, create_eval_loader, create_source, resolve_source_kind
from .distributed import DistInfo, all_reduce_sum

_logger = logging.getLogger("zoo.train.validate")

USER_ERRORS = (ConfigError, DataError, CheckpointError)  # exit status 2


class RunError(RuntimeError):
    """The command cannot go on for a reason outside its options (weights out of reach, a full disk); exit status 1."""


def autocast_for(device, amp, amp_dtype):
    """The autocast context for a run: bf16 anywhere, fp16 on GPU only."""
    if not amp:
        return contextlib.nullcontext
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[amp_dtype]
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError("--amp-dtype float16 needs a GPU; use --amp-dtype bfloat16 on CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model, loader, device, autocast=contextlib.nullcontext, info=None, channels_last=False):
    """Mean cross-entropy, top-1 and top-5 (in %) over every readable image of ``loader``.

    Sums are reduced over all ranks, so with several processes the result covers the whole set.
    """
    info = info or DistInfo(device=device)
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    skipped = SkipReport()
    for images, targets, unreadable in loader:
        skipped.update(unreadable)
        if images.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        hits = top.eq(targets[:, None])
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=-1).sum().item()
        count += len(targets)
    loss_sum, correct1, correct5, count = all_reduce_sum([loss_sum, correct1, correct5, count], info).tolist()
    if count == 0:
        raise DataError("no readable image to evaluate on")
    return {
        "loss": loss_sum / count,
        "top1": 100.0 * correct1 / count,
        "top5": 100.0 * correct5 / count,
        "count": int(count),
        "skipped": len(skipped.paths),
    }, skipped


def build_parser():
    parser = argparse.ArgumentParser(prog="zoo-validate", description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", metavar="DIR", help="data directory (same as --data-dir)")
    parser.add_argument("--data-dir", metavar="DIR")
    parser.add_argument("--dataset", default="", help="'folder', 'hf' or 'digits' (guessed by default)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--input-key")
    parser.add_argument("--target-key")
    parser.add_argument("--model", help="model name, or local-dir:PATH / hf-hub:ID (default: the checkpoint's)")
    parser.add_argument("--checkpoint", default="", help="zoo-train checkpoint or state dict to evaluate")
    parser.add_argument("--use-ema", action="store_true", help="evaluate the checkpoint's EMA weights")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=KeyValues, metavar="KEY=VALUE")
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--crop-pct", type=float)
    parser.add_argument("--crop-mode")
    parser.add_argument("--mean", type=float, nargs="+")
    parser.add_argument("--std", type=float, nargs="+")
    parser.add_argument("--interpolation", default="")
    parser.add_argument("-b", "--batch-size", type=int, default=256)
    parser.add_argument("-j", "--workers", type=int, default=4)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device")
    parser.add_argument("--results-file", default="", help="also write the results here as JSON")
    return parser


def training_record(path):
    """What a zoo-train checkpoint records of its run (architecture, classes, preprocessing); {} for other files."""
    if not path or str(path).endswith(".safetensors"):
        return {}
    checkpoint = load_checkpoint_file(path)
    return checkpoint if isinstance(checkpoint, dict) and "arch" in checkpoint else {}


def check_model_name(name):
    """Raise ConfigError unless timm knows model ``name`` and its tag (``hf-hub:`` / ``local-dir:`` load as given)."""
    source, model_name = parse_model_name(name)
    if source is not None:
        return
    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown model {name!r}: {hint}`zoo list` shows the zoo models, `timm` knows the others")
    tags = [released.split(".", 1)[1] for released in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise ConfigError(f"model {arch} has no weights tagged {tag!r}; its tags: {', '.join(tags) or 'none'}")


@contextlib.contextmanager
def pretrained_weights_errors(local_file_hint):
    """Turn a failure to get pretrained weights into a RunError whose advice is command-line options."""
    try:
        yield
    except WeightsError as e:
        reason = str(e).split("\nWith a local copy")[0].split("; use pretrained=False")[0]
        raise RunError(f"{reason}\nWith a local copy of the weights file: {local_file_hint}") from e


def create_eval_model(args):
    """The model of ``args.model`` or of the checkpoint, with the checkpoint's weights loaded."""
    meta = training_record(args.checkpoint)
    name = args.model or meta.get("arch")
    if not name:
        raise ConfigError("no model: pass --model NAME or a zoo-train --checkpoint")
    check_model_name(name)
    kwargs = dict(meta.get("model_kwargs") or {})
    kwargs.update(args.model_kwargs)
    num_classes = args.num_classes or meta.get("num_classes")
    if num_classes:
        kwargs["num_classes"] = num_classes
    with pretrained_weights_errors("pass it as --checkpoint FILE instead of --pretrained"):
        model = timm.create_model(name, pretrained=args.pretrained, **kwargs)
    if args.checkpoint:
        if args.use_ema and meta and meta.get("state_dict_ema") is None:
            raise CheckpointError(f"checkpoint {args.checkpoint} holds no EMA weights")
        load_weights(model, args.checkpoint, use_ema=args.use_ema)
    return model, meta


def class_outputs(data_classes, trained_classes, checkpoint):
    """The model output of each class of the data, matched by name to the classes it was trained on.

    Folders may be any subset of the trained classes; a name the model was not trained on is an error
    (skipping it would silently change what the accuracy measures). Without recorded class names
    (a plain state dict, a pretrained model) returns None: the i-th class is output i, as in timm.
    """
    if not trained_classes:
        return None
    output_of = {name: index for index, name in enumerate(trained_classes)}
    unknown = [name for name in data_classes if name not in output_of]
    if unknown:
        shown = ", ".join(trained_classes[:20]) + (" ..." if len(trained_classes) > 20 else "")
        raise DataError(
            f"class(es) {unknown[:10]} of the data are not among the {len(trained_classes)} classes checkpoint "
            f"{checkpoint} was trained on ({shown}); name the class folders as in training, or remove the others"
        )
    return [output_of[name] for name in data_classes]


def validate(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, meta = create_eval_model(args)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    overrides = {
        "img_size": args.img_size,
        "crop_pct": args.crop_pct,
        "crop_mode": args.crop_mode,
        "mean": args.mean,
        "std": args.std,
        "interpolation": args.interpolation,
    }
    # a zoo-train checkpoint records the preprocessing it was trained for; the options override it
    pretrained_cfg = {**model.pretrained_cfg, **(meta.get("data_config") or {})}
    data_config = resolve_data_config(overrides, pretrained_cfg=pretrained_cfg, model=model)
    data_dir = args.data_dir or args.data
    kind = resolve_source_kind(args.dataset or meta.get("dataset_kind", ""), data_dir)
    source = create_source(kind, data_dir, args.split, image_key=args.input_key, label_key=args.target_key)
    outputs = class_outputs(source.classes, meta.get("class_names"), args.checkpoint)
    if outputs is None and len(source.classes) > model.num_classes:
        raise DataError(f"the data has {len(source.classes)} classes but the model predicts {model.num_classes}")
    dataset = ImageClassDataset(
        source,
        transform=create_transform(**data_config, is_training=False),
        target_transform=outputs.__getitem__ if outputs is not None else None,
    )
    loader = create_eval_loader(dataset, args.batch_size, args.workers, pin_memory=device.type == "cuda")
    start = time.perf_counter()
    metrics, skipped = evaluate(
        model, loader, device, autocast_for(device, args.amp, args.amp_dtype), channels_last=args.channels_last
    )
    metrics["seconds"] = time.perf_counter() - start
    if skipped.paths:
        _logger.warning(skipped.message("validation"))
    return {
        "model": meta.get("arch") or args.model,
        "checkpoint": args.checkpoint,
        "data": data_dir or kind,
        "split": args.split,
        "img_size": data_config["input_size"][-1],
        "crop_pct": data_config["crop_pct"],
        **metrics,
    }


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        results = validate(args)
    except USER_ERRORS as e:
        print(f"zoo-validate: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"zoo-validate: error: {e}", file=sys.stderr)
        return 1
    print(
        f"{results['model']}: top-1 {results['top1']:.3f}  top-5 {results['top5']:.3f}  "
        f"loss {results['loss']:.4f}  ({results['count']} images, {results['skipped']} skipped)"
    )
    if args.results_file:
        with open(args.results_file, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
