// Reads JSON strings, one a line, on stdin; prints each one's ids (add_special_tokens=false) as a JSON
// array: the reference side of `zlora tokenize`.   usage: ZLORA_NODE_REF=DIR node encode_jsonl.mjs < in
import fs from "node:fs";
import { loadQwen, encode } from "./reference.mjs";

const tok = loadQwen();
const lines = fs.readFileSync(0, "utf8").split("\n").filter((l) => l.trim());
process.stdout.write(lines.map((l) => JSON.stringify(encode(tok, JSON.parse(l)))).join("\n") + "\n");
