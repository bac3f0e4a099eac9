#!/bin/sh
# Crafted bad research files (issue 17) read by the CLI under ASan + UBSan: eval results with bad
# indices, activation datasets whose shapes disagree, pca / probe past 4096 slots, GGUF control
# vectors (shared data, bad names, duplicates, quoted file names), FIFOs, a non-safetensors spec
# vector, non-finite lens / steering output, record resumes of other work. Each: the exit code,
# a message naming the problem, and no sanitizer report. Crafted files: tests/craft_formats.py.
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
CODI=${CODI:-build/codi_san}
d=build/research_formats_test
rm -rf $d; mkdir -p $d
nano="--model models/codi-nano/codi_nano.bin --exact"
qs=models/codi-nano/test.jsonl
craft() { python3 tests/craft_formats.py "$@"; }
# expect NAME RC PATTERN CMD...: exit code RC, PATTERN in stderr, no sanitizer report
expect() {
  name=$1; want=$2; pat=$3; shift 3
  timeout 60 "$@" > $d/out 2> $d/err; rc=$?
  if [ $rc -eq $want ] && grep -q -- "$pat" $d/err && ! grep -q "Sanitizer\|runtime error" $d/err; then ok "$name (exit $rc: $(grep -- "$pat" $d/err | head -n 1 | cut -c1-150))"
  else bad "$name: exit $rc, want $want and /$pat/"; head -n 5 $d/err; fi
}

# 1. eval results: the index is checked before any use (merge, resume)
for ix in -1 -2000000000 1e300 2.5 300000000; do
  printf '{}\n{"condition": "baseline", "index": %s, "correct": true}\n' "$ix" > $d/r.jsonl
  expect "eval --merge: index $ix refused" 1 '"index" .* is not a question index' $CODI eval --merge $d/r.jsonl
done
printf '{}\n{"condition": "baseline", "index": 3, "correct": true}\n{"condition": "baseline", "index": 0, "correct": false}\n' > $d/ok.jsonl
$CODI eval --merge $d/ok.jsonl > $d/out 2> $d/err && grep -q '^{"condition": "baseline", "questions": 2, "correct": 1' $d/out &&
  ok "eval --merge of a good file: 2 questions, 1 correct" || { bad "eval --merge good file"; cat $d/err; }
$CODI eval $nano --questions $qs --limit 2 --max-answer 4 --out $d/res.jsonl > /dev/null 2> $d/err || { bad "eval run"; cat $d/err; }
head -n 1 $d/res.jsonl > $d/res2.jsonl
printf '{"condition": "baseline", "index": -1, "correct": true}\n' >> $d/res2.jsonl
expect "eval resume: index -1 in --out refused" 1 'is not a question index (0..1)' $CODI eval $nano --questions $qs --limit 2 --max-answer 4 --out $d/res2.jsonl
head -n 1 $d/res.jsonl > $d/res3.jsonl
printf '{"condition": "baseline", "index": 2, "correct": true}\n' >> $d/res3.jsonl
expect "eval resume: index 2 of 2 questions refused" 1 'is not a question index (0..1)' $CODI eval $nano --questions $qs --limit 2 --max-answer 4 --out $d/res3.jsonl

