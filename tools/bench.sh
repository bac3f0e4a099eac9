#!/bin/sh
# make bench: writes a full-size Llama 3.2 1B-shaped CODI checkpoint with random weights
# (once, into bench/), then reports prefill and decode tokens/s with 1 and 2 threads.
set -e
mkdir -p bench
[ -f bench/random_1b.safetensors ] || build/random_codi bench/random_1b.safetensors
for t in 1 2; do build/codi bench --model bench/random_1b.safetensors --json --threads $t; done
