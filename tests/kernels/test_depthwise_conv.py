"""``depthwise_conv2d``: the Triton kernels (the interpreter on CPU) against ``F.conv2d`` in float64."""

import pytest
import torch
import torch.nn.functional as F

import zoo.kernels.depthwise_conv as dwconv
from zoo.kernels import depthwise_conv2d

pytest.importorskip("triton")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _inputs(batch, channels, size, kernel, bias, channels_last=False, dtype=torch.float32, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *size, generator=gen)
    w = torch.randn(channels, 1, *kernel, generator=gen) / (kernel[0] * kernel[1]) ** 0.5
    b = torch.randn(channels, generator=gen) if bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return [t if t is None else t.to(device, dtype).requires_grad_() for t in (x, w, b)]


def _reference(x, w, b, padding, dilation, grad_y):
    """Output and gradients of F.conv2d in float64 on the CPU."""
    x64, w64 = (t.detach().cpu().double().requires_grad_() for t in (x, w))
    b64 = None if b is None else b.detach().cpu().double().requires_grad_()
    y = F.conv2d(x64, w64, b64, stride=1, padding=padding, dilation=dilation, groups=x.shape[1])
    y.backward(grad_y.detach().cpu().double())
    return y, x64.grad, w64.grad, None if b is None else b64.grad


def _assert_close(actual, expected, atol, rtol=1e-5):
    torch.testing.assert_close(actual.detach().cpu().double(), expected, atol=atol, rtol=rtol)


CASES = {
    # name: (batch, channels, size, kernel, dilation, padding, bias, channels_last)
    "k3-same-odd-map": (2, 3, (9, 11), (3, 3), 1, "same", True, False),
    "k7-same-even-map-channels-last": (1, 3, (10, 8), (7, 7), 1, "same", True, True),
    "k13-same-no-bias": (1, 2, (9, 11), (13, 13), 1, "same", False, False),
    "k7x3-pair-padding": (1, 3, (9, 11), (7, 3), 1, (3, 1), True, False),
    "k3x7-dilation2-channels-last": (2, 2, (9, 11), (3, 7), 2, "same", False, True),
    "k7-dilation3-van": (1, 2, (10, 11), (7, 7), 3, "same", True, False),
    "k4-even-same": (1, 2, (8, 9), (4, 4), 1, "same", True, False),
    "k4x2-even-same-dilation-pair": (1, 2, (9, 10), (4, 2), (1, 3), "same", True, True),
    "k5-int-padding-shrinks": (1, 2, (9, 11), (5, 5), 2, 1, True, False),
    "k3x5-valid": (1, 2, (9, 11), (3, 5), 1, "valid", False, False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_and_gradients_match_conv2d(triton_device, case):
    batch, channels, size, kernel, dilation, padding, bias, channels_last = case
    x, w, b = _inputs(batch, channels, size, kernel, bias, channels_last, device=triton_device)
    y = depthwise_conv2d(x, w, b, padding=padding, dilation=dilation)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(triton_device)
    y.backward(grad_y)

    y_ref, gx_ref, gw_ref, gb_ref = _reference(x, w, b, padding, dilation, grad_y)
    assert y.shape == y_ref.shape
    _assert_close(y, y_ref, atol=1e-5)
    _assert_close(x.grad, gx_ref, atol=1e-5)
    _assert_close(w.grad, gw_ref, atol=1e-4)
    if bias:
        _assert_close(b.grad, gb_ref, atol=1e-4)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=memory_format)
    assert x.grad.is_contiguous(memory_format=memory_format)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [(31, 31), (51, 5), (5, 51)], ids=["k31", "k51x5", "k5x51"])
def test_full_size_large_kernels(triton_device, kernel):
    """RepLKNet's 31x31 and SLaK's 51x5 / 5x51, larger than the map itself."""
    channels_last = kernel[0] > kernel[1]
    x, w, b = _inputs(1, 2, (12, 14), kernel, bias=True, channels_last=channels_last, device=triton_device)
    y = depthwise_conv2d(x, w, b, padding="same")
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(triton_device)
    y.backward(grad_y)
    y_ref, gx_ref, gw_ref, gb_ref = _reference(x, w, b, "same", 1, grad_y)
    _assert_close(y, y_ref, atol=1e-5)
    _assert_close(x.grad, gx_ref, atol=1e-5)
    _assert_close(w.grad, gw_ref, atol=1e-4)
    _assert_close(b.grad, gb_ref, atol=1e-4)


SMALL_TILE_CASES = {
    # name: (batch, channels, size, kernel, dilation, padding, channels_last)
    "k5-dilation3-channels-last": (1, 2, (7, 9), (5, 5), 3, "same", True),
    "k5x3-dilation-pair-int-padding": (2, 3, (6, 9), (5, 3), (2, 1), 3, False),
}


@pytest.mark.parametrize("case", SMALL_TILE_CASES.values(), ids=SMALL_TILE_CASES.keys())
def test_small_tiles(triton_device, monkeypatch, case):
    """Many tiles, channel blocks, tap blocks and column chunks, as the tuned GPU configs use."""
    batch, channels, size, kernel, dilation, padding, channels_last = case
    fwd_blocks = {"BLOCK_H": 2, "BLOCK_W": 8, "BLOCK_C": 2}
    grad_weight_blocks = {"BLOCK_KW": 4, "BLOCK_W": 8, "BLOCK_C": 2}
    monkeypatch.setattr(dwconv, "_interpreter_fwd_blocks", lambda *args: fwd_blocks)
    monkeypatch.setattr(dwconv, "_interpreter_grad_weight_blocks", lambda *args: grad_weight_blocks)
    x, w, b = _inputs(batch, channels, size, kernel, bias=True, channels_last=channels_last, device=triton_device)
    y = depthwise_conv2d(x, w, b, padding=padding, dilation=dilation)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)).to(triton_device)
    y.backward(grad_y)
    y_ref, gx_ref, gw_ref, gb_ref = _reference(x, w, b, padding, dilation, grad_y)
    _assert_close(y, y_ref, atol=1e-5)
    _assert_close(x.grad, gx_ref, atol=1e-5)
    _assert_close(w.grad, gw_ref, atol=1e-4)
    _assert_close(b.grad, gb_ref, atol=1e-4)


