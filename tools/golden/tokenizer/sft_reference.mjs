// Prints LLaMA-Factory-style SFT samples (qwen template) of an alpaca JSON file as JSON lines
// {"input_ids": [...], "labels": [...]}, for comparison with `zlora info --json`.
//   usage: ZLORA_NODE_REF=DIR node sft_reference.mjs DATA.json CUTOFF_LEN [MAX_SAMPLES]
import fs from "node:fs";
import { loadQwen, alpacaSample } from "./reference.mjs";

const [file, cutoff, max] = process.argv.slice(2);
if (!file || !cutoff) {
  console.error("usage: ZLORA_NODE_REF=DIR node sft_reference.mjs DATA.json CUTOFF_LEN [MAX_SAMPLES]");
  process.exit(2);
}
const tok = loadQwen();
let rows = JSON.parse(fs.readFileSync(file, "utf8"));
if (max) rows = rows.slice(0, Number(max));
const out = rows.map((r) => JSON.stringify(alpacaSample(tok, r, Number(cutoff))));
process.stdout.write(out.join("\n") + "\n");
