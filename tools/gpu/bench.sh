#!/usr/bin/env bash
# GPU machine, one call: the tokenizer benchmark (zlora and HF tokenizers, same machine) and the seed's
# single-GPU LoRA experiment on a Qwen2.5-7B-shaped random model: zlora vs transformers + PEFT on the
# same samples. Carry .device (debs + data/). Rows go to $OUT/results.json (benchmarks/results schema).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source tools/gpu/build.sh zlora bench_tokenizer > "$OUT/build.log" 2>&1
Z=build-gpu/bin/zlora
[ -x $Z ] || { grep -E "error" -A3 "$OUT/build.log" | head -30; exit 1; }
W=/tmp/zb; rm -rf $W; mkdir -p $W/data
echo "== tokenizer (huanhuan text)"
build-gpu/tests/data/bench_tokenizer .device/data .device/data/huanhuan.json 16 3 2>/dev/null | tail -1 | tee "$OUT/tokenizer.jsonl"
python3 benchmarks/tokenizer/bench_hf_tokenizers.py .device/data/tokenizer.json .device/data/huanhuan.json 3 2>/dev/null | tail -1 | tee -a "$OUT/tokenizer.jsonl"
echo "== 7B-shaped random model"
SECONDS=0
$Z init-model --config benchmarks/models/qwen2.5-7b.json --tokenizer .device/data --output $W/q7 --dtype bf16 2>&1 | tail -1
echo "init-model ${SECONDS}s"
cp .device/data/huanhuan.json $W/data/ && echo '{"huanhuan": {"file_name": "huanhuan.json"}}' > $W/data/dataset_info.json
$Z prepare --dataset huanhuan --dataset_dir $W/data --template qwen --tokenizer $W/q7 --cutoff_len 1024 --output $W/h.h5 2>&1 | head -3
ARGS="--model_name_or_path $W/q7 --tokenized_path $W/h.h5 --template qwen --bf16 --device cuda \
  --per_device_train_batch_size 4 --gradient_accumulation_steps 4 --lora_rank 8 --lora_alpha 32 --lora_dropout 0.1 \
  --lora_target q_proj,v_proj,k_proj,gate_proj,up_proj,o_proj,down_proj --learning_rate 5e-5 \
  --lr_scheduler_type cosine --warmup_steps 10 --max_grad_norm 1.0 --save_strategy no --logging_steps 5"
SECONDS=0
timeout 240 $Z train $ARGS --max_steps 25 --output_dir $W/z7 > "$OUT/zlora_train.log" 2>&1; echo "zlora rc=$? ${SECONDS}s"
grep -E "memory plan|step |done" "$OUT/zlora_train.log" | tail -8
cp $W/z7/trainer_log.jsonl "$OUT/zlora_trainer_log.jsonl" 2>/dev/null
$Z info $W/h.h5 --samples 0:800 --json > $W/samples.jsonl
SECONDS=0
(cd benchmarks && timeout 240 python3 hf_peft_baseline.py --model $W/q7 --samples $W/samples.jsonl --steps 13 --skip 3 \
   --out "$OUT/results.json" > "$OUT/hf.log" 2>&1); echo "hf rc=$? ${SECONDS}s"
tail -2 "$OUT/hf.log"
