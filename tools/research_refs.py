#!/usr/bin/env python3
"""Writes tests/data/research_refs.txt: reference values tests/test_research_refs.c checks, computed
here independently of codi_lens.h.
  sgd_*    torch.optim.SGD(momentum 0.9, nesterov, weight_decay 1e-3) with a LambdaLR linear decay
           to 0 over T steps (transformers' get_linear_schedule_with_warmup, 0 warmup): the tuned-lens
           library's recipe. Needs PyTorch (Debian's python3-torch: /usr/bin/python3).
  hm_*     ROC AUC by counting all (positive, negative) pairs, ties half, and its Hanley & McNeil
           (1982, Radiology 143:29, eq. 2) standard error, n1 positives / n0 negatives unequal.
  macro_*  one-vs-rest macro AUC over K = 3 classes and its 95% interval mean +/- 1.96 sqrt(sum
           se_k^2) / K (the per-class errors combined as independent).
Each line: NAME v1 v2 ... (%.17g). Run: /usr/bin/python3 tools/research_refs.py > tests/data/research_refs.txt"""
import math
import random

out = []


def put(name, vals):
    out.append(name + " " + " ".join("%.17g" % float(v) for v in vals))


def sgd():
    import torch
    T, lr, wd, mu = 6, 0.1, 1e-3, 0.9
    p0 = [0.5, -1.0, 2.0]
    grads = [[0.3, -0.2, 0.1], [0.25, 0.4, -0.3], [-0.5, 0.1, 0.2], [0.05, -0.6, 0.45], [0.7, 0.3, -0.1], [-0.2, 0.15, 0.35]]
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    opt = torch.optim.SGD([p], lr=lr, momentum=mu, nesterov=True, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (T - s) / T))
    traj, lrs = [], []
    for g in grads:
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        sched.step()
        traj += p.detach().tolist()
    put("sgd_settings", [T, lr, wd, mu])
    put("sgd_p0", p0)
    put("sgd_grads", [x for g in grads for x in g])
    put("sgd_lr", lrs)
    put("sgd_params", traj)


def auc_se(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    n1, n0 = len(pos), len(neg)
    a = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (n1 * n0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    return a, se


def stats():
    rng = random.Random(17)
    labels = [1] * 4 + [0] * 11
    scores = [round(rng.gauss(0.6 if y else 0.4, 0.2), 2) for y in labels]   # rounded: ties occur
    a, se = auc_se(scores, labels)
    put("hm_scores", scores)
    put("hm_labels", labels)
    put("hm_auc_se", [a, se])
    K, n = 3, 24
    y = [0] * 5 + [1] * 8 + [2] * 11
    proba = []
    for c in y:
        w = [rng.random() + (0.3 if k == c else 0) for k in range(K)]
        s = sum(w)
        proba += [round(x / s, 6) for x in w]
    aucs, var = [], 0.0
    for k in range(K):
        ak, sk = auc_se([proba[i * K + k] for i in range(n)], [1 if c == k else 0 for c in y])
        aucs.append(ak)
        var += sk * sk
    mean, half = sum(aucs) / K, 1.96 * math.sqrt(var) / K
    put("macro_proba", proba)
    put("macro_labels", y)
    put("macro_auc_lo_hi", [mean, mean - half, mean + half])


sgd()
stats()
print("\n".join(out))
