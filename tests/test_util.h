/* Shared by the test programs: counters, checks that print the max error, golden loading.
   Each program prints "ok - name" / "not ok - name: why" / "skip - name: why" lines and
   ends with "N passed, N failed, N skipped". */
#ifndef CODI_TEST_UTIL_H
#define CODI_TEST_UTIL_H
#include <math.h>
#include <stdarg.h>

static int t_passed, t_failed, t_skipped;

static inline void t_result(int ok, const char *name, const char *fmt, ...) {
    va_list ap;
    printf("%s - %s", ok ? "ok" : "not ok", name);
    if (fmt && *fmt) { printf(ok ? " (" : ": "); va_start(ap, fmt); vprintf(fmt, ap); va_end(ap); if (ok) printf(")"); }
    printf("\n");
    if (ok) t_passed++; else t_failed++;
}

static inline void t_skip(const char *name, const char *why) { printf("skip - %s: %s\n", name, why); t_skipped++; }

static inline int t_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}

/* Max |a - b| over n values (NaN counts as infinite). */
static inline double t_max_abs(const float *a, const float *b, size_t n) {
    double m = 0; size_t i;
    for (i = 0; i < n; i++) { double d = fabs((double)a[i] - b[i]); if (!(d <= m)) m = d != d ? INFINITY : d; }
    return m;
}

/* ||a - b|| / ||b|| */
static inline double t_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0; size_t i;
    for (i = 0; i < n; i++) { double d = (double)a[i] - b[i]; num += d * d; den += (double)b[i] * b[i]; }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Compares and reports like llm.c's check_tensor: the first values and the max error. */
static inline int t_check_abs(const char *name, const float *got, const float *ref, size_t n, double tol) {
    double e = t_max_abs(got, ref, n);
    t_result(e <= tol, name, "max |diff| %.3g (tol %.0e; first got %.5f ref %.5f)", e, tol, got[0], ref[0]);
    return e <= tol;
}

static inline int t_check_rel(const char *name, const float *got, const float *ref, size_t n, double tol) {
    double e = t_rel_l2(got, ref, n);
    t_result(e <= tol, name, "rel L2 %.3g (tol %.0e; max |diff| %.3g)", e, tol, t_max_abs(got, ref, n));
    return e <= tol;
}

/* A whole file (NUL-terminated, free() it), or NULL. */
static inline unsigned char *t_slurp(const char *path, size_t *n) { return (unsigned char *)codi_read_text(path, n); }

/* The golden tiny models (head_dim 32), exact (f32) or default (bf16) weights; NULL with a note. */
static inline codi_model *t_load(const char *path, int exact) {
    char err[256];
    codi_load_opts o = codi_load_opts_default();
    codi_model *m;
    o.exact = exact; o.head_dim = 32;
    if (!(m = codi_load(path, &o, err, sizeof err))) printf("# load %s: %s\n", path, err);
    return m;
}

/* Golden file access through the library's own safetensors reader. */
typedef struct { codi__tensors ts; } t_golden;

static inline int t_golden_open(t_golden *g, const char *path) {
    char err[256];
    memset(g, 0, sizeof *g);
    if (codi__read_safetensors(&g->ts, path, 0, err, sizeof err) != 0) { printf("# %s\n", err); return -1; }
    return 0;
}

static inline const void *t_golden_get(t_golden *g, const char *name, size_t *count) {
    const codi__tensor *t = codi__tensors_find(&g->ts, name);
    if (!t) { printf("# golden tensor %s missing\n", name); exit(2); }
    if (count) *count = (size_t)codi__numel(t->ndim, t->shape);
    return t->data;
}

static inline const float *t_gf(t_golden *g, const char *name, size_t *count) { return (const float *)t_golden_get(g, name, count); }
static inline const int32_t *t_gi(t_golden *g, const char *name, size_t *count) { return (const int32_t *)t_golden_get(g, name, count); }

static inline void t_golden_close(t_golden *g) { codi__tensors_free(&g->ts); }

#endif
