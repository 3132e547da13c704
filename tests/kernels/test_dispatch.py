"""How the ops choose their path, and how the Triton kernels pick their fp32 product precision."""

import importlib

import pytest
import torch

from zoo.kernels._dispatch import autotune, chunks, dot_precision, use_triton


@pytest.fixture
def restore_tf32():
    allowed = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = allowed


def test_fp32_products_follow_pytorchs_tf32_switch(restore_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    assert dot_precision(torch.float32) == "ieee"
    torch.set_float32_matmul_precision("high")
    assert dot_precision(torch.float32) == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = False
    assert dot_precision(torch.float32) == "ieee"
    assert dot_precision(torch.bfloat16) == dot_precision(torch.float16) == "tf32"


def test_zoo_kernels_environment_variable(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert not use_triton(x)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        use_triton(x)
    monkeypatch.setenv("ZOO_KERNELS", "fast")
    with pytest.raises(ValueError, match="ZOO_KERNELS must be one of"):
        use_triton(x)
    monkeypatch.delenv("ZOO_KERNELS")
    assert use_triton(x) is False  # CPU tensors run the reference path by default


def test_reference_chunks_cover_the_range_once_and_not_when_exporting(monkeypatch):
    covered = [i for part in chunks(10, 4) for i in range(10)[part]]
    assert covered == list(range(10)) and len(chunks(10, 4)) == 3
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    assert chunks(10, 4) == [slice(None)]  # one slice keeps an exported batch size symbolic


def test_autotune_persists_results_where_triton_can(monkeypatch):
    triton = pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the interpreter never tunes, so never caches

    @triton.jit
    def kernel(x_ptr, n):
        pass

    tuner = autotune([triton.Config({}, num_warps=w) for w in (4, 8)], ["n"])(kernel)
    assert tuner.cache_results is True


def test_autotune_without_cache_results_in_older_triton(monkeypatch):
    """Before Triton 3.4 ``triton.autotune`` has no ``cache_results``: the kernels then tune per process."""
    triton = pytest.importorskip("triton")
    calls = []

    def autotune_before_3_4(configs, key, prune_configs_by=None, reset_to_zero=None):
        calls.append(prune_configs_by)
        return lambda fn: fn

    monkeypatch.setattr(triton, "autotune", autotune_before_3_4)
    autotune([], ["n"])
    autotune([], ["n"], prune=lambda configs, args: configs[:1])
    assert calls[0] is None
    assert calls[1]["early_config_prune"]([1, 2], {"n": 3}, extra=0) == [1]


def test_pruned_configs_follow_layout_and_dtype():
    pytest.importorskip("triton")
    dwconv = importlib.import_module("zoo.kernels.depthwise_conv")
    window = importlib.import_module("zoo.kernels.window_attention")
    configs = dwconv._GRAD_WEIGHT_CONFIGS
    nchw, channels_last = (dwconv._grad_weight_candidates(configs, {"sxc": sxc}) for sxc in (56 * 56, 1))
    assert {c.kwargs["BLOCK_C"] for c in nchw} == {2, 4}
    assert min(c.kwargs["BLOCK_C"] for c in channels_last) >= 8
    assert len(nchw) + len(channels_last) == len(configs)
    fp32, bf16 = ({"q_ptr": torch.empty(0, dtype=dtype)} for dtype in (torch.float32, torch.bfloat16))
    assert [c.num_stages for c in window._bwd_candidates(window._BWD_CONFIGS, fp32)] == [1]
    assert window._bwd_candidates(window._BWD_CONFIGS, bf16) == window._BWD_CONFIGS
