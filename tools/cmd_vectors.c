/* codi vectors: steering vectors from runs or an activation dataset, and llama.cpp control vectors.

   Build (the Latent Reasoning Sprint's mean vectors): for latent steps k = 1..N, the mean over
   questions of the final-normed last-layer hidden state at latent k's slot (position T0 + k - 1,
   T0 = prompt length incl. bot: the vector prj turns into z_(k+1)) and of the cached K / V there
   (post-RoPE); every difference diff_A_B = mean[B] - mean[A] (A < B) and a seeded random direction
   of the same norm for each. From questions (--questions, run here) or from a `codi record` dataset
   (--acts, docs acts.md: "final" [Q, P, D], "key"/"value" [Q, P, L, KVH, HD], labels "latent k").

   llama.cpp control vectors (GGUF, also what repeng's export_gguf writes): tensors "direction.N",
   F32 [D]. llama.cpp adds direction.N to the output of block N (0-based, N = 1..L-1; common.cpp
   stores direction.N at row N - 1 and llama_adapter_cvec applies row il - 1 in build_cvec(cur, il)
   after block il), i.e. to our residual index N + 1 (the residual entering layer N + 1; L = the last
   block's output). repeng's direction.N is added to the output of model.layers[N] too, N = 0 included
   (llama.cpp refuses direction.0). --to-gguf writes rows 2..L of an [L+1, D] tensor (or one [D] vector
   at --layers); --from-gguf reads direction.N (N >= 0) and writes a spec adding each at "resid" N + 1.
   Part of the unity build of tools/codi.c (prefix vectors_). */

/* --- building mean vectors ------------------------------------------------------------------ */

/* The questions of a questions file with a usable prompt, in file order. */
typedef struct { int32_t *ids; int n, line; } vectors_q;

typedef struct {
    const codi_model *m; const codi_tokenizer *t; codi_means *acc; int recipe, latents, failed, keys_pre;
    vectors_q *q; int nq, cap, max_n;
    codi_means *pend;           /* [nq] a finished question's own sums, waiting for the earlier ones */
    unsigned char *state;       /* [nq] 0 running or queued, 1 in pend, 2 added (or failed) */
    int next;                   /* the next question to add to acc */
    cli_progress *progress; long done;
} vectors_ctx;

/* The prompt of a questions-file line: "ids" (a list, used as given: BOS ... bot) or the question text. */
static int vectors_prompt(const codi_model *m, const codi_tokenizer *t, const cli_question *q, int recipe, int32_t *ids, int cap) {
    const codi_json *a = codi_json_get(q->obj, "ids"), *e;
    int n = 0;
    if (!a) return t ? codi_prompt_from_text(m, t, q->question, recipe, ids, cap) : -1;
    if (a->type != CODI_JSON_ARR) return -1;
    for (e = a->child; e; e = e->next) {
        if (e->type != CODI_JSON_NUM || e->num < 0 || e->num >= m->config.vocab || e->num != floor(e->num) || n == cap) return -1;
        ids[n++] = (int32_t)e->num;
    }
    return n;
}

/* Keeps each line's prompt ids (a line without a usable prompt is reported and counted as failed). */
static int vectors_collect(void *user, const cli_question *q) {
    vectors_ctx *vc = (vectors_ctx *)user;
    int32_t ids[4096];
    int n = vectors_prompt(vc->m, vc->t, q, vc->recipe, ids, 4096);
    if (n <= 0) {
        fprintf(stderr, "codi vectors: line %d: no usable prompt (\"ids\" in range, or a question and a tokenizer; at most 4096 tokens)\n", q->line);
        vc->failed++; return 0;
    }
    if (vc->nq == vc->cap) {
        int nc = vc->cap ? 2 * vc->cap : 256;
        vectors_q *g = (vectors_q *)realloc(vc->q, sizeof *g * (size_t)nc);
        if (!g) { fprintf(stderr, "codi vectors: out of memory\n"); return -1; }
        vc->q = g; vc->cap = nc;
    }
    if (!(vc->q[vc->nq].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n))) { fprintf(stderr, "codi vectors: out of memory\n"); return -1; }
    memcpy(vc->q[vc->nq].ids, ids, sizeof(int32_t) * (size_t)n);
    vc->q[vc->nq].n = n; vc->q[vc->nq].line = q->line;
    if (n > vc->max_n) vc->max_n = n;
    vc->nq++;
    return 0;
}

/* A run ended: its latent slots' sums into pend[i] (keys rotated back before RoPE with --keys pre),
   then every finished question from vc->next on is added to acc in file order, so the sums (and
   the means, bit for bit) do not depend on the order the runs end in. */
static int vectors_done(void *user, const codi_batch_result *r) {
    vectors_ctx *vc = (vectors_ctx *)user;
    int i = (int)(intptr_t)r->user, line = vc->q[i].line;
    codi_state *s = r->state;
    size_t j, nf = (size_t)vc->acc->n_latent * vc->acc->dim, nk = (size_t)vc->acc->n_latent * vc->acc->kv_size;
    vc->state[i] = 2;
    if (r->status) { fprintf(stderr, "codi vectors: line %d: %s\n", line, r->error); vc->failed++; }
    else if (codi_means_init(&vc->pend[i], vc->m, vc->latents)) { fprintf(stderr, "codi vectors: line %d: out of memory\n", line); vc->failed++; }
    else {
        if (vc->keys_pre) {                      /* the latent slots' cached keys rotated back before RoPE, then averaged */
            int k, l, h;
            for (k = 1; k <= vc->latents; k++)
                for (l = 0; l < vc->m->config.n_layers; l++)
                    for (h = 0; h < vc->m->config.n_kv_heads; h++) {
                        int pos = r->result->prompt_len + k - 1;
                        codi_rope_rotate(vc->m, pos, 1, codi_state_key(s, l, h, pos), 1);
                    }
        }
        if (codi_means_add(&vc->pend[i], vc->m, s, r->result->prompt_len)) {
            fprintf(stderr, "codi vectors: line %d: %s\n", line, s->error); vc->failed++; codi_means_free(&vc->pend[i]);
        } else vc->state[i] = 1;
    }
    for (; vc->next < vc->nq && vc->state[vc->next]; vc->next++) {
        codi_means *one = &vc->pend[vc->next];
        if (vc->state[vc->next] != 1) continue;
        for (j = 0; j < nf; j++) vc->acc->final[j] += one->final[j];
        for (j = 0; j < nk; j++) { vc->acc->key[j] += one->key[j]; vc->acc->value[j] += one->value[j]; }
        vc->acc->count++;
        codi_means_free(one);
        cli_progress_update(vc->progress, ++vc->done);
    }
    return 0;
}

