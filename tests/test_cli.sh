#!/bin/sh
# The CLI ($CODI, default build/codi_san: sanitizers on) end to end: trace against the golden file, info, run, text questions on codi-nano
# against PyTorch's predictions, tokenize against Hugging Face's ids, and error exits.
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
CODI=${CODI:-build/codi_san}   # the CLI built with AddressSanitizer + UBSan (make build/codi_san)
CODI_FAST=${CODI_FAST:-build/codi}   # the optimised build, for the 500-question run only (30x faster)
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
if $CODI trace --model tests/data/codi_tiny.bin --head-dim 32 --exact --ids $ids --out build/trace.safetensors --force >/dev/null; then
  out=$(build/check_trace_san build/trace.safetensors tests/data/golden_tiny.safetensors f32); rc=$?
  echo "$out" | grep -v '^[0-9]* passed'
  [ $rc -eq 0 ] && echo "$out" | grep -q '^[0-9]* passed, 0 failed' && ok "codi trace matches golden_tiny f32.*" || bad "codi trace matches golden_tiny f32.* (check_trace exit $rc)"
else bad "codi trace runs"; fi
$CODI info --model tests/data/codi_tiny.bin --head-dim 32 | grep -q "101 tensors: 101 from the checkpoint" && ok "codi info reports tensor sources" || bad "codi info"
$CODI run --model tests/data/codi_tiny.bin --head-dim 32 --ids $ids --max-answer 4 | grep -q "answer ids: 215 492 456 360$" && ok "codi run prints the answer ids" || bad "codi run"
$CODI export --model tests/data/codi_tiny.bin --head-dim 32 --merged build/tiny_merged.safetensors --force 2>/dev/null &&
  $CODI run --model build/tiny_merged.safetensors --ids $ids --max-answer 4 | grep -q "answer ids: 215 492 456 360$" &&
  ok "codi export --merged, then run on the export without --head-dim: the same answer" || bad "codi export --merged"
$CODI trace --model tests/data/no_such.bin --ids 1 --out build/x.safetensors 2>build/err.txt; rc=$?
[ $rc -ne 0 ] && grep -q "cannot open" build/err.txt && ok "missing model: message and non-zero exit" || bad "missing model exit"
$CODI run --model tests/data/codi_tiny.bin --head-dim 32 --ids 1,9999,513 2>build/err.txt >/dev/null; rc=$?
[ $rc -ne 0 ] && grep -q "out of range" build/err.txt && ok "token id out of range: message and non-zero exit" || bad "token id exit"

# codi-nano (trained, with its own tokenizer): text in, text out
nano=models/codi-nano/codi_nano.bin
q="Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?"
out=$($CODI run --model $nano --exact --question "$q")
echo "$out" | grep -q "^answer: The answer is: 21$" && echo "$out" | grep -q "^answer number: 21$" &&
  echo "$out" | grep -q "^  latent3 *'='" && ok "codi run --question: answer text (PyTorch's 21) and decoded latents as text" || bad "codi run --question"
build/quickstart | grep -q "^The answer is: [0-9]* (h\[0\] = " && ok "examples/quickstart.c runs (text question, answer text, a residual)" || bad "examples/quickstart.c"
# every held-out question, float32 as the reference: PyTorch's predictions (reference_check.json) and accuracy 13.0%
head -n 8 models/codi-nano/test.jsonl > build/nano8.jsonl
$CODI run --model $nano --exact --questions build/nano8.jsonl | sed -n 's/.*"prediction": \([^,}]*\).*/\1/p' > build/nano8_predictions.txt
head -n 8 tests/data/codi_nano_reference_predictions.txt | cmp -s - build/nano8_predictions.txt &&
  ok "codi-nano under the sanitizers: the first 8 predictions equal PyTorch's" || bad "codi-nano under the sanitizers: first 8 predictions"
$CODI_FAST run --model $nano --exact --questions models/codi-nano/test.jsonl > build/nano_eval.jsonl
sed -n 's/.*"prediction": \([^,}]*\).*/\1/p' build/nano_eval.jsonl > build/nano_predictions.txt
n_same=$(paste -d' ' build/nano_predictions.txt tests/data/codi_nano_reference_predictions.txt | awk '$1 == $2' | wc -l)
[ "$n_same" -eq 500 ] && ok "codi-nano: all 500 predictions equal PyTorch's (reference_infer.py, float32)" || bad "codi-nano: $n_same of 500 predictions equal PyTorch's"
grep -q '"questions": 500, "correct": 65, "accuracy": 0.1300' build/nano_eval.jsonl && ok "codi-nano: accuracy 65/500 = 13.0% with 6 latents, as published" || bad "codi-nano accuracy: $(tail -n 1 build/nano_eval.jsonl)"
$CODI run --model tests/data/codi_tiny.bin --head-dim 32 --question "no tokenizer here" 2>build/err.txt >/dev/null; rc=$?
[ $rc -ne 0 ] && grep -q "give --tokenizer" build/err.txt && ok "a text question without a tokenizer: message and non-zero exit" || bad "question without tokenizer"

# tokenize: Hugging Face's ids for every golden line; the derived tokenizer.model is Meta's file
if [ -f third_party/llama3/tokenizer.json ]; then
  $CODI tokenize --tokenizer third_party/llama3/tokenizer.json --jsonl build/golden_hf.jsonl > build/golden_ids.jsonl
  sed 's/.*"ids": \(\[[^]]*\]\).*/{"ids": \1}/' build/golden_hf.jsonl > build/golden_ref_ids.jsonl
  cmp -s build/golden_ids.jsonl build/golden_ref_ids.jsonl && ok "codi tokenize --jsonl prints Hugging Face's ids for all $(wc -l < build/golden_hf.jsonl) golden lines" || bad "codi tokenize --jsonl"
  sum=$(sha256sum build/llama3_tokenizer.model | cut -d' ' -f1)
  [ "$sum" = 82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55 ] && ok "tokenizer.model exported from tokenizer.json has Meta's published sha256" || bad "exported tokenizer.model sha256 $sum"
else
  skip "codi tokenize --jsonl against Hugging Face: Llama 3 tokenizer not fetched"
  skip "exported tokenizer.model sha256: Llama 3 tokenizer not fetched"
fi
out=$($CODI tokenize --tokenizer models/codi-nano/tokenizer.json --text "Tom has 12 apples." | cut -f1 | tr '\n' ' ')
[ "$out" = "51 78 76 300 220 257 382 79 79 75 270 13 " ] && ok "codi tokenize --text (Hugging Face's ids)" || bad "codi tokenize --text: $out"
$CODI tokenize --tokenizer tests/data/no_such.json --text x 2>build/err.txt >/dev/null; rc=$?
[ $rc -ne 0 ] && grep -q "cannot open" build/err.txt && ok "tokenize with a missing tokenizer: message and non-zero exit" || bad "tokenize missing tokenizer"
echo "$pass passed, $fail failed, $skip skipped"
