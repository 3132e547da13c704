"""``zoo-train``: fine-tune or train a zoo (or any timm) model; one process, or many through torchrun.

    zoo-train --model zoo_swin_tiny --pretrained --data-dir /data/flowers --num-classes 102 --amp
    torchrun --nproc_per_node 4 -m zoo.train -c configs/finetune_swin.yaml --data-dir /data/flowers

Built from timm's parts: transforms, ``create_optimizer_v2`` (layer-wise LR decay),
``create_scheduler_v2``, Mixup/CutMix, label smoothing and soft-target losses, ``ModelEmaV3``.
A run writes ``last.pth`` (every epoch and every ``--checkpoint-interval`` updates), keeps the best
``--checkpoint-hist`` epochs, appends ``summary.csv`` and, when tensorboard is installed, logs to
``tb/``. ``--resume last.pth`` continues exactly where the run stopped, also mid-epoch.
"""

import contextlib
import functools
import itertools
import logging
import os
import signal
import sys
import time
from collections import Counter
from datetime import datetime

import timm
import torch
import torch.nn as nn
import yaml
from timm.data import Mixup, create_transform, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import model_parameters
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    ModelEmaV3,
    NativeScaler,
    dispatch_clip_grad,
    distribute_bn,
    random_seed,
    trim_summary,
    unwrap_model,
    update_summary,
)

from .args import ConfigError, parse_args, plain_args
from .checkpoint import (
    CHECKPOINT_VERSION,
    LAST,
    CheckpointError,
    CheckpointKeeper,
    capture_rng_state,
    load_checkpoint_file,
    load_model_weights,
    load_weights,
    restore_rng_state,
)
from .data import (
    DataError,
    ImageClassDataset,
    SkipReport,
    create_eval_loader,
    create_source,
    create_train_loader,
    resolve_source_kind,
)
from .distributed import DistInfo, all_reduce_sum, gather_objects, init_distributed, shutdown_distributed
from .validate import USER_ERRORS, RunError, autocast_for, check_model_name, evaluate, pretrained_weights_errors

_logger = logging.getLogger("zoo.train")


class TrainingStopped(RuntimeError):
    """The run stopped early (signal or diverging loss); ``last.pth`` holds the state to resume from."""


