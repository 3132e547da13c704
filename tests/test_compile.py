"""torch.compile of one model per family matches eager mode (slow: inductor compiles C++ on the CPU)."""

import pytest
import timm
import torch
from timm.models import _registry

import zoo  # noqa: F401
from zoo.models import tiny_kwargs


def _one_model_per_family() -> list[str]:
    first = {}
    for name in timm.list_models("zoo_*"):
        first.setdefault(_registry._model_to_module[name], name)
    return sorted(first.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", _one_model_per_family())
def test_compiled_model_matches_eager(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **tiny_kwargs(name)).eval()
    size = tiny_kwargs(name).get("img_size") or model.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)
