/* codi_forward_batch: B sequences advanced through one pass over the weights.
   - the golden CODI answer (tests/data/GOLDEN_README.md, bf16merged) decoded by 9 forked copies at
     once (the multi-position GEMV) matches the reference logits and tokens in every copy;
   - 3 sequences at different positions (the multi-position GEMV) give the logits of one at a time
     (the single-position GEMV) up to float32 summation order: within 1e-5 of the largest |logit|;
   - hooks see each sequence with its own position, phase and step; bad batches are refused;
   - under every kernel path: 5 and 33 sequences (odd: ragged register tiles) at different
     positions, one batched step vs one step each, within 1e-5 of the largest |logit| (1e-4 on the
     paths that split activations into bf16 hi + lo, amx and avx512bf16: each activation then
     carries a relative rounding of up to 2^-17, and a batch of 9+ takes the tiles while a single
     step takes the f32 GEMV).
   The batched runner (codi_batch_*), against codi_run on the same requests:
   - 7 runs of different prompts (12..50 ids), latents (0..6), answer lengths, with and without eot,
     with and without latent_logits (without: lm_head skips their latent rows),
     under the four steering specs of tests/data/steer (latent input, resid, kv_cache, patching),
     through 4 slots (continuous batching) and 64-row passes (the long prompts prefilled in chunks
     beside the decode rows): the same answer tokens; answer logits, latent logits and latents
     within 1e-5 of the largest |value| (1e-4 on amx and avx512bf16), on every kernel path; every
     hook call of codi_run (point, layer, position, phase, step; compared as a set: a prompt
     prefilled in chunks meets the layers chunk by chunk, as codi_forward's 512-row chunks do);
   - a batch of one run is bit-identical to codi_run;
   - branches from a prefix state (prompt + 2 latents computed once) under steering that acts
     after it equal codi_run under that steering;
   - a hook that stops its pass fails only its run; bad requests are refused with a reason.
   Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

typedef struct { int calls, bad; const codi_state *s; } hook_seen;

/* max |a - b| / max |b| over n floats (NaN: infinite) */
static double rel_diff(const float *a, const float *b, int n) {
    double d = 0, mag = 0;
    int i;
    for (i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e == e ? e : INFINITY;
        if (fabs(b[i]) > mag) mag = fabs(b[i]);
    }
    return d / (mag > 0 ? mag : 1);
}
static int check_hook(void *user, const codi_hook_info *info, float *data) {
    hook_seen *h = (hook_seen *)user;
    (void)data;
    h->calls++;
    if (info->pos != h->s->n_pos || info->phase != h->s->phase || info->step != h->s->step) h->bad++;
    return 0;
}

/* ---- the batched runner against codi_run ---- */

#define NREQ 7
typedef struct { unsigned long long hash; long calls; int stop_at; } hook_log;   /* stop_at > 0: stop at that call */

static int log_hook(void *user, const codi_hook_info *info, float *data) {
    hook_log *h = (hook_log *)user;
    unsigned long long x = 1469598103934665603ull;
    int v[6], i;
    (void)data;
    v[0] = info->point; v[1] = info->layer; v[2] = info->pos; v[3] = info->phase; v[4] = info->step; v[5] = info->size;
    for (i = 0; i < 6; i++) x = (x ^ (unsigned long long)(unsigned)v[i]) * 1099511628211ull;
    h->hash += x;                 /* the set of calls: a prompt prefilled in chunks meets the layers chunk by chunk */
    h->calls++;
    return h->stop_at && h->calls == h->stop_at ? 7 : 0;
}

typedef struct {
    int32_t ids[64]; int n;
    codi_run_opts o;              /* outputs pointing into the arrays below */
    const codi_steer *steer;
    float *alog, *llog, *lat;
    hook_log log;
    codi_run_result r;
    int done, status;
    char error[256];
} job;

static int job_setup(void *user, codi_state *s, codi_run_opts *o) {
    job *j = (job *)user;
    (void)o;
    j->log.hash = 0; j->log.calls = 0;
    return codi_state_add_hook(s, log_hook, &j->log) < 0;
}

