#!/bin/sh
# build/codi end to end: trace against the golden file, info, run, and error exits.
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
ids=1,63,213,200,453,184,442,3,293,81,367,143,82,325,269,203,222,216,92,506,31,119,125,513
if build/codi trace --model tests/data/codi_tiny.bin --head-dim 32 --exact --ids $ids --out build/trace.safetensors >/dev/null; then
  out=$(build/check_trace_san build/trace.safetensors tests/data/golden_tiny.safetensors f32)
  echo "$out" | grep -v '^[0-9]* passed'
  echo "$out" | grep -q '^[0-9]* passed, 0 failed' && ok "codi trace matches golden_tiny f32.*" || bad "codi trace matches golden_tiny f32.*"
else bad "codi trace runs"; fi
build/codi info --model tests/data/codi_tiny.bin --head-dim 32 | grep -q "101 tensors: 101 from the checkpoint" && ok "codi info reports tensor sources" || bad "codi info"
build/codi run --model tests/data/codi_tiny.bin --head-dim 32 --ids $ids --answer-steps 4 | grep -q "answer ids: 215 492 456 360$" && ok "codi run prints the answer ids" || bad "codi run"
build/codi trace --model tests/data/no_such.bin --ids 1 --out build/x.safetensors 2>build/err.txt; rc=$?
[ $rc -ne 0 ] && grep -q "cannot open" build/err.txt && ok "missing model: message and non-zero exit" || bad "missing model exit"
build/codi run --model tests/data/codi_tiny.bin --head-dim 32 --ids 1,9999,513 2>build/err.txt >/dev/null; rc=$?
[ $rc -ne 0 ] && grep -q "out of range" build/err.txt && ok "token id out of range: message and non-zero exit" || bad "token id exit"
echo "$pass passed, $fail failed"
