"""The Python package (python/codi_lens) held to the C API: the golden fixtures through Python at
test_model.c's tolerances, traces equal to `codi trace` key by key (plain, --steer, a Python spec
dict, a Python hook doing a spec's edit), views that raise after free, exceptions from hooks,
bad input, read_safetensors against the C reader (bf16 too), tokenizer and answers against the
CLI, tuned lens, probes, PCA. Run from the repository root with build/libcodi_lens.so and
build/codi built (tests/test_python.sh). Prints ok / not ok lines and "N passed, N failed"."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import codi_lens as cl  # noqa: E402

DATA = "tests/data/"
CODI = os.environ.get("CODI", "build/codi")
NANO = "models/codi-nano/codi_nano.bin"
passed = failed = 0


def result(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
    print("%s - %s%s" % ("ok" if cond else "not ok", name, (": " + detail) if detail else ""))


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return str(e) or repr(e)
    except Exception as e:   # noqa: BLE001 - reported as the wrong exception
        return None if not isinstance(e, exc) else str(e)
    return None


def cli(*args):
    p = subprocess.run([CODI] + list(args), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def tokens_agree(got, ref_tokens, ref_logits, margin=0.02):
    """test_model.c's rule: tokens equal wherever the reference's top-1 minus top-2 margin > 0.02."""
    for k in range(len(ref_tokens)):
        top = np.sort(ref_logits[k])[-2:]
        if top[1] - top[0] > margin and int(got[k]) != int(ref_tokens[k]):
            return False, k
    return True, -1


def check_golden(tr, g, mode, tl):
    """A Python trace against golden_tiny's mode ("f32" or "bf16merged") as tests/test_model.c does."""
    exact = mode == "f32"
    for k in ("prefill_logits", "latent_final_logits", "answer_logits"):
        ref = g[mode + "." + k]
        e = max_abs(tr[k][..., :ref.shape[-1]], ref)
        result(e <= tl, "golden %s %s" % (mode, k), "max |diff| %.3g (tol %g)" % (e, tl))
    if exact:
        for k in ("prefill_resid", "prefill_k", "prefill_v", "latent_inputs", "latent_resid"):
            e = rel_l2(tr[k], g[mode + "." + k])
            result(e <= 1e-4, "golden f32 %s" % k, "relative L2 %.3g (tol 1e-4)" % e)
        ref = g["f32.latent_lens_logits"]
        e = max_abs(tr["latent_lens_logits"][..., :ref.shape[-1]], ref)
        result(e <= tl, "golden f32 latent_lens_logits", "max |diff| %.3g" % e)
    else:
        e = rel_l2(tr["latent_inputs"], g[mode + ".latent_inputs"])
        result(e <= 2e-2, "golden bf16merged latent_inputs", "relative L2 %.3g (tol 2e-2)" % e)
    agree, k = tokens_agree(tr["answer_tokens"], g[mode + ".answer_tokens"], g[mode + ".answer_logits"])
    result(agree, "golden %s answer_tokens (where the reference margin > 0.02)" % mode, "first differs at %d" % k if k >= 0 else "")


