"""How the ops choose their path, and how the Triton kernels pick their fp32 product precision."""

import pytest
import torch

from zoo.kernels._dispatch import chunks, dot_precision, use_triton


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
