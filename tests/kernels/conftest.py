import pytest
import torch

from zoo.kernels._dispatch import interpreting


@pytest.fixture
def triton_device(monkeypatch) -> torch.device:
    """Where a test of the Triton path puts its tensors, with the Triton path forced (``ZOO_KERNELS=triton``).

    A CUDA GPU runs the compiled kernels; without one the CPU runs them in Triton's interpreter, which
    ``tests/conftest.py`` selects before triton is imported.
    """
    pytest.importorskip("triton")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not interpreting():
        pytest.skip("the Triton path on CPU needs TRITON_INTERPRET=1 set before triton is imported")
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    return device
