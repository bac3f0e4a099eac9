"""Many questions at once from Python: Model.run_many over the header's batched runner (codi_batch_*).

    make python && PYTHONPATH=python python3 examples/python/run_many.py [--questions 32] [--batch 16]

1. codi-nano's test questions batched, against Model.run one at a time: the same answers, and the time;
2. steering conditions as request dicts: a direction found from the runs' own latents (added to the
   residual entering layer 2 at every latent step), its random control (same norm); the direction is
   a numpy array given inline in the spec;
3. branches: one question's prefill and first two latent steps computed once (Model.prefix), then
   several steering strengths from that prefix in one batch;
4. on_done: each run's state at its end, read while the batch goes on (the last latent's residuals).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import codi_lens as cl  # noqa: E402

MODEL = "models/codi-nano/codi_nano.bin"
QUESTIONS = "models/codi-nano/test.jsonl"

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--questions", type=int, default=32, help="how many of the test questions (default 32)")
ap.add_argument("--batch", type=int, default=16, help="runs advanced together (default 16)")
args = ap.parse_args()

m = cl.Model(MODEL)
rows = cl.read_jsonl(QUESTIONS)[:args.questions]
qs = [r["question"] for r in rows]
gold = [float(r["answer"]) for r in rows]


def accuracy(answers):
    return sum(a.number is not None and abs(a.number - g) < 1e-6 for a, g in zip(answers, gold)) / len(gold)


# 1. batched = one at a time
t0 = time.perf_counter()
one = [m.run(q, max_answer=32) for q in qs]
t_one = time.perf_counter() - t0
t0 = time.perf_counter()
many = m.run_many(qs, batch=args.batch, max_answer=32)
t_many = time.perf_counter() - t0
print("%d questions: Model.run one by one %.0f ms, run_many (batch %d) %.0f ms" % (len(qs), t_one * 1e3, args.batch, t_many * 1e3))
print("same answers as Model.run: %s" % all(np.array_equal(a.ids, b.ids) for a, b in zip(one, many)))
print("accuracy: %.3f" % accuracy(many))
for q, a in list(zip(qs, many))[:3]:
    print("  %-60s -> %r" % (q[:60], a.text))

# 2. steering conditions, one request dict each: a direction from the latents themselves (the mean of
#    z_4 minus the mean of z_2 over these questions, as `codi vectors` makes diff_2_4), its random control
#    (a Gaussian direction of the same norm) and the same vector given as a numpy array in the spec
z = np.stack([a.latents for a in many])              # [n, N+1, D]: z_1..z_(N+1) of every run
direction = z[:, 3].mean(0) - z[:, 1].mean(0)
spec = {"edits": [{"at": "resid", "layer": 2, "phase": "latent", "alpha": 4.0, "vector": direction}]}
steer = m.steer(spec)                                # arrays inline: written and read by the library's parser
conditions = {"none": None, "diff_2_4": steer, "random": steer.random_like(seed=1)}
reqs = [{"question": q, "steer": s} for s in conditions.values() for q in qs]
out = m.run_many(reqs, batch=args.batch, max_answer=32)
print("\nsteering the latent steps' residual entering layer 2 (4 v, |v| = %.2f), %d runs in one call:" % (np.linalg.norm(direction), len(reqs)))
for j, name in enumerate(conditions):
    part = out[j * len(qs):(j + 1) * len(qs)]
    changed = sum(not np.array_equal(a.ids, b.ids) for a, b in zip(part, many))
    print("  %-9s accuracy %.3f, answers changed %2d of %d" % (name, accuracy(part), changed, len(qs)))
print("  (a handful of questions: differences this small are noise; `codi eval` gives intervals and paired tests)")

# 3. branches from one prefix: the prompt and latents 1-2 once, then alpha = -8..8 at latent steps 3-6
pre = m.prefix(qs[0], latents=2)
alphas = [0.0, 2.0, 4.0, 8.0, -8.0]
branches = m.run_many([{"prefix": pre, "steer": {"edits": [dict(spec["edits"][0], alpha=a)]}} for a in alphas], max_answer=32)
print("\nbranches of %r after latent 2:" % qs[0][:50])
for a, b in zip(alphas, branches):
    print("  alpha %4.1f -> %r" % (a, b.text))
print("alpha 0 branch = the plain run: %s" % np.array_equal(branches[0].ids, one[0].ids))
pre.free()

# 4. on_done: read each run's residuals at its last latent while the batch goes on
feats = np.zeros((len(qs), m.n_layers + 1, m.dim), np.float32)


def keep_last_latent(i, answer, state):
    feats[i] = state.resid[:, answer.prompt_len + 6 - 1]   # the slot of latent 6 (valid during the call only)


m.run_many(qs, batch=args.batch, max_answer=32, on_done=keep_last_latent)
print("\nlast-latent residual norms by layer (mean over questions): %s" %
      " ".join("%.1f" % x for x in np.linalg.norm(feats, axis=2).mean(0)))
print("the recorded z_6 = Answer.latents[5]: %s" % all(np.array_equal(feats[i, 0], many[i].latents[5]) for i in range(len(qs))))
