/* codi kv-response: the Latent Reasoning Sprint #4 protocol "steer latent l, run one more latent,
   read the new KV". For every question, CODI runs l + 1 latent steps plain, under each steering
   spec (e.g. the principal-component specs `codi pca --steer-components` writes) and under random
   controls of the same shape and norm (drawn once per spec, or per question); at the steered
   latent's cache slot and at the next latent's slot it compares every layer's cached keys and
   values (post-RoPE, or pre-RoPE with --keys pre) with the plain run's: relative change
   |K' - K| / |K| and cosine. All runs go through the batched runner (codi_batch_*: one pass over
   the weights advances --batch runs). Each (condition, question) is one line of the rows file,
   written and flushed when the question's runs are done; a killed run resumes from it, and every
   summary number is computed from the rows file alone: per (condition, slot, layer) the mean over
   the questions with its standard error and a 95% percentile-bootstrap interval (the changes are
   skewed); per (spec, slot, layer, keys or values) the paired difference "steered minus the mean
   of its random controls" per question, its mean with a 95% t interval, a two-sided sign-flip
   permutation test (exact over all 2^n sign patterns when 2^n <= --permutations, else seeded
   Monte Carlo), and Holm and Benjamini-Hochberg adjusted p values over the family of all tests. */

#define KVR_MAX_COND 66
#define KVR_NBOOT 2000          /* bootstrap resamples of the questions per mean */
#define KVR_ALPHA 0.05          /* what survives: an adjusted p (Holm) or q (BH) below this */

enum { KVR_KEY_REL, KVR_VALUE_REL, KVR_KEY_COS, KVR_VALUE_COS, KVR_METRICS };
static const char *const kvr_metric[KVR_METRICS] = { "key_rel", "value_rel", "key_cos", "value_cos" };

typedef struct { int index, line, n_ids; int32_t *ids; } kvr_question;

/* The runs of one question in flight: run 0 plain, run 1 + c under condition c. */
typedef struct kvr_inflight kvr_inflight;
typedef struct { kvr_inflight *f; int run; } kvr_job;
struct kvr_inflight {
    int qi, left, failed;
    float *kv;                  /* [1 + n_cond, 2 slots, L, 2 (K, V), KVD] */
    codi_steer **drawn;         /* [n_cond] per-question random controls (NULL: none) */
    uint64_t *draw_seed;        /* [n_cond] their seeds */
    kvr_job *jobs;              /* [1 + n_cond] */
};

typedef struct {
    const codi_model *m; const codi_tokenizer *t;
    cli_prompt_args pa;
    const char *model_path, *questions_path, *rows_path;
    int step, keys_pre, limit, controls, draw_per_question, batch;
    uint64_t seed;
    int n_spec, n_cond;         /* condition c: spec c / (1 + controls), control c % (1 + controls) (0: the spec) */
    codi_steer *spec[KVR_MAX_COND], *spec_ctl[KVR_MAX_COND];   /* specs; the spec-draw controls by condition */
    const char *spec_path[KVR_MAX_COND];
    char name[KVR_MAX_COND][160];
    kvr_question *q; int nq, cap_q, max_ids;
    unsigned char *done;        /* [nq] the rows file holds the question */
    FILE *rows;
    int n_done, failed, write_failed;
    cli_progress *progress;
} kvr_ctx;

static int kvr_spec_of(const kvr_ctx *k, int c) { return c / (1 + k->controls); }
static int kvr_control_of(const kvr_ctx *k, int c) { return c % (1 + k->controls); }

/* The seed of control r (1-based) of spec s for question index (--random-draw question): splitmix64
   of --seed, s + 1, r and the index; 53 bits, so that a JSON reader reads the row's draw_seed exactly. */
static uint64_t kvr_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static uint64_t kvr_draw_seed(const kvr_ctx *k, int s, int r, int index) {
    if (!k->draw_per_question) return k->seed + (uint64_t)r - 1;
    return kvr_mix(kvr_mix(kvr_mix(kvr_mix(k->seed) ^ (uint64_t)(s + 1)) ^ (uint64_t)r) ^ (uint64_t)index) >> 11;
}

/* K and V of every layer at slot pos into out [L, 2, KVD]; keys rotated back before RoPE when pre. */
static void kvr_read(const codi_model *m, codi_state *s, int pre, int pos, float *out) {
    int L = m->config.n_layers, KVH = m->config.n_kv_heads, HD = m->config.head_dim, l, h, KVD = KVH * HD;
    for (l = 0; l < L; l++) {
        for (h = 0; h < KVH; h++) {
            memcpy(out + ((size_t)l * 2) * KVD + (size_t)h * HD, codi_state_key(s, l, h, pos), sizeof(float) * HD);
            memcpy(out + ((size_t)l * 2 + 1) * KVD + (size_t)h * HD, codi_state_value(s, l, h, pos), sizeof(float) * HD);
        }
        if (pre) codi_rope_rotate(m, pos, 1, out + ((size_t)l * 2) * KVD, KVH);
    }
}

/* |a - b| / |b| and cos(a, b) of n floats. */
static void kvr_compare(const float *a, const float *b, int n, double *rel, double *cosv) {
    double d = 0, bb = 0, aa = 0, ab = 0;
    int i;
    for (i = 0; i < n; i++) { d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); bb += (double)b[i] * b[i]; aa += (double)a[i] * a[i]; ab += (double)a[i] * b[i]; }
    *rel = bb > 0 ? sqrt(d / bb) : 0;
    *cosv = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 1;
}

/* ---- the rows file ------------------------------------------------------------------------- */

/* The rows file's settings line: what must match for a resume (the analysis options may change). */
static void kvr_rows_header(const kvr_ctx *k, FILE *f) {
    int s;
    fprintf(f, "{\"codi_kv_response_rows\": 1, \"model\": ");
    cli_json_string(f, k->model_path);
    fprintf(f, ", \"questions\": ");
    cli_json_string(f, k->questions_path);
    fprintf(f, ", \"limit\": %d, \"recipe\": %d, \"step\": %d, \"keys\": \"%s\", \"random_controls\": %d, \"random_draw\": \"%s\", \"seed\": %llu, \"specs\": [",
            k->limit, k->pa.recipe, k->step, k->keys_pre ? "pre" : "post", k->controls, k->draw_per_question ? "question" : "spec", (unsigned long long)k->seed);
    for (s = 0; s < k->n_spec; s++) {
        char hash[17] = "";
        if (cli_file_hash(k->spec_path[s], hash)) hash[0] = 0;
        fprintf(f, "%s{\"path\": ", s ? ", " : "");
        cli_json_string(f, k->spec_path[s]);
        fprintf(f, ", \"name\": ");
        cli_json_string(f, k->spec[s]->name);
        fprintf(f, ", \"fnv1a64\": \"%s\"}", hash);
    }
    fprintf(f, "]}\n");
}

