"""CSWin, FLatten-CSwin and Agent-CSwin: stripe attention against a plain reference, the calls into
``window_attention``, the official checkpoint layout, parameter counts."""

import re
from functools import partial

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
import zoo.models.cswin as cswin_module
from zoo.kernels import window_attention
from zoo.kernels._dispatch import interpreting
from zoo.models.cswin import CrossShapedWindowAttention

# Parameter counts of the official models, measured by building microsoft/CSWin-Transformer's
# CSWin_* models and LeapLabTHU's FLatten_CSWin_* / Agent_CSWin_* with their official configs.
OFFICIAL_PARAMS = {
    "zoo_cswin_tiny": 22_320_552,
    "zoo_cswin_small": 34_643_304,
    "zoo_cswin_base": 77_382_184,
    "zoo_cswin_base_384": 77_382_184,
    "zoo_cswin_large": 173_262_664,
    "zoo_cswin_large_384": 173_262_664,
    "zoo_flatten_cswin_tiny": 21_201_768,
    "zoo_agent_cswin_tiny": 20_458_672,
    "zoo_agent_cswin_small": 32_814_100,
    "zoo_agent_cswin_base": 73_249_696,
    "zoo_agent_cswin_base_384": 73_328_416,
}

SMALL = dict(img_size=64, embed_dim=16, depths=(1, 2, 1, 1), split_size=(1, 2, 2, 2), num_heads=(2, 2, 4, 4))
FAMILIES = {
    "zoo_cswin_tiny": SMALL,
    "zoo_flatten_cswin_tiny": dict(SMALL, global_blocks=(1, 2, 0, 0)),
    "zoo_agent_cswin_tiny": dict(SMALL, global_blocks=(1, 2, 0, 0), agent_num=(4, 4, 4, 1)),
}


