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
        base = codi_state_alloc(m, 64, 2);
        ro = codi_run_opts_default(m);
        t_result(base && codi_run_latents(m, base, ids, (int)T, &ro, &rr) == 0, "prefill + 6 latents", "");
        for (b = 0; b < 9; b++) { st[b] = codi_state_alloc(m, 64, 1); codi_state_copy(m, st[b], base); tok[b] = m->config.eot_id; }
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
            st[b] = codi_state_alloc(m, 64, 1); one[b] = codi_state_alloc(m, 64, 1);
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
        twice[0] = codi_state_alloc(m, 8, 1); twice[1] = st[1];
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
            pre[b] = codi_state_alloc(m, 64, 1); bs[b] = codi_state_alloc(m, 64, b ? 1 : 2); os[b] = codi_state_alloc(m, 64, 1);
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
    codi_model_free(m);
    t_golden_close(&g);
    return t_summary();
}
