#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan into build-fuzz/ and runs each for a bounded time
# on its seed corpus (real files: configs/, ../shared/seed/, ...) plus the committed regression inputs.
# A crash leaves its input under build-fuzz/crashes/<target>/; copy it into
# tests/fuzz/regressions/<target>/ with the fix, so the replay test keeps it fixed.
#   tools/fuzz.sh [seconds-per-target=20] [target ...]
# With ZLORA_FUZZ_RUNS=N each target instead runs exactly N inputs from a fixed seed on a fresh corpus:
# the same inputs on every machine, so the bounded run in the test suite is repeatable (a red result
# is a real, reproducible bug, never a lucky draw).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-20}
shift || true
build=${ZLORA_FUZZ_BUILD_DIR:-$root/build-fuzz}
cmake -S "$root" -B "$build" -G Ninja -DZLORA_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ > "$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
ninja -C "$build" zlora_fuzz_targets
summary=()
status=0
while IFS='=' read -r target corpus; do
  [ -n "$target" ] || continue
  if (($#)) && [[ " $* " != *" $target "* ]]; then continue; fi
  work="$build/corpus/$target"
  [ -z "${ZLORA_FUZZ_RUNS:-}" ] || rm -rf "$work"
  mkdir -p "$work" "$build/crashes/$target"
  # Seed the working corpus from the real files and the regressions (copies: libFuzzer adds to it).
  IFS='|' read -ra seeds <<< "$corpus"
  for s in "${seeds[@]}" "$root/tests/fuzz/regressions/$target"; do
    if [ -d "$s" ]; then find "$s" -type f -exec cp -n {} "$work/" \; ; elif [ -f "$s" ]; then cp -n "$s" "$work/"; fi
  done
  log="$build/$target.log"
  if [ -n "${ZLORA_FUZZ_RUNS:-}" ]; then bound=(-runs="$ZLORA_FUZZ_RUNS" -seed=20261125); else bound=(-max_total_time="$seconds"); fi
  if ! "$build/tests/fuzz/$target" "$work" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 \
       -artifact_prefix="$build/crashes/$target/" -print_final_stats=1 > "$log" 2>&1; then
    status=1
    echo "zlora fuzz: $target FAILED (inputs in $build/crashes/$target/):"
    tail -40 "$log"
  fi
  runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  summary+=("$target: ${runs:-?} executions, corpus $(find "$work" -type f | wc -l) files")
done < "$build/fuzz_corpora.txt"
printf '%s\n' "${summary[@]}"
exit $status
