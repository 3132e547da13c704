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

TO_OFFICIAL = (
    (r"^blocks\.(\d+)\.norm1\.", r"transformer.layers.\1.0.norm."),
    (r"^blocks\.(\d+)\.attn\.v\.", r"transformer.layers.\1.0.fn.to_v."),
    (r"^blocks\.(\d+)\.attn\.kernel$", r"transformer.layers.\1.0.fn.dynamicqk"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.layers.\1.0.fn.to_out.0."),
    (r"^blocks\.(\d+)\.norm2\.", r"transformer.layers.\1.1.norm."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"transformer.layers.\1.1.fn.net.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"transformer.layers.\1.1.fn.net.3."),
    (r"^head\.norm\.", "mlp_head.0."),
    (r"^head\.fc\.", "mlp_head.1."),
    (r"^patch_embed\.proj\.", "to_patch_embedding.1."),
    (r"^pos_embed$", "pos_embedding"),
)


def _official_layout(state_dict: dict) -> dict:
    """Our keys and shapes -> the official ones: the patch embedding as a linear layer over
    ``(p1 p2 c)``-ordered patches, the position embedding as ``(1, N, dim)``, plus the unused cls_token."""
    reshaped = dict(state_dict)
    reshaped["patch_embed.proj.weight"] = state_dict["patch_embed.proj.weight"].permute(0, 2, 3, 1).flatten(1)
    reshaped["pos_embed"] = state_dict["pos_embed"].flatten(1, 2)
    official = checks.rename_keys(reshaped, TO_OFFICIAL)
    official["cls_token"] = torch.randn(1, 1, state_dict["pos_embed"].shape[-1])
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
    with torch.no_grad():
        for block in source.blocks:
            block.attn.kernel.normal_(0, 0.1)
    checkpoint = _official_layout(source.state_dict())
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
