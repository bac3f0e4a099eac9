#!/bin/sh
# The README's table of build switches: tests/switch_probe.c (the quick start's run; the whole header
# in one translation unit) compiled at $CFLAGS (default -O2 -march=native) under each configuration:
# the compiler's CPU time (user + sys, the least of 3 compiles: less sensitive than wall time to a
# shared machine) and the executable's size, whole and its text segment. Run from the repository root.
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -march=native}
WARN="-std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes"
mkdir -p build/switches
echo "| configuration | compile (CPU s) | executable (bytes) | text (bytes) |"
echo "| --- | --- | --- | --- |"
for cfg in "full:" "CODI_NO_SIMD:-DCODI_NO_SIMD" "CODI_NO_TORCH:-DCODI_NO_TORCH" "CODI_NO_RESEARCH:-DCODI_NO_RESEARCH" \
           "all three:-DCODI_NO_SIMD -DCODI_NO_TORCH -DCODI_NO_RESEARCH"; do
  name=${cfg%%:*}; flags=${cfg#*:}; best=
  for i in 1 2 3; do
    t=$( { /usr/bin/time -f "%U %S" $CC $WARN $CFLAGS $flags -o build/switches/size_probe tests/switch_probe.c -lm; } 2>&1 | tail -n 1 |
         awk '{ printf "%.2f", $1 + $2 }')
    best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
  done
  bytes=$(wc -c < build/switches/size_probe | tr -d ' ')
  text=$(size build/switches/size_probe | awk 'NR == 2 { print $1 }')
  echo "| $name | $best | $bytes | $text |"
done
