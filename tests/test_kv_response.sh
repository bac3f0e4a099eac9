#!/bin/sh
# codi kv-response (steer latent l, run one more latent, read the new KV) on codi-nano: an edit of
# alpha 0 moves nothing; a real edit moves the steered slot's K/V at every layer and the next slot's
# too, and its random control of the same norm is a separate condition; bad usage is refused.
B=${CODI_BIN:-build/codi_san}   # AddressSanitizer + UBSan
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
d=build/kvr_test; rm -rf $d; mkdir -p $d
nano="--model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 8"
echo '{"name": "zero", "edits": [{"at": "latent_input", "step": 3, "alpha": 0, "random": {"seed": 5, "norm": 8}}]}' > $d/zero.json
echo '{"name": "z3", "edits": [{"at": "latent_input", "step": 3, "random": {"seed": 5, "norm": 8}}]}' > $d/z3.json
if $B kv-response $nano --steer $d/zero.json --steer $d/z3.json --step 3 --out $d/r > $d/out.txt 2> $d/err.txt; then
  ok "kv-response runs (2 specs x (1 + 1 random control))"
  awk -F, '$1 == "\"zero\"" && ($5 != 0 || $6 != 0 || $7 != 1 || $8 != 1) { bad = 1 } END { exit bad }' $d/r.csv &&
    [ "$(grep -c '^"zero",' $d/r.csv)" -eq 12 ] && ok "alpha 0: K and V unchanged at both slots and every layer (12 rows)" || bad "alpha 0 rows: $(grep '^"zero",' $d/r.csv | head -2)"
  awk -F, '$1 == "\"z3\"" && $2 == "steered" && ($5 <= 0 || $6 <= 0) { bad = 1 } END { exit bad }' $d/r.csv &&
    ok "an edit of latent 3 moves its own slot's K and V at every layer" || bad "steered slot rows"
  awk -F, '$1 == "\"z3\"" && $2 == "next" && $3 == 4 && $6 > 0 { n++ } END { exit n != 6 }' $d/r.csv &&
    ok "and moves the next latent's values at all 6 layers" || bad "next slot rows: $(grep '^"z3",next' $d/r.csv | head -2)"
  [ "$(grep -c '"condition": "z3 random 1"' $d/out.txt)" -eq 1 ] && [ "$(wc -l < $d/out.txt)" -eq 4 ] &&
    ok "one JSON line per condition, random controls included" || bad "JSON lines: $(cat $d/out.txt)"
  for f in steered_keys steered_values next_keys next_values; do
    grep -q "^<svg" $d/r_$f.svg && grep -q "</svg>" $d/r_$f.svg || { bad "heatmap $f"; continue; }
  done
  ok "four SVG heatmaps written"
else bad "kv-response runs: $(cat $d/err.txt)"; fi
# --keys pre: both runs' keys at a slot share its rotation (orthogonal), so the key changes and
# cosines equal the post-RoPE ones to float rounding (1e-5), and are not all zero
if $B kv-response $nano --steer $d/z3.json --step 3 --random-controls 0 --keys pre --out $d/rp > /dev/null 2> $d/err.txt; then
  awk -F, 'FNR == 1 { next } NR == FNR { k[$1 $2 $4] = $5; c[$1 $2 $4] = $7; next }
           ($1 $2 $4) in k { n++; d = $5 - k[$1 $2 $4]; e = $7 - c[$1 $2 $4]; if (d < 0) d = -d; if (e < 0) e = -e;
                             if (d > 1e-5 * (1 + $5) || e > 1e-5) bad = 1; if ($5 > 0) moved++ }
           END { exit bad || n != 12 || moved != 12 }' $d/r.csv $d/rp.csv &&
    ok "--keys pre: key changes and cosines = post-RoPE ones at both slots and every layer (12 rows, to 1e-5)" || bad "--keys pre rows: $(head -3 $d/rp.csv)"
else bad "kv-response --keys pre: $(cat $d/err.txt)"; fi
$B kv-response $nano --steer $d/z3.json --step 3 --keys both --out $d/r4 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 2 ] && grep -q -- "--keys is post" $d/err.txt && ok "--keys other than post|pre: usage error" || bad "--keys both (exit $rc)"
$B kv-response $nano --steer $d/z3.json --step 1 --out $d/r2 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 1 ] && grep -q "step" $d/err.txt && ok "a spec editing a step past l + 1 is an error per question" || bad "late step (exit $rc): $(head -2 $d/err.txt)"
$B kv-response $nano --step 3 --out $d/r3 >/dev/null 2>$d/err.txt; rc=$?
[ $rc -eq 2 ] && grep -q -- "--steer" $d/err.txt && ok "no --steer: usage error" || bad "no --steer (exit $rc)"
echo "$pass passed, $fail failed"
