"""Recomputes codi eval's summary from its per-question result lines (tests/test_eval.sh):
strict JSON, the contract keys, Wilson intervals, McNemar exact p vs the baseline and vs each
random control (p_vs_random = the largest), flips, Holm and Benjamini-Hochberg within the
families steer and control. Plain python3 (no numpy). usage: check_eval_stats.py RESULTS.jsonl SUMMARY.txt"""
import json, math, sys

def strict(text):
    def bad(c): raise ValueError("non-finite number %s" % c)
    return json.loads(text, parse_constant=bad)

def mcnemar(b, c):
    n, k = b + c, min(b, c)
    if n == 0: return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)

def wilson(k, n, z=1.959963984540054):
    if n == 0: return 0.0, 1.0
    p = k / n; den = 1 + z * z / n; mid = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, mid - half), min(1.0, mid + half)

def holm(ps):
    order = sorted(range(len(ps)), key=lambda i: (ps[i], i)); m = len(ps); out = [0.0] * m; run = 0.0
    for r, i in enumerate(order): run = max(run, min(1.0, (m - r) * ps[i])); out[i] = run
    return out

def bh(ps):
    order = sorted(range(len(ps)), key=lambda i: (ps[i], i)); m = len(ps); out = [0.0] * m; run = 1.0
    for r in range(m - 1, -1, -1): i = order[r]; run = min(run, min(1.0, m * ps[i] / (r + 1))); out[i] = run
    return out

rows = [strict(l) for l in open(sys.argv[1]).read().splitlines()[1:]]
summ = [strict(l) for l in open(sys.argv[2]) if l.startswith('{"condition"')]
res = {}
for r in rows: res.setdefault(r["condition"], {})[r["index"]] = r["correct"]
keys = ["condition", "family", "n", "correct", "accuracy", "ci_low", "ci_high", "p_vs_baseline", "p_vs_random", "p_primary", "p_holm",
        "q_bh", "flips_to_right", "flips_to_wrong", "diff_vs_baseline", "diff_vs_baseline_ci_low", "diff_vs_baseline_ci_high",
        "diff_vs_random", "diff_vs_random_ci_low", "diff_vs_random_ci_high", "split", "effect", "mcnemar_p", "ci95", "questions"]
errors = []
def check(cond, what):
    if not cond: errors.append(what)
def close(a, b, tol=2e-6): return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tol * max(1, abs(b)))
by = {s["condition"]: s for s in summ}
for s in summ:
    name = s["condition"]
    check(all(k in s for k in keys), "%s: missing keys %s" % (name, [k for k in keys if k not in s]))
    check(s["split"] == "confirm", name + ": split")
    mine = res[name]; base = res["baseline"]
    k = sum(mine.values()); n = len(mine)
    lo, hi = wilson(k, n)
    check(s["n"] == n and s["correct"] == k and close(s["ci_low"], lo) and close(s["ci_high"], hi), name + ": n / Wilson")
    b = sum(1 for i in mine if base.get(i) and not mine[i]); c = sum(1 for i in mine if i in base and not base[i] and mine[i])
    check(s["flips_to_wrong"] == b and s["flips_to_right"] == c, name + ": flips")
    if name != "baseline": check(close(s["p_vs_baseline"], mcnemar(b, c)), name + ": p_vs_baseline")
    ctrl = [t for t in by if by[t]["family"] == "control" and t.startswith(name + "~random")]
    check(sorted(s["random_controls"]) == sorted(ctrl), name + ": random_controls")
    if ctrl:
        ps = [mcnemar(sum(1 for i in mine if res[t][i] and not mine[i]), sum(1 for i in mine if not res[t][i] and mine[i])) for t in ctrl]
        check(close(s["p_vs_random"], max(ps)), name + ": p_vs_random %s vs %s" % (s["p_vs_random"], max(ps)))
        check(close(s["p_primary"], max(ps)), name + ": p_primary")
    else:
        check(s["p_vs_random"] is None, name + ": p_vs_random should be null")
for fam in ("steer", "control"):
    names = [t for t in by if by[t]["family"] == fam]
    ps = [by[t]["p_primary"] for t in names]
    for t, h, q in zip(names, holm(ps), bh(ps)):
        check(close(by[t]["p_holm"], h) and close(by[t]["q_bh"], q), t + ": Holm / BH")
        check(by[t]["effect"] == (fam == "steer" and bool(by[t]["random_controls"]) and by[t]["p_holm"] < 0.05), t + ": effect")
print("\n".join(errors) if errors else "ok: %d conditions, %d result lines recomputed" % (len(summ), len(rows)))
sys.exit(1 if errors else 0)
