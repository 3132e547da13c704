"""The per-shape choice between the Triton kernels and PyTorch, for the shapes the model families use."""

import importlib
from typing import NamedTuple

import pytest
import torch

from zoo.kernels.path_rules import LARGE_KERNEL_MIN, SMALL_KERNEL_MAX, routing_prefers_triton

dwconv = importlib.import_module("zoo.kernels.depthwise_conv")


def _call(channels, size, kernel, dilation=1, padding="same", channels_last=False, requires_grad=False):
    """The rule's view of ``depthwise_conv2d`` on a batch-2 map, through the op's own argument checks."""
    x = torch.empty(2, channels, *size, device="meta", requires_grad=requires_grad)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.empty(channels, 1, *kernel, device="meta")
    _, _, geometry = dwconv._check_arguments(x, weight, None, padding, dilation)
    return dwconv._describe(x, weight, None, geometry)


class Shape(NamedTuple):
    """A depthwise convolution a family runs (on a batch-2 map of ``size``), and whether the rule sends it to
    the Triton kernel."""

    channels: int
    size: tuple[int, int]
    kernel: tuple[int, int]
    triton: bool
    dilation: int = 1
    padding: int | str = "same"
    channels_last: bool = False


FAMILY_SHAPES = {
    "shvit-s4 3x3 16x16": Shape(224, (16, 16), (3, 3), triton=False),
    "shvit-s4 3x3 4x4": Shape(448, (4, 4), (3, 3), triton=False),
    "agent-swin 3x3 56x56": Shape(96, (56, 56), (3, 3), triton=False),
    "flatten-swin 5x5 56x56": Shape(32, (56, 56), (5, 5), triton=False),
    "van 5x5 56x56": Shape(64, (56, 56), (5, 5), triton=False),
    "van 7x7 dil3 56x56 nchw": Shape(64, (56, 56), (7, 7), triton=True, dilation=3),
    "van 7x7 dil3 56x56 channels-last": Shape(64, (56, 56), (7, 7), triton=False, dilation=3, channels_last=True),
    "van 7x7 dil3 7x7 map": Shape(512, (7, 7), (7, 7), triton=False, dilation=3),  # 5 taps per axis reach it
    "hornet 7x7 56x56 nchw": Shape(64, (56, 56), (7, 7), triton=True),
    "hornet 7x7 56x56 channels-last": Shape(64, (56, 56), (7, 7), triton=False, channels_last=True),
    "parcnet-v1 56-tap circular": Shape(96, (111, 56), (56, 1), triton=True, padding=0),
    "parcnet-v2 27-tap 14x14": Shape(192, (14, 14), (27, 1), triton=True, channels_last=True),
    "parcnet-v2 13-tap 7x7": Shape(384, (7, 7), (1, 13), triton=True),
    "replknet 31x31 56x56": Shape(128, (56, 56), (31, 31), triton=True),
    "replknet 31x31 56x56 channels-last": Shape(128, (56, 56), (31, 31), triton=True, channels_last=True),
    "replknet 29x29 28x28": Shape(256, (28, 28), (29, 29), triton=True),
    "replknet 27x27 14x14": Shape(512, (14, 14), (27, 27), triton=True, channels_last=True),
    "replknet 13x13 7x7": Shape(1024, (7, 7), (13, 13), triton=True),
    "replknet 13x13 on a 3x3 map": Shape(1024, (3, 3), (13, 13), triton=False),  # 5 taps reach it
    "slak 51x5 56x56": Shape(96, (56, 56), (51, 5), triton=True),
    "slak 5x51 56x56 channels-last": Shape(96, (56, 56), (5, 51), triton=True, channels_last=True),
    "slak 5x5": Shape(96, (56, 56), (5, 5), triton=False),
}


@pytest.mark.parametrize("training", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("case", FAMILY_SHAPES.values(), ids=FAMILY_SHAPES.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise_rule_for_family_shapes(case, training, dtype):
    call = _call(case.channels, case.size, case.kernel, case.dilation, case.padding, case.channels_last, training)
    assert call.training is training and call.channels_last is case.channels_last
    assert dwconv.depthwise_prefers_triton(call) is case.triton


def test_taps_in_map():
    assert _call(8, (56, 56), (31, 31)).taps_in_map() == (31, 31)
    assert _call(8, (7, 7), (31, 31)).taps_in_map() == (13, 13)
    assert _call(8, (9, 56), (7, 7), dilation=3).taps_in_map() == (5, 7)
    assert _call(8, (111, 56), (56, 1), padding=0).taps_in_map() == (56, 1)
    assert _call(8, (2, 9), (7, 7)).taps_in_map() == (3, 7)  # on 2 rows, taps 0, 1, 5, 6 read only padding


def test_thresholds_leave_the_middle_to_the_layout():
    assert SMALL_KERNEL_MAX < 7 < LARGE_KERNEL_MIN


def test_auto_mode_follows_the_rule_on_cuda(monkeypatch):
    """With CUDA tensors (faked by the device check), a 3x3 runs ``F.conv2d`` and a 31x31 the Triton kernel."""
    calls = []
    monkeypatch.setattr(dwconv, "depthwise_conv2d_reference", lambda *args: calls.append("pytorch"))
    monkeypatch.setattr(dwconv, "_depthwise_conv2d_op", lambda *args: calls.append("triton"))
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setenv("ZOO_KERNELS", "auto")
    for kernel in (3, 31):
        dwconv.depthwise_conv2d(torch.zeros(1, 4, 32, 32), torch.zeros(4, 1, kernel, kernel))
    assert calls == ["pytorch", "triton"]
    monkeypatch.setenv("ZOO_KERNELS", "triton")  # forced: the rule is not consulted
    dwconv.depthwise_conv2d(torch.zeros(1, 4, 32, 32), torch.zeros(4, 1, 3, 3))
    assert calls[-1] == "triton"


@pytest.mark.parametrize(
    "dtype, exact, topk, triton",
    [
        (torch.float32, True, 1, False),  # issue 13: 0.73x and 0.32x the gather formulation
        (torch.float32, True, 4, True),
        (torch.float32, False, 1, True),  # TF32 products run on tensor cores
        (torch.bfloat16, False, 1, True),  # issue 13: 1.65-2.07x
        (torch.float16, False, 16, True),
    ],
)
def test_routing_rule(dtype, exact, topk, triton):
    assert routing_prefers_triton(dtype, exact, topk) is triton
