/* codi sweep: the Latent Reasoning Sprint's steering protocols end to end on one model.
     1. mean vectors over --means-limit questions (codi vectors: final-normed hidden state at each latent
        slot; K / V means over the "addition" questions when the file has an "op" field);
     2. embedding steering: for l = 1..N, after l latent steps feed z_(l+1) = prj(h) + c diff(A, B) for the
        15 pairs A < B and c in {-1, 0, 0.5, 1, 2, 5}, and the same with a random direction of each diff's
        norm (random_A_B), then eot and the answer;
     3. KV steering: after l latent steps add c (mean[B] - mean[A]) to the keys and values at latent l's
        slot in every layer and kv head, c in {-0.5, -2, -5, 0}, then eot and the answer;
     4. noise controls: z_(l+1) replaced by Gaussian noise with its own scalar mean and std, or with the
        per-dimension mean and std of z_(l+1) across the means questions (3 seeds each).
   Every variant of a question starts from a copy of the state after its shared prefix (the question
   and l latents: codi_state_copy), so the prefix is computed once per question. Steering goes through
   intervention sets (>>steer) built once. Writes CSV tables, SVG heatmaps (accuracy and difference from
   c = 0) and the vectors to --out DIR. Part of the unity build of tools/codi.c (prefix sweep_). */

#include "svg.h"

static const float sweep_emb_coeffs[] = { -1, 0, 0.5f, 1, 2, 5 };
static const float sweep_kv_coeffs[] = { -0.5f, -2, -5, 0 };
#define SWEEP_NE ((int)(sizeof sweep_emb_coeffs / sizeof *sweep_emb_coeffs))
#define SWEEP_NK ((int)(sizeof sweep_kv_coeffs / sizeof *sweep_kv_coeffs))
#define SWEEP_NOISE 3

typedef struct { int32_t *ids; int n_ids; double gold; int has_gold; } sweep_question;

typedef struct {
    const codi_model *m;
    const codi_tokenizer *t;
    int N, n_pairs, answer_tokens;
    sweep_question *q; int nq;
    codi_steer **emb;      /* [n_pairs, SWEEP_NE, 2 (diff, random)]: latent_input edits */
    codi_steer **kv;       /* [N, n_pairs, SWEEP_NK]: kv_cache edits at latent l's slot */
    codi_steer **noise;    /* [SWEEP_NOISE]: latent_input := own-stats noise */
    codi_steer **noise_dim;/* [N, SWEEP_NOISE]: z_(l+1) := per-dimension mean + std * N(0, 1) */
    long *emb_ok;          /* [N, n_pairs, SWEEP_NE, 2] correct answers */
    long *kv_ok;           /* [N, n_pairs, SWEEP_NK] */
    long *noise_ok;        /* [N, 2 (own stats, per dimension), SWEEP_NOISE] */
    float *dump_emb, *dump_kv;   /* first question's first answer logits [N, n_pairs, NE | NK, V-1], or NULL */
    long next, done;
    pthread_mutex_t lock;
    cli_progress *progress;
} sweep_ctx;

/* From a copy of prefix: optionally feed one more latent (z = prj(h), edited by feed's hooks) with kv's
   cache edits before, then eot and the greedy answer; 1 when its number is the gold one. first_logits
   [V-1] receives the first answer step's logits when not NULL. */
static int sweep_branch(sweep_ctx *sc, codi_state *b, const codi_state *prefix, int l, const codi_steer *kv, const codi_steer *feed,
                        const sweep_question *q, float *first_logits) {
    const codi_model *m = sc->m;
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    char text[2048];
    double pred;
    float *al = first_logits ? (float *)malloc(sizeof(float) * (size_t)sc->answer_tokens * m->config.vocab) : NULL;
    int ok = 0;
    codi_state_clear_hooks(b);
    if (codi_state_copy(m, b, prefix)) goto done;
    if (kv && codi_steer_after_latent((void *)kv, b, l, l)) goto done;
    if (feed) {                                       /* z_(l+1) through the latent_input hooks */
        float *z = (float *)malloc(sizeof(float) * (size_t)m->config.dim);
        int rc = !z || codi_steer_install(feed, b, NULL) || codi_project(m, b->final_hidden, z);
        b->phase = CODI_PHASE_LATENT; b->step = l + 1;
        if (!rc) rc = codi_forward(m, b, NULL, z, 1, NULL);
        free(z);
        codi_state_clear_hooks(b);
        if (rc) goto done;
    }
    ro.max_answer = sc->answer_tokens; ro.answer_logits = al;
    memset(&rr, 0, sizeof rr);
    if (codi_run_answer(m, b, &ro, &rr)) goto done;
    if (first_logits) memcpy(first_logits, al, sizeof(float) * (size_t)(m->config.vocab - 1));
    if (sc->t) {
        codi_decode(sc->t, rr.answer, rr.n_answer, 1, text, sizeof text);
        ok = q->has_gold && codi_extract_answer(text, &pred) && pred == q->gold;
    }
done:
    if (b->error[0]) fprintf(stderr, "codi sweep: %s\n", b->error);
    free(al);
    return ok;
}

