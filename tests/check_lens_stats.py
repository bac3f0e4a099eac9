"""Recomputes codi lens --questions' summary from its rows file (tests/test_lens_stats.sh): strict
JSON, the contract keys of every rate, n / hits / Wilson interval, the chance rate (per question the
mean over the permutations) with its t interval, the paired difference with its t interval, the
permutations (no fixed points, each a permutation of the questions holding the target), the entropy
means, the older grids, and logit vs tuned McNemar counts. Plain python3.
usage: check_lens_stats.py ROWS.jsonl SUMMARY.json"""
import json, math, sys

def strict(text):
    def bad(c): raise ValueError("non-finite number %s" % c)
    return json.loads(text, parse_constant=bad)

def wilson(k, n, z=1.959963984540054):
    p = k / n; den = 1 + z * z / n; mid = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, mid - half), min(1.0, mid + half)

def t_cdf(x, df):                      # Simpson's rule on the t density from 0 to x
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)
    n = 2000; h = x / n
    return 0.5 + h / 3 * (f(0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n)))

_tq = {}
def t_q975(df):
    if df in _tq: return _tq[df]
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < 0.975 else (lo, mid)
    _tq[df] = (lo + hi) / 2
    return _tq[df]

def mean_ci(x):
    n = len(x); m = sum(x) / n
    if n < 2: return m, None, None
    se = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1) / n); q = t_q975(n - 1)
    return m, m - q * se, m + q * se

def mcnemar(b, c):
    n, k = b + c, min(b, c)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)

lines = open(sys.argv[1]).read().splitlines()
header = strict(lines[0]); rows = [strict(l) for l in lines[1:]]
summ = strict(open(sys.argv[2]).read())
errors = []
def check(c, what):
    if not c and len(errors) < 20: errors.append(what)
def close(a, b, tol=2e-5): return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tol * max(1, abs(b)))
done = {r["index"]: r for r in rows if r.get("done")}
trows = {(r["lens"], r["target"], r["slot"], r["index"]): r for r in rows if "target" in r and r["index"] in done}
by_cell = {}
for k, x in trows.items(): by_cell.setdefault(k[:3], []).append(x)
erows = {(r["lens"], r["slot"], r["index"]): r for r in rows if "entropy" in r and r["index"] in done}
check(summ["questions"] == len(done) and summ["correct"] == sum(1 for r in done.values() if r["correct"]), "questions / correct")
keys = ["lens", "target", "slot", "layer", "k", "n", "hits", "rate", "ci_low", "ci_high", "chance_rate", "chance_ci_low", "chance_ci_high", "diff", "diff_ci_low", "diff_ci_high"]
n_checked = 0
for r in summ["rates"]:
    check(all(k in r for k in keys), "rate keys missing: %s" % [k for k in keys if k not in r])
    sel = by_cell.get((r["lens"], r["target"], r["slot"]), [])
    hits = [1 if x["rank"][r["layer"]] < r["k"] else 0 for x in sel]
    check(r["n"] == len(hits) and r["hits"] == sum(hits), "n / hits %s" % r)
    if hits:
        lo, hi = wilson(sum(hits), len(hits))
        check(close(r["rate"], sum(hits) / len(hits)) and close(r["ci_low"], lo) and close(r["ci_high"], hi), "rate / Wilson %s" % r)
    ch = [(h, sum(1 for c in x["chance_rank"] if c[r["layer"]] < r["k"]) / len(x["chance_rank"])) for h, x in zip(hits, sel) if x["chance_rank"]]
    if ch:                                       # Wilson of the chance counted once per question; MOVER for the difference
        n = len(ch); p1 = sum(h for h, _ in ch) / n; p2 = sum(c for _, c in ch) / n
        l1, u1 = wilson(round(p1 * n), n); l2, u2 = wilson(math.floor(p2 * n + 0.5), n); l2, u2 = min(l2, p2), max(u2, p2)
        vh = sum(h * h for h, _ in ch) / n - p1 * p1; vc = sum(c * c for _, c in ch) / n - p2 * p2
        phi = max(-1, min(1, (sum(h * c for h, c in ch) / n - p1 * p2) / math.sqrt(vh * vc))) if vh > 0 and vc > 0 else 0
        lo = max(-1, p1 - p2 - math.sqrt(max(0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)))
        hi = min(1, p1 - p2 + math.sqrt(max(0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)))
        check(close(r["chance_rate"], p2) and close(r["chance_ci_low"], l2) and close(r["chance_ci_high"], u2), "chance %s" % r)
        check(close(r["diff"], p1 - p2) and close(r["diff_ci_low"], lo) and close(r["diff_ci_high"], hi), "diff %s (want %s %s)" % (r, lo, hi))
        n_checked += 1
    elif not ch:
        check(r["chance_rate"] is None and r["chance_ci_low"] is None, "chance should be null %s" % r)
# permutations: no fixed points; permutation j is a bijection of the questions holding the target
for (lens, target, slot) in {(k[0], k[1], k[2]) for k in trows}:
    sel = {k[3]: trows[k] for k in trows if k[:3] == (lens, target, slot)}
    perms = list(zip(*[x["chance_from"] for x in sel.values()])) if all(x["chance_from"] for x in sel.values()) else []
    for j, perm in enumerate(perms):
        check(all(d != q for d, q in zip(perm, sel)), "fixed point in permutation %d of %s" % (j, target))
        check(sorted(perm) == sorted(sel), "permutation %d of %s is not a bijection of its questions" % (j, target))
# entropy means and the older grids of the primary lens
prim = summ["lens"]
for e in summ["entropy"]:
    v = [erows[k]["entropy"][e["layer"]] for k in erows if k[0] == e["lens"] and k[1] == e["slot"]]
    m, lo, hi = mean_ci(v)
    check(e["n"] == len(v) and close(e["mean"], m) and close(e["ci_low"], lo, 1e-4) and close(e["ci_high"], hi, 1e-4), "entropy (t interval) %s" % e)
for name, target in (("answer_in_top_k", "answer"), ("intermediate_in_top_k", "intermediates")):
    if name not in summ: continue
    for p, row in enumerate(summ[name]):
        for l, ks in enumerate(row):
            sel = by_cell.get((prim, target, p), [])
            for k, v in enumerate(ks):
                want = sum(1 for x in sel if x["rank"][l] < k + 1) / len(sel) if sel else None
                check(close(v, want), "%s[%d][%d][%d] = %s, rows give %s" % (name, p, l, k, v, want))
for c in summ.get("lens_comparison", []):
    pairs = [(trows[("logit", c["target"], c["slot"], q)]["rank"][c["layer"]] < c["k"], trows[("tuned", c["target"], c["slot"], q)]["rank"][c["layer"]] < c["k"])
             for q in done if ("logit", c["target"], c["slot"], q) in trows and ("tuned", c["target"], c["slot"], q) in trows]
    b = sum(1 for x, y in pairs if x and not y); cc = sum(1 for x, y in pairs if y and not x)
    check(c["n"] == len(pairs) and c["logit_only"] == b and c["tuned_only"] == cc and close(c["p_mcnemar"], mcnemar(b, cc)), "lens comparison %s" % c)
print("\n".join(errors) if errors else "ok: %d rates (%d with chance), %d entropies, %d lens comparisons recomputed from %d rows"
      % (len(summ["rates"]), n_checked, len(summ["entropy"]), len(summ.get("lens_comparison", [])), len(rows)))
sys.exit(1 if errors else 0)
