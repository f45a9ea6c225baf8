#!/usr/bin/env python3
"""Relative error ||a-b||/||b|| of every LoRA tensor of several PEFT adapters against the first one."""
import sys

from safetensors.torch import load_file


def load(d):
    return load_file(f"{d}/adapter_model.safetensors")


ref_dir = sys.argv[1]
ref = load(ref_dir)
for d in sys.argv[2:]:
    try:
        other = load(d)
    except Exception as e:  # a run that failed has no adapter
        print(f"{d}: no adapter ({e})")
        continue
    worst, worst_name, delta_ref = 0.0, "", 0.0
    num = den = 0.0
    for k, v in ref.items():
        a = other[k].double()
        b = v.double()
        num += float((a - b).norm() ** 2)
        den += float(b.norm() ** 2)
        if "lora_B" in k:  # B starts at 0: its error is the training-trajectory error
            e = float((a - b).norm() / max(b.norm(), 1e-30))
            if e > worst:
                worst, worst_name = e, k
    print(f"{d.split('/')[-1]}: all tensors rel err {(num / den) ** 0.5:.3e}; worst lora_B {worst:.3e} ({worst_name})")
