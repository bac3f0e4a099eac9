/* codi_forward_reference (>>reference, the plain one-position-at-a-time forward) against the fast
   codi_forward on the golden codi_tiny (f32 and bf16 weights): the prefill's logits, residuals and
   K/V cache, 6 latent steps and 16 answer tokens driven as codi_run drives them, the hooks seen
   (points, layers, positions, phases, steps), and steering specs through both; the reference also
   against the Hugging Face golden tensors. Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define DATA "tests/data/"
#define N_LAT 6
#define N_ANS 16

typedef int (*forward_fn)(const codi_model *, codi_state *, const int32_t *, const float *, int, float *);

/* What one run gives: the prefill (all-position logits, residuals, caches) and the CODI loop. */
typedef struct {
    float *prefill_logits, *resid, *key, *value;      /* [T, V], [L+1, T, D], [L, KVH, T, HD] */
    float *latent_inputs, *latent_logits, *answer_logits;   /* [N+1, D], [N+1, V], [A, V] */
    int32_t answer[N_ANS];
    int n_answer;
} run_out;

/* The CODI loop of codi_run_latents + codi_run_answer with `fwd` as the forward pass (and the
   kv_cache edits of st after each step, as codi_steer_install sets them). */
static int drive(const codi_model *m, codi_state *s, forward_fn fwd, const codi_steer *st, const int32_t *ids, int T, run_out *o) {
    const codi_config *c = &m->config;
    int V = c->vocab, D = c->dim, L = c->n_layers, k, l, h;
    float z[1024];
    int32_t tok = c->eot_id;
    codi_state_reset(s);
    s->phase = CODI_PHASE_PREFILL; s->step = 0;
    if (fwd(m, s, ids, NULL, T, o->prefill_logits)) return -1;
    for (l = 0; l <= L; l++) memcpy(o->resid + (size_t)l * T * D, codi_state_resid(s, l, 0), sizeof(float) * T * D);
    for (l = 0; l < L; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            size_t at = ((size_t)l * c->n_kv_heads + h) * T * c->head_dim;
            memcpy(o->key + at, codi_state_key(s, l, h, 0), sizeof(float) * T * c->head_dim);
            memcpy(o->value + at, codi_state_value(s, l, h, 0), sizeof(float) * T * c->head_dim);
        }
    memcpy(o->latent_logits, s->logits, sizeof(float) * V);
    if (st && codi_steer_after_latent((void *)st, s, 0, N_LAT)) return -1;
    for (k = 1; k <= N_LAT; k++) {
        s->phase = CODI_PHASE_LATENT; s->step = k;
        if (codi_project(m, s->final_hidden, z) || fwd(m, s, NULL, z, 1, NULL)) return -1;
        memcpy(o->latent_inputs + (size_t)(k - 1) * D, codi_state_resid(s, 0, s->n_pos - 1), sizeof(float) * D);
        memcpy(o->latent_logits + (size_t)k * V, s->logits, sizeof(float) * V);
        if (st && codi_steer_after_latent((void *)st, s, k, N_LAT)) return -1;
    }
    if (codi_project(m, s->final_hidden, o->latent_inputs + (size_t)N_LAT * D)) return -1;
    s->phase = CODI_PHASE_ANSWER; s->step = 0;
    if (fwd(m, s, &tok, NULL, 1, NULL)) return -1;
    for (o->n_answer = 0; o->n_answer < N_ANS; o->n_answer++) {
        tok = codi_argmax_answer(m, s->logits);
        memcpy(o->answer_logits + (size_t)o->n_answer * V, s->logits, sizeof(float) * V);
        o->answer[o->n_answer] = tok;
        s->step = o->n_answer + 1;
        if (o->n_answer + 1 < N_ANS && fwd(m, s, &tok, NULL, 1, NULL)) return -1;
    }
    return 0;
}

static void out_alloc(run_out *o, const codi_config *c, int T) {
    size_t V = (size_t)c->vocab, D = (size_t)c->dim, kv = (size_t)c->n_layers * c->n_kv_heads * T * c->head_dim;
    memset(o, 0, sizeof *o);
    o->prefill_logits = calloc((size_t)T * V, sizeof(float));
    o->resid = calloc((size_t)(c->n_layers + 1) * T * D, sizeof(float));
    o->key = calloc(kv, sizeof(float)); o->value = calloc(kv, sizeof(float));
    o->latent_inputs = calloc((N_LAT + 1) * D, sizeof(float));
    o->latent_logits = calloc((N_LAT + 1) * V, sizeof(float));
    o->answer_logits = calloc(N_ANS * V, sizeof(float));
}