static int job_done(void *user, const codi_batch_result *r) {
    job *jobs = (job *)user, *j = (job *)r->user;
    (void)jobs;
    j->r = *r->result; j->done++; j->status = r->status;
    snprintf(j->error, sizeof j->error, "%s", r->error);
    return 0;
}

/* Job i's request and output buffers (fresh each time). */
static void job_make(job *j, const codi_model *m, const int32_t *gids, int gn, int i, codi_steer *const *steers) {
    static const int len[NREQ] = { 24, 50, 20, 45, 24, 30, 12 }, lat[NREQ] = { 6, 6, 4, 3, 6, 0, 2 }, ans[NREQ] = { 8, 5, 6, 7, 4, 3, 0 };
    int k, V = m->config.vocab, D = m->config.dim;
    free(j->alog); free(j->llog); free(j->lat);
    memset(j, 0, sizeof *j);
    for (k = 0; k < len[i] - 1; k++) j->ids[k] = k < gn - 1 ? gids[k] : (int32_t)((k * 37 + i * 11) % 500 + 3);
    j->ids[len[i] - 1] = m->config.bot_id; j->n = len[i];
    j->o = codi_run_opts_default(m);
    j->o.n_latent = lat[i]; j->o.max_answer = ans[i]; j->o.stop_at_eos = i % 2; j->o.feed_eot = i != 4;
    j->steer = i >= 1 && i <= 4 ? steers[i - 1] : NULL;
    j->alog = (float *)calloc((size_t)(ans[i] + 1) * V, sizeof(float));
    j->llog = (float *)calloc((size_t)(lat[i] + 1) * V, sizeof(float));
    j->lat = (float *)calloc((size_t)(lat[i] + 1) * D, sizeof(float));
    j->o.answer_logits = j->alog; j->o.latent_logits = j->llog; j->o.latents = j->lat;
}

/* codi_run of job j with its steer and the hook log; 0 or -1. */
static int job_single(const codi_model *m, codi_state *s, job *j) {
    codi_run_opts o = j->o;
    codi_state_clear_hooks(s);
    if (j->steer && codi_steer_install(j->steer, s, &o)) return -1;
    job_setup(j, s, &o);
    j->status = codi_run(m, s, j->ids, j->n, &o, &j->r);
    codi_state_clear_hooks(s);
    return j->status;
}

static double job_diff(const job *a, const job *b, const codi_model *m, int *same_tokens, int *same_hooks) {
    int V = m->config.vocab, D = m->config.dim, nl = a->o.n_latent + 1;
    double w = 0, e;
    *same_tokens = a->r.n_answer == b->r.n_answer && !memcmp(a->r.answer, b->r.answer, sizeof(int32_t) * (size_t)a->r.n_answer) &&
                   a->r.prompt_len == b->r.prompt_len;
    *same_hooks = a->log.calls == b->log.calls && a->log.hash == b->log.hash;
    if (a->r.n_answer) { e = rel_diff(a->alog, b->alog, a->r.n_answer * V); if (!(e <= w)) w = e; }
    e = rel_diff(a->llog, b->llog, nl * V); if (!(e <= w)) w = e;
    e = rel_diff(a->lat, b->lat, nl * D); if (!(e <= w)) w = e;
    return w;
}

