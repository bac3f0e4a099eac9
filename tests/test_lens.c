/* Lenses: the distribution helpers against direct formulas, the logit lens against Hugging
   Face (golden_tiny's latent_lens_logits), the tuned lens (zero translators = logit lens
   exactly; analytic gradient vs central finite differences; gradients, losses and weights of 5
   full-batch Adam steps against PyTorch in golden_tuned_lens_tiny; both training recipes lower
   held-out KL on every layer of codi_tiny). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define TINY "tests/data/codi_tiny.bin"
#define GOLD_TL "tests/data/golden_tuned_lens_tiny.safetensors"
#define NPOS 184
#define L 4
#define D 256
#define V 515

static void test_distributions(void) {
    float lg[6] = { 1.0f, 3.0f, -2.0f, 3.0f, 0.5f, -1.0f }, pr[6], lp[6], q[6] = { 0, 1, 2, 3, 4, 5 };
    int32_t ids[6];
    float probs[6], p;
    double z = 0, h = 0, kl = 0, lse;
    int i, k, ok;
    for (i = 0; i < 6; i++) z += exp((double)lg[i]);
    lse = codi_log_softmax(lg, 6, lp);
    codi_softmax(lg, 6, pr);
    ok = fabs(lse - log(z)) < 1e-12;
    for (i = 0; i < 6; i++) {
        double pi = exp((double)lg[i]) / z;
        ok &= fabs(pr[i] - pi) < 1e-7 && fabs(lp[i] - log(pi)) < 1e-6;
        h -= pi * log(pi);
        kl += pi * (log(pi) - (q[i] - log(exp(0.) + exp(1.) + exp(2.) + exp(3.) + exp(4.) + exp(5.))));
    }
    t_result(ok, "softmax / log-softmax match exp(x)/sum", NULL);
    t_result(fabs(codi_entropy(lg, 6) - h) < 1e-9, "entropy = -sum p log p", "%.9f vs %.9f", codi_entropy(lg, 6), h);
    t_result(fabs(codi_kl(lg, q, 6) - kl) < 1e-9, "KL(p||q) = sum p (log p - log q)", "%.9f vs %.9f", codi_kl(lg, q, 6), kl);
    k = codi_top_k(lg, 6, 4, ids, probs);
    t_result(k == 4 && ids[0] == 1 && ids[1] == 3 && ids[2] == 0 && ids[3] == 4 && fabs(probs[0] - pr[1]) < 1e-7,
             "top-k: descending, ties by lower id", "%d %d %d %d", ids[0], ids[1], ids[2], ids[3]);
    t_result(codi_top_k(lg, 6, 10, ids, NULL) == 6 && ids[5] == 2, "top-k with k > n returns n", NULL);
    t_result(codi_rank_of(lg, 6, 3, &p) == 1 && codi_rank_of(lg, 6, 2, NULL) == 5 && fabs(p - pr[3]) < 1e-7 &&
             codi_rank_of(lg, 6, 6, NULL) == -1, "rank_of agrees with top-k order; bad id -> -1", NULL);
}

/* Held-out data: the golden's residuals (layers 0..3) and final logits as samples. */
typedef struct { const float *resid, *final_logits; } gold_samples;
static int gold_sample(void *user, long i, float *resid, float *target) {
    gold_samples *g = (gold_samples *)user;
    memcpy(resid, g->resid + (size_t)i * L * D, sizeof(float) * L * D);
    memset(resid + L * D, 0, sizeof(float) * D);
    memcpy(target, g->final_logits + (size_t)i * V, sizeof(float) * V);
    return 1;
}

static void test_logit_lens(codi_model *m) {
    t_golden g;
    codi_state *s;
    codi_tuned_lens *t = codi_tuned_lens_new(m);
    const int32_t *ids;
    const float *ref;
    float a[V], b[V], c[V];
    char err[256];
    int k, l, same = 1;
    double e = 0;
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) { t_result(0, "open golden_tiny", NULL); return; }
    ids = t_gi(&g, "prompt_ids", NULL);
    ref = t_gf(&g, "f32.latent_lens_logits", NULL);
    s = codi_state_alloc(m, 64, 1);
    {
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        ro.max_answer = 1;
        if (!s || codi_run_latents(m, s, ids, 24, &ro, &rr)) { t_result(0, "run codi_tiny", "%s", s ? s->error : "oom"); goto done; }
    }
    for (k = 0; k < 7; k++)
        for (l = 0; l <= L; l++) {
            const float *h = codi_state_resid(s, l, 23 + k);
            double d;
            codi_lens_logits(m, h, a);
            codi_tuned_lens_logits(m, t, l, h, b, err, sizeof err);
            codi_tuned_lens_logits(m, NULL, l, h, c, err, sizeof err);
            same &= !memcmp(a, b, sizeof a) && !memcmp(a, c, sizeof a);
            d = t_max_abs(a, ref + ((size_t)k * (L + 1) + l) * V, V);
            if (d > e) e = d;
        }
    t_result(e <= 1e-3, "logit lens = HF lm_head(norm(resid_l)) at bot + 6 latents x 5 layers", "max |diff| %.3g (tol 1e-3)", e);
    t_result(same, "zero translators reproduce the logit lens bit for bit (35 residuals)", NULL);
    t->n_layers = 3;
    t_result(codi_tuned_lens_logits(m, t, 0, codi_state_resid(s, 0, 0), a, err, sizeof err) == -1 && strstr(err, "layers"),
             "a lens of another shape is refused", "%s", err);
    t->n_layers = L;
