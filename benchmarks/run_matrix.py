#!/usr/bin/env python3
"""The seed's experiment matrix in one command: `zlora train` at every ZeRO setting that the machine's
GPUs allow, on one model directory and one token store, with the seed's hyperparameters; prints the
seed's table (experiment, steps, time, final loss) plus samples/s, tokens/s, MFU and peak memory per GPU,
appends one row per experiment to a results JSON (benchmarks/bench_common.py's schema), and prints each
experiment's per-phase profile (a separate run of the same length timing its last --profile-steps steps;
profiling synchronises the device between phases, so it is never part of the timed run).

    python3 benchmarks/run_matrix.py --zlora build-gpu/bin/zlora --model MODEL_DIR --store data.h5 \\
        --steps 25 --timed-from 11 --out benchmarks/results/DATE-GPU.json [--gpus N] [--only single,zero3]

Throughput is taken from trainer_log.jsonl over the steps after --timed-from (warm-up excluded: with
cuda_graphs each new padded size is captured once, mostly in the first ~30 steps): tokens and wall time
between the two logged steps bracketing the window.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import bench_common

# The seed's hyperparameters (LLaMA-Factory command line of the seed document).
SEED_ARGS = ["--template", "qwen", "--bf16", "--device", "cuda", "--per_device_train_batch_size", "4",
             "--gradient_accumulation_steps", "4", "--lora_rank", "8", "--lora_alpha", "32", "--lora_dropout", "0.1",
             "--lora_target", "q_proj,v_proj,k_proj,gate_proj,up_proj,o_proj,down_proj", "--learning_rate", "5e-5",
             "--lr_scheduler_type", "cosine", "--warmup_steps", "10", "--max_grad_norm", "1.0",
             "--save_strategy", "no", "--logging_steps", "5"]

# name -> (ZeRO stage, offload, needs more than one GPU, extra arguments)
EXPERIMENTS = {
    "single": (0, False, False, []),
    "zero1": (1, False, True, []),
    "zero2_offload": (2, True, True, []),
    "zero3": (3, False, True, []),
    # Not in the seed's table: the single-GPU row without CUDA graphs, to show what they are worth.
    "single_no_graphs": (0, False, False, ["--cuda_graphs", "false"]),
    # Not in the seed's table: each step split into micro-batches of at most 1,024 tokens (about two per
    # step here): less activation memory for some throughput.
    "single_mb1024": (0, False, False, ["--micro_batch_tokens", "1024"]),
}
DEFAULT = ["single", "zero1", "zero2_offload", "zero3"]


def gpu_info():
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    names = [l.strip() for l in out.stdout.splitlines() if l.strip()]
    if not names:
        sys.exit("run_matrix: nvidia-smi lists no GPU")
    return names[0], len(names)


def launch(zlora, world, args):
    if world == 1:
        return [zlora, "train"] + args
    return ["mpirun", "-np", str(world), "--bind-to", "none", zlora, "train"] + args


def window(log_path, timed_from):
    """tokens/s, samples/s, mfu, peak memory over the logged steps after `timed_from`."""
    recs = [json.loads(l) for l in open(log_path) if l.strip()]
    recs = [r for r in recs if "current_steps" in r and r.get("tokens_per_second")]  # step records only
    before = [r for r in recs if r["current_steps"] < timed_from]
    after = [r for r in recs if r["current_steps"] >= timed_from]
    if not before or not after:
        raise RuntimeError(f"{log_path}: not enough logged steps around step {timed_from}")
    a, b = before[-1], after[-1]
    steps = b["current_steps"] - a["current_steps"]
    # Each record's tokens_per_second covers its own logging window; weight windows by their tokens.
    tokens = b["total_tokens"] - a["total_tokens"]
    secs = sum((r2["total_tokens"] - r1["total_tokens"]) / r2["tokens_per_second"]
               for r1, r2 in zip([a] + after[:-1], after))
    samples_s = sum(r["samples_per_second"] for r in after) / len(after)
    mfu = sum(r.get("mfu") or 0 for r in after) / len(after)
    peak = max(r.get("vram_allocated") or 0 for r in recs)
    return steps, secs, tokens / secs, samples_s, mfu, peak, after[-1]["loss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zlora", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True, help="token store from `zlora prepare`")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--timed-from", type=int, default=11, help="first timed step (earlier ones warm up)")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs to use for the multi-GPU rows (default: all)")
    ap.add_argument("--only", default="", help="comma-separated experiments (default: all that fit)")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--profile-only", default="", help="comma-separated experiments to profile (default: all)")
    ap.add_argument("--work", default="/tmp/zlora_matrix")
    ap.add_argument("--out", required=True, help="results JSON to append rows to")
    ap.add_argument("--model-label", default=None)
    args = ap.parse_args()

    gpu, ngpu = gpu_info()
    world_multi = args.gpus or ngpu
    wanted = [e for e in (args.only.split(",") if args.only else DEFAULT) if e]
    rows, table = [], []
    for name in wanted:
        if name not in EXPERIMENTS:
            sys.exit(f"run_matrix: unknown experiment '{name}'; choose from {', '.join(EXPERIMENTS)}")
        stage, offload, multi, extra = EXPERIMENTS[name]
        world = world_multi if multi else 1
        if multi and world < 2:
            print(f"[{name}] runs at world size 1 (this machine has {ngpu} GPU): same code path, no communication")
        common = ["--model_name_or_path", args.model, "--tokenized_path", args.store, "--zero_stage", str(stage),
                  "--offload_optimizer", "cpu" if offload else "none"] + SEED_ARGS + extra
        out_dir = os.path.join(args.work, name)
        shutil.rmtree(out_dir, ignore_errors=True)
        t0 = time.time()
        log = os.path.join(args.work, f"{name}.log")
        os.makedirs(args.work, exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.run(launch(args.zlora, world, common + ["--max_steps", str(args.steps),
                                                                    "--output_dir", out_dir]),
                                stdout=f, stderr=subprocess.STDOUT).returncode
        wall = time.time() - t0
        if rc != 0:
            print(f"[{name}] FAILED (exit {rc}); last lines of {log}:")
            print("".join(open(log).readlines()[-15:]))
            continue
        steps, secs, tok_s, samples_s, mfu, peak, loss = window(os.path.join(out_dir, "trainer_log.jsonl"),
                                                               args.timed_from)
        results = json.load(open(os.path.join(out_dir, "train_results.json")))
        profile = None
        if args.profile_steps > 0 and (not args.profile_only or name in args.profile_only.split(",")):
            pdir = out_dir + "_profile"
            shutil.rmtree(pdir, ignore_errors=True)
            with open(log + ".profile", "w") as f:
                subprocess.run(launch(args.zlora, world, common + [
                    "--max_steps", str(args.steps), "--profile_steps", str(args.profile_steps),
                    "--output_dir", pdir]), stdout=f, stderr=subprocess.STDOUT)
            ppath = os.path.join(pdir, "profile.json")
            if os.path.exists(ppath):
                profile = json.load(open(ppath))
        row = {"system": "zlora", "gpu": gpu, "date": bench_common.today(), "world_size": world,
               "zero_stage": stage, "offload": offload,
               "model": args.model_label or os.path.basename(os.path.normpath(args.model)), "steps": steps,
               "time_s": round(secs, 3), "final_loss": loss, "samples_per_s": round(samples_s, 2),
               "tokens_per_s": round(tok_s, 1), "mfu": round(mfu, 4), "peak_mem_gib": round(peak, 2),
               "experiment": name, "run_wall_s": round(wall, 1), "train_runtime_s": results.get("train_runtime"),
               "notes": f"zlora train, seed hyperparameters; throughput over steps {args.timed_from}-{args.steps}"}
        if profile:
            row["profile_ms"] = {k: round(v, 2) for k, v in profile["phases_ms"].items()}
            row["profile_step_ms"] = round(profile["step_ms"], 2)
        rows.append(row)
        table.append(row)
        print(f"[{name}] world {world}: {tok_s:,.0f} tokens/s, {samples_s:.1f} samples/s, MFU {mfu:.1%}, "
              f"peak {peak:.1f} GiB" + (f"; profile {profile['step_ms']:.1f} ms/step: " + ", ".join(
                  f"{k} {v:.1f}" for k, v in profile["phases_ms"].items()) if profile else ""))
    if not rows:
        sys.exit("run_matrix: no experiment succeeded")
    print(f"\n{gpu} x{world_multi}, {bench_common.today()}")
    print("| experiment | world | steps | time (s) | final loss | samples/s | tokens/s | MFU | peak GiB/GPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['experiment']} | {r['world_size']} | {r['steps']} | {r['time_s']:.2f} | {r['final_loss']:.4f} | "
              f"{r['samples_per_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['peak_mem_gib']:.1f} |")
    bench_common.append_rows(args.out, rows)
    print(f"rows appended to {args.out}")


if __name__ == "__main__":
    main()