/* Every variant of one question; counts go to the shared tables under the lock. */
static void sweep_question_run(sweep_ctx *sc, codi_state *prefix, codi_state *b, int qi, long *emb_ok, long *kv_ok, long *noise_ok) {
    const sweep_question *q = &sc->q[qi];
    int l, p, c, k, V1 = sc->m->config.vocab - 1, P = sc->n_pairs, dump = qi == 0 && sc->dump_emb;
    codi_run_opts ro = codi_run_opts_default(sc->m);
    codi_run_result rr;
    ro.n_latent = 0;
    if (codi_run_latents(sc->m, prefix, q->ids, q->n_ids, &ro, &rr)) { fprintf(stderr, "codi sweep: %s\n", prefix->error); return; }
    for (l = 1; l <= sc->N; l++) {
        int base_emb, base_kv;
        prefix->phase = CODI_PHASE_LATENT; prefix->step = l;
        if (codi_latent_step(sc->m, prefix, NULL)) { fprintf(stderr, "codi sweep: %s\n", prefix->error); return; }
        /* c = 0 is the same run for every pair and vector: computed once */
        base_emb = sweep_branch(sc, b, prefix, l, NULL, sc->emb[0 * SWEEP_NE * 2 + 1 * 2], q, dump ? sc->dump_emb + ((size_t)(l - 1) * P * SWEEP_NE + 1) * V1 : NULL);
        base_kv = sweep_branch(sc, b, prefix, l, NULL, NULL, q, dump ? sc->dump_kv + ((size_t)(l - 1) * P * SWEEP_NK + SWEEP_NK - 1) * V1 : NULL);
        for (p = 0; p < P; p++) {
            for (c = 0; c < SWEEP_NE; c++)
                for (k = 0; k < 2; k++) {
                    size_t cell = (((size_t)(l - 1) * P + p) * SWEEP_NE + c) * 2 + k;
                    float *fl = dump && k == 0 ? sc->dump_emb + (((size_t)(l - 1) * P + p) * SWEEP_NE + c) * V1 : NULL;
                    if (sweep_emb_coeffs[c] == 0) {
                        emb_ok[cell] += base_emb;
                        if (fl && p) memcpy(fl, sc->dump_emb + ((size_t)(l - 1) * P * SWEEP_NE + 1) * V1, sizeof(float) * (size_t)V1);
                    } else emb_ok[cell] += sweep_branch(sc, b, prefix, l, NULL, sc->emb[((size_t)p * SWEEP_NE + c) * 2 + k], q, fl);
                }
            for (c = 0; c < SWEEP_NK; c++) {
                size_t cell = ((size_t)(l - 1) * P + p) * SWEEP_NK + c;
                float *fl = dump ? sc->dump_kv + cell * V1 : NULL;
                if (sweep_kv_coeffs[c] == 0) {
                    kv_ok[cell] += base_kv;
                    if (fl && p) memcpy(fl, sc->dump_kv + ((size_t)(l - 1) * P * SWEEP_NK + SWEEP_NK - 1) * V1, sizeof(float) * (size_t)V1);
                } else kv_ok[cell] += sweep_branch(sc, b, prefix, l, sc->kv[((size_t)(l - 1) * P + p) * SWEEP_NK + c], NULL, q, fl);
            }
        }
        for (k = 0; k < SWEEP_NOISE; k++) {
            noise_ok[(size_t)(l - 1) * 2 * SWEEP_NOISE + k] += sweep_branch(sc, b, prefix, l, NULL, sc->noise[k], q, NULL);
            noise_ok[(size_t)(l - 1) * 2 * SWEEP_NOISE + SWEEP_NOISE + k] +=
                sweep_branch(sc, b, prefix, l, NULL, sc->noise_dim[(size_t)(l - 1) * SWEEP_NOISE + k], q, NULL);
        }
    }
}