/* Runs the collected questions' prefill and latent steps through the batched runner, batch at a
   time, into vc->acc; 0, or -1 after a message. */
static int vectors_run_questions(vectors_ctx *vc, int batch, int threads) {
    codi_batch *b;
    int i = 0, rc = -1;
    if (!vc->nq) return 0;
    vc->pend = (codi_means *)calloc((size_t)vc->nq, sizeof *vc->pend);
    vc->state = (unsigned char *)calloc((size_t)vc->nq, 1);
    b = codi_batch_new(vc->m, vc->nq < batch ? vc->nq : batch, vc->max_n + vc->latents, threads);
    if (!vc->pend || !vc->state || !b) { fprintf(stderr, "codi vectors: out of memory\n"); goto done; }
    for (;;) {
        while (i < vc->nq && codi_batch_pending(b) < 2 * batch) {     /* keep a batch's worth queued */
            codi_batch_request rq;
            memset(&rq, 0, sizeof rq);
            rq.ids = vc->q[i].ids; rq.n_ids = vc->q[i].n;
            rq.opts = codi_run_opts_default(vc->m);
            rq.opts.n_latent = vc->latents; rq.opts.max_answer = 0; rq.opts.feed_eot = 0;   /* codi_run_latents: no eot, no answer */
            rq.user = (void *)(intptr_t)i;
            if (codi_batch_submit(b, &rq)) { fprintf(stderr, "codi vectors: line %d: %s\n", vc->q[i].line, codi_batch_error(b)); goto done; }
            i++;
        }
        if (!codi_batch_pending(b)) break;
        if (codi_batch_step(b, vectors_done, vc) < 0) { fprintf(stderr, "codi vectors: %s\n", codi_batch_error(b)); goto done; }
    }
    rc = 0;
done:
    for (i = 0; vc->pend && i < vc->nq; i++) codi_means_free(&vc->pend[i]);
    free(vc->pend); free(vc->state); vc->pend = NULL; vc->state = NULL;
    codi_batch_free(b);
    return rc;
}

/* Reads [Q, P, ...] rows of a recorded dataset into the means: slots labelled "latent k"; keys from
   key_pre_rope when keys_pre. */
static int vectors_from_acts(const char *path, const codi_model *m, codi_means *acc, int keys_pre, char *err, size_t errsz) {
    codi_safetensors_file *f = codi_safetensors_open(path, err, errsz);
    codi_safetensors_tensor fin, done, key, value;
    const char *labels = f ? codi_safetensors_metadata(f, "labels") : NULL;
    codi_json *lj = NULL;
    const codi_json *e;
    int slot[1024], k, q, rc = -1, has_kv, D = m->config.dim, KV = acc->kv_size;
    char why[256];
    if (!f) return -1;
    if (codi_acts_check(f, m, why, sizeof why)) { cli_err(err, errsz, "%s: %s", path, why); goto done; }
    if (codi_safetensors_find(f, "final", &fin) || fin.ndim != 3 || fin.shape[2] != D) { cli_err(err, errsz, "%s: no \"final\" [Q, P, %d]", path, D); goto done; }
    if (codi_safetensors_find(f, "done", &done) || done.numel != (size_t)fin.shape[0] || strcmp(done.dtype, "U8")) { cli_err(err, errsz, "%s: no \"done\" [Q] U8", path); goto done; }
    if (!labels || !(lj = codi_json_parse(labels, strlen(labels), err, errsz)) || lj->type != CODI_JSON_ARR || lj->count != fin.shape[1]) {
        cli_err(err, errsz, "%s: metadata \"labels\" is not a list of %lld slot labels", path, (long long)fin.shape[1]); goto done;
    }
    for (k = 0; k < acc->n_latent; k++) slot[k] = -1;
    for (e = lj->child, q = 0; e; e = e->next, q++)
        if (e->type == CODI_JSON_STR && !strncmp(e->str, "latent ", 7) && atoi(e->str + 7) >= 1 && atoi(e->str + 7) <= acc->n_latent) slot[atoi(e->str + 7) - 1] = q;
    for (k = 0; k < acc->n_latent; k++) if (slot[k] < 0) { cli_err(err, errsz, "%s: no slot labelled \"latent %d\" (record with --positions latents)", path, k + 1); goto done; }
    has_kv = !codi_safetensors_find(f, keys_pre ? "key_pre_rope" : "key", &key) && !codi_safetensors_find(f, "value", &value) &&
             key.numel == (size_t)fin.shape[0] * fin.shape[1] * KV && value.numel == key.numel;
    if (keys_pre && !has_kv) { cli_err(err, errsz, "%s: no key_pre_rope (record with --kv) for --keys pre", path); goto done; }
    {   /* the whole tensors as f32, then the rows of done questions */
        size_t nf = fin.numel, nk = has_kv ? key.numel : 0;
        float *ff = (float *)malloc(nf * sizeof(float)), *kk = nk ? (float *)malloc(nk * sizeof(float)) : NULL, *vv = nk ? (float *)malloc(nk * sizeof(float)) : NULL;
        const unsigned char *dn = (const unsigned char *)done.data;
        long P = (long)fin.shape[1];
        if (!ff || (nk && (!kk || !vv))) { cli_err(err, errsz, "out of memory"); free(ff); free(kk); free(vv); goto done; }
        if (codi_safetensors_read_f32(f, "final", ff, nf, err, errsz) < 0 || (nk && (codi_safetensors_read_f32(f, keys_pre ? "key_pre_rope" : "key", kk, nk, err, errsz) < 0 ||
                                                                          codi_safetensors_read_f32(f, "value", vv, nk, err, errsz) < 0))) {
            free(ff); free(kk); free(vv); goto done;
        }
        for (q = 0; q < fin.shape[0]; q++) {
            if (!dn[q]) continue;
            for (k = 0; k < acc->n_latent; k++) {
                const float *h = ff + ((size_t)q * P + slot[k]) * D;
                int j;
                for (j = 0; j < D; j++) acc->final[(size_t)k * D + j] += h[j];
                for (j = 0; nk && j < KV; j++) {
                    acc->key[(size_t)k * KV + j] += kk[((size_t)q * P + slot[k]) * KV + j];
                    acc->value[(size_t)k * KV + j] += vv[((size_t)q * P + slot[k]) * KV + j];
                }
            }
            acc->count++;
        }
        free(ff); free(kk); free(vv);
        if (!has_kv) fprintf(stderr, "codi vectors: %s has no key/value (record with --kv): K/V means are not written\n", path);
        rc = has_kv ? 1 : 0;
    }
done:
    codi_json_free(lj);
    codi_safetensors_close(f);
    return rc;
}

