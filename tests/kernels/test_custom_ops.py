"""The ops as PyTorch custom ops: ``torch.compile(fullgraph=True)`` traces them forward and backward,
on the Triton path (interpreter on CPU, compiled kernels on CUDA) and on the reference path, and
``torch.library.opcheck`` accepts their schemas, fake implementations and autograd registrations."""

import importlib

import pytest
import torch

from zoo.kernels import depthwise_conv2d, neighborhood_attention2d, routing_attention, window_attention

pytest.importorskip("triton")

window = importlib.import_module("zoo.kernels.window_attention")
neighborhood = importlib.import_module("zoo.kernels.neighborhood_attention")
routing = importlib.import_module("zoo.kernels.routing_attention")
dwconv = importlib.import_module("zoo.kernels.depthwise_conv")


def _randn(*shape, device, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(len(shape) + shape[-1])) * scale).to(device)


def _window_case(device):
    q, k, v = (_randn(1, 4, 8, 1, 16, device=device) for _ in range(3))
    return (lambda q, k, v, rpb: window_attention(q, k, v, 4, 2, rpb)), (q, k, v, _randn(49, 1, device=device))


def _neighborhood_case(device):
    q, k, v = (_randn(1, 6, 7, 1, 16, device=device) for _ in range(3))
    rpb = _randn(1, 5, 5, device=device)
    return (lambda q, k, v, rpb: neighborhood_attention2d(q, k, v, 3, (2, 1), rpb)), (q, k, v, rpb)


def _routing_case(device):
    q, k, v = (_randn(1, 8, 8, 1, 16, device=device) for _ in range(3))
    return (lambda q, k, v: routing_attention(q, k, v, 2, 2)), (q, k, v)


def _depthwise_case(device):
    x, weight, bias = (
        _randn(2, 3, 9, 11, device=device),
        _randn(3, 1, 5, 3, device=device, scale=0.3),
        _randn(3, device=device),
    )
    return (lambda x, w, b: depthwise_conv2d(x, w, b, padding="same", dilation=(2, 1))), (x, weight, bias)


CASES = {
    "window_attention": _window_case,
    "neighborhood_attention2d": _neighborhood_case,
    "routing_attention": _routing_case,
    "depthwise_conv2d": _depthwise_case,
}


def _forward_backward(fn, inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out) + out.detach())
    return out.detach(), grads


def _assert_same(got, expected):
    for a, b in zip((got[0], *got[1]), (expected[0], *expected[1])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", CASES)
def test_compiled_triton_path_has_no_graph_break(triton_device, op):
    fn, inputs = CASES[op](triton_device)
    expected = _forward_backward(fn, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    _assert_same(_forward_backward(compiled, inputs), expected)


@pytest.mark.parametrize("op", CASES)
def test_compiled_reference_path_has_no_graph_break(monkeypatch, op):
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    fn, inputs = CASES[op]("cpu")
    expected = _forward_backward(fn, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    _assert_same(_forward_backward(compiled, inputs), expected)


def _opcheck_cases(device):
    q, k, v = (_randn(1, 8, 8, 2, 16, device=device).requires_grad_() for _ in range(3))
    rpb = _randn(49, 2, device=device).requires_grad_()
    yield window._window_attention_op, (q, k, v, rpb, 4, 4, 2, 2, 0.25)
    na_rpb = _randn(2, 5, 5, device=device).requires_grad_()
    yield neighborhood._neighborhood_attention_op, (q, k, v, na_rpb, 3, 3, 2, 1, 0.25)
    routes = routing.region_routing(q, k, 2, 2, 0.25)
    yield routing._routing_attention_op, (q, k, v, routes, 2, 0.25)
    x, weight = _randn(2, 3, 9, 11, device=device).requires_grad_(), _randn(3, 1, 5, 3, device=device).requires_grad_()
    x_last = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    yield dwconv._depthwise_conv2d_op, (x, weight, None, 2, 1, 4, 1, 9, 11)
    yield dwconv._depthwise_conv2d_op, (x_last, weight, _randn(3, device=device).requires_grad_(), 1, 1, 0, 0, 5, 9)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(5))
def test_opcheck(triton_device, case):
    """Schema, fake tensors, autograd registration and AOT dispatch with dynamic shapes (slow in the interpreter)."""
    op, args = list(_opcheck_cases(triton_device))[case]
    torch.library.opcheck(op, args)
