/* Probes and PCA (>>probe, >>pca) against references nobody here wrote: scikit-learn's
   LogisticRegression and roc_auc_score, numpy.linalg.eigh and numpy.cov, all in
   tests/data/probe_fixtures.txt (tools/make_probe_fixtures.py); a planted direction on
   synthetic data; bad input. */
#define _POSIX_C_SOURCE 200809L   /* popen, access */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"
#include <sys/wait.h>
#include <unistd.h>

/* ---- the fixture file: "name ndim dims... : values" per line ---- */
typedef struct { char name[32]; size_t n; double *v; } fx_tensor;
static fx_tensor fx[64];
static int n_fx;

static int fx_load(const char *path) {
    size_t len;
    char *text = (char *)t_slurp(path, &len), *p, *end;
    if (!text) return -1;
    for (p = text; *p && n_fx < 64;) {
        fx_tensor *t = &fx[n_fx];
        int nd, i, used = 0;
        size_t cnt = 1;
        if (sscanf(p, "%31s %d%n", t->name, &nd, &used) != 2) break;
        p += used;
        for (i = 0; i < nd; i++) cnt *= (size_t)strtol(p, &p, 10);
        p = strchr(p, ':') + 1;
        t->v = (double *)malloc(cnt * sizeof(double)); t->n = cnt;
        for (i = 0; i < (int)cnt; i++) t->v[i] = strtod(p, &end), p = end;
        while (*p == '\n' || *p == ' ') p++;
        n_fx++;
    }
    free(text);
    return n_fx ? 0 : -1;
}

static const double *fx_get(const char *name, size_t *n) {
    int i;
    for (i = 0; i < n_fx; i++) if (!strcmp(fx[i].name, name)) { if (n) *n = fx[i].n; return fx[i].v; }
    printf("# fixture %s missing\n", name);
    exit(2);
}

static float *fx_floats(const char *name, size_t *n) {
    size_t c, i;
    const double *v = fx_get(name, &c);
    float *f = (float *)malloc(c * sizeof(float));
    for (i = 0; i < c; i++) f[i] = (float)v[i];
    if (n) *n = c;
    return f;
}

static int32_t *fx_ints(const char *name, size_t *n) {
    size_t c, i;
    const double *v = fx_get(name, &c);
    int32_t *y = (int32_t *)malloc(c * sizeof(int32_t));
    for (i = 0; i < c; i++) y[i] = (int32_t)v[i];
    if (n) *n = c;
    return y;
}

static double max_abs_d(const double *a, const double *b, size_t n) {
    double m = 0; size_t i;
    for (i = 0; i < n; i++) { double d = fabs(a[i] - b[i]); if (!(d <= m)) m = d != d ? INFINITY : d; }
    return m;
}

/* ---- logistic regression vs scikit-learn ---- */
static void check_sklearn(const char *prefix, int k) {
    char name[64], err[256];
    size_t n, nt, d, i;
    float *x, *xt, *proba;
    int32_t *y, *yt;
    const double *coef, *icpt, *ref_proba;
    double *got, e_coef, e_icpt = 0, e_mean = 0, e_proba = 0, scale = 0;
    codi_probe_opts o = codi_probe_opts_default();
    codi_probe_metrics met;
    codi_probe *p;
    int rows = k == 2 ? 1 : k, r;
    snprintf(name, sizeof name, "%s_x", prefix); x = fx_floats(name, &n);
    snprintf(name, sizeof name, "%s_y", prefix); y = fx_ints(name, &n);
    d = fx_get(strcat(strcpy(name, prefix), "_mean"), &d) ? d : 0;
    snprintf(name, sizeof name, "%s_xtest", prefix); xt = fx_floats(name, &nt);
    snprintf(name, sizeof name, "%s_ytest", prefix); yt = fx_ints(name, &nt);
    snprintf(name, sizeof name, "%s_l2", prefix); o.l2 = fx_get(name, NULL)[0];
    o.tol = 1e-9;
    p = codi_probe_train(x, y, (int)n, (int)d, k, &o, err, sizeof err);
    snprintf(name, sizeof name, "%s: trains", prefix);
    t_result(p != NULL && p->converged, name, p ? "%d iterations, loss %.6f" : "%s", p ? p->iterations : 0, p ? p->loss : 0.0, err);
    if (!p) return;
    got = (double *)malloc((size_t)rows * d * sizeof(double));
    for (i = 0; i < (size_t)rows * d; i++) got[i] = p->weight[i];
    snprintf(name, sizeof name, "%s_coef", prefix); coef = fx_get(name, NULL);
    snprintf(name, sizeof name, "%s_intercept", prefix); icpt = fx_get(name, NULL);
    e_coef = max_abs_d(got, coef, (size_t)rows * d);
    for (i = 0; i < (size_t)rows * d; i++) if (fabs(coef[i]) > scale) scale = fabs(coef[i]);
    {   /* K > 2: softmax ignores a shift of every intercept, so compare them centred */
        double mg = 0, mr = 0;
        if (rows > 1) for (r = 0; r < rows; r++) { mg += p->bias[r] / rows; mr += icpt[r] / rows; }
        for (r = 0; r < rows; r++) e_icpt = fmax(e_icpt, fabs((p->bias[r] - mg) - (icpt[r] - mr)));
    }
    snprintf(name, sizeof name, "%s: coefficients = scikit-learn's", prefix);
    t_result(e_coef <= 1e-5 * scale && e_icpt <= 1e-5 * (1 + scale), name, "max |diff| %.2g of max |coef| %.3g; intercept %.2g (tol 1e-5 relative)", e_coef, scale, e_icpt);
    snprintf(name, sizeof name, "%s_mean", prefix);
    for (i = 0; i < d; i++) {
        double a = fabs(p->mean[i] - fx_get(name, NULL)[i]);
        if (a > e_mean) e_mean = a;
    }
    snprintf(name, sizeof name, "%s: standardisation = StandardScaler", prefix);
    t_result(e_mean <= 1e-5, name, "max |mean diff| %.2g (tol 1e-5)", e_mean);
    proba = (float *)malloc(nt * (size_t)k * sizeof(float));
    codi_probe_predict_proba(p, xt, (int)nt, proba);
    snprintf(name, sizeof name, "%s_proba", prefix); ref_proba = fx_get(name, NULL);
    for (i = 0; i < nt * (size_t)k; i++) if (fabs(proba[i] - ref_proba[i]) > e_proba) e_proba = fabs(proba[i] - ref_proba[i]);
    snprintf(name, sizeof name, "%s: held-out probabilities = predict_proba", prefix);
    t_result(e_proba <= 1e-5, name, "max |diff| %.2g (tol 1e-5)", e_proba);
    codi_probe_metrics_of(proba, yt, (int)nt, k, &met, err, sizeof err);
    snprintf(name, sizeof name, "%s_accuracy", prefix);
    {
        double ref = fx_get(name, NULL)[0];
        snprintf(name, sizeof name, "%s: held-out accuracy = score()", prefix);
        t_result(fabs(met.accuracy - ref) < 1e-12 && met.acc_lo < met.accuracy && met.accuracy < met.acc_hi, name,
                 "%.4f [%.4f, %.4f] vs %.4f; AUC %.4f [%.4f, %.4f]", met.accuracy, met.acc_lo, met.acc_hi, ref, met.auc, met.auc_lo, met.auc_hi);
    }
    codi_probe_free(p); free(got); free(proba); free(x); free(xt); free(y); free(yt);
}