# 2. activation datasets: every reader checks all shapes against each other, the file and the model
A=$d/acts.safetensors
$CODI record $nano --questions $qs --limit 3 --max-answer 2 --out $A > /dev/null 2> $d/err || { bad "record"; cat $d/err; }
craft acts $A $d/a1.safetensors '{"resid": {"shape": [1000, 2, 1, 1]}}'
expect "tune-lens --acts: resid [1000, 2, 1, 1]" 1 'tensor "resid": dimension 0 (Q) is 1000' $CODI tune-lens $nano --acts $d/a1.safetensors --out $d/l1.safetensors
craft acts $A $d/a2.safetensors '{"resid": {"shape": [4096, 7, 7, 1], "bytes": 802816}, "done": {"shape": [1]}}'
expect "tune-lens --acts: 1-byte done, 4096 rows" 1 'other tensors say' $CODI tune-lens $nano --acts $d/a2.safetensors --out $d/l2.safetensors
craft acts $A $d/a3.safetensors '{"resid": {"shape": [1000000000000, 7, 0, 256], "bytes": 0}}'
expect "tune-lens --acts: resid of 10^12 rows" 1 'dimension 0 (Q) = 1000000000000 is too large\|other tensors say' $CODI tune-lens $nano --acts $d/a3.safetensors --out $d/l3.safetensors
craft acts $A $d/a4.safetensors '{"__meta__": {"layers": "5"}}'
expect "tune-lens --acts: layers metadata 5 vs tensors 6" 1 'metadata "layers"' $CODI tune-lens $nano --acts $d/a4.safetensors --out $d/l4.safetensors
expect "pca: resid [1000, 2, 1, 1]" 1 'tensor "resid": dimension 0 (Q) is 1000' $CODI pca --acts $d/a1.safetensors --out $d/pca1
expect "probe train: 1-byte done, 4096 rows" 1 'other tensors say' $CODI probe train --acts $d/a2.safetensors --label correct --out $d/probe2
expect "vectors --acts: model mismatch (resid D 1)" 1 'other tensors say\|the model has' $CODI vectors $nano --acts $d/a1.safetensors --out $d/v1.safetensors
craft st $d/wide.safetensors '{"__meta__": {"format": "codi_lens.acts.v1"}, "resid": {"dtype": "F32", "shape": [1, 5000, 1, 2]},
  "done": {"dtype": "U8", "shape": [1], "fill": 1}, "correct": {"dtype": "U8", "shape": [1]}, "question_index": {"dtype": "I32", "shape": [1]}}'
expect "pca: 5000 slots (stack arrays of 4096)" 1 '5000 positions x 1 layers; at most 4096' $CODI pca --acts $d/wide.safetensors --out $d/pca2
expect "probe train --label step: 5000 slots" 1 'at most 4096' $CODI probe train --acts $d/wide.safetensors --label step --out $d/probe3
craft st $d/deep.safetensors '{"__meta__": {"format": "codi_lens.acts.v1"}, "resid": {"dtype": "F32", "shape": [1, 1, 5000, 2]},
  "done": {"dtype": "U8", "shape": [1], "fill": 1}, "correct": {"dtype": "U8", "shape": [1]}, "question_index": {"dtype": "I32", "shape": [1]}}'
expect "probe train: 5000 layers" 1 'at most 4096' $CODI probe train --acts $d/deep.safetensors --label correct --out $d/probe4

# 3. GGUF control vectors: data bounded by the file, names checked, duplicates refused, names escaped
craft gguf $d/shared.gguf "$(python3 -c 'import json; print(json.dumps(["direction.%d" % i for i in range(1000)]))')" 100000 400000 0
expect "vectors --from-gguf: 1000 directions sharing one 400 kB data block" 1 'do not fit the file' $CODI vectors --from-gguf $d/shared.gguf --out $d/g1.safetensors
craft gguf $d/wrap.gguf '["direction.4294967295"]' 4 16 0
expect "vectors --from-gguf: direction.4294967295" 1 'is not a direction.N (0 <= N <= 100000)' $CODI vectors --from-gguf $d/wrap.gguf --out $d/g2.safetensors
craft gguf $d/dup.gguf '["direction.3", "direction.3"]' 4 32 16
expect "vectors --from-gguf: direction.3 twice" 1 'direction.3 appears twice' $CODI vectors --from-gguf $d/dup.gguf --out $d/g3.safetensors
q="$d/a\"b.gguf"
craft gguf "$q" '["direction.2", "direction.3"]' 256 2048 1024
$CODI vectors --from-gguf "$q" --out "$d/c\"v.safetensors" --spec $d/cv.json > /dev/null 2> $d/err &&
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert len(j['edits']) == 2 and j['edits'][1]['vector'] == 'c\"v.safetensors:direction.3', j" $d/cv.json &&
  $CODI run $nano --question "1+1?" --steer $d/cv.json --max-answer 2 > /dev/null 2>> $d/err &&
  ok "vectors --from-gguf: a file name with a quote is escaped in the spec, which loads and runs" || { bad "quoted file name"; cat $d/err; }

