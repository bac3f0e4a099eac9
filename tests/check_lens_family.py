"""Recomputes codi lens --questions' correction over its family of rate-vs-chance tests from the
rows file: per rate of the JSON with a chance control, the exact two-sided sign test of the
per-question hit - chance (scipy.stats.binomtest), then Holm and Benjamini-Hochberg over the family
(statsmodels' multipletests); the family size and survivor counts; the rates CSV's columns.
usage: check_lens_family.py ROWS.jsonl SUMMARY.json RATES.csv"""
import csv, json, sys
import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

lines = open(sys.argv[1]).read().splitlines()
rows = [json.loads(l) for l in lines[1:]]
summ = json.loads(open(sys.argv[2]).read(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
done = {r["index"] for r in rows if r.get("done")}
cells = {}
for r in rows:
    if "target" in r and r["index"] in done:
        cells.setdefault((r["lens"], r["target"], r["slot"]), []).append(r)
ps, idx = [], []
for i, r in enumerate(summ["rates"]):
    sel = [x for x in cells.get((r["lens"], r["target"], r["slot"]), []) if x["chance_rank"]]
    if sel and r["lens"] == "tuned" and r["layer"] == summ["layers"] - 1:   # the logit lens's final index: tested once
        assert r["p_holm"] is None and r["q_bh"] is None, r
        continue
    if not sel:
        assert r["p_chance"] is None and r["p_holm"] is None and r["q_bh"] is None, r
        continue
    above = below = 0
    for x in sel:
        hit = 1 if x["rank"][r["layer"]] < r["k"] else 0
        ch = sum(1 for c in x["chance_rank"] if c[r["layer"]] < r["k"]) / len(x["chance_rank"])
        above += hit > ch; below += hit < ch
    p = 1.0 if above + below == 0 else binomtest(above, above + below).pvalue
    assert abs(r["p_chance"] - p) <= 1e-5 * p + 1e-300, (r, p)   # JSON numbers carry 6 digits
    ps.append(p); idx.append(i)
fam = summ["family"]
assert fam["tests"] == len(ps), (fam, len(ps))
holm = multipletests(ps, method="holm")[1]; bh = multipletests(ps, method="fdr_bh")[1]
for j, i in enumerate(idx):
    r = summ["rates"][i]
    assert abs(r["p_holm"] - holm[j]) <= 1e-5 * max(holm[j], 1e-12), (r, holm[j])
    assert abs(r["q_bh"] - bh[j]) <= 1e-5 * max(bh[j], 1e-12), (r, bh[j])
assert fam["holm_survivors"] == int((holm < 0.05).sum()) and fam["bh_survivors"] == int((bh < 0.05).sum()), (fam, (holm < 0.05).sum(), (bh < 0.05).sum())
# the rates CSV: the same p values where k is in the family, p_chance for every k
byrate = {(r["lens"], r["target"], r["slot"], r["layer"], r["k"]): r for r in summ["rates"]}
n_csv = 0
for c in csv.DictReader(open(sys.argv[3])):
    key = (c["lens"], c["target"], int(c["slot"]), int(c["layer"]), int(c["k"]))
    if key in byrate and byrate[key]["p_holm"] is not None:
        assert abs(float(c["p_holm"]) - byrate[key]["p_holm"]) <= 1e-5 * byrate[key]["p_holm"] + 1e-12, (c, byrate[key])
        n_csv += 1
    elif key not in byrate:
        assert c["p_holm"] == "" and c["q_bh"] == "", c
print("%d tests: sign-test p, Holm and BH match scipy / statsmodels; %d survive Holm, %d BH; %d CSV rows agree"
      % (len(ps), fam["holm_survivors"], fam["bh_survivors"], n_csv))
