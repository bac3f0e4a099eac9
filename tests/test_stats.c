/* The statistics themselves (>>stats): every function against scipy / statsmodels at fixed points
   (tests/data/stats_reference.txt, written by tools/stats_reference.py; the paired-difference
   interval from Bonett and Price's published formula), then by simulation: Holm's family-wise
   error and Benjamini-Hochberg's false discovery share on null families, McNemar's power on a
   planted effect against its exact value, and the coverage of the t and bootstrap intervals. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define REL_TOL 1e-9     /* relative tolerance against the reference values */
#define ABS_TOL 1e-12    /* absolute floor, for references that are 0 or rounding noise around it */

static int close_to(double got, double want) {
    if (want != want) return got != got;
    if (isinf(want)) return got == want;
    return fabs(got - want) <= ABS_TOL + REL_TOL * fabs(want);
}

/* One reference line: kind, inputs, ':' then outputs. */
typedef struct { char kind[16]; double in[1100], out[64]; int n_in, n_out; } ref_case;

static int parse_case(char *line, ref_case *c) {
    char *p = line, *end;
    int used = 0, *n = &c->n_in;
    double *v = c->in;
    c->n_in = c->n_out = 0;
    if (*line == '#' || sscanf(line, "%15s%n", c->kind, &used) != 1) return -1;
    for (p += used; *p && *p != '\n';) {
        while (*p == ' ') p++;
        if (*p == ':') { n = &c->n_out; v = c->out; p++; continue; }
        if (*p == '\n' || !*p) break;
        if (*n == (v == c->in ? 1100 : 64)) return -1;
        v[(*n)++] = strtod(p, &end);
        if (end == p) return -1;
        p = end;
    }
    return c->n_out ? 0 : -1;
}

typedef struct { int cases, bad; double worst; char first[256]; } kind_tally;

static void tally(kind_tally *t, const ref_case *c, const double *got, int n) {
    int i;
    t->cases++;
    for (i = 0; i < n; i++) {
        double want = c->out[i], e = fabs(got[i] - want) / (ABS_TOL / REL_TOL + fabs(want));
        if (close_to(got[i], want)) { if (e == e && e > t->worst) t->worst = e; continue; }
        if (!t->bad++) snprintf(t->first, sizeof t->first, "%s %g %g ...: output %d = %.17g, reference %.17g", c->kind,
                                c->in[0], c->n_in > 1 ? c->in[1] : 0, i, got[i], want);
    }
}

static void report(const char *name, const kind_tally *t) {
    if (!t->cases) { t_result(0, name, "no reference cases"); return; }
    if (t->bad) t_result(0, name, "%d of %d cases off: %s", t->bad, t->cases, t->first);
    else t_result(1, name, "%d cases, worst relative error %.2g (tol %.0e rel + %.0e abs)", t->cases, t->worst, REL_TOL, ABS_TOL);
}

static double power_ref[3][5];   /* n, pb, pc, alpha, power of the reference file's power lines */
static int n_power_ref;

