/* codi tune-lens: train a tuned lens on CODI's residual stream (codi_lens.h >>lenstrain), from an
   activation dataset or by running the model over a question file, with the tuned-lens
   library's recipe or the Latent Reasoning Sprint's. */
#include "positions.h"

typedef struct {
    const codi_model *m;
    /* in-memory samples (--questions): resid [n, L+1, D] */
    float *mem;
    /* dataset samples (--acts): the resid tensor and (question, slot) pairs */
    codi_safetensors_tensor resid;
    int32_t *pairs;                  /* [n, 2] */
    int32_t *who;                    /* [n, 3]: question index, file line (-1: unknown), latent number (0 = bot) */
    long n, n_train;                 /* samples; the first n_train train, the rest are held out */
    int sprint_norm;
    float *tmp;                      /* [D] */
} tune_data;

/* Sample i (held-out samples follow the training ones). */
static int tune_sample_at(const tune_data *d, long i, float *resid, float *target) {
    const codi_config *c = &d->m->config;
    size_t L1 = (size_t)c->n_layers + 1, D = (size_t)c->dim, k;
    if (d->mem) memcpy(resid, d->mem + (size_t)i * L1 * D, sizeof(float) * L1 * D);
    else {
        size_t P = (size_t)d->resid.shape[1], row = ((size_t)d->pairs[2 * i] * P + (size_t)d->pairs[2 * i + 1]) * L1 * D;
        const unsigned char *b = (const unsigned char *)d->resid.data;
        int bf16 = !strcmp(d->resid.dtype, "BF16");
        for (k = 0; k < L1 * D; k++) resid[k] = codi_elem_f32(b, bf16 ? CODI_BF16 : CODI_F32, row + k);
    }
    if (!d->sprint_norm) return 0;
    /* the sprint's target: the final norm applied to HF's already-normed last hidden state */
    codi_rmsnorm(d->tmp, resid + (L1 - 1) * D, d->m->w.final_norm, c->dim, c->norm_eps);
    if (codi_lens_logits(d->m, d->tmp, target)) return -1;
    return 1;
}

static int tune_train_sample(void *user, long i, float *resid, float *target) { return tune_sample_at((const tune_data *)user, i, resid, target); }

/* Which slots train: "direct" = the last prompt position (bot); "codi" = latent positions of a
   subset (all, even, odd, or a list such as 3,5; 0-based with --sprint-index). want[k], k = 0..N
   (0 = bot). */
static int tune_slots(const char *mode, const char *subset, int sprint_index, int N, unsigned char *want) {
    int k;
    memset(want, 0, (size_t)N + 1);
    if (!strcmp(mode, "direct")) { want[0] = 1; return 0; }
    if (strcmp(mode, "codi")) { fprintf(stderr, "codi tune-lens: --mode is direct or codi\n"); return -1; }
    if (!strcmp(subset, "all") || !strcmp(subset, "even") || !strcmp(subset, "odd")) {
        for (k = 1; k <= N; k++) want[k] = !strcmp(subset, "all") || (k % 2 == 0) == !strcmp(subset, "even");
        return 0;
    }
    while (*subset) {
        char *end;
        long v = strtol(subset, &end, 10) + (sprint_index ? 1 : 0);
        if (end == subset || (*end && *end != ',') || v < 1 || v > N) {
            fprintf(stderr, "codi tune-lens: --subset is all, even, odd or latent numbers 1..%d (0..%d with --sprint-index), e.g. 3,5\n", N, N - 1);
            return -1;
        }
        want[v] = 1;
        subset = *end ? end + 1 : end;
    }
    return 0;
}

typedef struct { const codi_model *m; const codi_tokenizer *t; const cli_prompt_args *pa; const unsigned char *want; codi_state *s;
                 int threads; float *buf; int32_t *who; long n, cap; int failed; } tune_collect;

static int tune_collect_question(void *user, const cli_question *q) {
    tune_collect *tc = (tune_collect *)user;
    const codi_config *c = &tc->m->config;
    size_t L1 = (size_t)c->n_layers + 1, D = (size_t)c->dim;
    cli_prompt_args pa = *tc->pa;
    codi_run_opts ro = codi_run_opts_default(tc->m);
    codi_run_result rr;
    int32_t ids[4096];
    int n, k, l;
    pa.question = q->question; pa.ids = NULL;
    if ((n = cli_prompt_ids(&pa, tc->m, tc->t, ids, 4096)) < 0) { tc->failed = 1; return 1; }
    ro.n_latent = pa.latents;
    if (!tc->s || tc->s->max_pos < n + pa.latents) {               /* a state as long as the longest prompt so far */
        codi_state_free(tc->s);
        if (!(tc->s = codi_state_new(tc->m, n + pa.latents + 64, tc->threads))) { fprintf(stderr, "codi tune-lens: out of memory\n"); tc->failed = 1; return 1; }
    }
    if (codi_run_latents(tc->m, tc->s, ids, n, &ro, &rr)) { fprintf(stderr, "codi tune-lens: %s\n", tc->s->error); tc->failed = 1; return 1; }
    for (k = 0; k <= pa.latents; k++) {
        if (!tc->want[k]) continue;
        if (tc->n == tc->cap) {
            long nc = tc->cap ? tc->cap * 2 : 64;
            float *nb = (float *)realloc(tc->buf, sizeof(float) * (size_t)nc * L1 * D);
            int32_t *nw = nb ? (int32_t *)realloc(tc->who, sizeof(int32_t) * 3 * (size_t)nc) : NULL;
            if (nb) tc->buf = nb;
            if (!nw) { fprintf(stderr, "codi tune-lens: out of memory\n"); tc->failed = 1; return 1; }
            tc->who = nw; tc->cap = nc;
        }
        tc->who[3 * tc->n] = q->index; tc->who[3 * tc->n + 1] = q->line; tc->who[3 * tc->n + 2] = k;
        for (l = 0; l < (int)L1; l++) memcpy(tc->buf + ((size_t)tc->n * L1 + l) * D, codi_state_resid(tc->s, l, n - 1 + k), sizeof(float) * D);
        tc->n++;
    }
    return 0;
}

