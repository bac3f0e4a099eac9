/* bench_gemv: the decode GEMV's read speed beside the machine's read bandwidth, in one process.
   Each round runs, in turn, a STREAM-style read of a 1 GiB f32 buffer (the kernel's dot against
   an L1-resident vector, as `codi bench` measures), the GEMV of the active kernel path, and the
   4-rows-interleaved GEMV (software prefetch 1 KB ahead per row: every row's GEMV before
   2026-12, now rows of more than CODI__GEMV_ROW_MAX columns), each over a bf16 matrix of
   ROWS x COLS (default 131072 x 2048 = 537 MB, lm_head's size), split by rows over the threads as
   a decode step splits it. Prints each round and the medians in GB/s by the wall clock and per
   CPU second (on a shared machine the steadier figure), and each GEMV's share of the stream
   bandwidth of the same round.
     build/bench_gemv [rounds 7] [threads 2] [rows 131072] [cols 2048]
   CODI_KERNEL=name picks the path (as for every program on the library). */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <time.h>

static double bg_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + t.tv_nsec * 1e-9; }
static double bg_cpu(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return (double)t.tv_sec + t.tv_nsec * 1e-9; }


typedef struct { codi__gemv_fn gemv; const codi_matrix *w; const float *x; float *out; const float *buf; double sums[64]; } bg_ctx;

/* Rows in units of 4, as codi__matmul_pool splits a decode product. */
static void bg_gemv_task(void *ctx, int tid, int a, int b) {
    bg_ctx *c = (bg_ctx *)ctx;
    int r0 = a * 4, r1 = b * 4 < c->w->rows ? b * 4 : c->w->rows;
    (void)tid;
    if (r0 < r1) c->gemv(c->out + r0, c->x, NULL, c->w, r0, r1);
}
/* 16 KiB blocks read with the kernel's dot against the first block (in L1). */
static void bg_stream_task(void *ctx, int tid, int a, int b) {
    bg_ctx *c = (bg_ctx *)ctx;
    float (*dot)(const float *, const float *, int) = codi__kernel_active()->dot;
    double s = 0;
    int k;
    for (k = a; k < b; k++) s += dot(c->buf + (size_t)k * 4096, c->buf, 4096);
    c->sums[tid] += s;
}

static int bg_cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double bg_median(double *v, int n) { qsort(v, (size_t)n, sizeof *v, bg_cmp); return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]); }

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 7, threads = argc > 2 ? atoi(argv[2]) : 2;
    int rows = argc > 3 ? atoi(argv[3]) : 131072, cols = argc > 4 ? atoi(argv[4]) : 2048, round, v, nv = 1, i;
    size_t nbuf = (size_t)1 << 28, nw, k;
    codi__pool *pool = NULL;
    codi_matrix w;
    bg_ctx c;
    const char *names[2];
    codi__gemv_fn fns[2];
    double gbs[3][64], cgbs[3][64], share[3][64], ratio[2][64], cratio[2][64], maxdiff = 0;
    uint16_t *wd;
    void *wv = NULL, *bv = NULL;
    float *x, *ref;
    if (rounds < 1 || rounds > 64 || threads < 1 || threads > 64 || rows < 4 || cols < 1) {
        fprintf(stderr, "usage: bench_gemv [rounds 1..64] [threads 1..64] [rows >= 4] [cols >= 1]\n");
        return 2;
    }
    nw = (size_t)rows * (size_t)cols;
    memset(&c, 0, sizeof c);
    if (posix_memalign(&wv, 64, nw * 2) || posix_memalign(&bv, 64, nbuf * sizeof(float))) { fprintf(stderr, "bench_gemv: out of memory\n"); return 1; }
    wd = (uint16_t *)wv; c.buf = (const float *)bv;
    x = (float *)malloc((size_t)cols * sizeof(float));
    c.out = (float *)malloc((size_t)rows * sizeof(float));
    ref = (float *)malloc((size_t)rows * sizeof(float));
    if (!wd || !c.buf || !x || !c.out || !ref) { fprintf(stderr, "bench_gemv: out of memory\n"); return 1; }
    for (k = 0; k < nw; k++) wd[k] = codi__f32_to_bf16((float)((k * 2654435761u) % 2001) * 1e-3f - 1.0f);
    for (k = 0; k < nbuf; k++) ((float *)bv)[k] = 1.0f / (float)(1 + (k & 1023));
    for (i = 0; i < cols; i++) x[i] = (float)((i * 40503u) % 997) * 1e-3f - 0.5f;
    memset(&w, 0, sizeof w);
    w.data = wd; w.rows = rows; w.cols = cols; w.dtype = CODI_BF16;
    c.w = &w; c.x = x;
