#!/bin/sh
# codi vectors against golden_protocols_tiny (Hugging Face): mean vectors from running its 8 questions
# and from an activation dataset of them (with an unfinished row to skip); norm-matched random
# directions; llama.cpp control vectors written and read back (direction.N = our residual N + 1).
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
check() { if out=$("$@"); then echo "$out"; pass=$((pass + 1)); else echo "$out"; fail=$((fail + 1)); fi; }
d=build/vectors_test; rm -rf $d; mkdir -p $d
tiny="--model tests/data/codi_tiny.bin --head-dim 32 --exact"
g=tests/data/golden_protocols_tiny.safetensors
C=build/check_vectors_san

build/codi vectors $tiny --questions tests/data/protocol_questions.jsonl --out $d/v.safetensors > /dev/null 2> $d/err || { bad "codi vectors --questions runs"; cat $d/err; }
check $C compare "vectors --questions: mean_final = golden means (final-normed hidden at latent k)" $d/v.safetensors:mean_final $g:means 1e-4
check $C compare "vectors --questions: mean_key = golden k_means (post-RoPE)" $d/v.safetensors:mean_key $g:k_means 1e-4
check $C compare "vectors --questions: mean_value = golden v_means" $d/v.safetensors:mean_value $g:v_means 1e-4
check $C norm "random_3_5 has the norm of diff_3_5, another direction" $d/v.safetensors:random_3_5 $d/v.safetensors:diff_3_5

$C acts $d/acts.safetensors > $d/err || { bad "writing the activation dataset"; cat $d/err; }
build/codi vectors $tiny --acts $d/acts.safetensors --out $d/va.safetensors > /dev/null 2> $d/err || { bad "codi vectors --acts runs"; cat $d/err; }
check $C compare "vectors --acts (8 done rows, 1 unfinished skipped): mean_final = golden means" $d/va.safetensors:mean_final $g:means 1e-4
check $C compare "vectors --acts: mean_key = golden k_means" $d/va.safetensors:mean_key $g:k_means 1e-4
check $C compare "vectors --acts: value_diff_2_4 = from --questions" $d/va.safetensors:value_diff_2_4 $d/v.safetensors:value_diff_2_4 1e-5

# a real `codi record` dataset (codi-nano, 8 questions, with K/V) gives the same vectors as running them
# (--batch 1: codi_run's bits; batched runs agree within rounding: tests/test_batch_runners.sh)
build/codi record --model models/codi-nano/codi_nano.bin --exact --questions models/codi-nano/test.jsonl --limit 8 --kv --max-answer 2 --batch 1 \
  --out $d/rec.safetensors > /dev/null 2> $d/err &&
  build/codi vectors --model models/codi-nano/codi_nano.bin --exact --acts $d/rec.safetensors --out $d/vr.safetensors > /dev/null 2>> $d/err &&
  build/codi vectors --model models/codi-nano/codi_nano.bin --exact --questions models/codi-nano/test.jsonl --limit 8 --batch 1 --out $d/vn.safetensors > /dev/null 2>> $d/err ||
  { bad "codi record + codi vectors --acts"; cat $d/err; }
check $C compare "vectors --acts of a codi record file: mean_final = vectors --questions (bit for bit)" $d/vr.safetensors:mean_final $d/vn.safetensors:mean_final 0
check $C compare "vectors --acts of a codi record file: key_diff_2_5 = vectors --questions (bit for bit)" $d/vr.safetensors:key_diff_2_5 $d/vn.safetensors:key_diff_2_5 0

# pre-RoPE keys of the same dataset: key_pre_rope rotated by each row's position is key; --keys pre
# means from the dataset = from running the questions (bit for bit), and differ from post-RoPE ones
check $C prerope "codi record --kv: key_pre_rope rotated forth by its positions = key" models/codi-nano/codi_nano.bin $d/rec.safetensors
build/codi vectors --model models/codi-nano/codi_nano.bin --exact --acts $d/rec.safetensors --keys pre --out $d/vrp.safetensors > /dev/null 2> $d/err &&
  build/codi vectors --model models/codi-nano/codi_nano.bin --exact --questions models/codi-nano/test.jsonl --limit 8 --keys pre --batch 1 --out $d/vnp.safetensors > /dev/null 2>> $d/err ||
  { bad "codi vectors --keys pre"; cat $d/err; }
