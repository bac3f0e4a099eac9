#!/bin/sh
# codi record, lens --questions and vectors --questions through the batched runner (codi_batch_*)
# on codi-nano: --batch 1 (codi_run's bits) and --batch 8 give the same outputs. Batched products
# sum in another order (codi_lens.h, the batched runner), so float tensors are compared within a
# relative L2 of 1e-5 and everything discrete (answer ids, predictions, ranks) exactly.
B=${CODI_BIN:-build/codi}
C=${CHECK_VECTORS:-build/check_vectors_san}
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
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

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
