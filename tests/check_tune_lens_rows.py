"""Recomputes codi tune-lens's held-out summary (PREFIX.json) from its rows file: per (latent step
or all, layer) the per-question mean KL of each lens and their paired difference, the mean and its
standard error exactly, the bootstrap interval against numpy's own bootstrap over questions. Also
checks that the split is by whole question (every held-out question has all its latent steps).
Usage: check_tune_lens_rows.py ROWS.jsonl SUMMARY.json LATENTS"""
import json, sys
import numpy as np

rows_path, summary_path, n_latents = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(rows_path).read().splitlines()
header = json.loads(lines[0])
rows = [json.loads(x) for x in lines[1:]]
assert header["codi_tune_lens_rows"] == 1 and len(rows) == header["held_out"], (len(rows), header)
assert sorted(r["sample"] for r in rows) == list(range(len(rows))), "samples 0..n-1 once each"
L = header["layers"]
by_q = {}
for r in rows:
    by_q.setdefault(r["question"], []).append(r["latent"])
for q, ks in by_q.items():
    assert sorted(ks) == list(range(1, n_latents + 1)), ("question %d split across train and held-out: latents %s" % (q, ks))
summary = json.load(open(summary_path), parse_constant=lambda c: (_ for _ in ()).throw(ValueError("non-finite " + c)))
rng = np.random.default_rng(0)
checked = worst = 0
for cell in summary["cells"]:
    k, l = cell["latent"], cell["layer"]
    qs = {}
    for r in rows:
        if k == "all" or r["latent"] == k:
            qs.setdefault(r["question"], []).append((r["kl_logit"][l], r["kl_tuned"][l]))
    a = np.array([np.mean([v[0] for v in vs]) for vs in qs.values()])
    b = np.array([np.mean([v[1] for v in vs]) for vs in qs.values()])
    assert cell["n_questions"] == len(qs), (cell, len(qs))
    for name, x in (("logit", a), ("tuned", b), ("diff", b - a)):
        got = cell[name]
        se = x.std(ddof=1) / np.sqrt(len(x))
        assert abs(got["mean"] - x.mean()) <= 1e-9 * max(1, abs(x.mean())), (k, l, name, got, x.mean())
        assert abs(got["se"] - se) <= 1e-9 * max(1, se), (k, l, name, got, se)
        boot = x[rng.integers(0, len(x), size=(20000, len(x)))].mean(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        err = max(abs(got["ci_low"] - lo), abs(got["ci_high"] - hi)) / se
        worst = max(worst, err)
        assert err < 0.35, (k, l, name, got, lo, hi, se)
        assert got["ci_low"] <= got["mean"] <= got["ci_high"]
        checked += 1
print("%d means recomputed over %d questions; bootstrap bounds within %.2f SE of numpy's" % (checked, len(by_q), worst))
