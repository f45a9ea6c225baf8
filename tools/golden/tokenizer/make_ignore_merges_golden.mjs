// Writes tests/golden/tokenizer/ignore_merges_cases.jsonl: the ids and decodings that the reference
// (@lenml/tokenizers) gives for tests/golden/tokenizer/ignore_merges_tokenizer.json, a hand-written
// byte-level BPE tokenizer with Llama-3's pre-tokenizer and `ignore_merges: true`.
//
// With ignore_merges, HF tokenizers (models/bpe/model.rs, tokenize_with_cache) first looks the whole
// pre-token up in the model vocab, as the model sees it: in byte-level characters (" hello" ->
// "Ġhello"). @lenml/tokenizers does the same (BPE.encode checks tokens_to_ids with the output of the
// ByteLevel pre-tokenizer). The vocab holds tokens that the merges cannot build ("Ġhello", "world",
// "Ġviá»ĩc", "Äł"), so these cases tell a lookup of the mapped word from one of the raw word.
//   usage: ZLORA_NODE_REF=DIR node make_ignore_merges_golden.mjs [OUT.jsonl]
//   (DIR: where fetch.sh installed @lenml/tokenizers; OUT defaults to the committed file)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const golden = path.join(root, "tests/golden/tokenizer");

const cases = [
  ["hello_world", "hello world"], // "hello" via merges, " world" -> "Ġworld" via merges
  ["space_hello", " hello"], // "Ġhello" is a token no merge builds: one id only by the lookup
  ["world_unmergeable", "world"], // "world": in the vocab, unreachable by merges (ASCII: raw == mapped)
  ["space_world", " world"],
  ["two_spaces_hello", "  hello"], // " " then " hello"
  ["raw_G_hello", "\u0120hello"], // the text itself holds "Ġ" (U+0120): mapped "Äłhello", not "Ġhello"
  ["raw_G", "\u0120"], // mapped "Äł", a token; the raw "Ġ" is the token of byte 0x20
  ["raw_CC", "\u010a\u010a"], // "ĊĊ" as text: four byte tokens, not the token of "\n\n"
  ["newlines", "\n\n"], // mapped "ĊĊ", a token
  ["vietnamese", " vi\u1ec7c"], // " việc" -> "Ġviá»ĩc", a token no merge builds
  ["vietnamese_bare", "vi\u1ec7c"], // "viá»ĩc" is no token: bytes and the merge "á»"
  ["special_then_word", "<|begin_of_text|> hello world"],
  ["single_word_isolated", "say !! now"], // " !!" -> " " + the added token "!!"
  ["sentence", "hello world, hello  world\n\n vi\u1ec7c \u0120 \u0120hello world!"],
];

const dir = process.env.ZLORA_NODE_REF;
if (!dir) throw new Error("set ZLORA_NODE_REF to the folder fetch.sh installed the packages into");
const require = createRequire(path.join(path.resolve(dir), "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(golden, "ignore_merges_tokenizer.json"), "utf8"));
if (tokenizerJSON.model.ignore_merges !== true) throw new Error("the test tokenizer must set ignore_merges");
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON,
  tokenizerConfig: { tokenizer_class: "PreTrainedTokenizerFast", clean_up_tokenization_spaces: false },
});

const out = process.argv[2] || path.join(golden, "ignore_merges_cases.jsonl");
const lines = cases.map(([name, text]) => {
  const ids = Array.from(tok.encode(text, { add_special_tokens: false }));
  return JSON.stringify({
    name,
    text,
    ids,
    decoded: ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "",
  });
});
fs.writeFileSync(out, lines.join("\n") + "\n");
console.error(`wrote ${cases.length} cases to ${out}`);
