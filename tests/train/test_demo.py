import os

import pytest

from zoo.train.checkpoint import load_checkpoint_file
from zoo.train.demo import main


@pytest.mark.slow
def test_demo_reaches_90_percent_and_round_trips_through_hub_format(tmp_path, capsys):
    assert main(["--output", str(tmp_path)]) == 0
    best_top1, _ = load_checkpoint_file(tmp_path / "train" / "last.pth")["keeper"]["best"][0]
    assert best_top1 >= 90.0
    assert sorted(os.listdir(tmp_path / "hub")) == ["config.json", "model.safetensors"]
    out = capsys.readouterr().out
    assert "max |logit diff| 0.00e+00" in out and out.count("predicted") == 4
