"""Our output files without extra packages: .safetensors (numpy only), JSONL and CSV (standard library).

These need neither the shared library nor the safetensors package, so they also work on a
machine that only has the files.
"""
import csv
import json
import math
import os
import struct

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
           "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "BF16": "<u2"}
_NAMES = {np.dtype(v).str: k for k, v in _DTYPES.items() if k != "BF16"}


class SafetensorsError(ValueError):
    """A file that is not a valid .safetensors file (the message names the file and what is wrong)."""


def bf16_to_float32(bits):
    """bfloat16 bit patterns (uint16 array) -> float32, exactly (bf16 is the top half of an f32)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


_widen_bf16 = bf16_to_float32   # read_safetensors' argument of the same name hides it there


def float32_to_bf16(x):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even as codi_lens.h and torch do
    (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def read_safetensors(path, bf16_to_float32=True, mmap=True):
    """Reads a .safetensors file: returns (tensors, metadata), tensors a dict name -> numpy array in
    the header's order (the order the writer listed them; our writers store the data of tensors of
    64-byte multiples first, so data order can differ), metadata the header's __metadata__ strings (a dict, empty when absent).

    BF16 tensors come widened to float32 (exact) with bf16_to_float32=True, else as their uint16
    bit patterns. With mmap=True (default) the arrays are read-only views of the mapped file (a large
    activation dataset costs no memory until read); mmap=False reads everything into memory."""
    size = os.path.getsize(path)
    if size < 8:
        raise SafetensorsError("%s: %d bytes, too short for a safetensors header" % (path, size))
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        if hlen > size - 8 or hlen > 100 << 20:
            raise SafetensorsError("%s: header length %d does not fit in the file (%d bytes)" % (path, hlen, size))
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SafetensorsError("%s: the header is not JSON: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise SafetensorsError("%s: the header is not a JSON object" % path)
    meta = header.pop("__metadata__", None) or {}
    start = 8 + hlen
    data = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, dtype=np.uint8)
    out = {}
    for name, info in header.items():
        try:
            dt, shape, (lo, hi) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError("%s: tensor %r: needs dtype, shape and data_offsets" % (path, name)) from None
        if dt not in _DTYPES:
            raise SafetensorsError("%s: tensor %r: dtype %s is not supported" % (path, name, dt))
        np_dt = np.dtype(_DTYPES[dt])
        n = math.prod(shape)
        if any(d < 0 for d in shape) or not (0 <= lo <= hi <= size - start) or hi - lo != n * np_dt.itemsize:
            raise SafetensorsError("%s: tensor %r: shape %s of %s does not match its %d bytes at [%d, %d) (data %d bytes)"
                                   % (path, name, shape, dt, hi - lo, lo, hi, size - start))
        arr = data[start + lo:start + hi].view(np_dt).reshape(shape)
        if dt == "BF16" and bf16_to_float32:
            arr = _widen_bf16(arr)
        out[name] = arr
    return out, dict(meta)


def write_safetensors(path, tensors, metadata=None, bf16=()):
    """Writes tensors (a dict name -> array) as a .safetensors file that our commands, numpy and
    torch read (written to PATH.tmp, then renamed). metadata: a dict of strings for __metadata__.
    Names in bf16 are stored as BF16, rounded to nearest even (a uint16 array is taken as bf16 bits
    as it is). Other dtypes are stored as they are (float64, float32, float16, int64/32/16/8,
    uint64/32/16/8, bool)."""
    header, blobs, off = {}, [], 0
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError("write_safetensors: metadata values must be strings (keys %s)" % bad)
        header["__metadata__"] = dict(metadata)
    for name in bf16:
        if name not in tensors:
            raise KeyError("write_safetensors: bf16 names %r, which is not among the tensors" % name)
    for name, arr in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError("write_safetensors: bad tensor name %r" % (name,))
        a = np.asarray(arr)
        if name in bf16:
            a, dt = (a if a.dtype == np.uint16 else float32_to_bf16(a)), "BF16"
        else:
            dt = _NAMES.get(a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str)
            if dt is None:
                raise TypeError("write_safetensors: tensor %r has dtype %s, which safetensors cannot hold" % (name, a.dtype))
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": None}
        blobs.append((name, raw))
    # As codi_write_safetensors: tensors of 64-byte multiples first, so each starts 64-byte aligned
    # (readers refuse gaps between tensors), and the header padded so the data start at one too.
    blobs = [b for b in blobs if len(b[1]) % 64 == 0] + [b for b in blobs if len(b[1]) % 64]
    for name, raw in blobs:
        header[name]["data_offsets"] = [off, off + len(raw)]
        off += len(raw)
    blobs = [raw for _, raw in blobs]
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 64)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_jsonl(path):
    """A JSONL file (our --questions files, result lines) as a list of dicts; blank lines skipped,
    a bad line raises ValueError naming FILE:LINE."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ValueError("%s:%d: %s" % (path, i, e)) from None
    return rows


