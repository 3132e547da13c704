"""Data sets and loaders for ``zoo-train`` and ``zoo-validate``.

Three sources share one dataset class: an ImageFolder tree (one sub-folder per class, read by timm's
folder reader), a Hugging Face ``datasets`` directory (``save_to_disk`` output or anything
``load_dataset`` reads), and the built-in digits set (scikit-learn's 8x8 handwritten digits).

Images that cannot be decoded are skipped, counted and reported instead of stopping the run. Training
order and augmentation are a pure function of (seed, epoch, position), so a run resumed mid-epoch sees
exactly the batches the interrupted run would have seen.
"""

import contextlib
import io
import logging
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from timm.data.readers import create_reader
from timm.data.readers.img_extensions import get_img_extensions

_logger = logging.getLogger(__name__)

SPLIT_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "eval", "evaluation", "test"),
}
DIGITS = "digits"


class DataError(ValueError):
    """A data set that cannot be used as given; the message says what was expected."""


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a sample whose image could not be decoded."""

    path: str
    reason: str


@dataclass
class SkipReport:
    """Unreadable images met so far (unique paths)."""

    paths: set = field(default_factory=set)

    def update(self, paths):
        self.paths.update(paths)

    def message(self, what, limit=5):
        shown = ", ".join(sorted(self.paths)[:limit])
        more = f" and {len(self.paths) - limit} more" if len(self.paths) > limit else ""
        return f"skipped {len(self.paths)} unreadable {what} image(s): {shown}{more}"


# ---------------------------------------------------------------------------------------------------
# Sources: each yields (PIL image or binary file, class index) per index and knows its class names.


class FolderSource:
    """An ImageFolder split read through timm's folder reader, checked for the usual mistakes."""

    def __init__(self, root):
        check_image_folder(root)
        self.reader = create_reader("", root=root)
        self.classes = sorted(self.reader.class_to_idx, key=self.reader.class_to_idx.get)

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index):
        return self.reader[index]

    def filename(self, index):
        return self.reader.filename(index, absolute=True)


class HfSource:
    """One split of a local Hugging Face ``datasets`` directory."""

    def __init__(self, root, split, image_key=None, label_key=None):
        try:
            import datasets
        except ImportError as e:
            raise DataError(
                f"{root} looks like a Hugging Face datasets directory, but the `datasets` package is not "
                "installed: `pip install datasets`"
            ) from e
        loaded = _load_hf(datasets, root)
        if isinstance(loaded, datasets.DatasetDict):
            name = _find_split(split, list(loaded))
            if name is None:
                raise DataError(f"{root} has no {split!r} split; it has {sorted(loaded)}")
            loaded = loaded[name]
        features = loaded.features
        self.image_key = image_key or _first_key(features, datasets.Image, ("image", "img"))
        self.label_key = label_key or _first_key(features, datasets.ClassLabel, ("label", "labels"))
        if self.image_key is None or self.label_key is None:
            raise DataError(
                f"{root}: cannot find the image and label columns among {list(features)}; "
                "expected an Image column and a ClassLabel column (or columns named 'image' and 'label')"
            )
        label_feature = features[self.label_key]
        if isinstance(label_feature, datasets.ClassLabel):
            self.classes = list(label_feature.names)
        else:
            self.classes = [str(c) for c in sorted(set(loaded[self.label_key]))]
        if isinstance(features[self.image_key], datasets.Image):
            loaded = loaded.cast_column(self.image_key, datasets.Image(decode=False))
        self.dataset = loaded
        self.split = split
        if len(self.dataset) == 0:
            raise DataError(f"{root}: the {split!r} split is empty")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        image = item[self.image_key]
        if isinstance(image, dict):
            image = io.BytesIO(image["bytes"]) if image.get("bytes") else open(image["path"], "rb")  # noqa: SIM115
        return image, item[self.label_key]

    def filename(self, index):
        image = self.dataset[index][self.image_key]
        path = image.get("path") if isinstance(image, dict) else None
        return path or f"{self.split}[{index}]"