static void batch_runner_tests(const codi_model *m, const int32_t *gids, int gn) {
    const char *paths[8], *dflt = codi_kernel_name();
    const char *specs[4] = { "tests/data/steer/s1_z_add.json", "tests/data/steer/s2_resid.json", "tests/data/steer/s3_kv.json", "tests/data/steer/s4_z_set.json" };
    codi_steer *steers[4];
    static job ref[NREQ], got[NREQ];
    codi_state *s = codi_state_new(m, 64, 1);
    char err[256];
    int np = codi_kernels_available(paths, 8), p, i, ok = s != NULL;
    for (i = 0; i < 4; i++) if (!(steers[i] = codi_steer_load(m, specs[i], err, sizeof err))) { printf("# %s\n", err); ok = 0; }
    t_result(ok, "batched runner: steering specs and a state", "");
    if (!ok) return;

    /* 1. 7 runs through 4 slots and 64-row passes, every kernel path */
    for (p = 0; p < np && p < 8; p++) {
        double worst = 0, tol = strcmp(paths[p], "amx") && strcmp(paths[p], "avx512bf16") ? 1e-5 : 1e-4;
        int tokens = 1, hooks = 1, st, sh, runs_ok = 1;
        codi_batch *b = codi_batch_new(m, 4, 64, 2);
        codi_set_kernel(paths[p]);
        for (i = 0; i < NREQ; i++) {
            codi_batch_request q;
            job_make(&ref[i], m, gids, gn, i, steers); job_make(&got[i], m, gids, gn, i, steers);
            runs_ok &= job_single(m, s, &ref[i]) == 0;
            if (i % 2) got[i].o.latent_logits = NULL;             /* unread: lm_head skips those latent rows */
            memset(&q, 0, sizeof q);
            q.ids = got[i].ids; q.n_ids = got[i].n; q.opts = got[i].o; q.steer = got[i].steer; q.setup = job_setup; q.user = &got[i];
            runs_ok &= b && codi_batch_submit(b, &q) == 0;
        }
        runs_ok &= b && codi_batch_run(b, job_done, got) == 0;
        for (i = 0; i < NREQ; i++) {
            double e;
            if (i % 2) memcpy(got[i].llog, ref[i].llog, sizeof(float) * (size_t)(ref[i].o.n_latent + 1) * m->config.vocab);
            e = job_diff(&got[i], &ref[i], m, &st, &sh);
            if (!(e <= worst)) worst = e;
            tokens &= st; hooks &= sh; runs_ok &= got[i].done == 1 && got[i].status == 0;
        }
        t_result(runs_ok && tokens && worst <= tol, "batched runner = codi_run: 7 steered runs, 4 slots, chunked prefill",
                 "path %s: same answers; max difference %.2g of the largest |value| (tol %g)", paths[p], worst, tol);
        if (p == 0) t_result(runs_ok && hooks, "batched runner: the hook calls of codi_run (point, layer, position, phase, step)", "");
        codi_batch_free(b);
    }
    codi_set_kernel(dflt);

    /* 2. a batch of one run: bit-identical */
    {
        codi_batch *b = codi_batch_new(m, 1, 64, 1);
        int same = b != NULL, idx[2] = { 1, 3 }, k;
        for (k = 0; k < 2; k++) {
            codi_batch_request q;
            i = idx[k];
            job_make(&ref[i], m, gids, gn, i, steers); job_make(&got[i], m, gids, gn, i, steers);
            same &= job_single(m, s, &ref[i]) == 0;
            memset(&q, 0, sizeof q);
            q.ids = got[i].ids; q.n_ids = got[i].n; q.opts = got[i].o; q.steer = got[i].steer; q.user = &got[i];
            same &= b && codi_batch_submit(b, &q) == 0;
        }
        same &= b && codi_batch_run(b, job_done, got) == 0;
        for (k = 0; k < 2; k++) {
            i = idx[k];
            same &= got[i].r.n_answer == ref[i].r.n_answer && !memcmp(got[i].alog, ref[i].alog, sizeof(float) * (size_t)got[i].r.n_answer * m->config.vocab) &&
                    !memcmp(got[i].llog, ref[i].llog, sizeof(float) * (size_t)(got[i].o.n_latent + 1) * m->config.vocab) &&
                    !memcmp(got[i].lat, ref[i].lat, sizeof(float) * (size_t)(got[i].o.n_latent + 1) * m->config.dim);
        }
        t_result(same, "batched runner with one slot: bit-identical to codi_run", "");
        codi_batch_free(b);
    }

    /* 3. branches from a prefix (golden prompt + 2 latents, computed once) under steering acting after it */
    {
        codi_state *pre = codi_state_new(m, 64, 1);
        codi_batch *b = codi_batch_new(m, 3, 64, 1);
        codi_run_opts po = codi_run_opts_default(m);
        codi_run_result pr;
        int sel[3] = { 0, 1, 3 }, k, tokens = 1, st, sh, ok3;        /* none, s1 (z_3), s3 (kv after the latents) */
        double worst = 0, e;
        po.n_latent = 2;
        ok3 = pre && b && codi_run_latents(m, pre, gids, gn, &po, &pr) == 0;
        for (k = 0; ok3 && k < 3; k++) {
            codi_batch_request q;
            job_make(&ref[k], m, gids, gn, 0, steers); job_make(&got[k], m, gids, gn, 0, steers);
            ref[k].steer = got[k].steer = sel[k] ? steers[sel[k] - 1] : NULL;
            got[k].o.latent_logits = NULL;                         /* rows 0..1 are the prefix's */
            ok3 &= job_single(m, s, &ref[k]) == 0;
            memset(&q, 0, sizeof q);
            q.prefix = pre; q.opts = got[k].o; q.steer = got[k].steer; q.user = &got[k];
            ok3 &= codi_batch_submit(b, &q) == 0;
        }
        ok3 = ok3 && codi_batch_run(b, job_done, got) == 0;
        for (k = 0; ok3 && k < 3; k++) {
            memcpy(got[k].lat, ref[k].lat, sizeof(float) * 2 * m->config.dim);   /* z_1, z_2: the prefix's */
            memcpy(got[k].llog, ref[k].llog, sizeof(float) * (size_t)(got[k].o.n_latent + 1) * m->config.vocab);
            e = job_diff(&got[k], &ref[k], m, &st, &sh);
            if (!(e <= worst)) worst = e;
            tokens &= st && got[k].status == 0;
        }
        t_result(ok3 && tokens && worst <= 1e-5, "branches from a shared prefix (prompt + 2 latents) = codi_run under the same steering",
                 "max difference %.2g of the largest |value|", worst);
        codi_state_free(pre);
        codi_batch_free(b);
    }

    /* 4. a hook that stops fails its run only; refused requests */
    {
        codi_batch *b = codi_batch_new(m, 3, 64, 1);
        codi_batch_request q;
        int k, others = 1, st, sh;
        for (k = 0; k < 3; k++) {
            job_make(&ref[k], m, gids, gn, k, steers); job_make(&got[k], m, gids, gn, k, steers);
            job_single(m, s, &ref[k]);
            memset(&q, 0, sizeof q);
            q.ids = got[k].ids; q.n_ids = got[k].n; q.opts = got[k].o; q.steer = got[k].steer; q.setup = job_setup; q.user = &got[k];
            codi_batch_submit(b, &q);
        }
        got[1].log.stop_at = (int)(ref[1].log.calls / 2);     /* set after submit: setup resets only hash and calls */
        codi_batch_run(b, job_done, got);
        for (k = 0; k < 3; k += 2) others &= got[k].status == 0 && job_diff(&got[k], &ref[k], m, &st, &sh) <= 1e-5 && st;
        t_result(got[1].status == -1 && strstr(got[1].error, "code 7") && others, "a hook that stops the pass fails its run only", "%s", got[1].error);
        memset(&q, 0, sizeof q);
        q.opts = codi_run_opts_default(m);
        t_result(codi_batch_submit(b, &q) == -1 && strstr(codi_batch_error(b), "exactly one of ids and prefix"), "a request without ids or prefix is refused",
                 "%s", codi_batch_error(b));
        q.ids = got[0].ids; q.n_ids = got[0].n; got[0].ids[3] = m->config.vocab;
        t_result(codi_batch_submit(b, &q) == -1 && strstr(codi_batch_error(b), "out of range"), "an id out of range is refused", "%s", codi_batch_error(b));
        got[0].ids[3] = 5; q.opts.max_answer = 40;
        t_result(codi_batch_submit(b, &q) == -1 && strstr(codi_batch_error(b), "do not fit"), "a run longer than max_pos is refused", "%s", codi_batch_error(b));
        t_result(codi_batch_pending(b) == 0, "nothing left pending", "");
        codi_batch_free(b);
    }
    for (i = 0; i < NREQ; i++) { free(ref[i].alog); free(ref[i].llog); free(ref[i].lat); free(got[i].alog); free(got[i].llog); free(got[i].lat); }
    for (i = 0; i < 4; i++) codi_steer_free(steers[i]);
    codi_state_free(s);
}

