"""Training checkpoints: atomic writes, RNG state, last/best-k bookkeeping and checked weight loading.

A checkpoint holds only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``.
"""

import contextlib
import logging
import os
import random
import shutil

import numpy as np
import torch

from zoo.hub import SAFE_CHECKPOINT_GLOBALS, WeightsError, load_weights_file

_logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
LAST = "last.pth"
BEST = "model_best.pth"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model or run it is given to."""


@contextlib.contextmanager
def _atomic_replace(path):
    """A temporary path in ``path``'s folder for the block to write (and fsync); it then replaces ``path``
    and the folder is fsynced. On any error the temporary file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def atomic_save(obj, path):
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    with _atomic_replace(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_copy(src, dst):
    with _atomic_replace(dst) as tmp:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(path):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def load_weights(model, path, use_ema=False, new_classifier=False):
    """Load a weights file into ``model`` through the loader of ``pretrained=True``.

    :func:`zoo.hub.load_weights_file` reads official layouts, timm / zoo state dicts and safetensors,
    applies the family's checkpoint filter (resizing what it resizes) and reports keys that do not fit.
    """
    try:
        return load_weights_file(model, path, use_ema=use_ema, new_classifier=new_classifier)
    except WeightsError as e:
        raise CheckpointError(str(e)) from e


def load_model_weights(model, state_dict, source):
    """Load the state dict of a zoo-train checkpoint strictly into ``model``; raise CheckpointError naming
    what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(model, source, own, state_dict, missing, unexpected, mismatched))
    model.load_state_dict(state_dict)


def _classifier_keys(model):
    name = model.default_cfg.get("classifier") if hasattr(model, "default_cfg") else None
    names = name if isinstance(name, (list, tuple)) else [name] if name else []
    return {f"{n}.{suffix}" for n in names for suffix in ("weight", "bias")}


def _mismatch_message(model, source, own, loaded, missing, unexpected, mismatched, limit=6):
    arch = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
    lines = [f"checkpoint {source} does not fit model {arch}:"]
    classifier = _classifier_keys(model)
    head = [k for k in mismatched if k in classifier]
    if head and len(head) == len(mismatched) and not missing and not unexpected:
        key = head[0]
        lines.append(
            f"  it has {loaded[key].shape[0]} classes, the model has {own[key].shape[0]}; "
            f"pass --num-classes {loaded[key].shape[0]}, or fine-tune from it with a new head "
            "(zoo-train --initial-checkpoint drops a classifier of another size)"
        )
        return "\n".join(lines)
    for label, keys in (("missing in checkpoint", missing), ("not in model", unexpected)):
        if keys:
            shown = ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
            lines.append(f"  {label}: {shown}")
    for key in mismatched[:limit]:
        lines.append(f"  shape of {key}: checkpoint {tuple(loaded[key].shape)}, model {tuple(own[key].shape)}")
    if len(mismatched) > limit:
        lines.append(f"  ... {len(mismatched)} shape mismatches in all")
    return "\n".join(lines)


def capture_rng_state():
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors and plain containers."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, torch.tensor(mt_state, dtype=torch.int64), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state):
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state.tolist()), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointKeeper:
    """Writes ``last.pth`` and keeps the ``keep`` best epochs as ``checkpoint-<epoch>.pth``.

    The best list lives in the checkpoint itself (``state_dict()``), so a resumed run keeps ranking
    against the epochs before the interruption. Only the process that writes creates one.
    """

    def __init__(self, output_dir, keep=3, decreasing=False):
        self.output_dir = output_dir
        self.keep = keep
        self.decreasing = decreasing
        self.best = []  # [metric, epoch] pairs, best first
        self.last_written = None  # (epoch, batch in epoch, updates) that last.pth holds

    def path(self, name):
        return os.path.join(self.output_dir, name)

    def state_dict(self):
        return {"best": [list(b) for b in self.best]}

    def load_state_dict(self, state):
        self.best = [list(b) for b in state.get("best", [])]

    def save_last(self, checkpoint):
        atomic_save(checkpoint, self.path(LAST))
        self.last_written = (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["num_updates"])

    def save_epoch(self, checkpoint, epoch, metric):
        """Write last.pth; if ``metric`` ranks among the best ``keep``, also keep a copy of it."""
        if metric is not None and self._ranks(metric):
            self.best = sorted(self.best + [[metric, epoch]], key=self._sort_key)
            dropped = self.best[self.keep :]
            self.best = self.best[: self.keep]
            checkpoint["keeper"] = self.state_dict()
            self.save_last(checkpoint)
            atomic_copy(self.path(LAST), self.path(f"checkpoint-{epoch}.pth"))
            if self.best[0][1] == epoch:
                atomic_copy(self.path(LAST), self.path(BEST))
            for _, old_epoch in dropped:
                old = self.path(f"checkpoint-{old_epoch}.pth")
                if os.path.exists(old):
                    os.remove(old)
        else:
            checkpoint["keeper"] = self.state_dict()
            self.save_last(checkpoint)

    def _ranks(self, metric):
        if len(self.best) < self.keep:
            return True
        worst = self.best[-1][0]
        return metric < worst if self.decreasing else metric > worst

    def _sort_key(self, entry):
        return entry[0] if self.decreasing else -entry[0]

    def best_metric(self):
        return tuple(self.best[0]) if self.best else None