static void out_free(run_out *o) {
    free(o->prefill_logits); free(o->resid); free(o->key); free(o->value);
    free(o->latent_inputs); free(o->latent_logits); free(o->answer_logits);
}

/* Every hook call folded into an order-free fingerprint: a count and a sum of hashes of
   (point, layer, position, phase, step, size). */
typedef struct { long calls; uint64_t sum; } fingerprint;
static int fingerprint_hook(void *user, const codi_hook_info *in, float *data) {
    fingerprint *f = (fingerprint *)user;
    uint64_t x = (uint64_t)in->point * 1000003u + (uint64_t)(in->layer + 1) * 10007u + (uint64_t)in->pos * 101u +
                 (uint64_t)in->phase * 7u + (uint64_t)in->step * 1009u + (uint64_t)in->size * 65537u;
    (void)data;
    f->calls++;
    f->sum += codi_splitmix64(&x);
    return 0;
}

/* The reference against the fast pass on one model; tolerances: logits abs, the rest rel L2. */
static void compare(const char *mode, const run_out *ref, const run_out *fast, const codi_config *c, int T, double tl, double tr) {
    char nm[160];
    size_t V = (size_t)c->vocab, D = (size_t)c->dim, kv = (size_t)c->n_layers * c->n_kv_heads * T * c->head_dim;
#define NAME(x) (snprintf(nm, sizeof nm, "%s: reference == fast: " x, mode), nm)
    t_check_abs(NAME("prefill logits, every position"), ref->prefill_logits, fast->prefill_logits, (size_t)T * V, tl);
    t_check_rel(NAME("prefill residuals, every layer"), ref->resid, fast->resid, (size_t)(c->n_layers + 1) * T * D, tr);
    t_check_rel(NAME("K cache (post-RoPE)"), ref->key, fast->key, kv, tr);
    t_check_rel(NAME("V cache"), ref->value, fast->value, kv, tr);
    t_check_rel(NAME("latent inputs z_1..z_7"), ref->latent_inputs, fast->latent_inputs, (N_LAT + 1) * D, tr);
    t_check_abs(NAME("latent logits (bot + 6 latents)"), ref->latent_logits, fast->latent_logits, (N_LAT + 1) * V, tl);
    t_check_abs(NAME("answer logits, 16 steps"), ref->answer_logits, fast->answer_logits, N_ANS * V, tl);
    t_result(!memcmp(ref->answer, fast->answer, sizeof ref->answer), NAME("answer tokens"), "%d tokens", N_ANS);
#undef NAME
}