/* One question's rows (one line per condition) and its "done" line, then flushed. 0, or -1. */
static int kvr_write_rows(kvr_ctx *k, const kvr_inflight *f) {
    const codi_config *cf = &k->m->config;
    const kvr_question *q = &k->q[f->qi];
    int L = cf->n_layers, KVD = cf->n_kv_heads * cf->head_dim, c, slot, l, w;
    size_t per_run = (size_t)2 * L * 2 * KVD;
    double *v = (double *)malloc(sizeof(double) * KVR_METRICS * 2 * (size_t)L);   /* [metric, slot, layer] */
    if (!v) return -1;
    for (c = 0; c < k->n_cond; c++) {
        int s = kvr_spec_of(k, c), r = kvr_control_of(k, c);
        for (slot = 0; slot < 2; slot++)
            for (l = 0; l < L; l++)
                for (w = 0; w < 2; w++) {
                    size_t off = ((size_t)slot * L + l) * 2 * KVD + (size_t)w * KVD;
                    kvr_compare(f->kv + (1 + (size_t)c) * per_run + off, f->kv + off, KVD, &v[(w * 2 + slot) * L + l], &v[((2 + w) * 2 + slot) * L + l]);
                }
        fprintf(k->rows, "{\"index\": %d, \"line\": %d, \"condition\": %d, \"name\": ", q->index, q->line, c);
        cli_json_string(k->rows, k->name[c]);
        fprintf(k->rows, ", \"spec\": %d, \"control\": %d", s, r);
        if (r) fprintf(k->rows, ", \"draw_seed\": %llu", (unsigned long long)(f->draw_seed ? f->draw_seed[c] : kvr_draw_seed(k, s, r, q->index)));
        for (w = 0; w < KVR_METRICS; w++) {
            fprintf(k->rows, ", \"%s\": [", kvr_metric[w]);
            for (slot = 0; slot < 2; slot++) {
                fprintf(k->rows, "%s[", slot ? ", " : "");
                for (l = 0; l < L; l++) fprintf(k->rows, "%s%.9g", l ? ", " : "", v[(w * 2 + slot) * L + l]);
                fputc(']', k->rows);
            }
            fputc(']', k->rows);
        }
        fputs("}\n", k->rows);
    }
    free(v);
    fprintf(k->rows, "{\"index\": %d, \"line\": %d, \"done\": true}\n", q->index, q->line);
    return fflush(k->rows) || ferror(k->rows) ? -1 : 0;
}

/* What the rows file holds: values [metric, cond, slot, layer, question] (NaN: no row). */
typedef struct { int n_cond, L, nq; double *v; unsigned char *done; } kvr_rows;

static double *kvr_cell(const kvr_rows *R, int w, int c, int slot, int l) {
    return R->v + ((((size_t)w * R->n_cond + c) * 2 + slot) * R->L + l) * R->nq;
}

/* Reads the rows file (header: the settings line it must start with; qi_of [index]: the
   question's position, -1 when it is not in this run). Marks the done questions and returns in
   *good_len where the last done question's lines end (later lines belong to a question cut
   short). 0, 1 when the file is absent or empty, -1 on another run's file or a bad line. */
static int kvr_rows_read(const kvr_ctx *k, const char *header, const int *qi_of, int n_index, kvr_rows *R, long *good_len) {
    size_t len, i;
    char *text = codi_read_text(k->rows_path, &len), *p, err[256];
    int line = 0;
    *good_len = 0;
    if (!text || !len) { free(text); return 1; }
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        if (!e) break;                                       /* an unfinished last line */
        line++;
        if (line == 1) {
            if (strlen(header) != (size_t)(e - p + 1) || strncmp(header, p, (size_t)(e - p))) {
                fprintf(stderr, "codi kv-response: %s holds the rows of another run; give another --rows / --out or delete it.\n  file:    %.*s\n  command: %s",
                        k->rows_path, (int)(e - p), p, header);
                free(text); return -1;
            }
            *good_len = (long)(e + 1 - text);
        } else if ((j = codi_json_parse(p, (size_t)(e - p), err, sizeof err)) != NULL) {
            const codi_json *iv = codi_json_get(j, "index"), *cv = codi_json_get(j, "condition");
            int index = iv && iv->type == CODI_JSON_NUM ? (int)iv->num : -1, qi = index >= 0 && index < n_index ? qi_of[index] : -1;
            int c = cv && cv->type == CODI_JSON_NUM ? (int)cv->num : -1, w, slot, l, bad = qi < 0;
            if (!bad && codi_json_get(j, "done")) {
                R->done[qi] = 1;
                *good_len = (long)(e + 1 - text);
            } else if (!bad && c >= 0 && c < R->n_cond) {
                for (w = 0; w < KVR_METRICS && !bad; w++) {
                    const codi_json *a = codi_json_get(j, kvr_metric[w]), *x, *y;
                    for (y = a && a->type == CODI_JSON_ARR ? a->child : NULL, slot = 0; y && slot < 2 && !bad; y = y->next, slot++) {
                        for (x = y->type == CODI_JSON_ARR ? y->child : NULL, l = 0; x && l < R->L && x->type == CODI_JSON_NUM; x = x->next, l++)
                            kvr_cell(R, w, c, slot, l)[qi] = x->num;
                        bad = x || l != R->L;                /* [slot][layer] numbers, L of them */
                    }
                    if (y || slot != 2) bad = 1;
                }
            } else bad = 1;
            codi_json_free(j);
            if (bad) {
                fprintf(stderr, "codi kv-response: %s:%d: not a row of this run (question %d, condition %d, or %d layers x 2 slots of %s)\n",
                        k->rows_path, line, index, c, R->L, "key_rel, value_rel, key_cos, value_cos");
                free(text); return -1;
            }
        } else { fprintf(stderr, "codi kv-response: %s:%d: %s\n", k->rows_path, line, err); free(text); return -1; }
        p = e + 1;
    }
    free(text);
    for (i = 0; i < (size_t)R->nq; i++) if (R->done[i]) {   /* a done question has every condition's row */
        int w, c, slot, l;
        for (w = 0; w < KVR_METRICS; w++) for (c = 0; c < R->n_cond; c++) for (slot = 0; slot < 2; slot++) for (l = 0; l < R->L; l++)
            if (kvr_cell(R, w, c, slot, l)[i] != kvr_cell(R, w, c, slot, l)[i]) {
                fprintf(stderr, "codi kv-response: %s: question %d is done but has no row for condition %d\n", k->rows_path, k->q[i].index, c);
                return -1;
            }
    }
    return 0;
}

static int kvr_rows_alloc(kvr_rows *R, int n_cond, int L, int nq) {
    size_t n = (size_t)KVR_METRICS * n_cond * 2 * L * nq, i;
    R->n_cond = n_cond; R->L = L; R->nq = nq;
    R->v = (double *)malloc(sizeof(double) * (n ? n : 1));
    R->done = (unsigned char *)calloc((size_t)nq ? (size_t)nq : 1, 1);
    if (!R->v || !R->done) return -1;
    for (i = 0; i < n; i++) R->v[i] = NAN;
    return 0;
}

/* ---- running ----------------------------------------------------------------------------- */

