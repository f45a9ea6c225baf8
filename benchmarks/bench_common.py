"""Shared by the benchmark scripts: the result-row schema, MFU convention, and the results files.

MFU convention (the same in zlora's own logs, docs/training.md): model FLOPs per trained token =
4 * N_frozen_linear (forward GEMM + input-gradient GEMM; frozen weights get no weight gradient)
+ 6 * N_lora + attention. Attention per token and layer, for a sample of length s under the causal mask
(on average s/2 keys): QK^T and AV forward 2 * 2 * (s/2) * d_attn = 2 * s * d_attn, backward twice that,
so 6 * s * d_attn (d_attn = heads * head_dim). Divided by the GPU's dense bf16 peak. Embedding lookups
are not FLOPs; the lm_head is a frozen linear.
"""
import datetime
import json
import os

# Dense bf16 tensor-core peaks (TFLOP/s), as llm.c's mfu.h table.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "H800": 989.0, "A800": 312.0, "L40S": 362.0}

FIELDS = ["system", "gpu", "date", "world_size", "zero_stage", "offload", "model", "steps", "time_s",
          "final_loss", "samples_per_s", "tokens_per_s", "mfu", "peak_mem_gib"]


def gpu_peak_tflops(gpu_name):
    for key, tf in GPU_PEAK_TFLOPS.items():
        if key in gpu_name:
            return tf
    return None


def lora_flops_per_token(cfg, lora_rank, targets, mean_seq_len):
    """Model FLOPs per token for LoRA SFT of a decoder described by an HF config dict."""
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    d = cfg.get("head_dim") or h // heads
    shapes = {"q_proj": (h, heads * d), "k_proj": (h, kv * d), "v_proj": (h, kv * d), "o_proj": (heads * d, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    frozen = L * sum(a * b for a, b in shapes.values()) + h * cfg["vocab_size"]
    lora = L * sum(lora_rank * (a + b) for name, (a, b) in shapes.items() if name in targets)
    attention = 6 * mean_seq_len * heads * d * L
    return 4 * frozen + 6 * lora + attention


def append_rows(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    existing = []
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
    for r in rows:
        missing = [k for k in FIELDS if k not in r]
        if missing:
            raise ValueError(f"result row lacks {missing}")
    with open(path + ".tmp", "w") as f:
        json.dump(existing + rows, f, indent=1)
    os.replace(path + ".tmp", path)


def today():
    return datetime.date.today().isoformat()
