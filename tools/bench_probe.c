/* Times probe and PCA fitting on synthetic activations of the real shape (D = 2048 by
   default), for projecting the cost of `codi probe train` / `codi pca` on a full dataset.
     build/bench_probe [D] [rows_probe] [rows_pca] [threads]
   Prints one line per stage with wall-clock and process CPU seconds (on a shared machine the
   CPU seconds of a 1-thread run are the compute cost). */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static double cpu(void) { return (double)clock() / CLOCKS_PER_SEC; }

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float rnd(void) {   /* uniform(-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (2.0 / 9007199254740992.0) - 1);
}

int main(int argc, char **argv) {
    int D = argc > 1 ? atoi(argv[1]) : 2048, n = argc > 2 ? atoi(argv[2]) : 5978, np = argc > 3 ? atoi(argv[3]) : 52311, nt = argc > 4 ? atoi(argv[4]) : 1;
    int i, j, rows = n > np ? n : np;
    float *x = (float *)malloc((size_t)rows * D * sizeof(float)), *dir = (float *)malloc((size_t)D * sizeof(float));
    int32_t *y = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    char err[256];
    double t0, t1, t2, c0, c1, c2;
    codi_probe *p;
    codi_pca_acc *a;
    codi_pca *pc;
    codi_probe_opts po = codi_probe_opts_default();
    if (!x || !dir || !y || D < 2 || n < 2 || np < 2) { fprintf(stderr, "usage: bench_probe [D] [rows_probe] [rows_pca] [threads]\n"); return 2; }
    for (j = 0; j < D; j++) dir[j] = rnd();
    for (i = 0; i < rows; i++) {
        double s = 0;
        for (j = 0; j < D; j++) { x[(size_t)i * D + j] = rnd() + 0.1f * j / D; s += x[(size_t)i * D + j] * dir[j]; }
        if (i < n) y[i] = s + 2 * rnd() > 0;
    }
    po.n_threads = nt;
    t0 = now(); c0 = cpu();
    p = codi_probe_train(x, y, n, D, 2, &po, err, sizeof err);
    t1 = now(); c1 = cpu();
    if (!p) { fprintf(stderr, "%s\n", err); return 1; }
    printf("probe  binary  %d x %d: %.2f s wall, %.2f s CPU (%d L-BFGS iterations, converged %d)\n", n, D, t1 - t0, c1 - c0, p->iterations, p->converged);
    codi_probe_free(p);
    for (i = 0; i < n; i++) y[i] = y[i] + (x[(size_t)i * D + 1] > 0.5f);   /* 3 classes, partly separable */
    t0 = now(); c0 = cpu();
    p = codi_probe_train(x, y, n, D, 3, &po, err, sizeof err);
    t1 = now(); c1 = cpu();
    if (!p) { fprintf(stderr, "%s\n", err); return 1; }
    printf("probe  3-class %d x %d: %.2f s wall, %.2f s CPU (%d L-BFGS iterations, converged %d)\n", n, D, t1 - t0, c1 - c0, p->iterations, p->converged);
    codi_probe_free(p);
    t0 = now(); c0 = cpu();
    a = codi_pca_acc_new(D, nt, err, sizeof err);
    if (!a || codi_pca_acc_add(a, x, np, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    t1 = now(); c1 = cpu();
    pc = codi_pca_fit(a, 16, err, sizeof err);
    t2 = now(); c2 = cpu();
    if (!pc) { fprintf(stderr, "%s\n", err); return 1; }
    printf("pca    covariance %d x %d: %.2f s wall, %.2f s CPU; eigensolver %d x %d: %.2f s wall, %.2f s CPU (PC1 explains %.4f; %d thread(s))\n",
           np, D, t1 - t0, c1 - c0, D, D, t2 - t1, c2 - c1, pc->explained[0], nt);
    codi_pca_free(pc); codi_pca_acc_free(a);
    free(x); free(y); free(dir);
    return 0;
}