/* Mean vectors, every pair's differences (pairs A < B in order (1,2), (1,3), ..., (N-1,N)) and a
   seeded norm-matched random direction per pair. */
typedef struct {
    int N, D, KV, n_pairs, has_kv;
    int keys_pre;                   /* 1: the key means are pre-RoPE: named mean_key_pre_rope, key_pre_rope_diff_A_B */
    float *mean_final;              /* [N, D] */
    float *mean_key, *mean_value;   /* [N, KV] (KV = L * KVH * HD) */
    float *diff, *random;           /* [n_pairs, D] */
    float *key_diff, *value_diff;   /* [n_pairs, KV] */
} vectors_set;

static void vectors_free(vectors_set *v) {
    free(v->mean_final); free(v->mean_key); free(v->mean_value); free(v->diff); free(v->random); free(v->key_diff); free(v->value_diff);
    memset(v, 0, sizeof *v);
}

/* From the final-state means of fin and the K / V means of kv (NULL: none); 0, or -1 out of memory. */
static int vectors_build(vectors_set *v, const codi_means *fin, const codi_means *kv, int seed) {
    int a, b, p = 0, j, N = fin->n_latent, D = fin->dim, KV = fin->kv_size;
    codi_rng rng;
    memset(v, 0, sizeof *v);
    v->N = N; v->D = D; v->KV = KV; v->n_pairs = N * (N - 1) / 2; v->has_kv = kv != NULL;
    v->mean_final = (float *)malloc(sizeof(float) * (size_t)N * D);
    v->mean_key = (float *)calloc((size_t)N * KV, sizeof(float)); v->mean_value = (float *)calloc((size_t)N * KV, sizeof(float));
    v->diff = (float *)malloc(sizeof(float) * (size_t)(v->n_pairs + 1) * D); v->random = (float *)malloc(sizeof(float) * (size_t)(v->n_pairs + 1) * D);
    v->key_diff = (float *)malloc(sizeof(float) * (size_t)(v->n_pairs + 1) * KV); v->value_diff = (float *)malloc(sizeof(float) * (size_t)(v->n_pairs + 1) * KV);
    if (!v->mean_final || !v->mean_key || !v->mean_value || !v->diff || !v->random || !v->key_diff || !v->value_diff) { vectors_free(v); return -1; }
    codi_means_get(fin, v->mean_final, NULL, NULL);
    if (kv) codi_means_get(kv, NULL, v->mean_key, v->mean_value);
    codi_rng_seed(&rng, (uint64_t)seed);
    for (a = 1; a <= N; a++)
        for (b = a + 1; b <= N; b++, p++) {
            float *d = v->diff + (size_t)p * D, *dk = v->key_diff + (size_t)p * KV, *dv = v->value_diff + (size_t)p * KV;
            for (j = 0; j < D; j++) d[j] = v->mean_final[(size_t)(b - 1) * D + j] - v->mean_final[(size_t)(a - 1) * D + j];
            for (j = 0; j < KV; j++) {
                dk[j] = v->mean_key[(size_t)(b - 1) * KV + j] - v->mean_key[(size_t)(a - 1) * KV + j];
                dv[j] = v->mean_value[(size_t)(b - 1) * KV + j] - v->mean_value[(size_t)(a - 1) * KV + j];
            }
            codi_rng_direction(&rng, v->random + (size_t)p * D, D, codi_l2_norm(d, D));
        }
    return 0;
}

/* Writes a vectors_set as safetensors (names of the command's description) with metadata. */
static int vectors_save(const char *out, const codi_model *m, const vectors_set *v, long count, const char *const *meta) {
    const codi_config *c = &m->config;
    int a, b, p = 0, ne = 0, rc;
    codi_safetensors_entry *e = (codi_safetensors_entry *)calloc((size_t)(3 + 4 * v->n_pairs), sizeof *e);
    char (*names)[48] = (char (*)[48])malloc(sizeof *names * (size_t)(4 * v->n_pairs + 1));
    if (!e || !names) { fprintf(stderr, "codi vectors: out of memory\n"); free(e); free(names); return 1; }
#define VECTORS_ENTRY(nm, ptr, nd, s0, s1, s2, s3) do { e[ne].name = nm; e[ne].dtype = CODI_F32; e[ne].data = ptr; e[ne].ndim = nd; \
        e[ne].shape[0] = s0; e[ne].shape[1] = s1; e[ne].shape[2] = s2; e[ne].shape[3] = s3; ne++; } while (0)
    VECTORS_ENTRY("mean_final", v->mean_final, 2, v->N, v->D, 0, 0);
    if (v->has_kv) {
        VECTORS_ENTRY(v->keys_pre ? "mean_key_pre_rope" : "mean_key", v->mean_key, 4, v->N, c->n_layers, c->n_kv_heads, c->head_dim);
        VECTORS_ENTRY("mean_value", v->mean_value, 4, v->N, c->n_layers, c->n_kv_heads, c->head_dim);
    }
    for (a = 1; a <= v->N; a++)
        for (b = a + 1; b <= v->N; b++, p++) {
            snprintf(names[4 * p], 48, "diff_%d_%d", a, b);
            snprintf(names[4 * p + 1], 48, "random_%d_%d", a, b);
            snprintf(names[4 * p + 2], 48, "%s_%d_%d", v->keys_pre ? "key_pre_rope_diff" : "key_diff", a, b);
            snprintf(names[4 * p + 3], 48, "value_diff_%d_%d", a, b);
            VECTORS_ENTRY(names[4 * p], v->diff + (size_t)p * v->D, 1, v->D, 0, 0, 0);
            VECTORS_ENTRY(names[4 * p + 1], v->random + (size_t)p * v->D, 1, v->D, 0, 0, 0);
            if (v->has_kv) {
                VECTORS_ENTRY(names[4 * p + 2], v->key_diff + (size_t)p * v->KV, 3, c->n_layers, c->n_kv_heads, c->head_dim, 0);
                VECTORS_ENTRY(names[4 * p + 3], v->value_diff + (size_t)p * v->KV, 3, c->n_layers, c->n_kv_heads, c->head_dim, 0);
            }
        }
#undef VECTORS_ENTRY
    rc = cli_out_safetensors(out, e, ne, meta) ? 1 : 0;
    if (!rc) printf("wrote %s: mean_final [%d, %d]%s, %d pairs (diff_A_B, random_A_B%s) from %ld questions\n", out, v->N, v->D,
                v->has_kv ? (v->keys_pre ? ", mean_key_pre_rope / mean_value" : ", mean_key / mean_value") : "", v->n_pairs,
                v->has_kv ? (v->keys_pre ? ", key_pre_rope_diff_A_B, value_diff_A_B" : ", key_diff_A_B, value_diff_A_B") : "", count);
    free(e); free(names);
    return rc;
}