static void *sweep_worker(void *user) {
    sweep_ctx *sc = (sweep_ctx *)user;
    size_t ne = (size_t)sc->N * sc->n_pairs * SWEEP_NE * 2, nk = (size_t)sc->N * sc->n_pairs * SWEEP_NK, nn = (size_t)sc->N * 2 * SWEEP_NOISE, i;
    long *emb = (long *)calloc(ne, sizeof(long)), *kv = (long *)calloc(nk, sizeof(long)), *noise = (long *)calloc(nn, sizeof(long));
    int max_ids = 0, qi;
    codi_state *prefix, *b;
    for (qi = 0; qi < sc->nq; qi++) if (sc->q[qi].n_ids > max_ids) max_ids = sc->q[qi].n_ids;
    prefix = codi_state_alloc(sc->m, max_ids + sc->N + 2, 1);
    b = codi_state_alloc(sc->m, max_ids + sc->N + sc->answer_tokens + 3, 1);
    if (!emb || !kv || !noise || !prefix || !b) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    for (;;) {
        pthread_mutex_lock(&sc->lock);
        qi = sc->next < sc->nq ? (int)sc->next++ : -1;
        pthread_mutex_unlock(&sc->lock);
        if (qi < 0) break;
        sweep_question_run(sc, prefix, b, qi, emb, kv, noise);
        pthread_mutex_lock(&sc->lock);
        cli_progress_update(sc->progress, ++sc->done);
        pthread_mutex_unlock(&sc->lock);
    }
    pthread_mutex_lock(&sc->lock);                  /* integer counts: the same totals for any thread count */
    for (i = 0; i < ne; i++) sc->emb_ok[i] += emb[i];
    for (i = 0; i < nk; i++) sc->kv_ok[i] += kv[i];
    for (i = 0; i < nn; i++) sc->noise_ok[i] += noise[i];
    pthread_mutex_unlock(&sc->lock);
done:
    free(emb); free(kv); free(noise);
    codi_state_free(prefix); codi_state_free(b);
    return NULL;
}

/* The intervention sets of every variant, built once. zstats [N+1, 2, D]: per-dimension mean and std
   of z_1..z_(N+1) over the means questions. */
static int sweep_build_steers(sweep_ctx *sc, const vectors_set *v, const double *zstats, int seed) {
    int p, c, k, l, j;
    char err[256];
    sc->emb = (codi_steer **)calloc((size_t)sc->n_pairs * SWEEP_NE * 2, sizeof *sc->emb);
    sc->kv = (codi_steer **)calloc((size_t)sc->N * sc->n_pairs * SWEEP_NK, sizeof *sc->kv);
    sc->noise = (codi_steer **)calloc(SWEEP_NOISE, sizeof *sc->noise);
    sc->noise_dim = (codi_steer **)calloc((size_t)sc->N * SWEEP_NOISE, sizeof *sc->noise_dim);
    if (!sc->emb || !sc->kv || !sc->noise || !sc->noise_dim) return -1;
    for (p = 0; p < sc->n_pairs; p++)
        for (c = 0; c < SWEEP_NE; c++)
            for (k = 0; k < 2; k++) {                 /* z_(l+1) += c diff(A, B), or c random_A_B */
                codi_edit e = codi_edit_default();
                codi_steer *st = codi_steer_new(sc->m);
                e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.alpha = sweep_emb_coeffs[c];
                e.vector = (k ? v->random : v->diff) + (size_t)p * v->D; e.vector_len = v->D;
                if (!st || codi_steer_add(st, &e, err, sizeof err)) { fprintf(stderr, "codi sweep: %s\n", err); codi_steer_free(st); return -1; }
                sc->emb[((size_t)p * SWEEP_NE + c) * 2 + k] = st;
            }
    for (l = 1; l <= sc->N; l++)
        for (p = 0; p < sc->n_pairs; p++)
            for (c = 0; c < SWEEP_NK; c++) {          /* K, V at latent l's slot += c (mean[B] - mean[A]), after step l */
                codi_edit e = codi_edit_default();
                codi_steer *st = codi_steer_new(sc->m);
                e.at = CODI_AT_KV_CACHE; e.when = e.pos_latent = l; e.alpha = sweep_kv_coeffs[c];
                e.key_vector = v->key_diff + (size_t)p * v->KV; e.value_vector = v->value_diff + (size_t)p * v->KV; e.kv_len = v->KV;
                if (!st || codi_steer_add(st, &e, err, sizeof err)) { fprintf(stderr, "codi sweep: %s\n", err); codi_steer_free(st); return -1; }
                sc->kv[((size_t)(l - 1) * sc->n_pairs + p) * SWEEP_NK + c] = st;
            }
    for (k = 0; k < SWEEP_NOISE; k++) {               /* z_(l+1) := mean(z) + std(z) g, g ~ N(0, 1) seeded */
        char js[160];
        snprintf(js, sizeof js, "{\"edits\": [{\"at\": \"latent_input\", \"op\": \"set\", \"random\": {\"seed\": %d, \"mean_std_of\": \"self\"}}]}", seed + 100 + k);
        if (!(sc->noise[k] = codi_steer_parse(sc->m, js, strlen(js), NULL, err, sizeof err))) { fprintf(stderr, "codi sweep: %s\n", err); return -1; }
    }
    for (l = 1; l <= sc->N; l++)                      /* z_(l+1) := mu + sd * g, per dimension */
        for (k = 0; k < SWEEP_NOISE; k++) {
            codi_edit e = codi_edit_default();
            codi_steer *st = codi_steer_new(sc->m);
            codi_rng rng;
            float *z = (float *)malloc(sizeof(float) * (size_t)v->D);
            const double *mu = zstats + (size_t)l * 2 * v->D, *sd = mu + v->D;
            codi_rng_seed(&rng, (uint64_t)seed + 200 + 16 * (uint64_t)l + (uint64_t)k);
            for (j = 0; z && j < v->D; j++) z[j] = (float)(mu[j] + sd[j] * codi_rng_normal(&rng));
            e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.op = CODI_EDIT_SET; e.vector = z; e.vector_len = v->D;
            if (!z || !st || codi_steer_add(st, &e, err, sizeof err)) { fprintf(stderr, "codi sweep: %s\n", z ? err : "out of memory"); free(z); codi_steer_free(st); return -1; }
            free(z);
            sc->noise_dim[(size_t)(l - 1) * SWEEP_NOISE + k] = st;
        }
    return 0;
}

