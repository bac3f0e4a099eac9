#!/bin/sh
# codi record, lens --questions and vectors --questions through the batched runner (codi_batch_*)
# on codi-nano: --batch 1 (codi_run's bits) and --batch 8 give the same outputs. Batched products
# sum in another order (codi_lens.h, the batched runner), so float tensors are compared within a
# relative L2 of 1e-5 and everything discrete (answer ids, predictions, ranks) exactly.
B=${CODI_BIN:-build/codi}
C=${CHECK_VECTORS:-build/check_vectors_san}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
check() { if out=$("$@"); then echo "$out"; pass=$((pass + 1)); else echo "$out"; fail=$((fail + 1)); fi; }
d=build/batch_runners_test; rm -rf $d; mkdir -p $d
nano="--model models/codi-nano/codi_nano.bin"
qs=models/codi-nano/test.jsonl

# 1. codi record: --batch 1 vs --batch 8 (10 questions, with K/V); a batched run stopped by --max-new and resumed
rec="$B record $nano --questions $qs --limit 10 --kv --max-answer 8"
$rec --batch 1 --out $d/r1.st > /dev/null 2> $d/err1 && $rec --batch 8 --out $d/r8.st > /dev/null 2> $d/err8 &&
  $rec --batch 8 --max-new 4 --out $d/rp.st > /dev/null 2> $d/errp && $rec --batch 8 --out $d/rp.st > /dev/null 2>> $d/errp ||
  { bad "codi record --batch 1 / 8"; cat $d/err1 $d/err8 $d/errp; }
grep -q "10 questions to record on 1 threads, batch 8" $d/err8 && grep -q "resuming $d/rp.st: 4 of 10" $d/errp &&
  ok "codi record prints its batch; a batched run resumes" || bad "codi record's batch / resume lines: $(cat $d/err8 $d/errp)"
for t in resid final latent_inputs key key_pre_rope value; do
  check $C compare "record $t: --batch 8 = --batch 1" $d/r8.st:$t $d/r1.st:$t 1e-5
  check $C compare "record $t: --batch 8 stopped after 4 and resumed = --batch 1" $d/rp.st:$t $d/r1.st:$t 1e-5
done
for t in answer_ids prompt_ids prompt_len positions prediction correct done question_index; do
  check $C maxabs "record $t: --batch 8 = --batch 1 exactly" $d/r8.st:$t $d/r1.st:$t 0
  check $C maxabs "record $t: --batch 8 resumed = --batch 1 exactly" $d/rp.st:$t $d/r1.st:$t 0
done

# 2. codi lens --questions: rows file and summary of --batch 8 (and of a batched run cut after 3 questions,
#    a torn line, resumed) = --batch 1's: the same rows in question order, ranks, chance ranks and rates
#    exactly, entropies within 1e-4 nats and probabilities within 1e-4 relative (seen: 1.4e-5, 1.7e-5)
lens="$B lens $nano --questions $qs --limit 10 --max-answer 8 --targets answer,intermediates --tokens Therefore --chance-permutations 2"
$lens --batch 1 --out $d/l1 > /dev/null 2> $d/err1 && $lens --batch 8 --out $d/l8 > /dev/null 2> $d/err8 ||
  { bad "codi lens --questions --batch 1 / 8"; cat $d/err1 $d/err8; }
grep -q "10 questions to run on 1 threads, batch 8" $d/err8 && ok "codi lens --questions prints its batch" || bad "codi lens's batch line: $(cat $d/err8)"
awk '/"done": true/ { n++ } { print } n == 3 { exit }' $d/l8_rows.jsonl > $d/lr_rows.jsonl
printf '{"index": 3, "line": 4, "lens": "log' >> $d/lr_rows.jsonl
$lens --batch 8 --out $d/lr > /dev/null 2> $d/errr && grep -q "resuming $d/lr_rows.jsonl: 3 of 10" $d/errr || { bad "codi lens --batch 8 resume"; cat $d/errr; }
# same_lens A B: every rows line and summary field equal; entropies within 1e-4, probabilities within 1e-4 relative
same_lens() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = sys.argv[1:3]
bad = []
def close(x, y, path):
    return abs(x - y) <= (1e-4 if "entropy" in path else 1e-4 * max(abs(x), abs(y)) + 1e-12)