static void test_reference(const char *path) {
    size_t len;
    char *text = (char *)t_slurp(path, &len), *line;
    kind_tally wil = {0, 0, 0, ""}, mcn = wil, pdf = wil, hol = wil, bh = wil, nq = wil, tq = wil, tm = wil;
    int bad_lines = 0;
    if (!text) { t_result(0, "reference file", "cannot read %s", path); return; }
    for (line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        static ref_case c;
        double got[64];
        if (*line == '#' || *line == '\n') continue;
        if (parse_case(line, &c)) { bad_lines++; continue; }
        if (!strcmp(c.kind, "wilson")) {
            codi_wilson_interval((int)c.in[0], (int)c.in[1], c.in[2], &got[0], &got[1]);
            tally(&wil, &c, got, 2);
        } else if (!strcmp(c.kind, "mcnemar")) {
            got[0] = codi_mcnemar_exact((long)c.in[0], (long)c.in[1]);
            tally(&mcn, &c, got, 1);
        } else if (!strcmp(c.kind, "pdiff")) {
            codi_paired_diff_interval((long)c.in[0], (long)c.in[1], (long)c.in[2], &got[0], &got[1]);
            tally(&pdf, &c, got, 2);
        } else if (!strcmp(c.kind, "holm") || !strcmp(c.kind, "bh")) {
            int m = (int)c.in[0], rc = c.kind[0] == 'h' ? codi_holm(c.in + 1, m, got) : codi_bh(c.in + 1, m, got);
            if (rc) got[0] = -1;
            tally(c.kind[0] == 'h' ? &hol : &bh, &c, got, m);
        } else if (!strcmp(c.kind, "nq")) {
            got[0] = codi_normal_quantile(c.in[0]);
            tally(&nq, &c, got, 1);
        } else if (!strcmp(c.kind, "tq")) {
            got[0] = codi_t_quantile(c.in[0], c.in[1]);
            tally(&tq, &c, got, 1);
        } else if (!strcmp(c.kind, "tmean")) {
            codi_mean_ci ci;
            if (codi_mean_interval(c.in + 1, (long)c.in[0], &ci)) ci.mean = -1;
            got[0] = ci.mean; got[1] = ci.se; got[2] = ci.lo; got[3] = ci.hi;
            tally(&tm, &c, got, 4);
        } else if (!strcmp(c.kind, "power") && n_power_ref < 3) {
            memcpy(power_ref[n_power_ref], c.in, 4 * sizeof(double));
            power_ref[n_power_ref++][4] = c.out[0];
        } else bad_lines++;
    }
    free(text);
    t_result(!bad_lines, "reference file parses", "%d unreadable lines", bad_lines);
    report("wilson vs statsmodels proportion_confint", &wil);
    report("mcnemar exact vs statsmodels mcnemar(exact=True)", &mcn);
    report("paired difference interval vs Bonett-Price formula", &pdf);
    report("holm vs statsmodels multipletests", &hol);
    report("bh vs statsmodels multipletests", &bh);
    report("normal quantile vs scipy norm.ppf", &nq);
    report("t quantile vs mpmath (scipy t.ppf to 1e-8)", &tq);
    report("t mean interval vs scipy t.interval", &tm);
}

/* Edge cases the reference file cannot hold: domain errors and the documented conventions. */
static void test_edges(void) {
    double x[3] = { 1, NAN, 2 }, p[3] = { 0.2, 0.1, 0.3 }, lo, hi;
    codi_mean_ci ci;
    t_result(codi_mcnemar_exact(-1, 3) != codi_mcnemar_exact(-1, 3), "mcnemar of a negative count is NaN", NULL);
    t_result(isnan(codi_t_quantile(0, 3)) && isnan(codi_t_quantile(1, 3)) && isnan(codi_t_quantile(0.5, 0)) &&
             isnan(codi_t_quantile(NAN, 3)), "t quantile outside (0, 1) or df <= 0 is NaN", NULL);
    t_result(codi_normal_quantile(0) == -INFINITY && codi_normal_quantile(1) == INFINITY && isnan(codi_normal_quantile(2)),
             "normal quantile at 0, 1 and outside", NULL);
    t_result(codi_mean_interval(x, 3, &ci) == -1 && isnan(ci.mean) && isnan(ci.lo), "mean interval refuses NaN entries", NULL);
    t_result(codi_bootstrap_mean(x, 3, 100, 1, &ci) == -1 && isnan(ci.mean), "bootstrap refuses NaN entries", NULL);
    t_result(codi_mean_interval(x, 1, &ci) == 0 && ci.mean == 1 && isnan(ci.se) && isnan(ci.lo) && isnan(ci.hi),
             "mean interval of one value: mean, NaN bounds", NULL);
    t_result(codi_mean_interval(x, 0, &ci) == 0 && isnan(ci.mean) && ci.n == 0, "mean interval of no values: NaN", NULL);
    codi_wilson_interval(0, 0, 1.96, &lo, &hi);
    t_result(lo == 0 && hi == 1, "wilson n = 0 is [0, 1]", NULL);
    t_result(codi_holm(p, 0, p) == 0 && codi_bh(p, 0, p) == 0 && p[0] == 0.2, "holm / bh of an empty family", NULL);
    t_result(codi_holm(p, 3, p) == 0 && close_to(p[0], 0.4) && close_to(p[1], 0.3) && close_to(p[2], 0.4),
             "holm in place (out == p)", "%g %g %g", p[0], p[1], p[2]);
}