/* One heatmap of pairs x l with the value printed in each cell; symmetric: a scale centered on 0. */
static void sweep_heatmap(const char *path, const char *title, const char *const *rows, int P, const char *const *cols, int N,
                          const double *v, int symmetric, const char *fmt) {
    svg_heatmap_spec sp;
    char (*text)[16] = (char (*)[16])malloc(sizeof *text * (size_t)P * N);
    const char **cell = (const char **)malloc(sizeof(char *) * (size_t)P * N);
    double lo = 0, hi = 0;
    int i;
    if (!text || !cell) { free(text); free(cell); return; }
    for (i = 0; i < P * N; i++) {
        if (v[i] == v[i]) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i]; }
        snprintf(text[i], 16, fmt, v[i]);
        cell[i] = text[i];
    }
    if (symmetric) { hi = fabs(lo) > hi ? fabs(lo) : hi; lo = -hi; }
    if (hi <= lo) hi = lo + 1;
    memset(&sp, 0, sizeof sp);
    sp.rows = P; sp.cols = N; sp.value = v; sp.vmin = lo; sp.vmax = hi; sp.colormap = SVG_VIRIDIS; sp.cell_text = cell;
    sp.row_labels = rows; sp.col_labels = cols; sp.title = title; sp.xlabel = "latent steps l before the edit";
    sp.ylabel = "pair (A, B)"; sp.colorbar_label = symmetric ? "accuracy minus coeff 0" : "accuracy";
    if (svg_heatmap(path, &sp)) fprintf(stderr, "codi sweep: cannot write %s\n", path);
    free(text); free(cell);
}

