"""Recomputes codi probe's scores from its rows files: probe train's held-out rows (DIR/rows.csv)
against DIR/cells.csv (accuracy and its Wilson interval, AUC, binary or macro one-vs-rest, and its
bootstrap interval over whole questions, against numpy's own bootstrap), and probe apply's rows
against its printed table (per probe and split over all slots). Usage:
check_probe_rows.py ROWS.csv CELLS.csv [APPLY_ROWS.csv APPLY_STDOUT.txt]"""
import csv, sys
import numpy as np

def auc_binary(score, pos):
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):                                   # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s)); r[order] = ranks
    n1 = pos.sum(); n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return (r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)

def auc(P, y):
    k = P.shape[1]
    vals = [auc_binary(P[:, c], y == c) for c in ([1] if k == 2 else range(k))]
    vals = [v for v in vals if v == v]
    return np.mean(vals) if vals else float("nan")

def wilson(k, n, z=1.96):
    p = k / n; d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d; h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h

def load(path):
    rows = list(csv.DictReader(open(path)))
    k = sum(1 for c in rows[0] if c.startswith("p_class"))
    groups = {}
    for r in rows:
        groups.setdefault((r["probe"], r["split"]), []).append(r)
    return groups, k

def score(rs, k, rng):
    rs = [r for r in rs if r["label"] != ""]
    y = np.array([int(r["label"]) for r in rs]); pred = np.array([int(r["predicted"]) for r in rs])
    P = np.array([[float(r["p_class%d" % c]) for c in range(k)] for r in rs])
    q = np.array([int(r["question_index"]) for r in rs])
    assert (pred == P.argmax(axis=1)).all(), "predicted is the most probable class"
    qs = np.unique(q); idx = [np.where(q == x)[0] for x in qs]
    boot = []
    for _ in range(3000):
        pick = np.concatenate([idx[i] for i in rng.integers(0, len(qs), len(qs))])
        a = auc(P[pick], y[pick])
        if a == a:
            boot.append(a)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return len(y), int((pred == y).sum()), auc(P, y), lo, hi, np.std(boot), len(qs)

rng = np.random.default_rng(0)
groups, k = load(sys.argv[1])
cells = {c["name"]: c for c in csv.DictReader(open(sys.argv[2]))}
worst = 0; n = 0
for (probe, split), rs in groups.items():
    assert split == "held-out"
    c = cells[probe]
    ny, nc, a, lo, hi, sd, nq = score(rs, k, rng)
    assert ny == int(c["n_test"]) and nq == int(c["n_test_questions"]), (probe, ny, nq, c)
    assert abs(nc / ny - float(c["accuracy"])) < 1e-6, (probe, nc / ny, c["accuracy"])
    wl, wh = wilson(nc, ny)
    assert abs(wl - float(c["acc_lo"])) < 1e-6 and abs(wh - float(c["acc_hi"])) < 1e-6, (probe, wl, wh, c)
    assert abs(a - float(c["auc"])) < 1e-5, (probe, a, c["auc"])
    err = max(abs(float(c["auc_ci_low"]) - lo), abs(float(c["auc_ci_high"]) - hi)) / sd
    worst = max(worst, err); n += 1
    assert err < 0.35, (probe, lo, hi, sd, c)
msg = "%d probes: accuracy, Wilson interval, AUC recomputed; bootstrap bounds within %.2f SD of numpy's" % (n, worst)
if len(sys.argv) > 4:
    groups, k = load(sys.argv[3])
    printed = {}
    for line in open(sys.argv[4]):
        f = line.split()
        if len(f) >= 12 and f[1] == "all" and f[2] == "slots":
            printed[(f[0], f[3])] = [float(x.strip("[],")) for x in (f[6], f[7], f[8], f[9], f[10], f[11])]
    m = 0
    for (probe, split), rs in groups.items():
        if (probe, split) not in printed:
            continue
        ny, nc, a, lo, hi, sd, nq = score(rs, k, rng)
        acc, alo, ahi, au, ulo, uhi = printed[(probe, split)]
        wl, wh = wilson(nc, ny)
        assert abs(acc - nc / ny) < 1e-4 and abs(alo - wl) < 1e-4 and abs(ahi - wh) < 1e-4 and abs(au - a) < 1e-4, (probe, split, printed[(probe, split)], nc / ny, a)
        e = max(abs(ulo - lo), abs(uhi - hi)) / sd
        assert e < 0.35, (probe, split, lo, hi, sd, printed[(probe, split)])
        worst = max(worst, e); m += 1
    assert m >= 4, m
    msg += "; probe apply: %d (probe, split) lines recomputed from its rows" % m
print(msg)