def check_run_many(mn, tmp):
    """Model.run_many (codi_batch_*) against Model.run one question at a time on codi-nano."""
    qs = [r["question"] for r in cl.read_jsonl("models/codi-nano/test.jsonl")[:8]]
    one = [mn.run(q, max_answer=24, answer_logits=True) for q in qs]
    many = mn.run_many(qs, batch=3, max_answer=24, answer_logits=True, latent_logits=True)
    same = all(np.array_equal(a.ids, b.ids) and a.text == b.text and a.number == b.number and np.array_equal(a.prompt_ids, b.prompt_ids)
               and a.prompt_len == b.prompt_len for a, b in zip(one, many))
    e = max(max(max_abs(a.answer_logits, b.answer_logits), max_abs(a.latent_logits, b.latent_logits), max_abs(a.latents, b.latents))
            for a, b in zip(one, many))
    result(len(many) == 8 and same and e <= 1e-4, "run_many: 8 codi-nano questions in batches of 3 = Model.run one by one (ids, text, number; "
           "answer / latent logits and latents within 1e-4)", "max |diff| %.3g; %s" % (e, [b.number for b in many]))
    b1 = mn.run_many(qs[:2], batch=1, max_answer=24, answer_logits=True, latent_logits=True)
    result(all(np.array_equal(a.answer_logits, b.answer_logits) and np.array_equal(a.latents, b.latents)
               and np.array_equal(a.latent_logits, b.latent_logits) for a, b in zip(one, b1)), "run_many batch=1 = Model.run bit for bit")
    ids_req = mn.run_many([list(one[0].prompt_ids), one[1].prompt_ids], max_answer=24)
    result(all(np.array_equal(a.ids, b.ids) for a, b in zip(one, ids_req)) and ids_req[0].latent_logits is None,
           "run_many: id lists as requests; latent_logits off by default")

    # steering specs (a dict, a file written from Python), hooks and after_latent per request
    v = np.random.default_rng(7).standard_normal(mn.dim).astype(np.float32) * 4
    vfile = os.path.join(tmp, "nano_v.safetensors")
    cl.write_safetensors(vfile, {"v": v})
    sfile = os.path.join(tmp, "nano_spec.json")
    spec = {"edits": [{"at": "latent_input", "step": 4, "alpha": 2.0, "vector": "nano_v.safetensors:v"}]}
    json.dump(spec, open(sfile, "w"))
    spec_abs = {"edits": [dict(spec["edits"][0], vector=vfile + ":v")]}

    def add_v(info, x):
        x += v * np.float32(0.5)

    def kv(state, k, n):
        if k == 3:
            state.value_cache[1, :, state.n_pos - 1] *= np.float32(1.5)
    hk = cl.hook(add_v, at="resid", layer=2, phase="latent")
    reqs = [{"question": qs[0], "steer": sfile}, {"question": qs[1], "steer": spec_abs, "latents": 5},
            {"question": qs[2], "hooks": [hk]}, {"question": qs[3], "after_latent": kv, "max_answer": 8},
            {"question": qs[4], "steer": sfile, "hooks": [hk], "after_latent": kv}, qs[5],
            {"question": qs[6], "steer": {"edits": [{"at": "kv_cache", "layer": 1, "value_vector": v[:32] * np.float32(0.3)}]}, "after_latent": kv}]
    ref = [mn.run(**dict({"max_answer": 24, "answer_logits": True}, **r)) if isinstance(r, dict) else mn.run(r, max_answer=24, answer_logits=True)
           for r in reqs]
    got = mn.run_many(reqs, batch=4, max_answer=24, answer_logits=True)
    e = max(max_abs(a.answer_logits, b.answer_logits) for a, b in zip(ref, got))
    changed = not np.array_equal(ref[0].answer_logits, one[0].answer_logits) and not np.array_equal(ref[2].answer_logits, one[2].answer_logits)
    result(all(np.array_equal(a.ids, b.ids) for a, b in zip(ref, got)) and e <= 1e-4 and changed and got[3].ids.size <= 8,
           "run_many: per-request steer (spec file written from Python, dict), hooks, after_latent, latents, max_answer = Model.run's",
           "max |diff| %.3g, steering changed the logits: %s" % (e, changed))

    # branches from a shared prefix (Model.prefix): = Model.run with the same steering after the prefix
    pre = mn.prefix(qs[6], latents=2)
    br = mn.run_many([{"prefix": pre}, {"prefix": pre, "steer": sfile}, {"prefix": pre, "hooks": [hk]}], max_answer=24, answer_logits=True,
                     latent_logits=True)
    full = [mn.run(qs[6], max_answer=24, answer_logits=True), mn.run(qs[6], max_answer=24, answer_logits=True, steer=sfile),
            mn.run(qs[6], max_answer=24, answer_logits=True, hooks=[cl.hook(add_v, at="resid", layer=2, phase="latent", step=s) for s in (3, 4, 5, 6)])]
    e = max(max(max_abs(a.answer_logits, b.answer_logits), max_abs(a.latents, b.latents), max_abs(a.latent_logits, b.latent_logits))
            for a, b in zip(full, br))
    result(all(np.array_equal(a.ids, b.ids) and np.array_equal(a.prompt_ids, b.prompt_ids) for a, b in zip(full, br)) and e <= 1e-4
           and pre.n_pos == one[6].prompt_len + 2, "run_many: branches from Model.prefix(latents=2) = full runs (hooks at steps > 2)",
           "max |diff| %.3g" % e)
    pre.free()

    # on_done sees the run's state during the call only
    seen = []

    def on_done(i, a, st):
        seen.append((i, a.ids.size, st.n_pos, st.phase, np.array(st.resid[mn.n_layers, st.n_pos - 1]), st.resid))
    mn.run_many(qs[:4], batch=2, max_answer=24, on_done=on_done)
    ok = sorted(x[0] for x in seen) == [0, 1, 2, 3] and all(n == one[i].prompt_len + 6 + 1 + k - 1 and ph == "answer" for i, k, n, ph, _, _ in seen)
    result(ok and raises(cl.FreedError, lambda: seen[0][5][0]) is not None,
           "run_many on_done(index, answer, state): the run's state at its end (positions, phase), views raise afterwards",
           str([(x[0], x[1], x[2], x[3]) for x in seen]))

    # errors: a raising hook / after_latent / on_done stops the batch as itself; bad requests raise first
    def boom(info, x):
        raise KeyError("hook stop")
    msg = raises(KeyError, mn.run_many, qs[:5] + [{"question": qs[5], "hooks": [cl.hook(boom, at="final", phase="answer")]}] + qs[6:],
                 batch=3, max_answer=24)
    again = mn.run_many(qs[:2], max_answer=24)
    result(msg is not None and "hook stop" in msg and all(np.array_equal(a.ids, b.ids) for a, b in zip(one, again)),
           "run_many: a hook that raises in one request stops the batch with that exception; the model runs on", str(msg))
    kbd = raises(KeyboardInterrupt, mn.run_many, qs[:4], batch=2, hooks=[cl.hook(lambda i, x: (_ for _ in ()).throw(KeyboardInterrupt()),
                                                                              phase="answer", step=2)])
    result(kbd is not None, "run_many: KeyboardInterrupt in a hook stops the batch and comes out as itself")
    msg = raises(ZeroDivisionError, mn.run_many, [{"question": qs[0], "after_latent": lambda st, k, n: 1 / (k - 2)}], max_answer=4)
    msg2 = raises(RuntimeError, mn.run_many, qs[:3], on_done=lambda i, a, st: (_ for _ in ()).throw(RuntimeError("done stop")))
    result(msg is not None and msg2 is not None and "done stop" in msg2, "run_many: after_latent and on_done exceptions come out as themselves",
           "%s / %s" % (msg, msg2))
    bad = [({"question": qs[0], "latent": 3}, ValueError, "unknown key"), ({"question": qs[0], "ids": [1, 2]}, ValueError, "exactly one"),
           ({"ids": [1, 9999]}, ValueError, "out of range"), ({"question": qs[0], "max_answer": 2000}, ValueError, "max_answer"),
           ({"question": qs[0], "steer": {"edits": [{"at": "nowhere"}]}}, cl.CodiError, "request 1"), (3.5, TypeError, "request 1"),
           ({"question": qs[0], "hooks": [add_v] * 16}, ValueError, "16"), ({"prefix": "x"}, TypeError, "prefix")]
    fails = []
    for r, exc, word in bad:
        m = raises(exc, mn.run_many, [qs[0], r])
        if m is None or word not in m:
            fails.append("%r: %s" % (r, m))
    p4 = mn.prefix(qs[0], latents=4)
    m = raises(ValueError, mn.run_many, [{"prefix": p4, "latents": 3}])
    if m is None or "at most latents" not in m:
        fails.append("prefix beyond latents: %s" % m)
    result(not fails, "run_many: bad requests raise before anything runs, naming the request", "; ".join(fails))

    m2 = cl.Model(NANO, threads=2)
    a2 = m2.run(qs[0], max_answer=24, answer_logits=True)
    t2 = mn.run_many(qs[:2], threads=2, max_answer=24, answer_logits=True)
    e = max(max_abs(a.answer_logits, b.answer_logits) for a, b in zip(one, t2))
    result(np.array_equal(a2.answer_logits, one[0].answer_logits) and all(np.array_equal(a.ids, b.ids) for a, b in zip(one, t2)) and e <= 1e-4,
           "threads=2: Model(threads=2).run = threads 1 bit for bit; run_many(threads=2) within 1e-4", "max |diff| %.3g" % e)
    m2.free()