static int kvr_collect(void *user, const cli_question *cq) {
    kvr_ctx *k = (kvr_ctx *)user;
    cli_prompt_args pa = k->pa;
    int32_t ids[CLI_MAX_PROMPT];
    int n;
    pa.question = cq->question;
    if ((n = cli_prompt_ids(&pa, k->m, k->t, ids, CLI_MAX_PROMPT)) < 0) { fprintf(stderr, "codi kv-response: %s:%d: cannot make the prompt\n", k->questions_path, cq->line); k->failed++; return 0; }
    if (k->nq == k->cap_q) {
        int cap = k->cap_q ? 2 * k->cap_q : 64;
        kvr_question *g = (kvr_question *)realloc(k->q, sizeof *g * (size_t)cap);
        if (!g) { fprintf(stderr, "codi: out of memory\n"); return -1; }
        k->q = g; k->cap_q = cap;
    }
    if (!(k->q[k->nq].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n))) { fprintf(stderr, "codi: out of memory\n"); return -1; }
    memcpy(k->q[k->nq].ids, ids, sizeof(int32_t) * (size_t)n);
    k->q[k->nq].n_ids = n; k->q[k->nq].index = cq->index; k->q[k->nq].line = cq->line;
    if (n > k->max_ids) k->max_ids = n;
    k->nq++;
    return 0;
}

static void kvr_inflight_free(kvr_inflight *f, int n_cond) {
    int c;
    if (!f) return;
    for (c = 0; f->drawn && c < n_cond; c++) codi_steer_free(f->drawn[c]);
    free(f->drawn); free(f->draw_seed); free(f->jobs); free(f->kv); free(f);
}

/* A run ended: its two slots' K / V kept; the question's rows written when its last run ends. */
static int kvr_done(void *user, const codi_batch_result *r) {
    kvr_ctx *k = (kvr_ctx *)user;
    kvr_job *j = (kvr_job *)r->user;
    kvr_inflight *f = j->f;
    const kvr_question *q = &k->q[f->qi];
    size_t per_slot = (size_t)k->m->config.n_layers * 2 * k->m->config.n_kv_heads * k->m->config.head_dim;
    int slot;
    if (r->status) {
        if (!f->failed) fprintf(stderr, "codi kv-response: %s:%d: %s: %s\n", k->questions_path, q->line, j->run ? k->name[j->run - 1] : "plain run", r->error);
        f->failed = 1;
    } else
        for (slot = 0; slot < 2; slot++)        /* latent l's slot is T0 + l - 1; the next one follows */
            kvr_read(k->m, r->state, k->keys_pre, q->n_ids + k->step - 1 + slot, f->kv + ((size_t)j->run * 2 + slot) * per_slot);
    if (--f->left) return 0;
    if (f->failed || k->write_failed) k->failed++;   /* after a write error the runs in flight only end */
    else if (kvr_write_rows(k, f)) { fprintf(stderr, "codi kv-response: error writing %s: %s\n", k->rows_path, strerror(errno)); k->write_failed = 1; }
    else k->n_done++;
    kvr_inflight_free(f, k->n_cond);
    cli_progress_update(k->progress, k->n_done + k->failed);
    return 0;
}

/* Queues question qi's 1 + n_cond runs. 0, or -1 after a message. */
static int kvr_submit(kvr_ctx *k, codi_batch *b, int qi) {
    const codi_config *cf = &k->m->config;
    const kvr_question *q = &k->q[qi];
    kvr_inflight *f = (kvr_inflight *)calloc(1, sizeof *f);
    int run, n_runs = 1 + k->n_cond, submitted = 0;
    if (!f || !(f->kv = (float *)malloc(sizeof(float) * (size_t)n_runs * 2 * cf->n_layers * 2 * cf->n_kv_heads * cf->head_dim)) ||
        !(f->jobs = (kvr_job *)calloc((size_t)n_runs, sizeof *f->jobs))) goto oom;
    f->qi = qi; f->left = n_runs;
    if (k->draw_per_question && k->controls) {
        int c;
        if (!(f->drawn = (codi_steer **)calloc((size_t)k->n_cond, sizeof *f->drawn)) || !(f->draw_seed = (uint64_t *)calloc((size_t)k->n_cond, sizeof *f->draw_seed))) goto oom;
        for (c = 0; c < k->n_cond; c++) {
            int s = kvr_spec_of(k, c), r = kvr_control_of(k, c);
            if (!r) continue;
            f->draw_seed[c] = kvr_draw_seed(k, s, r, q->index);
            if (!(f->drawn[c] = codi_steer_random_like(k->spec[s], f->draw_seed[c]))) goto oom;
        }
    }
    for (run = 0; run < n_runs; run++) {
        codi_batch_request rq;
        int c = run - 1;
        memset(&rq, 0, sizeof rq);
        rq.ids = q->ids; rq.n_ids = q->n_ids;
        rq.opts = codi_run_opts_default(k->m);
        rq.opts.n_latent = k->step + 1; rq.opts.max_answer = 0; rq.opts.feed_eot = 0;   /* the latents only */
        if (c >= 0) rq.steer = f->drawn && f->drawn[c] ? f->drawn[c] : kvr_control_of(k, c) ? k->spec_ctl[c] : k->spec[kvr_spec_of(k, c)];
        f->jobs[run].f = f; f->jobs[run].run = run;
        rq.user = &f->jobs[run];
        if (codi_batch_submit(b, &rq)) {
            fprintf(stderr, "codi kv-response: %s:%d: %s\n", k->questions_path, q->line, codi_batch_error(b));
            f->failed = 1;
            if (!submitted) { kvr_inflight_free(f, k->n_cond); k->failed++; return 0; }
            f->left -= n_runs - run;             /* the runs queued end and release f */
            return 0;
        }
        submitted++;
    }
    return 0;
oom:
    fprintf(stderr, "codi: out of memory\n");
    kvr_inflight_free(f, k->n_cond);
    return -1;
}

/* Every question not in the rows file, through one batched runner of k->batch runs. 0, or -1. */
static int kvr_run_all(kvr_ctx *k, int n_threads) {
    codi_batch *b;
    int qi = 0, rc = 0;
    long runs = 0;
    for (qi = 0; qi < k->nq; qi++) runs += k->done[qi] ? 0 : 1 + k->n_cond;
    if (!runs) return 0;
    if (!(b = codi_batch_new(k->m, runs < k->batch ? (int)runs : k->batch, k->max_ids + k->step + 3, n_threads))) { fprintf(stderr, "codi: out of memory\n"); return -1; }
    qi = 0;
    for (;;) {
        while (!rc && !k->write_failed && qi < k->nq && codi_batch_pending(b) < 2 * k->batch) {   /* keep a batch's worth queued */
            if (!k->done[qi] && kvr_submit(k, b, qi)) rc = -1;
            qi++;
        }
        if (!codi_batch_pending(b)) break;
        if (codi_batch_step(b, kvr_done, k) < 0) {   /* out of memory: the runs in flight are lost */
            fprintf(stderr, "codi kv-response: %s\n", codi_batch_error(b));
            rc = -1; break;
        }
    }
    codi_batch_free(b);
    return rc || k->write_failed ? -1 : 0;
}