int main(void) {
    static const char *const specs[] = { "s1_z_add", "s2_resid", "s3_kv" };
    t_golden g;
    size_t T, cnt;
    const int32_t *ids;
    int mode;
    if (t_golden_open(&g, DATA "golden_tiny.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    printf("# kernel path of the fast pass: %s\n", codi_kernel_name());
    for (mode = 0; mode < 2; mode++) {
        const char *name = mode == 0 ? "f32" : "bf16";
        codi_model *m = t_load(DATA "codi_tiny.bin", mode == 0);
        codi_state *s;
        const codi_config *c;
        run_out ref, fast;
        fingerprint fr = { 0, 0 }, ff = { 0, 0 };
        char nm[200];
        int k;
        if (!m) { t_result(0, "load codi_tiny.bin", "%s", name); continue; }
        c = &m->config;
        s = codi_state_new(m, 64, 1);
        out_alloc(&ref, c, (int)T); out_alloc(&fast, c, (int)T);
        codi_state_add_hook(s, fingerprint_hook, &fr);
        if (drive(m, s, codi_forward_reference, NULL, ids, (int)T, &ref)) t_result(0, "reference run", "%s: %s", name, s->error);
        codi_state_clear_hooks(s);
        codi_state_add_hook(s, fingerprint_hook, &ff);
        if (drive(m, s, codi_forward, NULL, ids, (int)T, &fast)) t_result(0, "fast run", "%s: %s", name, s->error);
        codi_state_clear_hooks(s);
        compare(name, &ref, &fast, c, (int)T, 1e-4, 1e-5);
        snprintf(nm, sizeof nm, "%s: the same hook calls (point, layer, position, phase, step) through both", name);
        t_result(fr.calls == ff.calls && fr.sum == ff.sum && fr.calls == (long)(T + N_LAT + N_ANS) * (3 + 5 * c->n_layers), nm,
                 "%ld calls", fr.calls);
        /* the driver is codi_run: the fast pass under it gives codi_run's bits */
        {
            codi_run_opts ro = codi_run_opts_default(m);
            codi_run_result rr;
            float *al = calloc((size_t)N_ANS * c->vocab, sizeof(float));
            ro.n_latent = N_LAT; ro.max_answer = N_ANS; ro.stop_at_eos = 0; ro.answer_logits = al;
            snprintf(nm, sizeof nm, "%s: the test's loop is codi_run's (fast pass, bit for bit)", name);
            t_result(codi_run(m, s, ids, (int)T, &ro, &rr) == 0 && rr.n_answer == N_ANS &&
                     !memcmp(al, fast.answer_logits, sizeof(float) * N_ANS * c->vocab) && !memcmp(rr.answer, fast.answer, sizeof fast.answer), nm, "");
            free(al);
        }
        /* against Hugging Face (tests/data/GOLDEN_README.md): test_model.c's tolerances */
        if (mode == 0) {
            static const char *const keys[5] = { "f32.prefill_logits", "f32.prefill_resid", "f32.prefill_k", "f32.prefill_v", "f32.latent_inputs" };
            const float *got[5];
            int j;
            got[0] = ref.prefill_logits; got[1] = ref.resid; got[2] = ref.key; got[3] = ref.value; got[4] = ref.latent_inputs;
            for (j = 0; j < 5; j++) {
                const float *want = t_gf(&g, keys[j], &cnt);
                snprintf(nm, sizeof nm, "reference == HF: %s", keys[j]);
                if (j == 0) t_check_abs(nm, got[j], want, cnt, 1e-3);
                else t_check_rel(nm, got[j], want, cnt, 1e-4);
            }
        }
        /* steering specs through both passes (latent input, residual, KV cache), f32 also against HF */
        for (k = 0; k < 3; k++) {
            char path[128], err[256], key[128];
            codi_steer *st;
            snprintf(path, sizeof path, DATA "steer/%s.json", specs[k]);
            if (!(st = codi_steer_load(m, path, err, sizeof err))) { t_result(0, "load spec", "%s", err); continue; }
            codi_steer_install(st, s, NULL);
            if (drive(m, s, codi_forward_reference, st, ids, (int)T, &ref) || drive(m, s, codi_forward, st, ids, (int)T, &fast)) {
                t_result(0, "steered run", "%s %s: %s", name, specs[k], s->error);
            } else {
                snprintf(nm, sizeof nm, "%s %s", name, specs[k]);
                compare(nm, &ref, &fast, c, (int)T, 1e-4, 1e-5);
                if (mode == 0) {
                    snprintf(key, sizeof key, "f32.%s.answer_logits", specs[k]);
                    snprintf(nm, sizeof nm, "f32 %s: reference == HF: answer logits", specs[k]);
                    {
                        const float *gl = t_gf(&g, key, &cnt);
                        double e = 0; int r;
                        for (r = 0; r < N_ANS; r++) { double x = t_max_abs(ref.answer_logits + (size_t)r * c->vocab, gl + (size_t)r * 514, 514); if (x > e) e = x; }
                        t_result(e <= 1e-3, nm, "max |diff| %.3g (tol 1e-03)", e);
                    }
                }
            }
            codi_state_clear_hooks(s);
            codi_steer_free(st);
        }
        /* the same errors */
        {
            int32_t bad = c->vocab;
            codi_state_reset(s);
            snprintf(nm, sizeof nm, "%s: a bad token id and n = 0 fail as in codi_forward", name);
            t_result(codi_forward_reference(m, s, &bad, NULL, 1, NULL) == -1 && strstr(s->error, "out of range") &&
                     codi_forward_reference(m, s, &bad, NULL, 0, NULL) == -1 && strstr(s->error, "exactly one") && s->n_pos == 0, nm, "%s", s->error);
        }
        out_free(&ref); out_free(&fast);
        codi_state_free(s);
        codi_model_free(m);
    }
    t_golden_close(&g);
    return t_summary();
}