def test_weight_gradient_split_across_images(triton_device, monkeypatch):
    """Split boundaries that fall inside an image; the partial sums still add up to the full gradient."""
    monkeypatch.setattr(dwconv, "_num_splits", lambda total_rows, programs, device: 4)
    x, w, b = _inputs(3, 2, (7, 9), (5, 3), bias=False, device=triton_device)
    y = depthwise_conv2d(x, w, padding="same")
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(triton_device)
    y.backward(grad_y)
    _, _, gw_ref, _ = _reference(x, w, None, "same", 1, grad_y)
    _assert_close(w.grad, gw_ref, atol=1e-4)


def test_broadcast_grad_output(triton_device):
    """``y.sum()`` sends back an expanded gradient with zero strides; the kernels read it through strides."""
    x, w, b = _inputs(1, 2, (6, 7), (3, 5), bias=True, channels_last=True, device=triton_device)
    depthwise_conv2d(x, w, b, padding="same").sum().backward()
    y_ref, gx_ref, gw_ref, gb_ref = _reference(x, w, b, "same", 1, torch.ones(1, 2, 6, 7))
    _assert_close(x.grad, gx_ref, atol=1e-5)
    _assert_close(w.grad, gw_ref, atol=1e-4)
    _assert_close(b.grad, gb_ref, atol=1e-4)


def test_half_precision_forward_and_gradients(triton_device):
    """fp16 in and out with fp32 accumulation: within fp16 rounding of the float64 reference."""
    x, w, b = _inputs(1, 3, (9, 11), (7, 7), bias=True, dtype=torch.float16, device=triton_device)
    y = depthwise_conv2d(x, w, b, padding="same")
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(triton_device, torch.float16)
    y.backward(grad_y)
    assert y.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == torch.float16
    y_ref, gx_ref, gw_ref, gb_ref = _reference(x, w, b, "same", 1, grad_y)
    _assert_close(y, y_ref, atol=5e-3, rtol=5e-3)
    _assert_close(x.grad, gx_ref, atol=5e-3, rtol=5e-3)
    _assert_close(w.grad, gw_ref, atol=5e-2, rtol=5e-3)
    _assert_close(b.grad, gb_ref, atol=5e-2, rtol=5e-3)


def test_autocast_casts_like_conv2d(triton_device):
    """Under autocast fp32 parameters meet a low-precision input, as in mixed-precision training."""
    x, w, b = _inputs(1, 2, (6, 7), (5, 5), bias=True, device=triton_device)
    low = torch.bfloat16 if triton_device.type == "cpu" else torch.float16
    with torch.autocast(triton_device.type, dtype=low):
        y = depthwise_conv2d(x, w, b, padding="same")
        expected = F.conv2d(x, w, b, padding="same", groups=2)
    assert y.dtype == expected.dtype == low
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32
    _assert_close(y, expected.detach().cpu().double(), atol=2e-2, rtol=2e-2)
    _, _, gw_ref, _ = _reference(x, w, b, "same", 1, torch.ones(y.shape))
    _assert_close(w.grad, gw_ref, atol=0.1, rtol=2e-2)


def test_reference_path_is_conv2d(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    x, w, b = _inputs(2, 4, (8, 8), (5, 5), bias=True)
    expected = F.conv2d(x, w, b, padding="same", dilation=1, groups=4)
    torch.testing.assert_close(depthwise_conv2d(x, w, b), expected, atol=0, rtol=0)


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, padding, dilation, match",
    [
        ((3, 8, 8), (3, 1, 3, 3), None, "same", 1, "x must have shape"),
        ((1, 3, 8, 8), (4, 1, 3, 3), None, "same", 1, "weight must have shape"),
        ((1, 3, 8, 8), (3, 2, 3, 3), None, "same", 1, "weight must have shape"),
        ((1, 3, 8, 8), (3, 3, 3), None, "same", 1, "weight must have shape"),
        ((1, 3, 8, 8), (3, 1, 3, 3), (4,), "same", 1, "bias must have shape"),
        ((1, 3, 8, 8), (3, 1, 3, 3), None, "same", 0, "dilation must be >= 1"),
        ((1, 3, 8, 8), (3, 1, 3, 3), None, "full", 1, "padding must be"),
        ((1, 3, 8, 8), (3, 1, 3, 3), None, -1, 1, "padding must be non-negative"),
        ((1, 3, 8, 8), (3, 1, 3, 3), None, (1, 2, 3), 1, "padding must be"),
        ((1, 3, 8, 8), (3, 1, 3, 3), None, 1.5, 1, "padding must be"),
        ((1, 3, 8, 8), (3, 1, 11, 11), None, 0, 1, "does not fit"),
    ],
)
def test_bad_arguments_raise(x_shape, w_shape, b_shape, padding, dilation, match):
    x, w = torch.zeros(x_shape), torch.zeros(w_shape)
    b = None if b_shape is None else torch.zeros(b_shape)
    with pytest.raises(ValueError, match=match):
        depthwise_conv2d(x, w, b, padding=padding, dilation=dilation)


def test_mismatched_dtype_raises():
    with pytest.raises(ValueError, match="share dtype and device"):
        depthwise_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 1, 3, 3, dtype=torch.float64))