/* --- contrastive KV steering vectors (Belitsky et al. 2025) ------------------------------------ */

typedef struct { const codi_model *m; const codi_tokenizer *t; codi_state *s; double *key, *value; long count; int recipe, failed; } vectors_kv_ctx;

/* The prefill of one prompt; its K / V at the last position are added to the sums. */
static int vectors_kv_last(void *user, const cli_question *q) {
    vectors_kv_ctx *kc = (vectors_kv_ctx *)user;
    const codi_config *c = &kc->m->config;
    int32_t ids[4096];
    int n = vectors_prompt(kc->m, kc->t, q, kc->recipe, ids, 4096), l, h, j;
    codi_state_reset(kc->s);
    if (n <= 0 || n > kc->s->max_pos || codi_forward(kc->m, kc->s, ids, NULL, n, NULL)) {
        fprintf(stderr, "codi vectors: line %d: %s\n", q->line, n <= 0 ? "no usable prompt" : kc->s->error); kc->failed++; return 0;
    }
    for (l = 0; l < c->n_layers; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            const float *k = codi_state_key(kc->s, l, h, n - 1), *v = codi_state_value(kc->s, l, h, n - 1);
            size_t o = ((size_t)l * c->n_kv_heads + h) * c->head_dim;
            for (j = 0; j < c->head_dim; j++) { kc->key[o + j] += k[j]; kc->value[o + j] += v[j]; }
        }
    kc->count++;
    return 0;
}

/* key_steer / value_steer [L, KVH, HD] = mean K / V at the last prompt position over the positive
   prompts minus over the negative ones. */
static int vectors_contrast(const cli_model_args *ma, const codi_model *m, const codi_tokenizer *t, const char *pos, const char *neg,
                            int limit, int recipe, const char *out) {
    const codi_config *c = &m->config;
    size_t KV = (size_t)c->n_layers * c->n_kv_heads * c->head_dim, j;
    vectors_kv_ctx kc[2];
    float *ks = (float *)malloc(sizeof(float) * KV), *vs = (float *)malloc(sizeof(float) * KV);
    int i, rc = 1, n_bad = 0;
    char counts[64];
    codi_safetensors_entry e[2];
    const char *meta[] = { "format", "codi_lens.kv_steer.v1", "model", ma->model, "positive", pos, "negative", neg, "counts", counts,
                           "what", "mean post-RoPE K / V at the last prompt position (after the prefill): positive minus negative",
                           "use", "{\"at\": \"kv_cache\", \"when\": \"after_prefill\", \"positions\": \"last\", \"value_vector\": \"FILE:value_steer\"}",
                           "codi_lens", CLI_VERSION, NULL };
    memset(kc, 0, sizeof kc);
    for (i = 0; i < 2; i++) {
        kc[i].m = m; kc[i].t = t; kc[i].recipe = recipe;
        kc[i].s = codi_state_new(m, 4096, ma->threads);
        kc[i].key = (double *)calloc(KV, sizeof(double)); kc[i].value = (double *)calloc(KV, sizeof(double));
        if (!kc[i].s || !kc[i].key || !kc[i].value || !ks || !vs) { fprintf(stderr, "codi vectors: out of memory\n"); goto done; }
        if (cli_for_each_question(i ? neg : pos, limit, 0, 0, vectors_kv_last, &kc[i], &n_bad) || kc[i].failed || !kc[i].count) {
            fprintf(stderr, "codi vectors: %s: %ld prompts used, %d failed\n", i ? neg : pos, kc[i].count, kc[i].failed); goto done;
        }
    }
    for (j = 0; j < KV; j++) {
        ks[j] = (float)(kc[0].key[j] / kc[0].count - kc[1].key[j] / kc[1].count);
        vs[j] = (float)(kc[0].value[j] / kc[0].count - kc[1].value[j] / kc[1].count);
    }
    snprintf(counts, sizeof counts, "%ld positive, %ld negative", kc[0].count, kc[1].count);
    memset(e, 0, sizeof e);
    e[0].name = "key_steer"; e[0].dtype = CODI_F32; e[0].data = ks; e[0].ndim = 3;
    e[0].shape[0] = c->n_layers; e[0].shape[1] = c->n_kv_heads; e[0].shape[2] = c->head_dim;
    e[1] = e[0]; e[1].name = "value_steer"; e[1].data = vs;
    if (!cli_out_safetensors(out, e, 2, meta)) { printf("wrote %s: key_steer, value_steer [%d, %d, %d] from %s\n", out, c->n_layers, c->n_kv_heads, c->head_dim, counts); rc = 0; }
done:
    for (i = 0; i < 2; i++) { codi_state_free(kc[i].s); free(kc[i].key); free(kc[i].value); }
    free(ks); free(vs);
    return rc;
}

/* --- llama.cpp control vectors (GGUF v3) ------------------------------------------------------ */

static void vectors_put_u32(FILE *f, uint32_t v) { unsigned char b[4]; int i; for (i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i)); fwrite(b, 1, 4, f); }
static void vectors_put_u64(FILE *f, uint64_t v) { unsigned char b[8]; int i; for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i)); fwrite(b, 1, 8, f); }
static void vectors_put_str(FILE *f, const char *s) { vectors_put_u64(f, strlen(s)); fwrite(s, 1, strlen(s), f); }

enum { VECTORS_GGUF_U32 = 4, VECTORS_GGUF_STRING = 8, VECTORS_GGUF_ALIGN = 32 };

/* Writes rows[i] [D] as "direction.(layers[i])" F32, with repeng's export_gguf metadata
   (controlvector.model_hint, controlvector.layer_count as uint32). */
