#!/usr/bin/env python3
"""Writes a Hugging Face model directory with random weights for any config.json (7B shapes included),
so benchmarks need no downloads: config.json, sharded *.safetensors + model.safetensors.index.json,
generation_config.json, and the tokenizer files when --tokenizer_dir is given.

Runs where torch + transformers + safetensors are installed (the GPU machine):
    python3 benchmarks/make_random_model.py benchmarks/models/qwen2.5-7b.json OUT_DIR [--tokenizer_dir DIR]
Weights are drawn on the GPU when one is present (normal(0, initializer_range), norms = 1), in the
config's torch_dtype.
"""
import argparse
import json
import os
import shutil

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="config.json of the architecture (e.g. benchmarks/models/qwen2.5-7b.json)")
    ap.add_argument("out", help="directory to write")
    ap.add_argument("--tokenizer_dir", help="copy tokenizer.json / tokenizer_config.json from here")
    ap.add_argument("--shard_size", default="5GB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with open(args.config) as f:
        cfg_dict = json.load(f)
    config = AutoConfig.for_model(**cfg_dict)
    dtype = getattr(torch, str(cfg_dict.get("torch_dtype", "bfloat16")).replace("torch.", ""))
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, max_shard_size=args.shard_size, safe_serialization=True)
    if args.tokenizer_dir:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            src = os.path.join(args.tokenizer_dir, name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(args.out, name))
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": args.out, "params": n, "dtype": str(dtype), "device": device}))


if __name__ == "__main__":
    main()
