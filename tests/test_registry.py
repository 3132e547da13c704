"""Registration in timm's registry and the `zoo` command."""

import json

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.cli import main
from zoo.models import register_model, register_tiny_kwargs, register_variants, tiny_kwargs


def test_import_registers_in_timm():
    assert "zoo_swin_tiny" in timm.list_models("zoo_*")
    assert "zoo_swin_tiny.ms_in1k" in timm.list_pretrained("zoo_*")
    assert timm.is_model("zoo_swin_tiny")
    assert not [n for n in timm.list_models("zoo_*") if "/" in n]


def test_name_timm_already_has_is_refused():
    def zoo_swin_tiny(pretrained=False, **kwargs):  # same name as a registered model
        raise AssertionError("never called")

    with pytest.raises(RuntimeError, match="already has a model"):
        register_model(zoo_swin_tiny)


def test_name_without_prefix_is_refused():
    def swin_tiny_patch4_window7_224(pretrained=False, **kwargs):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="must start with 'zoo_'"):
        register_model(swin_tiny_patch4_window7_224)


def test_variants_are_entry_points_of_their_family_module():
    from zoo.models import swin

    entrypoint = timm.models.model_entrypoint("zoo_swin_base_384")
    assert entrypoint is swin.zoo_swin_base_384 and entrypoint.__module__ == "zoo.models.swin"
    assert timm.models.get_pretrained_cfg("zoo_swin_base_384").input_size == (3, 384, 384)
    with torch.device("meta"):
        model = timm.create_model("zoo_swin_base_384", window_size=6, num_classes=3)
    assert model.window_size == (6, 6) and model.patch_embed.img_size == (384, 384)  # the caller's kwargs win
    assert model.num_features == 1024
    assert model.get_classifier().out_features == 3


def test_variant_names_are_checked():
    def create(variant, pretrained=False, **kwargs):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="must start with 'zoo_'"):
        register_variants(create, swin_tiny=dict(depths=(1, 1, 1, 1)))
    with pytest.raises(RuntimeError, match="already has a model"):
        register_variants(create, zoo_swin_tiny=dict(depths=(1, 1, 1, 1)))


def test_tiny_kwargs_lookup():
    assert tiny_kwargs("zoo_swin_base_384.ms_in1k")["embed_dim"] == 16
    with pytest.raises(KeyError, match="register_tiny_kwargs"):
        tiny_kwargs("zoo_unknown_family")
    with pytest.raises(ValueError):
        register_tiny_kwargs("swin", depth=1)


def test_list_markdown(capsys):
    assert main(["list", "zoo_swin_t*", "--markdown"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| `zoo_swin_tiny`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    with torch.device("meta"):
        reference_params = sum(p.numel() for p in timm.create_model("swin_tiny_patch4_window7_224").parameters())
    assert float(cells[1]) == pytest.approx(reference_params / 1e6, abs=0.05)
    assert float(cells[2]) == 28  # official figure from the manifest
    assert float(cells[3]) == pytest.approx(4.5, abs=0.05)  # GMACs; the paper reports 4.5G
    assert "`ms_in1k`" in cells[6]


def test_info_and_unknown_model(capsys):
    assert main(["info", "zoo_swin_tiny.ms_in1k"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pretrained_cfg"]["hf_hub_id"] == "timm/swin_tiny_patch4_window7_224.ms_in1k"
    assert [f["reduction"] for f in info["feature_info"]] == [4, 8, 16, 32]
    assert main(["info", "zoo_nonexistent"]) == 1


def test_list_writes_readme_table(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- model-table:start -->\nold table\n<!-- model-table:end -->\noutro\n")
    assert main(["list", "zoo_swin_tiny", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and "| `zoo_swin_tiny` |" in text
    assert text.startswith("intro\n") and text.endswith("<!-- model-table:end -->\noutro\n")


def test_list_on_a_pipe_gives_full_rows_and_progress_on_stderr(zoo_command):
    result = zoo_command("list", "zoo_swin_tiny*")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("  ")[0] == "model" and len(rows) == 1
    assert rows[0].split()[0] == "zoo_swin_tiny"
    assert rows[0].endswith("ms_in1k, ms_in22k, ms_in22k_ft_in1k")
    assert "measuring zoo_swin_tiny (1/1)" in result.stderr


def test_info_of_an_unknown_tag_is_one_line(zoo_command):
    result = zoo_command("info", "zoo_swin_tiny.bogus")
    assert result.returncode == 1
    assert result.stderr == (
        "zoo info: error: zoo_swin_tiny has no pretrained tag 'bogus'; its tags: ms_in1k, ms_in22k, ms_in22k_ft_in1k\n"
    )
