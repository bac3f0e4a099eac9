#!/bin/sh
# make bench [LLAMA_BENCH=path/to/llama-bench] [THREADS="1 2"]
# Writes a full-size Llama 3.2 1B-shaped CODI checkpoint with random weights (once, into bench/)
# and its merged export, then for each thread count: codi bench on the checkpoint (load = LoRA
# merge), on the merged export (load = mmap), the scalar path beside the default one; and, when
# LLAMA_BENCH names a llama.cpp llama-bench, the same weights as a BF16 GGUF
# (tools/gguf_from_safetensors.py) with both tools' tokens/s side by side.
set -e
mkdir -p bench
THREADS=${THREADS:-"1 2"}
[ -f bench/random_1b.safetensors ] || build/random_codi bench/random_1b.safetensors
[ -f bench/random_1b_merged.safetensors ] || build/codi export --model bench/random_1b.safetensors --merged bench/random_1b_merged.safetensors
grep -o -w -E 'avx2|fma|avx512f|avx512bw|avx512_bf16|amx_bf16|asimd' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' | sed 's/^/cpu flags: /; s/$/\n/'
for t in $THREADS; do
  echo "== $t thread(s): checkpoint with LoRA (merge at load)"
  build/codi bench --model bench/random_1b.safetensors --threads "$t"
  echo "== $t thread(s): merged export (load = mmap); the default path, then pp128 and tg of the scalar one"
  build/codi bench --model bench/random_1b_merged.safetensors --threads "$t" --kernels default,scalar --json > bench/codi_$t.json
  cat bench/codi_$t.json
  if [ -n "$LLAMA_BENCH" ]; then
    [ -f bench/random_1b_bf16.gguf ] || python3 tools/gguf_from_safetensors.py bench/random_1b_merged.safetensors bench/random_1b_bf16.gguf
    "$LLAMA_BENCH" -m bench/random_1b_bf16.gguf -p 128,512 -n 32 -t "$t" -o json > bench/llama_$t.json
    python3 - "$t" <<'EOF'
import json, sys
t = sys.argv[1]
codi = json.load(open("bench/codi_%s.json" % t))
llama = {}
for r in json.load(open("bench/llama_%s.json" % t)):
    key = "tg" if r["n_gen"] else "pp%d" % r["n_prompt"]
    llama[key] = r["avg_ts"]
print("%-6s %12s %12s %8s" % ("", "codi_lens", "llama.cpp", "ratio"))
for k in ("pp128", "pp512", "tg"):
    if k in llama:
        print("%-6s %12.2f %12.2f %7.2fx" % (k, codi[k], llama[k], codi[k] / llama[k]))
EOF
  fi
done
