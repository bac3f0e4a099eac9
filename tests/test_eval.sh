#!/bin/sh
# codi eval end to end on codi-nano: conditions and summary lines, resume after kill -9 gives the
# same totals, shards + --merge give the same totals, malformed question lines are reported with
# their line number while the run goes on, a results file of another command is refused, and the
# statistics against published / exact values (Newcombe 1998's Wilson examples; McNemar by hand),
# a spec against its random controls (by hand, and recomputed from the rows by tests/check_eval_stats.py
# with Holm / BH), --random-draw question, and condition names that could collide.
pass=0; fail=0; skipped=0
skip() { echo "skip - $1"; skipped=$((skipped + 1)); }
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
CODI=${CODI:-build/codi}
d=build/eval_test
rm -rf $d; mkdir -p $d
nano="--model models/codi-nano/codi_nano.bin --exact --max-answer 12"
qs=models/codi-nano/test.jsonl
spec=tests/data/steer/s1_z_add.json       # z_3 += 2 v (codi-nano has the tiny model's width, 256)
summary() { grep '^{"condition"' "$1" | sed 's/, "mcnemar_p.*//'; }

# 1. an uninterrupted run: baseline, the spec, 1 random control; 2 threads
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --threads 2 --out $d/full.jsonl > $d/full.out 2> $d/full.err
n=$(grep -c '^{"condition"' $d/full.out)
tail -n 4 $d/full.out | grep -q '^{"condition": "s1_z_add~random2", "questions": 12, "correct": [0-9]*, "accuracy": ' && [ "$n" -eq 3 ] &&
  [ "$(grep -c '"index"' $d/full.jsonl)" -eq 36 ] && [ -f $d/full.csv ] && [ "$(wc -l < $d/full.csv)" -eq 4 ] &&
  ok "eval: 3 conditions x 12 questions, one JSON summary line each (last lines), CSV" || { bad "eval full run"; cat $d/full.err; }
grep '"condition": "baseline", "index"' $d/full.jsonl | sort -t: -k3 -n | sed 's/.*"prediction": \([^,]*\),.*/\1/' > $d/pred.txt
sed -n 1,12p tests/data/codi_nano_reference_predictions.txt > $d/ref.txt
n_same=$(paste -d' ' $d/pred.txt $d/ref.txt | awk '$1 == $2' | wc -l)
[ "$n_same" -eq 12 ] && ok "eval baseline: all 12 predictions equal PyTorch's (reference_infer.py)" || bad "eval baseline: $n_same of 12 predictions equal PyTorch's"
grep -q 'questions/minute' $d/full.err && ok "eval reports its throughput" || bad "eval throughput line"

# 1b. the batched runner against one run per thread: the same results line for line (3 conditions x 12
#     questions), and all 500 codi-nano questions through batches of 32 give PyTorch's predictions
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --threads 2 --batch 1 --out $d/b1.jsonl > /dev/null 2> $d/b1.err
grep -q 'batch 1$' $d/b1.err && grep -q 'batch 32$' $d/full.err &&
  [ "$(grep '"index"' $d/b1.jsonl | sort)" = "$(grep '"index"' $d/full.jsonl | sort)" ] &&
  ok "eval --batch 1 (one run per thread) and the default --batch 32: the same 36 result lines" || bad "eval --batch 1 vs --batch 32"
$CODI eval --model models/codi-nano/codi_nano.bin --exact --questions $qs --threads 2 --batch 32 --out $d/all.jsonl > /dev/null 2>&1
grep '"index"' $d/all.jsonl | sort -t: -k3 -n | sed 's/.*"prediction": \([^,]*\),.*/\1/' > $d/pred_all.txt
n_same=$(paste -d' ' $d/pred_all.txt tests/data/codi_nano_reference_predictions.txt | awk '$1 == $2' | wc -l)
[ "$n_same" -eq 500 ] && ok "eval --batch 32: all 500 codi-nano predictions equal PyTorch's (as codi run's single-stream ones)" ||
  bad "eval --batch 32: $n_same of 500 predictions equal PyTorch's"