class Trainer:
    """One training run: model, data, optimizer, schedule, EMA, checkpoints and logging."""

    def __init__(self, args, info: DistInfo):
        self.args = args
        self.info = info
        self.device = info.device
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of ``epoch`` already trained
        self.num_updates = 0
        self.nonfinite_streak = 0
        self.epoch_loss = [0.0, 0.0]  # sum, count of the current epoch (kept across a resume)
        self.stop_signal = None
        self.output_dir = None
        self.tb_writer = None

        self._configure_torch()
        random_seed(args.seed, info.rank)
        self._build_data()
        self._build_model()
        self._check_batch_size()
        self._build_optimization()
        if args.resume:
            self._resume(args.resume)
        self._wrap_model()
        self._build_loaders()
        self._build_losses()
        if info.is_primary:
            self._prepare_output()

    # ----------------------------------------------------------------------------------- set-up

    def _configure_torch(self):
        if self.args.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.autocast = autocast_for(self.device, self.args.amp, self.args.amp_dtype)

    def _build_data(self):
        args = self.args
        self.source_kind = resolve_source_kind(args.dataset, args.data_dir)
        keys = dict(image_key=args.input_key, label_key=args.target_key)
        self.train_source = create_source(self.source_kind, args.data_dir, args.train_split, **keys)
        self.val_source = create_source(self.source_kind, args.data_dir, args.val_split, required=False, **keys)
        self.class_names = list(self.train_source.classes)
        if self.val_source is None:
            self._log(f"no {args.val_split!r} split found: training without validation", logging.WARNING)
        elif list(self.val_source.classes) != self.class_names:
            raise DataError(
                f"the {args.val_split!r} split has classes {list(self.val_source.classes)[:10]} but the "
                f"{args.train_split!r} split has {self.class_names[:10]}; both need the same class folders"
            )
        num_classes = args.num_classes or len(self.class_names)
        if num_classes < len(self.class_names):
            raise DataError(f"the data has {len(self.class_names)} classes but --num-classes is {args.num_classes}")
        self.num_classes = num_classes

    def _build_model(self):
        args = self.args
        extra = {}
        if args.drop is not None:
            extra["drop_rate"] = args.drop
        if args.drop_path is not None:
            extra["drop_path_rate"] = args.drop_path
        check_model_name(args.model)
        with pretrained_weights_errors("pass it as --initial-checkpoint FILE instead of --pretrained"):
            model, self.model_kwargs = create_sized_model(
                args.model,
                args.img_size,
                args.model_kwargs,
                pretrained=args.pretrained,
                num_classes=self.num_classes,
                **extra,
            )
        if args.initial_checkpoint:
            load_weights(model, args.initial_checkpoint, new_classifier=True)
        if args.grad_checkpointing:
            model.set_grad_checkpointing(enable=True)
        self.has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if self.info.distributed and args.sync_bn and self.has_batchnorm and self.device.type != "cpu":
            model = convert_sync_batchnorm(model)
        model.to(self.device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.data_config = resolve_data_config(
            {
                "img_size": args.img_size,
                "crop_pct": args.crop_pct,
                "mean": args.mean,
                "std": args.std,
                "interpolation": args.interpolation,
            },
            model=model,
        )
        if self.info.is_primary:
            params = sum(p.numel() for p in model.parameters())
            self._log(f"model {args.model}: {params / 1e6:.2f}M parameters, {self.num_classes} classes")

    @functools.cached_property
    def single_value_batchnorms(self):
        """The BatchNorm layers that cannot train on a batch of one image (one value per channel)."""
        return batchnorm_single_values(self.model, self.data_config["input_size"], self.device)

    def _check_batch_size(self):
        """Refuse a batch size of one that the model cannot train on, before anything runs."""
        if self.args.batch_size > 1:
            return
        if self.args.mixup > 0 or self.args.cutmix > 0 or self.args.cutmix_minmax is not None:
            raise ConfigError("--mixup / --cutmix mix pairs of images: they need --batch-size 2 or more")
        layers = self.single_value_batchnorms
        if layers:
            raise ConfigError(
                f"{self.args.model} cannot train on batches of one image: in training mode BatchNorm needs more "
                f"than one value per channel, and at input size {self.data_config['input_size'][-1]} its layer(s) "
                f"{', '.join(layers[:3])} see a single one; use --batch-size 2 or more"
            )

    def _build_optimization(self):
        args = self.args
        global_batch = args.batch_size * args.grad_accum_steps * self.info.world_size
        if args.lr is None:
            args.lr = args.lr_base * global_batch / args.lr_base_size
        opt_args = optimizer_kwargs(cfg=args)
        opt_args.update(args.opt_kwargs)
        self.optimizer = create_optimizer_v2(self.model, **opt_args)
        fp16 = args.amp and args.amp_dtype == "float16"
        self.scaler = NativeScaler(device=self.device.type) if fp16 else None
        self.model_ema = None
        if args.model_ema:
            self.model_ema = ModelEmaV3(self.model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)
        self.batches_per_epoch = -(-len(self.train_source) // self.info.world_size) // args.batch_size
        self.updates_per_epoch = -(-self.batches_per_epoch // args.grad_accum_steps)
        self.scheduler, self.num_epochs = create_scheduler_v2(
            self.optimizer, **scheduler_kwargs(args), updates_per_epoch=max(1, self.updates_per_epoch)
        )
        decreasing = args.eval_metric == "loss"
        self.keeper = CheckpointKeeper(None, keep=args.checkpoint_hist, decreasing=decreasing)

    def _resume(self, path):
        checkpoint = load_checkpoint_file(path)
        if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path} is not a zoo-train checkpoint (use --initial-checkpoint for its weights)")
        if checkpoint["arch"] != self.args.model:
            raise CheckpointError(
                f"checkpoint {path} was written for model {checkpoint['arch']}, this run builds {self.args.model}"
            )
        load_model_weights(self.model, checkpoint["state_dict"], path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.model_ema is not None:
            if checkpoint.get("state_dict_ema") is None:
                raise CheckpointError(f"checkpoint {path} holds no EMA weights but --model-ema is set")
            load_model_weights(self.model_ema.module, checkpoint["state_dict_ema"], f"{path} (EMA)")
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.keeper.load_state_dict(checkpoint.get("keeper", {}))
        self.keeper.last_written = (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["num_updates"])
        self.epoch = checkpoint["epoch"]
        self.batch_in_epoch = checkpoint["batch_in_epoch"]
        self.num_updates = checkpoint["num_updates"]
        self.nonfinite_streak = checkpoint.get("nonfinite_streak", 0)
        self.epoch_loss = list(checkpoint.get("epoch_loss", [0.0, 0.0]))
        rng = checkpoint["rng"]
        if len(rng) == self.info.world_size:
            restore_rng_state(rng[self.info.rank])
        else:
            random_seed(self.args.seed + self.num_updates, self.info.rank)
            self._log(
                f"checkpoint written by {len(rng)} process(es), resuming with {self.info.world_size}: "
                "data order and augmentation differ from an uninterrupted run",
                logging.WARNING,
            )
        self._log(f"resumed from {path}: epoch {self.epoch}, batch {self.batch_in_epoch}, update {self.num_updates}")

    def _wrap_model(self):
        self.train_model = self.model
        if self.info.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if self.args.torchcompile:
            self.train_model = torch.compile(
                self.train_model, backend=self.args.torchcompile, mode=self.args.torchcompile_mode
            )

    def _build_loaders(self):
        args, cfg = self.args, self.data_config
        train_transform = create_transform(
            cfg["input_size"],
            is_training=True,
            no_aug=args.no_aug,
            scale=args.scale,
            ratio=args.ratio,
            hflip=args.hflip,
            vflip=args.vflip,
            color_jitter=args.color_jitter,
            auto_augment=args.aa,
            interpolation=args.train_interpolation,
            mean=cfg["mean"],
            std=cfg["std"],
            re_prob=args.reprob,
            re_mode=args.remode,
            re_count=args.recount,
        )
        pin = args.pin_mem and self.device.type == "cuda"
        self.train_loader = create_train_loader(
            ImageClassDataset(self.train_source, transform=train_transform),
            args.batch_size,
            seed=args.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            num_workers=args.workers,
            pin_memory=pin,
        )
        self.val_loader = None
        if self.val_source is not None:
            self.val_loader = create_eval_loader(
                ImageClassDataset(self.val_source, transform=create_transform(**cfg, is_training=False)),
                args.validation_batch_size or args.batch_size,
                num_workers=args.workers,
                pin_memory=pin,
                rank=self.info.rank,
                world_size=self.info.world_size,
            )

    def _build_losses(self):
        args = self.args
        self.mixup = None
        if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
            self.mixup = Mixup(
                mixup_alpha=args.mixup,
                cutmix_alpha=args.cutmix,
                cutmix_minmax=args.cutmix_minmax,
                prob=args.mixup_prob,
                switch_prob=args.mixup_switch_prob,
                mode=args.mixup_mode,
                label_smoothing=args.smoothing,
                num_classes=self.num_classes,
            )
            self.mixup_loss = SoftTargetCrossEntropy()
        if args.smoothing:
            self.plain_loss = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
        else:
            self.plain_loss = nn.CrossEntropyLoss()

    def _prepare_output(self):
        """The run folder: the resumed run's own, else a new one (an earlier run's folder is never reused)."""
        args = self.args
        resumed_dir = os.path.dirname(os.path.abspath(args.resume)) if args.resume else None
        name = args.experiment or "-".join(
            [datetime.now().strftime("%Y%m%d-%H%M%S"), args.model, str(self.data_config["input_size"][-1])]
        )
        try:
            if resumed_dir and (not args.experiment or os.path.abspath(os.path.join(args.output, name)) == resumed_dir):
                self.output_dir = resumed_dir
            else:
                self.output_dir = create_run_folder(args.output, name)
                if os.path.basename(self.output_dir) != name:
                    self._log(
                        f"{os.path.join(args.output, name)} holds an earlier run, which is kept: this run writes to "
                        f"{self.output_dir} (continue a run with --resume)",
                        logging.WARNING,
                    )
            # the options record where this run lives, also when it was resumed
            args.output, args.experiment = os.path.dirname(self.output_dir), os.path.basename(self.output_dir)
            with open(os.path.join(self.output_dir, "args.yaml"), "w") as f:
                yaml.safe_dump(plain_args(args), f)
        except OSError as e:
            not_folder = os.path.exists(args.output) and not os.path.isdir(args.output)
            raise ConfigError(
                f"cannot write the run folder under --output {args.output}: "
                f"{'it is not a directory' if not_folder else e.strerror or e}; --output must be a writable directory"
            ) from e
        self.keeper.output_dir = self.output_dir
        self.summary_path = os.path.join(self.output_dir, "summary.csv")
        trim_summary(self.summary_path, self.epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.tb_writer = None
        else:
            self.tb_writer = SummaryWriter(os.path.join(self.output_dir, "tb"))
        self._log(f"writing to {self.output_dir}")

    # ----------------------------------------------------------------------------------- training

    def fit(self):
        """Train until the last epoch; returns the final epoch's metrics."""
        metrics = {}
        with self._stop_on_signals():
            while self.epoch < self.num_epochs:
                train_metrics = self.train_epoch()
                eval_metrics = self.evaluate_epoch()
                self.end_epoch(train_metrics, eval_metrics)
                metrics = {"train": train_metrics, "eval": eval_metrics}
        if self.tb_writer is not None:
            self.tb_writer.close()
        return metrics

    def train_epoch(self):
        args = self.args
        self.train_model.train()
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        mixup_on = self.mixup is not None and not (args.mixup_off_epoch and self.epoch >= args.mixup_off_epoch)
        skipped, dropped = SkipReport(), Counter()
        progress = self._progress(self.batches_per_epoch, self.batch_in_epoch)
        seen, start = 0, time.perf_counter()
        self.optimizer.zero_grad()
        for batch_idx, (images, targets, unreadable) in enumerate(self.train_loader, start=self.batch_in_epoch):
            skipped.update(unreadable)
            unusable = self._unusable_batch(len(images), mixup_on)
            with_data, stopping = self._ranks_with(unusable is None, self.stop_signal is not None)
            has_data, stop = with_data == self.info.world_size, stopping > 0
            if not has_data:
                dropped[unusable or "another process had no usable image in its share"] += 1
            need_update = (batch_idx + 1) % args.grad_accum_steps == 0 or batch_idx + 1 == self.batches_per_epoch
            if has_data:
                self._train_step(images, targets, mixup_on, need_update)
                seen += len(images)
            if need_update:
                self._after_update(batch_idx, stop)
                if stop:
                    raise TrainingStopped(
                        f"stopped by {self.stop_signal or 'a signal to another process'} at epoch {self.epoch}, "
                        f"batch {self.batch_in_epoch}; continue with --resume {self._last_path()}"
                    )
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress.update(1)
                progress.set_postfix(
                    loss=f"{self.epoch_loss[0] / max(self.epoch_loss[1], 1):.4f}",
                    lr=f"{self._lr():.2e}",
                    img_s=f"{seen * self.info.world_size / max(elapsed, 1e-9):.0f}",
                    refresh=False,
                )
            elif self.info.is_primary and args.log_interval and (batch_idx + 1) % args.log_interval == 0:
                self._log_step(batch_idx, seen, time.perf_counter() - start)
        if progress is not None:
            progress.close()
        self._report_skipped(skipped, "training")
        self._report_dropped(dropped)
        loss_sum, count = all_reduce_sum(self.epoch_loss, self.info).tolist()
        return {"loss": loss_sum / max(count, 1)}

    def _unusable_batch(self, size, mixup_on):
        """Why a batch (shrunk by unreadable images) cannot be trained on, or None when it can."""
        if size == 0:
            return "no readable image"
        if size == 1 and mixup_on:
            return "a single readable image, which mixup/cutmix cannot pair"
        if size == 1 and self.single_value_batchnorms:
            return "a single readable image, too few for BatchNorm in training mode"
        return None

    def _train_step(self, images, targets, mixup_on, need_update):
        args = self.args
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if mixup_on:
            if len(images) % 2:
                images, targets = images[:-1], targets[:-1]
            images, targets = self.mixup(images, targets)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        sync = need_update or not self.info.distributed
        no_sync = contextlib.nullcontext() if sync else self.train_model.no_sync()
        with no_sync:
            with self.autocast():
                output = self.train_model(images)
                loss = (self.mixup_loss if mixup_on else self.plain_loss)(output, targets)
            (finite,) = self._ranks_with(bool(torch.isfinite(loss)))
            if finite < self.info.world_size:
                self._skip_nonfinite(loss)
                return
            self.nonfinite_streak = 0
            self._backward(loss / args.grad_accum_steps, need_update)
        self.epoch_loss[0] += loss.item() * len(images)
        self.epoch_loss[1] += len(images)

    def _backward(self, loss, need_update):
        args = self.args
        params = model_parameters(self.model, exclude_head="agc" in args.clip_mode)
        if self.scaler is not None:
            self.scaler(loss, self.optimizer, args.clip_grad, args.clip_mode, params, need_update=need_update)
            return
        loss.backward()
        if need_update:
            if args.clip_grad is not None:
                dispatch_clip_grad(params, args.clip_grad, mode=args.clip_mode)
            self.optimizer.step()

    def _skip_nonfinite(self, loss):
        """Drop this step and the gradients accumulated for it; stop when it keeps happening."""
        self.optimizer.zero_grad()
        self.nonfinite_streak += 1
        self._log(
            f"non-finite loss ({loss.item()}) at epoch {self.epoch}, update {self.num_updates}: step skipped "
            f"({self.nonfinite_streak} in a row, limit {self.args.nonfinite_limit})",
            logging.WARNING,
        )
        if self.nonfinite_streak >= self.args.nonfinite_limit:
            raise TrainingStopped(
                f"{self.nonfinite_streak} non-finite losses in a row: the run diverged. Checkpoints already "
                "written are kept; lower --lr, add --clip-grad, or check the data"
            )

    def _after_update(self, batch_idx, stop):
        self.optimizer.zero_grad()
        self.num_updates += 1
        self.batch_in_epoch = batch_idx + 1
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.num_updates)
        self.scheduler.step_update(num_updates=self.num_updates)
        interval = self.args.checkpoint_interval
        if (interval and self.num_updates % interval == 0) or stop:
            self.save_checkpoint()

    def evaluate_epoch(self):
        if self.has_batchnorm and self.info.distributed and self.device.type == "cpu":
            distribute_bn(self.model, self.info.world_size, reduce=True)
        if self.val_loader is None:
            return {}
        metrics, skipped = evaluate(self.model, self.val_loader, self.device, self.autocast, self.info)
        self._report_skipped(skipped, "validation")
        if self.model_ema is not None:
            ema_metrics, _ = evaluate(self.model_ema.module, self.val_loader, self.device, self.autocast, self.info)
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items() if k in ("loss", "top1", "top5")})
        return metrics

    def end_epoch(self, train_metrics, eval_metrics):
        args = self.args
        finished = self.epoch
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss = [0.0, 0.0]
        metric = None
        if eval_metrics:
            key = f"ema_{args.eval_metric}" if self.model_ema is not None else args.eval_metric
            metric = eval_metrics[key]
        self.scheduler.step(self.epoch, metric)
        self.save_checkpoint(epoch_metric=metric, finished_epoch=finished)
        if self.info.is_primary:
            update_summary(finished, train_metrics, eval_metrics, self.summary_path, lr=self._lr())
            self._log_epoch(finished, train_metrics, eval_metrics)

    # ----------------------------------------------------------------------------------- checkpoints

    def checkpoint_state(self):
        """Everything needed to continue the run (tensors and plain containers only)."""
        return {
            "version": CHECKPOINT_VERSION,
            "arch": self.args.model,
            "model_kwargs": self.model_kwargs,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "dataset_kind": self.source_kind,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "state_dict": unwrap_model(self.model).state_dict(),
            "state_dict_ema": self.model_ema.module.state_dict() if self.model_ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "num_updates": self.num_updates,
            "nonfinite_streak": self.nonfinite_streak,
            "epoch_loss": list(self.epoch_loss),
            "args": plain_args(self.args),
        }

    def save_checkpoint(self, epoch_metric=None, finished_epoch=None):
        rng = gather_objects(capture_rng_state(), self.info)  # collective: every rank takes part
        if not self.info.is_primary:
            return
        checkpoint = self.checkpoint_state()
        checkpoint["rng"] = rng
        try:
            if finished_epoch is None:
                checkpoint["keeper"] = self.keeper.state_dict()
                self.keeper.save_last(checkpoint)
            else:
                self.keeper.save_epoch(checkpoint, finished_epoch, epoch_metric)
        except OSError as e:
            raise RunError(self._write_failure(e)) from e

    def _write_failure(self, error):
        last = self._last_path()
        if self.keeper.last_written is None:
            kept = "no checkpoint of this run was written before"
        else:
            epoch, batch, updates = self.keeper.last_written
            kept = f"{last} is kept as last written (epoch {epoch}, batch {batch}, update {updates})"
        return (
            f"cannot write a checkpoint in {self.output_dir}: {error.strerror or error}. The run stopped; {kept}. "
            f"Free space (or copy the folder elsewhere) and continue with --resume {last}"
        )

    # ----------------------------------------------------------------------------------- helpers

    def _ranks_with(self, *flags):
        """For each boolean, how many ranks hold it true (so every rank takes the same branch)."""
        if not self.info.distributed:
            return [int(bool(f)) for f in flags]
        counts = all_reduce_sum([float(bool(f)) for f in flags], self.info)
        return [round(c) for c in counts.tolist()]

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM finish the current update, write last.pth and stop."""

        def request_stop(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name

        handled = (signal.SIGINT, signal.SIGTERM)
        try:
            previous = {s: signal.signal(s, request_stop) for s in handled}
        except ValueError:  # not the main thread
            previous = {}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _progress(self, total, initial):
        if self.args.no_progress or not self.info.is_primary or not sys.stderr.isatty():
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
            unit="batch",
            dynamic_ncols=True,
            leave=False,
        )

    def _last_path(self):
        return os.path.join(self.output_dir, LAST) if self.output_dir else LAST

    def _lr(self):
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        return max(lrs) if lrs else 0.0

    def _report_skipped(self, skipped, what):
        all_paths = set().union(*gather_objects(skipped.paths, self.info))
        if all_paths and self.info.is_primary:
            self._log(SkipReport(all_paths).message(what), logging.WARNING)

    def _report_dropped(self, dropped):
        """Warn about the batches of this epoch that were not trained on, by reason (summed over ranks)."""
        total = sum(gather_objects(dropped, self.info), Counter())
        if total and self.info.is_primary:
            reasons = "; ".join(f"{count} with {reason}" for reason, count in total.most_common())
            self._log(f"{sum(total.values())} training batch(es) not trained on: {reasons}", logging.WARNING)

    def _log(self, message, level=logging.INFO):
        if self.info.is_primary or level >= logging.WARNING:
            prefix = f"[rank {self.info.rank}] " if self.info.distributed and not self.info.is_primary else ""
            _logger.log(level, prefix + message)

    def _log_step(self, batch_idx, seen, elapsed):
        rate = seen * self.info.world_size / max(elapsed, 1e-9)
        images_left = (self.batches_per_epoch - batch_idx - 1) * self.args.batch_size * self.info.world_size
        eta = f"{images_left / rate:.0f}s" if rate > 0 else "unknown"
        loss = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
        self._log(
            f"epoch {self.epoch + 1} [{batch_idx + 1}/{self.batches_per_epoch}] loss {loss:.4f} "
            f"lr {self._lr():.2e} {rate:.0f} img/s eta {eta}"
        )
        if self.tb_writer is not None:
            self.tb_writer.add_scalar("train/loss", loss, self.num_updates)
            self.tb_writer.add_scalar("train/lr", self._lr(), self.num_updates)

    def _log_epoch(self, epoch, train_metrics, eval_metrics):
        parts = [f"epoch {epoch + 1}/{self.num_epochs}", f"train loss {train_metrics['loss']:.4f}"]
        parts += [f"val {k} {v:.4f}" for k, v in eval_metrics.items() if k in ("loss", "top1", "top5", "ema_top1")]
        best = self.keeper.best_metric()
        if best is not None:
            parts.append(f"best {self.args.eval_metric} {best[0]:.4f} (epoch {best[1] + 1})")
        self._log("  ".join(parts))
        if self.tb_writer is not None:
            for k, v in train_metrics.items():
                self.tb_writer.add_scalar(f"train/{k}", v, epoch)
            for k, v in eval_metrics.items():
                self.tb_writer.add_scalar(f"val/{k}", v, epoch)


@torch.no_grad()
def batchnorm_single_values(model, input_size, device):
    """Names of the BatchNorm layers that see one value per channel when ``model`` gets a one-image batch.

    Runs one forward pass in eval mode (no running statistics change, no random draws) with hooks that
    measure each BatchNorm input; in training mode those layers would fail on a batch of one image.
    """
    batchnorm = nn.modules.batchnorm._BatchNorm
    names = {module: name for name, module in model.named_modules() if isinstance(module, batchnorm)}
    if not names:
        return []
    single = []

    def measure(module, inputs):
        x = inputs[0]
        if x.numel() // max(x.shape[1], 1) <= 1:
            single.append(names[module])

    hooks = [module.register_forward_pre_hook(measure) for module in names]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return single


def create_run_folder(parent, name):
    """Create ``parent/name``, or ``name-1``, ``name-2``, ... when it exists (timm train.py's rule); returns it."""
    os.makedirs(parent, exist_ok=True)
    for suffix in itertools.count():
        path = os.path.join(parent, f"{name}-{suffix}" if suffix else name)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def create_sized_model(name, img_size, model_kwargs, **kwargs):
    """``timm.create_model`` passing ``img_size`` to architectures that take one.

    Returns the model and the keyword arguments that rebuild its architecture (kept in checkpoints).
    """
    arch_kwargs = dict(model_kwargs)
    if img_size is not None and "img_size" not in arch_kwargs:
        try:
            model = timm.create_model(name, img_size=img_size, **arch_kwargs, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
        else:
            return model, {**arch_kwargs, "img_size": img_size}
    return timm.create_model(name, **arch_kwargs, **kwargs), arch_kwargs


def train(args):
    """Run ``zoo-train`` for parsed ``args``; returns (final metrics, output folder)."""
    info = init_distributed(args.device)
    try:
        trainer = Trainer(args, info)
        metrics = trainer.fit()
        return metrics, trainer.output_dir
    finally:
        shutdown_distributed()


def run(argv=None):
    """``zoo-train ARGV``: returns the exit status and the run folder (None when no run started)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(argv)
        metrics, output_dir = train(args)
    except USER_ERRORS as e:
        print(f"zoo-train: error: {e}", file=sys.stderr)
        return 2, None
    except RunError as e:
        print(f"zoo-train: error: {e}", file=sys.stderr)
        return 1, None
    except TrainingStopped as e:
        print(f"zoo-train: {e}", file=sys.stderr)
        return 1, None
    if output_dir:
        print(f"checkpoints in {output_dir} ({LAST} to resume)")
    return 0, output_dir


def main(argv=None):
    return run(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
