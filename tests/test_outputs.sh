#!/bin/sh
# Outputs you can rely on: a failed write is an error (standard output on /dev/full, an output file on
# /dev/full or a full file system), outputs never overwrite inputs (by name or by inode) nor existing
# files without --force, files appear under their name only when complete, JSON lines are strict
# (numbers beyond a double and duplicate keys refused), one questions policy in every command,
# positions beyond every run refused, --ids without bot warned, special-token text read as text.
# Every command that writes is run with standard output on /dev/full and (as root, on a 64 KiB
# tmpfs) with its files on a full file system; eval stops at the first failed write and resumes;
# the prompt limit follows the model's context; GGUF directions are shape-checked; provenance.
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/outputs_test; rm -rf $d; mkdir -p $d
tiny="--model tests/data/codi_tiny.bin --head-dim 32 --exact"
nano="--model models/codi-nano/codi_nano.bin"
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
# expect RC TEXT NAME CMD...: the exit status is RC and stderr holds TEXT
expect() {
  want=$1; text=$2; name=$3; shift 3
  "$@" > $d/out.txt 2> $d/err.txt; rc=$?
  if [ $rc -eq $want ] && { [ -z "$text" ] || grep -qF -- "$text" $d/err.txt; }; then ok "$name (exit $rc)"; else bad "$name: exit $rc, stderr: $(head -c 400 $d/err.txt)"; fi
}
# stdoutfull RC NAME CMD...: with standard output on /dev/full the command fails with a message
stdoutfull() {
  name=$1; shift
  "$@" > /dev/full 2> $d/err.txt; rc=$?
  if [ $rc -eq 1 ] && grep -q "error writing standard output" $d/err.txt; then ok "stdout on /dev/full: $name (exit 1)"; else bad "stdout on /dev/full: $name: exit $rc, $(tail -c 300 $d/err.txt)"; fi
}

printf '{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": 12}\n{"question": "Zoe is 3. Sam is 9 years older. How old is Sam?", "answer": 12}\n' > $d/q2.jsonl

# ---- standard output on a full device ----
stdoutfull "info" $B info $tiny
stdoutfull "run --ids" $B run $tiny --ids $ids --max-answer 2
stdoutfull "run --questions" $B run $nano --questions $d/q2.jsonl --max-answer 4
stdoutfull "lens --json" $B lens $tiny --ids $ids --json --max-answer 2
stdoutfull "tokenize --text" $B tokenize --tokenizer models/codi-nano/tokenizer.json --text "Tom has 12 apples."
stdoutfull "gen-templates" $B gen-templates --draws 2
$B eval $nano --questions $d/q2.jsonl --out $d/e.jsonl --max-answer 4 > /dev/null 2>&1
stdoutfull "eval --merge" $B eval --merge $d/e.jsonl
for c in run trace info bench tokenize lens record tune-lens eval gen-templates vectors sweep export probe pca kv-response; do
  $B $c --help > /dev/full 2> $d/err.txt; rc=$?
  [ $rc -eq 1 ] && grep -q "error writing standard output" $d/err.txt || { bad "$c --help > /dev/full: exit $rc"; c=failed; break; }
done
[ "$c" = kv-response ] && ok "every command's --help on /dev/full exits 1 with a message (sweep included)"

