/* The hook mechanism carries steering and patching: the four golden steering runs of
   golden_tiny (z_3 += 2v; residual entering layer 2 += 3v during the latent loop; layer 2's
   KV cache += (dk, dv) at the latent slots before eot; z_5 := noise), each rebuilt from a hook
   or a direct state edit, against Hugging Face's results (f32 mode). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

typedef struct { int point, layer, phase, step; float scale; const float *v; int set; int calls; } steer;

/* Adds scale * v to (or, with set, replaces by v) the view at one point, layer, phase, step
   (step 0: every step of the phase). */
static int steer_hook(void *user, const codi_hook_info *info, float *data) {
    steer *st = (steer *)user;
    int i;
    if (info->point != st->point || info->phase != st->phase || (st->step && info->step != st->step) ||
        (st->point == CODI_HOOK_RESID && info->layer != st->layer)) return 0;
    for (i = 0; i < info->size; i++) data[i] = st->set ? st->v[i] : data[i] + st->scale * st->v[i];
    st->calls++;
    return 0;
}

static void check_run(t_golden *g, const char *tag, const float *answer_logits, const int32_t *answer,
                      const float *latents, const float *latent_logits) {
    char n[128], name[128];
    size_t cnt;
    const float *ref;
    int i, r, first_diff = -1;
    double e = 0;
    snprintf(n, sizeof n, "f32.%s.answer_logits", tag);
    ref = t_gf(g, n, NULL);
    for (r = 0; r < 16; r++) { double x = t_max_abs(answer_logits + (size_t)r * 515, ref + (size_t)r * 514, 514); if (x > e) e = x; }
    snprintf(name, sizeof name, "%s answer_logits", tag);
    t_result(e <= 1e-3, name, "max |diff| %.3g (tol 1e-3)", e);
    snprintf(n, sizeof n, "f32.%s.latent_inputs", tag);
    ref = t_gf(g, n, &cnt);
    snprintf(name, sizeof name, "%s latent_inputs", tag);
    t_check_rel(name, latents, ref, cnt, 1e-4);
    snprintf(n, sizeof n, "f32.%s.latent_final_logits", tag);
    ref = t_gf(g, n, &cnt);
    snprintf(name, sizeof name, "%s latent_final_logits", tag);
    t_check_abs(name, latent_logits, ref, cnt, 1e-3);
    snprintf(n, sizeof n, "f32.%s.answer_tokens", tag);
    for (i = 0; i < 16; i++) if (answer[i] != t_gi(g, n, NULL)[i]) { first_diff = i; break; }
    snprintf(name, sizeof name, "%s answer_tokens (first 8 steps)", tag);
    t_result(first_diff < 0 || first_diff >= 8, name, "first difference at %d", first_diff);
}

