#!/bin/sh
# make demo: one CODI question on the model shipped in the repository (the tiny golden CODI
# model, random weights of Llama 3.2's structure), its answer, decoded latents and a lens table.
set -e
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
echo "model: tests/data/codi_tiny.bin (4 layers, dim 256; CODI tokens pad 512, bot 513, eot 514)"
echo "question ids (bos ... bot): $ids"
build/codi run --model tests/data/codi_tiny.bin --head-dim 32 --ids $ids --latents 6 --answer-steps 16