/* ---- statistics -------------------------------------------------------------------------- */

/* Two-sided sign-flip permutation test of "the mean of d [n] is 0": the share of sign patterns
   whose |sum s_i d_i| reaches |sum d_i| (a relative 1e-12 below it counts as a tie, as scipy's
   permutation_test does); exact over all 2^n patterns when 2^n <= n_perm (*exact = 1), else
   (1 + hits) / (1 + n_perm) over n_perm seeded random patterns. */
static double kvr_sign_flip_p(const double *d, int n, int n_perm, uint64_t seed, int *exact) {
    double t = 0, at, tol;
    long hits = 0, i;
    int j;
    for (j = 0; j < n; j++) t += d[j];
    at = fabs(t); tol = 1e-12 * at;
    *exact = n < 31 && (1L << n) <= n_perm;
    if (*exact) {                                /* Gray code: one sign changes per pattern */
        double s = t;
        unsigned long g = 0, total = 1UL << n, u;
        for (u = 0; u < total; u++) {
            if (u) {
                unsigned long ng = u ^ (u >> 1), bit = g ^ ng;
                int pos = 0;
                while (!(bit & 1)) { bit >>= 1; pos++; }
                s += (ng >> pos & 1) ? -2 * d[pos] : 2 * d[pos];
                g = ng;
            }
            hits += fabs(s) >= at - tol;
        }
        return (double)hits / (double)total;
    } else {
        codi_rng rng;
        codi_rng_seed(&rng, seed);
        for (i = 0; i < n_perm; i++) {
            double s = 0;
            for (j = 0; j < n; j++) s += codi_rng_uniform(&rng) < 0.5 ? -d[j] : d[j];
            hits += fabs(s) >= at - tol;
        }
        return (1.0 + (double)hits) / (1.0 + (double)n_perm);
    }
}

/* One paired test: spec, slot, layer, keys (0) or values (1). */
typedef struct { int spec, slot, layer, w, exact; codi_mean_ci ci; double p, holm, bh; } kvr_test;

typedef struct {
    codi_mean_ci *cell;         /* [cond, slot, layer, metric] */
    codi_mean_ci *avg;          /* [cond, slot]: value_rel averaged over the layers, per question */
    kvr_test *test; int n_tests, n_holm, n_bh, n;
    int *qi;                    /* [n] the done questions */
} kvr_summary;

static void kvr_summary_free(kvr_summary *S) { free(S->cell); free(S->avg); free(S->test); free(S->qi); }

static int kvr_summarize(const kvr_ctx *k, const kvr_rows *R, int n_perm, kvr_summary *S) {
    int L = R->L, c, slot, l, w, i, s, r;
    double *x = NULL, *p = NULL, *adj = NULL;
    memset(S, 0, sizeof *S);
    S->cell = (codi_mean_ci *)calloc((size_t)k->n_cond * 2 * L * KVR_METRICS, sizeof *S->cell);
    S->avg = (codi_mean_ci *)calloc((size_t)k->n_cond * 2, sizeof *S->avg);
    S->test = (kvr_test *)calloc((size_t)(k->controls ? k->n_spec * 2 * L * 2 : 1), sizeof *S->test);
    S->qi = (int *)malloc(sizeof(int) * (size_t)(R->nq ? R->nq : 1));
    x = (double *)malloc(sizeof(double) * (size_t)(R->nq ? R->nq : 1));
    if (!S->cell || !S->avg || !S->test || !S->qi || !x) goto oom;
    for (i = 0; i < R->nq; i++) if (R->done[i]) S->qi[S->n++] = i;
    for (c = 0; c < k->n_cond; c++)
        for (slot = 0; slot < 2; slot++) {
            for (l = 0; l < L; l++)
                for (w = 0; w < KVR_METRICS; w++) {
                    const double *v = kvr_cell(R, w, c, slot, l);
                    for (i = 0; i < S->n; i++) x[i] = v[S->qi[i]];
                    if (codi_bootstrap_mean(x, S->n, KVR_NBOOT, k->seed, &S->cell[(((size_t)c * 2 + slot) * L + l) * KVR_METRICS + w]) && S->n) goto oom;
                }
            for (i = 0; i < S->n; i++) {
                x[i] = 0;
                for (l = 0; l < L; l++) x[i] += kvr_cell(R, KVR_VALUE_REL, c, slot, l)[S->qi[i]];
                x[i] /= L;
            }
            if (codi_bootstrap_mean(x, S->n, KVR_NBOOT, k->seed, &S->avg[c * 2 + slot]) && S->n) goto oom;
        }
    if (k->controls) {
        for (s = 0; s < k->n_spec; s++)
            for (slot = 0; slot < 2; slot++)
                for (l = 0; l < L; l++)
                    for (w = 0; w < 2; w++) {
                        kvr_test *t = &S->test[S->n_tests++];
                        int c0 = s * (1 + k->controls);
                        t->spec = s; t->slot = slot; t->layer = l; t->w = w;
                        for (i = 0; i < S->n; i++) {
                            double m = 0;
                            for (r = 1; r <= k->controls; r++) m += kvr_cell(R, w, c0 + r, slot, l)[S->qi[i]];
                            x[i] = kvr_cell(R, w, c0, slot, l)[S->qi[i]] - m / k->controls;
                        }
                        if (codi_mean_interval(x, S->n, &t->ci) && S->n) goto oom;
                        t->p = S->n ? kvr_sign_flip_p(x, S->n, n_perm, k->seed + (uint64_t)S->n_tests, &t->exact) : NAN;
                    }
        p = (double *)malloc(sizeof(double) * (size_t)S->n_tests);
        adj = (double *)malloc(sizeof(double) * (size_t)S->n_tests);
        if (!p || !adj) goto oom;
        for (i = 0; i < S->n_tests; i++) p[i] = S->test[i].p;
        if (codi_holm(p, S->n_tests, adj)) goto oom;
        for (i = 0; i < S->n_tests; i++) { S->test[i].holm = adj[i]; S->n_holm += adj[i] < KVR_ALPHA; }
        if (codi_bh(p, S->n_tests, adj)) goto oom;
        for (i = 0; i < S->n_tests; i++) { S->test[i].bh = adj[i]; S->n_bh += adj[i] < KVR_ALPHA; }
    }
    free(x); free(p); free(adj);
    return 0;
oom:
    fprintf(stderr, "codi kv-response: out of memory (or a non-finite value in the rows)\n");
    free(x); free(p); free(adj);
    return -1;
}

/* ---- outputs ----------------------------------------------------------------------------- */

static void kvr_csv_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) { if (*s == '"') fputc('"', f); fputc(*s, f); }
    fputc('"', f);
}

static void kvr_csv_num(FILE *f, double v) { if (v - v == 0) fprintf(f, ",%.9g", v); else fputs(",", f); }

