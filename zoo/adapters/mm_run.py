"""``zoo-mm train|test CONFIG``: run an mmdet or mmseg config with mmengine's ``Runner``.

What mmdet's and mmseg's ``tools/train.py`` / ``tools/test.py`` do, installed as a console script so a
zoo config runs from anywhere::

    zoo-mm train configs/mmdet/mask-rcnn_swin-tiny_fpn_1x_coco.py --work-dir work_dirs/swin --amp
    torchrun --nproc-per-node 8 -m zoo.adapters.mm_run train CONFIG --launcher pytorch
    zoo-mm test configs/mmseg/upernet_swin-tiny_160k_ade20k-512x512.py work_dirs/swin/iter_160000.pth

The config's ``custom_imports`` registers ``ZooBackbone``; its ``default_scope`` picks mmdet or mmseg.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(prog="zoo-mm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train a model"), ("test", "evaluate a checkpoint")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("config", help="an mmdet or mmseg config file, e.g. one of configs/mmdet/")
        if name == "test":
            cmd.add_argument("checkpoint", help="the checkpoint to evaluate")
        cmd.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
        if name == "train":
            cmd.add_argument("--resume", nargs="?", const="auto", default=None,
                             help="resume from this checkpoint, or from the latest in the work dir if none is given")
            cmd.add_argument("--amp", action="store_true", help="mixed-precision training (AmpOptimWrapper)")
        cmd.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                         help="override config entries, e.g. train_dataloader.batch_size=4")
        cmd.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                         help="job launcher: 'pytorch' under torchrun")
        cmd.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def build_config(args: argparse.Namespace):
    """The config of ``args.config`` with the command line's overrides applied."""
    from mmengine.config import Config

    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)
    if args.command == "train":
        if args.amp:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
        if args.resume == "auto":
            cfg.resume, cfg.load_from = True, None
        elif args.resume:
            cfg.resume, cfg.load_from = True, args.resume
    else:
        cfg.load_from = args.checkpoint
    return cfg


def main(argv: list[str] | None = None) -> int:
    try:
        from mmengine.registry import RUNNERS
        from mmengine.runner import Runner
    except ImportError as e:
        raise SystemExit(f"zoo-mm needs the OpenMMLab stack ({e}); install it with `make openmmlab`") from e
    args = _parser().parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = build_config(args)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    if args.command == "train":
        runner.train()
    else:
        runner.test()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
