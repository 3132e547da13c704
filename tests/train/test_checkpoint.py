import os
import random

import numpy as np
import pytest
import timm
import torch

from zoo.train.checkpoint import (
    CheckpointError,
    CheckpointKeeper,
    atomic_save,
    capture_rng_state,
    load_checkpoint_file,
    load_model_weights,
    load_weights,
    restore_rng_state,
)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    atomic_save({"step": torch.tensor(1)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint_file(path)["step"].item() == 1
    assert os.listdir(tmp_path) == ["last.pth"]


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    atomic_save({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(load_checkpoint_file(tmp_path / "rng.pth")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_unreadable_checkpoint_is_reported(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint_file(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.pth")


def test_checkpoint_of_another_model_lists_keys():
    model = timm.create_model("test_convnext", num_classes=3)
    other = timm.create_model("test_efficientnet", num_classes=3).state_dict()
    with pytest.raises(CheckpointError, match="does not fit model test_convnext") as error:
        load_model_weights(model, other, "other.pth")
    assert "missing in checkpoint" in str(error.value) and "not in model" in str(error.value)


def test_checkpoint_with_other_class_count(tmp_path):
    model = timm.create_model("test_convnext", num_classes=3)
    trained = timm.create_model("test_convnext", num_classes=5)
    with pytest.raises(CheckpointError, match="it has 5 classes, the model has 3"):
        load_model_weights(model, trained.state_dict(), "five.pth")
    torch.save(trained.state_dict(), tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match="it has 5 classes, the model has 3"):
        load_weights(model, tmp_path / "five.pth")
    head_before = model.get_classifier().weight.clone()
    load_weights(model, tmp_path / "five.pth", new_classifier=True)
    assert torch.equal(model.get_classifier().weight, head_before)
    assert torch.equal(model.stem[0].weight, trained.stem[0].weight)


def test_keeper_keeps_best_k(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path), keep=2)
    for epoch, top1 in enumerate([50.0, 70.0, 60.0, 40.0, 80.0]):
        keeper.save_epoch({"epoch": epoch, "batch_in_epoch": 0, "num_updates": epoch}, epoch, top1)
    assert keeper.best == [[80.0, 4], [70.0, 1]]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1.pth", "checkpoint-4.pth", "last.pth", "model_best.pth"]
    assert load_checkpoint_file(tmp_path / "model_best.pth")["epoch"] == 4
    assert load_checkpoint_file(tmp_path / "last.pth")["keeper"] == {"best": [[80.0, 4], [70.0, 1]]}
