#!/usr/bin/env python3
"""Writes a BF16 GGUF (llama.cpp's format, version 3) of a merged model written by
`codi export --merged`, for llama-bench on the same weights as `codi bench` (make bench
LLAMA_BENCH=path/to/llama-bench). Python standard library only.

    python3 tools/gguf_from_safetensors.py bench/random_1b_merged.safetensors bench/random_1b_bf16.gguf

What it writes, following llama.cpp's convert_hf_to_gguf.py for Llama: the `llama` architecture
keys from the file's codi_config metadata; q_proj and k_proj rows permuted from Hugging Face's
rotate-half order to GGML's adjacent pairs; rope_freqs for llama3 RoPE scaling; output.weight only
when the embeddings are not tied; prj (CODI's projection) left out. The vocabulary is a placeholder
("<tN>" tokens, no merges): enough for llama-bench, which feeds token ids, not text. Tensors are
64-byte aligned (general.alignment = 64), as codi export writes them, so both tools read the same layout.
Untested against a llama.cpp build here (none is available on this machine).
"""
import json
import math
import struct
import sys

ALIGN = 64   # general.alignment: every tensor starts on a cache line (with GGUF's default, 32, half may not)
GGML_F32, GGML_BF16 = 0, 30
T_UINT32, T_INT32, T_FLOAT32, T_STRING, T_ARRAY = 4, 5, 6, 8, 9


def read_safetensors(path):
    f = open(path, "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    return f, 8 + n, header


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == T_STRING:
        return out + gguf_string(value)
    if vtype == T_UINT32:
        return out + struct.pack("<I", value)
    if vtype == T_FLOAT32:
        return out + struct.pack("<f", value)
    raise ValueError(vtype)


def kv_array(key, etype, values):
    out = gguf_string(key) + struct.pack("<IIQ", T_ARRAY, etype, len(values))
    if etype == T_STRING:
        return out + b"".join(gguf_string(v) for v in values)
    return out + struct.pack("<%d%s" % (len(values), "i" if etype == T_INT32 else "I"), *values)


def permute_rows(data, rows, cols, n_head, esize):
    """HF q/k rows (per head: first half, second half) -> GGML order (pairs interleaved)."""
    hd = rows // n_head
    row = cols * esize
    out = bytearray(len(data))
    for h in range(n_head):
        for j in range(hd // 2):
            for t in range(2):
                src = h * hd + t * (hd // 2) + j
                dst = h * hd + 2 * j + t
                out[dst * row:(dst + 1) * row] = data[src * row:(src + 1) * row]
    return bytes(out)


def llama3_rope_factors(c):
    rs = c.get("rope_scaling") or {}
    if rs.get("rope_type") != "llama3":
        return None
    base, hd = c["rope_theta"], c["head_dim"]
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    out = []
    for i in range(0, hd, 2):
        freq = 1.0 / base ** (i / hd)
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_from_safetensors.py MERGED.safetensors OUT.gguf")
    f, data_start, header = read_safetensors(sys.argv[1])
    meta = header.pop("__metadata__", {})
    if "codi_config" not in meta:
        sys.exit("no codi_config metadata: write the file with `codi export --merged`")
    c = json.loads(meta["codi_config"])
    vocab = header["model.embed_tokens.weight"]["shape"][0]
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for l in range(c["num_hidden_layers"]):
        for hf, gg in parts.items():
            names["model.layers.%d.%s.weight" % (l, hf)] = "blk.%d.%s.weight" % (l, gg)
    tensors = []                                  # (gguf name, ggml type, shape (rows, cols) or (n,), bytes source)
    for hf_name, gg_name in names.items():
        if hf_name not in header:
            continue
        t = header[hf_name]
        if t["dtype"] not in ("BF16", "F32"):
            sys.exit("%s: dtype %s (expected BF16 or F32)" % (hf_name, t["dtype"]))
        tensors.append((gg_name, GGML_BF16 if t["dtype"] == "BF16" else GGML_F32, t["shape"], hf_name))
    factors = llama3_rope_factors(c)
    kvs = [kv("general.architecture", T_STRING, "llama"), kv("general.name", T_STRING, "codi_lens merged export"),
           kv("general.file_type", T_UINT32, 32), kv("general.alignment", T_UINT32, ALIGN),
           kv("llama.context_length", T_UINT32, 131072), kv("llama.embedding_length", T_UINT32, c["hidden_size"]),
           kv("llama.block_count", T_UINT32, c["num_hidden_layers"]),
           kv("llama.feed_forward_length", T_UINT32, c["intermediate_size"]),
           kv("llama.rope.dimension_count", T_UINT32, c["head_dim"]),
           kv("llama.attention.head_count", T_UINT32, c["num_attention_heads"]),
           kv("llama.attention.head_count_kv", T_UINT32, c["num_key_value_heads"]),
           kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, c["rms_norm_eps"]),
           kv("llama.rope.freq_base", T_FLOAT32, c["rope_theta"]), kv("llama.vocab_size", T_UINT32, vocab),
           kv("tokenizer.ggml.model", T_STRING, "gpt2"), kv("tokenizer.ggml.pre", T_STRING, "default"),
           kv_array("tokenizer.ggml.tokens", T_STRING, ["<t%d>" % i for i in range(vocab)]),
           kv_array("tokenizer.ggml.token_type", T_INT32, [1] * vocab),
           kv_array("tokenizer.ggml.merges", T_STRING, []),
           kv("tokenizer.ggml.eos_token_id", T_UINT32, c["eos_token_id"][0] if c["eos_token_id"] else 0)]
    if c["bos_token_id"] is not None:             # (test models may have none)
        kvs.append(kv("tokenizer.ggml.bos_token_id", T_UINT32, c["bos_token_id"]))
    infos, offset, layout = [], 0, []
    if factors:
        tensors.append(("rope_freqs.weight", GGML_F32, [len(factors)], None))
    for gg_name, gtype, shape, src in tensors:
        nbytes = (2 if gtype == GGML_BF16 else 4)
        for d in shape:
            nbytes *= d
        dims = list(reversed(shape))              # GGML lists the fastest-varying dimension first
        infos.append(gguf_string(gg_name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) +
                     struct.pack("<IQ", gtype, offset))
        layout.append((gg_name, gtype, shape, src, offset, nbytes))
        offset += (nbytes + ALIGN - 1) // ALIGN * ALIGN
    with open(sys.argv[2], "wb") as out:
        head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
        out.write(head + b"\0" * ((ALIGN - len(head) % ALIGN) % ALIGN))
        base = out.tell()
        for gg_name, gtype, shape, src, off, nbytes in layout:
            out.write(b"\0" * (base + off - out.tell()))
            if src is None:
                out.write(struct.pack("<%df" % len(factors), *factors))
                continue
            t = header[src]
            f.seek(data_start + t["data_offsets"][0])
            data = f.read(nbytes)
            if gg_name.endswith("attn_q.weight"):
                data = permute_rows(data, shape[0], shape[1], c["num_attention_heads"], nbytes // (shape[0] * shape[1]))
            elif gg_name.endswith("attn_k.weight"):
                data = permute_rows(data, shape[0], shape[1], c["num_key_value_heads"], nbytes // (shape[0] * shape[1]))
            out.write(data)
    print("wrote %s: %d tensors" % (sys.argv[2], len(tensors)))


if __name__ == "__main__":
    main()