/* Binomial(n, prob) draw by n Bernoulli trials. */
static long draw_binom(codi_rng *r, long n, double prob) {
    long k = 0, i;
    for (i = 0; i < n; i++) k += codi_rng_uniform(r) < prob;
    return k;
}

/* McNemar p of one cell of `pairs` paired questions: each pair discordant with p_disc, the first
   condition's win with share `share` among them. */
static double cell_p(codi_rng *r, int pairs, double p_disc, double share) {
    long d = draw_binom(r, pairs, p_disc), b = draw_binom(r, d, share);
    return codi_mcnemar_exact(b, d - b);
}

#define FAMILIES 600
#define CELLS 50
#define PAIRS 100

/* Null families (no cell has an effect): Holm's family-wise error and BH's false discovery share
   must stay at or below 0.05. McNemar's exact test is conservative, so the shares sit well below;
   the bound used is the upper end of the Wilson / t 95% interval of the simulated share (the
   Monte-Carlo slack). Uncorrected, the same families reject far more often (the test has teeth). */
static void test_null_families(void) {
    codi_rng r;
    double p[CELLS], adj[CELLS], *fdp = (double *)malloc(FAMILIES * sizeof(double)), lo, hi;
    int f, i, any_holm = 0, any_raw = 0, any_unif = 0;
    codi_mean_ci ci;
    codi_rng_seed(&r, 20240601);
    for (f = 0; f < FAMILIES; f++) {
        int rejected = 0, raw = 0, holm_any = 0;
        for (i = 0; i < CELLS; i++) { p[i] = cell_p(&r, PAIRS, 0.3, 0.5); raw |= p[i] <= 0.05; }
        if (f % 7 == 3) p[f % CELLS] = NAN;       /* a test not made now and then */
        codi_holm(p, CELLS, adj);
        for (i = 0; i < CELLS; i++) holm_any |= adj[i] <= 0.05;
        codi_bh(p, CELLS, adj);
        for (i = 0; i < CELLS; i++) rejected += adj[i] <= 0.05;
        fdp[f] = rejected ? 1.0 : 0.0;            /* every rejection is false under the null */
        any_holm += holm_any; any_raw += raw;
        for (i = 0; i < CELLS; i++) p[i] = codi_rng_uniform(&r);   /* exactly uniform p: Holm is sharp here */
        codi_holm(p, CELLS, adj);
        for (holm_any = i = 0; i < CELLS; i++) holm_any |= adj[i] <= 0.05;
        any_unif += holm_any;
    }
    codi_wilson_interval(any_holm, FAMILIES, 1.96, &lo, &hi);
    t_result(hi <= 0.05, "holm: family-wise error on null McNemar families <= 0.05", "%d of %d families, Wilson [%.4f, %.4f]",
             any_holm, FAMILIES, lo, hi);
    codi_wilson_interval(any_unif, FAMILIES, 1.96, &lo, &hi);
    t_result(lo <= 0.05 && hi >= 0.01, "holm: family-wise error on uniform null p not above 0.05",
             "%d of %d, Wilson [%.4f, %.4f]; exact 1 - 0.999^50 = 0.0488", any_unif, FAMILIES, lo, hi);
    codi_wilson_interval(any_raw, FAMILIES, 1.96, &lo, &hi);
    t_result(lo > 0.5, "uncorrected: the same families reject often (the check can fail)", "%d of %d, Wilson [%.4f, %.4f]",
             any_raw, FAMILIES, lo, hi);
    codi_mean_interval(fdp, FAMILIES, &ci);
    t_result(ci.hi <= 0.05, "bh: mean false discovery share on null families <= q = 0.05", "mean %.4f, 95%% [%.4f, %.4f]",
             ci.mean, ci.lo, ci.hi);
    free(fdp);
}

