/* check_vectors: helpers of tests/test_vectors.sh.
     check_vectors acts OUT.safetensors
       records the 8 questions of golden_protocols_tiny on codi_tiny in the activation-dataset layout
       (docs acts.md: final [Q, P, D], key / value [Q, P, L, KVH, HD], labels bot, latent 1..6, done),
       plus a 9th row of garbage with done = 0 that a reader must skip;
     check_vectors compare NAME FILE:TENSOR REF:TENSOR TOL
       prints "ok - NAME" when the relative L2 error is at most TOL (else "not ok"); FILE:TENSOR@OFF+N
       compares N values from element OFF;
     check_vectors maxabs NAME FILE:TENSOR REF:TENSOR TOL
       the same with the largest absolute difference;
     check_vectors kvdiff NAME FILE:TENSOR GOLDEN:CACHE P1 P0 TOL
       TENSOR [L, KVH, HD] against CACHE[:, :, P1] - CACHE[:, :, P0] of a golden [L, KVH, T, HD] cache;
     check_vectors norm NAME FILE:TENSOR REF:TENSOR
       "ok - NAME" when both have the same L2 norm (1e-5 relative) but different directions;
     check_vectors prerope NAME MODEL ACTS.safetensors
       a `codi record --kv` dataset: every done row's key_pre_rope rotated by its position's angles
       (codi_rope_rotate) equals key (rel L2 1e-6), equals it exactly at position 0 (where the
       dataset has such a slot) and differs from it elsewhere. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define Q 9
#define P 7

typedef struct { float *final; int T0; } capture;

/* Keeps the final-normed hidden state at positions T0 - 1 .. T0 + 5 (bot, latents 1..6). */
static int capture_final(void *user, const codi_hook_info *info, float *data) {
    capture *c = (capture *)user;
    int slot = info->pos - (c->T0 - 1);
    if (info->point == CODI_HOOK_FINAL && slot >= 0 && slot < P) memcpy(c->final + (size_t)slot * info->size, data, (size_t)info->size * sizeof(float));
    return 0;
}

/* FILE:TENSOR, or FILE:TENSOR@OFFSET+COUNT for COUNT values from element OFFSET. */
static float *read_ref(const char *ref_arg, long *n) {
    char path[512], err[256], ref[512], *at;
    const char *colon;
    long off = 0, cnt = -1;
    snprintf(ref, sizeof ref, "%s", ref_arg);
    if ((at = strrchr(ref, '@')) != NULL) { *at = 0; if (sscanf(at + 1, "%ld+%ld", &off, &cnt) != 2) return NULL; }
    colon = strrchr(ref, ':');
    codi_safetensors_file *f;
    codi_safetensors_tensor t;
    float *out = NULL;
    if (!colon) return NULL;
    snprintf(path, sizeof path, "%.*s", (int)(colon - ref), ref);
    if (!(f = codi_safetensors_open(path, err, sizeof err))) { printf("# %s\n", err); return NULL; }
    if (codi_safetensors_find(f, colon + 1, &t) == 0 && (out = (float *)malloc(t.numel * sizeof(float))) != NULL &&
        codi_safetensors_read_f32(f, colon + 1, out, t.numel, err, sizeof err) < 0) { free(out); out = NULL; }
    if (!out) printf("# %s: no tensor %s\n", path, colon + 1);
    else if (cnt >= 0) {
        if (off < 0 || off + cnt > (long)t.numel) { free(out); out = NULL; }
        else { memmove(out, out + off, (size_t)cnt * sizeof(float)); *n = cnt; }
    } else *n = (long)t.numel;
    codi_safetensors_close(f);
    return out;
}

