#!/bin/sh
# Every file a README names exists, and no committed symbolic link dangles: each `path` in backticks that looks like a file of this
# repository (has a known extension or a directory part) must exist relative to the repository
# root or to the README's own folder. Paths that are made by a build or fetched at build time
# (build/, bench/, third_party/, $OUT), URLs and patterns are skipped; the top README's bare file
# names (config.json, pytorch_model.bin) name kinds of file, so only its paths count.
pass=0; fail=0
for readme in README.md models/*/README.md tests/data/GOLDEN_README.md data/*/README.md; do
  [ -f "$readme" ] || continue
  dir=$(dirname "$readme")
  missing=""
  n=0
  for p in $(grep -o '`[^` ]*`' "$readme" | tr -d '`' | sort -u); do
    case "$p" in
      build/*|bench/*|third_party/*|*'$'*|*://*|-*|*'*'*|*'<'*|*'...'*|*'…'*) continue ;;
      */*|*.c|*.h|*.sh|*.py|*.json|*.jsonl|*.safetensors|*.bin|*.md|*.txt|*.svg|*.csv|*.gz) ;;
      *) continue ;;
    esac
    case "$p" in *.*|*/) ;; *) continue ;; esac
    case "$p" in .*|*'{'*) continue ;; esac
    # the top README names generic files (config.json, pytorch_model.bin) as kinds: only its paths count
    [ "$readme" = README.md ] && case "$p" in */*) ;; *) continue ;; esac
    n=$((n + 1))
    [ -e "$p" ] || [ -e "$dir/$p" ] || missing="$missing $p"
  done
  if [ -z "$missing" ]; then echo "ok - $readme: all $n named files exist"; pass=$((pass + 1))
  else echo "not ok - $readme names files that are not in the repository:$missing"; fail=$((fail + 1)); fi
done
# No dangling symbolic link is committed (one pointed at a folder of a developer's machine).
dangling=$(git ls-files -s 2>/dev/null | awk '$1 == "120000" { print $4 }' | while read -r l; do [ -e "$l" ] || echo "$l"; done)
if [ -z "$dangling" ]; then echo "ok - no committed symbolic link dangles"; pass=$((pass + 1))
else echo "not ok - committed symbolic links that point nowhere: $dangling"; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
