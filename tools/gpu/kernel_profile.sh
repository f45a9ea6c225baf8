#!/usr/bin/env bash
# GPU machine, one call: where a training step's GPU time goes, kernel by kernel. A Qwen2.5-7B-wide model
# cut to a few layers (same kernels per layer, fast to write), the seed's hyperparameters:
#   1. graphed steps at ZLORA_PROFILE_LAYERS_A and _B layers: per-layer and fixed cost of a replayed step;
#   2. Nsight Compute on eager steps (ncu times each kernel alone): tools/gpu/ncu_summary.py groups one
#      step's kernels by name and shape.
# Carry .device (debs + data/). Writes $OUT/kernels.txt (the summary) and $OUT/ncu.csv.gz.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source tools/gpu/build.sh zlora > "$OUT/build.log" 2>&1
Z=build-gpu/bin/zlora
[ -x $Z ] || { grep -E "error" -A3 "$OUT/build.log" | head -30; exit 1; }
W=/tmp/zp; rm -rf $W; mkdir -p $W/data
cp .device/data/huanhuan.json $W/data/ && echo '{"huanhuan": {"file_name": "huanhuan.json"}}' > $W/data/dataset_info.json
# The seed's hyperparameters, from the one place that states them (benchmarks/run_matrix.py).
mapfile -t SEED < <(cd benchmarks && python3 -c "from run_matrix import SEED_ARGS; print(chr(10).join(SEED_ARGS))")
[ ${#SEED[@]} -gt 0 ] || { echo "kernel_profile: could not read SEED_ARGS from benchmarks/run_matrix.py"; exit 1; }
model() {  # model LAYERS -> $W/m$LAYERS (+ its token store)
  python3 -c "import json,sys; c=json.load(open('benchmarks/models/qwen2.5-7b.json')); c['num_hidden_layers']=int(sys.argv[1]); json.dump(c, open(sys.argv[2],'w'))" $1 $W/c$1.json
  $Z init-model --config $W/c$1.json --tokenizer .device/data --output $W/m$1 --dtype bf16 > /dev/null 2>&1
  [ -f $W/h.h5 ] || $Z prepare --dataset huanhuan --dataset_dir $W/data --template qwen --tokenizer $W/m$1 --cutoff_len 1024 --output $W/h.h5 > /dev/null 2>&1
}
A=${ZLORA_PROFILE_LAYERS_A:-2}; B=${ZLORA_PROFILE_LAYERS_B:-8}
echo "== graphed steps (steps 31-60, ms/step from trainer_log.jsonl)"
for L in $A $B; do
  model $L
  $Z train --model_name_or_path $W/m$L --tokenized_path $W/h.h5 "${SEED[@]}" --max_steps 60 --profile_steps 10 \
     --output_dir $W/g$L > $W/g$L.log 2>&1 || tail -5 $W/g$L.log
  python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print(sys.argv[2], 'layers:', round(p['step_ms'],2), 'ms/step', {k: round(v,2) for k,v in p['phases_ms'].items()})" $W/g$L/profile.json $L
done
echo "== ncu, eager steps, $A layers"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu)
timeout 240 $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --log-file $W/ncu.csv $Z train --model_name_or_path $W/m$A --tokenized_path $W/h.h5 "${SEED[@]}" --max_steps 4 \
  --cuda_graphs false --output_dir $W/n > $W/ncu_run.log 2>&1 || tail -5 $W/ncu_run.log
python3 tools/gpu/ncu_summary.py $W/ncu.csv $A > "$OUT/kernels.txt"
sed -n '1,/^launch order/p' "$OUT/kernels.txt"  # the tables; the file also lists the step's kernels in order
gzip -c $W/ncu.csv > "$OUT/ncu.csv.gz"