static int vectors_write_gguf(const char *path, const float *const *rows, const int *layers, int n, int D) {
    FILE *f = cli_out_open(path, "wb");
    long pos;
    int i;
    char num[32];
    if (!f) return 1;
    fwrite("GGUF", 1, 4, f);
    vectors_put_u32(f, 3);                               /* version */
    vectors_put_u64(f, (uint64_t)n);                     /* tensors */
    vectors_put_u64(f, 3);                               /* key-value pairs */
    vectors_put_str(f, "general.architecture"); vectors_put_u32(f, VECTORS_GGUF_STRING); vectors_put_str(f, "controlvector");
    vectors_put_str(f, "controlvector.model_hint"); vectors_put_u32(f, VECTORS_GGUF_STRING); vectors_put_str(f, "llama");
    vectors_put_str(f, "controlvector.layer_count"); vectors_put_u32(f, VECTORS_GGUF_U32); vectors_put_u32(f, (uint32_t)n);
    for (i = 0; i < n; i++) {                            /* tensor infos: name, dims, type F32 (0), offset */
        snprintf(num, sizeof num, "direction.%d", layers[i]);
        vectors_put_str(f, num); vectors_put_u32(f, 1); vectors_put_u64(f, (uint64_t)D); vectors_put_u32(f, 0);
        vectors_put_u64(f, (uint64_t)i * (((uint64_t)D * 4 + VECTORS_GGUF_ALIGN - 1) / VECTORS_GGUF_ALIGN * VECTORS_GGUF_ALIGN));
    }
    for (pos = ftell(f); pos % VECTORS_GGUF_ALIGN; pos++) fputc(0, f);
    for (i = 0; i < n; i++) {
        int j;
        for (j = 0; j < D; j++) { uint32_t u; memcpy(&u, &rows[i][j], 4); vectors_put_u32(f, u); }
        for (j = D * 4; j % VECTORS_GGUF_ALIGN; j++) fputc(0, f);
    }
    return cli_out_close(f) ? 1 : 0;
}

typedef struct { const unsigned char *p, *end; int bad; } vectors_rd;
static uint64_t vectors_get(vectors_rd *r, int n) {
    uint64_t v = 0; int i;
    if (r->bad || r->end - r->p < n) { r->bad = 1; return 0; }
    for (i = n - 1; i >= 0; i--) v = v << 8 | r->p[i];
    r->p += n;
    return v;
}
/* Skips a GGUF value of type t (arrays and strings included). */
static void vectors_skip_value(vectors_rd *r, uint32_t t, int depth) {
    static const int size[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    if (t == VECTORS_GGUF_STRING) { uint64_t n = vectors_get(r, 8); if (n > (uint64_t)(r->end - r->p)) r->bad = 1; else r->p += n; }
    else if (t == 9 && depth < 4) {
        uint32_t et = (uint32_t)vectors_get(r, 4);
        uint64_t n = vectors_get(r, 8), i;
        for (i = 0; i < n && !r->bad; i++) vectors_skip_value(r, et, depth + 1);
    } else if (t < 13 && size[t]) vectors_get(r, size[t]);
    else r->bad = 1;
}

/* Reads the direction.N tensors of a control-vector GGUF: *n of them, rows [n, D] (malloc), layers [n]. */
static int vectors_read_gguf(const char *path, float **rows, int **layers, int *n, int *D, char *err, size_t errsz) {
    size_t len;
    unsigned char *data = (unsigned char *)codi_read_text(path, &len);
    vectors_rd r;
    uint64_t nt, nkv, i, align = VECTORS_GGUF_ALIGN, *offs = NULL;
    unsigned char *seen = NULL;      /* [100001] layers read */
    size_t start;
    int rc = -1;
    *rows = NULL; *layers = NULL; *n = 0; *D = 0;
    if (!data) { cli_err(err, errsz, "cannot read %s", path); return -1; }
    r.p = data; r.end = data + len; r.bad = 0;
    if (len < 24 || memcmp(data, "GGUF", 4)) { cli_err(err, errsz, "%s is not a GGUF file", path); goto done; }
    r.p += 4;
    if (vectors_get(&r, 4) != 3 && (r.p -= 4, vectors_get(&r, 4) != 2)) { cli_err(err, errsz, "%s: GGUF version other than 2 or 3", path); goto done; }
    nt = vectors_get(&r, 8); nkv = vectors_get(&r, 8);
    if (nt > 100000 || nkv > 100000) { cli_err(err, errsz, "%s: implausible counts", path); goto done; }
    for (i = 0; i < nkv && !r.bad; i++) {
        uint64_t kl = vectors_get(&r, 8);
        const unsigned char *key = r.p;
        uint32_t t;
        if (kl > (uint64_t)(r.end - r.p)) { r.bad = 1; break; }
        r.p += kl;
        t = (uint32_t)vectors_get(&r, 4);
        if (kl == 17 && !memcmp(key, "general.alignment", 17) && t == VECTORS_GGUF_U32) align = vectors_get(&r, 4);
        else vectors_skip_value(&r, t, 0);
    }
    *rows = (float *)calloc(1, 1); *layers = (int *)malloc(sizeof(int) * (size_t)(nt ? nt : 1)); offs = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(nt ? nt : 1));
    if (!*rows || !*layers || !offs || !(seen = (unsigned char *)calloc(100001, 1))) { cli_err(err, errsz, "out of memory"); goto done; }
    for (i = 0; i < nt && !r.bad; i++) {
        uint64_t nl = vectors_get(&r, 8), dim = 1;
        const unsigned char *name = r.p;
        uint32_t nd, t, d;
        char nm[64], *end;
        long layer;
        if (nl > (uint64_t)(r.end - r.p) || nl >= sizeof nm) { r.bad = 1; break; }
        memcpy(nm, name, (size_t)nl); nm[nl] = 0; r.p += nl;
        nd = (uint32_t)vectors_get(&r, 4);
        for (d = 0; d < nd && d < 8; d++) dim *= vectors_get(&r, 8);
        t = (uint32_t)vectors_get(&r, 4); offs[i] = vectors_get(&r, 8);
        layer = !strncmp(nm, "direction.", 10) && nm[10] >= '0' && nm[10] <= '9' ? strtol(nm + 10, &end, 10) : -1;
        if (layer < 0 || *end || layer > 100000 || nd != 1 || t != 0 || dim == 0 || dim > 1000000 || (*D && dim != (uint64_t)*D)) {
            cli_err(err, errsz, "%s: tensor %s is not a direction.N (0 <= N <= 100000) F32 vector of one size", path, nm); goto done;
        }
        if (seen[layer]++) { cli_err(err, errsz, "%s: tensor %s appears twice", path, nm); goto done; }
        *D = (int)dim; (*layers)[i] = (int)layer;
    }
    if (r.bad || !align || align > 65536) { cli_err(err, errsz, "%s: truncated or malformed GGUF header", path); goto done; }
    start = ((size_t)(r.p - data) + align - 1) / align * align;
    if (start > len || (double)nt * *D * 4 > (double)(len - start)) {   /* every direction's data is its own (distinct layers) */
        cli_err(err, errsz, "%s: %llu directions of %d floats do not fit the file's %llu data bytes", path, (unsigned long long)nt, *D,
                  (unsigned long long)(start > len ? 0 : len - start));
        goto done;
    }
    free(*rows);
    if (!(*rows = (float *)malloc(sizeof(float) * (size_t)(nt ? nt : 1) * (size_t)(*D ? *D : 1)))) { cli_err(err, errsz, "out of memory"); goto done; }
    for (i = 0; i < nt; i++) {
        if (offs[i] > len || start + offs[i] + (size_t)*D * 4 > len) { cli_err(err, errsz, "%s: tensor data outside the file", path); goto done; }
        memcpy(*rows + (size_t)i * *D, data + start + offs[i], (size_t)*D * 4);
        if (!cli_all_finite(*rows + (size_t)i * *D, *D)) { cli_err(err, errsz, "%s: direction.%d is not finite", path, (*layers)[i]); goto done; }
    }
    *n = (int)nt;
    rc = 0;
done:
    free(offs); free(seen);
    free(data);
    if (rc) { free(*rows); free(*layers); *rows = NULL; *layers = NULL; }
    return rc;
}

