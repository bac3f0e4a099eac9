#!/bin/sh
# tools/gguf_from_safetensors.py on codi_tiny exported by `codi export`: the GGUF says
# general.alignment = 64, its data section and every tensor start at multiples of 64, and each
# tensor's bytes equal the export's (q/k rows permuted, so only the other tensors are compared).
# Run from the repository root after `make build/codi`.
pass=0; fail=0
tmp=${TMPDIR:-/tmp}/codi_test_gguf.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
if ! build/codi export --model tests/data/codi_tiny.bin --merged "$tmp/m.safetensors" >"$tmp/log" 2>&1; then
  echo "not ok - codi export: $(tail -1 "$tmp/log")"; echo "0 passed, 1 failed, 0 skipped"; exit 1
fi
if python3 tools/gguf_from_safetensors.py "$tmp/m.safetensors" "$tmp/m.gguf" >"$tmp/log" 2>&1; then
  echo "ok - gguf_from_safetensors.py converts the tiny export"; pass=$((pass + 1))
else
  echo "not ok - gguf_from_safetensors.py: $(tail -1 "$tmp/log")"; echo "0 passed, 1 failed, 0 skipped"; exit 1
fi
out=$(python3 - "$tmp/m.gguf" "$tmp/m.safetensors" <<'PY'
import json, struct, sys
g = open(sys.argv[1], "rb").read()
pos = 4
def take(fmt):
    global pos
    v = struct.unpack_from("<" + fmt, g, pos); pos += struct.calcsize("<" + fmt); return v
def string():
    global pos
    (n,) = take("Q"); s = g[pos:pos + n].decode(); pos += n; return s
SIZES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
def value(t):
    if t == 8: return string()
    if t == 9:
        et, n = take("IQ"); return [value(et) for _ in range(n)]
    return take(SIZES[t])[0]
version, nt, nkv = take("IQQ")
kv = {}
for _ in range(nkv):
    k = string(); (t,) = take("I"); kv[k] = value(t)
infos = []
for _ in range(nt):
    name = string(); (nd,) = take("I"); dims = take("%dQ" % nd); gtype, off = take("IQ"); infos.append((name, dims, gtype, off))
align = kv.get("general.alignment", 32)
base = (pos + align - 1) // align * align
bad = [n for n, d, t, o in infos if (base + o) % 64]
st = open(sys.argv[2], "rb"); hl = struct.unpack("<Q", st.read(8))[0]; hdr = json.loads(st.read(hl)); sb = st.read()
same = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}
diff = []
for gn, hn in same.items():
    e = [i for i in infos if i[0] == gn]
    if not e or hn not in hdr: diff.append(gn); continue
    a, b = hdr[hn]["data_offsets"]
    if g[base + e[0][3]:base + e[0][3] + (b - a)] != sb[a:b]: diff.append(gn)
print(align, base, len(infos), len(bad), ",".join(bad[:3]) or "-", ",".join(diff) or "-")
PY
) || out="error"
set -- $out
if [ "$1" = 64 ] && [ "$2" -gt 0 ] && [ $(($2 % 64)) = 0 ] && [ "$4" = 0 ]; then
  echo "ok - general.alignment 64, data at $2, all $3 tensors 64-byte aligned"; pass=$((pass + 1))
else
  echo "not ok - GGUF alignment: alignment ${1:-?}, data at ${2:-?}, ${4:-?} of ${3:-?} tensors misaligned (${5:-?})"; fail=$((fail + 1))
fi
if [ "${6:-x}" = "-" ]; then echo "ok - embeddings, final norm and a down_proj keep the export's bytes"; pass=$((pass + 1))
else echo "not ok - GGUF tensors differ from the export: ${6:-?}"; fail=$((fail + 1)); fi
echo "$pass passed, $fail failed, 0 skipped"
[ "$fail" = 0 ]
