/* Steering specs (>>steer) against references nobody here wrote: the four golden steering runs
   of golden_tiny written as spec files (tests/data/steer/), the Latent Reasoning Sprint
   protocols of golden_protocols_tiny (means computed here from its 8 questions), and the
   properties a spec promises: alpha 0 changes no bit, answer-only edits leave the latents alone,
   a KV edit at layer l leaves layers < l alone, replaying a recorded activation reproduces a run,
   every field does what it says, and malformed specs fail with the edit and field named. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define V 515
#define D 256
#define NL 4
#define KVD 64           /* kv heads 2 x head dim 32 */

typedef struct {
    float latents[8 * D], latent_logits[8 * V], answer_logits[16 * V];
    int32_t answer[16]; int n_answer, prompt_len;
    codi_state *s;       /* the state after the run */
} run_out;

static codi_model *M;
static const int32_t *IDS;
static int NIDS;
static int STEPS = 16;   /* answer tokens per run: 16 for the golden runs, fewer for the property checks */

/* One CODI run of the golden prompt (16 answer steps) under spec (NULL: none). */
static int run_with(const codi_steer *st, int n_latent, run_out *r) {
    codi_run_opts ro = codi_run_opts_default(M);
    codi_run_result rr;
    codi_state_reset(r->s);
    codi_state_clear_hooks(r->s);
    ro.n_latent = n_latent; ro.max_answer = STEPS; ro.stop_at_eos = 0;
    memset(r->answer_logits, 0, sizeof r->answer_logits);
    ro.latents = r->latents; ro.latent_logits = r->latent_logits; ro.answer_logits = r->answer_logits;
    if (st && codi_steer_install(st, r->s, &ro)) { printf("# install: %s\n", r->s->error); return -1; }
    if (codi_run(M, r->s, IDS, NIDS, &ro, &rr)) { printf("# run: %s\n", r->s->error); return -1; }
    memcpy(r->answer, rr.answer, sizeof r->answer); r->n_answer = rr.n_answer; r->prompt_len = rr.prompt_len;
    return 0;
}

static codi_steer *spec(const char *json) {
    char err[512];
    codi_steer *st = codi_steer_parse(M, json, strlen(json), "tests/data", err, sizeof err);
    if (!st) printf("# spec: %s\n", err);
    return st;
}

/* The golden checks of test_steering.c: answer logits 1e-3, latents rel 1e-4, tokens. */
static void check_golden(t_golden *g, const char *tag, const run_out *r) {
    char n[128], name[160];
    size_t cnt;
    const float *ref;
    int i, k, first_diff = -1;
    double e = 0;
    snprintf(n, sizeof n, "f32.%s.answer_logits", tag);
    ref = t_gf(g, n, NULL);
    for (k = 0; k < 16; k++) { double x = t_max_abs(r->answer_logits + (size_t)k * V, ref + (size_t)k * 514, 514); if (x > e) e = x; }
    snprintf(name, sizeof name, "spec %s.json: answer_logits", tag);
    t_result(e <= 1e-3, name, "max |diff| %.3g (tol 1e-3)", e);
    snprintf(n, sizeof n, "f32.%s.latent_inputs", tag);
    ref = t_gf(g, n, &cnt);
    snprintf(name, sizeof name, "spec %s.json: latent_inputs", tag);
    t_check_rel(name, r->latents, ref, cnt, 1e-4);
    snprintf(n, sizeof n, "f32.%s.latent_final_logits", tag);
    ref = t_gf(g, n, &cnt);
    snprintf(name, sizeof name, "spec %s.json: latent_final_logits", tag);
    t_check_abs(name, r->latent_logits, ref, cnt, 1e-3);
    snprintf(n, sizeof n, "f32.%s.answer_tokens", tag);
    for (i = 0; i < 16; i++) if (r->answer[i] != t_gi(g, n, NULL)[i]) { first_diff = i; break; }
    snprintf(name, sizeof name, "spec %s.json: answer_tokens (first 8 steps)", tag);
    t_result(first_diff < 0 || first_diff >= 8, name, "first difference at %d", first_diff);
}

static int same_run(const run_out *a, const run_out *b) {
    return !memcmp(a->answer_logits, b->answer_logits, sizeof a->answer_logits) && !memcmp(a->latents, b->latents, 7 * D * sizeof(float)) &&
           !memcmp(a->latent_logits, b->latent_logits, 7 * V * sizeof(float));
}

static int write_vectors(const char *path, const char *name, const float *v, int ndim, int64_t d0, int64_t d1) {
    char err[256];
    codi_safetensors_entry e;
    memset(&e, 0, sizeof e);
    e.name = name; e.data = v; e.ndim = ndim; e.shape[0] = d0; e.shape[1] = d1;
    if (codi_write_safetensors(path, &e, 1, NULL, err, sizeof err)) { printf("# %s\n", err); return -1; }
    return 0;
}

static void test_golden_specs(t_golden *g, run_out *r) {
    static const char *const tags[4] = { "s1_z_add", "s2_resid", "s3_kv", "s4_z_set" };
    int i;
    for (i = 0; i < 4; i++) {
        char path[128], err[512], name[128];
        codi_steer *st;
        snprintf(path, sizeof path, "tests/data/steer/%s.json", tags[i]);
        snprintf(name, sizeof name, "spec %s.json loads", tags[i]);
        st = codi_steer_load(M, path, err, sizeof err);
        t_result(st != NULL, name, "%s", st ? "" : err);
        if (st && run_with(st, 6, r) == 0) check_golden(g, tags[i], r);
        codi_steer_free(st);
    }
}

