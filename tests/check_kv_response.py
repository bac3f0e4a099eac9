"""Recomputes codi kv-response's summary (PREFIX.json, PREFIX.csv, PREFIX_paired.csv and the stdout
lines) from its rows file alone, with numpy, scipy and statsmodels, and checks every number:
bootstrap means and intervals (codi_rng replicated: SplitMix64, 53-bit uniforms), standard errors,
the paired differences' t intervals, the exact sign-flip p values against
scipy.stats.permutation_test, Holm and BH against statsmodels' multipletests, and the survivors.
Strict JSON: a NaN or Infinity anywhere is an error. Prints "ok N numbers", or the first
mismatches and exits 1. Usage: check_kv_response.py PREFIX ROWS STDOUT.txt"""
import csv
import json
import math
import sys

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

prefix, rows_path, stdout_path = sys.argv[1:4]
M64 = (1 << 64) - 1
METRICS = ["key_rel", "value_rel", "key_cos", "value_cos"]
bad = []
checked = 0


def close(what, got, want, rel=1e-12, abs_=1e-15):
    global checked
    checked += 1
    if want is None or (isinstance(want, float) and not math.isfinite(want)):
        if got is not None:
            bad.append(f"{what}: {got} (want null)")
        return
    if got is None or abs(got - want) > abs_ + rel * abs(want):
        bad.append(f"{what}: {got} (want {want})")


def strict(text):
    def refuse(c):
        raise ValueError("non-finite number %s" % c)
    return json.loads(text, parse_constant=refuse)


def splitmix_uniforms(seed, count):
    out = np.empty(count)
    state = seed
    for i in range(count):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out[i] = (z >> 11) * (1.0 / 9007199254740992.0)
    return out


with open(rows_path) as f:
    lines = [strict(x) for x in f]
head = lines[0]
seed = head["seed"]
controls = head["random_controls"]
rows = {}
done = set()
for r in lines[1:]:
    if r.get("done"):
        done.add(r["index"])
    else:
        rows[(r["condition"], r["index"])] = r
qs = sorted(done)
n = len(qs)
n_cond = len(head["specs"]) * (1 + controls)
L = len(rows[(0, qs[0])]["key_rel"][0])
# v[metric][cond][slot][layer] -> array over the questions (in index order, as the C code's)
v = {w: [[[np.array([rows[(c, q)][w][s][l] for q in qs]) for l in range(L)] for s in range(2)] for c in range(n_cond)] for w in METRICS}

summary = strict(open(prefix + ".json").read())
NBOOT = summary["ci_method"]["bootstrap_resamples"]
idx = (splitmix_uniforms(summary["ci_method"]["bootstrap_seed"], NBOOT * n) * n).astype(np.int64).reshape(NBOOT, n)


def boot(x):
    means = np.sort(np.cumsum(x[idx], axis=1)[:, -1] / n)   # sequential sums, as in C
    se = float(np.std(x, ddof=1) / math.sqrt(n))
    return float(np.mean(x)), se, float(means[int(math.floor(0.025 * (NBOOT - 1)))]), float(means[int(math.ceil(0.975 * (NBOOT - 1)))])


def check_ci(what, got, want, abs_=1e-15):
    for k, w in zip(("mean", "se", "lo", "hi"), want):
        close(f"{what}.{k}", got[k], w, rel=1e-12, abs_=abs_)


if summary["questions"] != n:
    bad.append(f"questions {summary['questions']} != {n} done rows")
cells = summary["cells"]
csv_cells = list(csv.DictReader(open(prefix + ".csv")))
if len(cells) != n_cond * 2 * L or len(csv_cells) != len(cells):
    bad.append(f"{len(cells)} cells in JSON, {len(csv_cells)} in CSV, want {n_cond * 2 * L}")
