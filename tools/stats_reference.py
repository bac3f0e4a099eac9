#!/usr/bin/env python3
"""Reference values for the statistics of codi_lens.h (>>stats), checked by tests/test_stats.c.

Run with a Python that has scipy and statsmodels (Debian: /usr/bin/python3 with python3-scipy and
python3-statsmodels):
    /usr/bin/python3 tools/stats_reference.py > tests/data/stats_reference.txt

One case a line: a kind, its inputs, then ':' and the expected outputs, numbers as repr (17
significant digits), NaN as nan. Kinds:
    wilson K N Z : LO HI                     statsmodels proportion_confint(method="wilson")
    mcnemar B C : P                          statsmodels mcnemar(exact=True)
    pdiff B C N : LO HI                      Bonett & Price (2012) adjusted Wald, from the formula
    holm M P1..PM : ADJ1..ADJM               statsmodels multipletests(method="holm") on the finite p
    bh M P1..PM : ADJ1..ADJM                 statsmodels multipletests(method="fdr_bh") on the finite p
    nq P : X                                 scipy.stats.norm.ppf
    tq P DF : X                              Student's t quantile: the root of mpmath's regularized
                                             incomplete beta at 40 digits, started at scipy.stats.t.ppf
                                             (scipy 1.10's stdtrit is off by up to ~2e-9 relative, e.g.
                                             p 0.7, df 30; the script checks they agree to 1e-8)
    tmean N X1..XN : MEAN SE LO HI           numpy mean, scipy.stats.sem, scipy.stats.t.interval(0.95)
    power N PB PC ALPHA : POWER              McNemar exact power: sum over the trinomial of discordant
                                             counts (b, c) with P(b) = PB, P(c) = PC per pair
"""
import math
import sys

import mpmath
import numpy as np
import scipy
import scipy.stats as st
import statsmodels
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint


def fmt(x):
    x = float(x)
    return "nan" if math.isnan(x) else repr(x)


def line(kind, inputs, outputs):
    print(kind, " ".join(fmt(v) if isinstance(v, float) else str(v) for v in inputs), ":",
          " ".join(fmt(v) for v in outputs))


def wilson(k, n, z):
    alpha = 2 * st.norm.sf(z)
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return max(0.0, lo), min(1.0, hi)


def mcnemar_p(b, c):
    if b + c == 0:
        return 1.0
    return mcnemar([[0, b], [c, 0]], exact=True).pvalue


def pdiff(b, c, n):
    """Bonett, D. G. & Price, R. M. (2012), J. Educ. Behav. Stat. 37(4): adjusted Wald interval for
    p21 - p12: p~ij = (nij + 1) / (n + 2), se = sqrt((p~12 + p~21 - (p~21 - p~12)^2) / (n + 2))."""
    z = st.norm.ppf(0.975)
    p12 = (b + 1) / (n + 2)
    p21 = (c + 1) / (n + 2)
    d = p21 - p12
    se = math.sqrt((p12 + p21 - d * d) / (n + 2))
    return max(-1.0, d - z * se), min(1.0, d + z * se)


def adjust(p, method):
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def t_quantile(p, df):
    """The t quantile to 40 digits: P(T > t) = I_(df / (df + t^2))(df / 2, 1/2) / 2 solved for t."""
    mpmath.mp.dps = 40
    start = st.t.ppf(p, df)
    if p == 0.5:
        return 0.0
    upper = mpmath.mpf(1) - mpmath.mpf(p)     # p is a double: this is exact at 40 digits

    def tail(t):
        t = mpmath.mpf(t)
        return mpmath.betainc(mpmath.mpf(df) / 2, mpmath.mpf(1) / 2, 0, df / (df + t * t), regularized=True) / 2

    root = mpmath.findroot(lambda t: (tail(t) if t > 0 else 1 - tail(-t)) - upper, mpmath.mpf(start))
    assert abs(float(root) - start) <= 1e-8 * abs(start), (p, df, float(root), start)
    return float(root)


def power(n, pb, pc, alpha):
    """P(McNemar exact p <= alpha) when each of n pairs is b-discordant with pb, c-discordant with pc."""
    total = 0.0
    for d in range(n + 1):
        pd = st.binom.pmf(d, n, pb + pc)
        if pd < 1e-300:
            continue
        for b in range(d + 1):
            if mcnemar_p(b, d - b) <= alpha:
                total += pd * st.binom.pmf(b, d, pb / (pb + pc))
    return total