/* alpha 0, answer-only edits, layer locality of KV edits, replay. */
static void test_properties(run_out *plain, run_out *r) {
    codi_steer *st;
    int T0, l, p, h, same, differs;
    /* alpha 0 changes no bit, for add, set and kv_cache */
    st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"alpha\": 0, \"vector\": \"golden_tiny.safetensors:steer.v\"},"
              "{\"at\": \"resid\", \"layer\": \"all\", \"op\": \"set\", \"alpha\": 0, \"vector\": \"golden_tiny.safetensors:steer.noise\"},"
              "{\"at\": \"kv_cache\", \"alpha\": 0, \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
    t_result(st && run_with(st, 6, r) == 0 && same_run(plain, r), "alpha 0 (add, set, kv_cache) is bit-identical to no edit", "");
    codi_steer_free(st);
    /* an answer-phase edit leaves every latent output untouched and changes the answer */
    st = spec("{\"edits\": [{\"at\": \"resid\", \"layer\": 1, \"phase\": \"answer\", \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    t_result(st && run_with(st, 6, r) == 0 && !memcmp(plain->latents, r->latents, 7 * D * sizeof(float)) &&
             !memcmp(plain->latent_logits, r->latent_logits, 7 * V * sizeof(float)) &&
             memcmp(plain->answer_logits, r->answer_logits, sizeof r->answer_logits),
             "phase answer: latents and decoded latents bit-identical, answer changed", "");
    codi_steer_free(st);
    /* a KV edit at layer 2 (after the latents): at eot (the first position after it), the
       residual entering layers 0..2 and the K/V of layers 0..1 are unchanged; layer 3's changes */
    st = spec("{\"edits\": [{\"at\": \"kv_cache\", \"layer\": 2, \"key_vector\": \"golden_tiny.safetensors:steer.dk\", \"value_vector\": \"golden_tiny.safetensors:steer.dv\"}]}");
    if (st && run_with(st, 6, r) == 0 && run_with(NULL, 6, plain) == 0) {
        codi_state *a = plain->s, *b = r->s;
        T0 = plain->prompt_len;
        same = 1; differs = 0;
        for (p = T0 + 6; p == T0 + 6; p++) {
            for (l = 0; l <= 2; l++) same &= !memcmp(codi_state_resid(a, l, p), codi_state_resid(b, l, p), D * sizeof(float));
            for (l = 0; l < 2; l++)
                for (h = 0; h < 2; h++)
                    same &= !memcmp(codi_state_key(a, l, h, p), codi_state_key(b, l, h, p), 32 * sizeof(float)) &&
                            !memcmp(codi_state_value(a, l, h, p), codi_state_value(b, l, h, p), 32 * sizeof(float));
            differs |= memcmp(codi_state_resid(a, 3, p), codi_state_resid(b, 3, p), D * sizeof(float)) != 0;
        }
        t_result(same && differs, "kv_cache at layer 2: layers < 2 (and resid entering 2) unchanged after it, layer 3 changed", "");
    } else t_result(0, "kv_cache layer locality runs", "");
    codi_steer_free(st);
    /* replay: z_3 as the s1 steering fed it, recorded and set into a plain run, reproduces s1 */
    st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    if (st && run_with(st, 6, r) == 0 && write_vectors("build/steer_replay.safetensors", "z3", r->latents + 2 * D, 1, D, 0) == 0) {
        char err[512];
        codi_steer *rp = codi_steer_parse(M, "{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"op\": \"set\", \"vector\": \"steer_replay.safetensors:z3\"}]}",
                                          strlen("{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"op\": \"set\", \"vector\": \"steer_replay.safetensors:z3\"}]}"),
                                          "build", err, sizeof err);
        if (!rp) printf("# %s\n", err);
        t_result(rp && run_with(rp, 6, plain) == 0 && same_run(plain, r), "replaying a recorded latent (set) reproduces the steered run bit for bit", "");
        codi_steer_free(rp);
    } else t_result(0, "replay runs", "");
    codi_steer_free(st);
    /* replay of every layer's residual at latent step 3 (one row per layer) undoes a z_3 edit */
    if (run_with(NULL, 6, plain) == 0) {
        static float rows[(NL + 1) * D];
        T0 = plain->prompt_len;
        for (l = 0; l <= NL; l++) memcpy(rows + l * D, codi_state_resid(plain->s, l, T0 + 2), D * sizeof(float));
        if (write_vectors("build/steer_rows.safetensors", "resid", rows, 2, NL + 1, D) == 0) {
            char err[512];
            const char *js = "{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"alpha\": 5, \"vector\": \"../tests/data/golden_tiny.safetensors:steer.v\"},"
                             "{\"at\": \"resid\", \"layer\": \"all\", \"step\": 3, \"op\": \"set\", \"vector\": \"steer_rows.safetensors:resid\"}]}";
            codi_steer *rp = codi_steer_parse(M, js, strlen(js), "build", err, sizeof err);
            if (!rp) printf("# %s\n", err);
            t_result(rp && run_with(rp, 6, r) == 0 && !memcmp(r->answer_logits, plain->answer_logits, sizeof r->answer_logits) &&
                     !memcmp(r->latents + 3 * D, plain->latents + 3 * D, 4 * D * sizeof(float)),
                     "replaying recorded residuals [L+1, D] at step 3 restores the plain run after a z_3 edit", "");
            codi_steer_free(rp);
        }
    }
}

