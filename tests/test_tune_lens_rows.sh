#!/bin/sh
# codi tune-lens held-out evaluation: per-sample rows (question, file line, latent step, KL of the
# logit and the tuned lens per layer), the summary recomputed from them with numpy
# (tests/check_tune_lens_rows.py: means, standard errors, bootstrap intervals over questions, the
# paired tuned - logit difference, the split by whole question), a cut-short rows file resumed to
# the same rows, and the rows of another lens refused.
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/tune_lens_rows
rm -rf $d; mkdir -p $d
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
tl="tune-lens --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 40 --steps 20 --batch 16 --held-out 118"

$B $tl --out $d/lens.safetensors > $d/a.out 2> $d/a.err; rc=$?
[ $rc -eq 0 ] && grep -q "120 samples held out (not 118): the split keeps each question's samples on one side" $d/a.err &&
  [ "$(wc -l < $d/lens_heldout_rows.jsonl)" -eq 121 ] && grep -q '"question": 20, "line": 21, "latent": 1, "kl_logit": \[' $d/lens_heldout_rows.jsonl &&
  grep -q "^    5    20     120  " $d/a.out && head -1 $d/lens_heldout.csv | grep -q "^latent,layer,n_questions,n_samples,lens,mean,se,ci_low,ci_high,ci_method$" &&
  ok "tune-lens: 120 held-out rows (20 whole questions), the table with intervals, CSV and JSON" || { bad "tune-lens held-out rows (exit $rc)"; cat $d/a.err; }
if $PY -c "import numpy" 2>/dev/null; then
  $PY tests/check_tune_lens_rows.py $d/lens_heldout_rows.jsonl $d/lens_heldout.json 6 > $d/py.txt 2>&1 &&
    ok "held-out summary recomputed from the rows ($(cat $d/py.txt))" || { bad "held-out summary recomputed"; cat $d/py.txt; }
else skip "held-out summary recomputed: no numpy"; fi

# a run killed while writing rows: the file cut after 10 rows and in the middle of the 11th, resumed
cp $d/lens_heldout_rows.jsonl $d/full_rows.jsonl; cp $d/lens_heldout.csv $d/full.csv
{ head -11 $d/full_rows.jsonl; sed -n 12p $d/full_rows.jsonl | head -c 50; } > $d/lens_heldout_rows.jsonl
$B $tl --out $d/lens.safetensors --force > $d/b.out 2> $d/b.err; rc=$?
[ $rc -eq 0 ] && grep -q "resuming $d/lens_heldout_rows.jsonl: 10 of 120 held-out samples already there" $d/b.err &&
  cmp -s $d/full_rows.jsonl $d/lens_heldout_rows.jsonl && cmp -s $d/full.csv $d/lens_heldout.csv &&
  ok "a rows file cut short resumes to the same rows and the same summary" || { bad "rows resume (exit $rc)"; cat $d/b.err; }

# another lens (more steps) on the same rows file: refused, no rows changed
$B tune-lens --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 40 --steps 21 --batch 16 --held-out 118 \
  --out $d/other.safetensors --rows $d/lens_heldout_rows.jsonl --summary $d/other > /dev/null 2> $d/c.err; rc=$?
[ $rc -ne 0 ] && grep -q "holds the rows of another evaluation" $d/c.err && cmp -s $d/full_rows.jsonl $d/lens_heldout_rows.jsonl &&
  ok "the rows of another lens are refused (exit $rc) and left as they were" || { bad "rows of another lens"; cat $d/c.err; }
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
