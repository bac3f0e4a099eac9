#!/bin/sh
# Runs each test program (or .sh script) given, shows its output, and adds up the
# "N passed, N failed, N skipped" lines into one final line. Exit status 1 if anything failed.
passed=0; failed=0; skipped=0
for t in "$@"; do
  echo "== $t"
  case "$t" in *.sh) out=$(sh "$t" 2>&1) ;; *) out=$("./$t" 2>&1) ;; esac
  rc=$?
  echo "$out" | grep -v '^[0-9]* passed, [0-9]* failed'
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  if [ -z "$line" ]; then
    echo "not ok - $t ended without a summary (exit $rc)"; failed=$((failed + 1)); continue
  fi
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "not ok - $t exited $rc"; failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
