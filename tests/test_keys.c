/* Pre-RoPE keys (codi_key_pre_rope, codi_rope_rotate) on codi-nano (llama3 rope scaling, factor
   32): rotating back then forth reproduces the cache's keys; the pre-RoPE key equals W_k applied to
   the attention-normed residual, computed here directly in double; the rotation is orthogonal and
   uses the llama3-scaled frequencies (HF's _compute_llama3_parameters, written out again here). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define NANO "models/codi-nano/"

/* W [rows, cols] row r as doubles (f32 or bf16 weights). */
static double weight_at(const codi_matrix *w, int r, int c) {
    size_t i = (size_t)r * w->cols + c;
    return w->dtype == CODI_F32 ? ((const float *)w->data)[i] : codi__bf16_to_f32(((const uint16_t *)w->data)[i]);
}

/* HF transformers' llama3 inverse frequency of pair i, in double. */
static double hf_inv_freq(const codi_config *c, int i) {
    double f = 1.0 / pow(c->rope_theta, 2.0 * i / c->head_dim), wl = 2 * 3.14159265358979323846 / f;
    double low_wl = c->rope_original_max_pos / c->rope_low_freq_factor, high_wl = c->rope_original_max_pos / c->rope_high_freq_factor;
    if (!c->rope_llama3) return f;
    if (wl > low_wl) return f / c->rope_factor;
    if (wl < high_wl) return f;
    {
        double smooth = (c->rope_original_max_pos / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
        return (1 - smooth) * f / c->rope_factor + smooth * f;
    }
}

int main(void) {
    char err[256];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = codi_load(NANO "codi_nano.bin", &lo, err, sizeof err);
    codi_tokenizer *t = m ? codi_tokenizer_load(NANO "tokenizer.json", err, sizeof err) : NULL;
    codi_state *s;
    codi_run_opts ro;
    codi_run_result rr;
    int32_t ids[512];
    int n, L, KVH, HD, D, l, h, pos, checked = 0;
    double worst_round = 0, worst_direct = 0, worst_hf = 0, norm_err = 0;
    float pre[256], back[256];
    if (!m || !t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { t_result(0, "load codi-nano", "%s", err); return t_summary(); }
    L = m->config.n_layers; KVH = m->config.n_kv_heads; HD = m->config.head_dim; D = m->config.dim;
    t_result(m->config.rope_llama3 && m->config.rope_factor > 1, "codi-nano uses llama3 rope scaling", "factor %g", (double)m->config.rope_factor);
    n = codi_prompt_from_text(m, t, "Tom has 3 bags with 4 apples each. He eats 2. How many apples are left?", 0, ids, 512);
    s = codi_state_new(m, n + 6 + 16, 1);
    ro = codi_run_opts_default(m);
    ro.max_answer = 8;
    if (n <= 0 || !s || codi_run(m, s, ids, n, &ro, &rr)) { t_result(0, "run codi-nano", "%s", s ? s->error : "no state"); return t_summary(); }
    for (l = 0; l < L; l++)
        for (pos = 0; pos < s->n_pos; pos += 3) {
            double *xn = (double *)malloc((size_t)D * sizeof(double)), ss = 0;
            const float *x = codi_state_resid(s, l, pos);
            int i, j;
            for (i = 0; i < D; i++) ss += (double)x[i] * x[i];
            for (i = 0; i < D; i++) xn[i] = m->w.layers[l].attn_norm[i] * (x[i] / sqrt(ss / D + m->config.norm_eps));
            for (h = 0; h < KVH; h++) {
                const float *k = codi_state_key(s, l, h, pos);
                double num = 0, den = 0, n_pre = 0, n_k = 0;
                if (codi_key_pre_rope(m, s, l, h, pos, pre)) { t_result(0, "codi_key_pre_rope", "%s", s->error); return t_summary(); }
                memcpy(back, pre, (size_t)HD * sizeof(float));
                codi_rope_rotate(m, pos, 0, back, 1);
                for (j = 0; j < HD; j++) { n_pre += (double)pre[j] * pre[j]; n_k += (double)k[j] * k[j]; }
                for (j = 0; j < HD; j++) {               /* back and forth: the cache's key again */
                    double d = fabs((double)back[j] - k[j]) / sqrt(n_k);
                    if (d > worst_round) worst_round = d;
                }
                if (fabs(sqrt(n_pre) - sqrt(n_k)) / sqrt(n_k) > norm_err) norm_err = fabs(sqrt(n_pre) - sqrt(n_k)) / sqrt(n_k);
                for (j = 0; j < HD; j++) {               /* W_k attn_norm(resid): row h * HD + j */
                    double kd = 0;
                    for (i = 0; i < D; i++) kd += weight_at(&m->w.layers[l].wk, h * HD + j, i) * xn[i];
                    num += (kd - pre[j]) * (kd - pre[j]); den += kd * kd;
                }
                if (sqrt(num / den) > worst_direct) worst_direct = sqrt(num / den);
                {   /* the angles: HF's llama3 frequencies in double, applied to pre */
                    double e = 0, e_den = 0;
                    for (j = 0; j < HD / 2; j++) {
                        double a = pos * hf_inv_freq(&m->config, j), c = cos(a), sn = sin(a);
                        double r0 = pre[j] * c - pre[j + HD / 2] * sn, r1 = pre[j + HD / 2] * c + pre[j] * sn;
                        e += (r0 - k[j]) * (r0 - k[j]) + (r1 - k[j + HD / 2]) * (r1 - k[j + HD / 2]);
                        e_den += (double)k[j] * k[j] + (double)k[j + HD / 2] * k[j + HD / 2];
                    }
                    if (sqrt(e / e_den) > worst_hf) worst_hf = sqrt(e / e_den);
                }
                checked++;
            }
            free(xn);
        }
    t_result(worst_round <= 1e-6, "pre-RoPE key rotated forth again = the cache's key", "%d keys, worst max |diff| / |key| %.2g (tol 1e-6)",
             checked, worst_round);
    t_result(norm_err <= 1e-6, "RoPE keeps the norm (orthogonal)", "worst relative norm change %.2g (tol 1e-6)", norm_err);
    t_result(worst_direct <= 2e-5, "pre-RoPE key = W_k attn_norm(resid) computed directly", "worst rel L2 %.2g (tol 2e-5)", worst_direct);
    t_result(worst_hf <= 1e-5, "pre-RoPE key rotated by HF's llama3 angles (double) = the cache's key", "worst rel L2 %.2g (tol 1e-5)", worst_hf);
    {   /* a position where the scaling matters: the low-frequency pairs rotate 32 times less */
        float v[256], w[256];
        codi_config plain = m->config;
        codi_model m2 = *m;
        int j;
        double diff = 0;
        for (j = 0; j < HD; j++) v[j] = w[j] = (float)(j % 5) - 2.0f;
        plain.rope_llama3 = 0; m2.config = plain;
        codi_rope_rotate(m, 5000, 0, v, 1);
        codi_rope_rotate(&m2, 5000, 0, w, 1);
        for (j = 0; j < HD; j++) diff = fmax(diff, fabs((double)v[j] - w[j]));
        t_result(diff > 0.1, "llama3 scaling changes the rotation at position 5000", "max |diff| vs unscaled %.3g", diff);
    }
    t_result(codi_key_pre_rope(m, s, 0, 0, s->n_pos, pre) == -1 && strstr(s->error, "position") != NULL,
             "pre-RoPE key of an unprocessed position is refused", "%s", s->error);
    t_result(codi_key_pre_rope(m, s, L, 0, 0, pre) == -1 && codi_key_pre_rope(m, s, 0, KVH, 0, pre) == -1,
             "pre-RoPE key of a layer or head out of range is refused", NULL);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    return t_summary();
}
