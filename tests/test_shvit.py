"""SHViT: official and timm checkpoint layouts, parameter counts, re-parameterization, input sizes
(autocast: test_autocast.py)."""

import math

import _family_checks as checks
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.utils import reparameterize_model

import zoo  # noqa: F401
from zoo.models.shvit import SHSA

# Parameter counts of the official models (ysj9909/SHViT, model/shvit.py + model/build.py at 6a729cc,
# 1000 classes, no distillation head), counted by instantiating them.
OFFICIAL_PARAMS = {
    "zoo_shvit_s1": 6_330_808,
    "zoo_shvit_s2": 11_483_072,
    "zoo_shvit_s3": 14_245_273,
    "zoo_shvit_s4": 16_588_484,
}
SHALLOW = dict(depth=(1, 2, 1))
TINY = dict(embed_dim=(16, 24, 32), partial_dim=(8, 8, 8), depth=(1, 2, 1))

# Our key -> the official key. The official model keeps the downsampling before stage i (i = 1, 2) as
# the first three entries of blocks{i+1}: 0 = (dw conv, FFN) residuals, 1 = PatchMerging, 2 = (dw, FFN).
TO_OFFICIAL = (
    (r"^stages\.0\.blocks\.", "blocks1."),
    (
        r"^stages\.(\d)\.downsample\.([0-4])\.",
        lambda m: f"blocks{int(m[1]) + 1}.{('0.0', '0.1', '1', '2.0', '2.1')[int(m[2])]}.",
    ),
    (r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"blocks{int(m[1]) + 1}.{int(m[2]) + 3}."),
)


def _randomize(model: torch.nn.Module, seed: int = 0, sample_shape: tuple = (4, 3, 64, 64)) -> None:
    """Random norm scales and biases (the zero-initialized ones included) and BatchNorm statistics
    measured on noise, so that every tensor of the checkpoint matters and activations stay in range."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.3 * torch.randn(param.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average
        model.train()(torch.randn(sample_shape, generator=generator))
        model.eval()


test_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("wrapper, module_prefix", [("model", False), ("state_dict", True)])
def test_official_checkpoint_loads(tmp_path, wrapper, module_prefix):
    reference = timm.create_model("zoo_shvit_s1", **SHALLOW).eval()
    _randomize(reference)
    official = checks.rename_keys(reference.state_dict(), TO_OFFICIAL)
    expected_shapes = {
        "patch_embed.0.c.weight": (16, 3, 3, 3),
        "patch_embed.6.bn.running_var": (128,),
        "blocks1.0.conv.m.c.weight": (128, 1, 3, 3),
        "blocks1.0.ffn.m.pw1.c.weight": (256, 128, 1, 1),
        "blocks2.0.0.m.c.weight": (128, 1, 3, 3),
        "blocks2.0.1.m.pw2.bn.weight": (128,),
        "blocks2.1.conv1.c.weight": (512, 128, 1, 1),
        "blocks2.1.conv2.c.weight": (512, 1, 3, 3),
        "blocks2.1.se.fc1.weight": (128, 512, 1, 1),
        "blocks2.1.conv3.c.weight": (224, 512, 1, 1),
        "blocks2.2.0.m.bn.running_mean": (224,),
        "blocks2.2.1.m.pw1.c.weight": (448, 224, 1, 1),
        "blocks2.4.mixer.m.pre_norm.weight": (48,),
        "blocks2.4.mixer.m.qkv.c.weight": (80, 48, 1, 1),
        "blocks2.4.mixer.m.proj.1.c.weight": (224, 224, 1, 1),
        "blocks3.3.mixer.m.qkv.bn.bias": (100,),
        "head.bn.running_var": (320,),
        "head.l.weight": (1000, 320),
    }
    checks.assert_shapes(official, expected_shapes)
    assert not any(key.startswith("stages.") for key in official)
    # The official loader also accepts 1x1 conv weights stored as 2-D tensors.
    official["blocks3.3.mixer.m.qkv.c.weight"] = official["blocks3.3.mixer.m.qkv.c.weight"].flatten(1)
    if module_prefix:
        official = {f"module.{k}": v for k, v in official.items()}
    path, x = tmp_path / "shvit_s1.pth", torch.randn(1, 3, 96, 80)
    checks.assert_loads_as_pretrained("zoo_shvit_s1", {wrapper: official, "epoch": 299}, path, reference, x, **SHALLOW)


def test_timm_weights_load_and_match_timm(tmp_path):
    """timm's shvit_* state dict (the layout of its Hub weights) loads as it is and gives timm's outputs."""
    reference = timm.create_model("shvit_s2", **TINY).eval()
    _randomize(reference, seed=1)
    path = tmp_path / "model.safetensors"
    save_file(reference.state_dict(), path)
    model = checks.load_pretrained_file("zoo_shvit_s2", path, **TINY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for size in ((96, 96), (75, 113)):
            x = torch.randn(2, 3, *size, generator=generator)
            expected = reference(x)
            assert (expected[0] - expected[1]).abs().max() > 0.1  # the outputs depend on the input
            # Random weights give logits in the hundreds: compare at fp32 round-off of that scale.
            scale = expected.abs().max().item()
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5 * scale)


def _batchnorms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_reparameterize_folds_every_batchnorm():
    model = timm.create_model("zoo_shvit_s1", **TINY).eval()
    _randomize(model, seed=2)
    fused = reparameterize_model(model)
    in_place = timm.create_model("zoo_shvit_s1", **TINY).eval()
    in_place.load_state_dict(model.state_dict())
    in_place.reparameterize()
    assert _batchnorms(model) > 0 and _batchnorms(fused) == _batchnorms(in_place) == 0
    assert len(list(fused.modules())) < len(list(model.modules()))
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    assert isinstance(fused.get_classifier(), torch.nn.Linear)
    torch.manual_seed(0)
    with torch.no_grad():
        for size in ((96, 96), (61, 97)):
            x = torch.randn(2, 3, *size)
            expected = model(x)
            # Folding reorders fp32 sums; compare relative to the logits' scale.
            atol = 1e-5 * expected.abs().max().item()
            torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=atol)
            torch.testing.assert_close(in_place(x), expected, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("size", [(1, 1), (15, 17), (33, 100), (130, 66)])
def test_any_input_size(size):
    model = timm.create_model("zoo_shvit_s1", num_classes=3, **TINY).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert model(x).shape == (1, 3)
        features = model.forward_intermediates(x, intermediates_only=True)
    for feature, info in zip(features, model.feature_info):
        assert feature.shape[-2:] == tuple(math.ceil(d / info["reduction"]) for d in size)


def test_single_head_attention_matches_paper():
    """softmax(q k^T / sqrt(d_qk)) v on the first pdim channels, the others passed to the projection."""
    torch.manual_seed(0)
    attn = SHSA(dim=24, qk_dim=8, pdim=10).eval()
    _randomize(attn, seed=3, sample_shape=(4, 24, 5, 7))
    x = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        q, k, v = attn.qkv(attn.pre_norm(x[:, :10])).flatten(2).split([8, 8, 10], dim=1)
        weights = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k) / math.sqrt(8), dim=-1)
        x1 = torch.einsum("bnm,bcm->bcn", weights, v).reshape(2, 10, 5, 7)
        expected = attn.proj(torch.cat([x1, x[:, 10:]], dim=1))
        for fused_attn in (True, False):
            attn.fused_attn = fused_attn
            torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
