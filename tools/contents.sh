#!/bin/sh
# Regenerates the CONTENTS block of the manual at the top of codi_lens.h: every section anchor (a line
# that starts "/* >>name") in file order with its length in lines (to the next anchor), after a line
# on what to read first. The block runs from the line starting "   CONTENTS" to the next blank line.
# Usage: tools/contents.sh [FILE] (default codi_lens.h; rewritten in place). Run after moving sections.
f=${1:-codi_lens.h}
tmp=${TMPDIR:-/tmp}/codi_contents.$$
awk '/^\/\* >>[a-z]/ { match($0, />>[a-z0-9_]+/); n++; name[n] = substr($0, RSTART, RLENGTH); start[n] = NR }
     END { for (i = 1; i <= n; i++) print name[i], (i < n ? start[i + 1] : NR + 1) - start[i] }' "$f" |
awk 'BEGIN { print "   CONTENTS (grep for \">>name\"; lines in each). Read >>reference first (the whole model in one"
             print "   plain function, as llama2.c'"'"'s run.c), then >>forward (the same pass, fast) and >>codi (the"
             print "   latent loop)."
             line = "     " }
     { item = " " $1 " " $2; if (length(line) + length(item) > 100) { print line; line = "     " } line = line " " item }
     END { print line }' > "$tmp.block" || exit 1
awk -v block="$tmp.block" '
  /^   CONTENTS/ { while ((getline l < block) > 0) print l; skip = 1; next }
  skip && /^[ \t]*$/ { skip = 0 }
  !skip { print }' "$f" > "$tmp.out" && cat "$tmp.out" > "$f"
rm -f "$tmp.block" "$tmp.out"