def main():
    print("# tools/stats_reference.py: scipy %s, statsmodels %s, numpy %s, mpmath %s" % (
        scipy.__version__, statsmodels.__version__, np.__version__, mpmath.__version__))
    for k, n, z in [(0, 0, 1.96), (0, 1, 1.96), (1, 1, 1.96), (0, 10, 1.96), (10, 10, 1.96), (3, 10, 1.96),
                    (7, 10, 1.96), (1, 2, 1.96), (50, 100, 1.96), (1, 1000, 1.96), (999, 1000, 1.96),
                    (123456, 1000000, 1.96), (5, 20, 2.5758293035489004), (5, 20, 1.0), (17, 40, 1.6448536269514722)]:
        lo, hi = (0.0, 1.0) if n == 0 else wilson(k, n, z)
        line("wilson", [k, n, z], [lo, hi])
    for b, c in [(0, 0), (0, 1), (1, 0), (0, 5), (5, 5), (3, 7), (7, 3), (10, 20), (1, 30), (0, 12), (25, 26),
                 (40, 60), (200, 260), (1000, 1100), (4000, 4100), (0, 2000), (50, 0)]:
        line("mcnemar", [b, c], [mcnemar_p(b, c)])
    for b, c, n in [(0, 0, 0), (0, 0, 10), (0, 10, 10), (10, 0, 10), (3, 7, 50), (7, 3, 50), (5, 5, 100),
                    (12, 30, 500), (0, 1, 1000), (400, 300, 10000), (1, 0, 1)]:
        line("pdiff", [b, c, n], list(pdiff(b, c, n)))
    families = [
        [0.01, 0.04, 0.03, 0.005],
        [0.5],
        [1.0, 1.0, 1.0],
        [0.01, 0.01, 0.01, 0.02, 0.02],                    # ties
        [0.04, float("nan"), 0.01, float("nan"), 0.03],    # tests not made
        [float("nan"), float("nan")],
        [0.001, 0.2, 0.9, 1.0, 0.04, 0.04, 0.0],
        [0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01, 0.001, 0.9, 0.8, 0.7],
        [1e-300, 0.5, 1e-10, 0.049999, 0.05],
    ]
    for fam in families:
        line("holm", [len(fam)] + [float(v) for v in fam], adjust(fam, "holm"))
        line("bh", [len(fam)] + [float(v) for v in fam], adjust(fam, "fdr_bh"))
    for p in [0.5, 0.975, 0.025, 0.995, 0.9, 0.1, 1e-10, 1 - 1e-12, 1e-300, 0.6, 0.999999, 3e-5]:
        line("nq", [float(p)], [st.norm.ppf(p)])
    for p, df in [(0.975, 1), (0.975, 2), (0.975, 3), (0.975, 9), (0.975, 29), (0.975, 99), (0.975, 1e6), (0.5, 5),
                  (0.025, 4), (0.995, 1), (0.9999999, 1), (1e-7, 1), (1e-12, 3), (0.9, 0.5), (0.95, 2.5),
                  (0.7, 30), (1 - 1e-10, 10), (0.975, 1e4), (0.6, 1e6)]:
        line("tq", [float(p), float(df)], [t_quantile(p, df)])
    rng = np.random.default_rng(7)
    samples = [np.array([1.0, 2.0]), np.array([3.0, 3.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0, 10.0]),
               rng.exponential(2.0, 30), rng.normal(5.0, 0.1, 200), np.array([-1e6, 1e6, 3.0]),
               rng.lognormal(0, 1.5, 1000)]
    for x in samples:
        n = len(x)
        mean = float(np.mean(x))
        se = float(st.sem(x))
        if se > 0:
            lo, hi = st.t.interval(0.95, n - 1, loc=mean, scale=se)
        else:
            lo = hi = mean
        line("tmean", [n] + [float(v) for v in x], [mean, se, lo, hi])
    for n, pb, pc in [(100, 0.05, 0.15), (60, 0.1, 0.2), (200, 0.1, 0.1)]:
        line("power", [n, float(pb), float(pc), 0.05], [power(n, pb, pc, 0.05)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