# 2. kill -9 mid-run, a torn last line, then the same command again: same totals
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --threads 1 --out $d/killed.jsonl > /dev/null 2>&1 &
pid=$!
i=0
while [ "$(cat $d/killed.jsonl 2>/dev/null | grep -c '"index"')" -lt 10 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
before=$(grep -c '"index"' $d/killed.jsonl)
printf '{"condition": "baseline", "index": 29, "li' >> $d/killed.jsonl
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --threads 2 --out $d/killed.jsonl > $d/resumed.out 2> $d/resumed.err
[ "$before" -lt 36 ] && grep -q "resuming" $d/resumed.err && [ "$(summary $d/resumed.out)" = "$(summary $d/full.out)" ] &&
  [ "$(grep -c '"index"' $d/killed.jsonl)" -eq 36 ] &&
  ok "kill -9 after $before of 36 results (+ a torn line), resumed: same totals, 36 results" || bad "resume after kill -9 ($before before)"

# 3. shards 1/2 and 2/2, merged: same totals
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --shard 1/2 --out $d/s0.jsonl > /dev/null 2>&1
$CODI eval $nano --questions $qs --limit 12 --steer $spec --random-controls 1 --shard 2/2 --out $d/s1.jsonl > /dev/null 2>&1
$CODI eval --merge $d/s0.jsonl $d/s1.jsonl > $d/merged.out 2>/dev/null
[ "$(summary $d/merged.out)" = "$(summary $d/full.out)" ] && ok "--shard 1/2 + 2/2, then --merge: same totals" || bad "shards + merge"

# 4. malformed lines: reported with their number, the run goes on
{ sed -n 1,2p $qs; echo '{"question": "broken'; echo '{"answer": 3}'; sed -n 3,4p $qs; } > $d/q.jsonl
$CODI eval $nano --questions $d/q.jsonl --out $d/bad.jsonl > $d/bad.out 2> $d/bad.err
grep -q "$d/q.jsonl:3: " $d/bad.err && grep -q "$d/q.jsonl:4: no \"question\"" $d/bad.err &&
  tail -n 1 $d/bad.out | grep -q '"questions": 4,' && ok "malformed lines 3 and 4 reported by number; the 4 good questions ran" || { bad "malformed lines"; cat $d/bad.err; }
$CODI eval --merge $d/s0.jsonl $d/bad.jsonl > /dev/null 2> $d/merge.err; rc=$?
[ $rc -ne 0 ] && grep -q "other settings" $d/merge.err && ok "--merge refuses files of other settings" || bad "merge of mismatched files"

# 5. a results file of another command is refused
$CODI eval $nano --questions $qs --limit 12 --latents 5 --out $d/full.jsonl > /dev/null 2> $d/other.err; rc=$?
[ $rc -ne 0 ] && grep -q "holds results of another command" $d/other.err && ok "resuming into a file of other settings is refused" || bad "mismatched resume"
$CODI eval $nano --questions $qs --steer tests/data/steer/no_such.json --out $d/x.jsonl > /dev/null 2> $d/spec.err; rc=$?
[ $rc -ne 0 ] && grep -q "no_such.json: cannot read" $d/spec.err && ok "a missing spec: message and non-zero exit" || bad "missing spec"
printf '{"edits": [{"at": "resid", "layer": 9, "vector": "v.safetensors:x"}]}' > $d/bad_spec.json
build/codi run --model models/codi-nano/codi_nano.bin --question "Tom has 3 apples." --steer $d/bad_spec.json > /dev/null 2> $d/spec2.err; rc=$?
[ $rc -eq 1 ] && grep -q 'bad_spec.json: edit 0: "layer": must be "all" or a whole number in 0..6 (at "resid")' $d/spec2.err &&
  ok "codi run --steer: a malformed spec names the edit and field, exit 1" || bad "codi run --steer malformed: $(cat $d/spec2.err)"
out=$(build/codi run --model models/codi-nano/codi_nano.bin --exact --question "Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?" --steer $spec)
echo "$out" | grep -q '^answer number: ' && ok "codi run --question --steer answers under the spec" || bad "codi run --steer"

# 6. statistics: Wilson intervals of Newcombe (1998) 81/263 = [0.2553, 0.3662] and 15/148 =
#    [0.0624, 0.1605]; McNemar exact with 5 vs 1 discordant pairs: 2 (1 + 6) / 64 = 0.21875
h='{"codi_eval": 1, "model": "x", "questions": "y", "latents": 6, "recipe": 0, "max_answer": 1, "limit": 0, "seed": 1, "shard": "0/1", "conditions": ["baseline", "c"]}'
awk -v h="$h" 'BEGIN { print h;
  for (i = 0; i < 263; i++) printf "{\"condition\": \"baseline\", \"index\": %d, \"correct\": %s}\n", i, i < 81 ? "true" : "false";
  for (i = 0; i < 148; i++) printf "{\"condition\": \"c\", \"index\": %d, \"correct\": %s}\n", i, i < 15 ? "true" : "false" }' > $d/stats.jsonl
