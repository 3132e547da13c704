"""FLatten-PVT, FLatten-PVTv2 and Agent-PVT: the official checkpoint layout, position embeddings at other
input sizes, spatial reduction, parameter counts."""

import re

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models._registry import tiny_kwargs

# Parameter counts of the official models, measured by building LeapLabTHU's flatten_pvt_tiny,
# flatten_pvt_v2_b0 and agent_pvt_* with their official configs (no key/value reduction). The official
# FLatten-PVT-T declares a final LayerNorm (2 x 512 parameters) that its forward never applies, which
# this model leaves out: the official count is 12_150_504.
OFFICIAL_PARAMS = {
    "zoo_flatten_pvt_tiny": 12_150_504 - 2 * 512,
    "zoo_flatten_pvtv2_b0": 3_594_824,
    "zoo_agent_pvt_tiny": 11_570_352,
    "zoo_agent_pvt_small": 20_635_066,
    "zoo_agent_pvt_medium": 35_921_746,
    "zoo_agent_pvt_medium_256": 36_083_682,
    "zoo_agent_pvt_large": 48_738_180,
}

FAMILIES = ["zoo_flatten_pvt_tiny", "zoo_flatten_pvtv2_b0", "zoo_agent_pvt_tiny"]


def _official_layout(state_dict: dict) -> dict:
    """Our weights under the official key names (LeapLabTHU's PVT / PVTv2 models): per-stage
    ``patch_embed{i}.{proj,norm}``, ``pos_embed{i}``, ``block{i}.{j}``, PVTv2's stage norm ``norm{i}`` and
    ``mlp.dwconv.dwconv``, classifier ``head``."""
    official = checks.to_pvt_layout(state_dict)
    return {re.sub(r"^(patch_embed\d+)\.conv\.", r"\1.proj.", key): value for key, value in official.items()}


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", FAMILIES)
def test_official_checkpoint_loads(name, tmp_path):
    v2 = "pvtv2" in name
    expected_keys = {"patch_embed1.proj.weight", "patch_embed4.norm.bias", "block1.0.attn.q.weight",
                     "block3.0.attn.kv.bias", "block4.0.attn.dwc.weight", "block2.0.mlp.fc2.weight", "head.weight"}
    expected_keys |= {"norm4.weight", "block1.0.mlp.dwconv.dwconv.weight"} if v2 else {"pos_embed1", "pos_embed4"}

    def layout(state_dict: dict) -> dict:
        official = _official_layout(state_dict)
        assert not [k for k in official if k.startswith(("stages", "head.fc"))]
        if name == "zoo_flatten_pvt_tiny":  # the official FLatten-PVT declares a final norm it never applies
            official |= {"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)}
        return official

    x = torch.randn(2, 3, 64, 64)
    checks.check_official_checkpoint(name, layout, tmp_path, x, expected_keys, **tiny_kwargs(name))


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_resized_for_another_resolution(name, tmp_path):
    model = checks.load_at_another_size(name, _official_layout, tmp_path, 96, **tiny_kwargs(name))
    if "pvtv2" not in name:
        assert model.stages[0].pos_embed.shape == (1, 24 * 24, 16)


def test_position_embedding_is_interpolated_to_the_input():
    model = checks.random_model("zoo_agent_pvt_tiny", **tiny_kwargs("zoo_agent_pvt_tiny"))
    stage = model.stages[0]
    with torch.no_grad():
        at_size = stage._pos_embed((16, 16))
        assert torch.equal(at_size, stage.pos_embed.reshape(1, 16, 16, 16))
        resized = stage._pos_embed((8, 12))
    expected = torch.nn.functional.interpolate(at_size.permute(0, 3, 1, 2), size=(8, 12), mode="bilinear")
    torch.testing.assert_close(resized, expected.permute(0, 2, 3, 1))
    feats = model.forward_intermediates(torch.randn(1, 3, 32, 48), intermediates_only=True)
    assert [tuple(f.shape[2:]) for f in feats] == [(8, 12), (4, 6), (2, 3), (1, 1)]


@pytest.mark.parametrize("name", ["zoo_flatten_pvt_tiny", "zoo_agent_pvt_tiny"])
def test_spatial_reduction_builds_reduced_keys_and_values(name):
    model = timm.create_model(name, **tiny_kwargs(name), sr_ratios=(8, 4, 2, 1)).eval()
    attn = model.stages[0].blocks[0].attn
    assert attn.sr.stride == (8, 8)
    with torch.no_grad():
        q, k, v = attn.project(torch.randn(1, 16, 16, 16))
    assert q.shape == (1, 16, 16, 16) and k.shape == v.shape == (1, 2, 2, 16)
    assert not hasattr(model.stages[3].blocks[0].attn, "sr")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80)).shape == (1, 1000)
    with pytest.raises(ValueError, match="sr_ratio"):
        timm.create_model(name, **tiny_kwargs(name), sr_ratios=(0, 1, 1, 1))


def test_stage_arguments_must_agree():
    with pytest.raises(ValueError, match="one entry per stage"):
        timm.create_model("zoo_agent_pvt_tiny", **dict(tiny_kwargs("zoo_agent_pvt_tiny"), sr_ratios=(1, 1)))