/* Each field changes exactly what it names. */
static void test_fields(run_out *plain, run_out *r) {
    const float *v, *dk;
    codi_steer *st;
    float z[D];
    int T0, p, j, ok;
    t_golden g;
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return;
    v = t_gf(&g, "steer.v", NULL); dk = t_gf(&g, "steer.dk", NULL);
    run_with(NULL, 6, plain);
    T0 = plain->prompt_len;
    /* key at one layer and head: that head's cached keys are plain + v everywhere, the other head's plain */
    st = spec("{\"edits\": [{\"at\": \"key\", \"layer\": 1, \"head\": 1, \"vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
    ok = st && run_with(st, 6, r) == 0;
    for (p = 0; ok && p < T0; p++)             /* later positions see the edit through the latents */
        for (j = 0; j < 32; j++) {
            ok &= codi_state_key(r->s, 1, 1, p)[j] == codi_state_key(plain->s, 1, 1, p)[j] + dk[32 + j];
            ok &= codi_state_key(r->s, 1, 0, p)[j] == codi_state_key(plain->s, 1, 0, p)[j];
            ok &= codi_state_value(r->s, 1, 1, p)[j] == codi_state_value(plain->s, 1, 1, p)[j];
        }
    t_result(ok, "\"at\": \"key\", \"layer\": 1, \"head\": 1 ([KVH, HD] vector): in the prompt only head 1's keys moved, by exactly v", "");
    codi_steer_free(st);
    /* value with a [HD] vector, every head, prefill only: values = plain + v in the prompt, the latents' differ only through it */
    st = spec("{\"edits\": [{\"at\": \"value\", \"layer\": 0, \"phase\": \"prefill\", \"alpha\": -1.5, \"vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
    ok = st && run_with(st, 6, r) == 0;
    for (p = 0; ok && p < T0; p++)
        for (j = 0; j < 32; j++) ok &= codi_state_value(r->s, 0, 0, p)[j] == codi_state_value(plain->s, 0, 0, p)[j] + -1.5f * dk[j] &&
                                      codi_state_value(r->s, 0, 1, p)[j] == codi_state_value(plain->s, 0, 1, p)[j] + -1.5f * dk[32 + j];
    for (p = 0; ok && p < T0; p++) ok = !memcmp(codi_state_key(r->s, 0, 0, p), codi_state_key(plain->s, 0, 0, p), 32 * sizeof(float));
    t_result(ok, "\"at\": \"value\", \"layer\": 0, \"phase\": \"prefill\", \"alpha\": -1.5: the prompt's layer-0 values moved by exactly -1.5 v per head", "");
    codi_steer_free(st);
    /* final, set, at latent step 2: z_3 = prj(v) */
    st = spec("{\"edits\": [{\"at\": \"final\", \"step\": 2, \"op\": \"set\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    ok = st && run_with(st, 6, r) == 0 && codi_project(M, v, z) == 0;
    t_result(ok && !memcmp(z, r->latents + 2 * D, sizeof z) && !memcmp(r->latents, plain->latents, 2 * D * sizeof(float)),
             "\"at\": \"final\", \"step\": 2, \"op\": \"set\": z_3 = prj(v) exactly, z_1, z_2 unchanged", "");
    codi_steer_free(st);
    /* set with alpha 0.5 blends halfway: z_3 = z + 0.5 (v - z) */
    st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 3, \"op\": \"set\", \"alpha\": 0.5, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    ok = st && run_with(st, 6, r) == 0;
    for (j = 0; ok && j < D; j++) ok = r->latents[2 * D + j] == plain->latents[2 * D + j] + 0.5f * (v[j] - plain->latents[2 * D + j]);
    t_result(ok, "\"op\": \"set\", \"alpha\": 0.5 blends halfway", "");
    codi_steer_free(st);
    /* mlp_out at the last layer in the prefill: the last layer's output moves by v (up to rounding) */
    st = spec("{\"edits\": [{\"at\": \"mlp_out\", \"layer\": 3, \"phase\": \"prefill\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    ok = st && run_with(st, 6, r) == 0;
    {
        double e = 0;
        for (p = 0; ok && p < T0; p++)
            for (j = 0; j < D; j++) {
                double d = fabs((double)codi_state_resid(r->s, NL, p)[j] - (codi_state_resid(plain->s, NL, p)[j] + v[j]));
                if (d > e) e = d;
            }
        t_result(ok && e < 1e-4, "\"at\": \"mlp_out\", \"layer\": 3: last output = plain + v", "max |diff| %.2g", e);
    }
    codi_steer_free(st);
    /* attn_out with "layer": "all" at step 4 only: z_1..z_4 unchanged, z_5 changed */
    st = spec("{\"edits\": [{\"at\": \"attn_out\", \"layer\": \"all\", \"step\": 4, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
    t_result(st && run_with(st, 6, r) == 0 && !memcmp(r->latents, plain->latents, 4 * D * sizeof(float)) &&
             memcmp(r->latents + 4 * D, plain->latents + 4 * D, D * sizeof(float)), "\"at\": \"attn_out\", \"layer\": \"all\", \"step\": 4: z_1..z_4 same, z_5 moved", "");
    codi_steer_free(st);
    /* kv_cache: "step" 3 = after latent 3, at its slot; "positions" list and "when" after_latent:K; "head" */
    st = spec("{\"edits\": [{\"at\": \"kv_cache\", \"step\": 3, \"layer\": 1, \"head\": 0, \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
    ok = st && run_with(st, 6, r) == 0 && !memcmp(r->latents, plain->latents, 4 * D * sizeof(float)) &&
         memcmp(r->latents + 4 * D, plain->latents + 4 * D, D * sizeof(float));
    for (j = 0; ok && j < 32; j++) ok = codi_state_key(r->s, 1, 0, T0 + 2)[j] == codi_state_key(plain->s, 1, 0, T0 + 2)[j] + dk[j] &&
                                      codi_state_key(r->s, 1, 1, T0 + 2)[j] == codi_state_key(plain->s, 1, 1, T0 + 2)[j];
    t_result(ok, "kv_cache \"step\": 3: latent 3's slot edited after step 3 (z_1..z_4 same, z_5 moved), head 0 only", "");
    codi_steer_free(st);
    {
        char js[512];
        snprintf(js, sizeof js, "{\"edits\": [{\"at\": \"kv_cache\", \"when\": \"after_latent:2\", \"positions\": [0, %d], \"layer\": \"all\","
                 " \"value_vector\": \"golden_tiny.safetensors:steer.dv\"}]}", T0 - 1);
        st = spec(js);
        ok = st && run_with(st, 6, r) == 0 && !memcmp(r->latents, plain->latents, 3 * D * sizeof(float)) &&
             memcmp(r->latents + 3 * D, plain->latents + 3 * D, D * sizeof(float));
        for (j = 0; ok && j < 32; j++) ok = codi_state_value(r->s, 3, 1, T0 - 1)[j] == codi_state_value(plain->s, 3, 1, T0 - 1)[j] + t_gf(&g, "steer.dv", NULL)[32 + j] &&
                                          codi_state_value(r->s, 3, 1, 1)[j] == codi_state_value(plain->s, 3, 1, 1)[j] &&
                                          codi_state_key(r->s, 3, 1, 0)[j] == codi_state_key(plain->s, 3, 1, 0)[j];
        t_result(ok, "kv_cache \"when\": \"after_latent:2\", \"positions\": [0, bot]: values at those slots only; z_3 same, z_4 moved", "");
        codi_steer_free(st);
        st = spec("{\"edits\": [{\"at\": \"kv_cache\", \"when\": \"after_latents\", \"positions\": \"latent:4\", \"layer\": 0, \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
        ok = st && run_with(st, 6, r) == 0;
        for (j = 0; ok && j < 32; j++) ok = codi_state_key(r->s, 0, 1, T0 + 3)[j] == codi_state_key(plain->s, 0, 1, T0 + 3)[j] + dk[32 + j] &&
                                          codi_state_key(r->s, 0, 1, T0 + 4)[j] == codi_state_key(plain->s, 0, 1, T0 + 4)[j];
        t_result(ok && !memcmp(r->latents, plain->latents, 6 * D * sizeof(float)), "kv_cache \"positions\": \"latent:4\" after the latents: that slot only; z_1..z_6 same", "");
        codi_steer_free(st);
        /* Belitsky et al.'s moment: after the prefill, at the last cached slot (bot), values only */
        st = spec("{\"edits\": [{\"at\": \"kv_cache\", \"when\": \"after_prefill\", \"positions\": \"last\", \"value_vector\": \"golden_tiny.safetensors:steer.dv\"}]}");
        ok = st && run_with(st, 6, r) == 0 && !memcmp(r->latents, plain->latents, D * sizeof(float)) &&
             memcmp(r->latents + D, plain->latents + D, D * sizeof(float)) != 0 &&
             !memcmp(codi_state_key(r->s, 2, 1, T0 - 1), codi_state_key(plain->s, 2, 1, T0 - 1), 32 * sizeof(float));
        for (j = 0; ok && j < 32; j++) ok = codi_state_value(r->s, 2, 1, T0 - 1)[j] == codi_state_value(plain->s, 2, 1, T0 - 1)[j] + t_gf(&g, "steer.dv", NULL)[32 + j] &&
                                          codi_state_value(r->s, 2, 1, T0 - 2)[j] == codi_state_value(plain->s, 2, 1, T0 - 2)[j];
        t_result(ok, "kv_cache \"when\": \"after_prefill\", \"positions\": \"last\": the bot slot's values only; z_1 (made by the prefill) same, z_2 moved", "");
        codi_steer_free(st);
    }
    t_golden_close(&g);
}

/* Seeded draws: the documented algorithm's values (computed independently in Python), norms. */
static void test_random(void) {
    static const double ref[5] = { 0.49295065581737485, -0.6940056672160174, -1.2810773478777024, -0.901557193497174, -0.6018779810957331 };
    codi_rng rng;
    codi_steer *st, *rl;
    double e = 0;
    int i;
    codi_rng_seed(&rng, 42);
    e = fabs(codi_rng_uniform(&rng) - 0.7415648787718233);
    codi_rng_seed(&rng, 42);
    for (i = 0; i < 5; i++) { double d = fabs(codi_rng_normal(&rng) - ref[i]); if (d > e) e = d; }
    t_result(e < 1e-15, "codi_rng (SplitMix64 + polar method): seed 42 gives the reference draws", "max |diff| %.2g", e);
    st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 1, \"random\": {\"seed\": 7, \"norm\": 3.5}},"
              "{\"at\": \"resid\", \"layer\": 2, \"random\": {\"seed\": 7, \"norm_of\": \"golden_tiny.safetensors:steer.v\"}},"
              "{\"at\": \"latent_input\", \"random\": {\"seed\": 8, \"mean_std_of\": \"golden_tiny.safetensors:steer.v\"}},"
              "{\"at\": \"latent_input\", \"random\": {\"seed\": 8, \"mean_std_of\": \"golden_tiny.safetensors:f32.latent_inputs\", \"per_dim\": true}},"
              "{\"at\": \"kv_cache\", \"random\": {\"seed\": 9, \"norm\": 2}}]}");
    t_result(st != NULL, "a spec of every random kind parses", "");
    if (st) {
        t_golden g;
        const float *li, *sv;
        double m = 0, s2 = 0, nv;
        t_golden_open(&g, "tests/data/golden_tiny.safetensors");
        li = t_gf(&g, "f32.latent_inputs", NULL); sv = t_gf(&g, "steer.v", NULL);
        nv = codi_l2_norm(sv, D);
        t_result(fabs(codi_l2_norm(st->edits[0].vector, D) - 3.5) < 1e-5, "random \"norm\": 3.5", "%.6f", codi_l2_norm(st->edits[0].vector, D));
        t_result(fabs(codi_l2_norm(st->edits[1].vector, D) - nv) < 1e-4 * nv && memcmp(st->edits[0].vector, st->edits[1].vector, D * sizeof(float)),
                 "random \"norm_of\": that tensor's norm (a direction of its own)", "%.6f vs %.6f", codi_l2_norm(st->edits[1].vector, D), nv);
        {   /* scalar stats of steer.v, and per column of the [7, D] latent inputs */
            double gm = 0, gs = 0, cm = 0, cs = 0;
            for (i = 0; i < D; i++) { m += sv[i]; gm += st->edits[2].vector[i]; }
            m /= D; gm /= D;
            for (i = 0; i < D; i++) { s2 += (sv[i] - m) * (sv[i] - m); gs += (st->edits[2].vector[i] - gm) * (st->edits[2].vector[i] - gm); }
            t_result(st->edits[2].vector_len == D && fabs(gm - m) < 0.25 * sqrt(s2 / D) && fabs(sqrt(gs / D) / sqrt(s2 / D) - 1) < 0.15,
                     "random \"mean_std_of\": a draw with that tensor's mean and std", "mean %.4f vs %.4f, std %.4f vs %.4f", gm, m, sqrt(gs / D), sqrt(s2 / D));
            for (i = 0; i < D; i++) {          /* z-scores of the draw against each column's stats */
                int q;
                double c1 = 0, c2 = 0, z;
                for (q = 0; q < 7; q++) c1 += li[q * D + i];
                c1 /= 7;
                for (q = 0; q < 7; q++) c2 += (li[q * D + i] - c1) * (li[q * D + i] - c1);
                z = (st->edits[3].vector[i] - c1) / sqrt(c2 / 7);
                cm += z; cs += z * z;
            }
            cm /= D; cs /= D;
            t_result(st->edits[3].vector_len == D && fabs(cm) < 0.2 && fabs(cs - 1) < 0.25, "random \"mean_std_of\" + \"per_dim\": each column's own mean and std",
                     "z-scores against the columns: mean %.3f, mean square %.3f", cm, cs);
        }
        t_result(st->edits[4].key_vector && st->edits[4].value_vector && fabs(codi_l2_norm(st->edits[4].key_vector, 32) - 2) < 1e-5 &&
                 memcmp(st->edits[4].key_vector, st->edits[4].value_vector, 32 * sizeof(float)), "random kv_cache: keys (seed) and values (seed + 1) differ, norm 2 per head", "");
        rl = codi_steer_random_like(st, 5);
        t_result(rl && rl->n_edits == 5 && fabs(codi_l2_norm(rl->edits[1].vector, D) - codi_l2_norm(st->edits[1].vector, D)) < 1e-4 &&
                 memcmp(rl->edits[1].vector, st->edits[1].vector, D * sizeof(float)), "codi_steer_random_like: same norms, new directions", "");
        codi_steer_free(rl);
        t_golden_close(&g);
    }
    codi_steer_free(st);
}

/* The sprint's noise control: z_2 := noise with z_2's own mean and std. */
static void test_noise_self(run_out *plain, run_out *r) {
    codi_steer *st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 2, \"op\": \"set\", \"random\": {\"seed\": 3, \"mean_std_of\": \"self\"}}]}");
    double m = 0, sd = 0, e = 0;
    int j;
    if (!st || run_with(NULL, 6, plain) || run_with(st, 6, r)) { t_result(0, "mean_std_of self runs", ""); codi_steer_free(st); return; }
    for (j = 0; j < D; j++) m += plain->latents[D + j];
    m /= D;
    for (j = 0; j < D; j++) sd += (plain->latents[D + j] - m) * (plain->latents[D + j] - m);
    sd = sqrt(sd / D);
    for (j = 0; j < D; j++) { double d = fabs(r->latents[D + j] - (m + sd * st->edits[0].vector[j])); if (d > e) e = d; }
    t_result(e < 1e-5 && !memcmp(r->latents, plain->latents, D * sizeof(float)), "random \"mean_std_of\": \"self\": z_2 := mean(z_2) + std(z_2) g", "max |diff| %.2g", e);
    codi_steer_free(st);
}

/* Malformed specs: each error names the edit and the field. */
static void test_errors(void) {
    static const struct { const char *json, *want; } cases[] = {
        { "{\"edits\": [", "steer spec:" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"vector\": \"golden_tiny.safetensors:steer.v\"}], \"edits\": []}", "duplicate key \"edits\"" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"alpha\": 1, \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "duplicate key \"alpha\"" },
        { "[1, 2]", "not a JSON object" },
        { "{\"edit\": []}", "unknown field \"edit\"" },
        { "{\"edits\": [{\"at\": \"nowhere\"}]}", "edit 0: \"at\": unknown point \"nowhere\"" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 1, \"vector\": \"golden_tiny.safetensors:steer.v\", \"colour\": 3}]}", "edit 0: \"colour\": unknown field" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"step\": 1, \"vector\": \"golden_tiny.safetensors:steer.v\"}, {\"at\": \"resid\", \"layer\": 5, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 1: \"layer\": must be \"all\" or a whole number in 0..4" },
        { "{\"edits\": [{\"at\": \"attn_out\", \"layer\": 4, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"layer\": must be \"all\" or a whole number in 0..3" },
        { "{\"edits\": [{\"at\": \"resid\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"layer\": missing" },
        { "{\"edits\": [{\"at\": \"key\", \"layer\": 0, \"head\": 2, \"vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"head\": must be \"all\" or a whole number in 0..1" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"head\": 0, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"head\": does not apply to at \"resid\"" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"vector\": last dimension 32; at \"resid\" needs 256" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"golden_tiny.safetensors:f32.latent_inputs\"}]}", "edit 0: \"vector\": 1792 values; at \"resid\" needs [D] = 256 or [L+1, D]" },
        { "{\"edits\": [{\"at\": \"key\", \"layer\": 0, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"vector\": last dimension 256; at \"key\" needs 32" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"golden_tiny.safetensors:no.such\"}]}", "edit 0: \"vector\": tests/data/golden_tiny.safetensors has no tensor \"no.such\"" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"missing.safetensors:x\"}]}", "edit 0: \"vector\":" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"no_colon\"}]}", "is not FILE.safetensors:TENSOR" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"vector\": \"../../build/steer_nan.safetensors:v\"}]}", "edit 0: \"vector\": not finite" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0}]}", "edit 0: \"vector\": missing" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"phase\": \"answer\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"phase\": does not apply" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"phase\": \"answer\", \"step\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"step\": latent steps need phase \"latent\"" },
        { "{\"edits\": [{\"at\": \"resid\", \"layer\": 0, \"phase\": \"later\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"phase\": must be" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"step\": 0, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"step\": must be \"all\" or a whole number in 1.." },
        { "{\"edits\": [{\"at\": \"latent_input\", \"op\": \"mul\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"op\": must be \"add\" or \"set\"" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"alpha\": \"big\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"alpha\": must be a finite number" },
        { "{\"edits\": [{\"at\": \"kv_cache\", \"positions\": \"latent:0\", \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"positions\": must be" },
        { "{\"edits\": [{\"at\": \"kv_cache\", \"positions\": [1, -2], \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"positions\": element 1" },
        { "{\"edits\": [{\"at\": \"kv_cache\", \"when\": \"soon\", \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"when\": must be" },
        { "{\"edits\": [{\"at\": \"kv_cache\"}]}", "edit 0: kv_cache needs \"key_vector\" and/or \"value_vector\"" },
        { "{\"edits\": [{\"at\": \"kv_cache\", \"vector\": \"golden_tiny.safetensors:steer.dk\"}]}", "edit 0: \"vector\": does not apply to at \"kv_cache\"" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"random\": {\"norm\": 1}}]}", "edit 0: \"random\": \"random\": \"seed\" must be" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"random\": {\"seed\": 1, \"norm\": 1, \"norm_of\": \"golden_tiny.safetensors:steer.v\"}}]}", "exactly one of" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"random\": {\"seed\": 1, \"sigma\": 1}}]}", "\"random\": unknown field \"sigma\"" },
        { "{\"edits\": [{\"at\": \"latent_input\", \"random\": {\"seed\": 1, \"norm\": 1}, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", "edit 0: \"vector\": give either a vector or \"random\"" },
    };
    float nanv[D];
    char err[512], name[200];
    size_t i;
    int j;
    for (j = 0; j < D; j++) nanv[j] = j == 17 ? NAN : 1.0f;
    write_vectors("build/steer_nan.safetensors", "v", nanv, 1, D, 0);
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        codi_steer *st = codi_steer_parse(M, cases[i].json, strlen(cases[i].json), "tests/data", err, sizeof err);
        snprintf(name, sizeof name, "malformed spec %d gives \"%.60s\"", (int)i, cases[i].want);
        t_result(!st && strstr(err, cases[i].want) != NULL, name, "%s", st ? "accepted" : err);
        codi_steer_free(st);
    }
    /* run-time checks: a step beyond the run's latents, a position not cached yet */
    {
        run_out *r = (run_out *)calloc(1, sizeof *r);
        codi_steer *st = spec("{\"edits\": [{\"at\": \"latent_input\", \"step\": 7, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}");
        r->s = codi_state_new(M, 64, 1);
        t_result(st && run_with(st, 6, r) != 0 && strstr(r->s->error, "steer edit 0: latent step 7 but the run has 6"), "a step beyond n_latent fails at install", "%s", r->s->error);
        codi_steer_free(st);
        st = spec("{\"edits\": [{\"at\": \"kv_cache\", \"when\": \"after_latent:1\", \"positions\": [40], \"key_vector\": \"golden_tiny.safetensors:steer.dk\"}]}");
        t_result(st && run_with(st, 6, r) != 0 && strstr(r->s->error, "position 40 is not cached after latent step 1"), "a kv_cache position not cached yet fails the run", "%s", r->s->error);
        codi_steer_free(st);
        codi_state_free(r->s);
        free(r);
    }
}

/* TransformerLens names for "at": each gives the same run, bit for bit, as our name with the layer
   (and a run that differs from the plain one); names without an equivalent are refused. */
static void test_tl_names(run_out *plain, run_out *r) {
    static const struct { const char *tl, *ours; } pairs[] = {
        { "\"at\": \"blocks.2.hook_resid_pre\", \"phase\": \"latent\", \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"",
          "\"at\": \"resid\", \"layer\": 2, \"phase\": \"latent\", \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"" },
        { "\"at\": \"blocks.1.hook_resid_post\", \"phase\": \"latent\", \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"",
          "\"at\": \"resid\", \"layer\": 2, \"phase\": \"latent\", \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"" },
        { "\"at\": \"blocks.3.hook_resid_post\", \"step\": 2, \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"",
          "\"at\": \"resid\", \"layer\": 4, \"step\": 2, \"alpha\": 3, \"vector\": \"golden_tiny.safetensors:steer.v\"" },
        { "\"at\": \"blocks.1.hook_attn_out\", \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"",
          "\"at\": \"attn_out\", \"layer\": 1, \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"" },
        { "\"at\": \"blocks.0.hook_mlp_out\", \"phase\": \"latent\", \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"",
          "\"at\": \"mlp_out\", \"layer\": 0, \"phase\": \"latent\", \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"" },
        { "\"at\": \"blocks.2.attn.hook_rot_k\", \"head\": 1, \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.dk\"",
          "\"at\": \"key\", \"layer\": 2, \"head\": 1, \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.dk\"" },
        { "\"at\": \"blocks.1.attn.hook_v\", \"phase\": \"latent\", \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.dv\"",
          "\"at\": \"value\", \"layer\": 1, \"phase\": \"latent\", \"alpha\": 2, \"vector\": \"golden_tiny.safetensors:steer.dv\"" } };
    static const struct { const char *at, *want; } refused[] = {
        { "blocks.4.hook_resid_pre", "edit 0: \"at\": \"blocks.4.hook_resid_pre\": layer 4 is out of range 0..3" },
        { "blocks.x.hook_resid_pre", "blocks.L.NAME with a layer index L" },
        { "blocks.-1.hook_resid_pre", "blocks.L.NAME with a layer index L" },
        { "hook_embed", "the latent inputs z_k are \"latent_input\"" },
        { "ln_final.hook_normalized", "before the norm's weight; ours is after it: \"final\"" },
        { "blocks.1.attn.hook_k", "keys before RoPE are not a hook point here; blocks.1.attn.hook_rot_k" },
        { "blocks.1.hook_resid_mid", "\"blocks.1.hook_resid_mid\" has no equivalent here; the TransformerLens names" },
        { "blocks.1.attn.hook_pattern", "has no equivalent here" },
        { "hook_pos_embed", "has no equivalent here" } };
    run_out *o = (run_out *)calloc(1, sizeof *o);
    char js[600], err[600], name[200];
    size_t i;
    o->s = codi_state_new(M, 64, 1);
    for (i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        codi_steer *a, *b;
        snprintf(js, sizeof js, "{\"edits\": [{%s}]}", pairs[i].tl);
        a = spec(js);
        snprintf(js, sizeof js, "{\"edits\": [{%s}]}", pairs[i].ours);
        b = spec(js);
        snprintf(name, sizeof name, "TransformerLens name %.*s: the same run as our name", (int)strcspn(pairs[i].tl + 7, "\""), pairs[i].tl + 7);
        t_result(a && b && run_with(a, 6, r) == 0 && run_with(b, 6, o) == 0 && same_run(r, o) && !same_run(r, plain), name, "%s", pairs[i].ours);
        codi_steer_free(a); codi_steer_free(b);
    }
    for (i = 0; i < sizeof refused / sizeof *refused; i++) {
        codi_steer *st;
        snprintf(js, sizeof js, "{\"edits\": [{\"at\": \"%s\", \"vector\": \"golden_tiny.safetensors:steer.v\"}]}", refused[i].at);
        st = codi_steer_parse(M, js, strlen(js), "tests/data", err, sizeof err);
        snprintf(name, sizeof name, "TransformerLens name %s refused", refused[i].at);
        t_result(!st && strstr(err, refused[i].want) != NULL, name, "%s", st ? "accepted" : err);
        codi_steer_free(st);
    }
    {
        const char *twice = "{\"edits\": [{\"at\": \"blocks.2.hook_resid_pre\", \"layer\": 2, \"vector\": \"golden_tiny.safetensors:steer.v\"}]}";
        codi_steer *st = codi_steer_parse(M, twice, strlen(twice), "tests/data", err, sizeof err);
        t_result(!st && strstr(err, "edit 0: \"layer\": given twice: the TransformerLens name \"blocks.2.hook_resid_pre\" holds the layer"),
                 "a layer field beside a TransformerLens name is refused", "%s", st ? "accepted" : err);
        codi_steer_free(st);
    }
    codi_state_free(o->s);
    free(o);
}

/* golden_protocols_tiny: means over its 8 questions, plain / embedding-steered / KV-steered logits. */
static void test_protocols(void) {
    t_golden g;
    codi_means mn;
    codi_state *s = codi_state_new(M, 64, 1);
    codi_run_opts ro;
    codi_run_result rr;
    const int32_t *q;
    static float means[6 * D], km[6 * NL * KVD], vm[6 * NL * KVD], diff[D], dk[NL * KVD], dv[NL * KVD], logits[7 * 514], al[V];
    int i, l, j;
    if (t_golden_open(&g, "tests/data/golden_protocols_tiny.safetensors")) { t_result(0, "golden_protocols_tiny opens", ""); return; }
    q = t_gi(&g, "question_ids", NULL);
    codi_means_init(&mn, M, 6);
    ro = codi_run_opts_default(M);
    ro.max_answer = 1;
    for (i = 0; i < 8; i++) {
        if (codi_run(M, s, q + 17 * i, 17, &ro, &rr) || codi_means_add(&mn, M, s, rr.prompt_len)) { printf("# %s\n", s->error); break; }
    }
    codi_means_get(&mn, means, km, vm);
    codi_means_free(&mn);
    t_check_rel("protocol means [6, D] (final-normed hidden at latent k, 8 questions)", means, t_gf(&g, "means", NULL), 6 * D, 1e-4);
    t_check_rel("protocol k_means [6, L, KVH, HD] (post-RoPE)", km, t_gf(&g, "k_means", NULL), 6 * NL * KVD, 1e-4);
    t_check_rel("protocol v_means [6, L, KVH, HD]", vm, t_gf(&g, "v_means", NULL), 6 * NL * KVD, 1e-4);
    /* plain: question 0 with l = 0..6 latent steps */
    ro.answer_logits = al;
    for (l = 0; l <= 6; l++) {
        ro.n_latent = l;
        if (codi_run(M, s, q, 17, &ro, &rr)) break;
        memcpy(logits + l * 514, al, 514 * sizeof(float));
    }
    t_check_abs("protocol plain_logits (l = 0..6)", logits, t_gf(&g, "plain_logits", NULL), 7 * 514, 1e-3);
    /* embedding steering: l steps, then z_(l+1) + 2 diff(3,5) fed (diff(A,B) = means[B] - means[A], k 1-based) */
    for (j = 0; j < D; j++) diff[j] = means[4 * D + j] - means[2 * D + j];
    for (l = 1; l <= 6; l++) {
        codi_edit e = codi_edit_default();
        codi_steer *st = codi_steer_new(M);
        char err[256];
        e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.step = l + 1; e.alpha = 2.0f; e.vector = diff; e.vector_len = D;
        ro = codi_run_opts_default(M); ro.max_answer = 1; ro.answer_logits = al; ro.n_latent = l + 1;
        codi_state_clear_hooks(s);
        if (codi_steer_add(st, &e, err, sizeof err) || codi_steer_install(st, s, &ro) || codi_run(M, s, q, 17, &ro, &rr)) printf("# %s %s\n", err, s->error);
        memcpy(logits + (l - 1) * 514, al, 514 * sizeof(float));
        codi_steer_free(st);
    }
    codi_state_clear_hooks(s);
    t_check_abs("protocol emb_steer_logits (z_(l+1) += 2 diff(3,5))", logits, t_gf(&g, "emb_steer_logits", NULL), 6 * 514, 1e-3);
    /* KV steering: l steps, then -2 (mean[4] - mean[2]) added to K and V at latent l's slot, every layer and head */
    for (j = 0; j < NL * KVD; j++) { dk[j] = km[3 * NL * KVD + j] - km[1 * NL * KVD + j]; dv[j] = vm[3 * NL * KVD + j] - vm[1 * NL * KVD + j]; }
    for (l = 1; l <= 6; l++) {
        codi_edit e = codi_edit_default();
        codi_steer *st = codi_steer_new(M);
        char err[256];
        e.at = CODI_AT_KV_CACHE; e.when = e.pos_latent = l; e.alpha = -2.0f;
        e.key_vector = dk; e.value_vector = dv; e.kv_len = NL * KVD;
        ro = codi_run_opts_default(M); ro.max_answer = 1; ro.answer_logits = al; ro.n_latent = l;
        if (codi_steer_add(st, &e, err, sizeof err) || codi_steer_install(st, s, &ro) || codi_run(M, s, q, 17, &ro, &rr)) printf("# %s %s\n", err, s->error);
        memcpy(logits + (l - 1) * 514, al, 514 * sizeof(float));
        codi_steer_free(st);
    }
    t_check_abs("protocol kv_steer_logits (K, V at latent l's slot += -2 diff(2,4))", logits, t_gf(&g, "kv_steer_logits", NULL), 6 * 514, 1e-3);
    codi_state_free(s);
    t_golden_close(&g);
}

/* The C API's edits: the default is valid as returned, a step implies the latent phase, errors name
   the field at fault, and the constructors build what a spec would. */
static void test_edit_api(void) {
    static float v[D];
    codi_steer *st = codi_steer_new(M);
    codi_edit e = codi_edit_default();
    char err[256];
    int j;
    for (j = 0; j < D; j++) v[j] = 0.01f * (float)(j % 7);
    err[0] = 0;
    e.vector = v; e.vector_len = D;
    t_result(!codi_steer_add(st, &e, err, sizeof err), "codi_edit_default() with a vector is accepted", "%s", err);
    e.step = 3;
    t_result(!codi_steer_add(st, &e, err, sizeof err), "the default edit with .step = 3 is accepted", "%s", err);
    t_result(st->n_edits == 2 && st->edits[1].phase == CODI_PHASE_LATENT && st->edits[1].step == 3, "a step implies the latent phase",
             "n %d phase %d step %d", st->n_edits, st->n_edits > 1 ? st->edits[1].phase : -9, st->n_edits > 1 ? st->edits[1].step : -9);
    e.phase = CODI_PHASE_ANSWER;
    t_result(codi_steer_add(st, &e, err, sizeof err) && strstr(err, "\"phase\"") && !strstr(err, "\"step\":"), "a step in the answer phase names the phase", "%s", err);
    e = codi_edit_latent_add(0, v, D, 1);
    t_result(codi_steer_add(st, &e, err, sizeof err) && strstr(err, "\"step\": latent steps count from 1 (got 0)"), "step 0 is named as the fault", "%s", err);
    e = codi_edit_latent_add(2, v, D, 2.0f);
    t_result(!codi_steer_add(st, &e, err, sizeof err) && st->edits[2].at == CODI_AT_LATENT_INPUT && st->edits[2].step == 2 && st->edits[2].alpha == 2.0f,
             "codi_edit_latent_add(2, v, D, 2)", "%s", err);
    e = codi_edit_resid_add(1, CODI_ALL, v, D, 0.5f);
    t_result(!codi_steer_add(st, &e, err, sizeof err) && st->edits[3].at == CODI_AT_RESID && st->edits[3].layer == 1 && st->edits[3].phase == CODI_PHASE_LATENT,
             "codi_edit_resid_add(1, all, v, D, 0.5)", "%s", err);
    e = codi_edit_resid_add(99, 1, v, D, 1);
    t_result(codi_steer_add(st, &e, err, sizeof err) && strstr(err, "\"layer\": 99"), "a bad layer is named", "%s", err);
    codi_steer_free(st);
}

int main(void) {
    t_golden g;
    size_t T;
    run_out *plain = (run_out *)calloc(1, sizeof *plain), *r = (run_out *)calloc(1, sizeof *r);
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return 2;
    IDS = t_gi(&g, "prompt_ids", &T); NIDS = (int)T;
    if (!(M = t_load("tests/data/codi_tiny.bin", 1))) return 2;
    plain->s = codi_state_new(M, 64, 1); r->s = codi_state_new(M, 64, 1);
    if (run_with(NULL, 6, plain)) return 2;
    test_golden_specs(&g, r);
    STEPS = 4;
    if (run_with(NULL, 6, plain)) return 2;
    test_properties(plain, r);
    test_fields(plain, r);
    test_random();
    test_noise_self(plain, r);
    test_errors();
    test_tl_names(plain, r);
    test_edit_api();
    test_protocols();
    codi_state_free(plain->s); codi_state_free(r->s);
    free(plain); free(r);
    codi_model_free(M);
    t_golden_close(&g);
    return t_summary();
}