class DigitsSource:
    """scikit-learn's handwritten digits (1797 8x8 images, 10 classes), split 80/20 stratified."""

    classes = [str(d) for d in range(10)]

    def __init__(self, split, val_fraction=0.2, seed=0):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
        train_idx, val_idx = train_test_split(
            np.arange(len(pixels)), test_size=val_fraction, random_state=seed, stratify=digits.target
        )
        keep = train_idx if split in SPLIT_NAMES["train"] else val_idx
        self.pixels = pixels[keep]
        self.targets = digits.target[keep].tolist()
        self.split = split

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return Image.fromarray(self.pixels[index], mode="L"), self.targets[index]

    def filename(self, index):
        return f"digits/{self.split}[{index}]"


def check_image_folder(root):
    """Raise DataError unless ``root`` holds class sub-folders that each contain at least one image."""
    if not os.path.exists(root):
        raise DataError(f"data directory {root} does not exist")
    if not os.path.isdir(root):
        raise DataError(f"data directory {root} is not a directory")
    extensions = set(get_img_extensions(as_set=True))
    class_dirs = sorted(e.path for e in os.scandir(root) if e.is_dir())
    if not class_dirs:
        raise DataError(f"data directory {root} has no class folders: expected one sub-folder per class holding images")
    empty = [os.path.basename(d) for d in class_dirs if not _has_image(d, extensions)]
    if empty:
        raise DataError(
            f"class folder(s) {empty} in {root} hold no images "
            f"(looked for {', '.join(sorted(extensions))}); add images or remove the folder(s)"
        )


def _has_image(folder, extensions):
    for _, _, files in os.walk(folder, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in extensions for f in files):
            return True
    return False


def _is_hf_dir(root):
    markers = ("dataset_dict.json", "dataset_info.json", "state.json")
    return any(os.path.isfile(os.path.join(root, m)) for m in markers)


def _load_hf(datasets, root):
    if os.path.isfile(os.path.join(root, "dataset_dict.json")) or os.path.isfile(os.path.join(root, "state.json")):
        return datasets.load_from_disk(root)
    return datasets.load_dataset(root)


def _first_key(features, feature_type, names):
    for key, feature in features.items():
        if isinstance(feature, feature_type):
            return key
    return next((n for n in names if n in features), None)


def _find_split(split, available):
    for synonyms in SPLIT_NAMES.values():
        if split in synonyms:
            return next((s for s in synonyms if s in available), None)
    return split if split in available else None


def _split_dir(root, split):
    """The folder of ``split`` under ``root`` (e.g. root/train or root/val), or None."""
    for synonyms in SPLIT_NAMES.values():
        if split in synonyms:
            for name in synonyms:
                if os.path.isdir(os.path.join(root, name)):
                    return os.path.join(root, name)
            return None
    path = os.path.join(root, split)
    return path if os.path.isdir(path) else None


def resolve_source_kind(dataset, data_dir):
    """'digits', 'hf' or 'folder' from the --dataset option and what is at --data-dir."""
    if dataset:
        return dataset
    if not data_dir:
        return DIGITS
    if not os.path.exists(data_dir):
        raise DataError(f"data directory {data_dir} does not exist")
    return "hf" if _is_hf_dir(data_dir) else "folder"


def create_source(kind, data_dir, split, required=True, image_key=None, label_key=None):
    """Build the source of one split; returns None for a missing optional split."""
    if kind == DIGITS:
        return DigitsSource(split)
    if kind == "hf":
        if not data_dir:
            raise DataError("--dataset hf needs --data-dir pointing at a Hugging Face datasets directory")
        try:
            return HfSource(data_dir, split, image_key=image_key, label_key=label_key)
        except DataError:
            if required:
                raise
            return None
    if kind != "folder":
        raise DataError(f"unknown --dataset {kind!r}: expected 'folder', 'hf' or 'digits'")
    if not data_dir:
        raise DataError("--dataset folder needs --data-dir")
    check_folder_root(data_dir)
    split_dir = _split_dir(data_dir, split)
    if split_dir is None:
        if split in SPLIT_NAMES["train"]:
            split_dir = data_dir  # a bare class tree is the training set
        elif required:
            raise DataError(f"{data_dir} has no {split!r} folder")
        else:
            return None
    return FolderSource(split_dir)


