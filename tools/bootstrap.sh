#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages zlora builds against, when missing. Safe to re-run: it asks apt
# only for what `dpkg -s` does not already report as installed.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev                          # LibTorch (Debian 12: 1.13.1, CPU)
  libopenmpi-dev openmpi-bin            # MPI
  libhdf5-dev                           # HDF5 token store
  libyaml-cpp-dev nlohmann-json3-dev    # YAML configs, JSON
  libboost-program-options-dev          # CLI
  libpcre2-dev libicu-dev               # Unicode regex and NFC for the BPE tokenizer
  libspdlog-dev libfmt-dev              # logging
  libgtest-dev libgmock-dev             # tests
  clang libclang-rt-dev                 # libFuzzer + sanitizers (tools/fuzz.sh)
  libpng-dev zlib1g-dev                 # loss plot PNG
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Node.js runs the reference tokenizer (@lenml/tokenizers) in tests; any node >= 18 will do.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "zlora: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
