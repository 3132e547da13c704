"""The re-parameterization helpers shared by the large-kernel families, against the convolutions they replace."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.layers.dwconv import DepthwiseConv2d
from zoo.layers.reparam import (
    DILATED_BRANCHES,
    DilatedReparamBlock,
    ReparamLargeKernelConv,
    dilate_kernel,
    fuse_bn,
    pad_kernel,
)


def _eval_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.weight.normal_(1, 0.3)
        bn.bias.normal_(0, 0.3)
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return bn


@pytest.mark.parametrize("with_bias", [False, True])
def test_fuse_bn_equals_conv_then_batchnorm(with_bias):
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=with_bias)
    bn = _eval_bn(6)
    x = torch.randn(2, 4, 9, 7)
    weight, bias = fuse_bn(conv.weight, bn, conv.bias)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, weight, bias, padding=1), bn(conv(x)))


def test_padded_kernel_gives_the_same_same_padded_convolution():
    x = torch.randn(1, 3, 12, 10)
    small = torch.randn(3, 1, 5, 3)
    torch.testing.assert_close(
        F.conv2d(x, pad_kernel(small, 11), padding=5, groups=3), F.conv2d(x, small, padding=(2, 1), groups=3)
    )
    with pytest.raises(ValueError, match="cannot centre"):
        pad_kernel(small, (6, 6))


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilated_kernel_equals_the_dilated_convolution(dilation):
    x = torch.randn(1, 2, 15, 13)
    kernel = torch.randn(2, 1, 3, 5)
    dense = dilate_kernel(kernel, dilation)
    assert dense.shape[-2:] == (2 * dilation + 1, 4 * dilation + 1)
    expected = F.conv2d(x, kernel, padding=(dilation, 2 * dilation), dilation=dilation, groups=2)
    torch.testing.assert_close(F.conv2d(x, dense, padding=(dilation, 2 * dilation), groups=2), expected)


@pytest.mark.parametrize("decomposed", [False, True], ids=["square", "strips"])
def test_large_kernel_conv_folds_to_one_convolution(decomposed):
    module = ReparamLargeKernelConv(5, 13, small_kernel=3, decomposed=decomposed).eval()
    for branch in module.branches():
        branch.bn = _eval_bn(5)
    x = torch.randn(2, 5, 11, 16)
    with torch.no_grad():
        expected = module(x)
        module.reparameterize()
        folded = module(x)
    assert [name for name, _ in module.named_children()] == ["lkb_reparam"]
    assert module.lkb_reparam.weight.shape == (5, 1, 13, 13) and folded.shape == x.shape
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_bad_kernel_arguments_raise():
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv2d(4, (51, 4))
    with pytest.raises(ValueError, match="small_kernel"):
        ReparamLargeKernelConv(4, 13, small_kernel=15)
    with pytest.raises(ValueError, match="small_kernel"):
        ReparamLargeKernelConv(4, 13, small_kernel=None, decomposed=True)


@pytest.mark.parametrize("kernel_size", sorted(DILATED_BRANCHES))
def test_dilated_reparam_block_is_the_sum_of_its_dilated_convolutions_and_folds(kernel_size):
    channels = 3
    module = DilatedReparamBlock(channels, kernel_size).eval()
    module.origin_bn = _eval_bn(channels)
    for k, r in DILATED_BRANCHES[kernel_size]:
        setattr(module, f"dil_bn_k{k}_{r}", _eval_bn(channels))
    x = torch.randn(2, channels, 19, 14)
    with torch.no_grad():
        expected = module.origin_bn(F.conv2d(x, module.lk_origin.weight, padding=kernel_size // 2, groups=channels))
        for k, r in DILATED_BRANCHES[kernel_size]:
            weight = getattr(module, f"dil_conv_k{k}_{r}").weight
            bn = getattr(module, f"dil_bn_k{k}_{r}")
            expected = expected + bn(F.conv2d(x, weight, padding=r * (k - 1) // 2, dilation=r, groups=channels))
        torch.testing.assert_close(module(x), expected)
        module.reparameterize()
        assert [name for name, _ in module.named_children()] == ["lk_origin"]
        assert module.lk_origin.weight.shape == (channels, 1, kernel_size, kernel_size)
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


def test_dilated_reparam_block_needs_a_known_kernel_size():
    with pytest.raises(ValueError, match="kernel_size must be one of"):
        DilatedReparamBlock(4, 3)
