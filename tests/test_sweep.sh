#!/bin/sh
# codi sweep on codi-nano as an experiment: alpha-0 copies of the baseline never survive correction,
# a real effect (every latent input zeroed) does; kill -9 then the same command resumes to the same
# summary without duplicates; a mismatched resume is refused; shards + --merge equal one run;
# --confirm splits whole questions, disjoint, reproducibly, and confirms only on the held-out ones;
# a summary line recomputed from results.jsonl; --dry-run runs nothing; --batch 16 equals --batch 1 and
# single-stream anchors (codi eval --batch 1 specs, the reference predictions).
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
CODI=${CODI:-build/codi}
d=build/sweep_test
rm -rf $d; mkdir -p $d
qs=models/codi-nano/test.jsonl
nano="--model models/codi-nano/codi_nano.bin --exact --max-answer 12 --means-questions $qs --means-limit 10"
grid="--steps 6 --pairs 3-4 --coeffs 2 --kv-coeffs -2 --noise-seeds 1"    # 9 conditions: 2 baselines, 3 cells + controls, self noise
if command -v python3 > /dev/null; then PY=python3; else PY=; fi

# 1. every cell an alpha-0 copy of its baseline: p = 1 everywhere, nothing survives; the contract keys, strict JSON
$CODI sweep $nano --questions $qs --limit 16 --steps 6 --pairs 1-2,3-4 --coeffs 0 --kv-coeffs 0 --noise-seeds 0 --threads 2 --out $d/null > $d/null.out 2> $d/null.err ||
  { bad "alpha-0 sweep runs"; cat $d/null.err; }
if [ -n "$PY" ]; then
  $PY - $d/null/summary.jsonl > $d/null.check 2>&1 <<'EOF'
import json, sys
keys = "condition family n correct accuracy ci_low ci_high p_vs_baseline p_vs_random p_primary p_holm q_bh flips_to_right flips_to_wrong split".split()
def strict(x): raise ValueError("not strict JSON: " + x)
rows = [json.loads(l, parse_constant=strict) for l in open(sys.argv[1])]
cells = [r for r in rows if r["role"] == "cell"]
assert len(rows) == 10 and len(cells) == 4, (len(rows), len(cells))
for r in rows:
    assert all(k in r for k in keys), r
    assert r["split"] == "explore" and r["n"] == 16
for r in cells:
    assert r["p_vs_baseline"] == 1 and r["p_vs_random"] == 1 and r["p_primary"] == 1 and r["p_holm"] == 1 and r["q_bh"] == 1, r
    assert r["flips_to_right"] == 0 and r["flips_to_wrong"] == 0 and not r["survives"], r
print("fine")
EOF
  grep -q fine $d/null.check && grep -q '^  embedding *2 cells tested, 0 survive Holm at 0.05' $d/null.out && grep -q '^  kv *2 cells tested, 0 survive' $d/null.out &&
    ! grep -q '^  \*' $d/null.out &&
    ok "alpha-0 copies of the baseline: p = 1 (baseline and control), Holm = BH = 1, 0 of 4 survive; contract keys, strict JSON" || { bad "alpha-0 sweep"; cat $d/null.check; }
fi

# 2. a real effect: every latent input set to zero, on 24 questions codi-nano answers right (with s1_z_add beside it)
sed 's/.*"answer": \([-0-9.]*\).*/\1/' $qs | paste -d' ' - tests/data/codi_nano_reference_predictions.txt | awk '$1 == $2 { print NR }' | head -n 24 > $d/right.txt
awk 'NR == FNR { keep[$1] = 1; next } keep[FNR]' $d/right.txt $qs > $d/right.jsonl
$CODI sweep $nano --questions $d/right.jsonl --coeffs none --kv-coeffs none --noise-seeds 0 --steer tests/data/steer/zero_latents.json \
  --steer tests/data/steer/s1_z_add.json --threads 2 --out $d/zero > $d/zero.out 2> $d/zero.err || { bad "custom sweep runs"; cat $d/zero.err; }
line=$(grep '"condition": "custom/zero_latents"' $d/zero/summary.jsonl)
echo "$line" | grep -q '"p_vs_random": null' && echo "$line" | grep -q '"survives": true' && grep -q '"condition": "base/run", .*"n": 24, "correct": 24,' $d/zero/summary.jsonl &&
  grep -q '^  custom *2 cells tested, 1 survive Holm at 0.05' $d/zero.out && grep -q 'norm 0, so a random control' $d/zero.err &&
  ok "--steer zero_latents (no control: its norm is 0) survives Holm against the baseline (24/24 right); $(echo "$line" | sed 's/.*\("flips_to_wrong": [0-9]*\).*\("p_holm": [^,]*\).*/\1, \2/')" ||
  { bad "zero latents survive"; cat $d/zero.out; }