check $C compare "vectors --keys pre: mean_key_pre_rope from the dataset = from the runs (bit for bit)" $d/vrp.safetensors:mean_key_pre_rope $d/vnp.safetensors:mean_key_pre_rope 0
check $C compare "vectors --keys pre: key_pre_rope_diff_2_5 from the dataset = from the runs" $d/vrp.safetensors:key_pre_rope_diff_2_5 $d/vnp.safetensors:key_pre_rope_diff_2_5 0
$C compare "" $d/vrp.safetensors:mean_key_pre_rope $d/vr.safetensors:mean_key 0.01 > /dev/null &&
  bad "pre-RoPE key means differ from post-RoPE ones" || ok "pre-RoPE key means differ from post-RoPE ones"
build/codi pca --acts $d/rec.safetensors --tensor key --keys pre --layers 2 --components 2 --out $d/pca_pre > /dev/null 2> $d/err &&
  grep -aq 'key_pre_rope.layer2.components' $d/pca_pre/pca.safetensors && ok "pca --tensor key --keys pre reads key_pre_rope" || { bad "pca --keys pre"; cat $d/err; }

# codi vectors extract, activation patching (examples/specs/patch_latent3.json): question 1's recorded z_3
# patched into question 1 reproduces its run bit for bit; patched into question 0, z_3 is question 1's exactly
M="--model models/codi-nano/codi_nano.bin --exact"
qa=$(sed -n 1p models/codi-nano/test.jsonl | sed 's/^{"question": "\([^"]*\)".*/\1/')
qb=$(sed -n 2p models/codi-nano/test.jsonl | sed 's/^{"question": "\([^"]*\)".*/\1/')
rm -f build/latent_patch.safetensors build/mean_latents.safetensors
build/codi vectors extract --acts $d/rec.safetensors --slot latent3 --question 1 --name b_latent3 --out build/latent_patch.safetensors > $d/ex.txt 2> $d/err &&
  build/codi trace $M --question "$qb" --out $d/tb.safetensors > /dev/null 2>> $d/err &&
  build/codi trace $M --question "$qb" --steer examples/specs/patch_latent3.json --out $d/tbp.safetensors > /dev/null 2>> $d/err &&
  build/codi trace $M --question "$qa" --out $d/ta.safetensors > /dev/null 2>> $d/err &&
  build/codi trace $M --question "$qa" --steer examples/specs/patch_latent3.json --out $d/tap.safetensors > /dev/null 2>> $d/err ||
  { bad "vectors extract + trace --steer patch_latent3.json"; cat $d/err; }
grep -q 'b_latent3 = row of latent_inputs at latent 3 over 1 row(s): question 1' $d/ex.txt && ok "vectors extract: one row, described" || bad "extract output: $(cat $d/ex.txt)"
check $C compare "patching question 1's own z_3 into question 1: every latent input unchanged (bit for bit)" $d/tbp.safetensors:latent_inputs $d/tb.safetensors:latent_inputs 0
check $C compare "patching question 1's own z_3 into question 1: answer logits unchanged (bit for bit)" $d/tbp.safetensors:answer_logits $d/tb.safetensors:answer_logits 0
check $C compare "patching question 1's z_3 into question 0: its z_3 is question 1's exactly" $d/tap.safetensors:latent_inputs@512+256 $d/tb.safetensors:latent_inputs@512+256 0
check $C compare "patching into question 0: z_1, z_2 are question 0's own" $d/tap.safetensors:latent_inputs@0+512 $d/ta.safetensors:latent_inputs@0+512 0
$C compare "" $d/tap.safetensors:latent_inputs@768+256 $d/ta.safetensors:latent_inputs@768+256 1e-3 > /dev/null &&
  bad "patching into question 0 changes its z_4" || ok "patching into question 0 changes its z_4 (the patch propagates)"
