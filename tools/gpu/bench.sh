#!/usr/bin/env bash
# GPU machine, one call: the tokenizer benchmark (zlora and HF tokenizers, same machine) and the seed's
# LoRA experiments on a Qwen2.5-7B-shaped random model (benchmarks/run_matrix.py, ZLORA_MATRIX picks
# the rows) beside transformers + PEFT on the same samples. Carry .device (tools/gpu/prepare_carry.sh
# fills it: debs + data/). Rows go to $OUT/results.json (benchmarks/results schema).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# ZLORA_BENCH_PARTS (default "tests tokenizer zlora hf"): which parts to run, for quick iterations.
# tests: the model's GPU numerics first (test_kernels; test_model: CUDA goldens, the fused dropout's
# bit-mask replay, the fused LoRA backward kernels), so that a throughput row never comes from code that
# computes something else: a failing test ends the call there (exit 1), before any row is written.
PARTS=${ZLORA_BENCH_PARTS:-tests tokenizer zlora hf}
has() { [[ " $PARTS " == *" $1 "* ]]; }
source tools/gpu/build.sh zlora bench_tokenizer $(has tests && echo test_model test_kernels) > "$OUT/build.log" 2>&1
Z=build-gpu/bin/zlora
for b in $Z $(has tests && echo build-gpu/tests/model/test_model build-gpu/tests/model/test_kernels); do
  [ -x $b ] || { echo "build failed: no $b"; grep -E "error" -A3 "$OUT/build.log" | head -40; exit 1; }
done
if has tests; then
echo "== GPU numerics (test_kernels, test_model)"
# Every test of both binaries, the file round-trip tests included (their destructor crash of 2026-11-25
# no longer reproduces: docs/reliability.md, "The CUDA build's test suite").
failed=0
for t in model/test_kernels model/test_model; do
  (cd build-gpu && ./tests/$t > "$OUT/$(basename $t).log" 2>&1); rc=$?; echo "$(basename $t) rc=$rc"
  [ $rc -eq 0 ] || failed=1
  grep -E "FAILED|PASSED|\[kernels\]|\[golden\]|Failure|Expected|Which is|actual" "$OUT/$(basename $t).log" | head -60
done
[ $failed -eq 0 ] || { echo "GPU numerics failed: no throughput rows"; exit 1; }
fi
W=/tmp/zb; rm -rf $W; mkdir -p $W/data
if has tokenizer; then
echo "== tokenizer (huanhuan text)"
for t in 1 16; do
  build-gpu/tests/data/bench_tokenizer .device/data .device/data/huanhuan.json $t 3 2>/dev/null | tail -1 | tee -a "$OUT/tokenizer.jsonl"
done
python3 benchmarks/tokenizer/bench_hf_tokenizers.py .device/data/tokenizer.json .device/data/huanhuan.json 3 2>/dev/null | tail -1 | tee -a "$OUT/tokenizer.jsonl"
fi
has zlora || has hf || exit 0
echo "== 7B-shaped random model"
SECONDS=0
$Z init-model --config benchmarks/models/qwen2.5-7b.json --tokenizer .device/data --output $W/q7 --dtype bf16 2>&1 | tail -1
echo "init-model ${SECONDS}s"
cp .device/data/huanhuan.json $W/data/ && echo '{"huanhuan": {"file_name": "huanhuan.json"}}' > $W/data/dataset_info.json
$Z prepare --dataset huanhuan --dataset_dir $W/data --template qwen --tokenizer $W/q7 --cutoff_len 1024 --output $W/h.h5 2>&1 | head -3
if has zlora; then
# The seed's matrix (ZLORA_MATRIX: experiments of benchmarks/run_matrix.py; default: the one-GPU row).
(cd benchmarks && timeout ${ZLORA_MATRIX_TIMEOUT:-420} python3 run_matrix.py --zlora ../$Z --model $W/q7 --store $W/h.h5 --steps ${ZLORA_BENCH_STEPS:-60} \
   --timed-from ${ZLORA_BENCH_TIMED_FROM:-31} --only "${ZLORA_MATRIX:-single}" --profile-only "${ZLORA_PROFILE_ONLY:-}" --model-label "Qwen2.5-7B shape (random weights)" \
   --work $W/matrix --out "$OUT/results.json" 2>&1 | tee "$OUT/matrix.log" | grep -v "^\[.*info")
cp $W/matrix/*.log "$OUT/" 2>/dev/null
fi
has hf || exit 0
$Z info $W/h.h5 --samples 0:800 --json > $W/samples.jsonl
SECONDS=0
(cd benchmarks && timeout ${ZLORA_HF_TIMEOUT:-240} python3 hf_peft_baseline.py --model $W/q7 --samples $W/samples.jsonl --steps 13 --skip 3 \
   --model-label "Qwen2.5-7B shape (random weights)" \
   --out "$OUT/results.json" > "$OUT/hf.log" 2>&1); echo "hf rc=$? ${SECONDS}s"
tail -2 "$OUT/hf.log"