# ---- an output file on a full device ----
expect 1 "error writing /dev/full" "gen-templates --out /dev/full" $B gen-templates --draws 2 --out /dev/full
expect 1 "error writing /dev/full" "tokenize --export-tiktoken /dev/full" $B tokenize --tokenizer models/codi-nano/tokenizer.json --export-tiktoken /dev/full
expect 1 "error writing /dev/full" "lens --svg /dev/full" $B lens $tiny --ids $ids --max-answer 2 --svg /dev/full
expect 2 "/dev/full is not a regular file" "trace --out /dev/full refused before the run" $B trace $tiny --ids $ids --out /dev/full
ln -s /dev/full $d/full.safetensors; ln -s /dev/full $d/kvdev.csv
expect 2 "full.safetensors is not a regular file" "export --merged on a device refused" $B export $tiny --merged $d/full.safetensors
expect 2 "/dev/full is not a regular file" "eval --out /dev/full refused" $B eval $nano --questions $d/q2.jsonl --out /dev/full
expect 2 "/dev/full is not a regular file" "record --out /dev/full refused" $B record $nano --questions $d/q2.jsonl --out /dev/full
expect 2 "/dev/full exists and is not a directory" "tune-lens --out /dev/full refused" $B tune-lens $nano --questions $d/q2.jsonl --out /dev/full
expect 1 "error writing /dev/full" "vectors --to-gguf --out /dev/full" $B vectors --to-gguf tests/data/golden_tiny.safetensors:steer.v --layers 2-3 --out /dev/full
$B record $nano --questions $d/q2.jsonl --out $d/acts.st --max-answer 2 > /dev/null 2>&1
expect 2 "/dev/full exists and is not a directory" "probe train --out /dev/full refused" $B probe train --acts $d/acts.st --label correct --out /dev/full
expect 2 "/dev/full exists and is not a directory" "pca --out /dev/full refused" $B pca --acts $d/acts.st --out /dev/full
expect 2 "is the input" "probe train --out the dataset refused" $B probe train --acts $d/acts.st --label correct --out $d/acts.st
expect 1 'no question of the dataset has field "nonexistent"' "probe train --label field:nonexistent says why" $B probe train --acts $d/acts.st --label field:nonexistent --questions $d/q2.jsonl --out $d/probe
expect 2 "not a regular file" "vectors --out /dev/full refused" $B vectors $nano --questions $d/q2.jsonl --out /dev/full
expect 1 "error writing $d/kvdev.csv" "kv-response: its CSV on /dev/full" $B kv-response $nano --questions $d/q2.jsonl --steer tests/data/steer/s1_z_add.json --out $d/kvdev

