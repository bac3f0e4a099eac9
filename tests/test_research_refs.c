/* Reference values for the research formats' arithmetic (issue 17), each from a computation that
   does not use this library (tools/research_refs.py -> tests/data/research_refs.txt): the tuned-lens
   library's SGD (Nesterov momentum, coupled weight decay) and linear lr schedule against PyTorch,
   the Hanley-McNeil standard error with unequal classes and the macro-AUC interval against the
   published formulas; and properties with exact answers: random_like keeps every row's own norm,
   a per-head key / value edit changes that head only, a lens directory's "bias": false drops the
   biases, a PCA file's row count must be a count. With -DCODI_THREADS it also starts runs from
   two threads on a model loaded without a LoRA merge (ThreadSanitizer: make check-tsan). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"
#ifdef CODI_THREADS
#include <pthread.h>
#endif

static char refs_text[1 << 16];

/* Values of line NAME of the references into v (at most cap); the count, or -1. */
static int ref(const char *name, double *v, int cap) {
    size_t nl = strlen(name);
    const char *p = refs_text;
    while (p && *p) {
        if (!strncmp(p, name, nl) && p[nl] == ' ') {
            int n = 0;
            char *end;
            p += nl;
            while (*p == ' ' && n < cap) { v[n++] = strtod(p, &end); p = end; }
            return n;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static void test_sgd(void) {
    double set[4], p0[3], g[18], lr[6], want[18];
    float p[3], m1[3];
    codi_lens_train_opts o = codi_lens_train_library(6, 1);
    double err_p = 0, err_lr = 0;
    int t, i;
    if (ref("sgd_settings", set, 4) != 4 || ref("sgd_p0", p0, 3) != 3 || ref("sgd_grads", g, 18) != 18 || ref("sgd_lr", lr, 6) != 6 ||
        ref("sgd_params", want, 18) != 18) { t_result(0, "sgd references", "tests/data/research_refs.txt incomplete"); return; }
    o.total_steps = (long)set[0]; o.lr = set[1]; o.weight_decay = set[2]; o.momentum = set[3];
    for (i = 0; i < 3; i++) { p[i] = (float)p0[i]; m1[i] = 0; }
    for (t = 0; t < o.total_steps; t++) {
        double l = codi__lens_lr(&o, t);
        err_lr = fmax(err_lr, fabs(l - lr[t]));
        for (i = 0; i < 3; i++) codi__lens_update(&o, t, (float)l, 1.0f, &p[i], (float)g[t * 3 + i], &m1[i], NULL);
        for (i = 0; i < 3; i++) err_p = fmax(err_p, fabs(p[i] - want[t * 3 + i]));
    }
    t_result(err_lr < 1e-12, "lens SGD: linear lr schedule = PyTorch LambdaLR (T - step) / T", "max |diff| %.2g", err_lr);
    t_result(err_p < 1e-6, "lens SGD: 6 Nesterov steps with weight decay = torch.optim.SGD(nesterov=True)", "max |diff| %.2g", err_p);
}

static void test_auc(void) {
    double s[64], y[64], w[3], pr[96], ly[32], mw[3];
    float sf[64], pf[96];
    int32_t yi[64], li[32];
    int n = ref("hm_scores", s, 64), i, k = 3, m;
    double auc, se;
    codi_probe_metrics pm;
    char err[200];
    if (n < 2 || ref("hm_labels", y, 64) != n || ref("hm_auc_se", w, 2) != 2) { t_result(0, "auc references", "incomplete"); return; }
    for (i = 0; i < n; i++) { sf[i] = (float)s[i]; yi[i] = (int32_t)y[i]; }
    auc = codi_roc_auc(sf, yi, n, &se);
    t_result(fabs(auc - w[0]) < 1e-12 && fabs(se - w[1]) < 1e-12, "Hanley-McNeil: AUC and standard error, 4 positives vs 11 negatives, ties",
             "AUC %.6f se %.6f, reference %.6f %.6f", auc, se, w[0], w[1]);
    m = ref("macro_labels", ly, 32);
    if (m < 2 || ref("macro_proba", pr, 96) != m * k || ref("macro_auc_lo_hi", mw, 3) != 3) { t_result(0, "macro references", "incomplete"); return; }
    for (i = 0; i < m * k; i++) pf[i] = (float)pr[i];
    for (i = 0; i < m; i++) li[i] = (int32_t)ly[i];
    memset(&pm, 0, sizeof pm);
    i = codi_probe_metrics_of(pf, li, m, k, &pm, err, sizeof err);
    t_result(i == 0 && fabs(pm.auc - mw[0]) < 1e-9 && fabs(pm.auc_lo - mw[1]) < 1e-9 &&
             fabs(pm.auc_hi - mw[2]) < 1e-9, "macro AUC of 3 classes and its interval mean +/- 1.96 sqrt(sum se^2) / K",
             "%.6f [%.6f, %.6f], reference %.6f [%.6f, %.6f]", pm.auc, pm.auc_lo, pm.auc_hi, mw[0], mw[1], mw[2]);
}

/* A hand-made intervention set: L layers, D dim, KVH heads of HD. */
static codi_steer *steer_of(int L, int D, int KVH, int HD) {
    codi_steer *st = (codi_steer *)calloc(1, sizeof *st);
    st->n_layers = L; st->dim = D; st->n_kv_heads = KVH; st->head_dim = HD;
    st->edits = (codi_edit *)calloc(4, sizeof *st->edits);
    return st;
}

static void test_random_like(void) {
    enum { L = 3, D = 4, KVH = 3, HD = 2 };
    codi_steer *st = steer_of(L, D, KVH, HD), *r;
    float *v = (float *)malloc(sizeof(float) * (L + 1) * D), *k = (float *)malloc(sizeof(float) * L * KVH * HD);
    double worst = 0;
    int i, rows_ok = 1;
    for (i = 0; i < (L + 1) * D; i++) v[i] = (float)((i / D + 1) * (i % 2 ? 1 : -2));      /* row norms differ */
    for (i = 0; i < L * KVH * HD; i++) k[i] = (float)(i / HD + 1);                          /* head rows differ */
    st->edits[0] = codi_edit_default(); st->edits[0].at = CODI_AT_RESID; st->edits[0].vector = v; st->edits[0].vector_len = (L + 1) * D;
    st->edits[1] = codi_edit_default(); st->edits[1].at = CODI_AT_KEY; st->edits[1].vector = k; st->edits[1].vector_len = L * KVH * HD;
    st->n_edits = 2;
    r = codi_steer_random_like(st, 11);
    for (i = 0; r && i < L + 1; i++) worst = fmax(worst, fabs(codi_l2_norm(r->edits[0].vector + i * D, D) - codi_l2_norm(v + i * D, D)));
    for (i = 0; r && i < L * KVH; i++) worst = fmax(worst, fabs(codi_l2_norm(r->edits[1].vector + i * HD, HD) - codi_l2_norm(k + i * HD, HD)));
    rows_ok = r && memcmp(r->edits[0].vector, v, sizeof(float) * D) != 0;
    t_result(r && rows_ok && worst < 1e-5, "random_like: every row (4 resid rows, 9 key head rows) keeps its own norm, new directions", "max |norm diff| %.2g", worst);
    codi_steer_free(r); codi_steer_free(st);
}

static void test_kv_head(void) {
    enum { L = 2, KVH = 4, HD = 3 };
    codi_steer *st = steer_of(L, 8, KVH, HD);
    float *vec = (float *)malloc(sizeof(float) * L * KVH * HD), kv[KVH * HD];
    codi_hook_info info;
    int i, h, ok = 1;
    for (i = 0; i < L * KVH * HD; i++) vec[i] = 1.0f + (float)i;
    st->edits[0] = codi_edit_default(); st->edits[0].at = CODI_AT_KEY; st->edits[0].head = 1; st->edits[0].vector = vec; st->edits[0].vector_len = L * KVH * HD;
    st->n_edits = 1;
    memset(&info, 0, sizeof info);
    info.point = CODI_HOOK_KEY; info.layer = 1; info.size = KVH * HD;
    for (h = 0; h < 2; h++) {              /* head 1, then every head */
        memset(kv, 0, sizeof kv);
        st->edits[0].head = h ? CODI_ALL : 1;
        codi__steer_kv_write(st, &st->edits[0], &info, kv);
        for (i = 0; i < KVH * HD; i++) ok &= kv[i] == ((h || i / HD == 1) ? vec[KVH * HD + i] : 0.0f);
    }
    info.point = CODI_HOOK_EMBED; info.layer = -1;                /* another hook: nothing, no row computed */
    memset(kv, 0, sizeof kv);
    codi__steer_kv_write(st, &st->edits[0], &info, kv);
    for (i = 0; i < KVH * HD; i++) ok &= kv[i] == 0;
    t_result(ok, "key edit \"head\": 1 of 4 heads changes head 1 only (layer 1's row); all heads: each its own slice; other hooks: nothing", "");
    codi_steer_free(st);
}

/* A lens directory whose config.json says "bias": false: the biases in params.pt are not read. */
static void test_lens_no_bias(void) {
    codi_model fake;
    codi_tuned_lens *t, *u;
    char err[256] = "";
    FILE *f;
    int i, ok;
    memset(&fake, 0, sizeof fake);
    fake.config.dim = 4; fake.config.n_layers = 2;
    t = codi_tuned_lens_new(&fake);
    for (i = 0; i < 2 * 4 * 4; i++) t->weight[i] = 0.01f * (float)i;
    for (i = 0; i < 2 * 4; i++) t->bias[i] = 1.0f + (float)i;
    mkdir("build/test_refs_lens", 0777);
    ok = codi_tuned_lens_save_dir(t, "build/test_refs_lens", "fake", err, sizeof err) == 0;
    u = ok ? codi_tuned_lens_load(&fake, "build/test_refs_lens", err, sizeof err) : NULL;
    t_result(u && !memcmp(u->bias, t->bias, sizeof(float) * 8), "lens directory with \"bias\": true reads the biases", u ? "" : "%s", err);
    codi_tuned_lens_free(u);
    f = fopen("build/test_refs_lens/config.json", "w");
    if (f) { fprintf(f, "{\"d_model\": 4, \"num_hidden_layers\": 2, \"bias\": false}\n"); fclose(f); }
    u = codi_tuned_lens_load(&fake, "build/test_refs_lens", err, sizeof err);
    ok = u != NULL;
    for (i = 0; u && i < 8; i++) ok &= u->bias[i] == 0;
    t_result(ok && !memcmp(u->weight, t->weight, sizeof(float) * 32), "lens directory with \"bias\": false: zero biases, the weights read", ok ? "" : "%s", err);
    codi_tuned_lens_free(u); codi_tuned_lens_free(t);
}

static void test_pca_stats(void) {
    float comp[2] = { 1, 0 }, mean[2] = { 0, 0 };
    double var[1] = { 1 }, expl[1] = { 1 }, stats[2] = { 1, 1e300 };
    codi_safetensors_entry e[5];
    const char *meta[] = { "codi_lens", "pca.v1", NULL };
    char err[256] = "";
    codi_pca *p;
    memset(e, 0, sizeof e);
    e[0].name = "x.components"; e[0].dtype = CODI_F32; e[0].data = comp; e[0].ndim = 2; e[0].shape[0] = 1; e[0].shape[1] = 2;
    e[1].name = "x.mean"; e[1].dtype = CODI_F32; e[1].data = mean; e[1].ndim = 1; e[1].shape[0] = 2;
    e[2].name = "x.variance"; e[2].dtype = CODI_F64; e[2].data = var; e[2].ndim = 1; e[2].shape[0] = 1;
    e[3].name = "x.explained"; e[3].dtype = CODI_F64; e[3].data = expl; e[3].ndim = 1; e[3].shape[0] = 1;
    e[4].name = "x.stats"; e[4].dtype = CODI_F64; e[4].data = stats; e[4].ndim = 1; e[4].shape[0] = 2;
    p = codi_write_safetensors("build/test_refs_pca.safetensors", e, 5, meta, err, sizeof err) ? NULL
        : codi_pca_load("build/test_refs_pca.safetensors", "x", err, sizeof err);
    t_result(!p && strstr(err, "is not a count"), "codi_pca_load: a row count of 1e300 is refused", "%s", err);
    codi_pca_free(p);
    stats[1] = 12;
    p = codi_write_safetensors("build/test_refs_pca.safetensors", e, 5, meta, err, sizeof err) ? NULL
        : codi_pca_load("build/test_refs_pca.safetensors", "x", err, sizeof err);
    t_result(p && p->n_rows == 12, "codi_pca_load: a row count of 12 reads", p ? "" : "%s", err);
    codi_pca_free(p);
}

#ifdef CODI_THREADS
typedef struct { const codi_model *m; int rc; int32_t answer; } run_job;
static void *run_thread(void *user) {
    run_job *j = (run_job *)user;
    codi_state *s = codi_state_new(j->m, 64, 1);
    codi_run_opts ro = codi_run_opts_default(j->m);
    codi_run_result rr;
    int32_t ids[4] = { 510, 20, 21, 22 };
    ro.n_latent = 2; ro.max_answer = 2;
    j->rc = !s || codi_run(j->m, s, ids, 4, &ro, &rr);
    j->answer = j->rc ? -1 : rr.answer[0];
    codi_state_free(s);
    return NULL;
}

/* In a fresh process (argv: --threads-child FILE): two threads start runs on a model whose load
   converted nothing (a merged bf16 file), so nothing chose the kernel path before them. 0 if both
   ran and agree; under ThreadSanitizer a race makes the process exit 66. */
static int threads_child(const char *path) {
    char err[256] = "";
    codi_model *m = codi_load(path, NULL, err, sizeof err);
    run_job j[2];
    pthread_t th[2];
    int i;
    if (!m) { printf("# %s\n", err); return 1; }
    for (i = 0; i < 2; i++) { j[i].m = m; pthread_create(&th[i], NULL, run_thread, &j[i]); }
    for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
    codi_model_free(m);
    return j[0].rc || j[1].rc || j[0].answer != j[1].answer;
}

static void test_threads_start(const char *self) {
    char err[256] = "", cmd[600];
    codi_model *m = codi_load("models/codi-nano/codi_nano.bin", NULL, err, sizeof err);
    int rc;
    if (!m || codi_save_merged(m, "build/test_refs_merged.safetensors", err, sizeof err)) { codi_model_free(m); t_skip("two threads start runs", err); return; }
    codi_model_free(m);
    snprintf(cmd, sizeof cmd, "%.500s --threads-child build/test_refs_merged.safetensors", self);
    rc = system(cmd);
    t_result(rc == 0, "two threads start runs on a model loaded without any conversion (fresh process; no race under TSan)", "exit status %d", rc);
}
#endif

int main(int argc, char **argv) {
    FILE *f;
    size_t n;
#ifdef CODI_THREADS
    if (argc == 3 && !strcmp(argv[1], "--threads-child")) return threads_child(argv[2]);
#endif
    f = fopen("tests/data/research_refs.txt", "r");
    n = f ? fread(refs_text, 1, sizeof refs_text - 1, f) : 0;
    if (f) fclose(f);
    refs_text[n] = 0;
    test_sgd();
    test_auc();
    test_random_like();
    test_kv_head();
    test_lens_no_bias();
    test_pca_stats();
#ifdef CODI_THREADS
    test_threads_start(argv[0]);
#else
    (void)argc; (void)argv;
#endif
    return t_summary();
}
