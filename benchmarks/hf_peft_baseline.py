#!/usr/bin/env python3
"""The transformers + PEFT baseline of the seed experiment, measured on the same samples as zlora.

Input samples come from `zlora info STORE.h5 --samples A:B --json` (one {"input_ids", "labels"} per
line), so both systems train on identical tokens. The run mirrors LLaMA-Factory's defaults: HF Trainer,
right padding to a multiple of 8 with label -100, LoRA on the given modules (fp32 adapters, bf16 base),
AdamW (torch), cosine schedule with warmup, gradient clipping 1.0. Throughput counts non-padding tokens
over the timed steps (after --skip warm-up steps).

    python3 benchmarks/hf_peft_baseline.py --model DIR --samples s.jsonl --steps 20 --out benchmarks/results/x.json
"""
import argparse
import json
import math
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

import bench_common


class Samples(torch.utils.data.Dataset):
    def __init__(self, path):
        with open(path) as f:
            self.rows = [json.loads(line) for line in f if line.strip()]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def collate(batch, pad_id):
    n = max(len(b["input_ids"]) for b in batch)
    n = (n + 7) // 8 * 8
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for j, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[j, :k] = torch.tensor(b["input_ids"])
        labels[j, :k] = torch.tensor(b["labels"])
        mask[j, :k] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Timer(TrainerCallback):
    def __init__(self, skip):
        self.skip, self.t0, self.tokens, self.samples, self.steps, self.losses = skip, None, 0, 0, 0, []
        self.pending_tokens = self.pending_samples = 0

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.skip:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=3, help="warm-up steps not timed")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--lora_rank", type=int, default=8)
    ap.add_argument("--lora_alpha", type=float, default=32)
    ap.add_argument("--lora_dropout", type=float, default=0.1)
    ap.add_argument("--lora_target", default="q_proj,v_proj,k_proj,gate_proj,up_proj,o_proj,down_proj")
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", default="transformers+peft")
    ap.add_argument("--model-label", default=None, help="the model column (default: the config's name or the path)")
    args = ap.parse_args()

    cfg = AutoConfig.from_pretrained(args.model).to_dict()
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, device_map={"": 0},
                                                 attn_implementation="sdpa")
    targets = args.lora_target.split(",")
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=args.lora_rank, lora_alpha=args.lora_alpha,
                                             lora_dropout=args.lora_dropout, target_modules=targets))
    for p in model.parameters():  # LLaMA-Factory trains the adapters in fp32
        if p.requires_grad:
            p.data = p.data.float()
    data = Samples(args.samples)
    pad = cfg.get("eos_token_id") or 0
    pad = pad[0] if isinstance(pad, list) else pad
    timer = Timer(args.skip)
    targs = TrainingArguments(output_dir="/tmp/hf_baseline", per_device_train_batch_size=args.batch,
                              gradient_accumulation_steps=args.accum, learning_rate=5e-5,
                              lr_scheduler_type="cosine", warmup_steps=10, max_steps=args.steps, bf16=True,
                              logging_steps=1, save_strategy="no", report_to=[], max_grad_norm=1.0,
                              gradient_checkpointing=args.gradient_checkpointing, dataloader_drop_last=False,
                              remove_unused_columns=False, seed=42)
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=lambda b: collate(b, pad),
                      callbacks=[timer])
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - timer.t0
    timed_steps = args.steps - args.skip
    # The Trainer's sampler order is seeded; count the timed steps' real tokens from the same order.
    order = list(trainer.get_train_dataloader().sampler)
    g = args.batch * args.accum
    timed = [data[i] for i in order[args.skip * g:args.steps * g]] if len(order) >= args.steps * g else None
    if timed is None:
        raise SystemExit(f"need at least {args.steps * g} samples, have {len(order)}")
    tokens = sum(len(s["input_ids"]) for s in timed)
    mean_len = tokens / len(timed)
    gpu = torch.cuda.get_device_name(0)
    peak = bench_common.gpu_peak_tflops(gpu)
    fpt = bench_common.lora_flops_per_token(cfg, args.lora_rank, targets, mean_len)
    tps = tokens / elapsed
    row = {"system": args.label, "gpu": gpu, "date": bench_common.today(), "world_size": 1, "zero_stage": None,
           "offload": False, "model": args.model_label or cfg.get("_name_or_path") or args.model, "steps": timed_steps,
           "time_s": round(elapsed, 3), "final_loss": timer.losses[-1] if timer.losses else None,
           "samples_per_s": round(len(timed) / elapsed, 3), "tokens_per_s": round(tps, 1),
           "mfu": round(tps * fpt / (peak * 1e12), 4) if peak else None,
           "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
           "gradient_checkpointing": args.gradient_checkpointing, "batch": args.batch, "accum": args.accum}
    bench_common.append_rows(args.out, [row])
    print(json.dumps(row))


if __name__ == "__main__":
    main()
