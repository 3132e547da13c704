"""SpectFormer (vanilla and hierarchical): official layouts, parameter counts, head counts, resize rule, autocast."""

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.spectral import resize_filter
from zoo.models.spectformer import AttentionBlock, checkpoint_filter_fn

# Parameter counts of the official models (badripatro/SpectFormers at its current head), counted by
# instantiating them: vanilla_architecture/spectformer.py with main_spectformer.py's arguments (the
# head count changes no parameter; the training logs report the same counts for T, XS and S), and
# hierarchical_architecture/spectformer.py's spectformer_{s,b,l}.
OFFICIAL_PARAMS = {
    "zoo_spectformer_t": 9_158_376,
    "zoo_spectformer_xs": 20_028_520,
    "zoo_spectformer_s": 32_449_768,
    "zoo_spectformer_b": 57_159_656,
    "zoo_spectformer_h_s": 22_226_928,
    "zoo_spectformer_h_b": 33_052_880,
    "zoo_spectformer_h_l": 54_675_792,
}
SMALL = dict(img_size=32, patch_size=8, embed_dim=16, depth=4, num_heads=2, spectral_depth=2)
SMALL_H = dict(img_size=64, stem_hidden_dim=8, embed_dims=(8, 16, 16, 32), num_heads=(1, 2, 2, 4), depths=(1, 2, 1, 1))

# Our key -> the official key (hierarchical_architecture/spectformer.py): PVT's layout (stage i's
# patch_embed{i+1}, block{i+1}, norm{i+1}) with the stem as patch_embed1 and the head's parts at the top level.
TO_OFFICIAL_HEAD_H = (
    (r"^stem\.", "patch_embed1."),
    (r"^head\.norm\.", "norm4."),
    (r"^head\.cls_block\.", "post_network.0."),
    (r"^head\.aux_fc\.", "aux_head."),
)


def official_layout(model) -> dict:
    """The model's state dict in the official hierarchical layout (or the vanilla one: ``head``)."""
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    if hasattr(model, "stages"):
        return {"model": checks.to_pvt_layout(checks.rename_keys(state_dict, TO_OFFICIAL_HEAD_H))}
    return {"model": checks.rename_keys(state_dict, checks.TO_BARE_LINEAR_HEAD)}


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name, heads", [("zoo_spectformer_t", 4), ("zoo_spectformer_xs", 6),
                                         ("zoo_spectformer_s", 6), ("zoo_spectformer_b", 8)])  # fmt: skip
def test_vanilla_layout_four_spectral_blocks_then_64_channel_heads(name, heads):
    with torch.device("meta"):
        model = timm.create_model(name)
    kinds = [type(block) is AttentionBlock for block in model.blocks]
    assert kinds == [False] * 4 + [True] * (len(model.blocks) - 4)
    assert all(block.attn.num_heads == heads and block.attn.head_dim == 64 for block in model.blocks[4:])


def test_heads_that_do_not_divide_the_width_are_refused():
    with pytest.raises(ValueError, match="num_heads 6 must divide the width 256"):
        timm.create_model("zoo_spectformer_t", num_heads=6)


@pytest.mark.parametrize("name, kwargs", [("zoo_spectformer_xs", SMALL), ("zoo_spectformer_h_s", SMALL_H)])
def test_official_layout_loads_and_gives_the_same_output(name, kwargs):
    checkpoint = checks.check_random_model_round_trip(name, official_layout, checkpoint_filter_fn, **kwargs)
    assert "head.weight" in checkpoint["model"]


def test_hierarchical_logits_add_half_the_best_token_score():
    """Token labeling at evaluation: logits = fc(class token) + 0.5 * max over tokens of aux_fc(token)."""
    model = timm.create_model("zoo_spectformer_h_s", num_classes=5, **SMALL_H).eval()
    with torch.no_grad():
        model.head.aux_fc.weight.zero_()
        model.head.aux_fc.bias.copy_(torch.arange(5.0))
        x = torch.randn(2, 3, 64, 64)
        class_token = model.forward_head(model.forward_features(x), pre_logits=True)
        expected = model.head.fc(class_token) + 0.5 * torch.arange(5.0)
        torch.testing.assert_close(model(x), expected)


def test_hierarchical_filters_resize_at_load_and_in_the_forward_pass():
    source = checks.random_model("zoo_spectformer_h_s", std=0.1, **SMALL_H)
    assert source.stages[0].blocks[0].attn.complex_weight.shape == (16, 9, 8, 2)
    assert source.stages[1].blocks[0].attn.complex_weight.shape == (8, 5, 16, 2)
    bigger = timm.create_model("zoo_spectformer_h_s", **dict(SMALL_H, img_size=96)).eval()
    bigger.load_state_dict(checkpoint_filter_fn(official_layout(source), bigger))
    expected = resize_filter(source.stages[1].blocks[1].attn.complex_weight, (12, 7), mode="bicubic")
    torch.testing.assert_close(bigger.stages[1].blocks[1].attn.complex_weight.data, expected)

    state = {k: resize_filter(v, (24, 13) if k.startswith("stages.0") else (12, 7)) if k.endswith("complex_weight")
             else v for k, v in source.state_dict().items()}  # fmt: skip
    bigger.load_state_dict(state)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(source(x), bigger(x))


@pytest.mark.parametrize("name, kwargs", [("zoo_spectformer_xs", SMALL), ("zoo_spectformer_h_s", SMALL_H)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_forward_backward(name, kwargs, dtype):
    model = timm.create_model(name, **kwargs).train()
    checks.assert_finite_autocast_step(model, torch.randn(2, 3, 56, 40) * 200, dtype, every_parameter=False)