def _cell(text):
    if text == "":
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def read_csv(path):
    """A CSV file with a header line (our metrics files) as a list of dicts; numbers become int or
    float, empty cells None (pandas.read_csv reads the same files, but is not needed)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


_SPEC_ARRAYS = ("vector", "key_vector", "value_vector")   # an edit's fields that name a tensor
_RANDOM_ARRAYS = ("norm_of", "mean_std_of")                # the same inside an edit's "random"


def spec_has_arrays(spec):
    """True when a steering spec dict holds numpy arrays (or lists) where the JSON names tensors."""
    for e in spec.get("edits", ()) if isinstance(spec, dict) else ():
        if isinstance(e, dict) and (any(not isinstance(e.get(k), (str, type(None))) for k in _SPEC_ARRAYS) or
                                    (isinstance(e.get("random"), dict) and
                                     any(not isinstance(e["random"].get(k), (str, type(None))) for k in _RANDOM_ARRAYS))):
            return True
    return False


def spec_arrays_to_files(spec, ref):
    """(spec as plain JSON, tensors): each array of spec_has_arrays' fields taken out as a float32
    tensor "edit<i>.<field>" (random's: "edit<i>.random.<field>") and replaced by "REF:NAME"."""
    out, tensors = json.loads(json.dumps(spec, default=lambda a: None)), {}

    def take(where, src, key, name):
        a = np.asarray(src[key])
        if a.dtype.kind not in "fiu" or a.ndim == 0:
            raise TypeError("steering spec: edit %s: %r needs a float array or \"FILE:TENSOR\", not %r" % (name, key, src[key]))
        tensors[name] = np.ascontiguousarray(a, dtype=np.float32)
        where[key] = "%s:%s" % (ref, name)

    for i, e in enumerate(spec.get("edits", ())):
        if not isinstance(e, dict):
            continue
        for k in _SPEC_ARRAYS:
            if e.get(k) is not None and not isinstance(e[k], str):
                take(out["edits"][i], e, k, "edit%d.%s" % (i, k))
        r = e.get("random")
        if isinstance(r, dict):
            for k in _RANDOM_ARRAYS:
                if r.get(k) is not None and not isinstance(r[k], str):
                    take(out["edits"][i]["random"], r, k, "edit%d.random.%s" % (i, k))
    return out, tensors


def write_steer_spec(path, spec, vectors=None):
    """Writes a steering spec as the CLI's --steer takes it. In the spec dict, an edit's "vector",
    "key_vector", "value_vector" (and "norm_of" / "mean_std_of" of its "random") may be arrays
    instead of "FILE:TENSOR": they are written as float32 tensors "edit<i>.<field>" to one
    .safetensors file (vectors; default: PATH with .safetensors for its extension) that the spec
    names relative to its folder. Returns the spec as written (plain JSON)."""
    if not isinstance(spec, dict):
        raise TypeError("write_steer_spec: spec must be a dict, not %s" % type(spec).__name__)
    vectors = vectors or os.path.splitext(path)[0] + ".safetensors"
    rel = os.path.relpath(os.path.abspath(vectors), os.path.dirname(os.path.abspath(path)))
    out, tensors = spec_arrays_to_files(spec, rel)
    if tensors:
        write_safetensors(vectors, tensors, {"format": "codi_lens steering vectors", "spec": os.path.basename(path)})
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return out