$CODI eval --merge $d/stats.jsonl > $d/stats.out 2>/dev/null
ci=$(grep '^{"condition"' $d/stats.out | sed 's/.*"correct": \([0-9]*\), .*"ci95": \[\([0-9.]*\), \([0-9.]*\)\].*/\1 \2 \3/' | awk '{ printf "%s %.4f %.4f;", $1, $2, $3 }')
[ "$ci" = "81 0.2553 0.3662;15 0.0624 0.1605;" ] &&
  ok "Wilson 95% intervals equal Newcombe 1998's to 4 decimals (81/263, 15/148)" || bad "Wilson intervals: $ci"
awk -v h="$h" 'BEGIN { print h;
  for (i = 0; i < 10; i++) { printf "{\"condition\": \"baseline\", \"index\": %d, \"correct\": %s}\n", i, i < 7 ? "true" : "false";
                             printf "{\"condition\": \"c\", \"index\": %d, \"correct\": %s}\n", i, (i >= 5 && i < 7) || i == 9 ? "true" : "false" } }' > $d/mc.jsonl
$CODI eval --merge $d/mc.jsonl > $d/mc.out 2>/dev/null
grep -q '"condition": "c", .*"paired": 10, "diff_vs_baseline": -0.400000, "baseline_only": 5, "condition_only": 1, "mcnemar_p": 0.21875,' $d/mc.out &&
  ok "McNemar exact p for 5 vs 1 discordant pairs = 0.21875" || { bad "McNemar"; cat $d/mc.out; }

# 6b. a spec vs its random controls by hand: s vs s~random2 1 / 8 discordant (p = 2 (1 + 9) / 512 = 0.0390625),
#     vs s~random3 0 / 6 (p = 2 / 64 = 0.03125): p_vs_random = the larger; family steer {s, t}: Holm 0.078125
h2='{"codi_eval": 1, "model": "x", "questions": "y", "latents": 6, "recipe": 0, "max_answer": 1, "limit": 0, "seed": 1, "shard": "0/1", "conditions": ["baseline", "s", "s~random2", "s~random3", "t"]}'
awk -v h="$h2" 'function line(c, i, ok) { printf "{\"condition\": \"%s\", \"index\": %d, \"correct\": %s}\n", c, i, ok ? "true" : "false" }
  BEGIN { print h; for (i = 0; i < 40; i++) { line("baseline", i, i < 10); line("s", i, i > 0 && i < 18); line("s~random2", i, i < 10);
          line("s~random3", i, i > 0 && i < 12); line("t", i, i < 10) } }' > $d/ctl.jsonl
$CODI eval --merge $d/ctl.jsonl > $d/ctl.out 2>/dev/null
grep -q '^{"condition": "s", .*"random_control": "s~random2", "paired_vs_random": 40, "random_only": 1, "spec_only": 8, .*"p_vs_random": 0.0390625, "p_primary": 0.0390625, "p_holm": 0.078125, "q_bh": 0.078125, "family_size": 2, "effect": false}$' $d/ctl.out &&
  grep -q '^{"condition": "t", .*"p_vs_baseline": 1, "flips_to_right": 0, "flips_to_wrong": 0, .*"p_vs_random": null, "p_primary": 1, "p_holm": 1, "q_bh": 1,' $d/ctl.out &&
  grep -q '^\* = an effect: .*; 0 of 2 specs;' $d/ctl.out &&
  ok "spec vs 2 random controls by hand: p_vs_random = max(0.0390625, 0.03125), Holm 0.078125 over 2 specs, no effect" || { bad "spec vs random controls"; cat $d/ctl.out; }
if command -v python3 >/dev/null; then
  python3 tests/check_eval_stats.py $d/ctl.jsonl $d/ctl.out > $d/ctl.py 2>&1 && ok "hand-made file: every summary number recomputed from the rows ($(cat $d/ctl.py))" || { bad "recomputed summary"; cat $d/ctl.py; }
else skip "recomputed summary: no python3"; fi

# 6c. on codi-nano: a spec with alpha 0 (= the baseline), a strong one, 2 random controls drawn per question
for a in 0 200; do
  printf '{"name": "a%s", "edits": [{"at": "latent_input", "step": 3, "op": "add", "alpha": %s, "vector": "%s/tests/data/golden_tiny.safetensors:steer.v"}]}' $a $a "$PWD" > $d/a$a.json