# 4. FIFOs are refused before they are opened
mkdir -p $d/lensdir; mkfifo $d/lensdir/params.pt $d/q.fifo
expect "lens --tuned DIR with a FIFO params.pt" 1 'neither a regular file nor a directory' $CODI lens $nano --question "1+1?" --tuned $d/lensdir
expect "run --questions FIFO" 1 'cannot read' $CODI run $nano --questions $d/q.fifo

# 5. a spec vector that is not a safetensors file: no content of it in the message
printf 'root:*:20000:0:99999:7:::\n' > $d/shadow
printf '{"edits": [{"at": "resid", "layer": 2, "vector": "shadow:x"}]}' > $d/spec_shadow.json
expect "steer spec FILE:TENSOR of a text file" 1 'not a safetensors file' $CODI run $nano --question "1+1?" --steer $d/spec_shadow.json
grep -q '[0-9]\{12,\}' $d/err && bad "the message shows the file's bytes as a number" || ok "the message shows no content of the file"

# 6. non-finite output is an error
craft st $d/big.safetensors '{"v": {"dtype": "F32", "shape": [256], "fill": 6.25e28}}'
printf '{"edits": [{"at": "resid", "layer": 3, "vector": "big.safetensors:v"}]}' > $d/spec_big.json
expect "run: a resid edit of norm 1e30" 1 'not finite' $CODI run $nano --question "1+1?" --steer $d/spec_big.json
craft st $d/lens_big.safetensors "$(python3 -c '
import json
t = {"%d.weight" % l: {"dtype": "F32", "shape": [256, 256], "fill": 3e38} for l in range(6)}
t.update({"%d.bias" % l: {"dtype": "F32", "shape": [256]} for l in range(6)})
print(json.dumps(t))')"
expect "lens --tuned with finite 3e38 weights" 1 'not finite' $CODI lens $nano --question "1+1?" --tuned $d/lens_big.safetensors

# 7. record resume: other shards, questions or limits are refused
$CODI record $nano --questions $qs --limit 4 --shard 1/2 --max-answer 2 --out $d/rec.safetensors > /dev/null 2> $d/err || { bad "record shard 1/2"; cat $d/err; }
expect "record: shard 2/2 onto shard 1/2's file" 1 'recorded with work = "shard 1/2' $CODI record $nano --questions $qs --limit 4 --shard 2/2 --max-answer 2 --out $d/rec.safetensors
sed '1s/[0-9][0-9]*/7/' $qs | head -n 4 > $d/q4.jsonl; head -n 4 $qs > $d/q4orig.jsonl
$CODI record $nano --questions $d/q4.jsonl --max-answer 2 --out $d/rec2.safetensors > /dev/null 2> $d/err || { bad "record q4"; cat $d/err; }
cp $d/q4orig.jsonl $d/q4.jsonl
expect "record: the questions file edited between runs" 1 'questions_hash = \|questions fnv1a64' $CODI record $nano --questions $d/q4.jsonl --max-answer 2 --out $d/rec2.safetensors
$CODI record $nano --questions $d/q4.jsonl --max-answer 2 --out $d/rec2.safetensors --overwrite > /dev/null 2> $d/err &&
  $CODI record $nano --questions $d/q4.jsonl --max-answer 2 --out $d/rec2.safetensors > /dev/null 2> $d/err && ok "record: the same command resumes" || { bad "record resume"; cat $d/err; }

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
