#!/bin/sh
# Runs each test program (or .sh script) given, streaming its output as it runs, with which program
# is running and how long it took, then adds up their "N passed, N failed, N skipped" lines into one
# final line. Exit status 1 if anything failed.
passed=0; failed=0; skipped=0; i=0; total=$#
tmp=${TMPDIR:-/tmp}/codi_run_all.$$
now() { date +%s.%N 2>/dev/null || date +%s; }
t_start=$(now)
for t in "$@"; do
  i=$((i + 1))
  echo "== [$i/$total] $t"
  t0=$(now)
  case "$t" in *.sh) cmd="sh $t" ;; *) cmd="./$t" ;; esac
  { $cmd 2>&1; echo $? > "$tmp.rc"; } | tee "$tmp.out" | grep -v '^[0-9]* passed, [0-9]* failed'
  rc=$(cat "$tmp.rc")
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp.out" | tail -n 1)
  took=$(awk "BEGIN { printf \"%.1f\", $(now) - $t0 }")
  if [ -z "$line" ]; then
    echo "not ok - $t ended without a summary (exit $rc, $took s)"; failed=$((failed + 1)); continue
  fi
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
  echo "   $t took $took s: $p passed, $f failed, ${s:-0} skipped"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "not ok - $t exited $rc"; failed=$((failed + 1)); fi
done
rm -f "$tmp.rc" "$tmp.out"
echo "all tests took $(awk "BEGIN { printf \"%.0f\", $(now) - $t_start }") s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