static void kvr_json_ci(FILE *f, const char *key, const codi_mean_ci *ci) {
    fprintf(f, "\"%s\": {\"mean\": ", key); cli_json_number(f, ci->mean);
    fputs(", \"se\": ", f); cli_json_number(f, ci->se);
    fputs(", \"lo\": ", f); cli_json_number(f, ci->lo);
    fputs(", \"hi\": ", f); cli_json_number(f, ci->hi);
    fputc('}', f);
}

static const char *kvr_test_name(const kvr_summary *S, int n_perm, char *buf, size_t cap) {
    int i, exact = 1;
    for (i = 0; i < S->n_tests; i++) exact &= S->test[i].exact;
    if (exact) snprintf(buf, cap, "two-sided sign-flip permutation test, exact (2^%d sign patterns)", S->n);
    else snprintf(buf, cap, "two-sided sign-flip permutation test, Monte Carlo (%d seeded sign patterns, p = (1 + hits) / (1 + %d))", n_perm, n_perm);
    return buf;
}

static int kvr_write_csv(const kvr_ctx *k, const kvr_summary *S, const char *out) {
    int L = k->m->config.n_layers, c, slot, l, w, i;
    char path[4200];
    FILE *f;
    snprintf(path, sizeof path, "%s.csv", out);
    if (!(f = cli_out_open(path, "w"))) return -1;
    fprintf(f, "condition,spec,control,slot,latent,layer,questions,ci_method");
    for (w = 0; w < KVR_METRICS; w++) fprintf(f, ",%s,%s_se,%s_lo,%s_hi", kvr_metric[w], kvr_metric[w], kvr_metric[w], kvr_metric[w]);
    fputc('\n', f);
    for (c = 0; c < k->n_cond; c++)
        for (slot = 0; slot < 2; slot++)
            for (l = 0; l < L; l++) {
                kvr_csv_string(f, k->name[c]);
                fprintf(f, ",%d,%d,%s,%d,%d,%d,bootstrap", kvr_spec_of(k, c), kvr_control_of(k, c), slot ? "next" : "steered", k->step + slot, l, S->n);
                for (w = 0; w < KVR_METRICS; w++) {
                    const codi_mean_ci *ci = &S->cell[(((size_t)c * 2 + slot) * L + l) * KVR_METRICS + w];
                    kvr_csv_num(f, ci->mean); kvr_csv_num(f, ci->se); kvr_csv_num(f, ci->lo); kvr_csv_num(f, ci->hi);
                }
                fputc('\n', f);
            }
    if (cli_out_close(f)) return -1;
    if (!k->controls) return 0;
    snprintf(path, sizeof path, "%s_paired.csv", out);
    if (!(f = cli_out_open(path, "w"))) return -1;
    fprintf(f, "spec,slot,latent,layer,kv,questions,controls,diff,diff_se,diff_lo,diff_hi,ci_method,p,test,p_holm,q_bh,survives_holm,survives_bh\n");
    for (i = 0; i < S->n_tests; i++) {
        const kvr_test *t = &S->test[i];
        kvr_csv_string(f, k->name[t->spec * (1 + k->controls)]);
        fprintf(f, ",%s,%d,%d,%s,%d,%d", t->slot ? "next" : "steered", k->step + t->slot, t->layer, t->w ? "value" : "key", S->n, k->controls);
        kvr_csv_num(f, t->ci.mean); kvr_csv_num(f, t->ci.se); kvr_csv_num(f, t->ci.lo); kvr_csv_num(f, t->ci.hi);
        fputs(",t", f);
        kvr_csv_num(f, t->p);
        fprintf(f, ",%s", t->exact ? "sign_flip_exact" : "sign_flip_monte_carlo");
        kvr_csv_num(f, t->holm); kvr_csv_num(f, t->bh);
        fprintf(f, ",%d,%d\n", t->holm < KVR_ALPHA, t->bh < KVR_ALPHA);
    }
    return cli_out_close(f);
}

static int kvr_write_json(const kvr_ctx *k, const kvr_summary *S, const char *out, int n_perm) {
    int L = k->m->config.n_layers, c, slot, l, w, i;
    char path[4200], tn[160];
    FILE *f;
    snprintf(path, sizeof path, "%s.json", out);
    if (!(f = cli_out_open(path, "w"))) return -1;
    fprintf(f, "{\"command\": \"kv-response\", \"rows_file\": ");
    cli_json_string(f, k->rows_path);
    fprintf(f, ", \"questions\": %d, \"step\": %d, \"keys\": \"%s\", \"random_controls\": %d, \"random_draw\": \"%s\", \"seed\": %llu,\n",
            S->n, k->step, k->keys_pre ? "pre" : "post", k->controls, k->draw_per_question ? "question" : "spec", (unsigned long long)k->seed);
    fprintf(f, " \"ci_method\": {\"means\": \"bootstrap\", \"bootstrap_resamples\": %d, \"bootstrap_seed\": %llu, \"paired_differences\": \"t\"},\n",
            KVR_NBOOT, (unsigned long long)k->seed);
    fprintf(f, " \"test\": ");
    cli_json_string(f, k->controls ? kvr_test_name(S, n_perm, tn, sizeof tn) : "none (no random controls)");
    fprintf(f, ", \"permutations\": %d, \"alpha\": %g, \"tests\": %d, \"survivors_holm\": %d, \"survivors_bh\": %d,\n \"cells\": [",
            n_perm, KVR_ALPHA, S->n_tests, S->n_holm, S->n_bh);
    for (c = 0; c < k->n_cond; c++)
        for (slot = 0; slot < 2; slot++)
            for (l = 0; l < L; l++) {
                fprintf(f, "%s\n  {\"condition\": ", c || slot || l ? "," : "");
                cli_json_string(f, k->name[c]);
                fprintf(f, ", \"spec\": %d, \"control\": %d, \"slot\": \"%s\", \"latent\": %d, \"layer\": %d", kvr_spec_of(k, c), kvr_control_of(k, c), slot ? "next" : "steered", k->step + slot, l);
                for (w = 0; w < KVR_METRICS; w++) { fputs(", ", f); kvr_json_ci(f, kvr_metric[w], &S->cell[(((size_t)c * 2 + slot) * L + l) * KVR_METRICS + w]); }
                fputc('}', f);
            }
    fprintf(f, "],\n \"paired\": [");
    for (i = 0; i < S->n_tests; i++) {
        const kvr_test *t = &S->test[i];
        fprintf(f, "%s\n  {\"spec\": ", i ? "," : "");
        cli_json_string(f, k->name[t->spec * (1 + k->controls)]);
        fprintf(f, ", \"slot\": \"%s\", \"latent\": %d, \"layer\": %d, \"kv\": \"%s\", ", t->slot ? "next" : "steered", k->step + t->slot, t->layer, t->w ? "value" : "key");
        kvr_json_ci(f, "diff", &t->ci);
        fputs(", \"p\": ", f); cli_json_number(f, t->p);
        fputs(", \"p_holm\": ", f); cli_json_number(f, t->holm);
        fputs(", \"q_bh\": ", f); cli_json_number(f, t->bh);
        fprintf(f, ", \"survives_holm\": %s, \"survives_bh\": %s}", t->holm < KVR_ALPHA ? "true" : "false", t->bh < KVR_ALPHA ? "true" : "false");
    }
    fprintf(f, "]}\n");
    return cli_out_close(f);
}

