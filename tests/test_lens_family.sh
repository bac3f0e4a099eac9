#!/bin/sh
# codi lens --questions: the family of rate-vs-chance tests corrected (Holm, Benjamini-Hochberg) on
# codi-nano. The gold answer and intermediates (at chance on codi-nano) leave no survivor; the
# model's own predictions as targets (a targets file) at the answer positions are found far above
# chance and survive. Sign-test p, Holm and BH recomputed from the rows with scipy / statsmodels
# (tests/check_lens_family.py).
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/lens_family
rm -rf $d; mkdir -p $d
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
have_sm=0; $PY -c "import scipy.stats, statsmodels.stats.multitest" 2>/dev/null && have_sm=1
lens="lens --model models/codi-nano/codi_nano.bin --exact --max-answer 8 --questions models/codi-nano/test.jsonl"

$B $lens --limit 40 --chance-permutations 3 --targets answer,intermediates --out $d/null > $d/null.out 2> $d/null.err; rc=$?
[ $rc -eq 0 ] && grep -q "corrected over the family of 294 tests" $d/null.out && grep -q "): 0 survive Holm at 5% (\* above), 0 survive Benjamini-Hochberg" $d/null.out &&
  grep -q '"family": {"tests": 294, .*"holm_survivors": 0, "bh_survivors": 0}' $d/null.json &&
  ok "answer and intermediates (at chance on codi-nano): 294 tests, no survivor of Holm or BH" || { bad "null family (exit $rc)"; tail -5 $d/null.out; cat $d/null.err; }
head -40 tests/data/codi_nano_reference_predictions.txt | awk '{ printf "{\"index\": %d, \"targets\": [%s]}\n", NR - 1, $1 }' > $d/pred.jsonl
$B $lens --limit 40 --chance-permutations 3 --positions answer --targets answer,file:$d/pred.jsonl --out $d/pred > $d/pred.out 2> $d/pred.err; rc=$?
[ $rc -eq 0 ] && grep -q "): 9 survive Holm at 5%" $d/pred.out && grep -q "^logit  file:build/lens_family/p answer 7       0    1   100.0%     2.5%   5.3e-10$" $d/pred.out &&
  grep -q "^answer 6 .*+97.8% > 1.1e-09 \* 1.8e-10 +$" $d/pred.out &&
  ok "the model's own predictions as targets at the answer positions: 9 cells survive Holm, listed and marked" || { bad "planted family (exit $rc)"; tail -14 $d/pred.out; cat $d/pred.err; }
# with --tuned: both lenses in the family, the tuned lens's final index (the logit lens's) counted once
$B tune-lens --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 10 --steps 5 --batch 8 --held-out 0 --out $d/lens.safetensors > /dev/null 2>&1
$B $lens --limit 20 --tuned $d/lens.safetensors --targets answer --chance-permutations 2 --out $d/tuned > $d/tuned.out 2> $d/tuned.err; rc=$?
[ $rc -eq 0 ] && grep -q "corrected over the family of 273 tests" $d/tuned.out &&
  ok "--tuned: 2 lenses x 7 positions x 7 residual indices x 3 k, less the tuned lens's final index: 273 tests" || { bad "tuned family (exit $rc)"; cat $d/tuned.err; }
if [ $have_sm -eq 1 ]; then
  for r in null pred tuned; do
    $PY tests/check_lens_family.py $d/${r}_rows.jsonl $d/$r.json $d/${r}_rates.csv > $d/$r.py 2>&1 && ok "$r: $(cat $d/$r.py)" || { bad "$r family recomputed"; cat $d/$r.py; }
  done
else skip "family recomputed: no scipy / statsmodels"; skip "family recomputed (planted)"; skip "family recomputed (tuned)"; fi
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