done
$CODI eval $nano --questions $qs --limit 16 --steer $d/a0.json --steer $d/a200.json --random-controls 2 --random-draw question --threads 2 --out $d/rq.jsonl > $d/rq.out 2> $d/rq.err
grep -q '^{"condition": "a0", .*"p_vs_baseline": 1, "flips_to_right": 0, "flips_to_wrong": 0, "diff_vs_baseline_ci_low": [-0-9.e]*, .*"p_vs_random": 1,' $d/rq.out &&
  ok "alpha 0 = the baseline: p = 1 and no flips, vs the baseline and vs its random controls" || { bad "alpha 0 condition"; grep '"a0"' $d/rq.out; }
if command -v python3 >/dev/null; then
  python3 tests/check_eval_stats.py $d/rq.jsonl $d/rq.out > $d/rq.py 2>&1 && ok "codi-nano: strict JSON, contract keys, Wilson, McNemar vs baseline / vs random, Holm, BH recomputed ($(cat $d/rq.py))" || { bad "codi-nano summary recomputed"; cat $d/rq.py; }
else skip "codi-nano summary recomputed: no python3"; fi
seeds=$(grep '"condition": "a200~random1"' $d/rq.jsonl | sed 's/.*"draw_seed": \([0-9]*\).*/\1/' | sort -u | wc -l)
$CODI eval $nano --questions $qs --limit 5 --steer $d/a0.json --steer $d/a200.json --random-controls 2 --random-draw question --out $d/rq5.jsonl > /dev/null 2>&1
pick() { grep '^{"condition": "[^"]*~random' "$1" | awk -F'"index": ' '{ split($2, a, ","); if (a[1] < 5) print }' | sed 's/"line".*"prediction"/"prediction"/' | sort; }
[ "$seeds" -eq 16 ] && [ "$(pick $d/rq.jsonl)" = "$(pick $d/rq5.jsonl)" ] && [ -n "$(pick $d/rq5.jsonl)" ] &&
  ok "--random-draw question: 16 questions, 16 different draws per control; a second run draws the same (same predictions)" || bad "--random-draw question ($seeds seeds)"
$CODI eval --merge $d/rq.jsonl > $d/rqm.out 2>/dev/null
[ "$(grep '^{"condition"' $d/rqm.out)" = "$(grep '^{"condition"' $d/rq.out)" ] && ok "--merge recomputes the same summary from the rows" || bad "--merge summary"
sed 's/"name": "a0"/"name": "a200~random1"/' $d/a0.json > $d/clash.json
$CODI eval $nano --questions $qs --limit 2 --steer $d/a200.json --steer $d/clash.json --random-controls 1 --out $d/clash.jsonl > /dev/null 2> $d/clash.err; rc1=$?
$CODI eval $nano --questions $qs --limit 2 --steer $d/a0.json --steer $d/a0.json --out $d/clash2.jsonl > /dev/null 2> $d/clash2.err; rc2=$?
[ $rc1 -ne 0 ] && grep -q 'condition name "a200~random1" is taken, has quotes or holds "~random"' $d/clash.err && [ $rc2 -ne 0 ] && grep -q '"a0" is taken' $d/clash2.err &&
  ok "condition names that could collide with a random control, or repeat, are refused" || bad "name collisions: $(cat $d/clash.err $d/clash2.err)"

# 7. the template set: the generator reproduces data/templates.jsonl (seed 42); 1,000 questions
$CODI gen-templates --seed 42 | cmp -s - data/templates.jsonl && [ "$(wc -l < data/templates.jsonl)" -eq 1000 ] &&
  ok "codi gen-templates --seed 42 reproduces data/templates.jsonl (1,000 questions)" || bad "gen-templates"

# 8. the examples run: latent steering vs a random control, KV-cache steering through a spec
build/steer_latent 5 | grep -q '^5 questions: plain [0-9]* correct, z_4 + 2 diff(3,5): [0-9]*, z_4 + 2 random (same norm): [0-9]*$' &&
  ok "examples/steer_latent.c runs" || bad "examples/steer_latent.c"
build/steer_kv 5 | grep -q '^5 questions: plain [0-9]* correct, KV-steered [0-9]* correct, [0-9]* answers changed$' &&
  ok "examples/steer_kv.c runs" || bad "examples/steer_kv.c"
echo "$pass passed, $fail failed, $skipped skipped"
[ $fail -eq 0 ]
