#!/bin/sh
# make demo: one CODI question, given as text, on the model shipped in the repository (codi-nano:
# a tiny Llama 3.2-shaped CODI model trained on GSM8K-style problems, with its own tokenizer):
# the answer as it is generated, the decoded latents and a logit-lens table, all as text; then the
# gold answer beside the model's, and the model's accuracy on held-out questions, measured now.
set -e
model=models/codi-nano/codi_nano.bin
questions=models/codi-nano/test.jsonl
line=$(head -n 1 $questions)
q=$(echo "$line" | sed 's/^{"question": "\([^"]*\)".*/\1/')
gold=$(echo "$line" | sed 's/.*"answer": \([0-9-]*\).*/\1/')
echo "model: $model (4.7M parameters, 6 layers, dim 256; see models/codi-nano/README.md)"
echo "question (the first of $questions): $q"
out=$(build/codi run --model $model --question "$q" --latents 6)
echo "$out"
pred=$(echo "$out" | sed -n 's/^answer number: //p')
if [ "$pred" = "$gold" ]; then verdict="right"; else verdict="wrong: codi-nano is a small, weak model"; fi
echo
echo "gold answer: $gold   model's answer: ${pred:-none}   ($verdict)"
n=100
acc=$(build/codi run --model $model --questions $questions --limit $n 2>/dev/null | tail -n 1)
c=$(echo "$acc" | sed 's/.*"correct": \([0-9]*\),.*/\1/')
echo "accuracy on the first $n held-out questions, measured now: $c of $n right ($(awk "BEGIN { printf \"%.1f\", 100 * $c / $n }")%)"
echo "(the model's README reports 13.0% on all 500 with 6 latents, 3.8% with none)"
