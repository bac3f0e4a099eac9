#!/bin/sh
# codi lens --questions statistics on codi-nano: the rows file holds every (question, lens, position,
# target set) and the summary is recomputed from it (tests/check_lens_stats.py: Wilson and t
# intervals, chance rates of shuffled targets, paired differences, permutations without fixed
# points); approximations / relations and a targets file found on a hand-made question; multi-token
# targets warned about and counted (first) or left out (skip); kill -9 + resume = one run.
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/lens_stats
rm -rf $d; mkdir -p $d
nano="--model models/codi-nano/codi_nano.bin --exact --max-answer 8"
qs=models/codi-nano/test.jsonl
have_py=0; command -v python3 >/dev/null && have_py=1

# 1. rows + summary on 24 questions: every rate recomputed from the rows
$B lens $nano --questions $qs --limit 24 --targets answer,intermediates,approx,field:steps --tokens Therefore --chance-permutations 3 --out $d/a > $d/a.out 2> $d/a.err; rc=$?
[ $rc -eq 0 ] && [ "$(grep -c '"done": true' $d/a_rows.jsonl)" -eq 24 ] && [ -s $d/a_rates.csv ] && [ -s $d/a_lines.svg ] &&
  ok "codi lens --questions: 24 questions, rows file, rates CSV, SVG" || { bad "codi lens --questions (exit $rc)"; cat $d/a.err; }
if [ $have_py -eq 1 ]; then
  python3 tests/check_lens_stats.py $d/a_rows.jsonl $d/a.json > $d/a.py 2>&1 && ok "strict JSON; rates, Wilson intervals, chance rates and paired differences with t intervals recomputed ($(cat $d/a.py))" ||
    { bad "summary recomputed from the rows"; cat $d/a.py; }
else skip "summary recomputed from the rows: no python3"; fi

# 2. multi-token targets: "Therefore" is The|r|e|f|or|e on codi-nano: warned, counted by its first token, or left out
grep -q 'warning: target token:Therefore: 24 of 24 items are several tokens in this tokenizer: counted by their first token' $d/a.err &&
  grep -q '"name": "token:Therefore", "questions_with_target": 24, "items": 24, "multi_token_items": 24, .*"warning": "24 of 24 items are several tokens: counted by their first token' $d/a.json &&
  ok "a multi-token --tokens target: warned on stderr and in the JSON, counted by its first token" || bad "multi-token warning (first)"
$B lens $nano --questions $qs --limit 3 --targets answer --tokens Therefore --multi-token skip --chance-permutations 1 --out $d/skip > /dev/null 2> $d/skip.err
grep -q '"name": "token:Therefore", "questions_with_target": 0, "items": 3, "multi_token_items": 3, "unmatched_items": 0, "questions_skipped": 3' $d/skip.json &&
  grep -q '"token1_in_top_k": \[\[\[null' $d/skip.json && ok "--multi-token skip: the questions are left out of that target (rates null)" || bad "--multi-token skip"
q="Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?"
$B lens $nano --question "$q" --target Therefore --json > $d/t.json 2> $d/t.err
$B lens $nano --question "$q" --target Therefore --multi-token skip > /dev/null 2> $d/t2.err; rc=$?
grep -q "warning: target 'Therefore' is 6 tokens" $d/t.err && grep -q '"target_tokens": 6, "multi_token": "first", "warning": "the target is 6 tokens' $d/t.json &&
  [ $rc -eq 2 ] && grep -q "is 6 tokens; --multi-token skip leaves it out" $d/t2.err &&
  ok "codi lens --target Therefore (6 tokens): warned and marked in the JSON; refused with --multi-token skip" || bad "--target multi-token"