def check_writers_cli(mn, tmp, acts):
    """Files written from Python (write_steer_spec, write_safetensors) taken by the CLI."""
    q = cl.read_jsonl("models/codi-nano/test.jsonl")[1]["question"]
    rng = np.random.default_rng(11)
    v = rng.standard_normal(mn.dim).astype(np.float32) * 3
    dv = rng.standard_normal((mn.config["n_kv_heads"], mn.config["head_dim"])).astype(np.float32)
    spec = {"name": "py", "edits": [{"at": "latent_input", "step": 3, "alpha": 2.0, "vector": v},
                                    {"at": "kv_cache", "layer": 1, "when": "after_latents", "value_vector": dv}]}
    sfile = os.path.join(tmp, "py_spec", "spec.json")
    os.makedirs(os.path.dirname(sfile))
    written = cl.write_steer_spec(sfile, spec)
    back, _ = cl.read_safetensors(os.path.join(tmp, "py_spec", "spec.safetensors"))
    result(written["edits"][0]["vector"] == "spec.safetensors:edit0.vector" and np.array_equal(back["edit1.value_vector"], dv),
           "write_steer_spec: arrays to a .safetensors beside the spec, named relative to it", str(written["edits"][0]))
    out = os.path.join(tmp, "cli_py_spec.safetensors")
    rc, _, err = cli("trace", "--model", NANO, "--question", q, "--max-answer", "8", "--steer", sfile, "--out", out)
    ct, _ = cl.read_safetensors(out) if rc == 0 else ({}, {})
    pt = mn.trace(question=q, answer_steps=8, steer=spec)
    plain = mn.trace(question=q, answer_steps=8)
    diff = [k for k in ct if not np.array_equal(ct[k], pt.get(k))]
    result(rc == 0 and list(ct) == list(pt) and not diff and not np.array_equal(pt["answer_logits"], plain["answer_logits"]),
           "codi trace --steer (a spec written by write_steer_spec) = Model.trace(steer=the dict with numpy arrays) key by key",
           err.strip()[-160:] or "differing %s" % diff)
    result(raises(TypeError, cl.write_steer_spec, sfile, {"edits": [{"at": "final", "vector": "not an array".split()}]}) is not None,
           "write_steer_spec: a vector that is not numbers raises TypeError")

    d = rng.standard_normal((mn.n_layers + 1, mn.dim)).astype(np.float32)
    dfile, gguf, dback = (os.path.join(tmp, n) for n in ("dirs.safetensors", "cv.gguf", "dirs_back.safetensors"))
    cl.write_safetensors(dfile, {"dirs": d}, {"note": "from python"})
    rc1, _, err1 = cli("vectors", "--to-gguf", dfile + ":dirs", "--out", gguf)
    rc2, _, err2 = cli("vectors", "--from-gguf", gguf, "--out", dback)
    rt = cl.read_safetensors(dback)[0] if rc1 == 0 and rc2 == 0 else {}
    result(len(rt) == mn.n_layers - 1 and all(np.array_equal(rt["direction.%d" % (i - 1)], d[i]) for i in range(2, mn.n_layers + 1)),
           "codi vectors --to-gguf / --from-gguf take an [L+1, D] tensor from write_safetensors and give its rows back",
           (err1 + err2).strip()[-160:])

    # a `codi record` dataset filtered in Python (bf16 kept as bits, metadata kept) is a dataset the CLI reads
    raw, meta = cl.read_safetensors(acts, bf16_to_float32=False)
    sub = os.path.join(tmp, "acts_sub.safetensors")
    cl.write_safetensors(sub, {k: a[[0, 2]] for k, a in raw.items()}, meta, bf16=[k for k, a in raw.items() if a.dtype == np.uint16])
    vout = os.path.join(tmp, "v_sub.safetensors")
    rc, _, err = cli("vectors", "--model", NANO, "--acts", sub, "--out", vout)
    vs = cl.read_safetensors(vout)[0] if rc == 0 else {}
    fin = cl.read_safetensors(sub)[0]["final"]
    e = max_abs(vs["mean_final"], fin[:, 1:].astype(np.float64).mean(0)) if vs else float("inf")
    result(rc == 0 and vs["mean_final"].shape == (6, mn.dim) and e <= 1e-5 * float(np.abs(fin).max()),
           "codi vectors --acts reads a record dataset subset written by write_safetensors (bf16 bits, metadata)",
           err.strip()[-160:] or "mean_final max |diff| %.3g" % e)


