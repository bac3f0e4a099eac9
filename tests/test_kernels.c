/* Kernel paths against a float64 reference: every path this CPU runs (and the scalar one),
   GEMV (n = 1), multi-position GEMV (1 < n < 64) and GEMM (n >= 64) shapes with ragged edges, bf16 and f32 weights, several
   thread-range splits; for the AMX tiles (9+ positions) rows, positions and columns that are not
   multiples of 16 / 32, several column blocks (K > 256 at 256 positions, K > 2048 at 8..32), several
   row blocks and position blocks. Error bound: 1e-5 of sum |x| |w| per output (float32
   accumulation), plus 2^-16 on the avx512bf16 and amx paths with bf16 weights: they split x into
   bf16 hi + lo, |x - hi - lo| <= 2^-16 |x| (bf16 x alone would be 2^-9: a K = 1 shape shows it).
   The bf16 compute mode's kernels (CODI_COMPUTE_BF16) against a float64 reference of bf16(x) w,
   within 1e-5 (f32 weights: of x w). Each path's decode attention (attend) against its own dot and
   axpy per position: the same bits. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

/* max over outputs of |got - ref| / sum |x| |w| on kernels kn; round_x: the reference takes bf16(x) for bf16 weights */
static double check_shape(const codi__kernel *kn, int round_x, int dtype, int n, int rows, int cols, int r0, int r1) {
    codi_matrix w;
    float *x = malloc(sizeof(float) * (size_t)n * cols), *out = malloc(sizeof(float) * (size_t)n * rows);
    float *work = malloc(sizeof(float) * codi__work_floats(n, cols));
    void *wd = malloc((size_t)rows * cols * (dtype == CODI_BF16 ? 2 : 4));
    int i, r, k;
    double worst = 0;
    for (k = 0; k < rows * cols; k++) {
        float v = frand();
        if (dtype == CODI_BF16) ((uint16_t *)wd)[k] = codi__f32_to_bf16(v); else ((float *)wd)[k] = v;
    }
    for (k = 0; k < n * cols; k++) x[k] = frand();
    for (k = 0; k < n * rows; k++) out[k] = NAN;
    w.dtype = dtype; w.rows = rows; w.cols = cols; w.data = wd;
    codi__matmul_range(kn, out, (size_t)rows, x, &w, n, r0, r1, work);
    for (i = 0; i < n; i++)
        for (r = 0; r < rows; r++) {
            double ref = 0, mag = 0, e;
            float got = out[(size_t)i * rows + r];
            if (r < r0 || r >= r1) { if (got == got) worst = INFINITY; continue; }   /* outside the range: untouched */
            for (k = 0; k < cols; k++) {
                double xv = round_x && dtype == CODI_BF16 ? codi__bf16_to_f32(codi__f32_to_bf16(x[(size_t)i * cols + k])) : x[(size_t)i * cols + k];
                double wv = codi_elem_f32(wd, dtype, (size_t)r * cols + k);
                ref += xv * wv; mag += fabs(xv * wv);
            }
            e = fabs(got - ref) / (mag > 0 ? mag : 1);
            if (!(e <= worst)) worst = e != e ? INFINITY : e;
        }
    free(x); free(out); free(work); free(wd);
    return worst;
}

/* The path's own pack_b, dot and axpy against the scalar ones on odd shapes (paths that have
   their own): packing is data movement (identical bits); dot within 1e-5 of sum |a b| (float32
   accumulation), axpy within 2.5e-7 of |y| + |a x| (a fused multiply-add rounds once). */