# mean-latent patching (Cywinski et al.; examples/specs/mean_latent3_*.json): same first intermediate as
# question 0 (12: only question 1 among the 8, question 0 excluded), different, random of the same norm
build/codi vectors extract --acts $d/rec.safetensors --slot latent3 --where steps.0.3=12 --questions models/codi-nano/test.jsonl --exclude 0 \
  --name same --out build/mean_latents.safetensors > $d/ex.txt 2> $d/err &&
  build/codi vectors extract --acts $d/rec.safetensors --slot latent3 --where 'steps.0.3!=12' --questions models/codi-nano/test.jsonl \
  --name different --out build/mean_latents.safetensors >> $d/ex.txt 2>> $d/err || { bad "vectors extract --where"; cat $d/err; }
grep -q 'different = mean of latent_inputs at latent 3 over 6 row(s)' $d/ex.txt && ok "vectors extract --where FIELD!=VALUE: a mean over the 6 others" || bad "extract --where: $(cat $d/ex.txt)"
check $C compare "vectors extract --where steps.0.3=12 --exclude 0: the mean over question 1 alone = its row" build/mean_latents.safetensors:same build/latent_patch.safetensors:b_latent3 0
for s in same different random; do
  build/codi trace $M --question "$qa" --steer examples/specs/mean_latent3_$s.json --out $d/tm_$s.safetensors > /dev/null 2> $d/err || { bad "trace --steer mean_latent3_$s.json"; cat $d/err; }
done
check $C compare "mean_latent3_different.json sets z_3 to the different-intermediate mean" $d/tm_different.safetensors:latent_inputs@512+256 build/mean_latents.safetensors:different 0
check $C norm "mean_latent3_random.json sets z_3 to a random vector of the same mean's norm" $d/tm_random.safetensors:latent_inputs@512+256 build/mean_latents.safetensors:same
build/codi vectors extract --acts $d/rec.safetensors --slot latent9 --question 1 --name x --out $d/x.safetensors > /dev/null 2> $d/err; rc=$?
[ $rc -eq 2 ] && grep -q "no slot 'latent9'" $d/err && grep -q "latent 6" $d/err && ok "vectors extract: an unknown slot is refused, the slots listed" || bad "unknown slot (exit $rc): $(cat $d/err)"
sed '1s/Zoe/Zed/' models/codi-nano/test.jsonl > $d/other.jsonl
build/codi vectors extract --acts $d/rec.safetensors --slot latent3 --where steps.0.3=12 --questions $d/other.jsonl --name x --out $d/x.safetensors > /dev/null 2> $d/err; rc=$?
[ $rc -eq 1 ] && grep -q "not the questions file" $d/err && ok "vectors extract --where: another questions file is refused" || bad "questions check (exit $rc): $(cat $d/err)"

# KV steering vectors from contrastive prompts: positive = golden_tiny's prompt, negative = the same
# without its last token (causal: its last K / V are the prompt's at position 22), so the vectors are
# Hugging Face's prefill K / V at position 23 minus position 22
gt=tests/data/golden_tiny.safetensors
echo '{"question": "golden prompt", "ids": [1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513]}' > $d/pos.jsonl
echo '{"question": "golden prompt less its last token", "ids": [1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125]}' > $d/neg.jsonl
build/codi vectors $tiny --positive $d/pos.jsonl --negative $d/neg.jsonl --out $d/kv.safetensors > /dev/null 2> $d/err || { bad "codi vectors --positive/--negative runs"; cat $d/err; }
check $C kvdiff "vectors --positive/--negative: key_steer = golden prefill_k[23] - prefill_k[22]" $d/kv.safetensors:key_steer $gt:f32.prefill_k 23 22 1e-4
check $C kvdiff "vectors --positive/--negative: value_steer = golden prefill_v[23] - prefill_v[22]" $d/kv.safetensors:value_steer $gt:f32.prefill_v 23 22 1e-4

