/* codi_save_merged: codi_tiny saved merged (bf16, and f32 when loaded exact), loaded back with no
   options, gives bit-identical CODI runs (latents, every answer logit) and the same config; the
   bf16 file also stays within the golden bf16merged tolerance. Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

typedef struct { float latents[7 * 256], answer_logits[16 * 515]; int32_t answer[16]; int n; } run_out;

static int run(const codi_model *m, const int32_t *ids, int T, run_out *o) {
    codi_state *s = codi_state_alloc(m, 64, 1);
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    int rc;
    ro.max_answer = 16; ro.stop_at_eos = 0; ro.latents = o->latents; ro.answer_logits = o->answer_logits;
    rc = s ? codi_run(m, s, ids, T, &ro, &rr) : -1;
    if (rc) printf("# run: %s\n", s ? s->error : "out of memory");
    else { o->n = rr.n_answer; memcpy(o->answer, rr.answer, sizeof o->answer); }
    codi_state_free(s);
    return rc;
}

static void roundtrip(const char *label, int exact, t_golden *g, const int32_t *ids, int T) {
    char err[256], path[128];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = t_load("tests/data/codi_tiny.bin", exact), *r;
    static run_out a, b;
    snprintf(path, sizeof path, "build/test_export_%s.safetensors", label);
    if (!m) { t_result(0, label, "load failed"); return; }
    t_result(codi_save_merged(m, path, err, sizeof err) == 0, "save merged", "%s %s", label, err);
    lo.exact = exact;                                 /* no head_dim: the saved config carries it */
    r = codi_load(path, &lo, err, sizeof err);
    t_result(r != NULL, "load the merged file with default options", "%s %s", label, r ? "" : err);
    if (r) {
        const codi_config *c = &m->config, *d = &r->config;
        t_result(d->head_dim == c->head_dim && d->rope_llama3 == c->rope_llama3 && d->rope_factor == c->rope_factor &&
                 d->rope_theta == c->rope_theta && d->bos_id == c->bos_id && d->n_eos == c->n_eos && d->eos_ids[0] == c->eos_ids[0] &&
                 d->bot_id == c->bot_id && d->eot_id == c->eot_id && d->prj_dim == c->prj_dim && d->vocab == c->vocab &&
                 d->norm_eps == c->norm_eps, "config preserved", "%s: head_dim %d, bot %d, eot %d", label, d->head_dim, d->bot_id, d->eot_id);
        if (run(m, ids, T, &a) == 0 && run(r, ids, T, &b) == 0) {
            t_result(a.n == b.n && !memcmp(a.answer, b.answer, sizeof a.answer) && !memcmp(a.latents, b.latents, sizeof a.latents) &&
                     !memcmp(a.answer_logits, b.answer_logits, sizeof a.answer_logits), "merged file gives bit-identical runs", "%s", label);
            if (!exact) {
                const float *ref = t_gf(g, "bf16merged.answer_logits", NULL);
                double e = 0, x;
                int i;
                for (i = 0; i < 16; i++) if ((x = t_max_abs(b.answer_logits + i * 515, ref + i * 514, 514)) > e) e = x;
                t_result(e <= 5e-3, "merged bf16 file within the golden tolerance", "answer_logits max |diff| %.3g (tol 5e-3)", e);
            }
        } else t_result(0, "runs", "%s", label);
        codi_model_free(r);
    }
    codi_model_free(m);
    remove(path);
}

int main(void) {
    t_golden g;
    size_t T;
    const int32_t *ids;
    char err[256];
    codi_model *m;
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    roundtrip("bf16", 0, &g, ids, (int)T);
    roundtrip("f32", 1, &g, ids, (int)T);
    m = t_load("tests/data/codi_tiny.bin", 0);
    t_result(m && codi_save_merged(m, "build/no-such-dir/x.safetensors", err, sizeof err) == -1 && err[0],
             "an unwritable path is an error", "%s", err);
    codi_model_free(m);
    t_golden_close(&g);
    return t_summary();
}
