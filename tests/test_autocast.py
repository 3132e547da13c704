"""Autocast forward and backward of full-width models at their default input size (CPU): finite logits
and finite gradients for every parameter. fp16 is emulated on CPU, hence slow."""

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401

# (model, batch): a batch of two where BatchNorm layers train.
CASES = [
    ("zoo_biformer_tiny", 2),
    ("zoo_dinat_mini", 1),
    ("zoo_shvit_s1", 2),
    ("zoo_parcnetv2_xt", 1),
    ("zoo_parcnet_s", 2),
]


@pytest.mark.parametrize("name, batch", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)])
def test_autocast_forward_backward_is_finite(name, batch, dtype):
    model = timm.create_model(name).train()
    size = model.pretrained_cfg["input_size"][-1]
    checks.assert_finite_autocast_step(model, torch.randn(batch, 3, size, size), dtype)