# 3. a hand-made question with answer 360: approx within +-1% = 357..363 but 360 (6 numbers) + 2x, x/2,
#    10x, x/10 (720, 180, 3600, 36); with answer 24: 48, 12, 240 (2.4 is no integer): 13 items. A targets
#    file. The ids are those codi lens --target gives, less the answer's.
printf '{"question": "%s", "answer": 360}\n{"question": "%s", "answer": 24}\n' "$q" "$q" > $d/h.jsonl
printf '{"index": 0, "targets": [720, "Therefore"]}\n{"index": 1, "targets": [5]}\n' > $d/h_targets.jsonl
$B lens $nano --questions $d/h.jsonl --targets answer,approx,file:$d/h_targets.jsonl --approx-pct 1 --chance-permutations 2 --out $d/h > /dev/null 2> $d/h.err
ids() { for v in "$@"; do $B lens --model models/codi-nano/codi_nano.bin --exact --max-answer 0 --question "$q" --target $v --json 2>/dev/null | sed -n 's/.*"target": {.*"ids": \[\([0-9, ]*\)\].*/\1/p' | tr ',' '\n'; done | tr -d ' ' | sort -un; }
row_ids() { grep "\"index\": $1, .*\"lens\": \"logit\", \"slot\": 0, .*\"target\": \"$2\"" ${3:-$d/h_rows.jsonl} | sed 's/.*"ids": \[\([0-9, ]*\)\].*/\1/' | tr ',' '\n' | tr -d ' ' | sort -un; }
want=$(ids 357 358 359 361 362 363 720 180 3600 36 | grep -vxF "$(ids 360)")
[ -n "$want" ] && [ "$(row_ids 0 approx)" = "$want" ] && grep -q '"name": "approx", "questions_with_target": 2, "items": 13,' $d/h.json &&
  ok "approx: numbers within +-1% of 360 and 720, 180, 3600, 36 (relations) found, the answer's tokens left out" || bad "approx ids: $(row_ids 0 approx | tr '\n' ' ') vs $(echo $want | tr '\n' ' ')"
want=$(ids 720 Therefore)
[ "$(row_ids 0 "file:$d/h_targets.jsonl")" = "$want" ] && [ "$(row_ids 1 "file:$d/h_targets.jsonl")" = "$(ids 5)" ] &&
  ok "file:TARGETS.jsonl: each question's targets by index (720 and Therefore's first token; 5)" || bad "file targets"

head -n 2 data/templates.jsonl > $d/tpl.jsonl        # x = 6, y = 2: addition 8, subtraction 4
$B lens $nano --questions $d/tpl.jsonl --targets intermediates --chance-permutations 1 --out $d/tpl > /dev/null 2>&1
[ "$(row_ids 0 intermediates $d/tpl_rows.jsonl)" = "$(ids 8 | grep -vxF "$(ids 32)")" ] && [ "$(row_ids 1 intermediates $d/tpl_rows.jsonl)" = "$(ids 4 | grep -vxF "$(ids 16)")" ] &&
  ok "intermediates of codi gen-templates questions: x + y and x - y (8 and 4)" || bad "template intermediates"

# 4. kill -9 while the rows are written, a torn line, then the same command: the same rows and summary as one run
#    (--batch 1: bit for bit needs the same passes; a batched resume: tests/test_batch_runners.sh)
args="--questions $qs --limit 40 --targets answer,intermediates --chance-permutations 2 --batch 1"
run() { $B lens $nano $args --out $1; }
run $d/full > /dev/null 2>&1
$B lens $nano $args --out $d/killed > /dev/null 2>&1 &      # (not through run: $! must be codi itself)
pid=$!
i=0
while [ "$(cat $d/killed_rows.jsonl 2>/dev/null | grep -c '"done": true')" -lt 5 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
before=$(grep -c '"done": true' $d/killed_rows.jsonl)
printf '{"index": 39, "line": 40, "lens": "log' >> $d/killed_rows.jsonl
run $d/killed > /dev/null 2> $d/resume.err
strip() { sed 's/"rows_file": "[^"]*"//' "$1"; }
if [ "$before" -lt 40 ]; then
  grep -q "resuming $d/killed_rows.jsonl: $before of 40" $d/resume.err && cmp -s $d/full_rows.jsonl $d/killed_rows.jsonl && [ "$(strip $d/full.json)" = "$(strip $d/killed.json)" ] &&
    ok "kill -9 after $before of 40 questions (+ a torn line), resumed: rows and summary equal one run's" || bad "resume after kill -9 ($before done)"
else skip "kill -9: the run finished before the kill"; fi
run $d/full > /dev/null 2> $d/again.err
grep -q "resuming $d/full_rows.jsonl: 40 of 40" $d/again.err && [ "$(strip $d/full.json)" = "$(strip $d/killed.json)" ] && ok "a finished rows file: nothing rerun, the same summary" || bad "rerun of a finished file"
$B lens $nano --questions $qs --limit 40 --targets answer --out $d/full > /dev/null 2> $d/other.err; rc=$?
[ $rc -ne 0 ] && grep -q "holds the rows of another command" $d/other.err && ok "a rows file of other settings is refused" || bad "rows of other settings"
$B lens $nano --questions $qs --targets answer,nope --out $d/x > /dev/null 2> $d/bad.err; rc=$?
[ $rc -eq 2 ] && grep -q "item 'nope' is not answer, intermediates, approx" $d/bad.err && ok "a bad --targets item: message, exit 2" || bad "bad --targets"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
