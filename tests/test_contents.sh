#!/bin/sh
# The manual's CONTENTS (codi_lens.h): every anchor it lists exists as a section ("/* >>name" at the start
# of a line) and every section is listed, in file order, each with a line count; it says to read
# >>reference first; tools/contents.sh regenerates it the same way twice. Stale line counts are only
# reported (run tools/contents.sh). Run from the repository root.
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
tmp=${TMPDIR:-/tmp}/codi_test_contents.$$
block() { awk '/^   CONTENTS/ { on = 1 } on && /^[ \t]*$/ { exit } on' "$1"; }
block codi_lens.h > $tmp.block
listed=$(grep -o '>>[a-z0-9_]* [0-9][0-9]*' $tmp.block | awk '{ print $1 }' | tr '\n' ' ')
sections=$(grep -o '^/\* >>[a-z0-9_]*' codi_lens.h | sed 's,^/\* ,,' | tr '\n' ' ')
[ -n "$sections" ] && [ "$listed" = "$sections" ] && ok "CONTENTS lists the $(echo $sections | wc -w | tr -d ' ') sections in file order, each with a line count" ||
  bad "CONTENTS lists [$listed], the file has sections [$sections]"
for a in $listed; do grep -q "^/\* $a\b" codi_lens.h || bad "listed anchor $a is not a section"; done
grep -q 'Read >>reference first' $tmp.block && grep -q '^/\* >>reference' codi_lens.h && ok "CONTENTS says to read >>reference first" ||
  bad "CONTENTS does not point to >>reference"
cp codi_lens.h $tmp.h && sh tools/contents.sh $tmp.h && cp $tmp.h $tmp.h1 && sh tools/contents.sh $tmp.h &&
  cmp -s $tmp.h $tmp.h1 &&
  ok "tools/contents.sh regenerates the block the same way twice" || bad "tools/contents.sh is not idempotent"
block $tmp.h > $tmp.new
cmp -s $tmp.block $tmp.new && echo "# line counts are current" || echo "# line counts are stale: run sh tools/contents.sh"
rm -f $tmp.block $tmp.new $tmp.h $tmp.h1
echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
