// Runs Hugging Face tokenizers (its Node binding, the same Rust core as the Python package) on the
// cases make_cases.py wrote, and prints the fixture tests/test_tokenizer.c reads: per case one line
// {"case", "tokenizer"} and then one {"case", "text", "ids", "decoded"} line per text
// (encode without special tokens, decode keeping them).
//   node tools/hf_cases/hf_reference.js CASE_DIR NPM_PREFIX > tests/data/hf_tokenizer_cases.jsonl
const fs = require("fs");
const path = require("path");
const [dir, prefix] = process.argv.slice(2);
const { Tokenizer } = require(path.resolve(prefix, "node_modules/tokenizers"));
(async () => {
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".texts.json")).sort()) {
    const name = f.slice(0, -".texts.json".length);
    const file = path.join(dir, name + ".json");
    const tok = Tokenizer.fromFile(file);
    console.log(JSON.stringify({ case: name, tokenizer: JSON.parse(fs.readFileSync(file, "utf8")) }));
    for (const text of JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"))) {
      const ids = Array.from((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
      console.log(JSON.stringify({ case: name, text, ids, decoded: await tok.decode(ids, false) }));
    }
  }
})();