/* BH with true effects among the cells: the realised false discovery share, averaged over families,
   stays <= q (BH controls it at q m0 / m = 0.04 here), while Holm finds fewer effects than BH. */
static void test_bh_mixed(void) {
    codi_rng r;
    double p[CELLS], adj[CELLS], *fdp = (double *)malloc(FAMILIES * sizeof(double));
    long found_bh = 0, found_holm = 0;
    int f, i;
    codi_mean_ci ci;
    codi_rng_seed(&r, 77);
    for (f = 0; f < FAMILIES; f++) {
        int rejected = 0, false_rej = 0;
        for (i = 0; i < CELLS; i++) p[i] = cell_p(&r, PAIRS, 0.3, i < 10 ? 0.2 : 0.5);   /* cells 0..9: real effects */
        codi_bh(p, CELLS, adj);
        for (i = 0; i < CELLS; i++) if (adj[i] <= 0.05) { rejected++; false_rej += i >= 10; found_bh += i < 10; }
        fdp[f] = rejected ? (double)false_rej / rejected : 0;
        codi_holm(p, CELLS, adj);
        for (i = 0; i < 10; i++) found_holm += adj[i] <= 0.05;
    }
    codi_mean_interval(fdp, FAMILIES, &ci);
    t_result(ci.hi <= 0.05, "bh: mean false discovery share with 10 of 50 real effects <= q = 0.05",
             "mean FDP %.4f, 95%% [%.4f, %.4f]", ci.mean, ci.lo, ci.hi);
    t_result(found_bh > found_holm && found_holm > 0, "bh finds more real effects than holm", "%ld vs %ld of %d",
             found_bh, found_holm, FAMILIES * 10);
    free(fdp);
}

/* Exact power of McNemar's test at alpha: the sum over discordant counts d ~ Bin(n, pb + pc) and
   b | d ~ Bin(d, pb / (pb + pc)) of the rejection probability. */
static double mcnemar_power(int n, double pb, double pc, double alpha) {
    double total = 0, pd = pb + pc, share = pb / pd;
    int d, b;
    for (d = 0; d <= n; d++) {
        double lpd = lgamma(n + 1.0) - lgamma(d + 1.0) - lgamma(n - d + 1.0) + d * log(pd) + (n - d) * log1p(-pd);
        for (b = 0; b <= d; b++)
            if (codi_mcnemar_exact(b, d - b) <= alpha)
                total += exp(lpd + lgamma(d + 1.0) - lgamma(b + 1.0) - lgamma(d - b + 1.0) + b * log(share) + (d - b) * log1p(-share));
    }
    return total;
}

/* A planted effect of known size: the exact power agrees with scipy's, and the simulated
   rejection rate matches it within its Wilson interval. */
