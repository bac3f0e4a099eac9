#!/bin/sh
# The command line's contract: strict options (whole string, range, named in the message), help for
# every command, conflicting options refused, exit status 0 / 1 / 2, tokenizer errors that name the
# file, questions files with missing gold answers and malformed lines, progress lines on stderr.
# CODI_BIN picks the binary (default build/codi_san: AddressSanitizer + UBSan).
B=${CODI_BIN:-build/codi_san}
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
tiny="--model tests/data/codi_tiny.bin --head-dim 32"
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
E=build/cli_err.txt; O=build/cli_out.txt
# expect STATUS "message fragment" description -- command...
expect() {
  want=$1; frag=$2; desc=$3; shift 3
  "$@" >$O 2>$E; rc=$?
  if [ $rc -eq "$want" ] && { [ -z "$frag" ] || grep -qF -- "$frag" $E $O; }; then ok "$desc"
  else bad "$desc (exit $rc, wanted $want; stderr: $(head -c 300 $E))"; fi
}

expect 2 "commands:" "codi with no command: usage on stderr, exit 2" $B
expect 0 "commands:" "codi --help lists the commands" $B --help
expect 0 "commands:" "codi help lists the commands" $B help
expect 2 "unknown command 'frobnicate'" "an unknown command is named, exit 2" $B frobnicate
grep -q "  run " $E && grep -q "  trace " $E && ok "an unknown command lists the commands" || bad "unknown command lists the commands"
cmds=$($B help | sed -n 's/^  \([a-z-]*\) .*/\1/p' | grep -v '^help$')
[ -n "$cmds" ] || bad "codi help lists no commands"
for c in $cmds; do
  $B $c --help >$O 2>$E && grep -q "^usage: codi $c" $O && grep -q "^Examples:" $O && grep -q -- "--help" $O &&
    ok "codi $c --help: usage, examples, options" || bad "codi $c --help"
  $B help $c >$E 2>&1 && cmp -s $O $E && ok "codi help $c equals codi $c --help" || bad "codi help $c"
done

expect 2 "--latents needs a whole number, not 'abc'" "--latents abc is refused (was: 0 latents)" $B run $tiny --ids $ids --latents abc
expect 2 "--latents needs a whole number, not '3x'" "--latents 3x (trailing text) is refused" $B run $tiny --ids $ids --latents 3x
expect 2 "--max-answer -5 is out of range [1, 1024]" "--max-answer -5 is refused with the range" $B run $tiny --ids $ids --max-answer -5
expect 0 "note: --answer-steps is now --max-answer" "an old option name works for one release, naming the new one" $B run $tiny --ids $ids --answer-steps 2
expect 2 "--threads 0 is out of range" "--threads 0 is refused" $B run $tiny --ids $ids --threads 0
expect 2 "--lora-scale needs a finite number, not 'nan'" "--lora-scale nan is refused" $B run $tiny --ids $ids --lora-scale nan
expect 2 "--recipe 2 is out of range [0, 1]" "--recipe 2 is refused" $B run $tiny --ids $ids --recipe 2
expect 2 "unknown option '--latent'" "a misspelt option is named" $B run $tiny --ids $ids --latent 3
expect 2 "--compute: 'fp8' is not f32 or bf16" "--compute fp8 is refused, naming the option" $B run $tiny --ids $ids --compute fp8
expect 2 "--latents given twice" "an option given twice is refused" $B run $tiny --ids $ids --latents 3 --latents 4
expect 2 "--out needs a value" "an option missing its value is named" $B trace $tiny --ids $ids --out
expect 2 "--exact takes no value" "a flag given a value is refused" $B run $tiny --ids $ids --exact=1
expect 2 "give --question or --ids, not both" "--question with --ids is a conflict" $B run $tiny --ids $ids --question "two apples"
expect 2 "--ids is empty" "--ids \"\" says it is empty" $B run $tiny --ids ""
expect 2 "--ids item 2 ('x') is not a token id" "--ids 1,x,3 names the bad item" $B run $tiny --ids 1,x,3
expect 2 "--ids item 1 (-5) is out of range [0, 515)" "--ids -5,513 names the range" $B run $tiny --ids -5,513
expect 2 "--ids item 2 (515) is out of range" "--ids beyond the vocabulary names the range" $B run $tiny --ids 1,515
expect 2 "give --questions or --question, not both" "--questions with --question is a conflict" $B run $tiny --questions x.jsonl --question "q"
expect 2 "codi run: --model PATH is required" "a missing --model is named" $B run --ids 1,2
$B run $tiny --ids $ids --max-answer 2 --threads 99999 >$O 2>$E; rc=$?
[ $rc -eq 0 ] && grep -q "note: --threads 99999 capped at" $E && ok "--threads 99999 is capped at 4 x the online cores, with a note" || bad "--threads cap (exit $rc)"

# tokenizers: the real error, with the file name
mkdir -p build/cli_badtok
cp models/codi-nano/codi_nano.bin models/codi-nano/config.json build/cli_badtok/
printf '{"model": {"type": "BPE", "vocab": {' > build/cli_badtok/tokenizer.json
expect 1 "tokenizer build/cli_badtok/tokenizer.json: JSON error" "an invalid tokenizer.json beside the model: its own error, with the file name" \
  $B run --model build/cli_badtok/codi_nano.bin --question "Tom has 3 apples."
expect 1 "tokenizer build/no_such_tokenizer.json: cannot open" "--tokenizer that cannot be opened is named" \
  $B run --model models/codi-nano/codi_nano.bin --tokenizer build/no_such_tokenizer.json --question "Tom has 3 apples."

# questions files: a line without a gold answer gives null, a malformed line is reported and skipped
nano="--model models/codi-nano/codi_nano.bin"
{ head -n 2 models/codi-nano/test.jsonl; echo '{"question": "Zoe has 4 pens and buys 3 more. How many pens?"}'
  echo '{"question": "broken'; echo '{"text": "no question field"}'; sed -n 3p models/codi-nano/test.jsonl; } > build/cli_q.jsonl
$B run $nano --questions build/cli_q.jsonl >$O 2>$E; rc=$?
[ $rc -eq 1 ] && ok "a questions file with malformed lines exits 1" || bad "malformed lines exit status $rc"
grep -q "build/cli_q.jsonl:4: " $E && grep -q "build/cli_q.jsonl:5: no \"question\" string" $E &&
  ok "malformed lines are reported with their line numbers" || bad "malformed line numbers: $(cat $E)"
[ "$(grep -c '"index"' $O)" -eq 4 ] && ok "the run goes on past malformed lines (4 results)" || bad "results after malformed lines: $(grep -c '"index"' $O)"
grep -q '"index": 2, .*"gold": null, "correct": null}' $O && ok "a question without a gold answer: gold and correct are null" || bad "missing gold: $(sed -n 3p $O)"
grep -q '"questions": 4, .*"bad_lines": 2' $O && ok "the summary counts questions and bad lines" || bad "summary: $(tail -n 1 $O)"
grep -q "^questions: 6/6 done, .*took" $E && ok "progress: a plain line on stderr when it is not a terminal" || bad "progress line: $(cat $E)"
expect 1 "cannot read build/no_such.jsonl" "a missing questions file is named" $B run $nano --questions build/no_such.jsonl
echo "$pass passed, $fail failed"
