/* Lenses: the distribution helpers against direct formulas, the logit lens against Hugging
   Face (golden_tiny's latent_lens_logits), the tuned lens (zero translators = logit lens
   exactly; analytic gradient vs central finite differences; gradients, losses and weights of 5
   full-batch Adam steps against PyTorch in golden_tuned_lens_tiny; both training recipes lower
   held-out KL on every layer of codi_tiny), tuned-lens files both ways with PyTorch, and
   activation datasets (a run stopped and resumed writes the same bytes; numpy reads them). */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"
#include "../tools/svg.h"
#include <sys/wait.h>

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

/* tools/svg.h, which the commands share: a scatter and a line plot are whole SVG documents with
   one mark per finite point, escaped text, and the axis range of the data. */
static void test_svg(void) {
    double x[5] = { 0, 1, 2, 3, NAN }, y[5] = { 1, 4, 9, 16, 2 };
    int group[5] = { 0, 1, 0, 1, 0 };
    const char *names[2] = { "a<b", "c&d" };
    svg_scatter_spec sc;
    svg_lines_spec ln;
    size_t n;
    char *text;
    int circles = 0;
    const char *p;
    memset(&sc, 0, sizeof sc);
    sc.n = 5; sc.x = x; sc.y = y; sc.group = group; sc.group_names = names; sc.n_groups = 2; sc.title = "t";
    text = svg_scatter("build/test_svg_scatter.svg", &sc) == 0 ? (char *)t_slurp("build/test_svg_scatter.svg", &n) : NULL;
    for (p = text; p && (p = strstr(p, "<circle")) != NULL; p++) circles++;
    t_result(text && !strncmp(text, "<svg", 4) && strstr(text, "</svg>") && circles == 4 + 2 && strstr(text, "a&lt;b") && strstr(text, "c&amp;d") &&
             strstr(text, ">16<"), "svg_scatter: 4 finite points + 2 legend marks, escaped names, y axis up to 16", "%d circles", circles);
    free(text);
    memset(&ln, 0, sizeof ln);
    ln.n_series = 1; ln.n_points = 4; ln.x = x; ln.y = y; ln.names = names;
    text = svg_lines("build/test_svg_lines.svg", &ln) == 0 ? (char *)t_slurp("build/test_svg_lines.svg", &n) : NULL;
    t_result(text && strstr(text, "<path") && strstr(text, "M") && strstr(text, "</svg>"), "svg_lines: one path per series", NULL);
    free(text);
}