static void test_power(void) {
    int i, k;
    if (n_power_ref != 3) { t_result(0, "mcnemar power references", "%d of 3 in the file", n_power_ref); return; }
    for (k = 0; k < 3; k++) {
        int n = (int)power_ref[k][0], trials = 2000, hits = 0;
        double pb = power_ref[k][1], pc = power_ref[k][2], alpha = power_ref[k][3], exact = mcnemar_power(n, pb, pc, alpha), lo, hi;
        char name[128];
        codi_rng r;
        codi_rng_seed(&r, 1000 + (uint64_t)k);
        snprintf(name, sizeof name, "mcnemar power n %d, P(b) %.2f, P(c) %.2f: exact sum vs scipy", n, pb, pc);
        t_result(fabs(exact - power_ref[k][4]) <= 1e-9, name, "%.10f vs %.10f", exact, power_ref[k][4]);
        for (i = 0; i < trials; i++) {            /* each pair: b-discordant with pb, c-discordant with pc */
            long b = 0, c = 0, j;
            for (j = 0; j < n; j++) { double u = codi_rng_uniform(&r); b += u < pb; c += u >= pb && u < pb + pc; }
            hits += codi_mcnemar_exact(b, c) <= alpha;
        }
        codi_wilson_interval(hits, trials, 1.96, &lo, &hi);
        snprintf(name, sizeof name, "mcnemar power n %d, P(b) %.2f, P(c) %.2f: simulated", n, pb, pc);
        t_result(lo <= exact && exact <= hi, name, "%d of %d, Wilson [%.4f, %.4f], exact %.4f", hits, trials, lo, hi, exact);
    }
}

/* Coverage of the 95% intervals on simulated data: the t interval on normal data is exact (95%);
   the percentile bootstrap on skewed (exponential, n = 40) data is known to undercover a little
   (about 93%): its coverage must lie within 0.92..0.97 (Wilson interval of the simulated share
   overlapping it), and far from what a wrong quantile would give. */
static void test_coverage(void) {
    codi_rng r;
    enum { SETS = 500, N = 40 };
    double x[N], lo, hi;
    int s, i, cover_t = 0, cover_b = 0;
    codi_rng_seed(&r, 4242);
    for (s = 0; s < SETS; s++) {
        codi_mean_ci ci;
        for (i = 0; i < N; i++) x[i] = 3.0 + 2.0 * codi_rng_normal(&r);
        codi_mean_interval(x, N, &ci);
        cover_t += ci.lo <= 3.0 && 3.0 <= ci.hi;
        for (i = 0; i < N; i++) x[i] = -log1p(-codi_rng_uniform(&r));    /* exponential, mean 1 */
        codi_bootstrap_mean(x, N, 1000, (uint64_t)s, &ci);
        cover_b += ci.lo <= 1.0 && 1.0 <= ci.hi;
    }
    codi_wilson_interval(cover_t, SETS, 1.96, &lo, &hi);
    t_result(lo <= 0.95 && 0.95 <= hi, "t interval covers the mean of normal data at 95%", "%d of %d, Wilson [%.4f, %.4f]",
             cover_t, SETS, lo, hi);
    codi_wilson_interval(cover_b, SETS, 1.96, &lo, &hi);
    t_result(hi >= 0.92 && lo <= 0.97, "bootstrap interval covers the mean of skewed data at about 95%",
             "%d of %d, Wilson [%.4f, %.4f] vs 0.92..0.97", cover_b, SETS, lo, hi);
}

/* The bootstrap is deterministic for a seed and reorders nothing it is given. */
static void test_bootstrap_seed(void) {
    double x[6] = { 5, 1, 4, 2, 8, 3 }, y[6];
    codi_mean_ci a, b, c;
    memcpy(y, x, sizeof x);
    codi_bootstrap_mean(x, 6, 500, 9, &a);
    codi_bootstrap_mean(x, 6, 500, 9, &b);
    codi_bootstrap_mean(x, 6, 500, 10, &c);
    t_result(a.lo == b.lo && a.hi == b.hi && !memcmp(x, y, sizeof x) && (a.lo != c.lo || a.hi != c.hi) &&
             a.lo >= 1 && a.hi <= 8 && a.lo < a.mean && a.mean < a.hi && close_to(a.mean, 23.0 / 6),
             "bootstrap: same seed same interval, another seed another, input untouched", "[%g, %g]", a.lo, a.hi);
}

int main(int argc, char **argv) {
    test_reference(argc > 1 ? argv[1] : "tests/data/stats_reference.txt");
    test_edges();
    test_null_families();
    test_bh_mixed();
    test_power();
    test_coverage();
    test_bootstrap_seed();
    return t_summary();
}