/* Samples of an activation dataset: done rows, slots whose label is wanted, position >= 0. */
static int tune_from_acts(const char *path, const codi_model *m, const unsigned char *want, int N, codi_safetensors_file **fp, tune_data *d) {
    char err[512];
    codi_safetensors_file *f = codi_safetensors_open(path, err, sizeof err);
    codi_safetensors_tensor done, pos, qidx;
    const char *labels, *lay, *dim;
    codi_json *lj = NULL;
    const codi_json *e;
    int slot_k[1024], P = 0, q, p;
    if (!f) { fprintf(stderr, "codi tune-lens: %s\n", err); return -1; }
    *fp = f;
    if (codi_acts_check(f, m, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s: %s\n", path, err); return -1; }
    lay = codi_safetensors_metadata(f, "layers"); dim = codi_safetensors_metadata(f, "dim"); labels = codi_safetensors_metadata(f, "labels");
    if (codi_safetensors_find(f, "resid", &d->resid) || codi_safetensors_find(f, "done", &done) || codi_safetensors_find(f, "positions", &pos) ||
        codi_safetensors_find(f, "question_index", &qidx) || strcmp(qidx.dtype, "I32") || !labels || !lay || !dim ||
        atoi(lay) != m->config.n_layers || atoi(dim) != m->config.dim || d->resid.ndim != 4 ||
        (strcmp(d->resid.dtype, "F32") && strcmp(d->resid.dtype, "BF16")) || strcmp(done.dtype, "U8") || strcmp(pos.dtype, "I32")) {
        fprintf(stderr, "codi tune-lens: %s is not an activation dataset of this model (codi record)\n", path); return -1;
    }
    if (!(lj = codi_json_parse(labels, strlen(labels), err, sizeof err)) || lj->type != CODI_JSON_ARR || lj->count != d->resid.shape[1] || lj->count > 1024) {
        fprintf(stderr, "codi tune-lens: %s: bad labels metadata\n", path); codi_json_free(lj); return -1;
    }
    for (e = lj->child; e; e = e->next, P++) {       /* slot -> latent number (0 = bot), -1 for others */
        int k = -1;
        if (e->type == CODI_JSON_STR && !strcmp(e->str, "bot")) k = 0;
        else if (e->type == CODI_JSON_STR && !strncmp(e->str, "latent ", 7)) k = atoi(e->str + 7);
        slot_k[P] = k >= 0 && k <= N ? k : -1;
    }
    codi_json_free(lj);
    d->pairs = (int32_t *)malloc(sizeof(int32_t) * 2 * (size_t)d->resid.shape[0] * (size_t)P);
    d->who = (int32_t *)malloc(sizeof(int32_t) * 3 * (size_t)d->resid.shape[0] * (size_t)P);
    if (!d->pairs || !d->who) { fprintf(stderr, "codi tune-lens: out of memory\n"); return -1; }
    for (q = 0; q < d->resid.shape[0]; q++) {
        if (!((const unsigned char *)done.data)[q]) continue;
        for (p = 0; p < P; p++) {
            int32_t at;
            memcpy(&at, (const unsigned char *)pos.data + 4 * ((size_t)q * P + p), 4);
            if (slot_k[p] < 0 || !want[slot_k[p]] || at < 0) continue;
            d->pairs[2 * d->n] = q; d->pairs[2 * d->n + 1] = p;
            memcpy(&d->who[3 * d->n], (const unsigned char *)qidx.data + 4 * (size_t)q, 4);   /* the dataset keeps no file line */
            d->who[3 * d->n + 1] = -1; d->who[3 * d->n + 2] = slot_k[p];
            d->n++;
        }
    }
    return 0;
}

/* The identity of a training file: FNV-1a 64 of its first MiB, and its size ("" when unreadable). */
static void tune_data_id(const char *kind, const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    uint64_t h = 1469598103934665603ULL;
    long long size = 0;
    size_t n, i;
    out[0] = 0;
    if (!f) return;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (size < (1 << 20)) for (i = 0; i < n; i++) { h ^= buf[i]; h *= 1099511628211ULL; }
        size += (long long)n;
    }
    fclose(f);
    snprintf(out, cap, "%s fnv1a64 %016llx, %lld bytes", kind, (unsigned long long)h, size);
}

/* ---- held-out evaluation: per-sample rows, resumable, and the summary recomputed from them -----
   Rows file: a settings line {"codi_tune_lens_rows": 1, "model", "data", "lens", "first", "held_out",
   "layers"}, then per held-out sample {"sample", "question", "line" (null from --acts), "latent"
   (0 = bot), "kl_logit": [L], "kl_tuned": [L]}, appended and flushed a chunk at a time; a rerun
   with the same model, data and lens (FNV-1a of its translators) keeps the rows there. */

#define TUNE_BOOT 2000   /* bootstrap resamples of each mean */

static uint64_t tune_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ULL; }
    return h;
}