def walk(x, y, path, loose):
    if isinstance(x, dict):
        if sorted(x) != sorted(y): bad.append(path + ": keys"); return
        for k in x:
            if k != "rows_file": walk(x[k], y[k], path + "." + k, loose or "entropy" in k or k == "prob")
    elif isinstance(x, list):
        if len(x) != len(y): bad.append(path + ": length"); return
        for u, v in zip(x, y): walk(u, v, path, loose)
    elif loose and isinstance(x, float) and isinstance(y, float):
        if not close(x, y, path): bad.append("%s: %r vs %r" % (path, x, y))
    elif x != y: bad.append("%s: %r vs %r" % (path, x, y))
la, lb = open(a + "_rows.jsonl").read().splitlines(), open(b + "_rows.jsonl").read().splitlines()
if len(la) != len(lb): bad.append("rows: %d vs %d lines" % (len(la), len(lb)))
for i, (x, y) in enumerate(zip(la, lb)): walk(json.loads(x), json.loads(y), "rows line %d" % (i + 1), False)
walk(json.load(open(a + ".json")), json.load(open(b + ".json")), "json", False)
print("%d rows lines; %s" % (len(la), "; ".join(bad[:3]) if bad else "equal"))
sys.exit(1 if bad or len(la) < 50 else 0)
PY
}
if ! command -v python3 > /dev/null; then skip "codi lens --batch: no python3"; else
  r=$(same_lens $d/l1 $d/l8) && ok "codi lens --questions: --batch 8 = --batch 1 ($r)" || bad "codi lens --questions --batch 8 vs 1: $r"
  r=$(same_lens $d/l1 $d/lr) && ok "codi lens --questions: --batch 8 cut after 3 questions, resumed = --batch 1 ($r)" || bad "codi lens --batch 8 resumed vs 1: $r"
fi
cmp -s $d/l1_rates.csv $d/l8_rates.csv && cmp -s $d/l1_rates.csv $d/lr_rates.csv && ok "codi lens --questions: the rates CSV of --batch 8 (and resumed) = --batch 1, byte for byte" || bad "codi lens rates CSV differs with --batch 8"

# 3. codi vectors --questions: the means of --batch 8 = --batch 1's within 1e-5 (their sums are made in
#    question order whatever order the runs end in), post- and pre-RoPE keys
vec="$B vectors $nano --questions $qs --limit 10"
$vec --batch 1 --out $d/v1.st > /dev/null 2> $d/err1 && $vec --batch 8 --out $d/v8.st > /dev/null 2> $d/err8 &&
  $vec --batch 1 --keys pre --out $d/v1p.st > /dev/null 2>> $d/err1 && $vec --batch 8 --keys pre --out $d/v8p.st > /dev/null 2>> $d/err8 ||
  { bad "codi vectors --questions --batch 1 / 8"; cat $d/err1 $d/err8; }
grep -q "10 questions on 1 threads, batch 8" $d/err8 && ok "codi vectors prints its batch" || bad "codi vectors's batch line: $(cat $d/err8)"
for t in mean_final mean_key mean_value; do check $C maxabs "vectors $t: --batch 8 = --batch 1" $d/v8.st:$t $d/v1.st:$t 1e-5; done
check $C maxabs "vectors --keys pre mean_key_pre_rope: --batch 8 = --batch 1" $d/v8p.st:mean_key_pre_rope $d/v1p.st:mean_key_pre_rope 1e-5
check $C compare "vectors diff_2_5: --batch 8 = --batch 1" $d/v8.st:diff_2_5 $d/v1.st:diff_2_5 1e-5
check $C compare "vectors key_diff_1_6: --batch 8 = --batch 1" $d/v8.st:key_diff_1_6 $d/v1.st:key_diff_1_6 1e-5

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