# 3. one run; the same killed by kill -9 (plus a torn line) and run again (at another --batch); a mismatched resume
$CODI sweep $nano --questions $qs --limit 12 $grid --threads 2 --out $d/full > $d/full.out 2> $d/full.err || { bad "small grid sweep"; cat $d/full.err; }
$CODI sweep $nano --questions $qs --limit 12 $grid --threads 1 --batch 2 --out $d/killed > /dev/null 2>&1 &   # a small batch: rows come question by question
pid=$!
i=0
while [ "$(cat $d/killed/results.jsonl 2>/dev/null | grep -c '"index"')" -lt 27 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
before=$(grep -c '"index"' $d/killed/results.jsonl)
printf '{"condition": "base/l6/emb", "split": "explore", "index": 11, "li' >> $d/killed/results.jsonl
$CODI sweep $nano --questions $qs --limit 12 $grid --threads 2 --out $d/killed > $d/resumed.out 2> $d/resumed.err
dups=$(grep '"index"' $d/killed/results.jsonl | sed 's/", "line.*//' | sort | uniq -d | wc -l)
[ "$before" -lt 108 ] && grep -q "resuming" $d/resumed.err && cmp -s $d/full/summary.jsonl $d/killed/summary.jsonl &&
  [ "$(grep -c '"index"' $d/killed/results.jsonl)" -eq 108 ] && [ "$dups" -eq 0 ] &&
  ok "kill -9 after $before of 108 results (+ a torn line), run again: the same summary.jsonl, 108 rows, none twice" || bad "resume after kill -9 ($before before, $dups duplicates)"
$CODI sweep $nano --questions $qs --limit 12 $grid --seed 2 --out $d/full > /dev/null 2> $d/other.err; rc=$?
[ $rc -ne 0 ] && grep -q "holds results of other settings" $d/other.err && ok "resuming with other settings (--seed) is refused" || bad "mismatched resume: rc $rc"
sed -n 1,2p $qs > $d/q2.jsonl
cheap="--coeffs none --kv-coeffs none --noise-seeds 0 --steer tests/data/steer/s1_z_add.json"
$CODI sweep $nano --questions $d/q2.jsonl $cheap --out $d/hash > /dev/null 2>&1
sed -n 3,4p $qs > $d/q2.jsonl
$CODI sweep $nano --questions $d/q2.jsonl $cheap --out $d/hash > /dev/null 2> $d/other.err; rc=$?
[ $rc -ne 0 ] && grep -q "holds results of other settings" $d/other.err && ok "resuming on a questions file whose content changed is refused (its hash)" || bad "changed questions: rc $rc"

# 4. shards 1/2 and 2/2 (the README's GNU parallel line with 2 jobs), merged: the same summary
for k in 1 2; do $CODI sweep $nano --questions $qs --limit 12 $grid --shard $k/2 --out $d/part$k > /dev/null 2>&1; done
$CODI sweep --merge $d/part1 $d/part2 --out $d/merged > $d/merged.out 2> $d/merged.err
cmp -s $d/full/summary.jsonl $d/merged/summary.jsonl && cmp -s $d/full/summary.csv $d/merged/summary.csv &&
  ok "--shard 1/2 + 2/2, then --merge: summary.jsonl and summary.csv equal one run's" || { bad "shards + merge"; cat $d/merged.err; }
$CODI sweep --merge $d/part1 $d/null --out $d/bad_merge > /dev/null 2> $d/merge.err; rc=$?
[ $rc -ne 0 ] && grep -q "other settings" $d/merge.err && ok "--merge refuses results of other settings" || bad "merge of mismatched results"

# 5. a summary line recomputed from the rows: n, correct, flips vs its baseline, McNemar's exact p, Wilson interval
if [ -n "$PY" ]; then
  $PY - $d/full/results.jsonl $d/full/summary.jsonl > $d/recompute.txt 2>&1 <<'EOF'
import json, sys, math
rows = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()[1:]]
summ = {json.loads(l)["condition"]: json.loads(l) for l in open(sys.argv[2])}
def res(c): return {r["index"]: r["correct"] for r in rows if r["condition"] == c}
x, b, r = res("kv/l6/a3b4/c-2/diff"), res("base/l6/kv"), res("kv/l6/a3b4/c-2/random")
def mcnemar(u, v):
    n, k = u + v, min(u, v)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