#ifdef CODI_THREADS
    if (threads > 1) pool = codi__pool_new(threads);
#endif
    names[0] = codi_kernel_name(); fns[0] = codi__kernel_active()->bf16_pairs ? codi__kernel_active()->gemv_f32w : codi__kernel_active()->gemv;
#ifdef CODI__X86
    if (!strcmp(names[0], "avx2")) { names[1] = "4-row avx2"; fns[1] = codi__gemv4_avx2; nv = 2; }
    else if (strcmp(names[0], "scalar")) { names[1] = "4-row avx512"; fns[1] = codi__gemv4_avx512; nv = 2; }
#endif
    for (v = 0; v < nv; v++) {             /* the paths agree with the scalar reference */
        c.gemv = v == 0 ? codi__gemv_scalar : fns[v];
        CODI__PARALLEL(pool, bg_gemv_task, &c, (rows + 3) / 4);
        if (v == 0) memcpy(ref, c.out, (size_t)rows * sizeof(float));
        c.gemv = fns[v];
        CODI__PARALLEL(pool, bg_gemv_task, &c, (rows + 3) / 4);
        for (i = 0; i < rows; i++) { double d = fabs((double)c.out[i] - ref[i]) / (1 + fabs((double)ref[i])); if (d > maxdiff) maxdiff = d; }
    }
    printf("path %s, %d threads, matrix %d x %d bf16 (%.0f MB), largest relative difference to scalar %.1e\n",
           names[0], pool ? threads : 1, rows, cols, nw * 2 / 1e6, maxdiff);
    printf("GB/s by the wall clock (CPU share) and per CPU second (GB/s / share), then each GEMV's ratio to the stream's (wall, CPU)\n");
    printf("round  stream             %-36s %s\n", names[0], nv > 1 ? names[1] : "");
    for (round = 0; round < rounds; round++) {
        double t0 = bg_now(), c0 = bg_cpu(), dt;
        CODI__PARALLEL(pool, bg_stream_task, &c, (int)(nbuf / 4096));
        dt = bg_now() - t0;
        gbs[0][round] = nbuf * sizeof(float) / dt / 1e9; share[0][round] = (bg_cpu() - c0) / dt / (pool ? threads : 1);
        cgbs[0][round] = gbs[0][round] / share[0][round];
        for (v = 0; v < nv; v++) {
            int rep, reps = 3;
            c.gemv = fns[v];
            t0 = bg_now(); c0 = bg_cpu();
            for (rep = 0; rep < reps; rep++) CODI__PARALLEL(pool, bg_gemv_task, &c, (rows + 3) / 4);
            dt = bg_now() - t0;
            gbs[1 + v][round] = reps * nw * 2 / dt / 1e9; share[1 + v][round] = (bg_cpu() - c0) / dt / (pool ? threads : 1);
            ratio[v][round] = gbs[1 + v][round] / gbs[0][round];
            cgbs[1 + v][round] = gbs[1 + v][round] / share[1 + v][round];
            cratio[v][round] = cgbs[1 + v][round] / cgbs[0][round];
        }
        printf("%5d  %6.1f (%.2f) %6.1f", round, gbs[0][round], share[0][round], cgbs[0][round]);
        for (v = 0; v < nv; v++)
            printf("  %6.1f (%.2f) %6.1f %4.0f%% %4.0f%%", gbs[1 + v][round], share[1 + v][round], cgbs[1 + v][round], 100 * ratio[v][round], 100 * cratio[v][round]);
        printf("\n");
    }
    printf("median stream %.1f GB/s (%.1f per CPU)", bg_median(gbs[0], rounds), bg_median(cgbs[0], rounds));
    for (v = 0; v < nv; v++) {
        double m = bg_median(ratio[v], rounds), cm = bg_median(cratio[v], rounds);
        printf("\n  %-12s %.1f GB/s (%.1f per CPU): %.0f%% of stream (range %.0f-%.0f%%), per CPU %.0f%% (range %.0f-%.0f%%)", names[v],
               bg_median(gbs[1 + v], rounds), bg_median(cgbs[1 + v], rounds), 100 * m, 100 * ratio[v][0], 100 * ratio[v][rounds - 1],
               100 * cm, 100 * cratio[v][0], 100 * cratio[v][rounds - 1]);
    }
    printf("\n");
#ifdef CODI_THREADS
    codi__pool_free(pool);
#endif
    free(wd); free((void *)c.buf); free(x); free(c.out); free(ref);
    return c.sums[0] == 12345.0;
}
