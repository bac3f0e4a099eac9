"""A lens-and-steer walk-through on codi-nano from Python (numpy + the standard library only).

    make python && PYTHONPATH=python python3 examples/python/lens_and_steer.py

1. a question, its answer and the decoded latents;
2. the logit lens over the latent chain, read from the state's residual view (no copy);
3. a hook that records the residual stream as the run goes;
4. patching: the latents of a donor question set into the run, as a steering spec (a dict, exactly
   the JSON `codi run --steer` takes) and again as a Python hook: the same answer, bit for bit;
5. the spec's random control (same norms, random directions);
6. every .safetensors written here read back without the safetensors package.
"""
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import codi_lens as cl  # noqa: E402

MODEL = "models/codi-nano/codi_nano.bin"
Q = "Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?"
DONOR = "Zoe is 5 years old. Sam is 7 years older than Zoe. Max is twice as old as Sam. How old is Max?"

m = cl.Model(MODEL)
L, N = m.n_layers, 6

# 1. the answer and the decoded latents (lm_head at bot and each latent)
a = m.run(Q, latents=N, max_answer=32)
print("question: %s\nanswer:   %r -> %s" % (Q, a.text, a.number))
print("\ndecoded latents (top 3 of lm_head(final norm(h)))")
for k in range(N + 1):
    ids, probs = cl.top_k(a.latent_logits[k], 3)
    print("  %-8s %s" % ("bot" if k == 0 else "latent%d" % k,
                         "  ".join("%-8s %.2f" % (repr(m.token_text(int(i))), p) for i, p in zip(ids, probs))))

# 2. the logit lens at every layer over bot and the latents, from the state's views
state = m.state(256)
m.run(Q, latents=N, max_answer=32, state=state)
T0 = a.prompt_len
resid = state.resid                                   # [L+1, T, D] over the C memory
print("\nlogit lens: top-1 token of lm_head(final_norm(resid[l])) at bot and each latent")
print("  layer " + "".join("%-10s" % ("bot" if k == 0 else "z%d" % k) for k in range(N + 1)))
for l in range(L + 1):
    row = [repr(m.token_text(int(np.argmax(m.lens_logits(resid[l, T0 - 1 + k])))))[:9] for k in range(N + 1)]
    print("  %5d " % l + "".join("%-10s" % t for t in row))
print("  (state.lens_at(l, pos) is the same call in C: %s)" %
      np.array_equal(state.lens_at(2, T0), m.lens_logits(resid[2, T0])))
state.free()

# 3. a hook that records the residual entering every layer at the latent steps
norms = np.zeros((N, L + 1))


def record(info, x):
    norms[info.step - 1, info.layer] = np.linalg.norm(x)


m.run(Q, latents=N, max_answer=32, hooks=[cl.hook(record, at="resid", phase="latent")])
print("\n|resid| entering each layer (rows: latent step 1..%d)" % N)
print(np.array2string(norms, precision=1, suppress_small=True))

# 4. patching: the donor question's latent inputs z_1..z_6 set into this run
donor = m.run(DONOR, latents=N, max_answer=32)
tmp = tempfile.mkdtemp(prefix="codi_example_")
vec_file = os.path.join(tmp, "donor.safetensors")
cl.write_safetensors(vec_file, {"z%d" % k: donor.latents[k - 1] for k in range(1, N + 1)}, {"question": DONOR})
spec = {"name": "donor_latents",
        "edits": [{"at": "latent_input", "step": k, "op": "set", "vector": "donor.safetensors:z%d" % k}
                  for k in range(1, N + 1)]}
steer = m.steer(spec, base_dir=tmp)
patched = m.run(Q, latents=N, max_answer=32, steer=steer)
print("\ndonor:    %r -> %s (%s)" % (donor.text, donor.number, DONOR))
print("patched:  %r -> %s   (all %d latents from the donor; the question's own answer %s: %s)"
      % (patched.text, patched.number, N, a.number, "unchanged" if patched.number == a.number else "changed"))


def set_latent(info, x):
    x[:] = donor.latents[info.step - 1]


by_hook = m.run(Q, latents=N, max_answer=32, hooks=[cl.hook(set_latent, at="embed", phase="latent")])
print("the same patch as a Python hook gives the same answer ids: %s"
      % np.array_equal(by_hook.ids, patched.ids))

# 5. the random control: each vector replaced by a random direction of the same norm
control = m.run(Q, latents=N, max_answer=32, steer=steer.random_like(seed=1))
print("random control: %r -> %s" % (control.text, control.number))

# 6. a trace (the tensors `codi trace` writes) and files read back without safetensors
trace_file = os.path.join(tmp, "trace.safetensors")
t = m.trace(question=Q, steer=steer, out=trace_file)
back, meta = cl.read_safetensors(trace_file)
print("\ntrace: %s" % ", ".join("%s %s" % (k, list(v.shape)) for k, v in back.items()))
print("read back equal: %s; metadata: model=%s latents=%s"
      % (all(np.array_equal(back[k], t[k]) for k in t), meta["model"], meta["latents"]))
shutil.rmtree(tmp)
