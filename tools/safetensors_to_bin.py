#!/usr/bin/env python3
"""Converts a .safetensors file into a torch.save state dict (.bin, the zip format CODI's
Trainer writes), keeping names and dtypes: for load-time measurements on .bin checkpoints,
e.g. the CRC-32 cost on a 1B-sized random checkpoint from build/random_codi.
    python3 tools/safetensors_to_bin.py IN.safetensors OUT.bin"""
import json, struct, sys
import numpy as np
import torch

DTYPES = {"F32": (np.float32, None), "BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None),
          "I32": (np.int32, None), "I64": (np.int64, None), "F64": (np.float64, None)}

def main(src, dst):
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = np.memmap(src, dtype=np.uint8, mode="r", offset=8 + n)
    state = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        np_type, view = DTYPES[e["dtype"]]
        a, b = e["data_offsets"]
        t = torch.from_numpy(np.array(data[a:b]).view(np_type).reshape(e["shape"]))
        state[name] = t.view(view) if view is not None else t
    torch.save(state, dst)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
