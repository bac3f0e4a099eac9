#!/bin/sh
# Regenerates the CONTENTS block of the manual at the top of codi_lens.h: every section anchor (a line
# that starts "/* >>name") in file order with its length in lines (to the next anchor), grouped under
# the Part or Appendix heading it falls in (a line that starts "/* ======== "), with the Part's length,
# after a line on what to read first. The block runs from the line starting "   CONTENTS" to the next
# blank line. Usage: tools/contents.sh [FILE] (default codi_lens.h; rewritten in place). Run after
# moving sections.
f=${1:-codi_lens.h}
tmp=${TMPDIR:-/tmp}/codi_contents.$$
awk '/^\/\* >>[a-z]/ { match($0, />>[a-z0-9_]+/); n++; name[n] = substr($0, RSTART, RLENGTH); start[n] = NR; part[n] = p }
     /^\/\* ======== / { t = $0; sub(/^\/\* ======== /, "", t); sub(/:.*/, "", t); np++; ptitle[np] = t; pstart[np] = NR; p = np }
     END { for (i = 1; i <= np; i++) plen[i] = (i < np ? pstart[i + 1] : NR + 1) - pstart[i]
           for (i = 1; i <= n; i++) print part[i] + 0, (part[i] ? ptitle[part[i]] " (" plen[part[i]] " lines)" : "-"), name[i], (i < n ? start[i + 1] : NR + 1) - start[i] }' OFS='\t' "$f" |
awk -F '\t' 'BEGIN { print "   CONTENTS (grep for \">>name\"; lines in each). Read >>reference first (the whole model in one"
             print "   plain function, as llama2.c'"'"'s run.c), then Part I: >>forward (the same pass, fast) and >>codi"
             print "   (the latent loop). CODI_KERNEL=scalar runs Part I'"'"'s own kernels; the fast paths of Appendix B"
             print "   are reached only through the kernel table (>>interfaces)."
             line = "     "; cur = -1 }
     { if ($1 != cur) { if (line != "     ") print line; cur = $1; line = "     "; if ($1 > 0) print "     " $2 ":" }
       item = " " $3 " " $4; if (length(line) + length(item) > 100) { print line; line = "     " } line = line " " item }
     END { print line }' > "$tmp.block" || exit 1
awk -v block="$tmp.block" '
  /^   CONTENTS/ { while ((getline l < block) > 0) print l; skip = 1; next }
  skip && /^[ \t]*$/ { skip = 0 }
  !skip { print }' "$f" > "$tmp.out" && cat "$tmp.out" > "$f"
rm -f "$tmp.block" "$tmp.out"
