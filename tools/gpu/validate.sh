#!/usr/bin/env bash
# GPU machine, one call: build, then the checks of issues 5-8 that need a GPU and transformers/peft.
# Carry .device (debs + data/huanhuan.json + data/tokenizer.json). Writes logs and results to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source tools/gpu/build.sh zlora test_model > "$OUT/build.log" 2>&1  # sourced: keeps LD_LIBRARY_PATH
tail -3 "$OUT/build.log"
Z=build-gpu/bin/zlora
[ -x $Z ] || { echo "build failed"; grep -E "error|Error" -A3 "$OUT/build.log" build-gpu.cmake.log | head -40; exit 1; }
W=/tmp/zv; rm -rf $W; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== model: bf16 on the GPU vs transformers bf16 (CUDA goldens)"
(cd build-gpu && ./tests/model/test_model --gtest_filter='Bf16*' > "$OUT/model_bf16.log" 2>&1)
grep -iE "bf16|rel err|OK \]|FAILED|PASSED" "$OUT/model_bf16.log" | head -20

echo "== tiny model, 256 huanhuan samples: CPU fp32 reference vs GPU runs"
mkdir -p $W/data && cp .device/data/huanhuan.json $W/data/ && mkdir -p $W/logs && echo '{"huanhuan": {"file_name": "huanhuan.json"}}' > $W/data/dataset_info.json
$Z init-model --config configs/models/tiny-qwen2.json --tokenizer .device/data --output $W/model > /dev/null 2>&1
$Z prepare --dataset huanhuan --dataset_dir $W/data --template qwen --tokenizer $W/model --cutoff_len 256 \
   --max_samples 256 --output $W/tokens.h5 2>&1 | head -3
COMMON="--model_name_or_path $W/model --tokenized_path $W/tokens.h5 --template qwen --max_steps 10 \
  --per_device_train_batch_size 4 --gradient_accumulation_steps 2 --learning_rate 2e-3 --lora_rank 8 \
  --lora_target all --logging_steps 5 --save_steps 1000 --seed 7 --lr_scheduler_type cosine --warmup_steps 2"
run() { local name=$1; shift; SECONDS=0; "$@" --output_dir $W/$name > "$W/logs/train_$name.log" 2>&1; local rc=$?; echo "$name rc=$rc ${SECONDS}s $(grep -o 'train_loss [0-9.]*' "$W/logs/train_$name.log")"; [ $rc = 0 ] || grep -E "error|Error" "$W/logs/train_$name.log" | head -5; }
run cpu_fp32_z0 $Z train $COMMON --device cpu --zero_stage 0 --per_device_train_batch_size 8 --gradient_accumulation_steps 2
run gpu_fp32_nccl_z2 $Z train $COMMON --device cuda --comm nccl --zero_stage 2 --per_device_train_batch_size 8 --gradient_accumulation_steps 2
run gpu_bf16_nccl_z2 $Z train $COMMON --device cuda --comm nccl --zero_stage 2 --bf16 --per_device_train_batch_size 8 --gradient_accumulation_steps 2
run gpu_fp32_mpi2_z3 mpirun -np 2 --oversubscribe $Z train $COMMON --device cuda --comm mpi --zero_stage 3
run gpu_bf16_mpi2_z1off mpirun -np 2 --oversubscribe $Z train $COMMON --device cuda --comm mpi --zero_stage 1 --offload_optimizer cpu --bf16
python3 tools/gpu/compare_adapters.py $W/cpu_fp32_z0 $W/gpu_fp32_nccl_z2 $W/gpu_bf16_nccl_z2 $W/gpu_fp32_mpi2_z3 $W/gpu_bf16_mpi2_z1off 2>&1 | tee "$OUT/adapters.log"

echo "== export + transformers/peft"
$Z export --model_name_or_path $W/model --adapter_name_or_path $W/gpu_bf16_nccl_z2 --export_dir $W/merged --template qwen > "$OUT/export.log" 2>&1; echo "export rc=$?"
python3 - <<'PY'
import json
c = json.load(open("configs/models/tiny-qwen2.json")); c["initializer_range"] = 1.0
json.dump(c, open("/tmp/zv/wide.json", "w"))
PY
$Z init-model --config $W/wide.json --tokenizer .device/data --output $W/wide > /dev/null 2>&1
$Z generate --model_name_or_path $W/wide --template qwen --do_sample false --max_new_tokens 20 --device cuda \
   --prompt "你好，你是谁？" > $W/gen.txt 2> "$OUT/generate.log"; echo "generate rc=$?"
python3 tools/gpu/check_hf.py $W/model $W/gpu_bf16_nccl_z2 $W/merged $W/wide $W/gen.txt "你好，你是谁？" 2>&1 | grep -v Warning | tee "$OUT/hf.log"

echo "== tokenizer throughput: HF tokenizers on this machine (zlora's bench needs its test build)"
python3 benchmarks/tokenizer/bench_hf_tokenizers.py .device/data/tokenizer.json .device/data/huanhuan.json 2>&1 | tail -2 | tee "$OUT/tok_hf.log"
echo "== done"