/* Tables and heatmaps of one protocol: acc [N, P, NC(, stride)] at column `col` of each cell. */
static void sweep_report(const char *dir, const char *what, const char *vec, const long *ok, int stride, int col, const float *coeffs, int nc,
                         int zero_c, int N, int P, long nq, FILE *csv) {
    const char **rows = (const char **)malloc(sizeof(char *) * (size_t)P), **cols = (const char **)malloc(sizeof(char *) * (size_t)N);
    char (*rl)[32] = (char (*)[32])malloc(sizeof *rl * (size_t)P), (*cl)[32] = (char (*)[32])malloc(sizeof *cl * (size_t)N), path[4096], title[256];
    int *pa = (int *)malloc(sizeof(int) * (size_t)P), *pb = (int *)malloc(sizeof(int) * (size_t)P);
    double *acc = (double *)malloc(sizeof(double) * (size_t)N * P), *delta = (double *)malloc(sizeof(double) * (size_t)N * P);
    int a, b, p = 0, l, c;
    for (a = 1; p < P; a++) for (b = a + 1; b <= N && p < P; b++, p++) { snprintf(rl[p], 32, "(%d, %d)", a, b); rows[p] = rl[p]; pa[p] = a; pb[p] = b; }
    for (l = 0; l < N; l++) { snprintf(cl[l], 32, "l = %d", l + 1); cols[l] = cl[l]; }
    for (c = 0; c < nc; c++) {
        for (p = 0; p < P; p++)
            for (l = 0; l < N; l++) {
                long k = ok[(((size_t)l * P + p) * nc + c) * stride + col], k0 = ok[(((size_t)l * P + p) * nc + zero_c) * stride + col];
                acc[(size_t)p * N + l] = nq ? (double)k / nq : NAN;
                delta[(size_t)p * N + l] = nq ? (double)(k - k0) / nq : NAN;
                fprintf(csv, "%s,%d,%d,%d,%g,%s,%ld,%ld,%.6f,%.6f\n", what, l + 1, pa[p], pb[p], coeffs[c], vec, nq, k, acc[(size_t)p * N + l], delta[(size_t)p * N + l]);
            }
        snprintf(path, sizeof path, "%s/%s_%s_acc_c%g.svg", dir, what, vec, coeffs[c]);
        snprintf(title, sizeof title, "%s steering (%s), coeff %g: accuracy by pair (A, B) and l", what, vec, coeffs[c]);
        sweep_heatmap(path, title, rows, P, cols, N, acc, 0, "%.2f");
        if (c != zero_c) {
            snprintf(path, sizeof path, "%s/%s_%s_delta_c%g.svg", dir, what, vec, coeffs[c]);
            snprintf(title, sizeof title, "%s steering (%s), coeff %g: accuracy minus coeff 0", what, vec, coeffs[c]);
            sweep_heatmap(path, title, rows, P, cols, N, delta, 1, "%+.2f");
        }
    }
    free(rows); free(cols); free(rl); free(cl); free(acc); free(delta); free(pa); free(pb);
}

typedef struct {
    codi_means *fin, *kv; const codi_model *m; const codi_tokenizer *t; codi_state *s; int N, recipe, failed;
    float *z;              /* [N+1, D] the latents of one run */
    double *zsum, *zsq;    /* [N+1, D] their sums and sums of squares over the questions */
} sweep_means_ctx;

static int sweep_mean_question(void *user, const cli_question *q) {
    sweep_means_ctx *mc = (sweep_means_ctx *)user;
    const codi__json *op = codi__json_get(q->obj, "op");
    codi_run_opts ro = codi_run_opts_default(mc->m);
    codi_run_result rr;
    int32_t ids[4096];
    int n = vectors_prompt(mc->m, mc->t, q, mc->recipe, ids, 4096);
    size_t j;
    ro.n_latent = mc->N; ro.latents = mc->z;
    if (n <= 0 || n + mc->N + 1 > mc->s->max_pos || codi_run_latents(mc->m, mc->s, ids, n, &ro, &rr) ||
        codi_means_add(mc->fin, mc->m, mc->s, rr.prompt_len) ||
        ((!op || (op->type == CODI__J_STR && !strcmp(op->str, "addition"))) && codi_means_add(mc->kv, mc->m, mc->s, rr.prompt_len))) {
        fprintf(stderr, "codi sweep: line %d: %s\n", q->line, n <= 0 ? "no usable prompt" : mc->s->error); mc->failed++;
        return 0;
    }
    for (j = 0; j < (size_t)(mc->N + 1) * mc->m->config.dim; j++) { mc->zsum[j] += mc->z[j]; mc->zsq[j] += (double)mc->z[j] * mc->z[j]; }
    return 0;
}

typedef struct { sweep_question *q; int n, cap; const codi_model *m; const codi_tokenizer *t; int recipe; } sweep_list;

static int sweep_collect(void *user, const cli_question *cq) {
    sweep_list *sl = (sweep_list *)user;
    int32_t ids[4096];
    int n = vectors_prompt(sl->m, sl->t, cq, sl->recipe, ids, 4096);
    if (n <= 0) { fprintf(stderr, "codi sweep: line %d: no usable prompt (skipped)\n", cq->line); return 0; }
    if (sl->n == sl->cap) {
        sweep_question *g = (sweep_question *)realloc(sl->q, sizeof *g * (size_t)(sl->cap ? 2 * sl->cap : 256));
        if (!g) return -1;
        sl->q = g; sl->cap = sl->cap ? 2 * sl->cap : 256;
    }
    sl->q[sl->n].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    if (!sl->q[sl->n].ids) return -1;
    memcpy(sl->q[sl->n].ids, ids, sizeof(int32_t) * (size_t)n);
    sl->q[sl->n].n_ids = n; sl->q[sl->n].gold = cq->gold; sl->q[sl->n].has_gold = cq->has_gold;
    sl->n++;
    return 0;
}

