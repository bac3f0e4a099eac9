#!/usr/bin/env python3
"""PyTorch references for two tests (torch 1.13 from Debian: apt-get install python3-torch
python3-numpy; run with /usr/bin/python3), written without this project's code:

1. tests/data/golden_llama_tiny_f32.safetensors: tests/data/llama_tiny_hf run as a plain causal
   LM on golden_llama_tiny's prompt_ids with float32 activations (Hugging Face's LlamaForCausalLM
   computation written out in torch: RMSNorm, llama3 RoPE, GQA, SwiGLU, tied lm_head), so the
   engine can be held to 1e-3 instead of the 2e-2 the bf16-activation golden needs. As a check
   of this script, the same code is compared with HF's golden_tiny bf16merged.prefill_logits
   (the same merged bf16 weights, f32 activations, the CODI prompt).
2. tests/data/prj_small_variance.safetensors: CODI's prj (Linear, GELU(erf), Linear, LayerNorm
   eps 1e-5) of codi_tiny with prj.3 scaled by `prj3_scale` so that the LayerNorm input has a
   variance near eps: z for 4 final-hidden vectors h. Dropping eps moves z by far more than
   the test's tolerance, which the unscaled model cannot show (its variance is ~1).
    /usr/bin/python3 tools/reference_fixtures.py"""
import json, struct
import numpy as np
import torch

DATA = "tests/data/"

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = np.frombuffer(blob[a:b], dtype={"F32": np.float32, "BF16": np.int16, "I32": np.int32}[e["dtype"]]).copy()
        t = torch.from_numpy(raw).reshape(e["shape"])
        out[name] = t.view(torch.bfloat16) if e["dtype"] == "BF16" else t
    return out

def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, t in tensors.items():
        a = t.contiguous().numpy()
        dtype = {np.float32: "F32", np.int32: "I32"}[a.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        blobs.append(a.tobytes()); at += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs:
            f.write(b)

def llama3_inv_freq(cfg):
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    hd = cfg["head_dim"]
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    factor, low, high, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    wavelen = 2 * torch.pi / inv
    inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
    return torch.where(medium, smoothed, inv_l)

def rms_norm(x, w, eps, dtype):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w.to(dtype) * h.to(dtype)

def rotate_half(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-b, a), dim=-1)

def llama_logits(weights, cfg, ids, dtype):
    W = {k: v.to(dtype) for k, v in weights.items()}
    D, H, KVH, HD, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    T = len(ids)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    pos = torch.arange(T).float()
    freqs = torch.outer(pos, llama3_inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps, dtype)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, H, HD).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, KVH, HD).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, KVH, HD).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KVH, 0), v.repeat_interleave(H // KVH, 0)
        s = (q @ k.transpose(1, 2)) * HD ** -0.5 + mask.to(dtype)
        a = torch.softmax(s.float(), dim=-1).to(dtype) @ v
        x = x + a.transpose(0, 1).reshape(T, H * HD) @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps, dtype)
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
        x = x + g @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps, dtype)
    return (x @ W["model.embed_tokens.weight"].T).float()

def llama_fixture():
    cfg = json.load(open(DATA + "llama_tiny_hf/config.json"))
    weights = read_safetensors(DATA + "llama_tiny_hf/model.safetensors")
    golden = read_safetensors(DATA + "golden_llama_tiny.safetensors")
    ids = golden["prompt_ids"].tolist()
    with torch.no_grad():
        f32 = llama_logits(weights, cfg, ids, torch.float32)
    tiny = read_safetensors(DATA + "golden_tiny.safetensors")   # HF, f32 activations, the same merged bf16 weights
    with torch.no_grad():
        check = llama_logits(weights, cfg, tiny["prompt_ids"].tolist(), torch.float32)
    print("check of this script: f32 vs HF's golden_tiny bf16merged.prefill_logits: max |diff| %.4g"
          % (check - tiny["bf16merged.prefill_logits"]).abs().max())
    print("f32 vs HF's golden_llama_tiny (bf16 activations; what the old tolerance absorbed): max |diff| %.4g"
          % (f32 - golden["logits"]).abs().max())
    write_safetensors(DATA + "golden_llama_tiny_f32.safetensors", {"prompt_ids": golden["prompt_ids"], "logits": f32})

def prj_fixture():
    w = read_safetensors(DATA + "codi_tiny.safetensors")
    scale = 1e-3
    g = torch.Generator().manual_seed(7)
    h = torch.randn(4, 256, generator=g, dtype=torch.float64)
    w1, b1, w3, b3 = (w[k].double() for k in ("prj.1.weight", "prj.1.bias", "prj.3.weight", "prj.3.bias"))
    lw, lb = w["prj.ln.weight"].double(), w["prj.ln.bias"].double()
    u = torch.nn.functional.gelu(h @ w1.T + b1) @ (scale * w3).T + scale * b3
    z = torch.nn.functional.layer_norm(u, (256,), lw, lb, eps=1e-5)
    z0 = torch.nn.functional.layer_norm(u, (256,), lw, lb, eps=0.0)
    print("prj: LayerNorm input variance %.3g (eps 1e-5); dropping eps moves z by max %.3g" % (u.var(-1, unbiased=False).mean(), (z - z0).abs().max()))
    write_safetensors(DATA + "prj_small_variance.safetensors",
                      {"h": h.float(), "z": z.float(), "prj3_scale": torch.tensor([scale], dtype=torch.float32)})

if __name__ == "__main__":
    llama_fixture()
    prj_fixture()
