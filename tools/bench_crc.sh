#!/bin/sh
# make bench-crc: the load-time cost of verifying the CRC-32 of every zip entry, on a Llama 3.2
# 1B-sized random checkpoint saved as .bin (2.9 GB; written once into bench/ by random_codi and
# tools/safetensors_to_bin.py, which needs PyTorch): `codi info` with and without --no-crc, twice.
set -e
mkdir -p bench
[ -f bench/random_1b.safetensors ] || build/random_codi bench/random_1b.safetensors
[ -f bench/random_1b.bin ] || /usr/bin/python3 tools/safetensors_to_bin.py bench/random_1b.safetensors bench/random_1b.bin
for i in 1 2; do
  /usr/bin/time -f "verify CRC-32: %U s user, %e s wall, peak RSS %M KB" build/codi info --model bench/random_1b.bin > /dev/null
  /usr/bin/time -f "--no-crc:      %U s user, %e s wall, peak RSS %M KB" build/codi info --model bench/random_1b.bin --no-crc > /dev/null
done