n, k = len(x), sum(x.values())
to_right = sum(1 for i in x if x[i] and not b[i]); to_wrong = sum(1 for i in x if b[i] and not x[i])
z = 1.959963984540054; p = k / n; den = 1 + z * z / n
lo = (p + z * z / (2 * n)) / den - z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
s = summ["kv/l6/a3b4/c-2/diff"]
got = (s["n"], s["correct"], s["flips_to_right"], s["flips_to_wrong"])
want = (n, k, to_right, to_wrong)
p_rand = mcnemar(sum(1 for i in x if r[i] and not x[i]), sum(1 for i in x if x[i] and not r[i]))
assert got == want, (got, want)
assert abs(s["p_vs_baseline"] - mcnemar(to_wrong, to_right)) < 1e-5 and abs(s["p_vs_random"] - p_rand) < 1e-5 and s["p_primary"] == s["p_vs_random"]
assert abs(s["ci_low"] - max(0, lo)) < 1e-6 and abs(s["accuracy"] - p) < 1e-6
print("fine", want, s["p_vs_baseline"], s["p_vs_random"])
EOF
  grep -q '^fine' $d/recompute.txt && ok "kv/l6/a3b4/c-2/diff's summary recomputed from results.jsonl: $(cat $d/recompute.txt)" || { bad "recompute"; cat $d/recompute.txt; }
fi

# 6. --confirm 0.5: whole questions, disjoint sets, the same split for the same seed; confirmation rows only on held-out questions
$CODI sweep $nano --questions $qs --limit 20 $grid --confirm 0.5 --confirm-top 2 --threads 2 --out $d/conf > $d/conf.out 2> $d/conf.err || { bad "confirm run"; cat $d/conf.err; }
$CODI sweep $nano --questions $qs --limit 20 --coeffs none --kv-coeffs none --noise-seeds 0 --steer tests/data/steer/s1_z_add.json --confirm 0.5 --confirm-top 1 --out $d/conf2 > /dev/null 2>&1
$CODI sweep $nano --questions $qs --limit 20 --coeffs none --kv-coeffs none --noise-seeds 0 --steer tests/data/steer/s1_z_add.json --confirm 0.5 --split-seed 7 --confirm-top 1 --out $d/conf3 > /dev/null 2>&1
split_of() { grep "\"split\": \"$2\"" $1/results.jsonl | sed 's/.*"index": \([0-9]*\),.*/\1/' | sort -n | uniq | tr '\n' ' '; }
ex=$(split_of $d/conf explore); cf=$(split_of $d/conf confirm)
both=$(printf '%s\n' $ex $cf | sort -n | uniq -d | wc -l); all=$(printf '%s\n' $ex $cf | sort -n | uniq | wc -l)
sel=$(grep '^{"selected": ' $d/conf/results.jsonl | sed 's/{"selected": \[//; s/\]}//; s/"//g; s/,//g')
bad_rows=$(grep '"split": "confirm"' $d/conf/results.jsonl | sed 's/{"condition": "\([^"]*\)".*/\1/' | sort -u | while read c; do
  stem=${c%/random*}; [ "$stem" != "$c" ] && stem=$stem/diff
  case " $sel base/l6/emb base/l6/kv " in *" $c "*|*" $stem "*) ;; *) echo "$c";; esac; done | wc -l)
[ "$both" -eq 0 ] && [ "$all" -eq 20 ] && [ "$(echo $cf | wc -w)" -eq 10 ] && [ "$(echo $sel | wc -w)" -eq 2 ] && [ "$bad_rows" -eq 0 ] &&
  [ "$(split_of $d/conf2 confirm)" = "$cf" ] && [ "$(split_of $d/conf3 confirm)" != "$cf" ] && grep -v '^wrote .*vectors.safetensors' $d/conf.out | head -n 1 | grep -q '^CONFIRMED on the 10 held-out questions' &&
  [ "$(grep -c '"split": "confirm"' $d/conf/summary.jsonl)" -ge 3 ] &&
  ok "--confirm 0.5: 10 + 10 questions, disjoint, whole; the same split for the same --split-seed, another for another; only the 2 selected cells, controls, baselines on the held-out ones; the report leads with them" ||
  { bad "confirm: explore [$ex] confirm [$cf] selected [$sel] $bad_rows stray"; head -n 3 $d/conf.out; }