static void tune_rows_header(char *out, size_t cap, const char *model, const char *data_id, const codi_tuned_lens *lens, long first, long held_out) {
    size_t L = (size_t)lens->n_layers, D = (size_t)lens->dim;
    uint64_t h = tune_fnv(1469598103934665603ULL, lens->weight, sizeof(float) * L * D * D);
    char esc[1200];
    size_t i, k = 0;
    h = tune_fnv(h, lens->bias, sizeof(float) * L * D);
    for (i = 0; model[i] && k + 3 < sizeof esc; i++) {           /* the model path as a JSON string */
        if (model[i] == '"' || model[i] == '\\') esc[k++] = '\\';
        esc[k++] = (unsigned char)model[i] < 0x20 ? '?' : model[i];
    }
    esc[k] = 0;
    snprintf(out, cap, "{\"codi_tune_lens_rows\": 1, \"model\": \"%s\", \"data\": \"%s\", \"lens\": \"fnv1a64 %016llx\", \"first\": %ld, \"held_out\": %ld, \"layers\": %d}\n",
             esc, data_id, (unsigned long long)h, first, held_out, lens->n_layers);
}

/* Reads the rows file into kl_logit / kl_tuned [held, L] and who [held, 3], marking have[held].
   *good_len: where the last complete row ends. 0; 1 when absent, empty or of other settings
   (*other set for the latter); -1 on a bad row. */
static int tune_rows_read(const char *path, const char *header, long held, int L, double *kl_logit, double *kl_tuned, int32_t *who,
                          unsigned char *have, long *good_len, int *other) {
    size_t len;
    char *text = codi_read_text(path, &len), *p, err[256];
    int line = 0;
    *good_len = 0; *other = 0;
    if (!text || !len) { free(text); return 1; }
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        if (!e) break;                                             /* an unfinished last line */
        if (++line == 1) {
            if (strlen(header) != (size_t)(e - p + 1) || strncmp(header, p, (size_t)(e - p))) { *other = 1; free(text); return 1; }
        } else if ((j = codi_json_parse(p, (size_t)(e - p), err, sizeof err)) != NULL) {
            const codi_json *sv = codi_json_get(j, "sample"), *q = codi_json_get(j, "question"), *ln = codi_json_get(j, "line");
            const codi_json *k = codi_json_get(j, "latent"), *a = codi_json_get(j, "kl_logit"), *b = codi_json_get(j, "kl_tuned"), *x, *y;
            long i = sv && sv->type == CODI_JSON_NUM ? (long)sv->num : -1;
            int l;
            if (i < 0 || i >= held || !q || q->type != CODI_JSON_NUM || !k || k->type != CODI_JSON_NUM || !a || a->type != CODI_JSON_ARR ||
                a->count != L || !b || b->type != CODI_JSON_ARR || b->count != L) {
                fprintf(stderr, "codi tune-lens: %s:%d: not a row of this evaluation\n", path, line); codi_json_free(j); free(text); return -1;
            }
            for (x = a->child, y = b->child, l = 0; l < L; x = x->next, y = y->next, l++) {
                kl_logit[(size_t)i * L + l] = x->type == CODI_JSON_NUM ? x->num : NAN;
                kl_tuned[(size_t)i * L + l] = y->type == CODI_JSON_NUM ? y->num : NAN;
            }
            who[3 * i] = (int32_t)q->num; who[3 * i + 1] = ln && ln->type == CODI_JSON_NUM ? (int32_t)ln->num : -1; who[3 * i + 2] = (int32_t)k->num;
            have[i] = 1;
            codi_json_free(j);
        } else { fprintf(stderr, "codi tune-lens: %s:%d: %s\n", path, line, err); free(text); return -1; }
        *good_len = (long)(e + 1 - text);
        p = e + 1;
    }
    free(text);
    return 0;
}

/* The rows of held-out samples first..first+held-1 not yet in the rows file, appended a chunk at
   a time; then every row read back. 0, or -1 after a message. */