static int sweep_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *questions = NULL, *means_questions = NULL, *dir = NULL, *dump = NULL;
    int limit = 0, means_limit = 500, recipe = 0, latents = 6, seed = 1, answer_tokens = 1, rc = 1, prc, n_bad = 0, i, workers;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "the evaluation questions (\"question\" or \"ids\", \"answer\"; e.g. data/templates.jsonl)" },
        { "--limit", CLI_INT, &limit, 0, 100000000, "N", "only the first N evaluation questions (default all)" },
        { "--means-questions", CLI_STR, &means_questions, 0, 0, "FILE.jsonl", "questions for the mean vectors (default: --questions)" },
        { "--means-limit", CLI_INT, &means_limit, 1, 100000000, "N", "questions for the mean vectors (default 500)" },
        { "--recipe", CLI_INT, &recipe, 0, 1, "R", "prompt: 0 BOS q bot (default), 1 BOS q <|eot_id|> bot (the sprint's)" },
        { "--latents", CLI_INT, &latents, 2, 16, "N", "latent steps N (default 6): l = 1..N, pairs of 1..N" },
        { "--answer-tokens", CLI_INT, &answer_tokens, 1, 256, "N", "greedy answer tokens after eot (default 1, the sprint's; more for models that write words first)" },
        { "--seed", CLI_INT, &seed, 0, 1000000, "S", "seed of the random directions and noise (default 1)" },
        { "--out", CLI_STR, &dir, 0, 0, "DIR", "output folder (created): vectors, CSV tables, SVG heatmaps" },
        { "--dump-logits", CLI_STR, &dump, 0, 0, "FILE.safetensors", "the first question's first answer logits of every variant (checks)" },
        CLI_END
    };
    sweep_ctx sc;
    sweep_list sl;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_means fin, kvm;
    vectors_set vs;
    double *zstats = NULL;
    pthread_t *th = NULL;
    double t0;
    memset(&sc, 0, sizeof sc); memset(&sl, 0, sizeof sl); memset(&fin, 0, sizeof fin); memset(&kvm, 0, sizeof kvm); memset(&vs, 0, sizeof vs);
    if ((prc = cli_parse(self, opts, argc, argv)) != CLI_OK) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!questions || !dir) { fprintf(stderr, "codi sweep: needs --questions and --out DIR (codi sweep --help)\n"); return 2; }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) { fprintf(stderr, "codi sweep: cannot create %s\n", dir); return 1; }
    workers = cli_threads_checked(&ma);
    if (!(m = cli_load_model(&ma))) return 1;
    t = cli_load_tokenizer(&ma, m, 1);
    if (!t) fprintf(stderr, "codi sweep: note: no tokenizer: answers cannot be scored (accuracy 0); logits are still dumped\n");
    /* 1. mean vectors */
    if (codi_means_init(&fin, m, latents) || codi_means_init(&kvm, m, latents)) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    {
        sweep_means_ctx mc;
        char path[4096], cnt[32], sd[16];
        const char *meta[] = { "format", "codi_lens.vectors.v1", "model", ma.model, "source", means_questions ? means_questions : questions,
                               "questions", cnt, "seed", sd, "keys", "K / V means over the questions with \"op\": \"addition\" (all when there is no op)", NULL };
        size_t nz = (size_t)(latents + 1) * m->config.dim, j;
        memset(&mc, 0, sizeof mc);
        mc.fin = &fin; mc.kv = &kvm; mc.m = m; mc.t = t; mc.N = latents; mc.recipe = recipe;
        mc.s = codi_state_alloc(m, 4096 + latents + 2, 1);
        mc.z = (float *)malloc(sizeof(float) * nz); mc.zsum = (double *)calloc(nz, sizeof(double)); mc.zsq = (double *)calloc(nz, sizeof(double));
        zstats = (double *)malloc(sizeof(double) * 2 * nz);
        if (!mc.s || !mc.z || !mc.zsum || !mc.zsq || !zstats ||
            cli_for_each_question(means_questions ? means_questions : questions, means_limit, 0, 0, sweep_mean_question, &mc, &n_bad) || !fin.count || !kvm.count) {
            fprintf(stderr, "codi sweep: no mean vectors (%ld questions, %ld for K/V)\n", fin.count, kvm.count);
            codi_state_free(mc.s); free(mc.z); free(mc.zsum); free(mc.zsq); goto done;
        }
        for (j = 0; j < nz; j++) {                   /* per latent k and dimension: mean, std */
            size_t k = j / (size_t)m->config.dim, d = j % (size_t)m->config.dim;
            double mu = mc.zsum[j] / fin.count, var = mc.zsq[j] / fin.count - mu * mu;
            zstats[(k * 2) * m->config.dim + d] = mu;
            zstats[(k * 2 + 1) * m->config.dim + d] = var > 0 ? sqrt(var) : 0;
        }
        codi_state_free(mc.s); free(mc.z); free(mc.zsum); free(mc.zsq);
        snprintf(cnt, sizeof cnt, "%ld", fin.count); snprintf(sd, sizeof sd, "%d", seed);
        snprintf(path, sizeof path, "%s/vectors.safetensors", dir);
        if (vectors_build(&vs, &fin, &kvm, seed) || vectors_save(path, m, &vs, fin.count, meta)) goto done;
    }
    /* 2-4. every variant of every question */
    sl.m = m; sl.t = t; sl.recipe = recipe;
    if (cli_for_each_question(questions, limit, 0, 0, sweep_collect, &sl, &n_bad) || !sl.n) { fprintf(stderr, "codi sweep: no questions\n"); goto done; }
    sc.m = m; sc.t = t; sc.N = latents; sc.n_pairs = vs.n_pairs; sc.answer_tokens = answer_tokens; sc.q = sl.q; sc.nq = sl.n;
    sc.emb_ok = (long *)calloc((size_t)latents * vs.n_pairs * SWEEP_NE * 2, sizeof(long));
    sc.kv_ok = (long *)calloc((size_t)latents * vs.n_pairs * SWEEP_NK, sizeof(long));
    sc.noise_ok = (long *)calloc((size_t)latents * 2 * SWEEP_NOISE, sizeof(long));
    if (dump) {
        sc.dump_emb = (float *)calloc((size_t)latents * vs.n_pairs * SWEEP_NE * (m->config.vocab - 1), sizeof(float));
        sc.dump_kv = (float *)calloc((size_t)latents * vs.n_pairs * SWEEP_NK * (m->config.vocab - 1), sizeof(float));
    }
    if (!sc.emb_ok || !sc.kv_ok || !sc.noise_ok || (dump && (!sc.dump_emb || !sc.dump_kv)) || sweep_build_steers(&sc, &vs, zstats, seed)) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    fprintf(stderr, "codi sweep: %d questions x %d latent positions x (%d embedding + %d KV + %d noise variants) on %d threads\n", sc.nq, latents,
            vs.n_pairs * (SWEEP_NE - 1) * 2 + 1, vs.n_pairs * (SWEEP_NK - 1) + 1, 2 * SWEEP_NOISE, workers);
    pthread_mutex_init(&sc.lock, NULL);
    sc.progress = cli_progress_start("sweep", sc.nq, 0);
    t0 = cli_now();
    th = (pthread_t *)malloc(sizeof *th * (size_t)workers);
    for (i = 0; i < workers; i++) pthread_create(&th[i], NULL, sweep_worker, &sc);
    for (i = 0; i < workers; i++) pthread_join(th[i], NULL);
    cli_progress_end(sc.progress);
    pthread_mutex_destroy(&sc.lock);
    fprintf(stderr, "codi sweep: %d questions in %.1f s\n", sc.nq, cli_now() - t0);
    {   /* tables and heatmaps */
        char path[4096];
        FILE *csv;
        int l, k;
        snprintf(path, sizeof path, "%s/steering.csv", dir);
        if (!(csv = fopen(path, "w"))) { fprintf(stderr, "codi sweep: cannot write %s\n", path); goto done; }
        fprintf(csv, "protocol,l,a,b,coeff,vector,questions,correct,accuracy,delta_vs_coeff0\n");
        sweep_report(dir, "embedding", "diff", sc.emb_ok, 2, 0, sweep_emb_coeffs, SWEEP_NE, 1, latents, vs.n_pairs, sc.nq, csv);
        sweep_report(dir, "embedding", "random", sc.emb_ok, 2, 1, sweep_emb_coeffs, SWEEP_NE, 1, latents, vs.n_pairs, sc.nq, csv);
        sweep_report(dir, "kv", "diff", sc.kv_ok, 1, 0, sweep_kv_coeffs, SWEEP_NK, SWEEP_NK - 1, latents, vs.n_pairs, sc.nq, csv);
        fclose(csv);
        snprintf(path, sizeof path, "%s/noise.csv", dir);
        if ((csv = fopen(path, "w")) != NULL) {
            fprintf(csv, "l,noise,variant,questions,correct,accuracy,plain_correct\n");
            for (l = 0; l < latents; l++)
                for (k = 0; k < 2 * SWEEP_NOISE; k++) {
                    long ok = sc.noise_ok[(size_t)l * 2 * SWEEP_NOISE + k];
                    fprintf(csv, "%d,%s,%d,%d,%ld,%.6f,%ld\n", l + 1, k < SWEEP_NOISE ? "own_mean_std" : "per_dim_mean_std", k % SWEEP_NOISE, sc.nq, ok,
                            (double)ok / sc.nq, sc.emb_ok[(((size_t)l * vs.n_pairs) * SWEEP_NE + 1) * 2]);
                }
            fclose(csv);
        }
        printf("accuracy with l + 1 plain latents / l latents (coeff 0):");
        for (l = 0; l < latents; l++) printf(" l=%d %.3f/%.3f", l + 1, (double)sc.emb_ok[(((size_t)l * vs.n_pairs) * SWEEP_NE + 1) * 2] / sc.nq,
                                             (double)sc.kv_ok[((size_t)l * vs.n_pairs) * SWEEP_NK + SWEEP_NK - 1] / sc.nq);
        printf("\nwrote %s: vectors.safetensors, steering.csv, noise.csv, SVG heatmaps\n", dir);
    }
    if (dump) {
        char err[256];
        codi_st_entry e[2];
        memset(e, 0, sizeof e);
        e[0].name = "emb_logits"; e[0].dtype = CODI_F32; e[0].data = sc.dump_emb; e[0].ndim = 4;
        e[0].shape[0] = latents; e[0].shape[1] = vs.n_pairs; e[0].shape[2] = SWEEP_NE; e[0].shape[3] = m->config.vocab - 1;
        e[1] = e[0]; e[1].name = "kv_logits"; e[1].data = sc.dump_kv; e[1].shape[2] = SWEEP_NK;
        if (codi_write_safetensors(dump, e, 2, NULL, err, sizeof err)) { fprintf(stderr, "codi sweep: %s\n", err); goto done; }
    }
    rc = 0;
