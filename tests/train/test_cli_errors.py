"""User mistakes and failing environments end zoo-train / zoo-validate with one ``error:`` line and status 2 or 1."""

import os

import pytest
import timm
import torch
from train_helpers import assert_cli_error, run_cli, run_python

from zoo.train.checkpoint import load_checkpoint_file
from zoo.train.train import main as train_main
from zoo.train.validate import main as validate_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = ["--model", "test_convnext", "--img-size", "32", "-b", "4", "-j", "0", "--device", "cpu", "--no-progress"]

# zoo-train in a process whose disk fills up after the first checkpoint: torch.save writes part of
# the file, then fails as the kernel does on a full disk.
FULL_DISK = """
import errno, sys, torch
from zoo.train.train import main

save, saves = torch.save, []

def save_until_full(obj, f, *args, **kwargs):
    saves.append(f)
    if len(saves) > 1:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    save(obj, f, *args, **kwargs)

torch.save = save_until_full
sys.exit(main(sys.argv[1:]))
"""


def test_unknown_model_is_a_usage_error(image_folder, tmp_path, capsys):
    assert train_main([*TRAIN, image_folder, "--model", "zoo_swin_tiyn", "--output", str(tmp_path / "out")]) == 2
    assert validate_main([image_folder, "--model", "zoo_swin_tiyn", "-j", "0"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("zoo-train: error: unknown model 'zoo_swin_tiyn': did you mean zoo_swin_tiny")
    assert errors[1].startswith("zoo-validate: error: unknown model 'zoo_swin_tiyn': did you mean zoo_swin_tiny")
    assert not os.path.exists(tmp_path / "out")
    assert validate_main([image_folder, "--model", "test_convnext.bogus", "-j", "0"]) == 2
    assert "model test_convnext has no weights tagged 'bogus'; its tags: r160_in1k" in capsys.readouterr().err


def test_output_that_is_a_file_is_a_usage_error(image_folder, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    result = run_cli("zoo.train", *TRAIN, image_folder, "--epochs", "1", "--output", tmp_path / "taken")
    assert_cli_error(result, 2, f"--output {tmp_path / 'taken'}: it is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_is_a_usage_error(image_folder, tmp_path, capsys):
    (tmp_path / "locked").mkdir(mode=0o555)
    assert train_main([*TRAIN, image_folder, "--epochs", "1", "--output", str(tmp_path / "locked")]) == 2
    assert "Permission denied; --output must be a writable directory" in capsys.readouterr().err


def test_full_disk_stops_the_run_and_keeps_the_last_checkpoint(image_folder, tmp_path):
    argv = [*TRAIN, image_folder, "--epochs", "1", "--checkpoint-interval", "1", "--output", tmp_path]
    argv += ["--experiment", "r"]
    result = run_python("-c", FULL_DISK, *argv)
    last = tmp_path / "r" / "last.pth"
    assert_cli_error(result, 1, f"cannot write a checkpoint in {tmp_path / 'r'}: No space left on device")
    assert f"{last} is kept as last written (epoch 0, batch 1, update 1)" in result.stderr
    assert f"--resume {last}" in result.stderr
    assert load_checkpoint_file(last)["num_updates"] == 1
    assert sorted(os.listdir(tmp_path / "r")) == ["args.yaml", "last.pth"]  # no partial file left


def test_offline_recipe_names_the_command_line_options(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": tmp_path / "hf", "HF_HUB_CACHE": tmp_path / "hf", "TORCH_HOME": tmp_path}
    recipe = os.path.join(REPO, "configs", "finetune_swin.yaml")
    result = run_cli("zoo.train", "-c", recipe, "-j", "0", "--device", "cpu", "--output", tmp_path / "out", env=env)
    assert_cli_error(result, 1, "zoo-train: error: cannot get the pretrained weights of zoo_swin_tiny")
    assert "--initial-checkpoint FILE instead of --pretrained" in result.stderr
    assert "timm.create_model" not in result.stderr and "pretrained_cfg_overlay" not in result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_resume_from_a_plain_state_dict_says_what_it_is(tmp_path):
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "weights.pth")
    result = run_cli("zoo.train", "--resume", tmp_path / "weights.pth")
    assert_cli_error(result, 2, f"{tmp_path / 'weights.pth'} is not a zoo-train checkpoint")
    assert f"--initial-checkpoint {tmp_path / 'weights.pth'}" in result.stderr


def test_data_directory_after_model_kwargs_is_a_usage_error(image_folder, capsys):
    with pytest.raises(SystemExit) as stopped:
        train_main([*TRAIN, "--model-kwargs", "depth=2", image_folder])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"zoo-train: error: argument --model-kwargs: expected KEY=VALUE, got ['{image_folder}']" in error
    assert "a data directory goes before --model-kwargs" in error