# ---- a full file system (a 64 KiB tmpfs; root only) ----
mkdir -p $d/full
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs $d/full 2>/dev/null; then
  expect 1 "No space left on device" "gen-templates on a full file system" $B gen-templates --draws 200 --out $d/full/t.jsonl
  [ ! -e $d/full/t.jsonl ] && [ -z "$(ls $d/full)" ] && ok "no half file and no temporary file left" || bad "full fs leaves: $(ls $d/full)"
  expect 1 "error writing" "trace on a full file system" $B trace $tiny --ids $ids --max-answer 16 --out $d/full/t.safetensors
  [ ! -e $d/full/t.safetensors ] && ok "trace leaves no half file" || bad "trace left $d/full/t.safetensors"
  # eval: room for about 30 of 80 result lines; it stops at the first failed write, keeps whole lines, resumes
  rm -f $d/full/*; dd if=/dev/zero of=$d/full/fill bs=1k count=58 2>/dev/null
  ev="$B eval $nano --questions models/codi-nano/test.jsonl --limit 80 --max-answer 8 --out $d/full/r.jsonl"
  expect 1 "stopped at the first failed write to $d/full/r.jsonl" "eval --out on a full file system stops" $ev
  n=$(grep -c '"correct"' $d/full/r.jsonl)
  grep -q "error writing $d/full/r.jsonl: No space left on device" $d/err.txt && grep -q "its $n results are whole lines" $d/err.txt && [ "$n" -gt 0 ] && [ "$n" -lt 80 ] &&
    [ "$(tail -c 1 $d/full/r.jsonl | od -An -c | tr -d ' ')" = '\n' ] && ! grep -q "80/80" $d/err.txt &&
    ok "eval: stopped after $n of 80 results, the file holds whole lines only, no summary" || bad "eval after the failed write: $n results, $(tail -c 300 $d/err.txt)"
  mount -o remount,size=4m $d/full
  expect 0 "resuming $d/full/r.jsonl: $n results already there" "eval resumed after space was freed" $ev
  [ "$(grep -c '"correct"' $d/full/r.jsonl)" -eq 80 ] && [ -z "$(grep -o '"index": [0-9]*' $d/full/r.jsonl | sort | uniq -d)" ] &&
    ok "eval resumed: 80 results, none twice" || bad "eval resumed: $(grep -c '"correct"' $d/full/r.jsonl) results"
  # a torn last line (kill -9 mid-write) is dropped on resume and its result run again
  sz=$(wc -c < $d/full/r.jsonl); truncate -s $((sz - 40)) $d/full/r.jsonl
  expect 0 "resuming $d/full/r.jsonl: 79 results already there" "eval: a torn last line is not counted on resume" $ev
  [ "$(grep -c '"correct"' $d/full/r.jsonl)" -eq 80 ] && [ "$(wc -l < $d/full/r.jsonl)" -eq 81 ] && ok "eval: the torn line was replaced by a whole one (80 results)" || bad "eval torn line: $(wc -l < $d/full/r.jsonl) lines"
  umount $d/full
  # sweep: vectors.safetensors (104 KiB) fits in 128 KiB, results.jsonl does not: stop, exit 1, resume after
  mount -t tmpfs -o size=128k tmpfs $d/full
  sw="$B sweep $nano --questions models/codi-nano/test.jsonl --limit 40 --steps 6 --pairs 1-2,3-4 --coeffs 0,1 --kv-coeffs 0 --noise-seeds 0 --threads 2 --out $d/full/s"
  expect 1 "stopped: $d/full/s/results.jsonl could not be written" "sweep on a full file system stops" $sw
  [ ! -e $d/full/s/summary.jsonl ] && ok "sweep: no summary after the failed write" || bad "sweep wrote a summary"
  mount -o remount,size=4m $d/full
  expect 0 "" "sweep resumed after space was freed" $sw
  n=$(grep -c '"correct"' $d/full/s/results.jsonl)
  [ "$n" -eq 560 ] && [ -s $d/full/s/summary.csv ] && ok "sweep resumed: 560 results (40 x 14), none twice, summary written" || bad "sweep resumed: $n results"
  umount $d/full
  # record: the dataset writer stops on a full disk and the dataset resumes
  mount -t tmpfs -o size=256k tmpfs $d/full
  rec="$B record $nano --questions models/codi-nano/test.jsonl --limit 20 --max-answer 2 --out $d/full/a.st"
  expect 1 "the activation dataset was not written completely" "record on a full file system stops" $rec
  mount -o remount,size=8m $d/full
  expect 0 "already recorded" "record resumed after space was freed" $rec
  umount $d/full
else skip "full file system: needs root and a tmpfs mount (9 tests)"; skip=$((skip + 8)); fi

# ---- every command that writes: standard output on /dev/full, and its files on a full file system ----
$B probe train --acts $d/acts.st --label parity --allow-small --out $d/probe0 > /dev/null 2>&1
# writers OUT: NAME|FILES|CMD, one per command that writes (FILES: 1 when it writes files under OUT, 2 when
# it writes nothing on standard output)
writers() {
  o=$1
  cat <<WEOF
trace|1|$B trace $tiny --ids $ids --max-answer 2 --out $o/t.safetensors
record|1|$B record $nano --questions $d/q2.jsonl --max-answer 2 --out $o/a.st
export|2|$B export $tiny --merged $o/m.safetensors
vectors|1|$B vectors $nano --questions $d/q2.jsonl --out $o/v.safetensors
vectors extract|1|$B vectors extract --acts $d/acts.st --slot latent3 --question 0 --name v --out $o/x.safetensors
lens --svg|1|$B lens $tiny --ids $ids --max-answer 2 --svg $o/l.svg
lens --questions (--out, --rows)|1|$B lens $nano --questions $d/q2.jsonl --max-answer 2 --out $o/lq
probe train|1|$B probe train --acts $d/acts.st --label parity --allow-small --out $o/p
probe apply|1|$B probe apply --probes $d/probe0/probes.safetensors --acts $d/acts.st --out $o/pa.csv
pca|1|$B pca --acts $d/acts.st --out $o/pca
kv-response|1|$B kv-response $nano --questions $d/q2.jsonl --steer tests/data/steer/s1_z_add.json --out $o/kv
tune-lens|1|$B tune-lens $nano --questions $d/q2.jsonl --steps 2 --batch 2 --held-out 0 --out $o/tl.safetensors
eval|1|$B eval $nano --questions $d/q2.jsonl --max-answer 4 --out $o/e.jsonl
sweep|1|$B sweep $nano --questions models/codi-nano/test.jsonl --limit 4 --means-limit 4 --steps 1 --pairs 1-2 --coeffs 1 --kv-coeffs none --noise-seeds 0 --out $o/sw
gen-templates --out|2|$B gen-templates --draws 200 --out $o/g.jsonl
tokenize --export-tiktoken|2|$B tokenize --tokenizer models/codi-nano/tokenizer.json --export-tiktoken $o/tok.tiktoken
run|0|$B run $nano --questions $d/q2.jsonl --max-answer 2
info|0|$B info $tiny
tokenize|0|$B tokenize --tokenizer models/codi-nano/tokenizer.json --text apples
gen-templates|0|$B gen-templates --draws 2
bench|0|$B bench $tiny --tokens 2
WEOF
}
mkdir -p $d/w1; writers $d/w1 > $d/writers.txt; n_w=0; failed=""
while IFS='|' read -r name files cmd; do
  [ "$files" = 2 ] && continue
  $cmd > /dev/full 2> $d/err.txt < /dev/null; rc=$?
  n_w=$((n_w + 1))
  [ $rc -eq 1 ] && grep -q "error writing standard output" $d/err.txt || failed="$failed [$name: exit $rc, $(tail -c 200 $d/err.txt)]"
done < $d/writers.txt
[ -z "$failed" ] && ok "stdout on /dev/full: all $n_w commands that write exit 1 with 'error writing standard output'" || bad "stdout on /dev/full:$failed"
# an output file on a full device: refused before the work (not a regular file / not a directory) or an error writing it, never exit 0
failed=""; n_w=0
for c in "vectors extract --acts $d/acts.st --slot latent3 --question 0 --name v --out /dev/full" "probe apply --probes $d/probe0/probes.safetensors --acts $d/acts.st --out /dev/full" \
         "sweep $nano --questions $d/q2.jsonl --out /dev/full" "sweep $nano --questions $d/q2.jsonl --out $d/swd --dump-logits /dev/full" \
         "lens $nano --questions $d/q2.jsonl --max-answer 2 --out $d/lf --rows /dev/full" "eval $nano --questions $d/q2.jsonl --max-answer 4 --out $d/ef.jsonl --csv /dev/full" \
         "sweep --merge $d/w1/sw --out /dev/full" "eval --merge $d/w1/e.jsonl --csv /dev/full"; do
  $B $c > /dev/null 2> $d/err.txt; rc=$?; n_w=$((n_w + 1))
  [ $rc -ne 0 ] && grep -Eq "error writing /dev/full|/dev/full is not a regular file|/dev/full exists and is not a directory" $d/err.txt || failed="$failed [${c%% -*}: exit $rc, $(tail -c 200 $d/err.txt)]"
done
[ -z "$failed" ] && ok "an output on /dev/full: $n_w more commands refuse it or fail writing it, naming it" || bad "output on /dev/full:$failed"
# every command that writes files, on a full file system: exit 1 naming the failed write, no file left under its name
mkdir -p $d/full
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs $d/full 2>/dev/null; then
  dd if=/dev/zero of=$d/full/fill bs=1k count=200 2>/dev/null
  writers $d/full > $d/writers.txt; failed=""; n_w=0
  while IFS='|' read -r name files cmd; do
    [ "$files" = 0 ] && continue
    $cmd > /dev/null 2> $d/err.txt < /dev/null; rc=$?; n_w=$((n_w + 1))
    left=$(find $d/full -type f ! -name fill -size +0)
    [ $rc -eq 1 ] && grep -Eq "No space left on device|error writing|cannot write" $d/err.txt && [ -z "$left" ] ||
      failed="$failed [$name: exit $rc, left: $left; $(tail -c 200 $d/err.txt)]"
    find $d/full -mindepth 1 -maxdepth 1 ! -name fill -exec rm -rf {} +
  done < $d/writers.txt
  umount $d/full
  [ -z "$failed" ] && ok "a full file system: all $n_w commands that write files exit 1 naming the failed write and leave no file with content" || bad "full file system:$failed"
else skip "full file system: every command that writes files"; fi

# ---- outputs that name inputs; existing outputs ----
cp tests/data/codi_tiny.bin $d/tiny.bin; ln $d/tiny.bin $d/hard.bin; sum=$(cksum < $d/tiny.bin)
expect 2 "output $d/tiny.bin is the input $d/tiny.bin" "trace --out the model refused" $B trace --model $d/tiny.bin --head-dim 32 --ids $ids --out $d/tiny.bin
expect 2 "is the input" "trace --out a hard link of the model refused, even with --force" $B trace --model $d/tiny.bin --head-dim 32 --ids $ids --out $d/hard.bin --force
expect 2 "is the input" "lens --svg the model refused" $B lens --model $d/tiny.bin --head-dim 32 --ids $ids --svg $d/hard.bin --force
[ "$(cksum < $d/tiny.bin)" = "$sum" ] && ok "the model file is unchanged" || bad "the model file changed"
expect 2 "is the input" "eval --out the questions file refused" $B eval $nano --questions $d/q2.jsonl --out $d/q2.jsonl
expect 2 "is the input" "kv-response: the spec as output refused" $B kv-response $nano --questions $d/q2.jsonl --steer $d/r.csv --out $d/r
$B trace $tiny --ids $ids --max-answer 2 --out $d/t.safetensors > /dev/null 2>&1
expect 2 "exists (give --force to overwrite it)" "trace: an existing output refused" $B trace $tiny --ids $ids --max-answer 2 --out $d/t.safetensors
expect 0 "" "trace --force overwrites it" $B trace $tiny --ids $ids --max-answer 2 --out $d/t.safetensors --force
expect 2 "exists (give --force" "gen-templates: an existing output refused" $B gen-templates --out $d/t.safetensors
expect 2 "exists (give --force" "lens --svg: an existing output refused" $B lens $tiny --ids $ids --svg $d/t.safetensors
expect 2 "directory nodir/sub does not exist" "tune-lens: a bad --out is found before the model runs" $B tune-lens $nano --questions $d/q2.jsonl --out nodir/sub/lens
grep -q "running the model" $d/err.txt && bad "tune-lens ran the model first" || ok "tune-lens did not run the model"
expect 2 "directory nodir does not exist" "tune-lens: a bad --checkpoint is found before the model runs" $B tune-lens $nano --questions $d/q2.jsonl --out $d/lens --checkpoint nodir/c.ckpt
expect 2 "directory nodir does not exist" "kv-response: a bad --out is found before the model runs" $B kv-response $nano --questions $d/q2.jsonl --steer tests/data/steer/s1_z_add.json --out nodir/r

# ---- provenance: a tune-lens checkpoint records its data and refuses other data without --force ----
sed 's/Tom has 3/Ann has 5/' $d/q2.jsonl > $d/q2b.jsonl
tl="tune-lens $nano --steps 2 --batch 2 --held-out 0 --checkpoint $d/tl.ckpt --checkpoint-every 1"
$B $tl --questions $d/q2.jsonl --out $d/tl1.safetensors > /dev/null 2>&1
expect 2 "was trained on other data (questions fnv1a64" "tune-lens: resuming a checkpoint on another questions file refused" $B $tl --questions $d/q2b.jsonl --out $d/tl2.safetensors
expect 0 "continuing on this data (--force)" "tune-lens: --force continues on it" $B $tl --questions $d/q2b.jsonl --out $d/tl2.safetensors --force

# ---- atomic writes: kill -9 mid-write leaves no half file under the real name ----
$B gen-templates --draws 20000 --out $d/big.jsonl 2>/dev/null & pid=$!
i=0; while [ $i -lt 200 ] && ! ls $d/big.jsonl.tmp.* > /dev/null 2>&1; do sleep 0.01; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if ls $d/big.jsonl.tmp.* > /dev/null 2>&1; then
  [ ! -e $d/big.jsonl ] && ok "killed mid-write: only the temporary file exists, $d/big.jsonl does not" || bad "killed mid-write: $d/big.jsonl exists"
else skip "kill mid-write: the write finished first"; fi
rm -f $d/big.jsonl.tmp.*

# ---- strict JSON: numbers beyond a double and duplicate keys ----
printf '{"question": "What is 2 + 3?", "answer": 1e400}\n{"question": "What is 4 + 5?", "answer": 9, "answer": 10}\n{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": 12}\n' > $d/strict.jsonl
expect 1 "strict.jsonl:1: JSON error at byte 41: number out of range" "run --questions: gold 1e400 refused with FILE:LINE" $B run $nano --questions $d/strict.jsonl --max-answer 4
grep -q 'strict.jsonl:2: JSON error at byte [0-9]*: duplicate key "answer"' $d/err.txt && ok "duplicate key in a questions line refused, named with FILE:LINE" || bad "duplicate key: $(cat $d/err.txt)"
python3 -c "import json; [json.loads(l) for l in open('$d/out.txt')]" 2>/dev/null && ok "run's output parses as strict JSON lines (no inf / nan)" || bad "run's output is not JSON: $(head -c 300 $d/out.txt)"
expect 1 "number out of range" "eval: gold 1e400 refused" $B eval $nano --questions $d/strict.jsonl --out $d/strict_r.jsonl --max-answer 4
python3 -c "import json; [json.loads(l) for l in open('$d/strict_r.jsonl')]" 2>/dev/null && ok "eval's results parse as strict JSON lines (no inf / nan)" || bad "eval's results are not JSON"
$B eval --merge $d/strict_r.jsonl > $d/merge.txt 2> $d/err.txt && grep -q "merged 1 files: 1 results" $d/err.txt && ok "eval --merge reads them back (1 result)" || bad "eval --merge: $(cat $d/err.txt)"
echo '{"edits": [{"at": "latent_input", "step": 3, "vector": "../../tests/data/golden_tiny.safetensors:steer.v"}], "edits": []}' > $d/dup.json
expect 1 'duplicate key "edits"' "a steering spec with a duplicate key refused" $B run $tiny --ids $ids --max-answer 2 --steer $d/dup.json

# ---- one questions policy in every command ----
: > $d/empty.jsonl; head -c 4096 /dev/urandom | tr '\n' 'x' | fold -w 200 > $d/random.jsonl
python3 -c "print('{\"question\": \"' + 'one two three ' * 1500 + '\", \"answer\": 1}')" > $d/long.jsonl; cat $d/q2.jsonl >> $d/long.jsonl
for f in empty random; do
  for c in "run --max-answer 2" "eval --out $d/pe_$f.jsonl --max-answer 2" "record --out $d/pr_$f.st --max-answer 2" "lens --out $d/pl_$f --max-answer 2" \
           "tune-lens --out $d/pt_$f.safetensors --steps 1 --batch 1" "vectors --out $d/pv_$f.safetensors" "kv-response --steer tests/data/steer/s1_z_add.json --out $d/pk_$f"; do
    $B $c $nano --questions $d/$f.jsonl > /dev/null 2> $d/err.txt; rc=$?
    [ $rc -eq 1 ] && grep -q "$f.jsonl: no usable question" $d/err.txt || { bad "$f questions file: ${c%% *}: exit $rc, $(tail -c 300 $d/err.txt)"; c=failed; break; }
  done
  [ "$c" != failed ] && ok "$f questions file: run, eval, record, lens, tune-lens, vectors, kv-response exit 1 with 'no usable question'"
done
for c in "run --max-answer 2" "eval --out $d/pe_long.jsonl --max-answer 2" "record --out $d/pr_long.st --max-answer 2" "lens --out $d/pl_long --max-answer 2" \
         "tune-lens --out $d/pt_long.safetensors --steps 1 --batch 1" "vectors --out $d/pv_long.safetensors" "kv-response --steer tests/data/steer/s1_z_add.json --out $d/pk_long"; do
  $B $c $nano --questions $d/long.jsonl > /dev/null 2> $d/err.txt; rc=$?
  [ $rc -eq 1 ] && grep -q "long.jsonl:1: the question's prompt has 15005 tokens, over the limit of 4096: the commands' prompt buffer; the model's context is 131072 positions (line skipped)" $d/err.txt || { bad "over-long question: ${c%% *}: exit $rc, $(tail -c 300 $d/err.txt)"; c=failed; break; }
done
[ "$c" != failed ] && ok "an over-long question: every command skips it with FILE:LINE and the limit, runs the rest, exits 1"
# the limit follows the model's context (max_position_embeddings) less the positions a run needs after its prompt
mkdir -p $d/ctx400; for f in codi_nano.bin tokenizer.json; do ln -sf ../../../models/codi-nano/$f $d/ctx400/$f; done
sed 's/"max_position_embeddings": 131072/"max_position_embeddings": 400/' models/codi-nano/config.json > $d/ctx400/config.json
python3 -c "print('{\"question\": \"' + 'one two three ' * 20 + '\", \"answer\": 1}')" > $d/mid.jsonl; cat $d/q2.jsonl >> $d/mid.jsonl
expect 1 "mid.jsonl:1: the question's prompt has 205 tokens, over the limit of 136: the model's context of 400 positions (max_position_embeddings) less 264 for the latents, eot and answer (line skipped)" \
  "a model with a 400-position context: run skips a 205-token prompt (limit 400 - 264)" $B run --model $d/ctx400/codi_nano.bin --questions $d/mid.jsonl --max-answer 2
[ "$(grep -c '"line"' $d/out.txt)" -eq 2 ] && ok "run: the two other questions ran" || bad "run on ctx400: $(grep -c '"line"' $d/out.txt) rows"
expect 0 "3 questions (0 lines skipped)" "eval --max-answer 8 on that model: room for all three (limit 400 - 16)" $B eval --model $d/ctx400/codi_nano.bin --questions $d/mid.jsonl --max-answer 8 --out $d/ctx_a.jsonl
expect 1 "over the limit of 192: the model's context of 400 positions (max_position_embeddings) less 208" "eval --max-answer 200 on that model: limit 400 - 208 bites" $B eval --model $d/ctx400/codi_nano.bin --questions $d/mid.jsonl --max-answer 200 --out $d/ctx_b.jsonl
$B run $nano --questions $d/strict.jsonl --max-answer 2 2>/dev/null | grep -q '"index": 0, "line": 3,' && ok "run numbers rows by file line" || bad "run row numbering"

# ---- positions, --ids, special-token text ----
expect 2 "prompt999 is beyond the longest prompt" "lens --positions prompt999 refused" $B lens $nano --question "What is 2+3?" --positions prompt999
expect 2 "answer40 is beyond the 32 answer tokens" "record --positions answer40 refused" $B record $nano --questions $d/q2.jsonl --out $d/pos.st --positions answer40
expect 0 "--ids does not end with bot" "run --ids without bot warns" $B run $nano --ids 1,2,3 --max-answer 2
n_text=$($B run $nano --question "a <|bocot|> b" --max-answer 1 2>/dev/null | sed -n 's/^prompt (\([0-9]*\) tokens).*/\1/p')
n_special=$($B run $nano --question "a <|bocot|> b" --max-answer 1 --parse-special 2>/dev/null | sed -n 's/^prompt (\([0-9]*\) tokens).*/\1/p')
[ -n "$n_text" ] && [ -n "$n_special" ] && [ "$n_text" -gt "$n_special" ] && ok "<|bocot|> in a question is text ($n_text tokens), one token with --parse-special ($n_special)" || bad "special-token text: $n_text vs $n_special"
expect 2 "holds one row per latent step" "vectors --to-gguf of mean_final refused" $B vectors --to-gguf $d/x.safetensors:mean_final --out $d/cv.gguf
expect 2 "residual indices end at 4" "vectors --to-gguf --layers beyond the model refused" $B vectors $tiny --to-gguf tests/data/golden_tiny.safetensors:steer.v --layers 2-99 --out $d/cv2.gguf
expect 0 "warning: --layers 2-99 (98 directions) not checked against a model" "vectors --to-gguf --layers without --model warned" $B vectors --to-gguf tests/data/golden_tiny.safetensors:steer.v --layers 2-99 --out $d/cv3.gguf
python3 -c "
import struct, json
def w(path, shape, value):
    n = 1
    for x in shape: n *= x
    h = json.dumps({'v': {'dtype': 'F32', 'shape': shape, 'data_offsets': [0, 4 * n]}}).encode(); h += b' ' * ((8 - len(h)) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + struct.pack('<%df' % n, *([value] * n)))