# control vectors: diff_3_5 at our residual indices 2..4 -> direction.1..3; read back with a spec
build/codi vectors --to-gguf $d/v.safetensors:diff_3_5 --layers 2-4 --out $d/cv.gguf > /dev/null 2> $d/err &&
  build/codi vectors --from-gguf $d/cv.gguf --out $d/cv.safetensors --spec $d/cv.json > /dev/null 2>> $d/err || { bad "gguf round trip runs"; cat $d/err; }
check $C compare "GGUF round trip: direction.2 = diff_3_5" $d/cv.safetensors:direction.2 $d/v.safetensors:diff_3_5 0
[ "$(head -c 4 $d/cv.gguf)" = GGUF ] && [ "$(od -An -tu4 -j4 -N4 $d/cv.gguf | tr -d ' ')" = 3 ] && grep -q 'controlvector' $d/cv.gguf &&
  ok "control vector file: GGUF v3, general.architecture controlvector" || bad "GGUF header"
grep -q '"at": "resid", "layer": 4, "phase": "all", "vector": "cv.safetensors:direction.3"' $d/cv.json &&
  ok "spec from GGUF: direction.N at residual index N + 1 (llama.cpp adds it to block N's output)" || bad "spec from gguf: $(cat $d/cv.json)"
head -c 100 $d/cv.gguf > $d/cut.gguf
build/codi vectors --from-gguf $d/cut.gguf --out $d/x.safetensors 2> $d/err > /dev/null; rc=$?
[ $rc -ne 0 ] && grep -q "truncated or malformed" $d/err && ok "a truncated GGUF: message and non-zero exit" || bad "truncated gguf: $(cat $d/err)"

# codi trace --steer with the golden steering runs written as specs (tests/data/steer/): golden_tiny's
# tolerances (logits max |diff| 1e-3, latents relative L2 1e-4, tokens equal)
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
for t in s1_z_add s2_resid s3_kv s4_z_set; do
  gt=tests/data/golden_tiny.safetensors
  build/codi trace $tiny --ids $ids --steer tests/data/steer/$t.json --out $d/trace_$t.safetensors > /dev/null 2> $d/err || { bad "codi trace --steer $t"; cat $d/err; }
  check $C maxabs "codi trace --steer $t.json: answer_logits = golden f32.$t" $d/trace_$t.safetensors:answer_logits $gt:f32.$t.answer_logits 1e-3
  check $C compare "codi trace --steer $t.json: latent_inputs = golden f32.$t" $d/trace_$t.safetensors:latent_inputs $gt:f32.$t.latent_inputs 1e-4
  check $C maxabs "codi trace --steer $t.json: latent_final_logits = golden f32.$t" $d/trace_$t.safetensors:latent_final_logits $gt:f32.$t.latent_final_logits 1e-3
  check $C maxabs "codi trace --steer $t.json: answer_tokens = golden f32.$t" $d/trace_$t.safetensors:answer_tokens $gt:f32.$t.answer_tokens 0
done

# codi sweep on the protocol questions: every variant branches from the state after the question and
# l latents; question 0's first answer logits equal golden_protocols_tiny's (pair (3, 5), coeff 2 for
# embedding steering; pair (2, 4), coeff -2 for KV steering; coeff 0 = the plain runs)
build/codi sweep $tiny --tokenizer models/codi-nano/tokenizer.json --questions tests/data/protocol_questions.jsonl --limit 1 \
  --out $d/sweep --dump-logits $d/sweep/logits.safetensors > /dev/null 2> $d/err || { bad "codi sweep runs"; cat $d/err; }