/* ---- eigensolver and PCA vs numpy ---- */
static void check_eigen(void) {
    char err[256];
    size_t n2;
    const double *a = fx_get("eig_a", &n2), *vals = fx_get("eig_values", NULL), *vecs = fx_get("eig_vectors", NULL);
    int n = (int)sqrt((double)n2);
    double *w = (double *)malloc((size_t)n * sizeof(double)), *v = (double *)malloc(n2 * sizeof(double)), ev, evec;
    int rc = codi_sym_eigen(a, n, 2, w, v, err, sizeof err);
    ev = rc ? INFINITY : max_abs_d(w, vals, (size_t)n);
    evec = rc ? INFINITY : max_abs_d(v, vecs, n2);
    t_result(ev <= 1e-12 && evec <= 1e-10, "eigen: 24 x 24 = numpy.linalg.eigh", "values max |diff| %.2g (tol 1e-12), vectors %.2g (tol 1e-10)", ev, evec);
    free(w); free(v);
    {   /* repeated eigenvalues and an exactly diagonal block: A v = w v, V V^T = I */
        double b[16] = {2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1}, bw[4], bv[16], res = 0, orth = 0;
        int r, c, j;
        rc = codi_sym_eigen(b, 4, 1, bw, bv, err, sizeof err);
        for (r = 0; r < 4 && !rc; r++) for (c = 0; c < 4; c++) {
            double av = 0, vv = 0;
            for (j = 0; j < 4; j++) { av += b[c * 4 + j] * bv[r * 4 + j]; vv += bv[r * 4 + j] * bv[c * 4 + j]; }
            res = fmax(res, fabs(av - bw[r] * bv[r * 4 + c])); orth = fmax(orth, fabs(vv - (r == c)));
        }
        t_result(!rc && res < 1e-14 && orth < 1e-14 && bw[0] == 2 && fabs(bw[3]) < 1e-15, "eigen: repeated values (2, 2, 2, 0)",
                 "|Av - wv| %.2g, |VV^T - I| %.2g", res, orth);
    }
}

static void check_pca(void) {
    char err[256];
    size_t n, d, i, k;
    float *x = fx_floats("pca_x", &n), *proj;
    const double *mean = fx_get("pca_mean", &d), *comps = fx_get("pca_components", &k), *var = fx_get("pca_variance", NULL);
    const double *expl = fx_get("pca_explained", NULL), *refproj = fx_get("pca_projection", NULL);
    double e_mean = 0, e_comp = 0, e_var = 0, e_expl = 0, e_proj = 0;
    codi_pca_acc *a = codi_pca_acc_new((int)d, 1, err, sizeof err), *b = codi_pca_acc_new((int)d, 3, err, sizeof err);
    codi_pca *p, *q;
    int nc;
    n /= d; nc = (int)(k / d);
    codi_pca_acc_add(a, x, (int)n, err, sizeof err);
    for (i = 0; i < n; i += 7) codi_pca_acc_add(b, x + i * d, (int)(n - i < 7 ? n - i : 7), err, sizeof err);
    p = codi_pca_fit(a, nc, err, sizeof err);
    q = codi_pca_fit(b, nc, err, sizeof err);
    if (!p || !q) { t_result(0, "pca: fits", "%s", err); return; }
    for (i = 0; i < d; i++) e_mean = fmax(e_mean, fabs(p->mean[i] - mean[i]) / fabs(mean[i]));
    for (i = 0; i < k; i++) e_comp = fmax(e_comp, fabs(p->components[i] - comps[i]));
    for (i = 0; i < (size_t)nc; i++) { e_var = fmax(e_var, fabs(p->variance[i] - var[i]) / var[i]); e_expl = fmax(e_expl, fabs(p->explained[i] - expl[i])); }
    t_result(e_mean <= 1e-7 && e_comp <= 1e-6 && e_var <= 1e-9 && e_expl <= 1e-9, "pca: 300 x 12 = numpy.cov + eigh (top 5)",
             "mean rel %.2g (tol 1e-7), components %.2g (tol 1e-6), variances rel %.2g, explained %.2g (tol 1e-9)", e_mean, e_comp, e_var, e_expl);
    proj = (float *)malloc(10 * (size_t)nc * sizeof(float));
    codi_pca_project(p, x, 10, proj);
    for (i = 0; i < 10 * (size_t)nc; i++) e_proj = fmax(e_proj, fabs(proj[i] - refproj[i]));
    t_result(e_proj <= 1e-4, "pca: projections = numpy", "max |diff| %.2g (tol 1e-4; values up to ~20)", e_proj);
    t_result(!memcmp(p->components, q->components, k * sizeof(float)) && !memcmp(p->variance, q->variance, nc * sizeof(double)),
             "pca: rows added 7 at a time with 3 threads give identical bits", "");
    codi_pca_free(p); codi_pca_free(q); codi_pca_acc_free(a); codi_pca_acc_free(b); free(x); free(proj);
    {   /* fewer rows than dimensions: a cluster of zero eigenvalues */
        float *lx = fx_floats("lowrank_x", &n);
        const double *lc = fx_get("lowrank_components", NULL), *lv = fx_get("lowrank_variance", NULL);
        double ec = 0, evar = 0;
        a = codi_pca_acc_new(20, 1, err, sizeof err);
        codi_pca_acc_add(a, lx, 8, err, sizeof err);
        p = codi_pca_fit(a, 20, err, sizeof err);
        for (i = 0; p && i < 4 * 20; i++) ec = fmax(ec, fabs(p->components[i] - lc[i]));
        for (i = 0; p && i < 8; i++) evar = fmax(evar, fabs(p->variance[i] - fmax(lv[i], 0)));
        t_result(p && ec < 1e-5 && evar < 1e-12, "pca: 8 rows in 20 dimensions (rank 7) = numpy", p ? "components %.2g (tol 1e-5), variances %.2g (tol 1e-12)" : "%s",
                 p ? ec : 0, evar, err);
        codi_pca_free(p); codi_pca_acc_free(a); free(lx);
    }
}