done:
    codi_state_free(s);
    codi_tuned_lens_free(t);
    t_golden_close(&g);
}

static void test_gradient(codi_model *m, const float *resid, const float *final_logits) {
    codi_tuned_lens *t = codi_tuned_lens_new(m);
    float *gw = (float *)malloc(sizeof(float) * D * D), gb[D], h[8 * D], tg[8 * V];
    unsigned s = 12345u;
    int i, j, l = 1, worst_ok = 1, n = 8, probes[6][2] = { { 0, 0 }, { 3, 7 }, { 100, 200 }, { 255, 1 }, { 17, 17 }, { 64, 250 } };
    double worst = 0;
    for (i = 0; i < n; i++) {
        memcpy(h + i * D, resid + ((size_t)(20 * i) * L + l) * D, sizeof(float) * D);
        memcpy(tg + i * V, final_logits + (size_t)(20 * i) * V, sizeof(float) * V);
    }
    for (i = 0; i < D * D; i++) { s = s * 1664525u + 1013904223u; t->weight[(size_t)l * D * D + i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.02f; }
    for (i = 0; i < D; i++) t->bias[l * D + i] = 0.01f * (float)sin(i);
    codi_tuned_lens_kl_grad(m, t, l, n, h, tg, gw, gb);
    for (j = 0; j < 7; j++) {                    /* six weights and one bias, central differences in f32 */
        float *p = j < 6 ? &t->weight[(size_t)l * D * D + probes[j][0] * D + probes[j][1]] : &t->bias[l * D + 5];
        float g = j < 6 ? gw[probes[j][0] * D + probes[j][1]] : gb[5], keep = *p, eps = 1e-2f;
        double up, dn, fd, rel;
        *p = keep + eps; up = codi_tuned_lens_kl_grad(m, t, l, n, h, tg, NULL, NULL);
        *p = keep - eps; dn = codi_tuned_lens_kl_grad(m, t, l, n, h, tg, NULL, NULL);
        *p = keep;
        fd = (up - dn) / (2.0 * eps);
        rel = fabs(fd - g) / (fabs(g) + 1e-6);
        if (rel > worst) worst = rel;
        worst_ok &= rel < 2e-2;
    }
    t_result(worst_ok, "analytic gradient = central finite differences (6 weights + 1 bias, layer 1)", "worst rel diff %.2g (tol 2e-2)", worst);
    free(gw);
    codi_tuned_lens_free(t);
}

static void test_golden_adam(codi_model *m, t_golden *g) {
    const float *resid = t_gf(g, "resid", NULL), *fl = t_gf(g, "final_logits", NULL), *klref = t_gf(g, "kl_by_step_layer", NULL);
    codi_tuned_lens *t = codi_tuned_lens_new(m);
    gold_samples gs;
    codi_lens_train_opts o = codi_lens_train_sprint(NPOS);
    codi_lens_trainer *tr;
    float *h = (float *)malloc(sizeof(float) * NPOS * D), *gw = (float *)malloc(sizeof(float) * D * D), gb[D];
    double loss[L], kl[L], worst_kl = 0, worst_gw = 0, worst_gb = 0, worst_w = 0, worst_b = 0;
    char err[256], name[64];
    int l, i, step, ok = 1;
    gs.resid = resid; gs.final_logits = fl;
    for (l = 0; l < L; l++) {                    /* gradients at step 0 */
        double loss0;
        for (i = 0; i < NPOS; i++) memcpy(h + i * D, resid + ((size_t)i * L + l) * D, sizeof(float) * D);
        loss0 = codi_tuned_lens_kl_grad(m, t, l, NPOS, h, fl, gw, gb);
        snprintf(name, sizeof name, "grad0.%d.weight", l);
        if (t_rel_l2(gw, t_gf(g, name, NULL), D * D) > worst_gw) worst_gw = t_rel_l2(gw, t_gf(g, name, NULL), D * D);
        snprintf(name, sizeof name, "grad0.%d.bias", l);
        if (t_rel_l2(gb, t_gf(g, name, NULL), D) > worst_gb) worst_gb = t_rel_l2(gb, t_gf(g, name, NULL), D);
        if (fabs(loss0 / klref[l] - 1) > worst_kl) worst_kl = fabs(loss0 / klref[l] - 1);
    }
    t_result(worst_gw <= 1e-4 && worst_gb <= 1e-4, "gradients at step 0 = PyTorch (4 layers)", "worst rel L2: weight %.2g, bias %.2g (tol 1e-4)", worst_gw, worst_gb);
    o.batch = NPOS; o.total_steps = 5; o.n_threads = 2;
    tr = codi_lens_trainer_new(m, t, &o, NPOS, gold_sample, &gs, err, sizeof err);
    if (!tr) { t_result(0, "trainer", "%s", err); goto done; }
    for (step = 0; step < 5; step++) {
        if (codi_lens_trainer_step(tr, loss)) { t_result(0, "Adam step", "%s", codi_lens_trainer_error(tr)); ok = 0; break; }
        for (l = 0; l < L; l++) { double r = fabs(loss[l] / klref[step * L + l] - 1); if (r > worst_kl) worst_kl = r; }
    }
    if (ok && codi_tuned_lens_eval(m, t, gold_sample, &gs, 0, NPOS, 2, kl, err, sizeof err) == 0)
        for (l = 0; l < L; l++) { double r = fabs(kl[l] / klref[5 * L + l] - 1); if (r > worst_kl) worst_kl = r; }
    t_result(ok && worst_kl <= 1e-5, "KL per layer before each of 5 full-batch Adam steps and after = PyTorch", "worst rel %.2g (tol 1e-5)", worst_kl);
    for (l = 0; l < L; l++) {
        double e;
        snprintf(name, sizeof name, "step5.%d.weight", l);
        e = t_rel_l2(t->weight + (size_t)l * D * D, t_gf(g, name, NULL), D * D); if (e > worst_w) worst_w = e;
        snprintf(name, sizeof name, "step5.%d.bias", l);
        e = t_rel_l2(t->bias + l * D, t_gf(g, name, NULL), D); if (e > worst_b) worst_b = e;
    }
    t_result(worst_w <= 1e-4 && worst_b <= 1e-4, "translators after 5 Adam steps = PyTorch", "worst rel L2: weight %.2g, bias %.2g (tol 1e-4)", worst_w, worst_b);
    codi_lens_trainer_free(tr);
done:
    free(h); free(gw);
    codi_tuned_lens_free(t);
}

/* Both recipes on the first 128 golden positions; held-out KL on the last 56 must drop on every layer. */
static void test_training_lowers_kl(codi_model *m, t_golden *g) {
    gold_samples gs;
    int recipe;
    gs.resid = t_gf(g, "resid", NULL); gs.final_logits = t_gf(g, "final_logits", NULL);
    for (recipe = 0; recipe < 2; recipe++) {
        codi_tuned_lens *t = codi_tuned_lens_new(m);
        codi_lens_train_opts o = recipe == 0 ? codi_lens_train_library(60, 32) : codi_lens_train_sprint(128);
        codi_lens_trainer *tr;
        double before[L], after[L];
        char err[256];
        int l, ok = 1;
        long s;
        o.n_threads = 2;
        if (recipe == 1) o.total_steps = 128;            /* one epoch keeps the test short */
        tr = codi_lens_trainer_new(m, t, &o, 128, gold_sample, &gs, err, sizeof err);
        if (!tr || codi_tuned_lens_eval(m, t, gold_sample, &gs, 128, NPOS - 128, 2, before, err, sizeof err)) { t_result(0, "trainer", "%s", err); continue; }
        for (s = 0; s < o.total_steps && ok; s++) ok = codi_lens_trainer_step(tr, NULL) == 0;
        ok = ok && codi_tuned_lens_eval(m, t, gold_sample, &gs, 128, NPOS - 128, 2, after, err, sizeof err) == 0;
        for (l = 0; l < L; l++) ok &= after[l] < before[l];
        t_result(ok, recipe == 0 ? "library recipe (SGD Nesterov, 60 steps of 32) lowers held-out KL on every layer"
                                 : "sprint recipe (Adam, batch 1, one epoch) lowers held-out KL on every layer",
                 "KL before -> after: %.3f->%.3f %.3f->%.3f %.3f->%.3f %.3f->%.3f", before[0], after[0], before[1], after[1],
                 before[2], after[2], before[3], after[3]);
        codi_lens_trainer_free(tr);
        codi_tuned_lens_free(t);
    }
}

int main(void) {
    codi_model *m;
    t_golden g;
    test_distributions();
    if (!(m = t_load(TINY, 1))) { t_result(0, "load codi_tiny", NULL); return t_summary(); }
    test_logit_lens(m);
    if (t_golden_open(&g, GOLD_TL)) { t_result(0, "open " GOLD_TL, NULL); codi_model_free(m); return t_summary(); }
    test_gradient(m, t_gf(&g, "resid", NULL), t_gf(&g, "final_logits", NULL));
    test_golden_adam(m, &g);
    test_training_lowers_kl(m, &g);
    t_golden_close(&g);
    codi_model_free(m);
    return t_summary();
}
