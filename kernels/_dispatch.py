"""Choosing between the Triton kernels and the reference PyTorch path.

CUDA tensors run the Triton kernels where ``zoo.kernels.path_rules`` measured them faster;
everything else runs the reference path. The environment variable ``ZOO_KERNELS`` overrides that
choice: ``reference`` forces the PyTorch path everywhere, ``triton`` forces the Triton kernels (on
CPU tensors this needs ``TRITON_INTERPRET=1`` set before triton is imported, which is how the
kernels are tested without a GPU).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable

import torch

_CHOICES = ("auto", "reference", "triton")


# Looked up once, at import: a constant is what torch.compile can trace through.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``).

    Launches there skip the autotuners: the interpreter ignores warps and stages, and timing every
    config would only multiply its cost.
    """
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(*tensors: torch.Tensor, faster: Callable[[], bool] = lambda: True) -> bool:
    """Whether an op called on ``tensors`` should run its Triton kernel.

    ``faster`` evaluates the op's rule for this call (``zoo.kernels.path_rules``), only for CUDA
    tensors under ``ZOO_KERNELS=auto``: a call the rule gives to PyTorch runs the reference path there.
    """
    choice = os.environ.get("ZOO_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"ZOO_KERNELS must be one of {_CHOICES}, got {choice!r}")
    if choice == "reference":
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if choice == "auto":
        return on_cuda and triton_available() and faster()
    if not triton_available():
        raise RuntimeError("ZOO_KERNELS=triton but triton is not installed (pip install triton)")
    if not on_cuda and not interpreting():
        raise RuntimeError(
            "ZOO_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
        )
    return True


def autotune(configs: list, key: list[str], prune=None):
    """``triton.autotune`` whose results persist across processes where Triton can (``cache_results``,
    Triton >= 3.4): the timings go to Triton's cache directory (``TRITON_CACHE_DIR``, by default
    ``~/.triton/cache``) under a hash of the Triton version, the GPU target (architecture), the kernel
    source, the values of ``key`` (the shape and layout arguments that select a config, plus the
    tensors' dtypes) and the configs timed; a later process with the same shapes starts with the
    tuned config instead of timing every candidate again. ``prune(configs, named_args)`` drops
    configs that cannot win for a call before anything is timed.
    """
    import triton

    kwargs = {}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        kwargs["cache_results"] = True
    if prune is not None:
        kwargs["prune_configs_by"] = {"early_config_prune": lambda configs, named_args, **_: prune(configs, named_args)}
    return triton.autotune(configs, key, **kwargs)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision``: exact fp32 products unless PyTorch allows TF32 for fp32 matmuls
    (``torch.backends.cuda.matmul.allow_tf32``, or ``torch.set_float32_matmul_precision("high")``)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def chunks(total: int, size: int) -> list[slice]:
    """Slices of ``size`` items covering ``range(total)``, as the reference paths bound their memory.

    One slice for all in a graph being exported (``torch.export``, ONNX): looping over a batch
    would fix its size there, where it should stay symbolic. One empty slice when ``total`` is 0, so
    that an empty batch gives an empty result.
    """
    if torch.compiler.is_exporting():
        return [slice(None)]
    return [slice(start, start + size) for start in range(0, max(total, 1), size)]


def pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """An int or an (h, w) pair as a tuple of two positive ints, or a ValueError naming ``name``."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, op: str) -> None:
    """q, k, v must be ``(B, H, W, heads, head_dim)`` tensors of one shape, dtype and device."""
    if q.dim() != 5:
        raise ValueError(f"{op}: q, k, v must have shape (B, H, W, heads, head_dim), got q of {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"{op}: q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype or k.device != q.device or v.device != q.device:
        raise ValueError(f"{op}: q, k, v must share dtype and device")


def register_biased_attention_autograd(forward_op, backward_op) -> None:
    """The autograd formula of a fused attention custom op with a bias table.

    ``forward_op(q, k, v, rpb, *geometry)`` returns ``(out, lse)``; ``backward_op(grad_out, q, k, v, rpb,
    out, lse, *geometry, bias_grad)`` returns the gradients of q, k, v and (when ``bias_grad``) of ``rpb``,
    which is asked for only where ``rpb`` is given and needs one. ``geometry`` (window or kernel sizes,
    shifts or dilations, the scale) gets no gradient.
    """

    def setup_context(ctx, inputs, output):
        q, k, v, rpb, *ctx.geometry = inputs
        ctx.save_for_backward(q, k, v, rpb, *output)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        bias_grad = rpb is not None and ctx.needs_input_grad[3]
        grads = backward_op(grad_out, q, k, v, rpb, out, lse, *ctx.geometry, bias_grad)
        return *grads[:3], grads[3] if bias_grad else None, *(None,) * len(ctx.geometry)

    forward_op.register_autograd(backward, setup_context=setup_context)