/* Number tokens with codi-nano's Llama-3-structured tokenizer (0..200 are single tokens). */
static void test_number_tokens(void) {
    char err[256];
    codi_tokenizer *t = codi_tokenizer_load("models/codi-nano/tokenizer.json", err, sizeof err);
    int32_t ids[2], enc[8];
    int n24, n1234, n360, ne;
    if (!t) { t_result(0, "load codi-nano tokenizer", "%s", err); return; }
    n24 = codi_number_tokens(t, 24, ids);
    t_result(n24 >= 1 && ids[0] == codi_token_id(t, "24", 2), "24 counts as the token \"24\"", "%d ids", n24);
    n1234 = codi_number_tokens(t, 1234, ids);
    t_result(n1234 >= 1 && ids[0] == codi_token_id(t, "123", 3), "1234 counts by its leading group \"123\"", NULL);
    n360 = codi_number_tokens(t, 360, ids);
    ne = codi_encode(t, "360", 3, 0, 0, enc, 8);
    t_result(n360 >= 1 && ne >= 1 && ids[0] == enc[0], "360 (not one token here) counts by the first token of its encoding", "%d tokens", ne);
    t_result(codi_number_tokens(t, -5, ids) == -1 && codi_number_tokens(t, 2.5, ids) == -1 && codi_number_tokens(t, NAN, ids) == -1,
             "negative, fractional and NaN numbers are refused", NULL);
    codi_tokenizer_free(t);
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
    s = codi_state_new(m, 64, 1);
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
        codi_lens_train_opts o = recipe == 0 ? codi_lens_train_library(30, 32) : codi_lens_train_sprint(128);
        codi_lens_trainer *tr;
        double before[L], after[L];
        char err[256];
        int l, ok = 1;
        long s;
        o.n_threads = 2;
        if (recipe == 1) o.total_steps = 64;             /* half an epoch keeps the test short */
        tr = codi_lens_trainer_new(m, t, &o, 128, gold_sample, &gs, err, sizeof err);
        if (!tr || codi_tuned_lens_eval(m, t, gold_sample, &gs, 128, NPOS - 128, 2, before, err, sizeof err)) { t_result(0, "trainer", "%s", err); continue; }
        for (s = 0; s < o.total_steps && ok; s++) ok = codi_lens_trainer_step(tr, NULL) == 0;
        ok = ok && codi_tuned_lens_eval(m, t, gold_sample, &gs, 128, NPOS - 128, 2, after, err, sizeof err) == 0;
        for (l = 0; l < L; l++) ok &= after[l] < before[l];
        if (recipe == 0) {                               /* per sample: their mean is the mean KL, each one finite and >= 0 */
            double each[(NPOS - 128) * L], worst = 0;
            int i, good = codi_tuned_lens_eval_each(m, t, gold_sample, &gs, 128, NPOS - 128, 2, each, err, sizeof err) == 0;
            for (l = 0; good && l < L; l++) {
                double sum = 0;
                for (i = 0; i < NPOS - 128; i++) { sum += each[i * L + l]; good &= each[i * L + l] >= 0; }
                worst = fmax(worst, fabs(sum / (NPOS - 128) - after[l]));
            }
            t_result(good && worst < 1e-9, "codi_tuned_lens_eval_each: per-sample KL, their mean = codi_tuned_lens_eval", "max |mean diff| %.3g%s%s",
                     worst, good ? "" : "; ", good ? "" : err);
        }
        t_result(ok, recipe == 0 ? "library recipe (SGD Nesterov, 30 steps of 32) lowers held-out KL on every layer"
                                 : "sprint recipe (Adam, batch 1, 64 steps) lowers held-out KL on every layer",
                 "KL before -> after: %.3f->%.3f %.3f->%.3f %.3f->%.3f %.3f->%.3f", before[0], after[0], before[1], after[1],
                 before[2], after[2], before[3], after[3]);
        codi_lens_trainer_free(tr);
        codi_tuned_lens_free(t);
    }
}


/* tools/check_lens_files.py through python3 (or /usr/bin/python3 when that one lacks the
   module); 77 = neither has it. */
static int t_python(const char *args) {
    const char *py[2] = { "python3", "/usr/bin/python3" };
    char cmd[2048];
    int i, rc = 77;
    for (i = 0; i < 2 && rc == 77; i++) {
        int st;
        snprintf(cmd, sizeof cmd, "%s tools/check_lens_files.py %s 2>&1", py[i], args);
        st = system(cmd);
        rc = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        if (rc == 127) rc = 77;
    }
    return rc;
}