int main(void) {
    t_golden g;
    char err[256];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    codi_state *s;
    codi_run_opts ro;
    codi_run_result rr;
    size_t T;
    const int32_t *ids;
    float latents[7 * 256], latent_logits[7 * 515], answer_logits[16 * 515];
    steer st;
    int h, p;
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    lo.exact = 1; lo.head_dim = 32;
    if (!(m = codi_load("tests/data/codi_tiny.bin", &lo, err, sizeof err))) { printf("# %s\n", err); return 2; }
    s = codi_state_new(m, 64, 1);
    ro = codi_run_opts_default(m);
    ro.max_answer = 16; ro.stop_at_eos = 0;
    ro.latents = latents; ro.latent_logits = latent_logits; ro.answer_logits = answer_logits;

    /* s1: z_3 += 2.0 * v before it is fed (the embedding hook at latent step 3) */
    memset(&st, 0, sizeof st);
    st.point = CODI_HOOK_EMBED; st.phase = CODI_PHASE_LATENT; st.step = 3; st.scale = 2.0f; st.v = t_gf(&g, "steer.v", NULL);
    codi_state_add_hook(s, steer_hook, &st);
    if (codi_run(m, s, ids, (int)T, &ro, &rr) == 0) check_run(&g, "s1_z_add", answer_logits, rr.answer, latents, latent_logits);
    else t_result(0, "s1_z_add run", "%s", s->error);
    t_result(st.calls == 1, "s1 hook fired once", "%d", st.calls);
    codi_state_clear_hooks(s);

    /* s2: residual entering layer 2 += 3.0 * v at the 6 latent positions only */
    memset(&st, 0, sizeof st);
    st.point = CODI_HOOK_RESID; st.layer = 2; st.phase = CODI_PHASE_LATENT; st.scale = 3.0f; st.v = t_gf(&g, "steer.v", NULL);
    codi_state_add_hook(s, steer_hook, &st);
    if (codi_run(m, s, ids, (int)T, &ro, &rr) == 0) check_run(&g, "s2_resid", answer_logits, rr.answer, latents, latent_logits);
    else t_result(0, "s2_resid run", "%s", s->error);
    t_result(st.calls == 6, "s2 hook fired at the 6 latent positions", "%d", st.calls);
    codi_state_clear_hooks(s);

    /* s3: after the latent loop, layer 2's cached keys += dk[head], values += dv[head] at the
       6 latent slots; then eot and the answer */
    if (codi_run_latents(m, s, ids, (int)T, &ro, &rr) == 0) {
        const float *dk = t_gf(&g, "steer.dk", NULL), *dv = t_gf(&g, "steer.dv", NULL);
        for (p = (int)T; p < (int)T + 6; p++)
            for (h = 0; h < 2; h++) {
                float *k = codi_state_key(s, 2, h, p), *v = codi_state_value(s, 2, h, p);
                int j;
                for (j = 0; j < 32; j++) { k[j] += dk[h * 32 + j]; v[j] += dv[h * 32 + j]; }
            }
        if (codi_run_answer(m, s, &ro, &rr) == 0) check_run(&g, "s3_kv", answer_logits, rr.answer, latents, latent_logits);
        else t_result(0, "s3_kv answer", "%s", s->error);
    } else t_result(0, "s3_kv latents", "%s", s->error);

    /* s4: z_5 := noise (patching a latent) */
    memset(&st, 0, sizeof st);
    st.point = CODI_HOOK_EMBED; st.phase = CODI_PHASE_LATENT; st.step = 5; st.set = 1; st.v = t_gf(&g, "steer.noise", NULL);
    codi_state_add_hook(s, steer_hook, &st);
    if (codi_run(m, s, ids, (int)T, &ro, &rr) == 0) check_run(&g, "s4_z_set", answer_logits, rr.answer, latents, latent_logits);
    else t_result(0, "s4_z_set run", "%s", s->error);
    t_result(st.calls == 1, "s4 hook fired once", "%d", st.calls);
    codi_state_clear_hooks(s);

    /* forking: a copy after the latent loop answers exactly like the original */
    {
        codi_state *f = codi_state_new(m, 64, 1);
        float a2[16 * 515];
        codi_run_result r2;
        int rc = codi_run_latents(m, s, ids, (int)T, &ro, &rr), rc_copy = -1, rc_s = -1, rc_f = -1;
        if (rc == 0) rc_copy = codi_state_copy(m, f, s);
        if (rc_copy == 0) rc_s = codi_run_answer(m, s, &ro, &rr);
        memcpy(a2, answer_logits, sizeof a2);
        if (rc_s == 0) rc_f = codi_run_answer(m, f, &ro, &r2);
        t_result(rc_f == 0 && !memcmp(a2, answer_logits, sizeof a2) && f->n_pos == s->n_pos && r2.n_answer == rr.n_answer &&
                 !memcmp(r2.answer, rr.answer, sizeof(int32_t) * (size_t)rr.n_answer),
                 "a state forked after the latents answers identically", "latents %d, copy %d, answers %d %d (0 = ok) %s%s",
                 rc, rc_copy, rc_s, rc_f, s->error, f->error);
        codi_state_free(f);
    }
    codi_state_free(s);
    codi_model_free(m);
    t_golden_close(&g);
    return t_summary();
}