done:
    free(th);
    if (sc.emb) for (i = 0; i < vs.n_pairs * SWEEP_NE * 2; i++) codi_steer_free(sc.emb[i]);
    if (sc.kv) for (i = 0; i < latents * vs.n_pairs * SWEEP_NK; i++) codi_steer_free(sc.kv[i]);
    if (sc.noise) for (i = 0; i < SWEEP_NOISE; i++) codi_steer_free(sc.noise[i]);
    if (sc.noise_dim) for (i = 0; i < latents * SWEEP_NOISE; i++) codi_steer_free(sc.noise_dim[i]);
    free(sc.emb); free(sc.kv); free(sc.noise); free(sc.noise_dim); free(zstats); free(sc.emb_ok); free(sc.kv_ok); free(sc.noise_ok); free(sc.dump_emb); free(sc.dump_kv);
    for (i = 0; i < sl.n; i++) free(sl.q[i].ids);
    free(sl.q);
    vectors_free(&vs);
    codi_means_free(&fin); codi_means_free(&kvm);
    codi_tokenizer_free(t);
    codi_model_free(m);
    return rc;
}

static const cli_command cmd_sweep = {
    "sweep", "the Latent Reasoning Sprint's steering protocols end to end: vectors, embedding / KV steering, controls, heatmaps",
    "codi sweep --model PATH --questions FILE.jsonl --out DIR [options]",
    "1. mean vectors over --means-limit questions (final-normed hidden state at each latent slot; K / V means\n"
    "   over the \"addition\" questions when lines have an \"op\"): DIR/vectors.safetensors (as codi vectors);\n"
    "2. embedding steering: for l = 1..N, run l latent steps, feed z_(l+1) = prj(h) + c diff(A, B) for every pair\n"
    "   A < B and c in -1, 0, 0.5, 1, 2, 5, and the same with random_A_B (a random direction of the same norm);\n"
    "3. KV steering: after l latent steps add c (mean[B] - mean[A]) to K and V at latent l's slot in every layer\n"
    "   and kv head, c in -0.5, -2, -5, 0;\n"
    "4. noise: z_(l+1) replaced by Gaussian noise with its own mean and std, or with each dimension's mean and\n"
    "   std across the means questions (3 seeds each).\n"
    "Then eot and --answer-tokens greedy tokens (1, as the sprint: its answer-only model says the number\n"
    "first); the last number is scored. Each variant starts from a copy of the state after the question and\n"
    "l latents (computed once). Writes DIR/steering.csv (l, pair, coeff, vector, accuracy, difference from\n"
    "coeff 0; pair A, B), DIR/noise.csv and SVG heatmaps (pairs x l) of accuracy and of the difference from coeff 0.\n\n"
    "Examples:\n"
    "  codi sweep --model models/codi-nano/codi_nano.bin --questions data/templates.jsonl --limit 100 --answer-tokens 12 --threads 2 --out sweep\n"
    "  codi sweep --model CODI_1B --base Llama-3.2-1B-Instruct --recipe 1 --questions data/templates.jsonl --out sprint",
    sweep_run
};