static void test_lens_files(codi_model *m) {
    codi_tuned_lens *t = codi_tuned_lens_new(m), *u;
    char err[256];
    int i, rc;
    for (i = 0; i < L * D * D; i++) t->weight[i] = (float)(sin((double)i) / 8);
    for (i = 0; i < L * D; i++) t->bias[i] = (float)(cos((double)i) / 8);
    rc = system("mkdir -p build/test_lens_dir");
    if (rc != 0 || codi_tuned_lens_save_dir(t, "build/test_lens_dir", "codi_tiny", err, sizeof err)) { t_result(0, "save lens dir", "%s", err); goto done; }
    u = codi_tuned_lens_load(m, "build/test_lens_dir", err, sizeof err);
    t_result(u && !memcmp(u->weight, t->weight, sizeof(float) * L * D * D) && !memcmp(u->bias, t->bias, sizeof(float) * L * D),
             "tuned-lens directory (params.pt + config.json) round trip is exact", "%s", u ? "" : err);
    codi_tuned_lens_free(u);
    if (codi_tuned_lens_save(t, "build/test_lens.safetensors", "codi_tiny", err, sizeof err) == 0 &&
        (u = codi_tuned_lens_load(m, "build/test_lens.safetensors", err, sizeof err)) != NULL) {
        t_result(!memcmp(u->weight, t->weight, sizeof(float) * L * D * D) && !memcmp(u->bias, t->bias, sizeof(float) * L * D),
                 "tuned lens .safetensors round trip is exact", NULL);
        codi_tuned_lens_free(u);
    } else t_result(0, "tuned lens .safetensors round trip", "%s", err);
    rc = t_python("torch build/test_lens_dir build/test_lens_torch.pt");
    if (rc == 77) t_skip("PyTorch reads our params.pt and we read torch.save's", "no python3 with torch");
    else {
        int ok = rc == 0 && (u = codi_tuned_lens_load(m, "build/test_lens_torch.pt", err, sizeof err)) != NULL;
        double e = 0;
        for (i = 0; ok && i < L * D * D; i++) { double d = fabs(u->weight[i] - cos((double)i) / 8); if (d > e) e = d; }
        for (i = 0; ok && i < L * D; i++) { double d = fabs(u->bias[i] - sin((double)i) / 8); if (d > e) e = d; }
        t_result(ok && e < 1e-6, "PyTorch reads our params.pt (weights_only) and we read torch.save's", "max |diff| %.2g%s%s", e, ok ? "" : " ", ok ? "" : err);
        if (ok) codi_tuned_lens_free(u);
    }
    t->n_layers = 2;                                  /* a lens for a 2-layer model */
    rc = codi_tuned_lens_save_dir(t, "build/test_lens_dir", "other", err, sizeof err);
    u = rc ? NULL : codi_tuned_lens_load(m, "build/test_lens_dir", err, sizeof err);
    t_result(!rc && !u && strstr(err, "layers"), "a lens directory for another model is refused", "%s", err);
    t->n_layers = L;
done:
    codi_tuned_lens_free(t);
}

/* Records 3 questions (bot + 6 latents), stopping after rows 0 and 2 and resuming for row 1:
   the bytes equal an uninterrupted recording. */