/* --- the command -------------------------------------------------------------------------------- */

/* n_layers, dim: the model's, to check --layers and the directions' length against (0: no --model given). */
static int vectors_to_gguf(const char *ref, const char *layers_arg, const char *out, int n_layers, int dim) {
    char err[512];
    long n = 0, last = 0;
    const char *colon = strrchr(ref, ':');
    float *v;
    const float *rows[1024];
    int layers[1024], k = 0, lo = 0, hi = -1, r, rc;
    if (colon && !strncmp(colon + 1, "mean_", 5)) {   /* [N, ...] by latent step, not by residual index */
        fprintf(stderr, "codi vectors: %s holds one row per latent step, not per residual index: export a [D] direction (diff_A_B) with --layers\n", ref);
        return 2;
    }
    if (!(v = codi_vector_read(ref, NULL, &n, &last, err, sizeof err))) { fprintf(stderr, "codi vectors: %s\n", err); return 1; }
    if (dim && last != dim) {
        fprintf(stderr, "codi vectors: %s has rows of %ld numbers; the model's hidden size (n_embd) is %d\n", ref, last, dim); free(v); return 2;
    }
    if (layers_arg && n_layers && sscanf(layers_arg, "%d-%d", &lo, &hi) == 2 && hi > n_layers) {
        fprintf(stderr, "codi vectors: --layers %s: the model's residual indices end at %d\n", layers_arg, n_layers); free(v); return 2;
    }
    if (layers_arg && (sscanf(layers_arg, "%d-%d", &lo, &hi) != 2 || lo < 2 || hi < lo || hi > 1023)) {
        fprintf(stderr, "codi vectors: --layers needs A-B, our residual indices with 2 <= A <= B (index 1, block 0's output, has no llama.cpp direction)\n");
        free(v); return 2;
    }
    if (n == last) {                              /* one [D] vector: direction.(i-1) for residual indices lo..hi */
        if (!layers_arg) { fprintf(stderr, "codi vectors: a [D] vector needs --layers A-B (our residual indices)\n"); free(v); return 2; }
        if (!n_layers) fprintf(stderr, "codi vectors: warning: --layers %d-%d (%d directions) not checked against a model: give --model to check it\n", lo, hi, hi - lo + 1);
        for (r = lo; r <= hi; r++) { rows[k] = v; layers[k++] = r - 1; }
    } else {                                      /* [L+1, D]: row i is residual index i -> direction.(i-1), i >= 2 */
        long R = n / last;
        if (R > 1024) { fprintf(stderr, "codi vectors: too many rows\n"); free(v); return 1; }
        if ((n_layers && R != n_layers + 1) || (layers_arg && hi >= R)) {
            char want[64];
            if (n_layers) snprintf(want, sizeof want, "L + 1 = %d rows (the model's)", n_layers + 1); else snprintf(want, sizeof want, "L + 1 rows");
            fprintf(stderr, "codi vectors: %s has %ld rows; a tensor by residual index has %s%s\n", ref, R, want,
                    layers_arg && hi >= R ? " and --layers must stay below them" : "");
            free(v); return 2;
        }
        for (r = 2; r < R; r++) {
            int nonzero = 0, j;
            if (layers_arg && (r < lo || r > hi)) continue;
            for (j = 0; j < last; j++) nonzero |= v[(size_t)r * last + j] != 0;
            if (nonzero) { rows[k] = v + (size_t)r * last; layers[k++] = r - 1; }
        }
        for (r = 0; r < last; r++) if (v[r] != 0 || v[last + r] != 0) { fprintf(stderr, "codi vectors: note: rows 0 and 1 (embeddings, block 0's output) have no llama.cpp direction; left out\n"); break; }
    }
    if (!k) { fprintf(stderr, "codi vectors: %s: no direction to write (its rows from residual index 2 on are zero, or --layers selects none)\n", ref); free(v); return 1; }
    if (!n_layers && n != last) fprintf(stderr, "codi vectors: warning: %s's %ld rows taken as residual indices 0..%ld, not checked against a model: give --model to check it\n", ref, n / last, n / last - 1);
    rc = vectors_write_gguf(out, rows, layers, k, (int)last);
    if (!rc) printf("wrote %s: %d directions (direction.N = our residual index N + 1), n_embd %ld\n", out, k, last);
    free(v);
    return rc;
}

static int vectors_from_gguf(const char *in, const char *out, const char *spec) {
    char err[512], (*names)[32];
    float *rows;
    int *layers, n, D, i, rc;
    codi_safetensors_entry *e;
    if (vectors_read_gguf(in, &rows, &layers, &n, &D, err, sizeof err)) { fprintf(stderr, "codi vectors: %s\n", err); return 1; }
    e = (codi_safetensors_entry *)calloc((size_t)(n ? n : 1), sizeof *e);
    names = (char (*)[32])malloc(sizeof *names * (size_t)(n ? n : 1));
    for (i = 0; i < n; i++) {
        snprintf(names[i], 32, "direction.%d", layers[i]);
        e[i].name = names[i]; e[i].dtype = CODI_F32; e[i].data = rows + (size_t)i * D; e[i].ndim = 1; e[i].shape[0] = D;
    }
    {
        const char *meta[] = { "format", "codi_lens.control_vector.v1", "source", in,
                               "layers", "direction.N is added to the output of block N: our residual index N + 1", NULL };
        rc = cli_out_safetensors(out, e, n, meta) ? 1 : 0;
    }
    if (!rc && spec) {                            /* every direction at its residual index, every position */
        FILE *f = cli_out_open(spec, "w");
        const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
        if (!f) rc = 1;
        else {
            char text[4200];                      /* file names JSON-escaped */
            snprintf(text, sizeof text, "llama.cpp control vector %s", in);
            fprintf(f, "{\"name\": \"control_vector\", \"description\": ");
            cli_json_string(f, text);
            fprintf(f, ", \"edits\": [");
            for (i = 0; i < n; i++) {
                fprintf(f, "%s\n  {\"at\": \"resid\", \"layer\": %d, \"phase\": \"all\", \"vector\": ", i ? "," : "", layers[i] + 1);
                snprintf(text, sizeof text, "%s:direction.%d", base, layers[i]);
                cli_json_string(f, text);
                fputc('}', f);
            }
            fprintf(f, "]}\n");
            if (cli_out_close(f) != 0) rc = 1;
        }
    }
    if (!rc) printf("wrote %s: %d directions of %d%s%s\n", out, n, D, spec ? " and the spec " : "", spec ? spec : "");
    free(rows); free(layers); free(e); free(names);
    return rc;
}