# 7. --confirm with shards, as examples/sweep_slurm.sh submits it (under a stand-in sbatch that runs each job at
#    once): the shards explore, a merge selects on their union, the shards confirm with --selection, the last
#    merge reports; it equals one run
mkdir -p $d/bin
cat > $d/bin/sbatch <<'EOF2'
#!/bin/sh
# a stand-in for Slurm's sbatch: runs the job now (array tasks one after another) and prints an id
array=""; out=/dev/null; wrap=""
while [ $# -gt 0 ]; do
  case "$1" in --array=*) array=${1#--array=} ;; --output=*) out=${1#--output=} ;; --wrap) wrap=$2; shift ;; esac
  shift
done
if [ -n "$array" ]; then
  k=${array%-*}
  while [ "$k" -le "${array#*-}" ]; do SLURM_ARRAY_TASK_ID=$k sh -c "$wrap" > "$(echo "$out" | sed "s/%a/$k/")" 2>&1 || exit 1; k=$((k + 1)); done
else sh -c "$wrap" > "$out" 2>&1 || exit 1; fi
echo $$
EOF2
chmod +x $d/bin/sbatch
cheap="--means-questions $qs --means-limit 10 --coeffs none --kv-coeffs none --noise-seeds 0 --steer tests/data/steer/s1_z_add.json --steer tests/data/steer/zero_latents.json --limit 16 --confirm-top 1"
PATH=$d/bin:$PATH MODEL=models/codi-nano/codi_nano.bin QUESTIONS=$qs SHARDS=2 THREADS=1 OUT=$d/slurm CONFIRM=0.5 SWEEP_OPTS="--exact --max-answer 12 $cheap" \
  sh examples/sweep_slurm.sh > $d/slurm.out 2>&1
$CODI sweep --model models/codi-nano/codi_nano.bin --exact --max-answer 12 --questions $qs $cheap --confirm 0.5 --threads 2 --out $d/cs_one > /dev/null 2>&1
grep -q "shard 1/2 explored" $d/slurm/explore_1.log && grep -q "now run each shard again with --selection" $d/slurm/select.log &&
  cmp -s $d/cs_one/summary.jsonl $d/slurm/all/summary.jsonl && [ "$(grep -c '"split": "confirm"' $d/slurm/all/summary.jsonl)" -eq 3 ] &&
  grep -q '^CONFIRMED on the 8 held-out questions' $d/slurm/all.log &&
  ok "examples/sweep_slurm.sh with CONFIRM=0.5, 2 shards: explore, select on the union, confirm with --selection, merge: equals one run" || { bad "slurm script / confirm with shards"; cat $d/slurm.out; }

# 8. --dry-run: the plan and an estimate, and nothing run
$CODI sweep $nano --questions $qs --limit 12 $grid --shard 1/2 --dry-run --out $d/dry > $d/dry.out 2> $d/dry.err
grep -q '^plan: 6 questions in this run (0 of them held out for confirmation), 9 conditions' $d/dry.out && grep -q 'per exploration question: 9 branches' $d/dry.out &&
  grep -q '^estimate: [0-9.]* hours ([0-9]* minutes) for this run on 1 thread, batch 32; it is one of 2 shards' $d/dry.out && [ ! -e $d/dry ] &&
  grep -q '^calibration: [0-9.]* ms per branch (12 answer tokens; 128 at once in a batch of 32 on 1 thread)' $d/dry.out &&
  ok "--dry-run prints the plan (questions, conditions, branches) and an estimate timed through a batch of 32, and writes nothing" || { bad "dry run"; cat $d/dry.out $d/dry.err; }
$CODI sweep $nano --questions $qs --pairs 3-3 --out $d/x > /dev/null 2> $d/pairs.err; rc=$?
[ $rc -eq 2 ] && grep -q "pair A-B with 1 <= A < B <= 6" $d/pairs.err && ok "a bad --pairs value: message and exit 2" || bad "bad --pairs: $(cat $d/pairs.err)"
# 9. the batched runner: --batch 1 (one branch at a time per thread: codi_run's bits) and --batch 16 (branches of
#    several questions in one pass) give the same rows and summary, first answer logits within 1e-4 of their
#    scale; and single-stream anchors: a kv cell equals codi eval --batch 1 with the same edit as a kv_cache spec
#    after latent 2 at its slot, an embedding cell the latent_input spec at step 3, base/l5/emb and base/run the
#    reference predictions
bgrid="--limit 8 --steps 2,5 --pairs 1-2 --coeffs 0,2 --kv-coeffs -2,0 --noise-seeds 1 --random-draw question --steer tests/data/steer/s1_z_add.json"
for b in 1 16; do
  $CODI sweep $nano --questions $qs $bgrid --threads 2 --batch $b --dump-logits $d/b$b.safetensors --out $d/b$b > /dev/null 2> $d/b$b.err || { bad "sweep --batch $b runs"; cat $d/b$b.err; }
  tail -n +2 $d/b$b/results.jsonl | sort > $d/b$b.rows
done
logits=fine
if [ -n "$PY" ]; then
  logits=$($PY - $d/b1.safetensors $d/b16.safetensors 2>&1 <<'EOF2'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k != "__metadata__": s, e = v["data_offsets"]; out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
scale = max(abs(x) for v in a.values() for x in v); worst = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
print("fine" if a.keys() == b.keys() and scale > 0 and worst <= 1e-4 * scale else "differ", worst, scale)
EOF2
)
fi
pred() { grep "\"condition\": \"$2\"" $1 | sed 's/.*"index": \([0-9]*\),.*"prediction": \([^,]*\), .*"answer": \(.*\)}$/\1 \2 \3/' | sort -n; }
printf '{"name": "kvcell", "edits": [{"at": "kv_cache", "when": "after_latent:2", "positions": "latent:2", "layer": "all", "alpha": -2, %s}]}\n' \
  '"key_vector": "vectors.safetensors:key_diff_1_2", "value_vector": "vectors.safetensors:value_diff_1_2"' > $d/b16/kvcell.json
printf '{"name": "embcell", "edits": [{"at": "latent_input", "step": 3, "alpha": 2, "vector": "vectors.safetensors:diff_1_2"}]}\n' > $d/b16/embcell.json
ev="--model models/codi-nano/codi_nano.bin --exact --questions $qs --limit 8 --max-answer 12 --batch 1"
$CODI eval $ev --latents 2 --steer $d/b16/kvcell.json --out $d/ev_kv.jsonl > /dev/null 2>&1
$CODI eval $ev --latents 3 --steer $d/b16/embcell.json --out $d/ev_emb.jsonl > /dev/null 2>&1
anchors=0
[ "$(pred $d/ev_kv.jsonl kvcell)" = "$(pred $d/b16/results.jsonl kv/l2/a1b2/c-2/diff)" ] && [ "$(pred $d/ev_kv.jsonl baseline)" = "$(pred $d/b16/results.jsonl base/l2/kv)" ] &&
  [ "$(pred $d/ev_kv.jsonl kvcell)" != "$(pred $d/ev_kv.jsonl baseline)" ] && anchors=$((anchors + 1))
[ "$(pred $d/ev_emb.jsonl embcell)" = "$(pred $d/b16/results.jsonl emb/l2/a1b2/c2/diff)" ] && [ "$(pred $d/ev_emb.jsonl baseline)" = "$(pred $d/b16/results.jsonl base/l2/emb)" ] &&
  [ "$(pred $d/ev_emb.jsonl embcell)" != "$(pred $d/ev_emb.jsonl baseline)" ] && anchors=$((anchors + 1))
head -n 8 tests/data/codi_nano_reference_predictions.txt > $d/ref8.txt
for c in base/l5/emb base/run; do pred $d/b16/results.jsonl $c | cut -d' ' -f2 | cmp -s - $d/ref8.txt && anchors=$((anchors + 1)); done
[ "$(wc -l < $d/b1.rows)" -eq 232 ] && cmp -s $d/b1.rows $d/b16.rows && cmp -s $d/b1/summary.jsonl $d/b16/summary.jsonl && grep -q "on 2 threads, batch 16 " $d/b16.err &&
  [ "${logits%% *}" = fine ] && [ "$anchors" -eq 4 ] &&
  ok "--batch 16 = --batch 1: 232 rows (29 conditions, every kind) and summary identical, logits within 1e-4 ($logits); kv and embedding cells equal single-stream codi eval specs, base/l5/emb and base/run the reference" ||
  { bad "--batch 1 vs 16: logits $logits, $anchors of 4 anchors"; diff $d/b1.rows $d/b16.rows | head -n 4; }
echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
