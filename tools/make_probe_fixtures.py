#!/usr/bin/python3
"""Writes tests/data/probe_fixtures.txt: references for tests/test_probe.c from scikit-learn
(LogisticRegression, binary and multinomial, on StandardScaler inputs) and numpy.linalg.eigh
(a symmetric matrix; PCA of a data set). Run: /usr/bin/python3 tools/make_probe_fixtures.py
(Debian: apt-get install python3-sklearn python3-numpy).

Format: one tensor per line, "name ndim dim0 dim1 ... : v0 v1 ...", row-major.
Eigenvectors follow codi_lens.h's sign rule: the entry of largest |value| is positive."""
import sys
import warnings
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

warnings.simplefilter("ignore")  # newton-cg warns at max_iter although converged
rng = np.random.default_rng(20261201)
out = []


def put(name, a, fmt="%.9g"):
    a = np.asarray(a)
    dims = " ".join(str(d) for d in a.shape)
    out.append("%s %d %s : %s" % (name, a.ndim, dims, " ".join(fmt % v for v in a.ravel())))


def fix_signs(vecs):  # rows
    for r in vecs:
        if r[np.argmax(np.abs(r))] < 0:
            r *= -1
    return vecs


def logreg(prefix, n, n_test, d, k, l2):
    means = rng.normal(0, 1.0, (k, d)) * np.linspace(1.5, 0.2, d)
    y = rng.integers(0, k, n + n_test)
    x = (means[y] + rng.normal(0, 1.0, (n + n_test, d)) * np.linspace(0.5, 3, d) + 5).astype(np.float32)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    sc = StandardScaler().fit(xtr.astype(np.float64))
    # newton-cg reaches |gradient| ~1e-12 here; lbfgs stops near 1e-6 (scipy's ftol)
    clf = LogisticRegression(C=1.0 / (l2 * n), solver="newton-cg", tol=1e-14, max_iter=1000,
                             multi_class="multinomial" if k > 2 else "auto")
    clf.fit(sc.transform(xtr), ytr)
    proba = clf.predict_proba(sc.transform(xte))
    put(prefix + "_l2", [l2], "%.17g")
    put(prefix + "_x", xtr)
    put(prefix + "_y", ytr, "%d")
    put(prefix + "_xtest", xte)
    put(prefix + "_ytest", yte, "%d")
    put(prefix + "_mean", sc.mean_, "%.17g")
    put(prefix + "_scale", sc.scale_, "%.17g")
    put(prefix + "_coef", clf.coef_, "%.17g")
    put(prefix + "_intercept", clf.intercept_, "%.17g")
    put(prefix + "_proba", proba, "%.17g")
    put(prefix + "_accuracy", [clf.score(sc.transform(xte), yte)], "%.17g")


logreg("bin", 240, 120, 10, 2, 1e-2)
logreg("multi", 300, 120, 8, 3, 3e-3)

a = rng.normal(0, 1, (24, 24))
a = (a + a.T) / 2
w, v = np.linalg.eigh(a)
put("eig_a", a, "%.17g")
put("eig_values", w[::-1], "%.17g")
put("eig_vectors", fix_signs(v[:, ::-1].T.copy()), "%.17g")

n, d = 300, 12
basis, _ = np.linalg.qr(rng.normal(0, 1, (d, d)))
x = (rng.normal(0, 1, (n, d)) * np.geomspace(8, 0.1, d)) @ basis.T + rng.normal(0, 3, d) + 100
x = x.astype(np.float32)
cov = np.cov(x.astype(np.float64), rowvar=False)
w, v = np.linalg.eigh(cov)
comps = fix_signs(v[:, ::-1].T.copy())[:5]
put("pca_x", x)
put("pca_mean", x.astype(np.float64).mean(0), "%.17g")
put("pca_components", comps, "%.17g")
put("pca_variance", w[::-1][:5], "%.17g")
put("pca_explained", w[::-1][:5] / w.sum(), "%.17g")
put("pca_projection", (x[:10].astype(np.float64) - x.astype(np.float64).mean(0)) @ comps.T, "%.17g")

x = rng.normal(0, 1, (8, 20)).astype(np.float32)  # 8 rows in 20 dimensions: rank 7
w, v = np.linalg.eigh(np.cov(x.astype(np.float64), rowvar=False))
put("lowrank_x", x)
put("lowrank_components", fix_signs(v[:, ::-1].T.copy())[:4], "%.17g")
put("lowrank_variance", w[::-1][:8], "%.17g")

labels = rng.integers(0, 2, 200)
scores = (np.round(rng.normal(0, 1, 200) + labels, 1)).astype(np.float32)  # many ties
put("auc_scores", scores)
put("auc_labels", labels, "%d")
put("auc_value", [roc_auc_score(labels, scores)], "%.17g")

path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/probe_fixtures.txt"
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", path)
