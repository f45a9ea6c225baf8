// Renders conversations with tokenizer files' chat_template through @lenml/tokenizers (a port of
// transformers.js: its apply_chat_template and @huggingface/jinja engine), as transformers and vLLM would
// prompt an exported model. Used by tests/export/test_chat_template_node.cpp.
//   usage: ZLORA_NODE_REF=DIR node chat_template_reference.mjs JOBS.json
// JOBS.json: [{"dir": tokenizer dir, "cases": [{"messages": [{"role", "content"}...],
//              "add_generation_prompt": bool}, ...]}, ...]
// Prints one JSON line per case, in order: {"job": index, "text": rendered string, "ids": [...]}.
// The tokenizer of a dir is built from its tokenizer.json and tokenizer_config.json (chat_template
// included); one built for the same files but another chat_template is reused, rendering with that
// dir's chat_template passed explicitly (building the Qwen tokenizer takes a third of a second).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [jobsFile] = process.argv.slice(2);
const refDir = process.env.ZLORA_NODE_REF;
if (!refDir || !jobsFile) {
  console.error("usage: ZLORA_NODE_REF=DIR node chat_template_reference.mjs JOBS.json");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(refDir), "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");

const parsed = new Map();  // tokenizer.json text -> parsed JSON
const built = new Map();  // tokenizer.json text + config without chat_template -> tokenizer
function tokenizerOf(dir) {
  const tjText = fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8");
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const chatTemplate = tokenizerConfig.chat_template;
  if (typeof chatTemplate !== "string") throw new Error(`${dir}/tokenizer_config.json has no chat_template string`);
  const { chat_template, ...rest } = tokenizerConfig;
  const key = tjText + "\0" + JSON.stringify(rest);
  if (!built.has(key)) {
    if (!parsed.has(tjText)) parsed.set(tjText, JSON.parse(tjText));
    built.set(key, TokenizerLoader.fromPreTrained({ tokenizerJSON: parsed.get(tjText), tokenizerConfig }));
  }
  return [built.get(key), chatTemplate];
}

const jobs = JSON.parse(fs.readFileSync(jobsFile, "utf8"));
jobs.forEach((job, index) => {
  const [tok, chat_template] = tokenizerOf(job.dir);
  for (const c of job.cases) {
    const opts = { chat_template, add_generation_prompt: c.add_generation_prompt };
    const text = tok.apply_chat_template(c.messages, { ...opts, tokenize: false });
    const ids = Array.from(tok.apply_chat_template(c.messages, { ...opts, tokenize: true, return_tensor: false }));
    process.stdout.write(JSON.stringify({ job: index, text, ids }) + "\n");
  }
});