static int tune_eval_rows(const codi_model *m, const codi_tuned_lens *lens, tune_data *d, const char *rows, const char *header, int force,
                          int threads, double *kl_logit, double *kl_tuned, int32_t *who, unsigned char *have) {
    int L = m->config.n_layers, other, r, l;
    long held = d->n - d->n_train, good, i, before = 0;
    double *a = NULL, *b = NULL;
    char err[512];
    FILE *f = NULL;
    cli_progress *prog;
    memset(have, 0, (size_t)held);
    if ((r = tune_rows_read(rows, header, held, L, kl_logit, kl_tuned, who, have, &good, &other)) < 0) return -1;
    if (other && !force) {
        fprintf(stderr, "codi tune-lens: %s holds the rows of another evaluation (another lens, data or split); give another --rows, delete it, or --force to start it again\n", rows);
        return -1;
    }
    if (!(f = fopen(rows, r == 0 ? "r+" : "w"))) { fprintf(stderr, "codi tune-lens: cannot write %s: %s\n", rows, strerror(errno)); return -1; }
    if (r == 0 && (fflush(f) || ftruncate(fileno(f), good) || fseek(f, 0, SEEK_END))) { fprintf(stderr, "codi tune-lens: cannot truncate %s\n", rows); fclose(f); return -1; }
    if (r == 1) fputs(header, f);
    for (i = 0; i < held; i++) before += have[i];
    if (before) fprintf(stderr, "codi tune-lens: resuming %s: %ld of %ld held-out samples already there\n", rows, before, held);
    a = (double *)malloc(sizeof(double) * 32 * (size_t)L); b = (double *)malloc(sizeof(double) * 32 * (size_t)L);
    if (!a || !b) { fprintf(stderr, "codi tune-lens: out of memory\n"); goto fail; }
    prog = cli_progress_start("held-out rows", held, before);
    for (i = 0; i < held; ) {
        long n = 0, j;
        while (i < held && have[i]) i++;
        while (i + n < held && n < 32 && !have[i + n]) n++;         /* a run of missing samples */
        if (!n) break;
        if (codi_tuned_lens_eval_each(m, NULL, tune_train_sample, d, d->n_train + i, n, threads, a, err, sizeof err) ||
            codi_tuned_lens_eval_each(m, lens, tune_train_sample, d, d->n_train + i, n, threads, b, err, sizeof err)) {
            fprintf(stderr, "codi tune-lens: %s\n", err); cli_progress_end(prog); goto fail;
        }
        for (j = 0; j < n; j++) {
            const int32_t *w = d->who + 3 * (d->n_train + i + j);
            fprintf(f, "{\"sample\": %ld, \"question\": %d, \"line\": ", i + j, w[0]);
            if (w[1] >= 0) fprintf(f, "%d", w[1]); else fputs("null", f);
            fprintf(f, ", \"latent\": %d, \"kl_logit\": [", w[2]);
            for (l = 0; l < L; l++) { if (l) fputs(", ", f); cli_json_number(f, a[j * L + l]); }
            fputs("], \"kl_tuned\": [", f);
            for (l = 0; l < L; l++) { if (l) fputs(", ", f); cli_json_number(f, b[j * L + l]); }
            fputs("]}\n", f);
        }
        if (cli_out_flush(f, rows)) { cli_progress_end(prog); goto fail; }
        i += n; before += n;
        cli_progress_update(prog, before);
    }
    cli_progress_end(prog);
    free(a); free(b);
    if (fclose(f)) { fprintf(stderr, "codi tune-lens: error writing %s: %s\n", rows, strerror(errno)); return -1; }
    /* the summary reads the rows file alone */
    if (tune_rows_read(rows, header, held, L, kl_logit, kl_tuned, who, have, &good, &other) != 0) { fprintf(stderr, "codi tune-lens: cannot read back %s\n", rows); return -1; }
    for (i = 0; i < held; i++) if (!have[i]) { fprintf(stderr, "codi tune-lens: %s lacks held-out sample %ld\n", rows, i); return -1; }
    return 0;
fail:
    free(a); free(b); fclose(f);
    return -1;
}

/* One mean over questions: each question's samples (of latent step k, or all when k < 0) at
   layer l averaged first (the question is the unit), then the percentile bootstrap over questions. */
typedef struct { long n_q, n_samples; codi_mean_ci logit, tuned, diff; } tune_cell;

static int tune_cell_of(const double *kl_logit, const double *kl_tuned, const int32_t *who, long held, int L, int k, int l, uint64_t seed,
                        double *buf, tune_cell *c) {
    double *x = buf, *y = buf + held, *z = buf + 2 * held;
    long i, j, nq = 0;
    int *cnt = (int *)calloc((size_t)(held ? held : 1), sizeof(int));
    int32_t *qs = (int32_t *)malloc(sizeof(int32_t) * (size_t)(held ? held : 1));
    memset(c, 0, sizeof *c);
    if (!cnt || !qs) { free(cnt); free(qs); return -1; }
    for (i = 0; i < held; i++) {                                 /* questions in order of first sample */
        if (k >= 0 && who[3 * i + 2] != k) continue;
        for (j = 0; j < nq && qs[j] != who[3 * i]; j++) {}
        if (j == nq) { qs[nq] = who[3 * i]; x[nq] = y[nq] = 0; nq++; }
        x[j] += kl_logit[(size_t)i * L + l]; y[j] += kl_tuned[(size_t)i * L + l]; cnt[j]++;
        c->n_samples++;
    }
    for (j = 0; j < nq; j++) { x[j] /= cnt[j]; y[j] /= cnt[j]; z[j] = y[j] - x[j]; }
    c->n_q = nq;
    free(cnt); free(qs);
    if (!nq) { c->logit.mean = c->logit.se = c->logit.lo = c->logit.hi = NAN; c->tuned = c->diff = c->logit; return 0; }
    if (codi_bootstrap_mean(x, nq, TUNE_BOOT, seed, &c->logit) || codi_bootstrap_mean(y, nq, TUNE_BOOT, seed, &c->tuned) ||
        codi_bootstrap_mean(z, nq, TUNE_BOOT, seed, &c->diff)) return -1;
    return 0;
}