static int make_acts(const char *out) {
    t_golden g;
    codi_model *m = t_load("tests/data/codi_tiny.bin", 1);
    codi_state *s;
    codi_run_opts ro;
    codi_run_result rr;
    const int32_t *ids;
    static float final[Q * P * 256], key[Q * P * 4 * 64], value[Q * P * 4 * 64];
    static unsigned char done[Q];
    capture c;
    int q, k, l, h;
    char err[256];
    codi_safetensors_entry e[4];
    const char *meta[] = { "format", "codi_lens.acts.v1", "positions", "latents",
                           "labels", "[\"bot\", \"latent 1\", \"latent 2\", \"latent 3\", \"latent 4\", \"latent 5\", \"latent 6\"]",
                           "n_latent", "6", "kv", "1", NULL };
    if (!m || t_golden_open(&g, "tests/data/golden_protocols_tiny.safetensors")) return 2;
    ids = t_gi(&g, "question_ids", NULL);
    s = codi_state_new(m, 64, 1);
    ro = codi_run_opts_default(m);
    ro.max_answer = 1;
    codi_state_add_hook(s, capture_final, &c);
    for (q = 0; q < Q; q++) {
        if (q == Q - 1) {                               /* an unfinished row: garbage, done = 0 */
            for (k = 0; k < P * 256; k++) final[(size_t)q * P * 256 + k] = 1e3f;
            for (k = 0; k < P * 256; k++) key[(size_t)q * P * 256 + k] = value[(size_t)q * P * 256 + k] = -1e3f;
            continue;
        }
        c.final = final + (size_t)q * P * 256; c.T0 = 17;
        if (codi_run(m, s, ids + 17 * q, 17, &ro, &rr)) { printf("# %s\n", s->error); return 2; }
        for (k = 0; k < P; k++)
            for (l = 0; l < 4; l++)
                for (h = 0; h < 2; h++) {
                    size_t o = ((((size_t)q * P + k) * 4 + l) * 2 + h) * 32;
                    memcpy(key + o, codi_state_key(s, l, h, 16 + k), 32 * sizeof(float));
                    memcpy(value + o, codi_state_value(s, l, h, 16 + k), 32 * sizeof(float));
                }
        done[q] = 1;
    }
    memset(e, 0, sizeof e);
    e[0].name = "final"; e[0].dtype = CODI_F32; e[0].data = final; e[0].ndim = 3; e[0].shape[0] = Q; e[0].shape[1] = P; e[0].shape[2] = 256;
    e[1].name = "key"; e[1].dtype = CODI_F32; e[1].data = key; e[1].ndim = 5;
    e[1].shape[0] = Q; e[1].shape[1] = P; e[1].shape[2] = 4; e[1].shape[3] = 2; e[1].shape[4] = 32;
    e[2] = e[1]; e[2].name = "value"; e[2].data = value;
    e[3].name = "done"; e[3].dtype = CODI_U8; e[3].data = done; e[3].ndim = 1; e[3].shape[0] = Q;
    if (codi_write_safetensors(out, e, 4, meta, err, sizeof err)) { printf("# %s\n", err); return 2; }
    codi_state_free(s);
    codi_model_free(m);
    t_golden_close(&g);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "acts")) return make_acts(argv[2]);
    if (argc == 6 && (!strcmp(argv[1], "compare") || !strcmp(argv[1], "maxabs"))) {
        long na = 0, nb = 0;
        float *a = read_ref(argv[3], &na), *b = read_ref(argv[4], &nb);
        int rel = !strcmp(argv[1], "compare");
        double tol = atof(argv[5]), e = a && b && na == nb ? (rel ? t_rel_l2(a, b, (size_t)na) : t_max_abs(a, b, (size_t)na)) : INFINITY;
        printf("%s - %s (%s %.3g, tol %g, %ld values)\n", e <= tol ? "ok" : "not ok", argv[2], rel ? "rel L2" : "max |diff|", e, tol, na);
        free(a); free(b);
        return e <= tol ? 0 : 1;
    }
    if (argc == 8 && !strcmp(argv[1], "kvdiff")) {     /* codi_tiny: L 4, KVH 2, HD 32 */
        long na = 0, nb = 0, T, i, p1 = atol(argv[5]), p0 = atol(argv[6]);
        float *a = read_ref(argv[3], &na), *b = read_ref(argv[4], &nb), ref[4 * 2 * 32];
        double tol = atof(argv[7]), e = INFINITY;
        T = nb / (4 * 2 * 32);
        if (a && b && na == 4 * 2 * 32 && p0 >= 0 && p1 >= 0 && p0 < T && p1 < T) {
            for (i = 0; i < 4 * 2; i++) {
                int j;
                for (j = 0; j < 32; j++) ref[i * 32 + j] = b[(i * T + p1) * 32 + j] - b[(i * T + p0) * 32 + j];
            }
            e = t_rel_l2(a, ref, (size_t)na);
        }
        printf("%s - %s (rel L2 %.3g, tol %g)\n", e <= tol ? "ok" : "not ok", argv[2], e, tol);
        free(a); free(b);
        return e <= tol ? 0 : 1;
    }
    if (argc == 5 && !strcmp(argv[1], "norm")) {
        long na = 0, nb = 0;
        float *a = read_ref(argv[3], &na), *b = read_ref(argv[4], &nb);
        double x = a ? codi_l2_norm(a, na) : 0, y = b ? codi_l2_norm(b, nb) : -1;
        int ok = a && b && na == nb && fabs(x - y) <= 1e-5 * y && memcmp(a, b, (size_t)na * sizeof(float));
        printf("%s - %s (norms %.6g and %.6g)\n", ok ? "ok" : "not ok", argv[2], x, y);
        free(a); free(b);
        return ok ? 0 : 1;
    }
    if (argc == 5 && !strcmp(argv[1], "prerope")) {
        char err[256];
        codi_load_opts lo = codi_load_opts_default();
        codi_model *m = codi_load(argv[3], &lo, err, sizeof err);
        codi_safetensors_file *f = m ? codi_safetensors_open(argv[4], err, sizeof err) : NULL;
        codi_safetensors_tensor kt, pt, dt, post;
        float *key = NULL, *pre = NULL;
        int32_t *pos = NULL;
        long rows = 0, at0 = 0, n0 = 0, differ = 0, q, p, per, QP;
        double num = 0, den = 0, e = INFINITY;
        int ok = 0;
        if (f && !codi_safetensors_find(f, "key", &kt) && !codi_safetensors_find(f, "key_pre_rope", &pt) && !codi_safetensors_find(f, "done", &dt) &&
            !codi_safetensors_find(f, "positions", &post) && kt.numel == pt.numel && kt.ndim == 5) {
            QP = (long)(kt.shape[0] * kt.shape[1]); per = (long)(kt.numel / (size_t)QP);
            key = (float *)malloc(kt.numel * sizeof(float)); pre = (float *)malloc(kt.numel * sizeof(float));
            pos = (int32_t *)malloc((size_t)QP * sizeof(int32_t));
            if (key && pre && pos && codi_safetensors_read_f32(f, "key", key, kt.numel, err, sizeof err) >= 0 &&
                codi_safetensors_read_f32(f, "key_pre_rope", pre, pt.numel, err, sizeof err) >= 0 && post.numel == (size_t)QP) {
                memcpy(pos, post.data, (size_t)QP * sizeof(int32_t));
                for (q = 0; q < (long)kt.shape[0]; q++)
                    for (p = 0; p < (long)kt.shape[1]; p++) {
                        long r = q * (long)kt.shape[1] + p, j;
                        float *x = pre + r * per;
                        if (!((const unsigned char *)dt.data)[q] || pos[r] < 0) continue;
                        differ += pos[r] > 0 && memcmp(x, key + r * per, (size_t)per * sizeof(float)) != 0;
                        at0 += pos[r] == 0 && !memcmp(x, key + r * per, (size_t)per * sizeof(float));
                        n0 += pos[r] == 0;
                        codi_rope_rotate(m, pos[r], 0, x, (int)(per / m->config.head_dim));
                        for (j = 0; j < per; j++) { double d = (double)x[j] - key[r * per + j]; num += d * d; den += (double)key[r * per + j] * key[r * per + j]; }
                        rows++;
                    }
                e = den > 0 ? sqrt(num / den) : INFINITY;
                ok = rows > 0 && e <= 1e-6 && at0 == n0 && differ > 0;
            }
        } else printf("# %s: no key, key_pre_rope, done, positions (%s)\n", argv[4], m ? "" : err);
        printf("%s - %s (%ld rows, rel L2 %.3g, tol 1e-6; %ld of %ld at position 0 equal, %ld elsewhere differ)\n", ok ? "ok" : "not ok", argv[2],
               rows, e, at0, n0, differ);
        free(key); free(pre); free(pos); codi_safetensors_close(f); codi_model_free(m);
        return ok ? 0 : 1;
    }
    printf("usage: check_vectors acts OUT | check_vectors compare NAME FILE:TENSOR REF:TENSOR TOL\n");
    return 2;
}
