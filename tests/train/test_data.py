import os
import random

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import write_images

from zoo.train.data import (
    DataError,
    DigitsSource,
    ImageClassDataset,
    ResumableSampler,
    Unreadable,
    collate_readable,
    create_source,
    resolve_source_kind,
    seeded_rng,
)


def test_missing_data_dir_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        create_source(resolve_source_kind("", str(tmp_path / "nope")), str(tmp_path / "nope"), "train")


def test_empty_data_dir_is_reported(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        create_source("folder", str(tmp_path), "train")


def test_split_without_class_folders_is_reported(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        create_source("folder", str(tmp_path), "train")


def test_class_folder_without_images_is_reported(image_folder):
    os.makedirs(os.path.join(image_folder, "train", "purple"))
    with open(os.path.join(image_folder, "train", "purple", "notes.txt"), "w") as f:
        f.write("not an image")
    with pytest.raises(DataError, match=r"\['purple'\].*hold no images"):
        create_source("folder", image_folder, "train")


def test_folder_splits_and_classes(image_folder):
    train = create_source("folder", image_folder, "train")
    val = create_source("folder", image_folder, "validation")
    assert train.classes == val.classes == ["blue", "green", "red"]
    assert (len(train), len(val)) == (24, 12)
    image, target = train[0]
    assert 0 <= target < 3 and hasattr(image, "read")


def test_missing_optional_split_returns_none(tmp_path):
    write_images(tmp_path / "a", (0, 0, 0), 2, seed=0)
    write_images(tmp_path / "b", (255, 255, 255), 2, seed=1)
    assert create_source("folder", str(tmp_path), "validation", required=False) is None
    assert len(create_source("folder", str(tmp_path), "train")) == 4  # a bare class tree trains


def test_corrupt_images_are_skipped_and_named(image_folder):
    bad = os.path.join(image_folder, "train", "red", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not a png")
    truncated = os.path.join(image_folder, "train", "blue", "truncated.png")
    with open(os.path.join(image_folder, "train", "blue", "img0.png"), "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    source = create_source("folder", image_folder, "train")
    dataset = ImageClassDataset(source, transform=lambda im: torch.from_numpy(np.asarray(im).copy()))
    samples = [dataset[i] for i in range(len(dataset))]
    unreadable = {s.path for s in samples if isinstance(s, Unreadable)}
    assert unreadable == {bad, truncated}
    images, targets, skipped = collate_readable(samples[:8])
    assert len(images) == len(targets) == 8 - len(skipped)


def test_sampler_resumes_mid_epoch_and_shards_ranks():
    full = ResumableSampler(50, batch_size=4, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert len(order) == 12 * 4
    resumed = ResumableSampler(50, batch_size=4, seed=3)
    resumed.set_epoch(2, start_batch=5)
    assert list(resumed) == order[5 * 4 :]
    full.set_epoch(3)
    assert [i for i, _ in full] != [i for i, _ in order]
    ranks = [ResumableSampler(50, batch_size=5, seed=3, rank=r, world_size=2) for r in range(2)]
    shards = [{i for i, _ in r} for r in ranks]
    assert not shards[0] & shards[1]
    assert len(shards[0]) == len(shards[1]) == 25


def test_sampler_needs_one_full_batch():
    with pytest.raises(DataError, match="no full batch"):
        ResumableSampler(5, batch_size=8)


def test_seeded_rng_repeats_and_leaves_global_state():
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(1).item(), random.random())
    torch.manual_seed(0)
    random.seed(0)
    with seeded_rng(123):
        first = (torch.rand(3), random.random(), np.random.rand())
    with seeded_rng(123):
        second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert (torch.rand(1).item(), random.random()) == expected


def test_digits_split():
    train, val = DigitsSource("train"), DigitsSource("validation")
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(set(val.targets)) == list(range(10))
    image, target = train[0]
    assert isinstance(image, Image.Image) and image.size == (8, 8) and 0 <= target <= 9


def test_hf_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(np.full((8, 8, 3), c, dtype=np.uint8)) for c in (0, 80, 160, 240)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "light"])})
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 0, 1, 1]}, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "hf"))
    root = str(tmp_path / "hf")
    assert resolve_source_kind("", root) == "hf"
    source = create_source("hf", root, "validation")
    assert source.classes == ["dark", "light"] and len(source) == 4
    image, target = ImageClassDataset(source)[3]
    assert target == 1 and np.asarray(image)[0, 0, 0] == 240
    with pytest.raises(DataError, match="no 'test-x' split"):
        create_source("hf", root, "test-x")


def test_16_bit_grayscale_png_keeps_its_full_range(tmp_path):
    levels = np.array([[0, 257, 32896], [51400, 65278, 65535]], dtype=np.uint16)  # 0, 1, 128, 200, 254, 255
    os.makedirs(tmp_path / "gray")
    Image.fromarray(levels).save(tmp_path / "gray" / "depth.png")
    assert Image.open(tmp_path / "gray" / "depth.png").mode == "I;16"
    image, _ = ImageClassDataset(create_source("folder", str(tmp_path), "train"))[0]
    expected = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(image), np.repeat(expected[..., None], 3, axis=-1))