static void tune_ci_csv(FILE *f, const codi_mean_ci *c) {
    const double v[4] = { c->mean, c->se, c->lo, c->hi };
    int i;
    for (i = 0; i < 4; i++) { fputc(',', f); if (v[i] - v[i] == 0) fprintf(f, "%.9g", v[i]); }
}

static void tune_ci_json(FILE *f, const char *name, const codi_mean_ci *c) {
    fprintf(f, "\"%s\": {\"mean\": ", name); cli_json_number(f, c->mean);
    fputs(", \"se\": ", f); cli_json_number(f, c->se);
    fputs(", \"ci_low\": ", f); cli_json_number(f, c->lo);
    fputs(", \"ci_high\": ", f); cli_json_number(f, c->hi);
    fputc('}', f);
}

/* The summary of the held-out rows: the printed table (all latent steps pooled, per layer), and
   PREFIX.csv / PREFIX.json with every (latent step or all, layer) cell. */
static int tune_summary(const codi_model *m, const double *kl_logit, const double *kl_tuned, const int32_t *who, long held, int N,
                        uint64_t seed, const char *rows, const char *csv_path, const char *json_path) {
    int L = m->config.n_layers, k, l, first = 1, rc = -1;
    double *buf = (double *)malloc(sizeof(double) * 3 * (size_t)held);
    char method[160];
    FILE *csv = NULL, *js = NULL;
    tune_cell c;
    snprintf(method, sizeof method, "percentile bootstrap over questions (%d resamples, seed %llu) of the per-question mean KL", TUNE_BOOT, (unsigned long long)seed);
    if (!buf) { fprintf(stderr, "codi tune-lens: out of memory\n"); return -1; }
    if (!(csv = cli_out_open(csv_path, "w")) || !(js = cli_out_open(json_path, "w"))) goto done;
    fprintf(csv, "latent,layer,n_questions,n_samples,lens,mean,se,ci_low,ci_high,ci_method\n");
    fprintf(js, "{\"rows_file\": "); cli_json_string(js, rows);
    fprintf(js, ", \"held_out_samples\": %ld, \"layers\": %d, \"metric\": \"KL(final || lens) in nats\", \"ci_method\": ", held, L);
    cli_json_string(js, method);
    fputs(", \"diff\": \"tuned - logit, paired by question\", \"cells\": [", js);
    printf("held-out KL(final || lens) per residual index: mean over questions [95%% CI, %s]\n", method);
    printf("%5s %5s %7s  %-28s %-28s %-30s\n", "layer", "n_q", "samples", "logit lens", "tuned lens", "tuned - logit (paired)");
    for (k = -1; k <= N; k++) for (l = 0; l < L; l++) {
        if (tune_cell_of(kl_logit, kl_tuned, who, held, L, k, l, seed, buf, &c)) { fprintf(stderr, "codi tune-lens: out of memory or a non-finite KL in %s\n", rows); goto done; }
        if (!c.n_q) continue;
        {
            static const char *lens_name[3] = { "logit", "tuned", "tuned-logit" };
            const codi_mean_ci *v[3] = { &c.logit, &c.tuned, &c.diff };
            char latent[16];
            int i;
            if (k < 0) snprintf(latent, sizeof latent, "all"); else snprintf(latent, sizeof latent, "%d", k);
            for (i = 0; i < 3; i++) {
                fprintf(csv, "%s,%d,%ld,%ld,%s", latent, l, c.n_q, c.n_samples, lens_name[i]);
                tune_ci_csv(csv, v[i]);
                fprintf(csv, ",bootstrap\n");
            }
            fprintf(js, "%s\n  {\"latent\": ", first ? "" : ",");
            if (k < 0) fputs("\"all\"", js); else fprintf(js, "%d", k);
            fprintf(js, ", \"layer\": %d, \"n_questions\": %ld, \"n_samples\": %ld, ", l, c.n_q, c.n_samples);
            tune_ci_json(js, "logit", &c.logit); fputs(", ", js); tune_ci_json(js, "tuned", &c.tuned); fputs(", ", js);
            tune_ci_json(js, "diff", &c.diff); fputs(", \"ci_method\": \"bootstrap\"}", js);
            first = 0;
        }
        if (k < 0) {
            char s1[40], s2[40], s3[40];
            snprintf(s1, sizeof s1, "%.4f [%.4f, %.4f]", c.logit.mean, c.logit.lo, c.logit.hi);
            snprintf(s2, sizeof s2, "%.4f [%.4f, %.4f]", c.tuned.mean, c.tuned.lo, c.tuned.hi);
            snprintf(s3, sizeof s3, "%+.4f [%+.4f, %+.4f]", c.diff.mean, c.diff.lo, c.diff.hi);
            printf("%5d %5ld %7ld  %-28s %-28s %-30s\n", l, c.n_q, c.n_samples, s1, s2, s3);
        }
    }
    fputs("\n]}\n", js);
    rc = 0;
done:
    free(buf);
    if (rc) { cli_out_abort(csv); cli_out_abort(js); return rc; }
    if (cli_out_close(csv)) { cli_out_abort(js); return -1; }
    return cli_out_close(js);
}