for l in 1 2 3 4 5 6; do
  check $C compare "sweep l=$l: z_(l+1) += 2 diff(3,5) logits = golden emb_steer_logits[$l]" \
    $d/sweep/logits.safetensors:emb_logits@$(( (((l - 1) * 15 + 10) * 6 + 4) * 514 ))+514 $g:emb_steer_logits@$(( (l - 1) * 514 ))+514 1e-5
  check $C compare "sweep l=$l: K, V at latent $l += -2 diff(2,4) logits = golden kv_steer_logits[$l]" \
    $d/sweep/logits.safetensors:kv_logits@$(( (((l - 1) * 15 + 6) * 4 + 1) * 514 ))+514 $g:kv_steer_logits@$(( (l - 1) * 514 ))+514 1e-5
  check $C compare "sweep l=$l: KV coeff 0 = golden plain_logits with $l latents" \
    $d/sweep/logits.safetensors:kv_logits@$(( (((l - 1) * 15 + 14) * 4 + 3) * 514 ))+514 $g:plain_logits@$(( l * 514 ))+514 1e-5
done
n_svg=$(ls $d/sweep/*.svg | wc -l)
[ "$n_svg" -eq 40 ] && [ "$(wc -l < $d/sweep/summary.csv)" -eq 1867 ] && [ "$(grep -c '"index"' $d/sweep/results.jsonl)" -eq 1866 ] &&
  head -c 5 $d/sweep/embedding_diff_delta_c2.svg | grep -q '<svg' &&
  ok "sweep writes 40 SVG heatmaps (per coeff: accuracy of cells and controls, differences to the baseline and the control), 1,866 conditions (6 l x (2 baselines + 15 pairs x (6 + 4 coeffs) x 2 + 9 noise)), one result each" || bad "sweep outputs: $n_svg svg"
# scored on two codi-nano questions it answers right unsteered: identical tables with 1 and 2 threads
sed -n '6p;12p' models/codi-nano/test.jsonl > $d/q2.jsonl
nano="--model models/codi-nano/codi_nano.bin --exact --latents 2 --max-answer 8 --means-limit 20 --means-questions models/codi-nano/test.jsonl --questions $d/q2.jsonl"
build/codi sweep $nano --threads 1 --out $d/s1 > $d/s1.out 2> $d/err && build/codi sweep $nano --threads 2 --out $d/s2 > /dev/null 2>> $d/err &&
  cmp -s $d/s1/summary.csv $d/s2/summary.csv && [ "$(awk -F, 'NR > 1 && $6 > 0' $d/s1/summary.csv | wc -l)" -gt 0 ] &&
  ok "sweep on codi-nano questions: scored answers, identical summaries with 1 and 2 threads" || { bad "sweep threads"; cat $d/err; }
# per-dimension noise from the means of one question, evaluated on that question: its std is 0, so the
# "noise" is that question's own z_(l+1) and every answer equals the plain one (right at l = 4)
sed -n '6p' models/codi-nano/test.jsonl > $d/q1.jsonl
build/codi sweep --model models/codi-nano/codi_nano.bin --exact --latents 4 --max-answer 8 --means-questions $d/q1.jsonl --means-limit 1 \
  --questions $d/q1.jsonl --out $d/s3 > /dev/null 2> $d/err || { bad "sweep on one question"; cat $d/err; }
grep '^noise/l[0-9]/dim/s[0-9],' $d/s3/summary.csv > $d/s3/dim.csv
[ "$(wc -l < $d/s3/dim.csv)" -eq 12 ] && [ "$(awk -F, '$16 + $17 != 0 || $12 != 1' $d/s3/dim.csv | wc -l)" -eq 0 ] &&
  grep -q '^noise/l4/dim/s1,noise,cell,explore,1,1,' $d/s3/dim.csv &&
  ok "sweep per-dimension noise with std 0 reproduces the plain answers (12 of 12 without a flip, right at l = 4)" || bad "per-dimension noise: $(cat $d/s3/dim.csv | tr '\n' ' ')"
echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]
