"""LKCA: the attention view of the convolution, the official checkpoint layout, parameter counts and
the zoo kernel's use."""


import _family_checks as checks
import timm
import torch

import zoo  # noqa: F401
import zoo.models.lkca
from zoo.models import tiny_kwargs
from zoo.models.lkca import LargeKernelConvAttention, checkpoint_filter_fn

# Parameter counts of the official models (CatworldLee/LKCA-MiniViTsTrainer-Pytorch-CIFAR-TinyImageNet,
# models/create_model.py at 7b9370a, 32x32 inputs, 100 classes), counted by instantiating them, less the
# official cls_token (dim parameters), which the official forward never uses.
OFFICIAL_PARAMS = {
    "zoo_lkca_vit": 2_710_510 - 210,
    "zoo_lkca_vit_05m": 509_900 - 100,
    "zoo_lkca_vit_1m": 1_040_077 - 136,
    "zoo_lkca_vit_2m": 2_048_077 - 192,
    "zoo_lkca_vit_4m": 4_071_415 - 246,
    "zoo_lkca_vit_8m": 7_969_042 - 306,
    "zoo_lkca_vit_12m": 12_561_040 - 360,
}

# The official names of block i's parameters (``transformer.layers.{i}.``, written out): the attention and
# the feed-forward network each in a PreNorm (``norm``, ``fn``), the latter's ``net`` a Linear, GELU,
# Dropout, Linear sequence.
OFFICIAL_BLOCK_NAMES = {
    "0.norm.weight": "norm1.weight",
    "0.norm.bias": "norm1.bias",
    "0.fn.dynamicqk": "attn.kernel",
    "0.fn.to_v.weight": "attn.v.weight",
    "0.fn.to_out.0.weight": "attn.proj.weight",
    "0.fn.to_out.0.bias": "attn.proj.bias",
    "1.norm.weight": "norm2.weight",
    "1.norm.bias": "norm2.bias",
    "1.fn.net.0.weight": "mlp.fc1.weight",
    "1.fn.net.0.bias": "mlp.fc1.bias",
    "1.fn.net.3.weight": "mlp.fc2.weight",
    "1.fn.net.3.bias": "mlp.fc2.bias",
}


def _official_checkpoint(model) -> dict:
    """``model``'s weights under the official names and shapes: the patch embedding a linear layer over
    ``(p1 p2 c)``-ordered patches, the position embedding ``(1, N, dim)``, plus the unused cls_token."""
    ours = model.state_dict()
    official = {
        "to_patch_embedding.1.weight": ours["patch_embed.proj.weight"].permute(0, 2, 3, 1).flatten(1),
        "to_patch_embedding.1.bias": ours["patch_embed.proj.bias"],
        "pos_embedding": ours["pos_embed"].flatten(1, 2),
        "cls_token": torch.randn(1, 1, model.num_features),
        "mlp_head.0.weight": ours["head.norm.weight"],
        "mlp_head.0.bias": ours["head.norm.bias"],
        "mlp_head.1.weight": ours["head.fc.weight"],
        "mlp_head.1.bias": ours["head.fc.bias"],
    }
    for i in range(len(model.blocks)):
        official |= {f"transformer.layers.{i}.{k}": ours[f"blocks.{i}.{n}"] for k, n in OFFICIAL_BLOCK_NAMES.items()}
    return official


test_parameter_count_equals_official_without_the_unused_cls_token = checks.official_parameter_count_test(
    OFFICIAL_PARAMS
)


def test_convolution_is_attention_with_the_toeplitz_matrix():
    """``out[p] = sum_q K[q - p + S - 1] v[q]``: the paper's attention view of the same operation."""
    side = 4
    attn = LargeKernelConvAttention(6, 6, (side, side))
    with torch.no_grad():
        attn.kernel.normal_()
        attn.v.weight.copy_(torch.eye(6))
        attn.proj.weight.copy_(torch.eye(6))
        attn.proj.bias.zero_()
    x = torch.randn(2, side, side, 6)
    positions = [(i, j) for i in range(side) for j in range(side)]
    kernel = attn.kernel[0, 0]
    matrix = torch.stack([
        torch.stack([kernel[qi - pi + side - 1, qj - pj + side - 1] for qi, qj in positions]) for pi, pj in positions
    ])
    expected = (matrix @ x.reshape(2, side * side, 6)).reshape(2, side, side, 6)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)


def test_official_checkpoint_loads():
    name = "zoo_lkca_vit"
    source = timm.create_model(name, **tiny_kwargs(name)).eval()
    checks.randomize_state(source, around_init=True)  # norms too, so that every official name matters
    checkpoint = _official_checkpoint(source)
    x = torch.randn(2, 3, 32, 32)
    checks.check_checkpoint_filter(name, checkpoint, checkpoint_filter_fn, source, x, **tiny_kwargs(name))


def test_every_block_convolves_through_the_zoo_kernel(monkeypatch):
    model = timm.create_model("zoo_lkca_vit_05m", dim=8, heads=2, head_dim=4).eval()  # 8 blocks, 8x8 tokens
    calls = []
    kernel = zoo.models.lkca.depthwise_conv2d

    def counting(x, weight, *args, **kwargs):
        calls.append(tuple(weight.shape))
        return kernel(x, weight, *args, **kwargs)

    monkeypatch.setattr(zoo.models.lkca, "depthwise_conv2d", counting)
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls == [(8, 1, 15, 15)] * 8