static void check_helpers(const char *path) {
    static const int packs[][4] = { { 0, 0, 0, 256 }, { 3, 0, 5, 13 }, { 2, 3, 0, 7 }, { 1, 5, 8, 8 } };   /* r0, rows short, k0, kb */
    const codi__kernel *kn = codi__kernel_active();
    int nr = kn->nr, rows = 41, cols = 300, i, k, dt, bad = 0, npack = 0;
    double e_dot = 0, e_axpy = 0;
    if (kn->pack_b != codi__pack_b) {
        float *got = malloc(sizeof(float) * 256 * (size_t)nr), *ref = malloc(sizeof(float) * 256 * (size_t)nr);
        void *wd = malloc((size_t)rows * cols * 4);
        codi_matrix w;
        for (dt = 0; dt < 2; dt++) {
            w.dtype = dt ? CODI_F32 : CODI_BF16; w.rows = rows; w.cols = cols; w.data = wd;
            for (k = 0; k < rows * cols; k++) {
                float v = frand();
                if (dt) ((float *)wd)[k] = v; else ((uint16_t *)wd)[k] = codi__f32_to_bf16(v);
            }
            for (i = 0; i < (int)(sizeof packs / sizeof packs[0]); i++) {
                int r0 = packs[i][0], nrows = nr - packs[i][1], k0 = packs[i][2], kb = packs[i][3];
                size_t m = (size_t)kb * nr;
                for (k = 0; k < (int)m; k++) got[k] = ref[k] = NAN;
                codi__pack_b(ref, &w, r0, nrows, k0, kb, nr);
                kn->pack_b(got, &w, r0, nrows, k0, kb, nr);
                bad += memcmp(got, ref, m * sizeof(float)) != 0;
                npack++;
            }
        }
        t_result(bad == 0, path, "pack_b == scalar pack_b bit for bit: %d of %d panels differ (bf16, f32; %d rows, short last panels, kb 256/13/7/8)",
                 bad, npack, nr);
        free(got); free(ref); free(wd);
    }
    if (kn->dot != codi__dot || kn->axpy != codi__axpy) {
        static const int lens[] = { 1, 3, 7, 8, 16, 33, 64, 100, 257 };
        float a[272], b[272], y[272], y0[272], s = 0.5f;
        for (i = 0; i < (int)(sizeof lens / sizeof lens[0]); i++) {
            int n = lens[i];
            double ref = 0, mag = 0;
            for (k = 0; k < 272; k++) { a[k] = frand(); b[k] = frand(); y[k] = y0[k] = frand(); }
            for (k = 0; k < n; k++) { ref += (double)a[k] * b[k]; mag += fabs((double)a[k] * b[k]); }
            e_dot = fmax(e_dot, fabs(kn->dot(a, b, n) - ref) / mag);
            kn->axpy(y, s, a, n);
            for (k = 0; k < n; k++) e_axpy = fmax(e_axpy, fabs(y[k] - (y0[k] + (double)s * a[k])) / (fabs(y0[k]) + fabs(s * a[k])));
            if (memcmp(y + n, y0 + n, sizeof(float) * (size_t)(272 - n))) e_axpy = INFINITY;   /* past n: untouched */
        }
        t_result(e_dot <= 1e-5 && e_axpy <= 2.5e-7, path, "dot max error %.2g of sum |a b| (tol 1e-5), axpy %.2g of |y| + |a x| (tol 2.5e-7; y past n untouched), lengths 1..257",
                 e_dot, e_axpy);
    }
}

/* The path's attend against codi__attend_dot_axpy on its own dot and axpy: the same bits, for head
   dims that take the blocked kernels and the fallback, groups of 1..5 heads, 1..203 positions. */
static void check_attend(const char *path) {
    static const int hds[] = { 64, 32, 48, 40, 128 }, nqs[] = { 1, 3, 4, 5 }, ts[] = { 1, 2, 5, 17, 203 };
    const codi__kernel *kn = codi__kernel_active();
    float *q = malloc(sizeof(float) * 5 * 128), *k = malloc(sizeof(float) * 203 * 128), *v = malloc(sizeof(float) * 203 * 128);
    float *got = malloc(sizeof(float) * 5 * 128), *ref = malloc(sizeof(float) * 5 * 128), *sc = malloc(sizeof(float) * 5 * 203);
    int a, b, c, i, bad = 0, n = 0;
    for (i = 0; i < 5 * 128; i++) q[i] = 2 * frand();
    for (i = 0; i < 203 * 128; i++) { k[i] = frand(); v[i] = frand(); }
    for (a = 0; a < 5; a++)
        for (b = 0; b < 4; b++)
            for (c = 0; c < 5; c++) {
                int hd = hds[a], nq = nqs[b], T = ts[c];
                for (i = 0; i < 5 * 128; i++) got[i] = ref[i] = NAN;
                codi__attend_dot_axpy(kn->dot, kn->axpy, ref, q, nq, k, v, T, hd, sc);
                kn->attend(got, q, nq, k, v, T, hd, sc);
                bad += memcmp(got, ref, sizeof(float) * 5 * 128) != 0;
                n++;
            }
    t_result(bad == 0, path, "attend == its dot and axpy per position bit for bit: %d of %d shapes differ (head dim 64/32/48/40/128, "
             "1/3/4/5 heads, 1..203 positions)", bad, n);
    free(q); free(k); free(v); free(got); free(ref); free(sc);
}

