#!/usr/bin/env bash
# Configures and builds zlora into build/ (or $ZLORA_BUILD_DIR) with Ninja and ccache.
# Extra arguments are passed to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ZLORA_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja "$@" > "$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
jobs=${ZLORA_JOBS:-$(nproc)}
ninja -C "$build" -j"$jobs"
