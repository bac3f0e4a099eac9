#!/bin/sh
# make demo: one CODI question, given as text, on the model shipped in the repository (codi-nano:
# a tiny Llama 3.2-shaped CODI model trained on GSM8K-style problems, with its own tokenizer):
# the answer as it is generated, the decoded latents and a logit-lens table, all as text.
set -e
q="Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?"
echo "model: models/codi-nano (6 layers, dim 256; see its README: 13% with 6 latents, 3.8% with none)"
echo "question: $q"
build/codi run --model models/codi-nano/codi_nano.bin --question "$q" --latents 6
