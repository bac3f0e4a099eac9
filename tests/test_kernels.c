/* Kernel paths against a float64 reference: every path this CPU runs (and the scalar one),
   GEMV (n = 1), multi-position GEMV (1 < n < 64) and GEMM (n >= 64) shapes with ragged edges, bf16 and f32 weights, several
   thread-range splits; for the AMX tiles (9+ positions) rows, positions and columns that are not
   multiples of 16 / 32, several column blocks (K > 256 at 256 positions, K > 2048 at 8..32), several
   row blocks and position blocks. Error bound: 1e-5 of sum |x| |w| per output (float32
   accumulation), plus 2^-16 on the avx512bf16 and amx paths with bf16 weights: they split x into
   bf16 hi + lo, |x - hi - lo| <= 2^-16 |x| (bf16 x alone would be 2^-9: a K = 1 shape shows it). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

/* max over outputs of |got - ref| / sum |x| |w| */
static double check_shape(int dtype, int n, int rows, int cols, int r0, int r1) {
    codi_matrix w;
    float *x = malloc(sizeof(float) * (size_t)n * cols), *out = malloc(sizeof(float) * (size_t)n * rows);
    float *work = malloc(sizeof(float) * codi__work_floats());
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
    codi__matmul_range(codi__kernel_active(), out, (size_t)rows, x, &w, n, r0, r1, work);
    for (i = 0; i < n; i++)
        for (r = 0; r < rows; r++) {
            double ref = 0, mag = 0, e;
            float got = out[(size_t)i * rows + r];
            if (r < r0 || r >= r1) { if (got == got) worst = INFINITY; continue; }   /* outside the range: untouched */
            for (k = 0; k < cols; k++) {
                double xv = x[(size_t)i * cols + k];
                double wv = codi__load_elem(wd, dtype, (size_t)r * cols + k);
                ref += xv * wv; mag += fabs(xv * wv);
            }
            e = fabs(got - ref) / (mag > 0 ? mag : 1);
            if (!(e <= worst)) worst = e != e ? INFINITY : e;
        }
    free(x); free(out); free(work); free(wd);
    return worst;
}

int main(void) {
    static const int shapes[][5] = {   /* n, rows, cols, r0, r1 */
        { 1, 37, 300, 0, 37 }, { 1, 64, 2048, 4, 60 }, { 3, 33, 77, 1, 33 }, { 4, 16, 64, 0, 16 },
        { 7, 45, 513, 0, 45 }, { 13, 100, 700, 32, 96 }, { 63, 41, 100, 3, 41 }, { 33, 10, 2500, 0, 10 }, { 9, 7, 4133, 2, 7 },
        { 64, 96, 256, 0, 96 }, { 300, 70, 260, 6, 70 },
        { 8, 17, 31, 0, 17 }, { 9, 33, 2100, 5, 33 }, { 17, 50, 1, 1, 49 }, { 31, 15, 65, 0, 15 }, { 40, 47, 95, 13, 47 },
        { 100, 64, 33, 0, 64 }, { 200, 600, 300, 7, 600 }, { 257, 40, 70, 0, 40 } };
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
                double e = check_shape(dtype, shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3], shapes[si][4]);
                if (e > worst) worst = e;
            }
            t_result(worst <= tol, paths[p], "%s weights: max error %.2g of sum |x w| over %d shapes (tol %.2g)", dt ? "f32" : "bf16",
                     worst, (int)(sizeof shapes / sizeof shapes[0]), tol);
        }
    }
    return t_summary();
}