static int record_rows(codi_model *m, const char *path, const int *rows, int n, int resume, int bf16, double *sums, char *err) {
    static const int32_t q[3][6] = { { 10, 20, 30, 40, 50, 60 }, { 7, 8, 9, 10, 11, 12 }, { 100, 200, 300, 400, 450, 500 } };
    codi_acts_spec sp;
    codi_acts *a;
    codi_state *s = codi_state_new(m, 32, 1);
    float resid[7 * (L + 1) * D], fin[7 * D], lat[7 * D], key[7 * L * 2 * 32], val[7 * L * 2 * 32];
    int32_t ids[16], pos[7];
    int i, k, rc = 0;
    memset(&sp, 0, sizeof sp);
    sp.n_questions = 3; sp.n_positions = 7; sp.n_latent = 6; sp.max_prompt = 9; sp.max_answer = 4; sp.bf16 = bf16; sp.kv = 1;
    sp.model = "codi_tiny"; sp.questions = "synthetic"; sp.positions = "latents"; sp.recipe = "0"; sp.command = "test_lens";
    sp.labels_json = "[\"bot\",\"latent 1\",\"latent 2\",\"latent 3\",\"latent 4\",\"latent 5\",\"latent 6\"]";
    if (!s || !(a = codi_acts_open(m, path, &sp, resume, err, 256))) { codi_state_free(s); return -1; }
    for (i = 0; i < n && !rc; i++) {
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        codi_acts_row row;
        int r = rows[i], np = 8;
        ids[0] = 1; memcpy(ids + 1, q[r], sizeof q[r]); ids[7] = m->config.bot_id;   /* bos q bot */
        if (codi_acts_done(a, r)) continue;
        ro.max_answer = 4; ro.latents = lat;
        if (codi_run(m, s, ids, np, &ro, &rr)) { snprintf(err, 256, "%s", s->error); rc = -1; break; }
        for (k = 0; k < 7; k++) pos[k] = np - 1 + k;
        codi_acts_gather(m, s, pos, 7, resid, fin, key, val);
        memset(&row, 0, sizeof row);
        row.resid = resid; row.final = fin; row.latent_inputs = lat; row.key = key; row.value = val; row.positions = pos;
        row.prompt_ids = ids; row.n_prompt = np; row.answer_ids = rr.answer; row.n_answer = rr.n_answer;
        row.gold = r == 1 ? NAN : 42; row.prediction = 41; row.correct = 0; row.question_index = r;
        if (sums) { double sum = 0; for (k = 0; k < 7 * (L + 1) * D; k++) sum += bf16 ? codi__bf16_to_f32(codi__f32_to_bf16(resid[k])) : resid[k]; sums[r] = sum; }
        rc = codi_acts_write(a, r, &row, err, 256);
    }
    if (codi_acts_close(a, err, 256)) rc = -1;
    codi_state_free(s);
    return rc;
}

static void test_acts(codi_model *m) {
    static const int all[3] = { 0, 1, 2 }, part[2] = { 0, 2 };
    char err[256] = "", args[512];
    double sums[3];
    size_t na = 0, nb = 0;
    unsigned char *a, *b;
    int rc;
    if (record_rows(m, "build/test_acts_full.safetensors", all, 3, 0, 0, sums, err) ||
        record_rows(m, "build/test_acts_resumed.safetensors", part, 2, 0, 0, NULL, err) ||
        record_rows(m, "build/test_acts_resumed.safetensors", all, 3, 1, 0, NULL, err)) {
        t_result(0, "record activations", "%s", err); return;
    }
    a = t_slurp("build/test_acts_full.safetensors", &na);
    b = t_slurp("build/test_acts_resumed.safetensors", &nb);
    t_result(a && b && na == nb && !memcmp(a, b, na), "recording stopped after 2 of 3 rows and resumed = uninterrupted, byte for byte", "%lu bytes", (unsigned long)na);
    free(a); free(b);
    rc = record_rows(m, "build/test_acts_resumed.safetensors", all, 3, 1, 1, NULL, err);
    t_result(rc == -1 && strstr(err, "dtype"), "resuming with other settings (bf16) is refused", "%s", err);
    snprintf(args, sizeof args, "acts build/test_acts_full.safetensors 3 %d %d %.9g %.9g %.9g", L, D, sums[0], sums[1], sums[2]);
    rc = t_python(args);
    if (rc == 77) t_skip("numpy reads the activation dataset", "no python3 with numpy");
    else t_result(rc == 0, "numpy reads the activation dataset (layout, metadata, values)", NULL);
    if (record_rows(m, "build/test_acts_bf16.safetensors", all, 3, 0, 1, sums, err)) { t_result(0, "record a bf16 dataset", "%s", err); return; }
    snprintf(args, sizeof args, "acts build/test_acts_bf16.safetensors 3 %d %d %.9g %.9g %.9g", L, D, sums[0], sums[1], sums[2]);
    if ((rc = t_python(args)) == 77) t_skip("numpy reads a bf16 activation dataset", "no python3 with numpy");
    else t_result(rc == 0, "numpy reads a bf16 activation dataset", NULL);
}

/* 3 steps, checkpoint, a new trainer resumes for 3 more = 6 steps straight, bit for bit (with
   another thread count, which must not change any sum). */
