#!/bin/sh
# Random controls of PC steering and patching on codi-nano: codi pca writes, per component, a control
# spec for every distinct |alpha| (same site, alpha and norm as the PC specs), and every spec it
# writes loads (latent_inputs without a step included); codi eval tests PC and patching specs against
# a random control by default (--random-controls 0 turns it off); codi vectors extract
# --random-question draws another question's row (seeded, --exclude honoured, the same row as
# --question gives).
B=${CODI_BIN:-build/codi}
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
skip() { echo "skip - $1"; skip=$((skip + 1)); }
d=build/controls
rm -rf $d; mkdir -p $d
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
nano=models/codi-nano/codi_nano.bin

$B record --model $nano --questions models/codi-nano/test.jsonl --limit 30 --out $d/acts.safetensors > /dev/null 2> $d/rec.err || { bad "codi record"; cat $d/rec.err; }
$B pca --acts $d/acts.safetensors --tensor latent_inputs --steer-components 1 --steer-sd 1,2,-2 --out $d/pca > /dev/null 2> $d/pca.err; rc=$?
n=0; for f in $d/pca/steer_*.json; do $B run --model $nano --question "Tom has 3 apples and buys 4. How many?" --steer $f > /dev/null 2>> $d/run.err && n=$((n + 1)); done
[ $rc -eq 0 ] && [ "$(ls $d/pca/steer_*.json | wc -l)" -eq 5 ] && [ $n -eq 5 ] && [ -f $d/pca/steer_latent_inputs.layer0.pc1.random+2sd.json ] &&
  [ ! -f $d/pca/steer_latent_inputs.layer0.pc1.random-2sd.json ] &&
  ok "pca --steer-sd 1,2,-2: 3 PC specs and a control per distinct |alpha| (1, 2), all 5 load" || { bad "pca specs (exit $rc, $n load)"; cat $d/pca.err $d/run.err; }
$PY - $d/pca > $d/spec.txt 2>&1 <<'PYEOF'
import json, os, sys
d = sys.argv[1]
specs = {f: json.load(open(os.path.join(d, f)))["edits"][0] for f in os.listdir(d) if f.startswith("steer_") and f.endswith(".json")}
for f, e in specs.items():
    if "random" in f: continue
    a = abs(e["alpha"]); c = specs["steer_latent_inputs.layer0.pc1.random+%gsd.json" % a]
    assert c["at"] == e["at"] and c.get("step") == e.get("step") and c["op"] == e["op"] and c["alpha"] == a, (f, e, c)
    assert c["random"]["norm_of"] == e["vector"], (f, e, c)
print("each PC spec's control: same site and op, alpha |alpha|, norm of the same vector")
PYEOF
[ $? -eq 0 ] && ok "$(cat $d/spec.txt)" || { bad "control specs match"; cat $d/spec.txt; }

$B vectors extract --acts $d/acts.safetensors --slot latent3 --question 1 --name b --out $d/patch.safetensors > /dev/null 2>&1
printf '{"name": "patch3", "edits": [{"at": "latent_input", "step": 3, "op": "set", "vector": "patch.safetensors:b"}]}' > $d/patch3.json
ev="eval --model $nano --questions models/codi-nano/test.jsonl --limit 4 --steer $d/pca/steer_latent_inputs.layer0.pc1.+2sd.json --steer $d/patch3.json"
$B $ev --out $d/ev.jsonl > $d/ev.out 2> $d/ev.err; rc=$?
[ $rc -eq 0 ] && grep -q '^{"condition": "latent_inputs.layer0.pc1 +2sd", .*"random_control": "latent_inputs.layer0.pc1 +2sd~random[0-9]*", .*"p_vs_random": [0-9]' $d/ev.out &&
  grep -q '^{"condition": "patch3", .*"random_control": "patch3~random[0-9]*", .*"p_vs_random": [0-9]' $d/ev.out &&
  ok "eval: a PC spec and a patching spec are tested against a random control by default" || { bad "eval default controls (exit $rc)"; cat $d/ev.err; }
$B $ev --random-controls 0 --out $d/ev0.jsonl > $d/ev0.out 2> $d/ev0.err; rc=$?
[ $rc -eq 0 ] && grep -q '^{"condition": "patch3", .*"random_control": null' $d/ev0.out && ! grep -q "~random" $d/ev0.out &&
  ok "eval --random-controls 0: no control (p_vs_random null)" || { bad "eval --random-controls 0 (exit $rc)"; cat $d/ev0.err; }

x="vectors extract --acts $d/acts.safetensors --slot latent3"
$B $x --random-question 7 --exclude 0-19 --name r7 --out $d/r.safetensors > $d/r7.txt 2>&1; rc=$?
$B $x --random-question 7 --exclude 0-19 --name r7b --out $d/r.safetensors > $d/r7b.txt 2>&1
q=$(sed -n 's/.*: question \([0-9]*\), drawn with seed 7 from 10 (--exclude left out).*/\1/p' $d/r7.txt)
$B $x --question "${q:-0}" --name same --out $d/r.safetensors > $d/rq.txt 2>&1
picks=""; for s in 1 2 3 4 5 6 8 9 10 11 12; do picks="$picks $($B $x --random-question $s --exclude 0-19 --name t --out $d/t.safetensors | sed -n 's/.*: question \([0-9]*\), drawn.*/\1/p')"; done
low=$(for p in $picks; do [ "$p" -lt 20 ] && echo x; done | wc -l); distinct=$(for p in $picks; do echo $p; done | sort -u | wc -l)
[ $rc -eq 0 ] && [ -n "$q" ] && [ "$q" -ge 20 ] && [ "$(sed 's/.*norm //' $d/r7.txt)" = "$(sed 's/.*norm //' $d/r7b.txt)" ] &&
  [ "$(sed 's/.*norm //' $d/r7.txt)" = "$(sed 's/.*norm //' $d/rq.txt)" ] && [ "$low" -eq 0 ] && [ "$distinct" -ge 4 ] &&
  ok "vectors extract --random-question: seeded (question $q twice), never an excluded one (12 seeds:$picks), the row --question $q gives" ||
  { bad "vectors extract --random-question (exit $rc)"; cat $d/r7.txt $d/rq.txt; echo "$picks"; }
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
