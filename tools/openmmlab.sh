#!/usr/bin/env bash
# Installs the OpenMMLab 3.x stack (mmcv 2.1.0 with CPU ops, mmengine, mmdet 3.3.0, mmsegmentation 1.2.2)
# into the project's virtual environment.
#
# mmcv 2.1.0 publishes no wheel for current torch, and its setup.py asks for C++14/17 while torch's headers
# need C++20. The sdist is therefore built once, with `-std=c++20`, against the venv's torch, and the wheel is
# cached outside the repository keyed by the torch version (the extension links against torch's C++ ABI).
# Later runs install from the cache. Nothing inside an installed package is patched.
#
# Environment: PYTHON (default .venv/bin/python), ZOO_WHEEL_CACHE (default ~/.cache/zoo/wheels),
# MAX_JOBS (compile jobs, default 1).
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
MMCV_VERSION=2.1.0
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
CONSTRAINTS=$(cd "$(dirname "$0")/.." && pwd)/constraints.txt

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
cache_dir=${ZOO_WHEEL_CACHE:-$HOME/.cache/zoo/wheels}/torch-$torch_version
mkdir -p "$cache_dir"

find_wheel() { find "$cache_dir" -maxdepth 1 -name "mmcv-$MMCV_VERSION-*.whl" | head -n 1; }

build_mmcv_wheel() {
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "openmmlab: building mmcv $MMCV_VERSION against torch $torch_version (CPU ops; 25-60 min)"
    "$PYTHON" -m pip install --quiet "setuptools<81" wheel ninja -c "$CONSTRAINTS"
    # The sdist from the package index; its setup.py imports torch, hence no build isolation.
    "$PYTHON" -m pip download --quiet --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$work"
    echo "$MMCV_SHA256  $work/mmcv-$MMCV_VERSION.tar.gz" | sha256sum --check --quiet
    tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
    local src="$work/mmcv-$MMCV_VERSION"
    sed -i -e 's/-std=c++1[47]/-std=c++20/g' -e 's#/std:c++1[47]#/std:c++20#g' "$src/setup.py"
    if grep -q -e '-std=c++1[47]' -e '/std:c++1[47]' "$src/setup.py"; then
        echo "openmmlab: setup.py still asks for C++14/17 after patching" >&2
        exit 1
    fi
    # 63 of the 77 sources include pytorch_cpp_helper.hpp (torch/extension.h) first: precompiled with the
    # extension's own flags, it spares GCC parsing torch's headers for each of them (10x less CPU per file).
    nice -n 19 "$PYTHON" - "$src/mmcv/ops/csrc/common" <<'PY'
import subprocess, sys, sysconfig
from torch.utils.cpp_extension import include_paths
common = sys.argv[1]
flags = [*sysconfig.get_config_var("CFLAGS").split(), "-fPIC", f"-I{common}", *(f"-I{p}" for p in include_paths()),
         f"-I{sys.prefix}/include", f"-I{sysconfig.get_paths()['include']}",
         "-std=c++20", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_ext"]
header = f"{common}/pytorch_cpp_helper.hpp"
subprocess.run(["c++", *flags, "-x", "c++-header", header, "-o", f"{header}.gch"], check=True)
PY
    # CPU ops only: hide any GPU so that setup.py does not switch to the CUDA build.
    CUDA_VISIBLE_DEVICES="" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-1} \
        nice -n 19 "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src"
    mv "$work"/dist/mmcv-"$MMCV_VERSION"-*.whl "$cache_dir/"
}

wheel=$(find_wheel)
if [ -z "$wheel" ]; then
    start=$(date +%s)
    build_mmcv_wheel
    wheel=$(find_wheel)
    echo "openmmlab: built $(basename "$wheel") in $(( $(date +%s) - start )) s"
fi

start=$(date +%s)
"$PYTHON" -m pip install --quiet "$wheel" -c "$CONSTRAINTS" \
    mmengine mmdet mmsegmentation ftfy regex "setuptools<81"
echo "openmmlab: installed the stack from $(basename "$wheel") in $(( $(date +%s) - start )) s"
