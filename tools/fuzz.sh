#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan into build-fuzz/ and runs each for a bounded time
# on its seed corpus (real files: configs/, ../shared/seed/, ...) plus the committed regression inputs.
# A crash leaves its input under build-fuzz/crashes/<target>/; copy it into
# tests/fuzz/regressions/<target>/ with the fix, so the replay test keeps it fixed.
#   tools/fuzz.sh [seconds-per-target=20] [target ...]
# With ZLORA_FUZZ_RUNS=N each target instead runs exactly N inputs from a fixed seed on a fresh corpus:
# the same inputs on every machine, so the bounded run in the test suite is repeatable (a red result
# is a real, reproducible bug, never a lucky draw). A target whose inputs are slow runs fewer: its cap
# (RUNS in tests/fuzz/CMakeLists.txt, the third field of fuzz_corpora.txt) bounds N.
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
# Leaks inside third-party libraries that zlora cannot free (each one explained in the file).
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# A C library (libhdf5, PCRE2) asked by a hostile file for a huge malloc gets NULL, as glibc gives it, and
# reports an error; without this ASan aborts first. C++ `new` (all of zlora's allocations) still aborts.
asan="allocator_may_return_null=1"
# Memory errors inside libhdf5 itself on hostile files (documented in the file) are not zlora's; with
# ZLORA_FUZZ_HDF5_STRICT=1 they are reported too, e.g. to check a newer libhdf5.
[ -n "${ZLORA_FUZZ_HDF5_STRICT:-}" ] || asan+=":suppressions=$root/tests/fuzz/asan.supp"
export ASAN_OPTIONS="$asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
while IFS='=' read -r target corpus cap; do
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
  start=$SECONDS
  if [ -n "${ZLORA_FUZZ_RUNS:-}" ]; then
    runs=$ZLORA_FUZZ_RUNS
    if [ -n "${cap:-}" ] && ((cap < runs)); then runs=$cap; fi
    bound=(-runs="$runs" -seed=20261125)
  else
    bound=(-max_total_time="$seconds")
  fi
  if ! "$build/tests/fuzz/$target" "$work" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 \
       -artifact_prefix="$build/crashes/$target/" -print_final_stats=1 > "$log" 2>&1; then
    status=1
    echo "zlora fuzz: $target FAILED (inputs in $build/crashes/$target/):"
    tail -40 "$log"
  fi
  runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  summary+=("$target: ${runs:-?} executions, corpus $(find "$work" -type f | wc -l) files, $((SECONDS - start)) s")
done < "$build/fuzz_corpora.txt"
printf '%s\n' "${summary[@]}"
exit $status
