#!/bin/sh
# codi kv-response (steer latent l, run one more latent, read the new KV) on codi-nano: an edit of
# alpha 0 moves nothing and no test of it survives correction; a real edit moves the steered slot's
# K/V at every layer and the next slot's values, and differs from its random controls of the same
# norm in tests that survive Holm; every summary number is recomputed from the rows file
# (tests/check_kv_response.py: numpy, scipy, statsmodels); --batch 1 gives the same rows; a kill -9 and a rows
# file cut short resumes to the same file, one of other settings is refused; bad usage is refused.
B=${CODI_BIN:-build/codi_san}   # AddressSanitizer + UBSan
PY=/usr/bin/python3; [ -x $PY ] || PY=python3
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skipped() { echo "ok - # SKIP $1"; skip=$((skip + 1)); }
d=build/kvr_test; rm -rf $d; mkdir -p $d
model="--model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl"; nano="$model --limit 12"
echo '{"name": "zero", "edits": [{"at": "latent_input", "step": 3, "alpha": 0, "random": {"seed": 5, "norm": 8}}]}' > $d/zero.json
echo '{"name": "z3", "edits": [{"at": "latent_input", "step": 3, "random": {"seed": 5, "norm": 8}}]}' > $d/z3.json
have_py=0; $PY -c "import numpy, scipy.stats, statsmodels.stats.multitest" 2>/dev/null && have_py=1
if $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --out $d/r > $d/out.txt 2> $d/err.txt; then
  ok "kv-response runs (2 specs x (1 + 2 random controls), 12 questions, --batch default)"
  [ "$(wc -l < $d/r_rows.jsonl)" -eq $((1 + 12 * 7)) ] && head -1 $d/r_rows.jsonl | grep -q '"codi_kv_response_rows": 1' &&
    ok "rows file: a settings line, then per question 6 condition lines and a done line" || bad "rows file: $(wc -l < $d/r_rows.jsonl) lines"
  awk -F, 'NR > 1 && $1 == "\"zero\"" { n++; if ($9 > 1e-5 || $13 > 1e-5 || $17 < 1 - 1e-9 || $21 < 1 - 1e-9) bad = 1 } END { exit bad || n != 12 }' $d/r.csv &&
    ok "alpha 0: K and V unchanged (to batch rounding, 1e-5) at both slots and every layer (12 rows)" || bad "alpha 0 rows: $(grep '^"zero",' $d/r.csv | head -2)"
  awk -F, '$1 == "\"z3\"" && $4 == "steered" && ($9 <= 0 || $13 <= 0 || $11 <= 0) { bad = 1 } END { exit bad }' $d/r.csv &&
    ok "an edit of latent 3 moves its own slot's K and V at every layer (bootstrap lower bounds > 0)" || bad "steered slot rows"
  awk -F, '$1 == "\"z3\"" && $4 == "next" && $5 == 4 && $13 > 0 { n++ } END { exit n != 6 }' $d/r.csv &&
    ok "and moves the next latent's values at all 6 layers" || bad "next slot rows: $(grep '^"z3",.*next' $d/r.csv | head -2)"
  awk -F, 'NR > 1 && $1 == "\"zero\"" && ($17 != 0 || $18 != 0) { bad = 1 } NR > 1 && $1 == "\"z3\"" && $17 == 1 { n++ } END { exit bad || n < 1 }' $d/r_paired.csv &&
    ok "paired tests: nothing of alpha 0 survives Holm or BH; the large edit has survivors ($(awk -F, '$17 == 1' $d/r_paired.csv | wc -l) of 24)" ||
    bad "survivors: $(awk -F, '$17 == 1 || $18 == 1' $d/r_paired.csv | head -3)"
  [ "$(grep -c '"condition": "z3~random2"' $d/out.txt)" -eq 1 ] && [ "$(wc -l < $d/out.txt)" -eq 7 ] &&
    tail -1 $d/out.txt | grep -q '"tests": 48, .*"test": "two-sided sign-flip permutation test, exact (2^12 sign patterns)"' &&
    ok "stdout: one JSON line per condition, random controls included, and the tests line (48 tests, exact sign-flip)" || bad "stdout: $(cat $d/out.txt)"
  grep -q "48 paired tests, [0-9]* survive Holm" $d/err.txt && ok "the summary line says how many tests were made" || bad "summary line: $(tail -1 $d/err.txt)"
  for f in steered_keys steered_values next_keys next_values paired_steered paired_next; do
    grep -q "^<svg" $d/r_$f.svg && grep -q "</svg>" $d/r_$f.svg || { bad "plot $f"; f=failed; break; }
  done
  [ "$f" != failed ] && grep -q "<line" $d/r_paired_steered.svg && ok "four heatmaps (cells: intervals) and two paired plots with error bars written"
  if [ $have_py = 1 ]; then
    $PY tests/check_kv_response.py $d/r $d/r_rows.jsonl $d/out.txt > $d/check.txt 2>&1 &&
      ok "every summary number recomputed from the rows (bootstrap, t, exact p = scipy permutation_test, Holm/BH = statsmodels): $(cat $d/check.txt)" ||
      bad "recomputed summary: $(head -5 $d/check.txt)"
    sed '2s/"value_rel": \[\[[0-9.e-]*/"value_rel": [[0.5/' $d/r_rows.jsonl > $d/tampered.jsonl
    ! cmp -s $d/tampered.jsonl $d/r_rows.jsonl && ! $PY tests/check_kv_response.py $d/r $d/tampered.jsonl $d/out.txt > /dev/null 2>&1 &&
      ok "the check fails on a rows file with one value changed" || bad "the check passes a changed rows file"
  else skipped "no numpy / scipy / statsmodels: summary not recomputed"; skipped "tamper check"; fi