static int vectors_extract_main(int argc, char **argv);   /* codi vectors extract: tools/cmd_vectors_extract.c */

static int vectors_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *questions = NULL, *acts = NULL, *out = NULL, *to_gguf = NULL, *from_gguf = NULL, *spec = NULL, *layers = NULL;
    const char *positive = NULL, *negative = NULL, *keys = NULL;
    int limit = 0, recipe = 0, latents = 6, seed = 1, rc = 1, n_bad = 0, prc, keys_pre, force = 0, batch = CLI_BATCH_DEFAULT;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "run these questions (\"question\" text, or \"ids\": [BOS, ..., bot] used as given)" },
        { "--acts", CLI_STR, &acts, 0, 0, "ACTS.safetensors", "or read a `codi record` dataset (slots labelled \"latent k\"; --kv for K/V)" },
        { "--limit", CLI_INT, &limit, 0, 100000000, "N", "only the first N questions (default all)" },
        CLI_RECIPE_OPT(&recipe),
        CLI_LATENTS_OPT(&latents, 1, 1000),
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "seed of the random_A_B directions (default 1)" },
        { "--batch", CLI_INT, &batch, 1, 1024, "N", "--questions: runs advanced together through one pass over the weights (codi_batch_*) on --threads; "
          "1: codi_run's results bit for bit; default " CLI_QUOTE(CLI_BATCH_DEFAULT) },
        { "--keys", CLI_STR, &keys, 0, 0, "post|pre", "key means after RoPE, as cached (default: mean_key), or before (mean_key_pre_rope, key_pre_rope_diff_A_B)" },
        { "--out", CLI_STR, &out, 0, 0, "FILE.safetensors", "output" },
        CLI_FORCE_OPT(&force),
        { "--positive", CLI_STR, &positive, 0, 0, "FILE.jsonl", "with --negative: KV steering vectors (Belitsky et al. 2025) from contrastive prompts" },
        { "--negative", CLI_STR, &negative, 0, 0, "FILE.jsonl", "the negative prompts of --positive" },
        { "--to-gguf", CLI_STR, &to_gguf, 0, 0, "FILE:TENSOR", "write TENSOR ([L+1, D] by residual index, or [D] with --layers) as a llama.cpp control vector" },
        { "--layers", CLI_STR, &layers, 0, 0, "A-B", "--to-gguf: our residual indices to export (2..L)" },
        { "--from-gguf", CLI_STR, &from_gguf, 0, 0, "FILE.gguf", "read a llama.cpp / repeng control vector into --out (direction.N tensors)" },
        { "--spec", CLI_STR, &spec, 0, 0, "SPEC.json", "--from-gguf: also write a steering spec adding each direction where llama.cpp does" },
        CLI_END
    };
    if (argc >= 2 && !strcmp(argv[1], "extract")) return vectors_extract_main(argc - 1, argv + 1);
    if ((prc = cli_parse(self, opts, argc, argv)) != CLI_OK) return prc == CLI_HELP ? 0 : 2;
    if (!out) { fprintf(stderr, "codi vectors: --out is required\n"); return 2; }
    if ((keys_pre = cli_keys_option("vectors", keys)) < 0) return 2;
    if (keys_pre && !questions && !acts) { fprintf(stderr, "codi vectors: --keys pre applies to the mean vectors (--questions or --acts)\n"); return 2; }
    {
        const char *in[] = { ma.model, ma.base, ma.tokenizer, questions, acts, positive, negative, to_gguf ? to_gguf : from_gguf };
        char src[4096];
        if (to_gguf) { snprintf(src, sizeof src, "%.*s", strrchr(to_gguf, ':') ? (int)(strrchr(to_gguf, ':') - to_gguf) : (int)strlen(to_gguf), to_gguf); in[7] = src; }
        if (cli_out_check("vectors", out, to_gguf ? CLI_OUT_STREAM : CLI_OUT_FILE, force, in, CLI_N(in))
            || (spec && cli_out_check("vectors", spec, CLI_OUT_STREAM, force, in, CLI_N(in)))) return 2;
    }
    if (to_gguf) {
        int L = 0, D = 0;
        if (ma.model) { codi_model *mm = cli_load_model(&ma); if (!mm) return 1; L = mm->config.n_layers; D = mm->config.dim; codi_model_free(mm); }
        return vectors_to_gguf(to_gguf, layers, out, L, D);
    }
    if (from_gguf) return vectors_from_gguf(from_gguf, out, spec);
    if (!positive != !negative) { fprintf(stderr, "codi vectors: --positive and --negative go together\n"); return 2; }
    if (positive ? questions || acts : !questions == !acts) {
        fprintf(stderr, "codi vectors: give one of --questions, --acts, --positive/--negative, --to-gguf, --from-gguf\n"); return 2;
    }
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (positive) {
        codi_model *m = cli_load_model(&ma);
        codi_tokenizer *t = m ? cli_load_tokenizer(&ma, m, 1) : NULL;
        int r = m ? vectors_contrast(&ma, m, t, positive, negative, limit, recipe, out) : 1;
        codi_tokenizer_free(t);
        codi_model_free(m);
        return r;
    }
    {
        codi_model *m = cli_load_model(&ma);
        codi_tokenizer *t = NULL;
        codi_means acc;
        char err[512], count[32], lat[16], sd[16], rec[16];
        int with_kv = 1;
        const char *meta[] = { "format", "codi_lens.vectors.v1", "model", ma.model, "source", questions ? questions : acts,
                               "questions", count, "n_latent", lat, "seed", sd, "recipe", rec,
                               "positions", "latent k = position T0 + k - 1 (T0: prompt length incl. bot); mean_final: final-normed last-layer hidden state there (what prj reads)",
                               "keys", keys_pre ? "mean_key_pre_rope [N, L, KVH, HD], key_pre_rope_diff_A_B [L, KVH, HD]: before RoPE (each question's keys rotated back by their position, then averaged); a kv_cache edit adds to post-RoPE keys, so these are for analysis"
                                                : "mean_key [N, L, KVH, HD], key_diff_A_B [L, KVH, HD]: post-RoPE, as cached",
                               "pairs", "diff_A_B = mean[B] - mean[A] (latent steps, 1-based); random_A_B: Gaussian direction with the norm of diff_A_B (SplitMix64 + polar, seed, pairs in order)",
                               "codi_lens", CLI_VERSION, NULL };
        if (!m) return 1;
        if (codi_means_init(&acc, m, latents)) { fprintf(stderr, "codi vectors: out of memory\n"); codi_model_free(m); return 1; }
        if (questions) {
            vectors_ctx vc;
            memset(&vc, 0, sizeof vc);
            t = cli_load_tokenizer(&ma, m, 1);
            vc.m = m; vc.t = t; vc.acc = &acc; vc.recipe = recipe; vc.latents = latents; vc.keys_pre = keys_pre;
            {   /* the progress total: --limit or the file's lines */
                size_t len;
                char *text = codi_read_text(questions, &len);
                long lines = 0;
                size_t i;
                for (i = 0; text && i < len; i++) lines += text[i] == '\n';
                free(text);
                vc.progress = cli_progress_start("vectors", limit > 0 && limit < lines ? limit : lines, 0);
            }
            if (cli_for_each_question(questions, limit, 0, 0, vectors_collect, &vc, &n_bad) == 0) {
                fprintf(stderr, "codi vectors: %d questions on %d threads, batch %d\n", vc.nq, ma.threads, batch);
                if (vectors_run_questions(&vc, batch, ma.threads) == 0 && !vc.failed && acc.count > 0) rc = 0;
            }
            {
                int i;
                for (i = 0; i < vc.nq; i++) free(vc.q[i].ids);
                free(vc.q);
            }
            cli_progress_end(vc.progress);
            if (rc) fprintf(stderr, "codi vectors: %d questions failed, %d lines malformed, %ld used\n", vc.failed, n_bad, acc.count);
        } else {
            int r = vectors_from_acts(acts, m, &acc, keys_pre, err, sizeof err);
            if (r < 0) fprintf(stderr, "codi vectors: %s\n", err);
            else if (acc.count == 0) fprintf(stderr, "codi vectors: %s has no finished questions\n", acts);
            else { with_kv = r; rc = 0; }
        }
        snprintf(count, sizeof count, "%ld", acc.count); snprintf(lat, sizeof lat, "%d", latents);
        snprintf(sd, sizeof sd, "%d", seed); snprintf(rec, sizeof rec, "%d", recipe);
        if (!rc) {
            vectors_set vs;
            if (vectors_build(&vs, &acc, with_kv ? &acc : NULL, seed)) { fprintf(stderr, "codi vectors: out of memory\n"); rc = 1; }
            else { vs.keys_pre = keys_pre; rc = vectors_save(out, m, &vs, acc.count, meta); }
            vectors_free(&vs);
        }
        codi_means_free(&acc);
        codi_tokenizer_free(t);
        codi_model_free(m);
    }
    return rc;
}

