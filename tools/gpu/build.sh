#!/usr/bin/env bash
# GPU machine: unpack the carried Debian packages (.device/debs: Boost.ProgramOptions, PCRE2, ICU) into
# /opt/zdeps, configure against PyTorch's CUDA LibTorch + the NCCL wheel, and build the given targets
# (default: everything) into build-gpu/. Sourced, it leaves the environment exported.
set -eo pipefail
for f in .device/debs/*.deb; do dpkg -x "$f" /opt/zdeps; done
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
NCCL_ROOT=$(python3 -c 'import nvidia.nccl as n; print(n.__path__[0])')
export CMAKE_PREFIX_PATH="$TORCH_PREFIX:/opt/zdeps/usr"
export LD_LIBRARY_PATH="/opt/zdeps/usr/lib/x86_64-linux-gnu:$NCCL_ROOT/lib:${LD_LIBRARY_PATH:-}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SECONDS=0
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBoost_DIR=/opt/zdeps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0 -DICU_ROOT=/opt/zdeps/usr \
  -DNCCL_INCLUDE_DIR="$NCCL_ROOT/include" -DNCCL_LIBRARY="$NCCL_ROOT/lib/libnccl.so.2" > build-gpu.cmake.log 2>&1 \
  || { tail -40 build-gpu.cmake.log; return 1 2>/dev/null || exit 1; }
grep "zlora: CUDA" build-gpu.cmake.log
{ ninja -C build-gpu -j"$(nproc)" "$@" 2>&1 | grep -E "error|FAILED" -A3 | head -60; } || true
echo "built in ${SECONDS}s"
set +eo pipefail