else bad "kv-response runs: $(cat $d/err.txt)"; fi
# --batch 1: every run alone (codi_run's numbers); rows equal to the batched ones to float rounding
if $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --batch 1 --out $d/b1 > $d/b1.txt 2> $d/err.txt; then
  $PY - $d/r_rows.jsonl $d/b1_rows.jsonl <<'EOF' && ok "--batch 1: the same rows and summary as --batch 32 (values within 1e-5)" || bad "--batch 1 differs"
import json, sys
a = [json.loads(x) for x in open(sys.argv[1])]; b = [json.loads(x) for x in open(sys.argv[2])]
key = lambda r: (r.get("index"), r.get("condition", -1), r.get("done", False))
a = sorted(a[1:], key=key); b = sorted(b[1:], key=key)
assert len(a) == len(b) == 84
for x, y in zip(a, b):
    assert key(x) == key(y)
    for w in ("key_rel", "value_rel", "key_cos", "value_cos"):
        if w in x:
            assert all(abs(u - v) <= 1e-5 for s, t in zip(x[w], y[w]) for u, v in zip(s, t)), (x, y)
EOF
  cmp -s $d/out.txt $d/b1.txt || [ "$(tail -1 $d/out.txt)" = "$(tail -1 $d/b1.txt)" ] && ok "--batch 1: the same tests and survivors" || bad "--batch 1 tests: $(tail -1 $d/b1.txt)"
else bad "kv-response --batch 1: $(cat $d/err.txt)"; fi
# kill -9 mid-question: a rows file cut inside question 5's lines resumes to the same file
head -n 36 $d/b1_rows.jsonl > $d/cut_rows.jsonl; sed -n 37p $d/b1_rows.jsonl | head -c 100 >> $d/cut_rows.jsonl
if $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --batch 1 --rows $d/cut_rows.jsonl --out $d/cut > $d/cut.txt 2> $d/err.txt &&
   grep -q "resuming $d/cut_rows.jsonl: 5 of 12 questions already there" $d/err.txt && cmp -s $d/cut_rows.jsonl $d/b1_rows.jsonl && cmp -s $d/cut.txt $d/b1.txt; then
  ok "a rows file cut mid-question resumes (5 of 12 there) to the same rows and summary"
else bad "resume: $(tail -3 $d/err.txt)"; fi
# a real kill -9 once two questions are in the rows file; the rerun completes it to the same rows
$B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --batch 1 --rows $d/kill_rows.jsonl --out $d/kill > /dev/null 2>&1 &
pid=$!; i=0
n_done() { cat $d/kill_rows.jsonl 2>/dev/null | grep -c '"done": true'; }
while [ $i -lt 600 ] && [ "$(n_done)" -lt 2 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
there=$(n_done)
[ "$there" -ge 2 ] && $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --batch 1 --rows $d/kill_rows.jsonl --out $d/kill > $d/kill.txt 2> $d/err.txt &&
  grep -q "resuming $d/kill_rows.jsonl: [0-9]* of 12" $d/err.txt && cmp -s $d/kill_rows.jsonl $d/b1_rows.jsonl && cmp -s $d/kill.txt $d/b1.txt &&
  ok "kill -9 with $there of 12 questions in the rows file: the rerun resumes to the same rows and summary" || bad "after kill -9 ($there there): $(tail -2 $d/err.txt)"
$B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 1 --batch 1 --rows $d/cut_rows.jsonl --out $d/cut2 > /dev/null 2> $d/err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "holds the rows of another run" $d/err.txt && ok "a resume with other settings (--random-controls) is refused" || bad "other settings (exit $rc): $(head -2 $d/err.txt)"
sed '3s/"key_rel": \[\[[^],]*, /"key_rel": [[/' $d/b1_rows.jsonl > $d/short_rows.jsonl
$B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --rows $d/short_rows.jsonl --out $d/short > /dev/null 2> $d/err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "short_rows.jsonl:3: not a row of this run" $d/err.txt && ok "a rows line with 5 of 6 layers is refused with FILE:LINE" || bad "short row (exit $rc): $(head -2 $d/err.txt)"
# analysis options may change on a complete rows file: Monte Carlo sign flips near the exact p
if $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --random-controls 2 --permutations 1000 --rows $d/r_rows.jsonl --out $d/mc > $d/mc.txt 2> $d/err.txt &&
   grep -q "12 of 12 questions already there" $d/err.txt; then
  paste -d, $d/r_paired.csv $d/mc_paired.csv | awk -F, 'NR > 1 { n++; k = $31 * 1001 - 1; d = $31 - $13; if (d < 0) d = -d;
      if ($32 != "sign_flip_monte_carlo" || k - int(k + 0.5) > 1e-6 || int(k + 0.5) - k > 1e-6 || d > 0.06) bad = 1 } END { exit bad || n != 48 }' &&
    ok "--permutations 1000 on the complete rows: Monte Carlo p = (1 + hits) / 1001, within 0.06 of the exact p" || bad "Monte Carlo p: $(sed -n 2,3p $d/mc_paired.csv)"