int main(void) {
    t_golden g;
    size_t T;
    const int32_t *ids;
    codi_model *m;
    codi_state *base, *st[9], *one[3];
    codi_run_opts ro;
    codi_run_result rr;
    int b, k, V;
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    m = t_load("tests/data/codi_tiny.bin", 0);
    if (!m) { t_result(0, "load codi_tiny.bin", ""); return t_summary(); }
    V = m->config.vocab;

    /* 1. the golden answer, 9 copies at once */
    {
        const float *ref = t_gf(&g, "bf16merged.answer_logits", NULL);
        const int32_t *ref_tok = t_gi(&g, "bf16merged.answer_tokens", NULL);
        int32_t tok[9];
        double worst = 0;
        int tokens_ok = 1;
        base = codi_state_new(m, 64, 2);
        ro = codi_run_opts_default(m);
        t_result(base && codi_run_latents(m, base, ids, (int)T, &ro, &rr) == 0, "prefill + 6 latents", "");
        for (b = 0; b < 9; b++) { st[b] = codi_state_new(m, 64, 1); codi_state_copy(m, st[b], base); tok[b] = m->config.eot_id; }
        for (k = 0; k < 16; k++) {
            if (codi_forward_batch(m, st, tok, NULL, 9)) { t_result(0, "batched answer step", "%s", st[0]->error); break; }
            for (b = 0; b < 9; b++) {
                double e = t_max_abs(st[b]->logits, ref + (size_t)k * 514, 514);
                if (e > worst) worst = e;
                tok[b] = codi_argmax_answer(m, st[b]->logits);
                if (k < 3 && tok[b] != ref_tok[k]) tokens_ok = 0;     /* the first steps have margins > 0.02 */
            }
        }
        t_result(worst <= 5e-3, "9 sequences decoded at once match the golden answer_logits", "max |diff| %.3g over 16 steps (tol 5e-3)", worst);
        t_result(tokens_ok, "and its first answer tokens", "");
        for (b = 0; b < 9; b++) codi_state_free(st[b]);
        codi_state_free(base);
    }

    /* 2. three sequences at different positions, batched vs one at a time */
    {
        int32_t tok[3] = { 5, 77, 300 };
        float emb[3 * 256];
        hook_seen seen[3];
        codi_state *twice[3];
        double worst = 0, e;
        int same_pos = 1, ok = 1;
        for (b = 0; b < 3; b++) {
            st[b] = codi_state_new(m, 64, 1); one[b] = codi_state_new(m, 64, 1);
            ok &= codi_forward(m, st[b], ids, NULL, (int)T - 5 * b, NULL) == 0;
            ok &= codi_state_copy(m, one[b], st[b]) == 0;
            st[b]->phase = one[b]->phase = b; st[b]->step = one[b]->step = 10 + b;
            seen[b].calls = seen[b].bad = 0; seen[b].s = st[b];
            codi_state_add_hook(st[b], check_hook, &seen[b]);
        }
        t_result(ok, "three prefixes of different lengths", "");
        for (k = 0; k < 4; k++) {
            ok &= codi_forward_batch(m, st, tok, NULL, 3) == 0;
            for (b = 0; b < 3; b++) {
                ok &= codi_forward(m, one[b], &tok[b], NULL, 1, NULL) == 0;
                e = rel_diff(st[b]->logits, one[b]->logits, V); if (!(e <= worst)) worst = e;
                e = rel_diff(st[b]->final_hidden, one[b]->final_hidden, 256); if (!(e <= worst)) worst = e;
                same_pos &= st[b]->n_pos == one[b]->n_pos;
                tok[b] = codi_argmax_answer(m, st[b]->logits);
            }
        }
        for (b = 0; b < 3; b++) { memcpy(emb + b * 256, st[b]->final_hidden, sizeof(float) * 256); }
        ok &= codi_forward_batch(m, st, NULL, emb, 3) == 0;
        for (b = 0; b < 3; b++) {
            ok &= codi_forward(m, one[b], NULL, emb + b * 256, 1, NULL) == 0;
            e = rel_diff(st[b]->logits, one[b]->logits, V); if (!(e <= worst)) worst = e;
        }
        t_result(ok && same_pos && worst <= 1e-5, "batched steps (ids, then vectors) match single steps",
                 "max difference %.2g of the largest |value|", worst);
        t_result(seen[0].calls > 0 && seen[0].calls == seen[1].calls && seen[1].calls == seen[2].calls &&
                 !seen[0].bad && !seen[1].bad && !seen[2].bad, "hooks see each sequence's own position, phase and step",
                 "%d calls each", seen[0].calls);

        /* 3. refused batches */
        twice[0] = st[0]; twice[1] = st[1]; twice[2] = st[0];
        t_result(codi_forward_batch(m, twice, tok, NULL, 3) == -1 && strstr(st[0]->error, "also state"), "the same state twice is refused", "%s", st[0]->error);
        tok[1] = V;
        t_result(codi_forward_batch(m, st, tok, NULL, 3) == -1 && strstr(st[1]->error, "out of range"), "an out-of-range id is refused in its state", "%s", st[1]->error);
        tok[1] = 1;
        t_result(codi_forward_batch(m, st, tok, emb, 3) == -1 && codi_forward_batch(m, st, NULL, NULL, 3) == -1,
                 "exactly one of ids and vectors", "%s", st[0]->error);
        twice[0] = codi_state_new(m, 8, 1); twice[1] = st[1];
        t_result(twice[0] && codi_forward_batch(m, twice, tok, NULL, 2) == -1 && strstr(st[1]->error, "largest max_pos"),
                 "a sequence longer than states[0] can hold is refused", "%s", st[1]->error);
        codi_state_free(twice[0]);
        emb[256 + 3] = NAN;
        t_result(codi_forward_batch(m, st, NULL, emb, 3) == -1 && strstr(st[1]->error, "not finite"), "a NaN vector is refused", "%s", st[1]->error);
        for (b = 0; b < 3; b++) { codi_state_free(st[b]); codi_state_free(one[b]); }
    }

    /* 4. odd batch sizes under every path: batched step vs single steps, from 33 prefixes prefilled once */
    {
        const char *paths[8], *dflt = codi_kernel_name();
        int np = codi_kernels_available(paths, 8), p, sizes[2] = { 5, 33 }, z, ok = 1;
        codi_state *pre[33], *bs[33], *os[33];
        int32_t tok[33];
        for (b = 0; b < 33; b++) {
            pre[b] = codi_state_new(m, 64, 1); bs[b] = codi_state_new(m, 64, b ? 1 : 2); os[b] = codi_state_new(m, 64, 1);
            ok &= pre[b] && bs[b] && os[b] && codi_forward(m, pre[b], ids, NULL, (int)T - b % 7, NULL) == 0;
            tok[b] = (int32_t)((b * 37 + 11) % (V - 3));
        }
        t_result(ok, "33 prefixes of different lengths", "");
        for (p = 0; ok && p < np && p < 8; p++) {
            double worst = 0, e, tol = strcmp(paths[p], "amx") && strcmp(paths[p], "avx512bf16") ? 1e-5 : 1e-4;
            int okp = codi_set_kernel(paths[p]) == 0;
            for (z = 0; z < 2; z++) {
                for (b = 0; b < sizes[z]; b++) okp &= codi_state_copy(m, bs[b], pre[b]) == 0 && codi_state_copy(m, os[b], pre[b]) == 0;
                okp &= codi_forward_batch(m, bs, tok, NULL, sizes[z]) == 0;
                for (b = 0; b < sizes[z]; b++) {
                    okp &= codi_forward(m, os[b], &tok[b], NULL, 1, NULL) == 0;
                    e = rel_diff(bs[b]->logits, os[b]->logits, V); if (!(e <= worst)) worst = e;
                }
            }
            t_result(okp && worst <= tol, "5 and 33 sequences batched match single steps", "path %s: max difference %.2g of the largest |logit| (tol %g)",
                     paths[p], worst, tol);
        }
        for (b = 0; b < 33; b++) { codi_state_free(pre[b]); codi_state_free(bs[b]); codi_state_free(os[b]); }
        codi_set_kernel(dflt);
    }

    /* 5. the batched runner */
    batch_runner_tests(m, ids, (int)T);
    codi_model_free(m);
    t_golden_close(&g);
    return t_summary();
}