def check_folder_root(data_dir):
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist or is not a directory")
    if not any(os.scandir(data_dir)):
        raise DataError(f"data directory {data_dir} is empty: expected class folders or train/ and val/")


# ---------------------------------------------------------------------------------------------------
# Dataset, sampler and loader.


class ImageClassDataset(torch.utils.data.Dataset):
    """Decodes a source's images, applies ``transform`` and marks undecodable images as Unreadable.

    Indexed by an int, or by ``(index, seed)`` to run the transform under a private RNG seeded with
    ``seed`` (the global python, numpy and torch RNG states are left as they were).
    ``target_transform`` maps the source's class index to the model's output index.
    """

    def __init__(self, source, transform=None, input_img_mode="RGB", target_transform=None):
        self.source = source
        self.transform = transform
        self.target_transform = target_transform
        self.input_img_mode = input_img_mode

    @property
    def classes(self):
        return self.source.classes

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, target = self.source[index]
        try:
            image = self._decode(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return Unreadable(self.source.filename(index), f"{type(e).__name__}: {e}")
        if self.transform is not None:
            with seeded_rng(seed):
                image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def _decode(self, image):
        if not isinstance(image, Image.Image):
            with image:
                image = Image.open(image)
                image.load()
        if image.mode.startswith("I;16"):
            image = to_8bit(image)
        return image.convert(self.input_img_mode) if self.input_img_mode else image


def to_8bit(image):
    """A 16-bit grayscale image scaled to 8 bits over its full range (PIL's convert would clip at 255)."""
    pixels = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


@contextlib.contextmanager
def seeded_rng(seed):
    """Run a block under python/numpy/torch CPU RNGs seeded with ``seed``; restore them afterwards."""
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffled, rank-sharded training order that is a pure function of (seed, epoch).

    Yields ``(index, sample_seed)`` so the dataset can augment each sample deterministically, and
    can start at any batch of an epoch (``set_epoch(epoch, start_batch)``) to resume mid-epoch.
    Every rank gets the same number of full batches (the shuffled order is padded like
    torch's DistributedSampler, then trimmed to whole batches).
    """

    def __init__(self, num_samples, batch_size, seed=0, rank=0, world_size=1):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        per_rank = -(-num_samples // world_size)
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_samples} training images make no full batch of {batch_size} per process "
                f"({world_size} process(es)); lower --batch-size or add images"
            )

    def set_epoch(self, epoch, start_batch=0):
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self):
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        total = -(-self.num_samples // self.world_size) * self.world_size
        order += order[: total - len(order)]
        mine = order[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]
        for position in range(self.start_batch * self.batch_size, len(mine)):
            yield mine[position], self.sample_seed(position)

    def sample_seed(self, position):
        return hash((self.seed, self.epoch, self.rank, position)) & (2**63 - 1)


def collate_readable(batch):
    """Collate the decodable samples; returns (images, targets, paths of unreadable samples)."""
    readable = [s for s in batch if not isinstance(s, Unreadable)]
    skipped = [s.path for s in batch if isinstance(s, Unreadable)]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, targets = torch.utils.data.default_collate(readable)
    return images, targets, skipped


def create_train_loader(dataset, batch_size, seed, rank, world_size, num_workers, pin_memory):
    sampler = ResumableSampler(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_readable,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # leaves the global RNG to the model
    )


def create_eval_loader(dataset, batch_size, num_workers, pin_memory, rank=0, world_size=1):
    """Ordered loader; with several processes each rank takes a strided, non-overlapping shard."""
    indices = list(range(rank, len(dataset), world_size))
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_readable,
        generator=torch.Generator(),
    )
