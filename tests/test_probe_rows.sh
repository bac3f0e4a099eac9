#!/bin/sh
# codi probe scoring rows on codi-nano: probe train writes its held-out rows (question index, file
# line, slot, label, predicted, class probabilities) and probe apply every row it scores; accuracy
# with its Wilson interval and AUC (binary and macro) with its bootstrap interval over whole
# questions are recomputed from those rows with numpy (tests/check_probe_rows.py).
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/probe_rows
rm -rf $d; mkdir -p $d
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
have_np=0; $PY -c "import numpy" 2>/dev/null && have_np=1

$B record --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 80 --out $d/acts.safetensors > /dev/null 2> $d/rec.err ||
  { bad "codi record"; cat $d/rec.err; }
for rule in parity step; do
  $B probe train --acts $d/acts.safetensors --label $rule --layers 3,6 --out $d/$rule > $d/$rule.out 2> $d/$rule.err; rc=$?
  [ $rc -eq 0 ] && grep -q "bootstrap over questions" $d/$rule.out && [ "$(wc -l < $d/$rule/rows.csv)" -eq $((2 * 96 + 1)) ] &&
    head -1 $d/$rule/rows.csv | grep -q "^probe,question_index,line,slot,slot_label,label,predicted,p_class0,p_class1," &&
    awk -F, 'NR > 1 && $3 != $2 + 1 { bad = 1 } END { exit bad }' $d/$rule/rows.csv &&
    ok "probe train --label $rule: 96 held-out rows per probe with question index and file line (from the recorded questions file)" ||
    { bad "probe train --label $rule (exit $rc)"; cat $d/$rule.err; }
done
$B probe apply --probes $d/parity/probes.safetensors --acts $d/acts.safetensors --out $d/apply.csv > $d/apply.out 2> $d/apply.err; rc=$?
[ $rc -eq 0 ] && [ "$(wc -l < $d/apply.csv)" -eq $((2 * 80 * 7 + 1)) ] && grep -q "^resid.layer6.pooled *all slots *held-out *112 " $d/apply.out &&
  ok "probe apply: every row scored in the rows file, and a line over all slots of a pooled probe per split" || { bad "probe apply (exit $rc)"; cat $d/apply.err; }
if [ $have_np -eq 1 ]; then
  $PY tests/check_probe_rows.py $d/parity/rows.csv $d/parity/cells.csv $d/apply.csv $d/apply.out > $d/py1.txt 2>&1 &&
    ok "parity (binary): $(cat $d/py1.txt)" || { bad "parity scores recomputed"; cat $d/py1.txt; }
  $PY tests/check_probe_rows.py $d/step/rows.csv $d/step/cells.csv > $d/py2.txt 2>&1 &&
    ok "step (6 classes, macro AUC): $(cat $d/py2.txt)" || { bad "step scores recomputed"; cat $d/py2.txt; }
else skip "probe scores recomputed: no numpy"; skip "macro AUC recomputed: no numpy"; fi
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
