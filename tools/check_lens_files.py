"""Cross-checks of codi_lens files with the Python tools researchers use (tests/test_lens.c).

  check_lens_files.py torch DIR OUT.pt   DIR/params.pt must load with torch.load(weights_only=True)
      into a ModuleList of Linear(D, D) holding W_l[i, j] = sin(l*D*D + i*D + j) / 8 and
      b_l[i] = cos(l*D + i) / 8; then writes OUT.pt = torch.save(ModuleList.state_dict()) with
      W_l[i, j] = cos(l*D*D + i*D + j) / 8, b_l[i] = sin(l*D + i) / 8 for the C side to read.
  check_lens_files.py acts FILE Q L D [SUM0 SUM1 ...]   parses FILE with numpy alone (as
      safetensors.numpy would), checks the layout of codi record, that the residual entering
      layer 0 at latent k is z_k, that bot sits at prompt_len - 1, and that sum(resid[q]) == SUMq.
  check_lens_files.py lensjson JSON GOLDEN   `codi lens --json` of codi_tiny against Hugging Face's
      latent_lens_logits in golden_tiny: top-k ids, their probabilities (1e-4) and the entropy (1e-3).
Exit status 0 ok, 1 mismatch, 77 when torch / numpy is missing.
"""
import json
import math
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.exit(77)


def check_torch(directory, out):
    try:
        import torch
    except ImportError:
        sys.exit(77)
    sd = torch.load(directory + "/params.pt", weights_only=True)
    layers = len(sd) // 2
    d = sd["0.weight"].shape[0]
    lens = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(layers)])
    lens.load_state_dict(sd)
    idx = np.arange(d * d, dtype=np.float64).reshape(d, d)
    for layer in range(layers):
        w = np.sin(layer * d * d + idx) / 8
        b = np.cos(layer * d + np.arange(d, dtype=np.float64)) / 8
        if np.abs(lens[layer].weight.detach().numpy() - w).max() > 1e-6 or np.abs(lens[layer].bias.detach().numpy() - b).max() > 1e-6:
            print("params.pt layer %d differs" % layer)
            return 1
    config = json.load(open(directory + "/config.json"))
    if config["d_model"] != d or config["num_hidden_layers"] != layers or config["lens_type"] != "linear_tuned_lens":
        print("config.json fields differ:", config)
        return 1
    with torch.no_grad():
        for layer in range(layers):
            lens[layer].weight.copy_(torch.from_numpy(np.cos(layer * d * d + idx) / 8))
            lens[layer].bias.copy_(torch.from_numpy(np.sin(layer * d + np.arange(d, dtype=np.float64)) / 8))
    torch.save(lens.state_dict(), out)
    return 0


def load_st(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    kinds = {"F64": np.float64, "F32": np.float32, "I32": np.int32, "U8": np.uint8}
    out = {}
    for name, v in header.items():
        a, b = v["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=kinds[v["dtype"]]).reshape(v["shape"])
    return out


def check_lens_json(path, golden):
    got = json.load(open(path))
    ref = load_st(golden)["f32.latent_lens_logits"].astype(np.float64)   # [7, L+1, V]
    ids, probs, ent = np.array(got["top_ids"]), np.array(got["top_probs"]), np.array(got["entropy"], dtype=np.float64)
    if ids.shape[:2] != ref.shape[:2] or got["labels"][0] != "bot" or got["layers"] != list(range(ref.shape[1])):
        print("shapes / labels differ:", ids.shape, ref.shape, got["labels"][:2])
        return 1
    z = ref - ref.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    h = -(p * np.log(np.maximum(p, 1e-300))).sum(-1)
    k = ids.shape[2]
    order = np.argsort(-ref, axis=-1, kind="stable")[..., :k]
    ok_ids = (order == ids).mean()
    perr = np.abs(np.take_along_axis(p, ids, -1) - probs).max()
    herr = np.abs(h - ent).max()
    print("top-%d ids equal in %.4f of cells; max |prob diff| %.2g; max |entropy diff| %.2g" % (k, ok_ids, perr, herr))
    return 0 if ok_ids == 1.0 and perr < 1e-4 and herr < 1e-3 else 1


def check_acts(path, q, layers, d, sums):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    base = 8 + n
    kinds = {"F64": np.float64, "F32": np.float32, "I32": np.int32, "U8": np.uint8, "BF16": np.uint16}
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1]) for v in header.values())
    if spans[0][0] != 0 or spans[-1][1] != len(raw) - base or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        print("tensors do not tile the data section")
        return 1
    misaligned = [k for k, v in header.items() if (v["data_offsets"][1] - v["data_offsets"][0]) % 64 == 0 and (base + v["data_offsets"][0]) % 64]
    if base % 64 or misaligned:
        print("data start %d; tensors of 64-byte multiples off 64-byte alignment: %s" % (base, misaligned))
        return 1
    t = {}
    for name, v in header.items():
        a, b = v["data_offsets"]
        x = np.frombuffer(raw[base + a:base + b], dtype=kinds[v["dtype"]]).reshape(v["shape"])
        if v["dtype"] == "BF16":
            x = (x.astype(np.uint32) << 16).view(np.float32)
        t[name] = x
    if meta["format"] != "codi_lens.acts.v1" or int(meta["layers"]) != layers or int(meta["dim"]) != d:
        print("metadata differs:", meta)
        return 1
    labels = json.loads(meta["labels"])
    p = t["positions"].shape[1]
    if t["resid"].shape != (q, p, layers + 1, d) or t["final"].shape != (q, p, d) or len(labels) != p:
        print("shapes differ:", t["resid"].shape, t["final"].shape, len(labels))
        return 1
    if not t["done"].all():
        print("rows not done:", t["done"])
        return 1
    for i, s in enumerate(sums):
        got = float(t["resid"][i].astype(np.float64).sum())
        if abs(got - s) > 1e-3 * max(1.0, abs(s)):
            print("resid[%d] sums to %g, C wrote %g" % (i, got, s))
            return 1
    if (t["prompt_ids"][:, :] < -1).any() or (t["prompt_len"] <= 0).any():
        print("prompt ids / lengths out of range")
        return 1
    if labels[0] == "bot" and (t["positions"][:, 0] != t["prompt_len"] - 1).any():
        print("bot is not at prompt_len - 1")
        return 1
    n = int(meta["n_latent"])
    if labels[1:n + 1] == ["latent %d" % k for k in range(1, n + 1)]:
        zdiff = np.abs(t["resid"][:, 1:n + 1, 0, :] - t["latent_inputs"]).max()
        if zdiff > 0:
            print("residual entering layer 0 at latent k differs from z_k by %g" % zdiff)
            return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "torch":
        sys.exit(check_torch(sys.argv[2], sys.argv[3]))
    if sys.argv[1] == "lensjson":
        sys.exit(check_lens_json(sys.argv[2], sys.argv[3]))
    sys.exit(check_acts(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), [float(s) for s in sys.argv[6:]]))