/* A heatmap of condition x layer: the mean relative change of values (w = 1) or keys (w = 0) at a
   slot, each cell labelled with its 95% bootstrap interval. */
static int kvr_heatmap(const kvr_ctx *k, const kvr_summary *S, const char *prefix, int slot, int w) {
    int L = k->m->config.n_layers, c, l, rc = 0;
    size_t cells = (size_t)k->n_cond * L;
    double *v = (double *)malloc(sizeof(double) * cells), hi = 0;
    size_t widest = 0;
    char path[4200], title[160], sub[160], (*cols)[12] = (char (*)[12])malloc(12 * (size_t)L), (*txt)[32] = (char (*)[32])malloc(32 * cells);
    const char **colp = (const char **)malloc(sizeof(char *) * (size_t)L), **txtp = (const char **)malloc(sizeof(char *) * cells), *namep[KVR_MAX_COND];
    svg_heatmap_spec sp;
    if (!v || !cols || !colp || !txt || !txtp) { free(v); free(cols); free(colp); free(txt); free(txtp); fprintf(stderr, "codi: out of memory\n"); return -1; }
    for (c = 0; c < k->n_cond; c++) {
        namep[c] = k->name[c];
        for (l = 0; l < L; l++) {
            const codi_mean_ci *ci = &S->cell[(((size_t)c * 2 + slot) * L + l) * KVR_METRICS + w];
            size_t i = (size_t)c * L + l;
            v[i] = ci->mean;
            if (v[i] > hi) hi = v[i];
            if (ci->lo == ci->lo) snprintf(txt[i], 32, "[%.2g, %.2g]", ci->lo, ci->hi); else snprintf(txt[i], 32, "%.2g", ci->mean);
            txtp[i] = txt[i];
            if (strlen(txt[i]) > widest) widest = strlen(txt[i]);
        }
    }
    for (l = 0; l < L; l++) { snprintf(cols[l], 12, "%d", l); colp[l] = cols[l]; }
    memset(&sp, 0, sizeof sp);
    snprintf(title, sizeof title, "relative change of cached %s at the %s slot (step %d%s)", w ? "values" : "keys",
             slot ? "next latent's" : "steered latent's", k->step + slot, slot ? ", one latent after the edit" : "");
    snprintf(sub, sizeof sub, "colour: the mean over %d questions; text: its 95%% bootstrap interval", S->n);
    sp.rows = k->n_cond; sp.cols = L; sp.value = v; sp.vmin = 0; sp.vmax = hi > 0 ? hi : 1; sp.colormap = SVG_VIRIDIS;
    sp.row_labels = namep; sp.col_labels = colp; sp.title = title; sp.subtitle = sub; sp.xlabel = "layer"; sp.ylabel = "condition";
    sp.colorbar_label = "|KV' - KV| / |KV|"; sp.cell_w = 7.0 * (double)widest + 10; sp.cell_h = 20;   /* font 11: about 7 px a character */ sp.cell_text = txtp;
    snprintf(path, sizeof path, "%s_%s_%s.svg", prefix, slot ? "next" : "steered", w ? "values" : "keys");
    if (svg_heatmap(path, &sp)) rc = -1;
    free(v); free(cols); free(colp); free(txt); free(txtp);
    return rc;
}

/* The paired differences (steered - random) by layer at a slot, keys and values of every spec,
   with their 95% t intervals. */
static int kvr_paired_plot(const kvr_ctx *k, const kvr_summary *S, const char *prefix, int slot) {
    int L = k->m->config.n_layers, n_series = 2 * k->n_spec, i, rc;
    double *y = (double *)malloc(sizeof(double) * (size_t)n_series * L * 3);
    char path[4200], title[200], sub[200], (*names)[200] = (char (*)[200])malloc(200 * (size_t)n_series), (*xl)[12] = (char (*)[12])malloc(12 * (size_t)L);
    const char **np = (const char **)malloc(sizeof(char *) * (size_t)n_series), **xp = (const char **)malloc(sizeof(char *) * (size_t)L);
    svg_interval_spec sp;
    if (!y || !names || !xl || !np || !xp) { free(y); free(names); free(xl); free(np); free(xp); fprintf(stderr, "codi: out of memory\n"); return -1; }
    for (i = 0; i < n_series * L * 3; i++) y[i] = NAN;
    for (i = 0; i < n_series; i++) { snprintf(names[i], 200, "%s: %s", k->name[(i / 2) * (1 + k->controls)], i % 2 ? "values" : "keys"); np[i] = names[i]; }
    for (i = 0; i < L; i++) { snprintf(xl[i], 12, "%d", i); xp[i] = xl[i]; }
    for (i = 0; i < S->n_tests; i++) {
        const kvr_test *t = &S->test[i];
        size_t o = ((size_t)t->spec * 2 + t->w) * L + t->layer;
        if (t->slot != slot) continue;
        y[o] = t->ci.mean; y[(size_t)n_series * L + o] = t->ci.lo; y[(size_t)2 * n_series * L + o] = t->ci.hi;
    }
    memset(&sp, 0, sizeof sp);
    snprintf(title, sizeof title, "steered minus random: relative K / V change at the %s slot (step %d)", slot ? "next latent's" : "steered latent's", k->step + slot);
    snprintf(sub, sizeof sub, "mean over %d questions of the difference to the mean of %d random controls, 95%% t intervals; %d of %d tests survive Holm", S->n, k->controls, S->n_holm, S->n_tests);
    sp.n_series = n_series; sp.n_points = L; sp.y = y; sp.lo = y + (size_t)n_series * L; sp.hi = y + (size_t)2 * n_series * L;
    sp.names = np; sp.x_labels = xp; sp.title = title; sp.subtitle = sub; sp.xlabel = "layer"; sp.ylabel = "difference of |KV' - KV| / |KV|";
    snprintf(path, sizeof path, "%s_paired_%s.svg", prefix, slot ? "next" : "steered");
    rc = svg_intervals(path, &sp);
    free(y); free(names); free(xl); free(np); free(xp);
    return rc;
}

/* stdout: one JSON line per condition (layer-averaged value change at both slots, with intervals)
   and a last line with the tests. */
static void kvr_print(const kvr_ctx *k, const kvr_summary *S, int n_perm) {
    int c;
    char tn[160];
    for (c = 0; c < k->n_cond; c++) {
        printf("{\"condition\": ");
        cli_json_string(stdout, k->name[c]);
        printf(", \"spec\": %d, \"control\": %d, \"questions\": %d, \"step\": %d, \"ci_method\": \"bootstrap\", ", kvr_spec_of(k, c), kvr_control_of(k, c), S->n, k->step);
        kvr_json_ci(stdout, "value_rel_change_steered", &S->avg[c * 2]);
        printf(", ");
        kvr_json_ci(stdout, "value_rel_change_next", &S->avg[c * 2 + 1]);
        printf("}\n");
    }
    printf("{\"tests\": %d, \"survivors_holm\": %d, \"survivors_bh\": %d, \"alpha\": %g, \"test\": ", S->n_tests, S->n_holm, S->n_bh, KVR_ALPHA);
    cli_json_string(stdout, k->controls ? kvr_test_name(S, n_perm, tn, sizeof tn) : "none (no random controls)");
    printf(", \"family\": \"specs x 2 slots x layers x {key, value}\", \"paired_ci_method\": \"t\"}\n");
}