else bad "--permutations on complete rows: $(tail -2 $d/err.txt)"; fi
# --random-draw question: control directions drawn per question (each row its own draw_seed)
if $B kv-response $model --limit 3 --steer $d/z3.json --step 3 --random-controls 2 --random-draw question --out $d/rq > /dev/null 2> $d/err.txt; then
  [ "$(grep -o '"draw_seed": [0-9]*' $d/rq_rows.jsonl | sort -u | wc -l)" -eq 6 ] && grep -q '"random_draw": "question"' $d/rq_rows.jsonl &&
    [ "$(grep -o '"draw_seed": [0-9]*' $d/r_rows.jsonl | sort -u | wc -l)" -eq 2 ] &&
    ok "--random-draw question: 3 questions x 2 controls, 6 draw seeds (--random-draw spec: 2)" || bad "draw seeds: $(grep -o '"draw_seed": [0-9]*' $d/rq_rows.jsonl | sort -u)"
else bad "--random-draw question: $(cat $d/err.txt)"; fi
# --keys pre: both runs' keys at a slot share its rotation (orthogonal), so the key changes and
# cosines equal the post-RoPE ones to float rounding (1e-5), and are not all zero
if $B kv-response $nano --steer $d/z3.json --step 3 --random-controls 0 --keys pre --out $d/rp > $d/rp.txt 2> $d/err.txt; then
  awk -F, 'FNR == 1 { next } NR == FNR { k[$1 $4 $6] = $9; c[$1 $4 $6] = $17; next }
           ($1 $4 $6) in k { n++; d = $9 - k[$1 $4 $6]; e = $17 - c[$1 $4 $6]; if (d < 0) d = -d; if (e < 0) e = -e;
                             if (d > 1e-5 * (1 + $9) || e > 1e-5) bad = 1; if ($9 > 0) moved++ }
           END { exit bad || n != 12 || moved != 12 }' $d/r.csv $d/rp.csv &&
    ok "--keys pre: key changes and cosines = post-RoPE ones at both slots and every layer (12 rows, to 1e-5)" || bad "--keys pre rows: $(head -3 $d/rp.csv)"
  tail -1 $d/rp.txt | grep -q '"tests": 0' && [ ! -e $d/rp_paired.csv ] && ok "--random-controls 0: no paired tests" || bad "no controls: $(tail -1 $d/rp.txt)"
else bad "kv-response --keys pre: $(cat $d/err.txt)"; fi
$B kv-response $nano --steer $d/z3.json --step 3 --keys both --out $d/r4 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 2 ] && grep -q -- "--keys is post" $d/err.txt && ok "--keys other than post|pre: usage error" || bad "--keys both (exit $rc)"
$B kv-response $nano --steer $d/z3.json --step 3 --random-draw cell --out $d/r5 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 2 ] && grep -q -- "--random-draw is spec or question" $d/err.txt && ok "--random-draw other than spec|question: usage error" || bad "--random-draw cell (exit $rc)"
$B kv-response $nano --steer $d/z3.json --step 1 --out $d/r2 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "z3.json: .*step.*(the runs have --step + 1 = 2 latent steps)" $d/err.txt && [ ! -e $d/r2_rows.jsonl ] &&
  ok "a spec editing a step past l + 1 is refused before any run" || bad "late step (exit $rc): $(head -2 $d/err.txt)"
$B kv-response $nano --step 3 --out $d/r3 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 2 ] && grep -q -- "--steer" $d/err.txt && ok "no --steer: usage error" || bad "no --steer (exit $rc)"
echo "$pass passed, $fail failed, $skip skipped"