def main():
    tmp = tempfile.mkdtemp(prefix="codi_py_")
    g, gmeta = cl.read_safetensors(DATA + "golden_tiny.safetensors")
    ids = g["prompt_ids"]
    result(ids.dtype == np.int32 and ids.shape == (24,), "read_safetensors: golden prompt_ids int32 [24]", str(ids.shape))

    import ctypes
    from codi_lens import _lib
    bad_size = raises(ImportError, _lib._struct, "codi_state", [("n_pos", ctypes.c_double)])
    bad_field = raises(ImportError, _lib._struct, "codi_state", [("no_such_field", ctypes.c_int)])
    st_ok = _lib.StateStruct.n_pos.offset == _lib._LAYOUT["codi_state"]["n_pos"][0] and \
        ctypes.sizeof(_lib.RunOpts) == _lib._LAYOUT["codi_run_opts"][""][1]
    result(st_ok and bad_size is not None and bad_field is not None,
           "ctypes structs are laid out from the shim's sizeof / offsetof table; a mismatch is an ImportError", str(bad_size))

    # ---- golden fixtures through Python (exact f32 and bf16-merged weights) ----
    mf = cl.Model(DATA + "codi_tiny.bin", head_dim=32, exact=True)
    result(mf.config["n_layers"] == 4 and mf.config["vocab"] == 515 and mf.config["bot_id"] == 513, "Model config", str(mf.config)[:80])
    tr = mf.trace(ids=ids)
    check_golden(tr, g, "f32", 1e-3)
    mb = cl.Model(DATA + "codi_tiny.bin", head_dim=32)
    check_golden(mb.trace(ids=ids), g, "bf16merged", 1e-3 if cl.kernel_name() in ("amx", "avx512bf16") else 5e-3)
    ms = cl.Model(DATA + "codi_tiny.safetensors", head_dim=32, exact=True)
    e = max_abs(ms.trace(ids=ids)["answer_logits"], tr["answer_logits"])
    result(e == 0, ".safetensors checkpoint = .bin through Python", "max |diff| %.3g" % e)

    gl, _ = cl.read_safetensors(DATA + "golden_llama_tiny_f32.safetensors")
    mh = cl.Model(DATA + "llama_tiny_hf")
    e = max_abs(mh.state(64).forward(gl["prompt_ids"], all_logits=True), gl["logits"])
    result(mh.config["prj_dim"] == 0 and e <= 1e-3, "a Hugging Face Llama directory: logits vs golden_llama_tiny_f32", "max |diff| %.3g" % e)
    raw, _ = cl.read_safetensors(DATA + "codi_tiny.safetensors", bf16_to_float32=False)
    lora_prj = os.path.join(tmp, "lora_prj_only.safetensors")
    cl.write_safetensors(lora_prj, {k: v for k, v in raw.items() if v.dtype == np.float32})
    ml = cl.Model(lora_prj, base=DATA + "llama_tiny_hf", lora_scale=0, head_dim=32)
    e = max_abs(ml.trace(ids=ids)["answer_logits"], g["bf16merged.answer_logits"])
    result(e <= 5e-3, "base= and lora_scale=: LoRA + prj over the merged HF directory = bf16merged", "max |diff| %.3g" % e)

    # ---- steering goldens: spec files and the same specs as Python dicts ----
    for name in ("s1_z_add", "s2_resid", "s3_kv", "s4_z_set"):
        st = mf.trace(ids=ids, steer=DATA + "steer/%s.json" % name)
        for k in ("answer_logits", "latent_final_logits"):
            ref = g["f32.%s.%s" % (name, k)]
            e = max_abs(st[k][..., :ref.shape[-1]], ref)
            result(e <= 1e-3, "steer golden %s %s" % (name, k), "max |diff| %.3g" % e)
        e = rel_l2(st["latent_inputs"], g["f32.%s.latent_inputs" % name])
        result(e <= 1e-4, "steer golden %s latent_inputs" % name, "relative L2 %.3g" % e)
        spec = json.load(open(DATA + "steer/%s.json" % name))
        sd = mf.trace(ids=ids, steer=mf.steer(spec, base_dir=DATA + "steer"))
        result(all(np.array_equal(sd[k], st[k]) for k in st), "steer %s as a Python dict = the spec file" % name)

    # ---- Python traces equal `codi trace` key by key ----
    id_text = ",".join(str(int(i)) for i in ids)
    for steer in (None, "s3_kv"):
        out = os.path.join(tmp, "cli_%s.safetensors" % steer)
        args = ["trace", "--model", DATA + "codi_tiny.bin", "--head-dim", "32", "--exact", "--ids", id_text, "--out", out]
        if steer:
            args += ["--steer", DATA + "steer/%s.json" % steer]
        rc, _, err = cli(*args)
        if rc != 0:
            result(False, "codi trace runs", err.strip())
            continue
        ct, cmeta = cl.read_safetensors(out)
        pt = mf.trace(ids=ids, steer=DATA + "steer/%s.json" % steer if steer else None)
        same_keys = list(ct) == list(pt)
        diff = [k for k in ct if k in pt and not (ct[k].shape == pt[k].shape and ct[k].dtype == pt[k].dtype and np.array_equal(ct[k], pt[k]))]
        result(same_keys and not diff, "Model.trace = codi trace%s key by key (names, shapes, dtypes, values)" % (" --steer " + steer if steer else ""),
               "keys %s / %s, differing %s" % (list(ct), list(pt), diff) if not same_keys or diff else "%d tensors" % len(ct))
    pfile = os.path.join(tmp, "py_trace.safetensors")
    mf.trace(ids=ids, out=pfile)
    rt, rmeta = cl.read_safetensors(pfile)
    result(rmeta.get("latents") == "6" and rmeta.get("weights") == "f32" and np.array_equal(rt["prefill_resid"], tr["prefill_resid"]),
           "Model.trace(out=) writes the trace with the CLI's metadata keys", str(sorted(rmeta)))

    # ---- a Python hook doing a spec's edit = the spec ----
    v = g["steer.v"]

    def add_v(info, x):
        x += np.float32(3.0) * v
    spec_run = mf.trace(ids=ids, steer=DATA + "steer/s2_resid.json")
    hook_run = mf.trace(ids=ids, hooks=[cl.hook(add_v, at="resid", layer=2, phase="latent")])
    e = max(max_abs(spec_run[k], hook_run[k]) for k in spec_run)
    result(e == 0, "a Python hook adding 3 v at resid layer 2 (latent phase) = spec s2_resid", "max |diff| %.3g" % e)
    def kv_edit(state, k, n):   # s3_kv by hand: layer 2's cached K / V at the latent slots, after the last latent
        if k == n:
            T0 = ids.size
            state.key_cache[2, :, T0:T0 + n] += g["steer.dk"][:, None, :]
            state.value_cache[2, :, T0:T0 + n] += g["steer.dv"][:, None, :]
    kv_run = mf.trace(ids=ids, after_latent=kv_edit)
    spec_kv = mf.trace(ids=ids, steer=DATA + "steer/s3_kv.json")
    e = max(max_abs(spec_kv[k], kv_run[k]) for k in spec_kv)
    result(e == 0, "an after_latent callback editing state.key_cache / value_cache = spec s3_kv", "max |diff| %.3g" % e)
    both = mf.trace(ids=ids, steer=DATA + "steer/s3_kv.json", after_latent=lambda st, k, n: None)
    result(all(np.array_equal(both[k], spec_kv[k]) for k in both), "after_latent beside a spec's kv_cache edits keeps them")
    msg = raises(ZeroDivisionError, mf.run, ids=ids, after_latent=lambda st, k, n: 1 / (k - 3))
    result(msg is not None, "an exception in after_latent comes out of the run", str(msg))
    seen = []
    mf.run(ids=ids, latents=2, max_answer=2, hooks=[cl.hook(lambda i, x: seen.append((i, x.size)), at=("embed", "final"))])
    pts = {i.point for i, _ in seen}
    result(pts == {"embed", "final"} and all(n == 256 for _, n in seen) and seen[0][0].phase == "prefill"
           and any(i.phase == "latent" and i.step == 2 for i, _ in seen), "hook filter: only the points asked, with phase and step",
           "%d calls, points %s" % (len(seen), sorted(pts)))
    rec = np.zeros((5, 24, 256), np.float32)

    def record(info, x):
        if info.phase == "prefill":
            rec[info.layer, info.pos] = x
    mf.run(ids=ids, latents=0, max_answer=1, hooks=[cl.hook(record, at="resid")])
    e = rel_l2(rec, g["f32.prefill_resid"])
    result(e <= 1e-4, "a recording hook sees the golden prefill residuals", "relative L2 %.3g" % e)

    s = mf.state(64)
    n_rec = []
    s.add_hook(lambda i, x: n_rec.append(1), at="final")
    for _ in range(20):   # more runs than the 16 hook slots: a run's own hooks and spec go with it
        mf.run(ids=ids, latents=1, max_answer=1, state=s, steer=DATA + "steer/s2_resid.json", hooks=[lambda i, x: None])
    plain = mf.run(ids=ids, max_answer=16, state=s)
    result(s._s.n_hooks == 1 and len(n_rec) > 20 and np.array_equal(plain.ids, tr["answer_tokens"]),
           "run(state=, hooks=, steer=) removes its own hooks and spec afterwards; State.add_hook's stay", "n_hooks %d" % s._s.n_hooks)
    s.free()

    # ---- exceptions from hooks, freed views ----
    kept = []

    def boom(info, x):
        kept.append(x)
        if info.layer == 1:
            raise KeyError("stop here")
    msg = raises(KeyError, mf.run, ids=ids, hooks=[cl.hook(boom, at="resid")])
    result(msg is not None and "stop here" in msg, "an exception in a hook comes out of Model.run as itself", str(msg))
    s = mf.state(64)
    s.add_hook(boom, at="resid")
    try:
        s.forward(ids)
        result(False, "a hook exception stops State.forward")
    except KeyError as exc:
        notes = getattr(exc, "__notes__", [])
        result(not notes or "hook 0 stopped the forward pass" in notes[0], "a hook exception stops State.forward, with the library's message",
               str(notes))
    s.clear_hooks()
    for name, act in (("forward", lambda: s.forward(ids[:1])), ("free", s.free), ("clear_hooks", s.clear_hooks),
                      ("run", lambda: mf.run(ids=ids, max_answer=4, state=s))):
        s.add_hook(lambda i, x, act=act: act(), at="final")
        msg = raises(cl.CodiError, s.forward, ids)
        s.clear_hooks()
        result(msg is not None and "the state is running" in msg, "a hook that tries to %s its own running state raises" % name, str(msg))
    s.reset()
    s.forward(ids)
    result(s.n_pos == 24, "the state runs again after a hook raised", "n_pos %d" % s.n_pos)
    result(raises(cl.FreedError, lambda: kept[0][0]) is not None, "a hook's view raises after the hook returned")
    resid, logits, kc = s.resid, s.logits, s.key_cache
    result(resid.shape == (5, 64, 256) and kc.shape == (4, 2, 64, 32) and logits.shape == (515,), "state views have the C shapes",
           "%s %s %s" % (resid.shape, kc.shape, logits.shape))
    e = rel_l2(resid[:, :24], g["f32.prefill_resid"])
    result(e <= 1e-4, "State.resid views the C residuals (golden prefill)", "relative L2 %.3g" % e)
    resid[0, 0, 0] = 123.0
    result(float(s.resid[0, 0, 0]) == 123.0, "state views are writable and share the C memory (no copy)")
    copy = resid.copy()
    s.free()
    result(all(raises(cl.FreedError, f) is not None for f in (lambda: resid[0], lambda: resid.sum(), lambda: logits + 1,
                                                               lambda: repr(kc), lambda: np.mean(logits))),
           "views raise FreedError after State.free (index, sum, arithmetic, repr, numpy functions)")
    result(float(copy[0, 0, 0]) == 123.0 and raises(cl.FreedError, lambda: s.resid) is not None, "copies stay usable; the state itself raises")
    mtmp = cl.Model(DATA + "codi_tiny.bin", head_dim=32)
    st2 = mtmp.state(30)
    mtmp.free()
    result(raises(cl.FreedError, mtmp.run, ids=ids) is not None and raises(cl.FreedError, st2.forward, ids) is not None,
           "a freed model raises, and so do its states (the C model is freed after them)")

    # ---- errors and bad input ----
    msg = raises(cl.CodiError, cl.Model, DATA + "no_such.bin")
    result(msg is not None and "no_such.bin" in msg, "a missing checkpoint raises CodiError with the library's message", str(msg))
    msg = raises(cl.CodiError, mf.steer, {"edits": [{"at": "resid", "layer": 9, "vector": "x.safetensors:v"}]})
    result(msg is not None and "edit 0" in msg, "a bad steering spec raises with the library's message", str(msg))
    msg = raises(cl.CodiError, mf.steer, {"edits": [{"at": "latent_input", "step": 9, "vector": "../golden_tiny.safetensors:steer.v"}]},
                 base_dir=DATA + "steer")
    msg2 = msg or raises(cl.CodiError, mf.run, ids=ids, steer={"edits": [{"at": "latent_input", "step": 9, "vector": DATA + "golden_tiny.safetensors:steer.v"}]})
    result(msg2 is not None, "a spec step beyond the latents raises", str(msg2))
    result(raises(TypeError, mf.run, ids=np.array([1.0, 2.0])) is not None, "float ids raise TypeError")
    result(raises(ValueError, mf.run, ids=[1, 600]) is not None, "ids out of the vocabulary raise ValueError")
    result(raises(ValueError, mf.run, ids=np.zeros((2, 2), np.int32)) is not None, "2-D ids raise ValueError")
    s = mf.state(40)
    result(raises(ValueError, s.forward, embeds=np.zeros((3, 17), np.float32)) is not None, "embeds of the wrong width raise ValueError")
    result(raises(TypeError, s.forward, embeds=np.zeros((3, 256), np.int32)) is not None, "integer embeds raise TypeError")
    emb = np.asfortranarray(np.random.default_rng(0).standard_normal((256, 3)).astype(np.float64)).T   # non-contiguous, f64
    s.forward(embeds=emb)
    s2 = mf.state(40)
    s2.forward(embeds=np.ascontiguousarray(emb, np.float32))
    result(np.array_equal(s.logits, s2.logits), "non-contiguous float64 embeds are taken as contiguous float32")
    result(raises(cl.CodiError, s.forward, ids=np.ones(38, np.int32)) is not None, "a forward past the state's capacity raises")
    result(raises(ValueError, s.lens_at, 9, 0) is not None or raises(cl.CodiError, s.lens_at, 9, 0) is not None, "lens_at out of range raises")
    result(raises(ValueError, mf.run, ids=ids, hooks=[cl.hook(add_v, at="nowhere")]) is not None, "a hook at an unknown point raises")
    s.free()
    s2.free()

    # ---- read_safetensors = the C reader, bf16 included; write_safetensors read by C ----
    for path in (DATA + "golden_tiny.safetensors", DATA + "codi_tiny.safetensors", pfile):
        py, _ = cl.read_safetensors(path)
        c = cl.read_safetensors_c(path)
        bad = [k for k in c if k not in py or not np.array_equal(np.asarray(py[k], np.float32), c[k])]
        result(not bad and len(py) == len(c), "read_safetensors = codi_safetensors_read_f32 on %s" % os.path.basename(path), "differ: %s" % bad[:3] if bad else "")
    raw, _ = cl.read_safetensors(DATA + "codi_tiny.safetensors", bf16_to_float32=False)
    bf = [k for k in raw if raw[k].dtype == np.uint16]
    result(len(bf) > 0, "codi_tiny.safetensors holds bf16 tensors (read as uint16 bits on request)", "%d bf16" % len(bf))
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    wpath = os.path.join(tmp, "w.safetensors")
    cl.write_safetensors(wpath, {"x": x, "xb": x, "i": np.arange(3, dtype=np.int64), "d": x.astype(np.float64)}, {"note": "hi"}, bf16=("xb",))
    c = cl.read_safetensors_c(wpath)
    py, meta = cl.read_safetensors(wpath)
    result(np.array_equal(c["x"], x) and np.array_equal(c["xb"], py["xb"]) and np.abs(py["xb"] - x).max() <= np.abs(x).max() / 128
           and meta.get("note") == "hi" and py["i"].dtype == np.int64, "write_safetensors: read back by C and Python (bf16 rounded)")
    x64 = np.arange(48, dtype=np.float32)                 # 192 bytes, 40, 192 (bf16 of 96), 24: two 64-byte multiples
    cl.write_safetensors(wpath, {"odd": x[:2], "a": x64, "b": np.zeros(96, np.float32), "i": np.arange(3, dtype=np.int64)}, bf16=("b",))
    with open(wpath, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(hlen))
        size = os.fstat(f.fileno()).st_size
    spans = sorted(v["data_offsets"] for k, v in hdr.items() if k != "__metadata__")
    result((8 + hlen) % 64 == 0 and hdr["a"]["data_offsets"][0] % 64 == 0 and hdr["b"]["data_offsets"][0] % 64 == 0
           and spans[0][0] == 0 and spans[-1][1] == size - 8 - hlen and all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
           and np.array_equal(cl.read_safetensors_c(wpath)["a"], x64),
           "write_safetensors: data start and tensors of 64-byte multiples 64-byte aligned, no gaps", "header %d, %s" % (hlen, spans))
    cl.write_safetensors(wpath, {"v": g["steer.v"]})
    a = mf.trace(ids=ids, steer={"edits": [{"at": "resid", "layer": 2, "phase": "latent", "alpha": 3.0, "vector": wpath + ":v"}]})
    result(np.array_equal(a["answer_logits"], spec_run["answer_logits"]), "a steering vector written by write_safetensors drives a spec")
    bad = os.path.join(tmp, "bad.safetensors")
    open(bad, "wb").write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    result(raises(cl.SafetensorsError, cl.read_safetensors, bad) is not None, "a broken .safetensors raises SafetensorsError")
    jl = os.path.join(tmp, "r.jsonl")
    open(jl, "w").write('{"question": "a", "answer": 3}\n\n{"question": "b", "answer": null}\n')
    cv = os.path.join(tmp, "r.csv")
    open(cv, "w").write("layer,auc,name\n0,0.5,x\n1,,y\n")
    rows, crow = cl.read_jsonl(jl), cl.read_csv(cv)
    result(rows == [{"question": "a", "answer": 3}, {"question": "b", "answer": None}] and crow == [{"layer": 0, "auc": 0.5, "name": "x"},
                                                                                           {"layer": 1, "auc": None, "name": "y"}],
           "read_jsonl / read_csv: lists of dicts", "%s %s" % (rows, crow))

    # ---- codi-nano: tokenizer and a text question against the CLI ----
    if os.path.exists(NANO):
        mn = cl.Model(NANO)
        q = "Tom has 3 bags with 4 apples each. How many apples?"
        ans = mn.run(q, max_answer=64)
        rc, out, err = cli("run", "--model", NANO, "--question", q, "--max-answer", "64")
        cli_ids = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("answer ids:")), None)
        result(rc == 0 and cli_ids == [str(int(i)) for i in ans.ids], "codi-nano: Model.run(question) answer ids = codi run", "%s vs %s" % (cli_ids, list(ans.ids)))
        num = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("answer number:")), None)
        result(num is None and ans.number is None or (num is not None and ans.number == float(num)), "codi-nano: answer number = codi run's",
               "%s vs %s (text %r)" % (num, ans.number, ans.text))
        rc, out, _ = cli("tokenize", "--tokenizer", "models/codi-nano", "--text", q)
        enc = mn.encode(q)
        cli_enc = [int(ln.split("\t")[0]) for ln in out.splitlines() if "\t" in ln]
        result(rc == 0 and cli_enc == [int(i) for i in enc], "codi-nano: encode = codi tokenize", "%s vs %s" % (cli_enc[:8], list(enc[:8])))
        result(mn.decode(enc) == q, "codi-nano: decode(encode(q)) == q")
        p1 = mn.prompt_ids(q, recipe=0)
        result(p1[-1] == mn.config["bot_id"] and p1.size == enc.size + 2, "prompt recipe 0: BOS q bot", str(p1[:4]))
        result(ans.latents.shape == (7, mn.dim) and ans.latent_logits.shape == (7, mn.vocab), "Answer latents [N+1, D], latent_logits [N+1, V]")
        t = mn.trace(question=q, answer_steps=8)
        cli_out = os.path.join(tmp, "nano.safetensors")
        rc, _, err = cli("trace", "--model", NANO, "--question", q, "--max-answer", "8", "--out", cli_out)
        ct, _ = cl.read_safetensors(cli_out) if rc == 0 else ({}, {})
        result(rc == 0 and list(ct) == list(t) and all(np.array_equal(ct[k], t[k]) for k in ct), "codi-nano: Model.trace(question) = codi trace --question",
               err.strip()[:120])
        acts = os.path.join(tmp, "acts.safetensors")
        rc, _, err = cli("record", "--model", NANO, "--questions", "models/codi-nano/test.jsonl", "--limit", "3", "--dtype", "bf16",
                         "--kv", "--batch", "1", "--out", acts)   # --batch 1: codi_run's bits, compared with the trace below
        if rc == 0:
            py, meta = cl.read_safetensors(acts)
            c = cl.read_safetensors_c(acts)
            bad = [k for k in c if not np.array_equal(np.asarray(py[k], np.float32), c[k])]
            result(not bad and len(py) == len(c) and meta.get("dtype") == "bf16", "read_safetensors = the C reader on a bf16 `codi record` dataset",
                   "differ: %s" % bad if bad else "")
            q0 = cl.read_jsonl("models/codi-nano/test.jsonl")[0]["question"]
            t0 = mn.trace(question=q0, answer_steps=1)
            rb = cl.bf16_to_float32(cl.float32_to_bf16(t0["latent_resid"]))
            result(np.array_equal(py["resid"][0], rb), "a recorded bf16 residual row = the Python trace's, rounded by float32_to_bf16")
            check_writers_cli(mn, tmp, acts)
            pdir = os.path.join(tmp, "pca")
            rc, _, err = cli("pca", "--acts", acts, "--tensor", "final", "--positions", "1-6", "--out", pdir)
            if rc == 0:
                cp = cl.PCA.load(os.path.join(pdir, "pca.safetensors"), "final.layer0")
                mine = cl.PCA.fit(py["final"][:, 1:7].reshape(-1, mn.dim), cp.n_components)
                e = max_abs(np.abs(np.sum(mine.components * cp.components, axis=1)), np.ones(cp.n_components))
                result(cp.n_rows == 18 and e <= 1e-4 and max_abs(mine.variance, cp.variance) <= 1e-4 * float(cp.variance[0]),
                       "PCA.fit on the dataset's rows = `codi pca`'s components (PCA.load of its file)", "1 - |cos| %.3g" % e)
            else:
                result(False, "codi pca runs", err.strip()[-200:])
        else:
            result(False, "codi record runs", err.strip()[-200:])
        check_run_many(mn, tmp)
        p = subprocess.run([sys.executable, "examples/python/run_many.py", "--questions", "8", "--batch", "4"], capture_output=True, text=True)
        result(p.returncode == 0 and "same answers as Model.run: True" in p.stdout and "alpha 0 branch = the plain run: True" in p.stdout
               and "the recorded z_6 = Answer.latents[5]: True" in p.stdout, "examples/python/run_many.py runs and its checks hold",
               p.stderr.strip()[-200:].replace("\n", " | "))
        p = subprocess.run([sys.executable, "examples/python/lens_and_steer.py"], capture_output=True, text=True)
        result(p.returncode == 0 and "same answer ids: True" in p.stdout and "read back equal: True" in p.stdout,
               "examples/python/lens_and_steer.py runs and its checks hold", p.stderr.strip()[-200:].replace("\n", " | "))
    else:
        print("# %s absent: codi-nano checks skipped" % NANO)

    # ---- lenses: logit lens, tuned lens (new / save / load / train), distributions ----
    h = tr["latent_resid"][2, 1]
    e = max_abs(mf.lens_logits(h), tr["latent_lens_logits"][2, 1])
    result(e == 0, "Model.lens_logits = codi_lens_at's row", "max |diff| %.3g" % e)
    tl = mf.tuned_lens()
    e = max_abs(tl.logits(1, h), tr["latent_lens_logits"][2, 1])
    result(e <= 1e-5, "a zero tuned lens = the logit lens", "max |diff| %.3g" % e)
    gt, _ = cl.read_safetensors(DATA + "golden_tuned_lens_tiny.safetensors")
    resid = np.concatenate([gt["resid"], np.zeros((gt["resid"].shape[0], 1, 256), np.float32)], axis=1)
    tgt = gt["final_logits"]
    before = cl.tuned_lens_eval(mf, None, resid, tgt)
    lens, losses = cl.train_tuned_lens(mf, resid, tgt, steps=30, batch=16, seed=3)
    after = cl.tuned_lens_eval(mf, lens, resid, tgt)
    result(losses.shape == (30, 4) and np.all(after < before), "train_tuned_lens lowers every layer's KL", "%s -> %s" % (np.round(before, 3), np.round(after, 3)))
    each = cl.tuned_lens_eval(mf, lens, resid, tgt, per_sample=True)
    e = max_abs(each.mean(axis=0), after)
    result(each.shape == (resid.shape[0], 4) and e <= 1e-9 * max(1, after.max()), "tuned_lens_eval(per_sample=True): each sample's KL, their mean the mean KL",
           "shape %s, max |diff| %.3g" % (each.shape, e))
    lens2, _ = cl.train_tuned_lens(mf, resid, tgt, steps=30, batch=16, seed=3, threads=2)
    result(np.array_equal(lens.weight, lens2.weight), "tuned-lens training is the same bits with 2 threads")
    lp = os.path.join(tmp, "lens.safetensors")
    lens.save(lp)
    back = mf.tuned_lens(lp)
    result(np.array_equal(back.bias, lens.bias) and np.array_equal(back.weight, lens.weight), "tuned lens save / load round trip")
    ldir = os.path.join(tmp, "tuned_lens_dir")
    os.makedirs(ldir)
    lens.save(ldir, base_model="codi_tiny")
    back = mf.tuned_lens(ldir)
    result(sorted(os.listdir(ldir)) == ["config.json", "params.pt"] and np.array_equal(back.weight, lens.weight) and np.array_equal(back.bias, lens.bias),
           "tuned lens save / load round trip through the tuned-lens library's directory (params.pt, config.json)")
    ids5, p5 = cl.top_k(tr["latent_final_logits"][0], 5)
    r, pr = cl.rank_of(tr["latent_final_logits"][0], int(ids5[3]))
    sm = cl.softmax(tr["latent_final_logits"][0])
    result(r == 3 and abs(pr - p5[3]) < 1e-7 and abs(sm.sum() - 1) < 1e-5 and cl.entropy(tr["latent_final_logits"][0]) > 0,
           "top_k / rank_of / softmax / entropy agree")

    # ---- probes and PCA ----
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((200, 8)).astype(np.float32)
    ys = (xs[:, 0] + 0.5 * xs[:, 1] > 0).astype(np.int32)
    pb = cl.Probe.train(xs, ys)
    met = pb.metrics(xs, ys)
    result(met["accuracy"] >= 0.97 and met["auc"] > 0.99 and pb.weight.shape == (1, 8), "Probe.train separates a linear rule", str(met))
    pp = os.path.join(tmp, "probe.safetensors")
    cl.save_probes(pp, {"parity": pb}, {"layer": "3"})
    pb2 = cl.Probe.load(pp, "parity")
    result(np.array_equal(pb2.predict_proba(xs), pb.predict_proba(xs)), "probe save / load round trip")
    result(raises(ValueError, pb.predict_proba, np.zeros((2, 7), np.float32)) is not None, "predict_proba of the wrong width raises")
    xp = (rng.standard_normal((300, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1])).astype(np.float32)
    pca = cl.PCA.fit(xp, 3)
    w, vecs = np.linalg.eigh(np.cov(xp.astype(np.float64), rowvar=False))
    ref = vecs[:, ::-1][:, :3].T
    cos = np.abs(np.sum(ref * pca.components, axis=1))
    result(np.all(cos > 1 - 1e-5) and max_abs(pca.variance, w[::-1][:3]) <= 1e-3 * w.max(), "PCA.fit = numpy's eigh of the covariance",
           "cos %s" % cos)
    bad = [raises(ValueError, cl.PCA.fit, [xp[:100], xp[100:, :4]], 3), raises(ValueError, cl.softmax, np.zeros(0, np.float32)),
           raises(ValueError, cl.entropy, []), raises(ValueError, mf.state(8).forward, ids=[]),
           raises(ValueError, cl.train_tuned_lens, mf, np.zeros((0, 5, 256), np.float32))]
    result(all(m is not None for m in bad), "bad input raises, no crash: PCA blocks of another width, empty logits, empty ids, no samples",
           str(bad))
    pca2 = cl.PCA.fit([xp[:100], xp[100:]], 3)
    result(np.array_equal(pca2.components, pca.components), "PCA over streamed blocks = in one block")
    pc = os.path.join(tmp, "pca.safetensors")
    cl.save_pcas(pc, {"resid": pca})
    result(np.array_equal(cl.PCA.load(pc, "resid").project(xp), pca.project(xp)), "PCA save / load round trip")

    shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