static const cli_command cmd_vectors = {
    "vectors", "mean / difference / random steering vectors, and llama.cpp control vectors (GGUF)",
    "codi vectors --model PATH (--questions FILE.jsonl | --acts ACTS.safetensors) --out V.safetensors [options]\n"
    "       codi vectors --model PATH --positive P.jsonl --negative N.jsonl --out kv.safetensors\n"
    "       codi vectors --to-gguf V.safetensors:TENSOR [--layers A-B] --out cv.gguf\n"
    "       codi vectors --from-gguf cv.gguf --out V.safetensors [--spec SPEC.json]\n"
    "       codi vectors extract --acts ACTS --slot SLOT (--question Q | --mean-of LIST | --where F=V --questions Q.jsonl) --name NAME --out V.safetensors",
    "Mean vectors of the Latent Reasoning Sprint: for latent steps k = 1..N, the mean over the questions of\n"
    "the final-normed last-layer hidden state at latent k's slot (position T0 + k - 1) and of the cached K / V\n"
    "there (post-RoPE); writes mean_final [N, D], mean_key / mean_value [N, L, KVH, HD] and for every pair\n"
    "A < B: diff_A_B = mean[B] - mean[A], key_diff_A_B, value_diff_A_B [L, KVH, HD] and random_A_B (a seeded\n"
    "Gaussian direction with the norm of diff_A_B). Metadata records the source, count, seed and positions.\n"
    "Use them in a steering spec: {\"at\": \"latent_input\", \"step\": 4, \"alpha\": 2, \"vector\": \"V.safetensors:diff_3_5\"}.\n"
    "--keys pre averages the keys before RoPE instead (each question's keys rotated back by their own\n"
    "position, so questions of different lengths line up): mean_key_pre_rope, key_pre_rope_diff_A_B, for\n"
    "analysis (kv_cache edits act on post-RoPE keys).\n"
    "--questions go through the batched runner: --batch N runs (prefill and latent steps) advance together,\n"
    "one pass over the weights per step, on --threads; the sums are made in question order. --batch 1 gives\n"
    "codi_run's means bit for bit; batched products sum in another order, so means agree within ~1e-6\n"
    "(tests/test_batch_runners.sh).\n"
    "codi vectors extract (its --help): one recorded row, or a mean over chosen questions' rows, as a named\n"
    "tensor: activation patching and mean-latent patching specs (examples/specs/).\n\n"
    "KV steering (Belitsky et al. 2025): --positive / --negative prompts give key_steer / value_steer [L, KVH, HD],\n"
    "the mean K / V at the last prompt position over the positive prompts minus over the negative ones; apply\n"
    "once after the prefill at the last slot in every layer (their best Llama-3.2-1B setting: values only):\n"
    "{\"at\": \"kv_cache\", \"when\": \"after_prefill\", \"positions\": \"last\", \"value_vector\": \"kv.safetensors:value_steer\"}.\n\n"
    "llama.cpp control vectors (and repeng's export_gguf): direction.N (F32 [D], N >= 1) is added to the output\n"
    "of block N (0-based), which is our residual index N + 1. --to-gguf takes an [L+1, D] tensor by residual\n"
    "index (rows 2..L are written) or a [D] vector with --layers; --from-gguf writes the directions and,\n"
    "with --spec, a spec that adds each at \"resid\" layer N + 1 in every phase, as llama.cpp does.\n\n"
    "Examples:\n"
    "  codi vectors --model models/codi-nano/codi_nano.bin --questions data/templates.jsonl --limit 500 --out v.safetensors\n"
    "  codi vectors --to-gguf v.safetensors:diff_3_5 --layers 2-4 --out cv.gguf\n"
    "  codi vectors --from-gguf cv.gguf --out cv.safetensors --spec cv.json",
    vectors_run
};