static void check_auc(void) {
    size_t n;
    float *s = fx_floats("auc_scores", &n);
    int32_t *y = fx_ints("auc_labels", &n);
    double se, auc = codi_roc_auc(s, y, (int)n, &se), ref = fx_get("auc_value", NULL)[0], lo, hi;
    t_result(fabs(auc - ref) < 1e-12 && se > 0 && se < 0.1, "auc: tied scores = roc_auc_score", "%.6f vs %.6f, Hanley-McNeil se %.4f", auc, ref, se);
    codi_wilson_interval(8, 10, 1.96, &lo, &hi);    /* Wilson (1927) for 8 / 10: [0.4902, 0.9433] */
    t_result(fabs(lo - 0.4902) < 1e-4 && fabs(hi - 0.9433) < 1e-4, "wilson: 8 of 10", "[%.4f, %.4f]", lo, hi);
    free(s); free(y);
}

/* ---- a planted direction: label = sign(x.u + noise), variance planted along u ---- */
static uint64_t rng_state = 88172645463325252ull;
static double rnd_normal(void) {
    double u1, u2;
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    u1 = ((rng_state >> 11) + 0.5) / 9007199254740992.0;
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    u2 = ((rng_state >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

static void check_planted(void) {
    enum { D = 64, N = 3000, NT = 1000 };
    char err[256];
    float *x = (float *)malloc((size_t)(N + NT) * D * sizeof(float)), *proba = (float *)malloc(NT * 2 * sizeof(float));
    int32_t *y = (int32_t *)malloc((N + NT) * sizeof(int32_t));
    double u[D], nu = 0, dot = 0, nw = 0;
    int i, j;
    codi_probe *p;
    codi_probe_metrics met;
    codi_pca_acc *a = codi_pca_acc_new(D, 1, err, sizeof err);
    codi_pca *pc;
    for (j = 0; j < D; j++) { u[j] = rnd_normal(); nu += u[j] * u[j]; }
    for (j = 0; j < D; j++) u[j] /= sqrt(nu);
    for (i = 0; i < N + NT; i++) {
        double t = 3 * rnd_normal(), s = 0;                  /* strong variance along u */
        for (j = 0; j < D; j++) { x[i * D + j] = (float)(t * u[j] + rnd_normal() + 0.5 * j); s += (x[i * D + j] - 0.5 * j) * u[j]; }
        y[i] = s + 0.5 * rnd_normal() > 0;
    }
    p = codi_probe_train(x, y, N, D, 2, NULL, err, sizeof err);
    if (!p) { t_result(0, "planted: probe trains", "%s", err); return; }
    {   /* 3 threads over the rows: the same bits */
        codi_probe_opts o3 = codi_probe_opts_default();
        codi_probe *p3;
        o3.n_threads = 3;
        p3 = codi_probe_train(x, y, N, D, 2, &o3, err, sizeof err);
        t_result(p3 && !memcmp(p3->weight, p->weight, D * sizeof(float)) && p3->bias[0] == p->bias[0] && p3->iterations == p->iterations,
                 "planted: probe with 3 threads = 1 thread, bit for bit", "");
        codi_probe_free(p3);
    }
    for (j = 0; j < D; j++) { double w = p->weight[j] / p->scale[j]; dot += w * u[j]; nw += w * w; }
    codi_probe_predict_proba(p, x + (size_t)N * D, NT, proba);
    codi_probe_metrics_of(proba, y + N, NT, 2, &met, err, sizeof err);
    t_result(dot / sqrt(nw) > 0.95 && met.accuracy > 0.9 && met.auc > 0.97 && met.auc_lo < met.auc && met.auc < met.auc_hi,
             "planted: probe recovers the direction", "cos(w, u) %.4f; held-out accuracy %.3f [%.3f, %.3f], AUC %.4f [%.4f, %.4f]",
             dot / sqrt(nw), met.accuracy, met.acc_lo, met.acc_hi, met.auc, met.auc_lo, met.auc_hi);
    codi_pca_acc_add(a, x, N, err, sizeof err);
    pc = codi_pca_fit(a, 3, err, sizeof err);
    for (dot = 0, j = 0; j < D; j++) dot += pc->components[j] * u[j];
    t_result(fabs(dot) > 0.99 && fabs(pc->variance[0] - 10) < 1.5, "planted: PC1 is the planted direction",
             "|cos| %.4f, variance %.2f (planted 9 + 1)", fabs(dot), pc->variance[0]);
    {   /* 3 threads: the same bits */
        codi_pca_acc *b = codi_pca_acc_new(D, 3, err, sizeof err);
        codi_pca *pb;
        codi_pca_acc_add(b, x, N, err, sizeof err);
        pb = codi_pca_fit(b, D, err, sizeof err);
        codi_pca_free(pc);
        pc = codi_pca_fit(a, D, err, sizeof err);
        t_result(pb && pc && !memcmp(pb->components, pc->components, (size_t)D * D * sizeof(float)) && !memcmp(pb->variance, pc->variance, D * sizeof(double)),
                 "pca: 64 dimensions, 3 threads = 1 thread, bit for bit", "");
        codi_pca_free(pb); codi_pca_acc_free(b);
    }
    codi_probe_free(p); codi_pca_free(pc); codi_pca_acc_free(a); free(x); free(y); free(proba);
}

/* ---- the lens along a direction, against the formula computed here from the weights ---- */
static void check_lens_direction(void) {
    codi_model *m = t_load("tests/data/codi_tiny.bin", 1);
    int D, V, i, j;
    float *base, *dir, *d1, *d2, *ref;
    double e = 0, scale_inv = 0, lin = 0;
    if (!m) { t_skip("lens direction", "tests/data/codi_tiny.bin not loaded"); return; }
    D = m->config.dim; V = m->config.vocab;
    base = (float *)malloc((size_t)D * sizeof(float)); dir = (float *)malloc((size_t)D * sizeof(float));
    d1 = (float *)malloc((size_t)V * sizeof(float)); d2 = (float *)malloc((size_t)V * sizeof(float)); ref = (float *)malloc((size_t)V * sizeof(float));
    for (i = 0; i < D; i++) { base[i] = (float)rnd_normal(); dir[i] = (float)(rnd_normal() / sqrt(D)); }
    {   /* ref = lm_head(rms(base + 2 dir)) - lm_head(rms(base)), in double from the f32 weights */
        double *h = (double *)malloc(2 * (size_t)D * sizeof(double)), ss[2] = {0, 0};
        const float *W = (const float *)m->w.lm_head.data;
        for (i = 0; i < D; i++) { h[i] = base[i] + 2.0 * dir[i]; h[D + i] = base[i]; ss[0] += h[i] * h[i]; ss[1] += h[D + i] * h[D + i]; }
        for (i = 0; i < D; i++) {
            h[i] *= m->w.final_norm[i] / sqrt(ss[0] / D + m->config.norm_eps);
            h[D + i] *= m->w.final_norm[i] / sqrt(ss[1] / D + m->config.norm_eps);
        }
        for (j = 0; j < V; j++) {
            double a = 0, b = 0;
            for (i = 0; i < D; i++) { a += (double)W[(size_t)j * D + i] * h[i]; b += (double)W[(size_t)j * D + i] * h[D + i]; }
            ref[j] = (float)(a - b);
        }
        free(h);
    }
    codi_lens_direction(m, base, dir, 2.0f, 0, d1);
    e = t_max_abs(d1, ref, (size_t)V);
    t_result(e < 1e-4, "lens direction: residual stream = lm_head(final_norm(.)) difference", "max |diff| %.2g (tol 1e-4)", e);
    for (i = 0; i < D; i++) base[i] = 0;          /* from 0, final_norm ignores the scale of the move */
    codi_lens_direction(m, base, dir, 10.0f, 0, d1);
    codi_lens_direction(m, base, dir, 100.0f, 0, d2);
    scale_inv = t_rel_l2(d1, d2, (size_t)V);
    codi_lens_direction(m, base, dir, 1.0f, 1, d1);    /* normed: linear */
    codi_lens_direction(m, base, dir, 3.0f, 1, d2);
    for (j = 0; j < V; j++) d1[j] *= 3;
    lin = t_rel_l2(d2, d1, (size_t)V);
    t_result(scale_inv < 1e-4 && lin < 1e-6, "lens direction: scale-free from 0 (up to eps), linear when normed", "rel diff %.2g (tol 1e-4), %.2g (tol 1e-6)", scale_inv, lin);
    free(base); free(dir); free(d1); free(d2); free(ref);
    codi_model_free(m);
}

/* ---- save / load and bad files ---- */
static void check_file_errors(void) {
    char err[256];
    float x[8] = {0, 1, 2, 3, 4, 5, 6, 7}, pr1[8], pr2[8];
    int32_t y[4] = {0, 1, 0, 1};
    codi_probe *p = codi_probe_train(x, y, 4, 2, 2, NULL, err, sizeof err), *q;
    const char *names[1] = { "cell" };
    const codi_probe *ps[1];
    codi_safetensors_entry e;
    ps[0] = p;
    err[0] = 0;
    t_result(p && codi_probe_save("build/test_probe_one.safetensors", ps, names, 1, NULL, err, sizeof err) == 0, "save: probe", err[0] ? "%s" : NULL, err);
    q = codi_probe_load("build/test_probe_one.safetensors", "cell", err, sizeof err);
    if (p && q) { codi_probe_predict_proba(p, x, 4, pr1); codi_probe_predict_proba(q, x, 4, pr2); }
    t_result(q && !memcmp(pr1, pr2, sizeof pr1), "load: same probabilities", q ? NULL : "%s", err);
    codi_probe_free(q);
    t_result(!codi_probe_load("build/test_probe_one.safetensors", "other", err, sizeof err) && strstr(err, "no probe named 'other'"), "errors: absent probe", "%s", err);
    memset(&e, 0, sizeof e);       /* a probe whose bias has the wrong length */
    e.name = "cell.weight"; e.data = x; e.ndim = 2; e.shape[0] = 1; e.shape[1] = 2;
    {
        codi_safetensors_entry es[4];
        const char *meta[] = { "codi_lens", "probe.v1", NULL };
        int k;
        for (k = 0; k < 4; k++) es[k] = e;
        es[1].name = "cell.mean"; es[1].ndim = 1; es[1].shape[0] = 2; es[2] = es[1]; es[2].name = "cell.scale"; es[3].name = "cell.bias"; es[3].ndim = 1; es[3].shape[0] = 2;
        codi_write_safetensors("build/test_probe_bad.safetensors", es, 4, meta, err, sizeof err);
    }
    t_result(!codi_probe_load("build/test_probe_bad.safetensors", "cell", err, sizeof err) && strstr(err, "cell.bias has 2 values; 1 expected"),
             "errors: mismatched probe shapes", "%s", err);
    t_result(!codi_pca_load("build/test_probe_one.safetensors", "cell", err, sizeof err) && strstr(err, "not a PCA file"), "errors: pca load of a probe file", "%s", err);
    codi_probe_free(p);
}

/* ---- bad input ---- */
static void check_errors(void) {
    char err[256] = "";
    float x[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, proba[8] = {0};
    int32_t y1[4] = {0, 0, 0, 0}, ybad[4] = {0, 1, 2, 1}, y[4] = {0, 1, 0, 1};
    codi_probe_metrics met;
    codi_pca_acc *a;
    t_result(!codi_probe_train(x, y, 0, 3, 2, NULL, err, sizeof err) && strstr(err, "empty"), "errors: empty training set", "%s", err);
    t_result(!codi_probe_train(x, y1, 4, 3, 2, NULL, err, sizeof err) && strstr(err, "class 1 has no"), "errors: one class", "%s", err);
    t_result(!codi_probe_train(x, ybad, 4, 3, 2, NULL, err, sizeof err) && strstr(err, "outside 0..1"), "errors: label out of range", "%s", err);
    x[5] = NAN;
    t_result(!codi_probe_train(x, y, 4, 3, 2, NULL, err, sizeof err) && strstr(err, "row 1, column 2"), "errors: NaN input", "%s", err);
    a = codi_pca_acc_new(3, 1, err, sizeof err);
    t_result(codi_pca_acc_add(a, x, 4, err, sizeof err) == -1 && codi_pca_acc_rows(a) == 0, "errors: pca NaN row refused whole", "%s", err);
    x[5] = 6;
    codi_pca_acc_add(a, x, 1, err, sizeof err);
    t_result(!codi_pca_fit(a, 2, err, sizeof err) && strstr(err, "at least 2"), "errors: pca of one row", "%s", err);
    codi_pca_acc_add(a, x + 3, 3, err, sizeof err);
    t_result(!codi_pca_fit(a, 4, err, sizeof err) && strstr(err, "1..3"), "errors: more components than dimensions", "%s", err);
    t_result(!codi_pca_acc_new(0, 1, err, sizeof err) && strstr(err, "dimension 0"), "errors: pca of dimension 0", "%s", err);
    t_result(codi_probe_metrics_of(proba, ybad, 4, 2, &met, err, sizeof err) == -1 && strstr(err, "label 2"), "errors: metrics label out of range", "%s", err);
    codi_pca_acc_free(a);
}

/* ---- the commands on a synthetic activation dataset (codi record's layout) ---- */
enum { AQ = 150, AP = 7, AL = 2, AD = 16, AKVH = 2, AHD = 4 };

/* resid [Q, 7, 3, 16]: layer 1 carries "correct" along u, layer 2 and final the step parity along w;
   slot 0 = bot, k = latent k; the last 5 questions are unfinished (done 0, zeros); every tenth
   question has no slot 6 (positions -1: a padded, variable-length position set).
   bad = 1: every question correct (one class); 2: no question finished; 3: resid of rank 3. */
static int write_acts(const char *path, int bad) {
    static float resid[AQ][AP][AL + 1][AD], fin[AQ][AP][AD], lat[AQ][AP - 1][AD], key[AQ][AP][AL][AKVH][AHD];
    static int32_t qi[AQ], pos[AQ][AP];
    static unsigned char done[AQ], correct[AQ];
    double u[AD], w[AD];
    char err[256];
    int q, p, l, j;
    const char *meta[] = { "labels", "[\"bot\",\"latent 1\",\"latent 2\",\"latent 3\",\"latent 4\",\"latent 5\",\"latent 6\"]",
                           "model", "synthetic", NULL };
    codi_safetensors_entry e[8];
    memset(e, 0, sizeof e);
    rng_state = 0x2545F4914F6CDD1Dull;             /* the same data whatever ran before */
    for (j = 0; j < AD; j++) { u[j] = j < 8 ? 0.35 : 0; w[j] = j >= 8 ? 0.35 : 0; }
    for (q = 0; q < AQ; q++) {
        double c = rnd_normal();
        qi[q] = q; done[q] = q < AQ - 5 && bad != 2; correct[q] = c > 0 || bad == 1;
        for (p = 0; p < AP; p++) pos[q][p] = p == 6 && q % 10 == 0 ? -1 : 20 + p;
        for (p = 0; p < AP && done[q]; p++) {
            double par = p ? (p % 2 ? 1.5 : -1.5) : 0;
            for (l = 0; l <= AL; l++) for (j = 0; j < AD; j++)
                resid[q][p][l][j] = (float)(rnd_normal() + (l == 1 ? 3 * c * u[j] : 0) + (l == 2 ? par * w[j] : 0) + l);
            for (j = 0; j < AD; j++) fin[q][p][j] = (float)(rnd_normal() + par * w[j]);
            if (p) for (j = 0; j < AD; j++) lat[q][p - 1][j] = (float)rnd_normal();
            for (l = 0; l < AL; l++) for (j = 0; j < AKVH * AHD; j++) key[q][p][l][j / AHD][j % AHD] = (float)rnd_normal();
        }
    }
    e[0].name = "resid"; e[0].data = resid; e[0].ndim = bad == 3 ? 3 : 4; e[0].shape[0] = AQ; e[0].shape[1] = AP; e[0].shape[2] = AL + 1; e[0].shape[3] = AD;
    e[1].name = "final"; e[1].data = fin; e[1].ndim = 3; e[1].shape[0] = AQ; e[1].shape[1] = AP; e[1].shape[2] = AD;
    e[2].name = "latent_inputs"; e[2].data = lat; e[2].ndim = 3; e[2].shape[0] = AQ; e[2].shape[1] = AP - 1; e[2].shape[2] = AD;
    e[3].name = "key"; e[3].data = key; e[3].ndim = 5; e[3].shape[0] = AQ; e[3].shape[1] = AP; e[3].shape[2] = AL; e[3].shape[3] = AKVH; e[3].shape[4] = AHD;
    e[4].name = "question_index"; e[4].dtype = CODI_I32; e[4].data = qi; e[4].ndim = 1; e[4].shape[0] = AQ;
    e[5].name = "done"; e[5].dtype = CODI_U8; e[5].data = done; e[5].ndim = 1; e[5].shape[0] = AQ;
    e[6].name = "correct"; e[6].dtype = CODI_U8; e[6].data = correct; e[6].ndim = 1; e[6].shape[0] = AQ;
    e[7].name = "positions"; e[7].dtype = CODI_I32; e[7].data = pos; e[7].ndim = 2; e[7].shape[0] = AQ; e[7].shape[1] = AP;
    {
        const char *m2[8];
        int k;
        m2[0] = "format"; m2[1] = "codi_lens.acts.v1";
        for (k = 0; meta[k]; k++) m2[2 + k] = meta[k];
        m2[2 + k] = NULL;
        if (codi_write_safetensors(path, e, 8, m2, err, sizeof err)) { printf("# %s\n", err); return -1; }
    }
    return 0;
}

/* Runs a shell command; its exit status, and its stdout+stderr in out. */
static int run_cmd(const char *cmd, char *out, size_t cap) {
    char full[2048];
    FILE *f;
    size_t n;
    int st;
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    if (!(f = popen(full, "r"))) return -1;
    n = fread(out, 1, cap - 1, f);
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' ')) n--;
    out[n] = 0;
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void check_commands(void) {
    const char *acts = "build/test_probe_acts.safetensors";
    static char out[1 << 16];
    char err[256];
    int rc;
    codi_probe *p;
    codi_pca *pc;
    FILE *f;
    if (access("build/codi", X_OK)) { t_skip("commands", "build/codi not built"); return; }
    if (write_acts(acts, 0) || write_acts("build/test_probe_one_class.safetensors", 1) || write_acts("build/test_probe_empty.safetensors", 2) ||
        write_acts("build/test_probe_rank.safetensors", 3)) { t_result(0, "commands: synthetic dataset written", "see above"); return; }
    rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --label correct --layers 0,1 --out build/test_probe_out", out, sizeof out);
    t_result(rc == 0 && strstr(out, "held-out AUC"), "probe train: label correct", "exit %d", rc);
    if (rc) printf("# %s\n", out);
    p = codi_probe_load("build/test_probe_out/probes.safetensors", "resid.layer1.slot3", err, sizeof err);
    {   /* layer 1 carries the planted direction: high AUC; layer 0 is noise */
        double auc1 = -1, auc0 = -1;
        char line[512];
        if ((f = fopen("build/test_probe_out/cells.csv", "r"))) {
            while (fgets(line, sizeof line, f)) {
                double a0;
                char nm[64];
                if (sscanf(line, "%63[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%*[^,],%lf", nm, &a0) == 2) {
                    if (!strcmp(nm, "resid.layer1.slot3")) auc1 = a0;
                    if (!strcmp(nm, "resid.layer0.slot3")) auc0 = a0;
                }
            }
            fclose(f);
        }
        t_result(p && p->dim == AD && p->n_classes == 2 && auc1 > 0.9 && auc0 < 0.8, "probe train: finds the planted layer",
                 "AUC layer 1 %.3f (> 0.9), layer 0 %.3f (< 0.8)%s%s", auc1, auc0, p ? "" : "; ", p ? "" : err);
    }
    codi_probe_free(p);
    rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --label parity --tensor final --out build/test_probe_par", out, sizeof out);
    t_result(rc == 0 && strstr(out, "pooled"), "probe train: label parity, pooled over latents", "exit %d", rc);
    rc = run_cmd("build/codi probe apply --probes build/test_probe_par/probes.safetensors --acts build/test_probe_acts.safetensors", out, sizeof out);
    t_result(rc == 0 && strstr(out, "latent 6"), "probe apply: per slot", "exit %d", rc);
    if (rc) printf("# %s\n", out);
    rc = run_cmd("build/codi pca --acts build/test_probe_acts.safetensors --tensor final --positions 1-6 --components 4 --color parity "
                 "--steer-components 1 --out build/test_probe_pca", out, sizeof out);
    pc = codi_pca_load("build/test_probe_pca/pca.safetensors", "final.layer0", err, sizeof err);
    {   /* PC1 of final is the parity direction w (entries 8..15 equal) */
        double dot = 0;
        int j;
        for (j = 8; pc && j < AD; j++) dot += pc->components[j] * 0.35;
        t_result(rc == 0 && pc && pc->n_components == 4 && pc->n_rows == 145 * 6 - 15 && fabs(dot) > 0.9, "pca: final, PC1 = planted parity direction, padded slots skipped",
                 "exit %d, |cos| %.3f, rows %ld%s%s", rc, fabs(dot), pc ? pc->n_rows : 0L, pc ? "" : "; ", pc ? "" : err);
    }
    codi_pca_free(pc);
    t_result(!access("build/test_probe_pca/scatter_final.layer0.svg", R_OK) && !access("build/test_probe_pca/steer_final.layer0.pc1.+2sd.json", R_OK) &&
             !access("build/test_probe_pca/steer_final.layer0.pc1.random+1sd.json", R_OK), "pca: scatter, steering specs and random control written", "");
    rc = run_cmd("build/codi pca --acts build/test_probe_acts.safetensors --tensor key --head 1 --layers 1 --components 3 --out build/test_probe_pcak", out, sizeof out);
    t_result(rc == 0, "pca: one kv head of the keys", "exit %d", rc);
    /* bad input */
    rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --label step --positions 0-1 --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "at least two latent slots"), "errors: probe step with one latent slot", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --label field:kind --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "needs --questions"), "errors: field label without questions", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi pca --acts tests/data/probe_fixtures.txt --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "probe_fixtures.txt"), "errors: pca of a file that is not a dataset", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi pca --acts build/test_probe_acts.safetensors --tensor value --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "no tensor 'value'") && strstr(out, "--kv"), "errors: pca of an absent tensor", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi pca --acts build/test_probe_acts.safetensors --layers 7 --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 2 && strstr(out, "outside 0..2"), "errors: pca layer out of range", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi probe train --acts build/test_probe_one_class.safetensors --label correct --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "1 class(es) occur"), "errors: a label with one class", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi pca --acts build/test_probe_empty.safetensors --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "no finished rows"), "errors: empty dataset", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi probe train --acts build/test_probe_rank.safetensors --label correct --out build/test_probe_bad", out, sizeof out);
    t_result(rc == 1 && strstr(out, "tensor \"resid\" has 3 dimensions, not 4"), "errors: mismatched shapes", "exit %d: %.120s", rc, out);
    rc = run_cmd("build/codi probe apply --probes build/test_probe_pca/pca.safetensors --acts build/test_probe_acts.safetensors", out, sizeof out);
    t_result(rc == 1 && strstr(out, "metadata"), "errors: probe apply on a PCA file", "exit %d: %.120s", rc, out);
    {   /* --labels files with errors: each named with its line */
        static const char *const bad_files[3][2] = {
            { "0,latent 1,a\n1,latent9,b\n", "build/test_probe_labels.csv:2: the dataset has no slot 'latent9'" },
            { "3,latent2,a\n3,*,b\n", "build/test_probe_labels.csv:2: question 3, latent 2 is labelled twice (a, b)" },
            { "question_index,position,label\n0,bot,a\nx,bot,b\n", "build/test_probe_labels.csv:3: question index 'x' is not an integer" } };
        int k;
        for (k = 0; k < 3; k++) {
            FILE *lf = fopen("build/test_probe_labels.csv", "w");
            if (lf) { fputs(bad_files[k][0], lf); fclose(lf); }
            rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --labels build/test_probe_labels.csv --out build/test_probe_bad", out, sizeof out);
            t_result(rc == 1 && strstr(out, bad_files[k][1]), "errors: a bad --labels file names the line", "exit %d: %.160s", rc, out);
        }
        rc = run_cmd("build/codi probe train --acts build/test_probe_acts.safetensors --labels build/test_probe_labels.csv --label correct --out build/test_probe_bad", out, sizeof out);
        t_result(rc == 2 && strstr(out, "one of --label or --labels"), "errors: --label and --labels together", "exit %d: %.120s", rc, out);
    }
}

