"""Command line of ``zoo-train``: timm train.py's option names, plus YAML recipes (``-c configs/x.yaml``).

A recipe may set any option (by its long name, with ``-`` or ``_``); the command line overrides it.
"""

import argparse

import yaml
from timm.utils import ParseKwargs


class ConfigError(ValueError):
    """A recipe or option combination that cannot run; the message says what was expected."""


class KeyValues(ParseKwargs):
    """timm's KEY=VALUE option, with a usage error (not a traceback) for a value without ``=``."""

    def __call__(self, parser, namespace, values, option_string=None):
        malformed = [value for value in values if value and "=" not in value]
        if malformed:
            raise argparse.ArgumentError(
                self, f"expected KEY=VALUE, got {malformed} (a data directory goes before {option_string})"
            )
        super().__call__(parser, namespace, values, option_string)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="zoo-train",
        description="Fine-tune or train a zoo (or any timm) model. Launch with torchrun for several processes.",
    )
    parser.add_argument("-c", "--config", default="", metavar="FILE", help="YAML recipe setting any option")

    group = parser.add_argument_group("data")
    group.add_argument("data", nargs="?", metavar="DIR", help="data directory (same as --data-dir)")
    group.add_argument("--data-dir", metavar="DIR", help="ImageFolder tree or Hugging Face datasets directory")
    group.add_argument(
        "--dataset",
        default="",
        help="'folder', 'hf' or 'digits'; guessed from --data-dir, 'digits' (built-in) without one",
    )
    group.add_argument("--train-split", default="train")
    group.add_argument("--val-split", default="validation")
    group.add_argument("--input-key", help="image column of a Hugging Face dataset")
    group.add_argument("--target-key", help="label column of a Hugging Face dataset")
    group.add_argument("-j", "--workers", type=int, default=4, help="data loading processes per rank")
    group.add_argument("--pin-mem", action="store_true")

    group = parser.add_argument_group("model")
    group.add_argument("--model", help="a registered zoo model (zoo_*) or any timm model name")
    group.add_argument("--pretrained", action="store_true", help="start from the model's pretrained weights")
    group.add_argument("--initial-checkpoint", default="", metavar="PATH", help="start from these weights")
    group.add_argument("--resume", default="", metavar="PATH", help="continue the run that wrote this checkpoint")
    group.add_argument("--num-classes", type=int, help="classes (default: those found in the data)")
    group.add_argument("--img-size", type=int, help="input image size (default: the model's)")
    group.add_argument("--crop-pct", type=float, help="eval center-crop fraction")
    group.add_argument("--mean", type=float, nargs="+", metavar="MEAN")
    group.add_argument("--std", type=float, nargs="+", metavar="STD")
    group.add_argument("--interpolation", default="", help="eval resize interpolation")
    group.add_argument("--drop", type=float, help="dropout rate before the classifier")
    group.add_argument("--drop-path", type=float, help="stochastic depth rate")
    group.add_argument("--model-kwargs", nargs="*", default={}, action=KeyValues, metavar="KEY=VALUE")
    group.add_argument("--grad-checkpointing", action="store_true")
    group.add_argument("--channels-last", action="store_true")
    group.add_argument("--torchcompile", nargs="?", const="inductor", help="torch.compile backend")
    group.add_argument("--torchcompile-mode", help="torch.compile mode")
    group.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SyncBatchNorm across processes on accelerators (CPU runs average BN statistics per epoch)",
    )

    group = parser.add_argument_group("optimizer")
    group.add_argument("--opt", default="adamw")
    group.add_argument("--opt-eps", type=float)
    group.add_argument("--opt-betas", type=float, nargs="+")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=0.05)
    group.add_argument("--layer-decay", type=float, help="layer-wise LR decay (e.g. 0.75)")
    group.add_argument("--opt-kwargs", nargs="*", default={}, action=KeyValues, metavar="KEY=VALUE")
    group.add_argument("--clip-grad", type=float, help="gradient clipping threshold")
    group.add_argument("--clip-mode", default="norm", help="'norm', 'value' or 'agc'")
    group.add_argument("--grad-accum-steps", type=int, default=1)

    group = parser.add_argument_group("schedule")
    group.add_argument("--sched", default="cosine")
    group.add_argument("--sched-on-updates", action="store_true", help="step the schedule every update")
    group.add_argument("--lr", type=float, help="learning rate (default: --lr-base scaled by batch size)")
    group.add_argument("--lr-base", type=float, default=5e-4)
    group.add_argument("--lr-base-size", type=int, default=512, help="global batch size --lr-base is for")
    group.add_argument("--warmup-lr", type=float, default=1e-6)
    group.add_argument("--min-lr", type=float, default=1e-6)
    group.add_argument("--epochs", type=int, default=30)
    group.add_argument("--warmup-epochs", type=int, default=2)
    group.add_argument("--warmup-prefix", action="store_true")
    group.add_argument("--cooldown-epochs", type=int, default=0)
    group.add_argument("--decay-epochs", type=float, default=30)
    group.add_argument("--decay-milestones", type=int, nargs="+", default=[30, 60])
    group.add_argument("--decay-rate", type=float, default=0.1)
    group.add_argument("--patience-epochs", type=int, default=10)

    group = parser.add_argument_group("augmentation and regularization")
    group.add_argument("--no-aug", action="store_true")
    group.add_argument("--scale", type=float, nargs=2, default=[0.08, 1.0])
    group.add_argument("--ratio", type=float, nargs=2, default=[3.0 / 4.0, 4.0 / 3.0])
    group.add_argument("--hflip", type=float, default=0.5)
    group.add_argument("--vflip", type=float, default=0.0)
    group.add_argument("--color-jitter", type=float, default=0.4)
    group.add_argument("--aa", help="AutoAugment / RandAugment policy, e.g. rand-m9-mstd0.5-inc1")
    group.add_argument("--train-interpolation", default="random")
    group.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    group.add_argument("--remode", default="pixel")
    group.add_argument("--recount", type=int, default=1)
    group.add_argument("--mixup", type=float, default=0.0, help="mixup alpha")
    group.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha")
    group.add_argument("--cutmix-minmax", type=float, nargs=2)
    group.add_argument("--mixup-prob", type=float, default=1.0)
    group.add_argument("--mixup-switch-prob", type=float, default=0.5)
    group.add_argument("--mixup-mode", default="batch")
    group.add_argument("--mixup-off-epoch", type=int, default=0, help="turn mixup off from this epoch")
    group.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")

    group = parser.add_argument_group("EMA")
    group.add_argument("--model-ema", action="store_true")
    group.add_argument("--model-ema-decay", type=float, default=0.9998)
    group.add_argument("--model-ema-warmup", action="store_true")

    group = parser.add_argument_group("run")
    group.add_argument("-b", "--batch-size", type=int, default=64, help="batch size per process")
    group.add_argument("-vb", "--validation-batch-size", type=int)
    group.add_argument("--amp", action="store_true", help="mixed precision (autocast)")
    group.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    group.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    group.add_argument("--output", default="output/train", metavar="DIR")
    group.add_argument("--experiment", default="", help="run folder name under --output")
    group.add_argument("--checkpoint-hist", type=int, default=3, help="best checkpoints to keep")
    group.add_argument(
        "--checkpoint-interval", type=int, default=0, help="also write last.pth every N updates (0: per epoch)"
    )
    group.add_argument("--eval-metric", default="top1", choices=["top1", "top5", "loss"])
    group.add_argument("--log-interval", type=int, default=50, help="batches between log lines")
    group.add_argument("--nonfinite-limit", type=int, default=10, help="stop after this many bad losses in a row")
    group.add_argument("--no-progress", action="store_true", help="no progress bar, log lines only")
    return parser