/* The bf16 compute mode's kernels (every shape, bf16 and f32 weights), whatever the path. */
static void check_compute_bf16(const int (*shapes)[5], int n_shapes) {
#ifdef CODI__X86
    int dt, si;
    if (!codi__compute_bf16_runs()) { t_skip("bf16 compute", "this CPU has no AVX512-BF16"); return; }
    for (dt = 0; dt < 2; dt++) {
        double worst = 0;
        for (si = 0; si < n_shapes; si++) {
            double e = check_shape(&codi__kernel_bf16, 1, dt ? CODI_F32 : CODI_BF16, shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3], shapes[si][4]);
            if (e > worst) worst = e;
        }
        t_result(worst <= 1e-5, "bf16 compute", "%s weights: max error %.2g of sum |x w| against %s over %d shapes (tol 1e-5)",
                 dt ? "f32" : "bf16", worst, dt ? "x w" : "bf16(x) w", n_shapes);
    }
#else
    (void)shapes; (void)n_shapes;
    t_skip("bf16 compute", "x86-64 GCC/clang builds only");
#endif
}

int main(void) {
    static const int shapes[][5] = {   /* n, rows, cols, r0, r1 */
        { 1, 37, 300, 0, 37 }, { 1, 64, 2048, 4, 60 }, { 3, 33, 77, 1, 33 }, { 4, 16, 64, 0, 16 },
        { 7, 45, 513, 0, 45 }, { 13, 100, 700, 32, 96 }, { 63, 41, 100, 3, 41 }, { 33, 10, 2500, 0, 10 }, { 9, 7, 4133, 2, 7 },
        { 64, 96, 256, 0, 96 }, { 300, 70, 260, 6, 70 },
        { 2, 19, 9, 1, 19 }, { 70, 37, 521, 2, 37 },   /* ragged: K = 8 + 1, a last panel of 3 rows, 256 + 256 + 9 */
        { 8, 17, 31, 0, 17 }, { 9, 33, 2100, 5, 33 }, { 17, 50, 1, 1, 49 }, { 31, 15, 65, 0, 15 }, { 40, 47, 95, 13, 47 },
        { 100, 64, 33, 0, 64 }, { 200, 600, 300, 7, 600 }, { 257, 40, 70, 0, 40 },
        { 200, 700, 300, 16, 690 },    /* 2 depth slices, 2 row blocks, ragged strips and panels */
        { 1, 6, 4096, 1, 6 }, { 1, 9, 4133, 2, 9 }, { 1, 5, 8200, 0, 5 } };  /* the GEMV at and past GEMV_ROW_MAX (4 rows a pass) */
    const char *paths[8];
    int np = codi_kernels_available(paths, 8), p, si, dt;
    printf("# paths this CPU runs:");
    for (p = 0; p < np; p++) printf(" %s", paths[p]);
    printf("\n");
    t_result(np >= 1 && !strcmp(paths[0], "scalar"), "the scalar path is always there", "%d paths", np);
    for (p = 0; p < np && p < 8; p++) {
        if (codi_set_kernel(paths[p]) != 0) { t_result(0, "select path", "%s", paths[p]); continue; }
        for (dt = 0; dt < 2; dt++) {
            int dtype = dt ? CODI_F32 : CODI_BF16;
            double worst = 0, tol = 1e-5 + (dtype == CODI_BF16 && (!strcmp(paths[p], "avx512bf16") || !strcmp(paths[p], "amx")) ? 1.0 / 65536 : 0);
            for (si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
                double e = check_shape(codi__kernel_active(), 0, dtype, shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3], shapes[si][4]);
                if (e > worst) worst = e;
            }
            t_result(worst <= tol, paths[p], "%s weights: max error %.2g of sum |x w| over %d shapes (tol %.2g)", dt ? "f32" : "bf16",
                     worst, (int)(sizeof shapes / sizeof shapes[0]), tol);
        }
        check_helpers(paths[p]);
        check_attend(paths[p]);
    }
    check_compute_bf16(shapes, (int)(sizeof shapes / sizeof shapes[0]));
    return t_summary();
}