static void test_resume(codi_model *m, t_golden *g) {
    gold_samples gs;
    codi_tuned_lens *a = codi_tuned_lens_new(m), *b = codi_tuned_lens_new(m);
    codi_lens_train_opts o = codi_lens_train_library(6, 16);
    codi_lens_trainer *ta, *tb;
    char err[256] = "";
    int i, ok = 1;
    gs.resid = t_gf(g, "resid", NULL); gs.final_logits = t_gf(g, "final_logits", NULL);
    o.n_threads = 1;
    ta = codi_lens_trainer_new(m, a, &o, NPOS, gold_sample, &gs, err, sizeof err);
    o.n_threads = 3;
    tb = codi_lens_trainer_new(m, b, &o, NPOS, gold_sample, &gs, err, sizeof err);
    for (i = 0; ok && i < 6; i++) ok = ta && codi_lens_trainer_step(ta, NULL) == 0;
    for (i = 0; ok && i < 3; i++) ok = tb && codi_lens_trainer_step(tb, NULL) == 0;
    ok = ok && codi_lens_trainer_save(tb, "build/test_lens_ckpt.safetensors", err, sizeof err) == 0;
    codi_lens_trainer_free(tb);
    memset(b->weight, 0, sizeof(float) * L * D * D);
    tb = codi_lens_trainer_new(m, b, &o, NPOS, gold_sample, &gs, err, sizeof err);
    ok = ok && tb && codi_lens_trainer_resume(tb, "build/test_lens_ckpt.safetensors", err, sizeof err) == 0 &&
         codi_lens_trainer_steps_done(tb) == 3;
    for (i = 0; ok && i < 3; i++) ok = codi_lens_trainer_step(tb, NULL) == 0;
    t_result(ok && !memcmp(a->weight, b->weight, sizeof(float) * L * D * D) && !memcmp(a->bias, b->bias, sizeof(float) * L * D),
             "training 3 steps, checkpoint, resume, 3 steps (3 threads) = 6 steps straight (1 thread), bit for bit", "%s", err);
    codi_lens_trainer_free(tb);
    o.seed = 7;
    tb = codi_lens_trainer_new(m, b, &o, NPOS, gold_sample, &gs, err, sizeof err);
    t_result(tb && codi_lens_trainer_resume(tb, "build/test_lens_ckpt.safetensors", err, sizeof err) == -1 && strstr(err, "seed"),
             "resuming with another seed is refused", "%s", err);
    codi_lens_trainer_free(tb);
    o.seed = codi_lens_train_library(6, 16).seed;
    tb = codi_lens_trainer_new(m, b, &o, NPOS - 1, gold_sample, &gs, err, sizeof err);
    t_result(tb && codi_lens_trainer_resume(tb, "build/test_lens_ckpt.safetensors", err, sizeof err) == -1 && strstr(err, "n_samples"),
             "resuming over another sample count is refused", "%s", err);
    codi_lens_trainer_free(ta); codi_lens_trainer_free(tb);
    codi_tuned_lens_free(a); codi_tuned_lens_free(b);
}

int main(void) {
    codi_model *m;
    t_golden g;
    test_distributions();
    test_svg();
    test_number_tokens();
    if (!(m = t_load(TINY, 1))) { t_result(0, "load codi_tiny", NULL); return t_summary(); }
    test_logit_lens(m);
    test_lens_files(m);
    test_acts(m);
    if (t_golden_open(&g, GOLD_TL)) { t_result(0, "open " GOLD_TL, NULL); codi_model_free(m); return t_summary(); }
    test_gradient(m, t_gf(&g, "resid", NULL), t_gf(&g, "final_logits", NULL));
    test_golden_adam(m, &g);
    test_training_lowers_kl(m, &g);
    test_resume(m, &g);
    t_golden_close(&g);
    codi_model_free(m);
    return t_summary();
}