w('$d/d64.safetensors', [64], 0.5); w('$d/lat6.safetensors', [6, 256], 0.5); w('$d/zero7.safetensors', [7, 256], 0.0)"
expect 2 "d64.safetensors:v has rows of 64 numbers; the model's hidden size (n_embd) is 256" "vectors --to-gguf: a direction of another length than the model's refused" $B vectors $nano --to-gguf $d/d64.safetensors:v --layers 2-3 --out $d/cv4.gguf
expect 2 "lat6.safetensors:v has 6 rows; a tensor by residual index has L + 1 = 7 rows (the model's)" "vectors --to-gguf: [6, D] latent-step rows under another name refused with --model" $B vectors $nano --to-gguf $d/lat6.safetensors:v --out $d/cv5.gguf
expect 0 "rows taken as residual indices 0..5, not checked against a model" "vectors --to-gguf: rows without --model warned" $B vectors --to-gguf $d/lat6.safetensors:v --out $d/cv6.gguf
expect 1 "no direction to write" "vectors --to-gguf: all-zero rows refused (no empty GGUF)" $B vectors $nano --to-gguf $d/zero7.safetensors:v --out $d/cv7.gguf
[ ! -e $d/cv4.gguf ] && [ ! -e $d/cv5.gguf ] && [ ! -e $d/cv7.gguf ] && ok "vectors --to-gguf: nothing written when refused" || bad "vectors --to-gguf wrote a refused file"
# provenance: a dataset's questions file is checked by content hash wherever labels or fields are read from a questions file
printf '{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": 12, "kind": "a"}\n{"question": "Zoe is 3. Sam is 9 years older. How old is Sam?", "answer": 12, "kind": "b"}\n' > $d/q2k.jsonl
expect 1 "q2k.jsonl is not the questions file $d/acts.st was recorded from ($d/q2.jsonl)" "probe train --questions OTHER refused" $B probe train --acts $d/acts.st --label field:kind --questions $d/q2k.jsonl --allow-small --out $d/pk
grep -q "labels would belong to other questions (--force uses it anyway)" $d/err.txt && [ ! -e $d/pk ] && ok "probe train: the refusal names the hashes and --force, and creates nothing" || bad "probe train provenance: $(cat $d/err.txt)"
expect 1 "is not the questions file $d/acts.st was recorded from" "vectors extract --where --questions OTHER refused" $B vectors extract --acts $d/acts.st --slot latent3 --where kind=a --questions $d/q2k.jsonl --name v --out $d/xk.safetensors

# ---- a signal leaves no temporary file: SIGTERM and SIGHUP unlink NAME.tmp.PID, then kill as before ----
for sig in TERM HUP; do
  rm -f $d/sig.jsonl $d/sig.jsonl.tmp.*
  $B gen-templates --draws 100000 --out $d/sig.jsonl 2> /dev/null & p=$!
  n=0; while [ $n -lt 200 ] && ! ls $d/sig.jsonl.tmp.* > /dev/null 2>&1; do sleep 0.01; n=$((n + 1)); done
  kill -$sig $p; wait $p; rc=$?
  left=$(ls $d/sig.jsonl* 2> /dev/null)
  if [ $rc -gt 128 ] && [ -z "$left" ]; then ok "SIG$sig: killed (exit $rc), no temporary or partial file left"; else bad "SIG$sig: exit $rc, left: $left"; fi
done

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