for cell, crow in zip(cells, csv_cells):
    c = cell["spec"] * (1 + controls) + cell["control"]
    s = 0 if cell["slot"] == "steered" else 1
    for w in METRICS:
        want = boot(v[w][c][s][cell["layer"]])
        check_ci(f"cell {cell['condition']} {cell['slot']} {cell['layer']} {w}", cell[w], want)
        for k, x in zip(("", "_se", "_lo", "_hi"), want):   # the CSV: the same numbers at 9 digits
            close(f"csv {cell['condition']} {cell['slot']} {cell['layer']} {w}{k}", float(crow[w + k]), x, rel=1e-8, abs_=1e-15)
    if crow["ci_method"] != "bootstrap" or int(crow["questions"]) != n:
        bad.append(f"csv row {crow}")

# stdout: per condition the value change averaged over the layers
out = [strict(x) for x in open(stdout_path)]
for c in range(n_cond):
    for s, key in enumerate(("value_rel_change_steered", "value_rel_change_next")):
        per_q = np.zeros(n)
        for l in range(L):
            per_q = per_q + v["value_rel"][c][s][l]
        check_ci(f"stdout {out[c]['condition']} {key}", out[c][key], boot(per_q / L))

# paired tests
paired = summary["paired"]
p_want = []
for t in paired:
    spec = [h["name"] for h in head["specs"]].index(t["spec"])
    c0 = spec * (1 + controls)
    s = 0 if t["slot"] == "steered" else 1
    w = "key_rel" if t["kv"] == "key" else "value_rel"
    m = np.zeros(n)
    for r in range(1, controls + 1):
        m = m + v[w][c0 + r][s][t["layer"]]
    d = v[w][c0][s][t["layer"]] - m / controls
    se = float(np.std(d, ddof=1) / math.sqrt(n))
    q = stats.t.ppf(0.975, n - 1)
    check_ci(f"paired {t['spec']} {t['slot']} {t['layer']} {t['kv']} diff", t["diff"], (float(np.mean(d)), se, float(np.mean(d)) - q * se, float(np.mean(d)) + q * se), abs_=1e-9 * se)   # the t quantile to 1e-12
    if 2 ** n <= summary["permutations"]:
        ref = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                     n_resamples=np.inf, alternative="two-sided", vectorized=True).pvalue
        close(f"paired {t['spec']} {t['slot']} {t['layer']} {t['kv']} p (scipy exact)", t["p"], float(ref), rel=1e-12)
    p_want.append(t["p"])
holm = multipletests(p_want, method="holm")[1]
bh = multipletests(p_want, method="fdr_bh")[1]
for t, h, b in zip(paired, holm, bh):
    close(f"holm {t['spec']} {t['slot']} {t['layer']} {t['kv']}", t["p_holm"], float(h))
    close(f"bh {t['spec']} {t['slot']} {t['layer']} {t['kv']}", t["q_bh"], float(b))
    if t["survives_holm"] != bool(h < 0.05) or t["survives_bh"] != bool(b < 0.05):
        bad.append(f"survivors of {t}")
if summary["tests"] != len(paired) or summary["survivors_holm"] != int((holm < 0.05).sum()) or summary["survivors_bh"] != int((bh < 0.05).sum()):
    bad.append(f"tests {summary['tests']} / survivors {summary['survivors_holm']} {summary['survivors_bh']}")
if out[-1]["tests"] != summary["tests"] or out[-1]["survivors_holm"] != summary["survivors_holm"]:
    bad.append(f"stdout's last line {out[-1]}")
pcsv = list(csv.DictReader(open(prefix + "_paired.csv")))
for t, row in zip(paired, pcsv):
    for k, j in (("diff", t["diff"]["mean"]), ("diff_lo", t["diff"]["lo"]), ("p", t["p"]), ("p_holm", t["p_holm"]), ("q_bh", t["q_bh"])):
        close(f"paired csv {k}", float(row[k]), j, rel=1e-8)
    if int(row["survives_holm"]) != t["survives_holm"] or row["ci_method"] != "t":
        bad.append(f"paired csv row {row}")
if len(pcsv) != len(paired):
    bad.append(f"{len(pcsv)} paired CSV rows, {len(paired)} in JSON")

if bad:
    print("\n".join(bad[:10]))
    print(f"{len(bad)} of {checked} numbers differ")
    sys.exit(1)
print(f"ok {checked} numbers")