/* ---- end to end on codi-nano: a dataset written by codi record (bf16, with K/V) ---- */
enum { NQ = 40 };

static void check_nano(void) {
    static char out[1 << 16];
    int rc;
    if (access("build/codi", X_OK) || access("models/codi-nano/codi_nano.bin", R_OK)) { t_skip("codi-nano end to end", "build/codi or codi-nano missing"); return; }
    /* a label field per question: the gold answer's size in three classes */
    rc = run_cmd("build/codi record --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --limit 40 --dtype bf16 --kv "
                 "--overwrite --out build/test_probe_nano.safetensors", out, sizeof out);
    if (rc) { t_result(0, "codi-nano: codi record", "exit %d: %s", rc, out); return; }
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --label parity --layers 6 --test-frac 0.25 --out build/test_probe_nano_par", out, sizeof out);
    {
        double auc = 0;
        const char *p = strstr(out, "\n6 ");
        if (p) sscanf(p + 3, "%lf", &auc);
        t_result(rc == 0 && auc > 0.8, "codi-nano: odd vs even latent steps, last layer", "exit %d, held-out AUC %.3f (> 0.8)", rc, auc);
    }
    {
        FILE *f = fopen("build/test_probe_nano_q.jsonl", "w");
        codi_safetensors_file *sf = codi_safetensors_open("build/test_probe_nano.safetensors", out, sizeof out);
        float gold[NQ];
        int q;
        if (f && sf && codi_safetensors_read_f32(sf, "gold", gold, NQ, out, sizeof out) == NQ)
            for (q = 0; q < NQ; q++) fprintf(f, "{\"question\": \"q%d\", \"size\": \"%s\"}\n", q, gold[q] < 20 ? "small" : gold[q] < 60 ? "medium" : "large");
        if (f) fclose(f);
        codi_safetensors_close(sf);
    }
    /* the labels file is not the questions file the dataset was recorded from: refused unless --force */
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --label field:size --questions build/test_probe_nano_q.jsonl "
                 "--layers 3 --positions 6 --test-frac 0.4 --out build/test_probe_nano_size", out, sizeof out);
    t_result(rc == 1 && strstr(out, "is not the questions file") && strstr(out, "models/codi-nano/test.jsonl") && strstr(out, "--force"),
             "codi-nano: --questions other than the dataset's (content hash differs) is refused", "exit %d: %.200s", rc, out);
    /* 40 questions, 40% held out: class 'large' has too few rows on a side: refused with the counts */
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --label field:size --questions build/test_probe_nano_q.jsonl --force "
                 "--layers 3 --positions 6 --test-frac 0.4 --out build/test_probe_nano_size", out, sizeof out);
    {
        const char *m = strstr(out, "class 'large' has ");
        int ntr = -1, nte = -1;
        if (m) sscanf(m, "class 'large' has %d training and %d held-out rows", &ntr, &nte);
        t_result(rc == 1 && m && (ntr < 10 || nte < 10) && strstr(out, "--allow-small"),
                 "codi-nano: a class with fewer than 10 rows in a split is refused, naming the class and counts", "exit %d: %d training, %d held-out", rc, ntr, nte);
    }
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --label field:size --questions build/test_probe_nano_q.jsonl --force "
                 "--allow-small --layers 3 --positions 6 --test-frac 0.4 --out build/test_probe_nano_size", out, sizeof out);
    t_result(rc == 0 && strstr(out, "macro AUC") && strstr(out, "large") && strstr(out, "warning: resid.layer3.slot6: class"),
             "codi-nano: field label (3 classes, multinomial) with --force --allow-small: trained, with a warning", "exit %d", rc);
    if (rc) printf("# %s\n", out);
    {   /* per-row labels from a file: one label at latent 2, another at latent 4 (same classes), nothing elsewhere */
        FILE *f = fopen("build/test_probe_nano_rows.csv", "w");
        int q;
        if (f) {
            fprintf(f, "question_index,position,label\n# latent 2: parity of the question index; latent 4: parity of its half\n");
            for (q = 0; q < NQ; q++) fprintf(f, "%d,latent2,%s\n%d,latent 4,%s\n", q, q % 2 ? "odd" : "even", q, q / 2 % 2 ? "odd" : "even");
            fprintf(f, "999,latent2,odd\n");
            fclose(f);
        }
    }
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --labels build/test_probe_nano_rows.csv --layers 3 --test-frac 0.5 "
                 "--seed 3 --allow-small --out build/test_probe_nano_rows", out, sizeof out);
    {
        char err[256];
        codi_probe *p2 = codi_probe_load("build/test_probe_nano_rows/probes.safetensors", "resid.layer3.slot2", err, sizeof err);
        codi_probe *p4 = p2 ? codi_probe_load("build/test_probe_nano_rows/probes.safetensors", "resid.layer3.slot4", err, sizeof err) : NULL;
        codi_probe *p3 = p4 ? codi_probe_load("build/test_probe_nano_rows/probes.safetensors", "resid.layer3.slot3", err, sizeof err) : NULL;
        t_result(rc == 0 && p2 && p4 && !p3 && p2->n_classes == 2 && strstr(out, "even 40, odd 40") &&
                 strstr(out, "1 label line(s)") && strstr(out, "no labelled rows at (left out): bot, latent 1, latent 3, latent 5, latent 6"),
                 "codi-nano: --labels FILE: per-row labels (latent 2 and 4 only; a line of an absent question skipped)", "exit %d: %.300s", rc, out);
        codi_probe_free(p2); codi_probe_free(p4); codi_probe_free(p3);
    }
    rc = run_cmd("build/codi probe apply --probes build/test_probe_nano_rows/probes.safetensors --acts build/test_probe_nano.safetensors "
                 "--out build/test_probe_nano_rows.csv", out, sizeof out);
    {   /* whole-question splits: no question has rows on both sides; both sides reported */
        FILE *f = fopen("build/test_probe_nano_rows.csv", "r");
        char line[512], split[16];
        int side[NQ], q, n_train = 0, n_test = 0, mixed = 0, rows = 0;
        for (q = 0; q < NQ; q++) side[q] = -1;
        while (f && fgets(line, sizeof line, f)) {
            char *c = strrchr(line, ',');
            int s1;
            if (!c || sscanf(line, "%*[^,],%d", &q) != 1 || q < 0 || q >= NQ || sscanf(c + 1, "%15s", split) != 1) continue;
            s1 = !strcmp(split, "held-out") ? 1 : !strcmp(split, "train") ? 0 : 2;
            if (side[q] >= 0 && side[q] != s1) mixed++;
            side[q] = s1; rows++;
        }
        if (f) fclose(f);
        for (q = 0; q < NQ; q++) { n_train += side[q] == 0; n_test += side[q] == 1; }
        t_result(rc == 0 && rows == NQ * 2 && !mixed && n_train > 5 && n_test > 5 && strstr(out, " train ") && strstr(out, " held-out "),
                 "codi-nano: probe apply: every row of a question on one side; training and held-out rows reported apart",
                 "exit %d, %d rows, %d questions train, %d held-out, %d mixed", rc, rows, n_train, n_test, mixed);
    }
    if (system("cp build/test_probe_nano.safetensors build/test_probe_nano_copy.safetensors") == 0) {
        rc = run_cmd("build/codi probe apply --probes build/test_probe_nano_rows/probes.safetensors --acts build/test_probe_nano_copy.safetensors",
                     out, sizeof out);
        t_result(rc == 0 && strstr(out, "every row is new") && strstr(out, " new ") && !strstr(out, " held-out "),
                 "codi-nano: probe apply on another dataset file: every row is new", "exit %d", rc);
    }
    /* codi-nano's latents never show the final answer as their top token: one class, a clear error */
    rc = run_cmd("build/codi probe train --acts build/test_probe_nano.safetensors --label answer-token --model models/codi-nano/codi_nano.bin "
                 "--layers 6 --test-frac 0.4 --out build/test_probe_nano_ans", out, sizeof out);
    t_result(rc == 1 && strstr(out, "label answer-token: intermediate") && strstr(out, "1 class(es) occur"), "codi-nano: answer-token labels from the lens",
             "exit %d: %s", rc, strstr(out, "label answer-token:") ? strstr(out, "label answer-token:") : out);
    rc = run_cmd("build/codi pca --acts build/test_probe_nano.safetensors --tensor final --positions 1-6 --components 3 "
                 "--model models/codi-nano/codi_nano.bin --top 4 --out build/test_probe_nano_pca", out, sizeof out);
    t_result(rc == 0 && strstr(out, "final.layer0 PC1 +3.0sd:") && strstr(out, "final.layer0 PC1 -3.0sd:"), "codi-nano: lens over components", "exit %d", rc);
    if (rc) printf("# %s\n", out);
    rc = run_cmd("build/codi pca --acts build/test_probe_nano.safetensors --layers 3 --positions 1-6 --components 2 --steer-components 1 "
                 "--steer-sd 2 --out build/test_probe_nano_steer", out, sizeof out);
    {   /* the component-steering specs load as steering specs (>>steer) */
        char err[256] = "";
        codi_load_opts lo = codi_load_opts_default();
        codi_model *m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err);
        codi_steer *a = m ? codi_steer_load(m, "build/test_probe_nano_steer/steer_resid.layer3.pc1.+2sd.json", err, sizeof err) : NULL;
        codi_steer *b = a ? codi_steer_load(m, "build/test_probe_nano_steer/steer_resid.layer3.pc1.random+2sd.json", err, sizeof err) : NULL;
        t_result(rc == 0 && a && b, "codi-nano: component steering specs load (PC1 +2 sd and its random control)", err[0] ? "%s" : NULL, err);
        codi_steer_free(a); codi_steer_free(b); codi_model_free(m);
    }
}

int main(void) {
    if (fx_load("tests/data/probe_fixtures.txt")) { printf("# tests/data/probe_fixtures.txt missing\n"); t_result(0, "fixtures", "missing"); return t_summary(); }
    check_sklearn("bin", 2);
    check_sklearn("multi", 3);
    check_auc();
    check_eigen();
    check_pca();
    check_planted();
    check_errors();
    check_lens_direction();
    check_file_errors();
    check_commands();
    check_nano();
    return t_summary();
}
