"""FLatten-Swin and Agent-Swin: official checkpoint layout, resizing, parameter counts, mixed precision."""

import re

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models.flatten_swin import FocusedLinearAttention

# Parameter counts of the official models, measured by building LeapLabTHU's FLattenSwinTransformer
# and AgentSwinTransformer with the official configs (cfgs/*.yaml).
OFFICIAL_PARAMS = {
    "zoo_flatten_swin_tiny": 29_192_384,
    "zoo_flatten_swin_small": 50_510_288,
    "zoo_flatten_swin_base": 88_972_488,
    "zoo_flatten_swin_base_384": 91_433_928,
    "zoo_agent_swin_tiny": 28_902_964,
    "zoo_agent_swin_small": 49_666_684,
    "zoo_agent_swin_small_288": 49_707_964,
    "zoo_agent_swin_base": 88_095_096,
    "zoo_agent_swin_base_384": 88_305_016,
}

SMALL = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
FAMILIES = {
    "zoo_flatten_swin_tiny": dict(SMALL, global_blocks=(2, 2, 0, 0)),
    "zoo_agent_swin_tiny": dict(SMALL, global_blocks=(2, 2, 1, 0), agent_num=(4, 4, 4, 1)),
}


def _official_layout(state_dict: dict) -> dict:
    """Our weights under the official (Swin repository) key names, with the official buffers.

    The official code keeps downsampling at the end of stage i (ours: start of stage i+1), names
    the classifier ``head`` and stores ``relative_position_index`` and ``attn_mask`` buffers.
    """
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
        if key.endswith("relative_position_bias_table"):
            n = int((value.shape[0] ** 0.5 + 1) / 2) ** 2
            official[key.replace("bias_table", "index")] = torch.randint(0, value.shape[0], (n, n))
            official[key.replace("attn.relative_position_bias_table", "attn_mask")] = torch.zeros(4, n, n)
    return official


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", FAMILIES)
def test_official_checkpoint_loads(name, tmp_path):
    expected_keys = {"layers.0.downsample.reduction.weight", "head.weight"}
    x = torch.randn(2, 3, 64, 64)
    checks.check_official_checkpoint(name, _official_layout, tmp_path, x, expected_keys, **FAMILIES[name])


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_resized_for_another_resolution(name, tmp_path):
    checks.load_at_another_size(name, _official_layout, tmp_path, 96, **FAMILIES[name])


def test_focused_linear_attention_survives_fp16_with_large_activations():
    """x**3 of the focusing function overflows fp16 for activations above ~40; it must run in fp32."""
    torch.manual_seed(0)
    attn = FocusedLinearAttention(dim=32, num_heads=2, resolution=(8, 8))
    x = (torch.randn(1, 8, 8, 32) * 200).requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        out = attn(x)
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["zoo_flatten_swin_tiny", "zoo_agent_swin_tiny"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_forward_backward_at_default_size(name, dtype):
    model = timm.create_model(name, depths=(2, 2, 2, 2)).train()
    with torch.autocast("cpu", dtype=dtype):
        out = model(torch.randn(2, 3, 224, 224))
    out.float().logsumexp(-1).mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