static int kv_response_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    cli_list specs;
    const char *questions = NULL, *out = NULL, *keys = NULL, *rows = NULL, *draw = "spec";
    int limit = 0, controls = 1, seed = 1, step = 3, keys_pre, force = 0, batch = CLI_BATCH_DEFAULT, n_perm = 10000;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        CLI_RECIPE_OPT(&pa.recipe),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE", "JSONL questions (required)" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "only the first N questions (0: all)" },
        { "--steer", CLI_LIST, &specs, 0, 0, "SPEC.json", "a steering spec editing latent step --step (repeatable; at least one)" },
        { "--step", CLI_INT, &step, 1, 999, "L", "the steered latent step: runs L + 1 latents and reads slots L and L + 1 (3)" },
        { "--random-controls", CLI_INT, &controls, 0, 8, "N", "per spec, N seeded random directions of the same shape and norm (1; 0: no paired tests)" },
        { "--random-draw", CLI_STR, &draw, 0, 0, "spec|question", "random controls drawn once per spec (default: control K from seed S+K-1) or per question (seeded from S, the spec, K and the question index)" },
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "seed of the random controls, the bootstrap and Monte Carlo sign patterns (1)" },
        { "--permutations", CLI_INT, &n_perm, 100, 100000000, "N", "sign-flip test: exact when 2^questions <= N, else N seeded random sign patterns (10000)" },
        { "--batch", CLI_INT, &batch, 1, 1024, "N", "runs advanced together through one pass over the weights (codi_batch_*) on all --threads; "
          "1: one run at a time (codi_run's results bit for bit); default " CLI_QUOTE(CLI_BATCH_DEFAULT) },
        { "--out", CLI_STR, &out, 0, 0, "PREFIX", "writes PREFIX.csv, PREFIX_paired.csv, PREFIX.json and SVG plots (required)" },
        { "--rows", CLI_STR, &rows, 0, 0, "FILE.jsonl", "per-question rows, flushed per question, resumed (default PREFIX_rows.jsonl)" },
        { "--keys", CLI_STR, &keys, 0, 0, "post|pre", "keys compared after RoPE, as cached (default), or before RoPE (same numbers up to rounding: see above)" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    kvr_ctx k;
    kvr_rows R;
    kvr_summary S;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    int prc, i, r, c, rc = 1, L, *qi_of = NULL, n_index = 0, before = 0, n_bad = 0;
    long good = 0;
    char rows_default[4200], path[4200], *header = NULL;
    size_t header_len = 0;
    memset(&specs, 0, sizeof specs);
    memset(&k, 0, sizeof k); memset(&R, 0, sizeof R); memset(&S, 0, sizeof S);
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!questions || !out || !specs.n) { fprintf(stderr, "codi kv-response: --questions, --steer and --out are required\n"); return 2; }
    if ((keys_pre = cli_keys_option("kv-response", keys)) < 0) return 2;
    if (strcmp(draw, "spec") && strcmp(draw, "question")) { fprintf(stderr, "codi kv-response: --random-draw is spec or question, not '%s'\n", draw); return 2; }
    if (specs.n * (1 + controls) > KVR_MAX_COND) { fprintf(stderr, "codi kv-response: at most %d conditions (specs x (1 + controls))\n", KVR_MAX_COND); return 2; }
    if (!rows) { snprintf(rows_default, sizeof rows_default, "%s_rows.jsonl", out); rows = rows_default; }
    {
        const char *in[CLI_LIST_MAX + 3], *sfx[] = { ".csv", "_paired.csv", ".json", "_steered_keys.svg", "_steered_values.svg", "_next_keys.svg",
                                                      "_next_values.svg", "_paired_steered.svg", "_paired_next.svg" };
        int n_in = 0;
        in[n_in++] = ma.model; in[n_in++] = ma.tokenizer; in[n_in++] = questions;
        for (i = 0; i < specs.n; i++) in[n_in++] = specs.v[i];
        if (cli_out_check("kv-response", rows, CLI_OUT_RESUME, force, in, n_in)) return 2;
        for (i = 0; i < CLI_N(sfx); i++) {      /* the summary is rewritten from the (resumed) rows */
            snprintf(path, sizeof path, "%s%s", out, sfx[i]);
            if (cli_out_check("kv-response", path, CLI_OUT_RESUME | CLI_OUT_STREAM, force, in, n_in)) return 2;
        }
    }
    if (!(m = cli_load_model(&ma)) || !(t = cli_load_tokenizer(&ma, m, 0))) goto done;
    L = m->config.n_layers;
    k.m = m; k.t = t; k.pa = pa; k.step = step; k.keys_pre = keys_pre; k.limit = limit; k.controls = controls;
    k.draw_per_question = !strcmp(draw, "question"); k.seed = (uint64_t)seed; k.batch = batch;
    k.questions_path = questions; k.rows_path = rows; k.model_path = ma.model;
    for (i = 0; i < specs.n; i++) {
        char err[1024];
        codi_steer *st = codi_steer_load(m, specs.v[i], err, sizeof err);
        codi_state *probe;
        codi_run_opts ro = codi_run_opts_default(m);
        if (!st) { fprintf(stderr, "codi kv-response: %s: %s\n", specs.v[i], err); goto done; }
        k.spec[k.n_spec] = st; k.spec_path[k.n_spec] = specs.v[i]; k.n_spec++;
        ro.n_latent = step + 1;                  /* the spec must fit a run of step + 1 latents */
        if (!(probe = codi_state_new(m, 8, 1))) { fprintf(stderr, "codi: out of memory\n"); goto done; }
        if (codi_steer_install(st, probe, &ro)) {
            fprintf(stderr, "codi kv-response: %s: %s (the runs have --step + 1 = %d latent steps)\n", specs.v[i], probe->error, step + 1);
            codi_state_free(probe); goto done;
        }
        codi_state_free(probe);
        for (r = 0; r <= controls; r++) {
            c = k.n_cond++;
            if (!r) snprintf(k.name[c], sizeof k.name[0], "%s", st->name);
            else snprintf(k.name[c], sizeof k.name[0], "%s~random%d", st->name, r);
            if (r && !k.draw_per_question && !(k.spec_ctl[c] = codi_steer_random_like(st, kvr_draw_seed(&k, i, r, 0)))) { fprintf(stderr, "codi: out of memory\n"); goto done; }
        }
    }
    if (cli_for_each_question(questions, limit, 0, 0, kvr_collect, &k, &n_bad) < 0) goto done;
    if (!k.nq) { fprintf(stderr, "codi kv-response: no question could be prompted\n"); goto done; }
    for (i = 0; i < k.nq; i++) if (k.q[i].index + 1 > n_index) n_index = k.q[i].index + 1;
    if (!(qi_of = (int *)malloc(sizeof(int) * (size_t)n_index)) || kvr_rows_alloc(&R, k.n_cond, L, k.nq)) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    for (i = 0; i < n_index; i++) qi_of[i] = -1;
    for (i = 0; i < k.nq; i++) qi_of[k.q[i].index] = i;
    /* the rows file: resumed when its settings match; the lines of a question cut short dropped */
    {
        FILE *hf = open_memstream(&header, &header_len);
        if (!hf) { fprintf(stderr, "codi: out of memory\n"); goto done; }
        kvr_rows_header(&k, hf);
        if (fclose(hf)) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    }
    if ((r = kvr_rows_read(&k, header, qi_of, n_index, &R, &good)) < 0) goto done;
    for (i = 0; i < k.nq; i++) before += R.done[i];
    if (r == 0 && truncate(rows, good) != 0) { fprintf(stderr, "codi kv-response: cannot truncate %s: %s\n", rows, strerror(errno)); goto done; }
    if (!(k.rows = fopen(rows, "a"))) { fprintf(stderr, "codi kv-response: cannot write %s: %s\n", rows, strerror(errno)); goto done; }
    if ((r == 1 || !good) && (fputs(header, k.rows) < 0 || fflush(k.rows))) { fprintf(stderr, "codi kv-response: error writing %s: %s\n", rows, strerror(errno)); goto done; }
    if (before) fprintf(stderr, "codi kv-response: resuming %s: %d of %d questions already there\n", rows, before, k.nq);
    k.done = R.done;
    k.progress = cli_progress_start("questions", k.nq, before);
    if (kvr_run_all(&k, ma.threads)) goto done;
    cli_progress_end(k.progress); k.progress = NULL;
    r = fclose(k.rows); k.rows = NULL;
    if (r) { fprintf(stderr, "codi kv-response: error writing %s: %s\n", rows, strerror(errno)); goto done; }
    /* the summary, from the rows file alone */
    free(R.v); free(R.done); memset(&R, 0, sizeof R); k.done = NULL;
    if (kvr_rows_alloc(&R, k.n_cond, L, k.nq)) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    if (kvr_rows_read(&k, header, qi_of, n_index, &R, &good) != 0) goto done;
    if (kvr_summarize(&k, &R, n_perm, &S)) goto done;
    if (!S.n) { fprintf(stderr, "codi kv-response: no question ran\n"); goto done; }
    if (kvr_write_csv(&k, &S, out) || kvr_write_json(&k, &S, out, n_perm)) goto done;
    for (i = 0; i < 4; i++) if (kvr_heatmap(&k, &S, out, i / 2, i % 2)) goto done;
    for (i = 0; controls && i < 2; i++) if (kvr_paired_plot(&k, &S, out, i)) goto done;
    kvr_print(&k, &S, n_perm);
    fprintf(stderr, "codi kv-response: %d questions (%d failed, %d bad lines); %d paired tests, %d survive Holm, %d BH (at %g): %s (rows), %s.csv, %s_paired.csv, %s.json, %s_*.svg\n",
            S.n, k.failed, n_bad, S.n_tests, S.n_holm, S.n_bh, KVR_ALPHA, rows, out, out, out, out);
    rc = k.failed || n_bad ? 1 : 0;
