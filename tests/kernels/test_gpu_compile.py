"""Every Triton kernel compiles for an H100 (sm_90) in bf16, checked without a GPU.

``benchmarks/kernel_resources.py`` runs each op forward and backward through its real launch code
with Triton's driver replaced by a compile-only one, so the GPU-only paths (bf16 ``tl.dot``, every
autotuner config) are built by Triton and ptxas here, where the interpreter would not build them.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from zoo.kernels import depthwise_conv  # noqa: E402  (the module; zoo.kernels.depthwise_conv2d is the op)

REPO = Path(__file__).resolve().parents[2]
KERNELS = {
    "window_attention": {"window_attention_fwd", "window_attention_bwd"},
    "neighborhood_attention": {"na2d_fwd_kernel", "na2d_bwd_dq_kernel", "na2d_bwd_dkdv_kernel"},
    "depthwise_conv": {"dwconv_fwd_kernel", "dwconv_grad_weight_kernel"},
    "routing_attention": {"bra_fwd_kernel", "bra_bwd_dq_kernel", "bra_bwd_dkdv_kernel"},
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
    if op == "depthwise_conv":  # the autotuner's configs are compiled too, not only the first
        compiled = {(row["kernel"], row["config"], int(row["warps"])) for row in rows}
        for kernel, configs in (("dwconv_fwd_kernel", depthwise_conv._FWD_CONFIGS),
                                ("dwconv_grad_weight_kernel", depthwise_conv._GRAD_WEIGHT_CONFIGS)):  # fmt: skip
            for config in configs:
                blocks = " ".join(f"{k}={v}" for k, v in sorted(config.kwargs.items()))
                assert (kernel, blocks, config.num_warps) in compiled