def load_recipe(path, parser):
    """Option defaults from a YAML recipe; unknown keys are an error."""
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from e
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value")
    known = {action.dest for action in parser._actions}
    recipe = {key.replace("-", "_"): value for key, value in recipe.items()}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown option(s) {unknown}")
    return recipe


def resumed_options(path, parser):
    """The options of the run that wrote checkpoint ``path`` (so ``--resume`` alone continues it)."""
    from .checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint_file

    checkpoint = {} if str(path).endswith(".safetensors") else load_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} is not a zoo-train checkpoint: it holds no run to resume. "
            f"To start a new run from its weights, pass --initial-checkpoint {path} (and --model)"
        )
    saved = checkpoint.get("args", {})
    known = {action.dest for action in parser._actions} - {"config", "resume", "data", "help", "output", "experiment"}
    return {key: value for key, value in saved.items() if key in known}


def parse_args(argv=None):
    """Options from, lowest first: defaults, the resumed run, the recipe, the command line."""
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.resume:
        parser.set_defaults(**resumed_options(pre.resume, parser))
    if pre.config:
        parser.set_defaults(**load_recipe(pre.config, parser))
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or args.data
    if args.model is None:
        raise ConfigError("no model: pass --model NAME (or set `model:` in the recipe)")
    if args.grad_accum_steps < 1:
        raise ConfigError("--grad-accum-steps must be >= 1")
    return args


def plain_args(args):
    """The options as plain containers (for checkpoints and args.yaml)."""
    plain = {}
    for key, value in vars(args).items():
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, (str, int, float, bool, list, dict)):
            plain[key] = value
    return plain