done:
    if (k.rows) fclose(k.rows);
    cli_progress_end(k.progress);
    for (c = 0; c < k.n_cond; c++) codi_steer_free(k.spec_ctl[c]);
    for (i = 0; i < k.n_spec; i++) codi_steer_free(k.spec[i]);
    for (i = 0; i < k.nq; i++) free(k.q[i].ids);
    free(k.q); free(qi_of); free(header); free(R.v); free(R.done);
    kvr_summary_free(&S);
    codi_tokenizer_free(t);
    codi_model_free(m);
    return rc;
}

static const cli_command cmd_kv_response = {
    "kv-response", "steer a latent, run one more latent, and measure how each layer's new K/V moved, against random controls",
    "codi kv-response --model PATH --questions FILE.jsonl --steer SPEC.json [--steer ...] --step L --out PREFIX",
    "The Latent Reasoning Sprint #4 protocol. Per question: l + 1 latent steps plain, under each spec and\n"
    "under --random-controls random directions of each spec's shape and norm (codi_steer_random_like),\n"
    "drawn once per spec or per question (--random-draw). At the steered latent's cache slot (T0 + l - 1)\n"
    "and at the next latent's (T0 + l), every layer's cached keys (post-RoPE) and values are compared with\n"
    "the plain run's: |KV' - KV| / |KV| and cosine. --keys pre compares the keys rotated back before RoPE\n"
    "(codi_key_pre_rope); both runs' keys at a slot share its rotation, which keeps norms and angles, so\n"
    "the numbers agree with post-RoPE ones up to float rounding: a check that a change is not a rotation\n"
    "artefact. All runs go through the batched runner (--batch).\n"
    "Rows: one JSON line per (condition, question) in --rows (index, line, condition, spec, control,\n"
    "draw_seed, key_rel, value_rel, key_cos, value_cos as [steered slot, next slot] x layers), written and\n"
    "flushed when a question's runs are done, then a {\"done\": true} line. A rerun resumes the file\n"
    "(a question cut short is run again); a rows file of other settings is refused.\n"
    "Summary (from the rows file alone): per condition, slot and layer the mean over the questions with its\n"
    "standard error and a 95% percentile-bootstrap interval (2000 resamples, --seed; the changes are\n"
    "skewed) in PREFIX.csv and PREFIX.json. Per spec, slot, layer and keys / values, the paired difference\n"
    "per question: the spec's change minus the mean of its random controls'; its mean with a 95% t interval,\n"
    "a two-sided sign-flip permutation test p (exact over all 2^n sign patterns when 2^n <= --permutations,\n"
    "else Monte Carlo), Holm-adjusted p and Benjamini-Hochberg q over the family of all these tests, and\n"
    "whether each survives at 0.05 (PREFIX_paired.csv, PREFIX.json). Plots: four heatmaps (condition x\n"
    "layer, cells labelled with their intervals) and PREFIX_paired_{steered,next}.svg (differences with\n"
    "error bars). Stdout: one JSON line per condition (value change averaged over layers, with intervals)\n"
    "and a line with the number of tests and survivors. The specs should edit latent step L (\"at\":\n"
    "\"latent_input\", \"step\": L), such as those `codi pca --steer-components N --steer-step L` writes.\n\n"
    "Examples:\n"
    "  codi pca --acts acts.safetensors --tensor final --steer-components 2 --steer-step 3 --out pca\n"
    "  codi kv-response --model M --questions data/templates.jsonl --limit 100 --steer pca/steer_final.L16.pc1.sd2.json --step 3 --random-controls 4 --out kvr",
    kv_response_run
};
