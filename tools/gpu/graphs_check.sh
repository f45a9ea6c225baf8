#!/usr/bin/env bash
# GPU machine, one call: what the cuda_graphs documentation promises, on the tiny Qwen2 model (bf16,
# LoRA dropout 0.1, 256 huanhuan samples). Carry .device (debs + data/). Logs to $OUT.
#   1. a graphed run is reproducible: two runs give the same adapter bytes;
#   2. it resumes exactly: resumed from its step-6 checkpoint it ends with the same adapter bytes;
#   3. without dropout, graphs on/off and 2 ranks (MPI backend, ZeRO-2, one GPU) agree to bf16 rounding.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source tools/gpu/build.sh zlora > "$OUT/build.log" 2>&1
Z=build-gpu/bin/zlora
[ -x $Z ] || { grep -E "error" -A3 "$OUT/build.log" | head -30; exit 1; }
W=/tmp/zg; rm -rf $W; mkdir -p $W/data $W/logs
cp .device/data/huanhuan.json $W/data/ && echo '{"huanhuan": {"file_name": "huanhuan.json"}}' > $W/data/dataset_info.json
$Z init-model --config configs/models/tiny-qwen2.json --tokenizer .device/data --output $W/model > /dev/null 2>&1
$Z prepare --dataset huanhuan --dataset_dir $W/data --template qwen --tokenizer $W/model --cutoff_len 256 \
   --max_samples 256 --output $W/tokens.h5 > /dev/null 2>&1
COMMON="--model_name_or_path $W/model --tokenized_path $W/tokens.h5 --template qwen --max_steps 12 --bf16 \
  --device cuda --learning_rate 2e-3 --lora_rank 8 --lora_target all --logging_steps 6 --save_steps 6 --seed 7 \
  --lr_scheduler_type cosine --warmup_steps 2 --gradient_accumulation_steps 2"
run() { local name=$1; shift; "$@" --output_dir $W/$name > "$W/logs/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(grep -o 'train_loss [0-9.]*' "$W/logs/$name.log") $(grep -o 'cuda_graphs: [^(]*' "$W/logs/$name.log" | tail -1)"
  [ $rc = 0 ] || tail -5 "$W/logs/$name.log"; }
same() { cmp -s "$W/$1/adapter_model.safetensors" "$W/$2/adapter_model.safetensors" && echo "$1 == $2: identical bytes" || echo "$1 vs $2: DIFFERENT"; }
echo "== 1. reproducible (dropout 0.1)"
run a $Z train $COMMON --lora_dropout 0.1 --per_device_train_batch_size 8
run b $Z train $COMMON --lora_dropout 0.1 --per_device_train_batch_size 8
same a b
echo "== 2. resume from checkpoint-6"
mkdir -p $W/r && cp -r $W/a/checkpoint-6 $W/r/ && cp $W/a/zlora_run.json $W/r/
ls $W/a
run r $Z train $COMMON --lora_dropout 0.1 --per_device_train_batch_size 8 --resume_from_checkpoint $W/r/checkpoint-6
same a r
echo "== 3. no dropout: graphs on/off, 2 ranks on one GPU (MPI backend, ZeRO-2)"
run g1 $Z train $COMMON --per_device_train_batch_size 8
run g0 $Z train $COMMON --per_device_train_batch_size 8 --cuda_graphs false
run g2 mpirun -np 2 --oversubscribe --bind-to none $Z train $COMMON --per_device_train_batch_size 4 --comm mpi --zero_stage 2
python3 tools/gpu/compare_adapters.py $W/g1 $W/g0 $W/g2
cp $W/logs/*.log "$OUT/"
