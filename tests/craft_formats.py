#!/usr/bin/env python3
"""Crafted bad files for tests/test_research_formats.sh (standard library only).
    craft_formats.py acts SRC.safetensors OUT.safetensors EDITS_JSON
        rewrites a safetensors file: EDITS_JSON maps tensor name -> {"shape": [...], "dtype": ...,
        "bytes": N (data bytes; zeros)} or null (drop it), plus optional "__meta__": {key: value};
        tensors not named keep their data.
    craft_formats.py st OUT.safetensors SPEC_JSON     a new file: name -> {"dtype", "shape", "fill"}
    craft_formats.py gguf OUT.gguf NAMES_JSON DIM NBYTES OFFSET   control vector: every tensor named
        in NAMES_JSON F32 [DIM] at data offset OFFSET (0: all the same data), NBYTES of data"""
import json, struct, sys

SIZES = {"F64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "U8": 1}


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        out[k] = (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
    return h.get("__metadata__", {}), out


def write_st(path, meta, tensors):
    h, blobs, off = {}, [], 0
    if meta:
        h["__metadata__"] = meta
    for k, (dt, shape, data) in tensors.items():
        h[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hb = json.dumps(h).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def main():
    cmd = sys.argv[1]
    if cmd == "acts":
        meta, t = read_st(sys.argv[2])
        edits = json.loads(sys.argv[4])
        meta.update(edits.pop("__meta__", {}))
        for k, e in edits.items():
            if e is None:
                t.pop(k, None)
                continue
            dt = e.get("dtype", t[k][0] if k in t else "F32")
            shape = e["shape"]
            nb = e.get("bytes", numel(shape) * SIZES[dt])
            t[k] = (dt, shape, bytes(nb))
        write_st(sys.argv[3], meta, t)
    elif cmd == "st":
        spec = json.loads(sys.argv[3])
        meta = spec.pop("__meta__", {})
        t = {}
        for k, e in spec.items():
            n = numel(e["shape"])
            fmt = {"F32": "f", "F64": "d", "I32": "i", "U8": "B"}[e["dtype"]]
            fill = e.get("fill", 0)
            vals = fill if isinstance(fill, list) else [fill] * n
            t[k] = (e["dtype"], e["shape"], struct.pack("<%d%s" % (n, fmt), *vals))
        write_st(sys.argv[2], meta, t)
    elif cmd == "gguf":
        names, dim, nbytes, off = json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        out = b"GGUF" + struct.pack("<IQQ", 3, len(names), 0)
        for i, nm in enumerate(names):
            nb = nm.encode()
            out += struct.pack("<Q", len(nb)) + nb + struct.pack("<IQIQ", 1, dim, 0, off * i)
        out += bytes((32 - len(out) % 32) % 32) + struct.pack("<f", 0.5) * (nbytes // 4)
        open(sys.argv[2], "wb").write(out)
    else:
        sys.exit("unknown command " + cmd)


main()
