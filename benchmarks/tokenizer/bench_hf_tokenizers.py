#!/usr/bin/env python3
"""HF `tokenizers` throughput on the same texts as bench_tokenizer (for the GPU machine, where PyPI works).

Prints one JSON line in bench_tokenizer's schema: MB/s of UTF-8 input encoded one text at a time on one
thread (add_special_tokens=False, as LLaMA-Factory encodes each slot), and batched over all cores
(encode_batch, which tokenizers parallelises with Rayon).

    pip install tokenizers
    python3 bench_hf_tokenizers.py MODEL_DIR/tokenizer.json ../shared/data/huanhuan.json [REPEATS]
"""
import json
import os
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tok_path, data_path = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if os.path.isdir(tok_path):
        tok_path = os.path.join(tok_path, "tokenizer.json")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    rows = json.load(open(data_path, encoding="utf-8"))
    texts = [r[k] for r in rows for k in ("instruction", "input", "output") if isinstance(r.get(k), str) and r[k]]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    best1 = float("inf")
    tokens = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
        best1 = min(best1, time.perf_counter() - t0)
    bestn = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode_batch(texts, add_special_tokens=False)
        bestn = min(bestn, time.perf_counter() - t0)
    print(json.dumps({"impl": "hf-tokenizers", "texts": len(texts), "mb": round(mb, 3), "tokens": tokens,
                      "mb_per_s_1thread": round(mb / best1, 2), "threads": os.cpu_count(),
                      "mb_per_s_all": round(mb / bestn, 2)}))


if __name__ == "__main__":
    main()
