"""Export a ``zoo-train`` checkpoint in Hugging Face Hub format (``config.json`` + ``model.safetensors``).

python -m zoo.train.export output/train/run/model_best.pth exported/
timm.create_model("local-dir:exported/")        # or push the folder to the Hub: "hf-hub:org/name"
"""

import argparse
import sys

import timm
from timm.models import save_for_hf

from .checkpoint import CheckpointError, load_checkpoint_file, load_model_weights


def model_from_checkpoint(checkpoint, source, use_ema=False):
    """Rebuild the trained model from a zoo-train checkpoint dict."""
    if not isinstance(checkpoint, dict) or "arch" not in checkpoint:
        raise CheckpointError(f"{source} is not a zoo-train checkpoint (it records no architecture)")
    model = timm.create_model(
        checkpoint["arch"], num_classes=checkpoint["num_classes"], **checkpoint.get("model_kwargs", {})
    )
    state = checkpoint.get("state_dict_ema") if use_ema else checkpoint["state_dict"]
    if state is None:
        raise CheckpointError(f"{source} holds no EMA weights")
    load_model_weights(model, state, source)
    return model.eval()


def exported_weights_cfg(pretrained_cfg, run_args):
    """The model's pretrained cfg less what describes a released weight that the export is not.

    Its ``tag`` names that release (``in1k``), and a run trained from scratch does not carry the
    release's ``license`` either.
    """
    from_weights = run_args.get("pretrained") or run_args.get("initial_checkpoint")
    dropped = {"tag"} if from_weights else {"tag", "license"}
    return {key: value for key, value in pretrained_cfg.items() if key not in dropped}


def export_hub(checkpoint_path, output_dir, use_ema=False):
    """Write ``output_dir/config.json`` and ``output_dir/model.safetensors``; returns the model."""
    checkpoint = load_checkpoint_file(checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path, use_ema=use_ema)
    model.pretrained_cfg = exported_weights_cfg(model.pretrained_cfg, checkpoint.get("args") or {})
    data_config = checkpoint.get("data_config") or {}
    save_for_hf(
        model,
        output_dir,
        model_config={"label_names": list(checkpoint.get("class_names") or [])},
        model_args=checkpoint.get("model_kwargs") or None,
        safe_serialization=True,
        data_config={k: v for k, v in data_config.items() if v is not None} or None,
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zoo.train.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("output_dir")
    parser.add_argument("--use-ema", action="store_true", help="export the EMA weights")
    args = parser.parse_args(argv)
    try:
        export_hub(args.checkpoint, args.output_dir, use_ema=args.use_ema)
    except CheckpointError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    print(f"exported to {args.output_dir}; load with timm.create_model('local-dir:{args.output_dir}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