def reference_stripe_attention(attn: CrossShapedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """CSWin's attention written out one stripe at a time (official segmentation code semantics).

    The channels split in half: the first half attends within vertical stripes (all rows, ``sw``
    columns), the second within horizontal ones; each branch zero-pads q, k, v (centred) to a
    stripe multiple, adds a 3x3 depthwise convolution of each stripe's values, and crops back.
    """
    b, h, w, c = x.shape
    qkv = attn.qkv(x)
    halves = 1 if attn.full_map else 2
    width, sw = c // halves, attn.split_size
    outputs = []
    for branch in range(halves):
        part = torch.cat([qkv[..., i * c + branch * width : i * c + (branch + 1) * width] for i in range(3)], -1)
        if attn.full_map:
            sh_, sw_ = h, w
        else:
            sh_, sw_ = (h, sw) if branch == 0 else (sw, w)
        pad_h, pad_w = -h % sh_, -w % sw_
        part = F.pad(part, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        q, k, v = part.split(width, dim=-1)
        out = torch.zeros_like(q)
        heads = width // attn.head_dim
        conv = attn.lepe[branch]
        for y in range(0, part.shape[1], sh_):
            for x0 in range(0, part.shape[2], sw_):
                rows, cols = slice(y, y + sh_), slice(x0, x0 + sw_)
                qs, ks, vs = (t[:, rows, cols].reshape(b, -1, heads, attn.head_dim).transpose(1, 2) for t in (q, k, v))
                weights = torch.softmax(qs @ ks.transpose(-2, -1) * attn.head_dim**-0.5, dim=-1)
                stripe = (weights @ vs).transpose(1, 2).reshape(b, sh_, sw_, width)
                lepe = F.conv2d(v[:, rows, cols].permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1, groups=width)
                out[:, rows, cols] = stripe + lepe.permute(0, 2, 3, 1)
        outputs.append(out[:, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w])
    return attn.proj(torch.cat(outputs, -1))


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("full_map", [False, True])
@pytest.mark.parametrize("size", [(6, 6), (7, 11), (2, 5)])
def test_stripe_attention_matches_reference(full_map, size):
    attn = CrossShapedWindowAttention(dim=24, num_heads=4, split_size=3, full_map=full_map).eval()
    with torch.no_grad():
        for lepe in attn.lepe:
            lepe.weight.normal_(0, 0.3)
        x = torch.randn(2, *size, 24)
        torch.testing.assert_close(attn(x), reference_stripe_attention(attn, x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not interpreting(), reason="needs the Triton interpreter (TRITON_INTERPRET=1 before import)")
def test_stripe_attention_through_triton_matches_reference(monkeypatch):
    attn = CrossShapedWindowAttention(dim=16, num_heads=2, split_size=2).eval()
    x = torch.randn(1, 5, 6, 16)
    with torch.no_grad():
        expected = reference_stripe_attention(attn, x)
        monkeypatch.setenv("ZOO_KERNELS", "triton")
        torch.testing.assert_close(attn(x), expected, rtol=1e-4, atol=1e-4)


def test_every_stripe_goes_through_window_attention(monkeypatch):
    calls = []

    def recording(q, k, v, window_size, *args, **kwargs):
        calls.append((tuple(q.shape[1:3]), tuple(window_size), q.shape[3]))
        return window_attention(q, k, v, window_size, *args, **kwargs)

    monkeypatch.setattr(cswin_module, "window_attention", recording)
    model = timm.create_model("zoo_cswin_tiny", **SMALL).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 80))  # stage maps 16x20, 8x10, 4x5, 2x3
    vertical, horizontal = "vertical", "horizontal"
    stages = [  # (map, split, blocks, heads) per stage; the last stage attends over its whole map
        ((16, 20), 1, 1, 2, (vertical, horizontal)),
        ((8, 10), 2, 2, 2, (vertical, horizontal)),
        ((4, 5), 2, 1, 4, (vertical, horizontal)),
        ((2, 3), 2, 1, 4, ("full",)),
    ]
    expected = []
    for (h, w), sw, blocks, heads, kinds in stages:
        for _ in range(blocks):
            for kind in kinds:
                if kind == vertical:
                    expected.append(((h, w + -w % sw), (h, sw), heads // 2))
                elif kind == horizontal:
                    expected.append(((h + -h % sw, w), (sw, w), heads // 2))
                else:
                    expected.append(((h, w), (h, w), heads))
    assert calls == expected


def test_odd_head_count_is_refused():
    with pytest.raises(ValueError, match="even"):
        CrossShapedWindowAttention(dim=24, num_heads=3, split_size=2)


def _official_layout(state_dict: dict, agent: bool) -> dict:
    """Our weights under the official key names (microsoft/CSWin-Transformer and its FLatten / Agent
    versions): stem ``stage1_conv_embed.{0,2}``, ``merge{i}`` ahead of stage ``i+1``, blocks
    ``stage{i+1}.{j}`` holding ``qkv`` / ``proj`` themselves and their branches in ``attns.{k}``
    (LePE as ``get_v``; agent attention's depthwise convolution is that LePE), classifier ``head``."""
    official = {}
    for key, value in state_dict.items():
        key = key.replace("stem.conv.", "stage1_conv_embed.0.").replace("stem.norm.", "stage1_conv_embed.2.")
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"merge\1.", key)
        key = re.sub(r"\.attn\.(qkv|proj)\.", r".\1.", key)
        key = re.sub(r"\.attn\.lepe\.(\d+)\.", r".attns.\1.get_v.", key)
        key = key.replace(".attn.lepe.", ".attns.0.get_v.")
        if agent:
            key = key.replace(".attn.dwc.", ".attns.0.get_v.")
        key = key.replace(".attn.", ".attns.0.")
        key = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"stage{int(m.group(1)) + 1}.", key)
        official[key.replace("head.fc.", "head.")] = value
    return official


@pytest.mark.parametrize("name", FAMILIES)
def test_official_checkpoint_loads(name, tmp_path):
    expected_keys = {
        "stage1_conv_embed.0.weight", "stage1_conv_embed.2.weight", "merge1.conv.weight", "merge3.norm.bias",
        "stage1.0.qkv.weight", "stage1.0.attns.0.get_v.weight", "stage3.0.attns.1.get_v.weight",
        "stage4.0.attns.0.get_v.weight", "stage2.1.mlp.fc2.weight", "norm.weight", "head.weight",
    }  # fmt: skip
    layout, x = partial(_official_layout, agent="agent" in name), torch.randn(2, 3, 64, 72)
    _, official = checks.check_official_checkpoint(
        name, layout, tmp_path, x, expected_keys, wrapper="state_dict_ema", **FAMILIES[name]
    )
    assert not [k for k in official if k.startswith(("stem", "stages", "head.fc"))]


@pytest.mark.parametrize("name", ["zoo_flatten_cswin_tiny", "zoo_agent_cswin_tiny"])
def test_checkpoint_resized_for_another_resolution(name, tmp_path):
    layout = partial(_official_layout, agent="agent" in name)
    checks.load_at_another_size(name, layout, tmp_path, 96, **FAMILIES[name])

