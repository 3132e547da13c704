"""Every Triton kernel compiles for an H100 (sm_90) in bf16, checked without a GPU.

``benchmarks/kernel_resources.py`` runs each op forward and backward through its real launch code
with Triton's driver replaced by a compile-only one, so the GPU-only paths (bf16 ``tl.dot``, every
autotuner config) are built by Triton and ptxas here, where the interpreter would not build them.
"""

import csv
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

# The modules (zoo.kernels.window_attention and neighborhood_attention2d name the ops).
dwconv = importlib.import_module("zoo.kernels.depthwise_conv")
window = importlib.import_module("zoo.kernels.window_attention")
neighborhood = importlib.import_module("zoo.kernels.neighborhood_attention")

REPO = Path(__file__).resolve().parents[2]
KERNELS = {
    "window_attention": {"window_attention_fwd", "window_attention_bwd"},
    "neighborhood_attention": {"na2d_fwd_kernel", "na2d_bwd_dq_kernel", "na2d_bwd_dkdv_kernel"},
    "depthwise_conv": {"dwconv_fwd_kernel", "dwconv_grad_weight_kernel"},
    "routing_attention": {"bra_fwd_kernel", "bra_bwd_dq_kernel", "bra_bwd_dkdv_kernel"},
}
AUTOTUNED = {
    "window_attention": [("window_attention_fwd", window._FWD_CONFIGS), ("window_attention_bwd", window._BWD_CONFIGS)],
    "neighborhood_attention": [
        (name, neighborhood._CONFIGS) for name in ("na2d_fwd_kernel", "na2d_bwd_dq_kernel", "na2d_bwd_dkdv_kernel")
    ],
    "depthwise_conv": [
        ("dwconv_fwd_kernel", dwconv._FWD_CONFIGS),
        # the channels_last case: the configs its layout keeps
        ("dwconv_grad_weight_kernel", dwconv._grad_weight_candidates(dwconv._GRAD_WEIGHT_CONFIGS, {"sxc": 1})),
    ],
    "routing_attention": [],
}
CASE = {
    "window_attention": "swin_t.s3",
    "neighborhood_attention": "nat_t.s3 d1",
    "depthwise_conv": "replknet.s1 31x31 nhwc",
    "routing_attention": "biformer_t.s2 224",
}


@pytest.mark.parametrize("op", list(KERNELS))
def test_kernels_compile_for_sm90(tmp_path, op):
    out = tmp_path / "resources.csv"
    command = [sys.executable, str(REPO / "benchmarks" / "kernel_resources.py"), "--ops", op,
               "--dtypes", "bfloat16", "--match", CASE[op], "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, timeout=600, capture_output=True)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# sm_90")
    rows = list(csv.DictReader(lines[1:]))
    assert {row["kernel"] for row in rows} == KERNELS[op]
    assert all(row["cases"] == CASE[op] and row["dtype"] == "bfloat16" for row in rows)
    for row in rows:
        assert 0 < int(row["registers"]) <= 255, row
        assert int(row["warps_per_sm"]) >= int(row["warps"]), f"{row['kernel']} cannot be resident on an SM"
    for kernel, configs in AUTOTUNED[op]:  # every config the autotuner may pick is built, not only the first
        for config in configs:
            blocks = {f"{k}={v}" for k, v in config.kwargs.items()}
            assert any(
                row["kernel"] == kernel
                and (int(row["warps"]), int(row["stages"])) == (config.num_warps, config.num_stages)
                and blocks <= set(row["config"].split())
                for row in rows
            ), f"{kernel} was not compiled with {config}"


@pytest.mark.slow
def test_every_case_and_dtype_compiles_for_sm90(tmp_path):
    """All benchmark shapes in fp32, bf16 and fp16, without register spills worth the name."""
    out = tmp_path / "resources.csv"
    command = [sys.executable, str(REPO / "benchmarks" / "kernel_resources.py"),
               "--dtypes", "float32", "bfloat16", "float16", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, timeout=1800, capture_output=True)
    rows = list(csv.DictReader(out.read_text().splitlines()[1:]))
    assert {(row["op"], row["dtype"]) for row in rows} == {
        (op, dtype) for op in KERNELS for dtype in ("float32", "bfloat16", "float16")
    }
    for row in rows:
        assert int(row["stack_bytes"]) <= (64 if row["dtype"] == "float32" else 0), row


@pytest.mark.parametrize(
    "tuner",
    [
        window._fwd_tuned,
        window._bwd_tuned,
        neighborhood._fwd_tuned,
        neighborhood._bwd_dq_tuned,
        neighborhood._bwd_dkdv_tuned,
        dwconv._fwd_tuned,
        dwconv._grad_weight_tuned,
    ],  # fmt: skip
    ids=lambda tuner: tuner.fn.__name__,
)
def test_autotuner_keys_name_kernel_arguments(tuner):
    """Triton skips key names that are not arguments, which would silently reuse one config for all shapes."""
    assert set(tuner.keys) <= set(tuner.arg_names), set(tuner.keys) - set(tuner.arg_names)