static int tune_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    const char *acts = NULL, *questions = NULL, *out = NULL, *rows = NULL, *summary = NULL, *recipe = "library", *mode = "codi", *subset = "all", *ckpt = NULL, *init = NULL;
    int force = 0, limit = 0, steps = 0, batch = 0, epochs = 3, sprint_norm = 0, sprint_index = 0, ckpt_every = 50, log_every = 0, held_out = -1, rc, l;
    double lr = 0, seed = 42;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--acts", CLI_STR, &acts, 0, 0, "FILE", "train on an activation dataset (codi record; its bot / latent slots)" },
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "or run the model over these questions and train on what it computes (held in memory: (L+1) x D floats per sample; for large runs record a bf16 dataset)" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "with --questions: first N questions (default all)" },
        CLI_RECIPE_OPT(&pa.recipe),
        CLI_LATENTS_OPT(&pa.latents, 0, 1000),
        { "--out", CLI_STR, &out, 0, 0, "DIR|FILE", "the lens: a directory (tuned-lens library form: params.pt + config.json) or FILE.safetensors" },
        { "--train", CLI_STR, &recipe, 0, 0, "library|sprint", "recipe: library (SGD Nesterov, lr 1.0 x (1 - 0.9), wd 1e-3, clip 1, linear decay; default) or sprint (Adam 1e-3, batch 1, 3 epochs)" },
        { "--mode", CLI_STR, &mode, 0, 0, "codi|direct", "positions trained: codi = latent positions (default); direct = the last prompt position (bot)" },
        { "--subset", CLI_STR, &subset, 0, 0, "all|even|odd|K,K", "codi mode: which latents (default all), e.g. 3,5" },
        { "--sprint-index", CLI_FLAG, &sprint_index, 0, 0, NULL, "read --subset numbers 0-based, as the sprint's code does" },
        { "--sprint-norm", CLI_FLAG, &sprint_norm, 0, 0, NULL, "the sprint's target: final norm applied twice to the last layer's output" },
        { "--steps", CLI_INT, &steps, 1, 1e9, "N", "optimiser steps (library default 250; sprint: epochs x samples)" },
        { "--batch", CLI_INT, &batch, 1, 1 << 20, "B", "samples per step (library default 64; sprint 1)" },
        { "--epochs", CLI_INT, &epochs, 1, 1e6, "E", "sprint recipe: passes over the samples (3)" },
        { "--lr", CLI_DOUBLE, &lr, 0, 1e3, "X", "learning rate (default: the recipe's)" },
        { "--seed", CLI_DOUBLE, &seed, 0, 1e15, "S", "sample order seed (42)" },
        { "--held-out", CLI_INT, &held_out, 0, 1e9, "N", "samples kept out of training to measure KL before and after (default a tenth)" },
        { "--rows", CLI_STR, &rows, 0, 0, "FILE.jsonl", "held-out rows: per sample (question, latent step) the KL of both lenses per layer; resumed (default PREFIX_rows.jsonl)" },
        { "--summary", CLI_STR, &summary, 0, 0, "PREFIX", "held-out summary PREFIX.csv and PREFIX.json, recomputed from the rows (default: --out without .safetensors, + _heldout)" },
        { "--init", CLI_STR, &init, 0, 0, "DIR|FILE", "start from this lens (default: zero translators = the logit lens)" },
        { "--checkpoint", CLI_STR, &ckpt, 0, 0, "FILE", "save the training state here every --checkpoint-every steps; an existing one is resumed" },
        { "--checkpoint-every", CLI_INT, &ckpt_every, 1, 1e9, "N", "steps between checkpoints (50)" },
        { "--log-every", CLI_INT, &log_every, 1, 1e9, "N", "print the per-layer loss every N steps (default: 20 lines per run)" },
        CLI_FORCE_OPT(&force),
        CLI_END };
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_tuned_lens *lens = NULL;
    codi_lens_trainer *tr = NULL;
    codi_safetensors_file *af = NULL;
    tune_data d;
    tune_collect tc;
    codi_lens_train_opts o;
    unsigned char want[1001];
    double *loss = NULL, *kl_logit = NULL, *kl_tuned = NULL;
    int32_t *who = NULL;
    unsigned char *have = NULL;
    char err[512], data_id[160], prefix[4096], rows_buf[4200], csv_path[4200], json_path[4200], header[2048];
    cli_progress *prog = NULL;
    memset(&d, 0, sizeof d); memset(&tc, 0, sizeof tc);
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!out || (!acts) == (!questions)) { fprintf(stderr, "codi tune-lens: give --out and exactly one of --acts, --questions\n"); return 2; }
    if (strcmp(recipe, "library") && strcmp(recipe, "sprint")) { fprintf(stderr, "codi tune-lens: --train is library or sprint\n"); return 2; }
    if (tune_slots(mode, subset, sprint_index, pa.latents, want)) return 2;
    {                                              /* held-out outputs: PREFIX_rows.jsonl, PREFIX.csv, PREFIX.json */
        size_t n = strlen(out);
        if (cli_ends_with(out, ".safetensors")) n -= strlen(".safetensors");
        while (n > 1 && out[n - 1] == '/') n--;
        if (summary) snprintf(prefix, sizeof prefix, "%s", summary); else snprintf(prefix, sizeof prefix, "%.*s_heldout", (int)(n < 4000 ? n : 4000), out);
        if (!rows) { snprintf(rows_buf, sizeof rows_buf, "%s_rows.jsonl", prefix); rows = rows_buf; }
        snprintf(csv_path, sizeof csv_path, "%s.csv", prefix); snprintf(json_path, sizeof json_path, "%s.json", prefix);
    }
    {                                              /* outputs checked before the model runs */
        const char *in[] = { ma.model, ma.base, ma.tokenizer, acts, questions, init };
        if (cli_out_check("tune-lens", out, (cli_ends_with(out, ".safetensors") ? CLI_OUT_FILE : CLI_OUT_DIR) | (ckpt ? CLI_OUT_RESUME : 0), force, in, CLI_N(in))
            || (ckpt && cli_out_check("tune-lens", ckpt, CLI_OUT_RESUME, force, in, CLI_N(in)))
            || (held_out != 0 && (cli_out_check("tune-lens", rows, CLI_OUT_RESUME, force, in, CLI_N(in))
                                  || cli_out_check("tune-lens", csv_path, CLI_OUT_RESUME | CLI_OUT_STREAM, force, in, CLI_N(in))
                                  || cli_out_check("tune-lens", json_path, CLI_OUT_RESUME | CLI_OUT_STREAM, force, in, CLI_N(in))))) return 2;
    }
    if (!(m = cli_load_model(&ma))) return 1;
    rc = 1;
    d.m = m; d.sprint_norm = sprint_norm;
    if (!(d.tmp = (float *)malloc(sizeof(float) * (size_t)m->config.dim))) goto done;
    if (acts) { if (tune_from_acts(acts, m, want, pa.latents, &af, &d)) goto done; }
    else {
        int n_bad = 0;
        if (!(t = cli_load_tokenizer(&ma, m, 0))) goto done;
        tc.m = m; tc.t = t; tc.pa = &pa; tc.want = want; tc.threads = ma.threads;
        fprintf(stderr, "codi tune-lens: running the model over %s\n", questions);
        if (cli_for_each_question(questions, limit, 0, 0, tune_collect_question, &tc, &n_bad) < 0 || tc.failed) { codi_state_free(tc.s); goto done; }
        codi_state_free(tc.s);
        d.mem = tc.buf; d.who = tc.who; d.n = tc.n; tc.who = NULL;
    }
    if (held_out < 0) held_out = (int)(d.n / 10);
    if (d.n - held_out < 1) { fprintf(stderr, "codi tune-lens: %ld samples, %d held out: nothing to train on\n", d.n, held_out); goto done; }
    d.n_train = d.n - held_out;
    if (held_out) {                                /* held out by whole question: no question on both sides */
        long nq = 1, i;
        while (d.n_train > 0 && d.who[3 * d.n_train] == d.who[3 * (d.n_train - 1)]) d.n_train--;
        if (d.n_train < 1) { fprintf(stderr, "codi tune-lens: the held-out samples take every question: nothing to train on (lower --held-out)\n"); goto done; }
        if (d.n - d.n_train != held_out) fprintf(stderr, "codi tune-lens: %ld samples held out (not %d): the split keeps each question's samples on one side\n", d.n - d.n_train, held_out);
        held_out = (int)(d.n - d.n_train);
        for (i = d.n_train + 1; i < d.n; i++) nq += d.who[3 * i] != d.who[3 * (i - 1)];
        fprintf(stderr, "codi tune-lens: held out: %d samples of %ld questions\n", held_out, nq);
    }
    if (!strcmp(recipe, "library")) o = codi_lens_train_library(steps ? steps : 250, batch ? batch : 64);
    else {
        o = codi_lens_train_sprint(d.n_train);
        o.total_steps = steps ? steps : (long)epochs * d.n_train;
        if (batch) o.batch = batch;
    }
    if (lr > 0) o.lr = lr;
    o.seed = (uint64_t)seed; o.n_threads = ma.threads;
    tune_data_id(acts ? "acts" : "questions", acts ? acts : questions, data_id, sizeof data_id);
    o.data_id = data_id[0] ? data_id : NULL;
    if (!(lens = init ? codi_tuned_lens_load(m, init, err, sizeof err) : codi_tuned_lens_new(m))) { fprintf(stderr, "codi tune-lens: %s\n", init ? err : "out of memory"); goto done; }
    if (!(tr = codi_lens_trainer_new(m, lens, &o, d.n_train, tune_train_sample, &d, err, sizeof err))) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
    if (ckpt && cli_exists(ckpt)) {
        codi_safetensors_file *cf = codi_safetensors_open(ckpt, err, sizeof err);
        const char *was = cf ? codi_safetensors_metadata(cf, "data") : NULL;
        int other = was && o.data_id && strcmp(was, o.data_id);
        if (other) fprintf(stderr, "codi tune-lens: %s was trained on other data (%s; now %s)%s\n", ckpt, was, o.data_id,
                           force ? ": continuing on this data (--force)" : ": give the same --acts / --questions, or --force to continue on this data");
        if (cf) codi_safetensors_close(cf);
        if (other && !force) { rc = 2; goto done; }
        if (codi_lens_trainer_resume(tr, ckpt, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
        fprintf(stderr, "codi tune-lens: resumed %s at step %ld\n", ckpt, codi_lens_trainer_steps_done(tr));
    }
    loss = (double *)malloc(sizeof(double) * (size_t)m->config.n_layers);
    if (!loss) goto done;
    fprintf(stderr, "codi tune-lens: %ld samples (%ld train, %d held out), %s recipe, %ld steps of %d, lr %g\n",
            d.n, d.n_train, held_out, recipe, o.total_steps, o.batch, o.lr);
    if (!log_every) log_every = o.total_steps / 20 > 0 ? (int)(o.total_steps / 20) : 1;
    prog = cli_progress_start("tune-lens", o.total_steps, codi_lens_trainer_steps_done(tr));
    while (codi_lens_trainer_steps_done(tr) < o.total_steps) {
        long s;
        if (codi_lens_trainer_step(tr, loss)) { fprintf(stderr, "\ncodi tune-lens: %s\n", codi_lens_trainer_error(tr)); goto done; }
        s = codi_lens_trainer_steps_done(tr);
        if (s % log_every == 0 || s == o.total_steps) {
            fprintf(stderr, "%sstep %ld/%ld  KL per layer:", prog && prog->tty ? "\r\033[K" : "", s, o.total_steps);
            for (l = 0; l < m->config.n_layers; l++) fprintf(stderr, " %.4f", loss[l]);
            fprintf(stderr, "\n");
        }
        if (ckpt && (s % ckpt_every == 0 || s == o.total_steps) && codi_lens_trainer_save(tr, ckpt, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
        cli_progress_update(prog, s);
    }
    cli_progress_end(prog); prog = NULL;
    if (cli_ends_with(out, ".safetensors") ? codi_tuned_lens_save(lens, out, ma.model, err, sizeof err)
                                             : (!cli_is_dir(out) && mkdir(out, 0777) != 0 && errno != EEXIST ? (snprintf(err, sizeof err, "cannot create %s", out), -1)
                                                                                                              : codi_tuned_lens_save_dir(lens, out, ma.model, err, sizeof err))) {
        fprintf(stderr, "codi tune-lens: %s\n", err); goto done;
    }
    if (held_out) {
        size_t hl = (size_t)held_out * (size_t)m->config.n_layers;
        kl_logit = (double *)malloc(sizeof(double) * hl); kl_tuned = (double *)malloc(sizeof(double) * hl);
        who = (int32_t *)malloc(sizeof(int32_t) * 3 * (size_t)held_out); have = (unsigned char *)malloc((size_t)held_out);
        if (!kl_logit || !kl_tuned || !who || !have) { fprintf(stderr, "codi tune-lens: out of memory\n"); goto done; }
        tune_rows_header(header, sizeof header, ma.model, data_id, lens, d.n_train, held_out);
        if (tune_eval_rows(m, lens, &d, rows, header, force, ma.threads, kl_logit, kl_tuned, who, have) ||
            tune_summary(m, kl_logit, kl_tuned, who, held_out, pa.latents, (uint64_t)seed, rows, csv_path, json_path)) goto done;
        printf("wrote %s (held-out rows), %s, %s\n", rows, csv_path, json_path);
    }
    printf("wrote %s\n", out);
    rc = 0;
done:
    if (prog) cli_progress_end(prog);
    free(loss); free(kl_logit); free(kl_tuned); free(who); free(have); free(d.tmp); free(d.pairs); free(d.who); free(tc.who); free(tc.buf);
    codi_lens_trainer_free(tr); codi_tuned_lens_free(lens);
    if (af) codi_safetensors_close(af);
    codi_tokenizer_free(t); codi_model_free(m);
    return rc;
}

static const cli_command cmd_tune_lens = {
    "tune-lens", "train a tuned lens on CODI's latent positions (tuned-lens library or sprint recipe)",
    "codi tune-lens --model PATH (--acts FILE | --questions FILE.jsonl) --out DIR|FILE.safetensors [options]",
    "Trains one affine translator per residual index 0..L-1 so that lm_head(final_norm(h + W h + b))\n"
    "matches the model's own final distribution (loss: KL(final || lens), per layer). --train library\n"
    "follows the tuned-lens library's train_loop (zero-initialised translators, SGD with Nesterov\n"
    "momentum 0.9, lr 1.0 x (1 - 0.9), weight decay 1e-3, gradient norm clipped to 1, lr decayed\n"
    "linearly to 0); --train sprint the Latent Reasoning Sprint's (Adam lr 1e-3, batch 1, 3 epochs;\n"
    "their identity-initialised affine map is the same map as zero residual translators). Samples\n"
    "are the residuals at bot (--mode direct) or at the latent positions (--mode codi, --subset).\n"
    "Threads (--threads) do not change the result; --checkpoint makes a run resumable. Prints the\n"
    "per-layer loss as it goes, then evaluates the held-out samples (whole questions): per sample a\n"
    "line of --rows (question, file line, latent step, KL of the logit and the tuned lens per layer;\n"
    "flushed, resumed after a kill), and per layer the mean KL of each lens and the paired difference\n"
    "tuned - logit with standard error and 95% percentile bootstrap interval over questions\n"
    "(ci_method bootstrap), printed and in PREFIX.csv / PREFIX.json, recomputed from the rows.\n\n"
    "Examples:\n"
    "  codi tune-lens --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --out nano_lens\n"
    "  codi tune-lens --model M --acts gsm8k_train.safetensors --train sprint --subset even --out even.safetensors\n"
    "  codi tune-lens --model M --acts A --steps 500 --batch 256 --threads 8 --checkpoint lens.ckpt --out lens_dir",
    tune_run };
