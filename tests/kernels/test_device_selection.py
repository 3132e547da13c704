"""The Triton-path tests run on CUDA tensors when a GPU is there and in the interpreter otherwise."""

import os

import pytest
import torch


def test_cuda_machine_runs_the_compiled_kernels(monkeypatch, request):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as on a GPU machine: tests/conftest.py leaves it unset
    assert request.getfixturevalue("triton_device") == torch.device("cuda")
    assert os.environ["ZOO_KERNELS"] == "triton"


def test_cpu_machine_runs_the_interpreter(monkeypatch, request):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert request.getfixturevalue("triton_device") == torch.device("cpu")


def test_cpu_without_the_interpreter_skips(monkeypatch, request):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(pytest.skip.Exception, match="TRITON_INTERPRET=1"):
        request.getfixturevalue("triton_device")
