#!/usr/bin/env python3
"""Writes the model/LoRA goldens that tests/model/ checks zlora's decoder against.

Run on the GPU machine (transformers 5.x + peft 0.2x + safetensors + torch); the computation itself runs
on the CPU in float64 so the reference is closer to exact than the fp32 C++ under test:

    python3 tools/golden/model/make_goldens.py OUT_DIR

For each of two tiny random models it writes OUT_DIR/<name>/:
  config.json, model.safetensors     the base model as transformers saves it (fp32 weights)
  adapter_config.json,               a PEFT LoRA adapter as PEFT saves it (fp32), with B random so
  adapter_model.safetensors          that the LoRA path changes logits and A receives gradients
  reference.safetensors              inputs and reference outputs (see `refs` below)
  reference.json                     sample layout, scalar losses, optimizer settings, versions

  qwen2: q/k/v bias, untied lm_head, GQA (4 heads / 2 kv heads), LoRA r=4 on all 7 linear modules.
  llama: llama3 rope scaling (small original context so every frequency band is exercised), tied
         embeddings, head_dim given explicitly (16, not hidden/heads = 12), LoRA r=8 rsLoRA on
         q_proj,v_proj,down_proj.

Two batches per model: "unpacked" (one sample) and "packed" (three samples). The packed reference is
the samples run one by one through transformers and concatenated, which is exactly what packing with
positions restarting per sample and no cross-sample attention must equal.
"""
import copy
import json
import math
import os
import sys

import torch
import transformers
import peft
import safetensors
from safetensors.torch import save_file, load_file

VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 96, 48, 80, 2, 4, 2
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# AdamW settings of the 5-step trajectory (torch.optim.AdamW semantics, decoupled weight decay).
ADAM = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
STEPS = 5


