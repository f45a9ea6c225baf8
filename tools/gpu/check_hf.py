#!/usr/bin/env python3
"""transformers + peft side of the GPU checks: the trained adapter loads in peft; the exported merged
directory loads in transformers; merged logits equal base + adapter (bf16 tolerance); zlora's greedy
generation equals transformers' greedy tokens."""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, adapter_dir, merged_dir, wide_dir, gen_file, prompt = sys.argv[1:7]
dev = "cuda"
tok = AutoTokenizer.from_pretrained(merged_dir)
system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
text = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(dev)
res = {}
for dtype in (torch.float32, torch.bfloat16):
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=dtype).to(dev)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, torch_dtype=dtype).to(dev).eval()
    with torch.no_grad():
        a = peft_model(ids).logits.float()
        b = merged(ids).logits.float()
        base_only = peft_model.get_base_model()
    name = str(dtype).split(".")[-1]
    res[f"merged_vs_peft_logits_rel_err_{name}"] = float((a - b).norm() / b.norm())
    if dtype == torch.float32:
        # Greedy decoding on a random model with wide weights (diverse tokens), fp32 on both sides.
        wide = AutoModelForCausalLM.from_pretrained(wide_dir, torch_dtype=dtype).to(dev).eval()
        with torch.no_grad():
            out = wide.generate(ids, do_sample=False, max_new_tokens=20, eos_token_id=[151645, 151643])
        hf_text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        zl_text = open(gen_file, encoding="utf-8").read()
        if zl_text.endswith("\n") and not hf_text.endswith("\n"):
            zl_text = zl_text[:-1]  # zlora ends the answer with a newline on stdout
        res["greedy_hf_text"] = hf_text
        res["greedy_zlora_text"] = zl_text
        res["greedy_equal"] = hf_text == zl_text
n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_" in n)
res["peft_loaded_lora_tensors"] = n_lora
print(json.dumps(res, ensure_ascii=False, indent=1))