def make_model(name):
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    if name == "qwen2":
        kw = dict(common, tie_word_embeddings=False, use_sliding_window=False)
        try:
            cfg = transformers.Qwen2Config(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **kw)
        except TypeError:
            cfg = transformers.Qwen2Config(rope_theta=1000000.0, **kw)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}
        kw = dict(common, head_dim=16, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
        try:  # transformers 5: rope_parameters carries rope_theta too
            cfg = transformers.LlamaConfig(rope_parameters=dict(rope, rope_theta=10000.0), **kw)
        except TypeError:
            cfg = transformers.LlamaConfig(rope_scaling=rope, rope_theta=10000.0, **kw)
        model = transformers.LlamaForCausalLM(cfg)
    return model


def expected_inv_freq(name, head_dim):
    """The rotary frequencies zlora computes (HF's formulas, fp32); checked against the model's buffer."""
    theta = 1000000.0 if name == "qwen2" else 10000.0
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if name == "llama":  # llama3: long wavelengths / factor, short kept, the band between interpolated
        factor, lo, hi, old = 8.0, 1.0, 4.0, 64
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def randomize(model, gen):
    """Weights large enough that every term matters (HF's init leaves biases at 0 and norms at 1)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif n.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in n:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:  # linear [out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def samples_for(gen, lengths, prompt_lens):
    out = []
    for L, P in zip(lengths, prompt_lens):
        ids = torch.randint(3, VOCAB, (L,), generator=gen)
        labels = ids.clone()
        labels[:P] = -100  # prompt tokens are masked from the loss (LLaMA-Factory's convention)
        out.append((ids, labels))
    return out


def lora_named(model):
    """LoRA parameters under PEFT's saved names (adapter name 'default' dropped), sorted."""
    res = {}
    for n, p in model.named_parameters():
        if "lora_" in n:
            res[n.replace(".default", "")] = p
    return dict(sorted(res.items()))


def run_batch(model, samples):
    """Per-sample forward, logits concatenated; returns logits [T, V], loss sum, target count, HF mean losses."""
    logits, total, count, hf_means = [], 0.0, 0, []
    for ids, labels in samples:
        out = model(input_ids=ids[None], labels=labels[None])
        lg = out.logits[0]
        shift_labels = labels[1:]
        s = torch.nn.functional.cross_entropy(lg[:-1].double(), shift_labels, ignore_index=-100, reduction="sum")
        n = int((shift_labels != -100).sum())
        assert abs(float(out.loss) * n - float(s)) < 1e-5 * max(1.0, float(s)), "HF loss disagrees with sum/count"
        logits.append(lg)
        total = total + s
        count += n
        hf_means.append(float(out.loss))
    return torch.cat(logits), total, count, hf_means


def main(out_dir):
    torch.set_grad_enabled(True)
    versions = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                    safetensors=safetensors.__version__)
    print(versions, flush=True)
    for mi, name in enumerate(["qwen2", "llama"]):
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        gen = torch.Generator().manual_seed(1234 + mi)
        torch.manual_seed(99 + mi)
        model = make_model(name).to(torch.float32)
        randomize(model, gen)
        model.save_pretrained(d)
        inv = model.model.rotary_emb.inv_freq.detach().float().clone()
        exp = expected_inv_freq(name, 12 if name == "qwen2" else 16)
        assert torch.allclose(inv, exp, rtol=1e-6, atol=0), (name, inv, exp)  # config took effect as intended
        base_ref = {"rope_inv_freq": inv}

        if name == "qwen2":
            lcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0,
                                   target_modules=ALL_LINEAR)
        else:
            lcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, use_rslora=True,
                                   target_modules=["q_proj", "v_proj", "down_proj"])
        pmodel = peft.get_peft_model(model, lcfg)
        init = {k: v.detach().clone() for k, v in lora_named(pmodel).items()}
        with torch.no_grad():  # a "trained" adapter: B random so the LoRA path matters and A gets gradients
            for k, p in lora_named(pmodel).items():
                if "lora_B" in k:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        pmodel.save_pretrained(d)
        adapter = {k: v.detach().clone() for k, v in lora_named(pmodel).items()}
        # Check what PEFT wrote is what we hold (names and values).
        saved = load_file(os.path.join(d, "adapter_model.safetensors"))
        assert sorted(saved) == sorted(adapter), (sorted(saved), sorted(adapter))

        pmodel = pmodel.to(torch.float64)
        batches = {
            "unpacked": samples_for(gen, [16], [5]),
            "packed": samples_for(gen, [9, 14, 6], [3, 6, 2]),
        }
        refs = dict(base_ref)
        meta = dict(versions=versions, model=name, lora=dict(r=lcfg.r, alpha=lcfg.lora_alpha,
                    use_rslora=bool(lcfg.use_rslora), targets=sorted(lcfg.target_modules)),
                    adam=dict(ADAM, betas=list(ADAM["betas"])), steps=STEPS, batches={})
        for bname, samples in batches.items():
            refs[f"{bname}.input_ids"] = torch.cat([s[0] for s in samples]).to(torch.int64)
            refs[f"{bname}.labels"] = torch.cat([s[1] for s in samples]).to(torch.int64)
            bm = dict(lengths=[len(s[0]) for s in samples])
            # Base model only (adapter disabled).
            with torch.no_grad(), pmodel.disable_adapter():
                lg, s, n, _ = run_batch(pmodel, samples)
            refs[f"{bname}.logits_base"] = lg.float()
            bm["loss_sum_base"] = float(s)
            # With the adapter: logits, loss, gradients of the mean loss over the batch's targets.
            pmodel.zero_grad(set_to_none=True)
            lg, s, n, means = run_batch(pmodel, samples)
            (s / n).backward()
            refs[f"{bname}.logits_lora"] = lg.detach().float()
            bm.update(loss_sum=float(s), num_targets=n, hf_mean_losses=means)
            for k, p in lora_named(pmodel).items():
                refs[f"{bname}.grad.{k}"] = p.grad.detach().float()
            # 5 AdamW steps from PEFT's init (A kaiming-uniform as stored, B zeros), on this batch each step.
            with torch.no_grad():
                for k, p in lora_named(pmodel).items():
                    p.copy_(init[k])
            params = list(lora_named(pmodel).values())
            opt = torch.optim.AdamW(params, **ADAM)
            losses = []
            for step in range(1, STEPS + 1):
                opt.zero_grad(set_to_none=True)
                _, s, n, _ = run_batch(pmodel, samples)
                (s / n).backward()
                losses.append(float(s / n))
                opt.step()
                if step in (1, STEPS):
                    for k, p in lora_named(pmodel).items():
                        refs[f"{bname}.traj{step}.{k}"] = p.detach().float().clone()
            bm["traj_losses"] = losses
            meta["batches"][bname] = bm
            with torch.no_grad():  # back to the saved adapter for the next batch
                for k, p in lora_named(pmodel).items():
                    p.copy_(adapter[k])
            print(name, bname, "loss_sum", bm["loss_sum"], "n", n, "traj", losses, flush=True)
        # bf16: the saved adapter, whole model cast to bf16 (LoRA too: zlora casts its fp32 masters to the
        # compute dtype), on the CPU and, when present, on the GPU. zlora is compared with these within
        # bf16 tolerance on the device it runs on.
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        meta["bf16"] = {}
        for dev in devices:
            m16 = copy.deepcopy(pmodel).to(dtype=torch.bfloat16, device=dev)
            for mod in m16.modules():  # .to() cast the rotary buffer too; from_pretrained(bf16) keeps it fp32
                if hasattr(mod, "inv_freq"):
                    mod.register_buffer("inv_freq", inv.to(dev), persistent=False)
            meta["bf16"][dev] = {}
            for bname, samples in batches.items():
                m16.zero_grad(set_to_none=True)
                on_dev = [(i.to(dev), l.to(dev)) for i, l in samples]
                lg, s, n, _ = run_batch(m16, on_dev)
                (s / n).backward()
                refs[f"bf16_{dev}.{bname}.logits_lora"] = lg.detach().float().cpu()
                for k, p in lora_named(m16).items():
                    refs[f"bf16_{dev}.{bname}.grad.{k}"] = p.grad.detach().float().cpu()
                meta["bf16"][dev][bname] = dict(loss_sum=float(s), num_targets=n)
                print(name, "bf16", dev, bname, "loss_sum", float(s), flush=True)
            del m16
        for k in init:
            refs[f"init.{k}"] = init[k].float()
        save_file({k: v.contiguous() for k, v in refs.items()}, os.path.join(d, "reference.safetensors"))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        for fn in sorted(os.listdir(d)):
            print(" ", name, fn, os.path.getsize(os.path.join(d, fn)), flush=True)
        print(open(os.path.join(d, "config.json")).read(), flush=True)
        print(open(os.path.join(d, "adapter_config.json")).read(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
