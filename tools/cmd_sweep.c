/* codi sweep: the Latent Reasoning Sprint's steering protocols as an experiment that reports what
   survives: every (condition, question) result kept, a norm-matched random control for every
   intervention, paired tests against the baseline and the control, Holm / Benjamini-Hochberg
   corrections per family, and an optional held-out confirmation of the cells selected on the rest.

     1. mean vectors over --means-limit questions (as codi vectors: final-normed hidden state at each
        latent slot; K / V means over the "addition" questions when lines have an "op");
     2. embedding cells emb/lL/aAbB/cC/diff: L latent steps, then z_(L+1) = prj(h) + C diff(A, B) fed,
        eot and the answer; baseline base/lL/emb (z_(L+1) fed unchanged = L + 1 plain latents);
     3. KV cells kv/lL/aAbB/cC/diff: L latent steps, K and V at latent L's slot += C (mean[B] -
        mean[A]) in the --layers, eot and the answer; baseline base/lL/kv (L latents, then eot);
     4. noise cells noise/lL/self/sK (z_(L+1) := Gaussian with its own mean and std) and
        noise/lL/dim/sK (z_(L+1) := per-dimension mean + std g over the means questions);
        baseline base/lL/emb;
     5. custom cells custom/NAME (--steer SPEC over a whole run); baseline base/run.
   Controls (.../random, .../random2, ...): the cell's vectors replaced by Gaussian directions of the
   same norm per row (codi_steer_random_like: embedding per vector, KV per layer and kv head with keys
   and values separately), drawn once per condition or per question (--random-draw).

   Execution: through the batched runner (codi_batch_*): --batch branches advance together, one pass
   over the weights per step, on all --threads (--batch 1: one runner of one branch per thread, codi_run's
   results bit for bit). Per question, the prompt and latents run once (a run of the batch) and the state
   after each L that branches start from (the prefix) is kept; its branches run from copies of it, and
   the branches of several questions share the batch so that it stays full (at most 2 max(N, batch)
   prefix states live per runner). Cells with coefficient 0 change no bit (alpha 0): one such branch
   per (L, family) is run through the hooks and stands for all of them. Results go to DIR/results.jsonl
   (first line: the settings; one line per (condition, question), a question's lines written together
   when its last branch ends; a run of the same command resumes), and the summary is computed from
   those lines only (also by --merge).
   Part of the unity build of tools/codi.c (prefix sweep_). */

#include <ctype.h>
#include <stdarg.h>
#include "svg.h"

enum { SWEEP_FAM_BASE, SWEEP_FAM_EMB, SWEEP_FAM_KV, SWEEP_FAM_NOISE, SWEEP_FAM_CUSTOM, SWEEP_NFAM };
static const char *const sweep_fam_names[SWEEP_NFAM] = { "baseline", "embedding", "kv", "noise", "custom" };
enum { SWEEP_BASELINE, SWEEP_CELL, SWEEP_CONTROL };
static const char *const sweep_role_names[3] = { "baseline", "cell", "control" };
enum { SWEEP_FEED, SWEEP_KV, SWEEP_RUN };   /* branch kinds: feed z_(L+1) (edited), edit the cache after L, a whole run */
#define SWEEP_ALPHA 0.05
#define SWEEP_Z95 1.959963984540054

typedef struct {
    char name[160];
    int family, role, kind, l, draw;        /* draw: the control's number (1, 2, ...); 0 otherwise */
    int a, b, noise_dim, zero;              /* pair; noise per dimension; emb / kv with coefficient 0 */
    double coeff;
    int base, control, cell;                /* linked conditions (-1 none): baseline, first control, a control's cell */
    codi_steer *steer;                      /* the edits; NULL: plain, or a control drawn per question */
} sweep_cond;

typedef struct { int line, qindex; double gold; int has_gold; int32_t *ids; int n_ids; } sweep_question;

/* --- condition names: the single source of what a condition is ---------------------------- */

static int sweep_parse_l(const char *s, int *l) {
    char *end;
    long v;
    if (s[0] != 'l' || !isdigit((unsigned char)s[1])) return 0;
    v = strtol(s + 1, &end, 10);
    if (*end || v < 1 || v > 1000) return 0;
    *l = (int)v;
    return 1;
}

/* "diff" (cell_word) -> a cell; "random" / "randomK" -> control K. 0, or -1. */
static int sweep_parse_role(const char *s, const char *cell_word, sweep_cond *c) {
    if (cell_word && !strcmp(s, cell_word)) { c->role = SWEEP_CELL; return 0; }
    if (strncmp(s, "random", 6)) return -1;
    c->role = SWEEP_CONTROL; c->draw = 1;
    if (s[6]) {
        char *end;
        long k = strtol(s + 6, &end, 10);
        if (*end || k < 2 || k > 1000) return -1;
        c->draw = (int)k;
    }
    return 0;
}

/* Fills c's fields from c->name; 0, or -1 for a name of no known form. */
static int sweep_parse_name(sweep_cond *c) {
    char buf[160], *t[8], *p;
    int n = 0;
    snprintf(buf, sizeof buf, "%s", c->name);
    for (p = strtok(buf, "/"); p && n < 8; p = strtok(NULL, "/")) t[n++] = p;
    c->base = c->control = c->cell = -1; c->l = c->draw = c->a = c->b = c->noise_dim = c->zero = 0; c->coeff = 0; c->role = SWEEP_CELL;
    if (n == 0) return -1;
    if (!strcmp(t[0], "base")) {
        c->family = SWEEP_FAM_BASE; c->role = SWEEP_BASELINE;
        if (n == 2 && !strcmp(t[1], "run")) { c->kind = SWEEP_RUN; return 0; }
        if (n == 3 && sweep_parse_l(t[1], &c->l) && (!strcmp(t[2], "emb") || !strcmp(t[2], "kv"))) { c->kind = t[2][0] == 'e' ? SWEEP_FEED : SWEEP_KV; return 0; }
        return -1;
    }
    if (!strcmp(t[0], "emb") || !strcmp(t[0], "kv")) {
        char *end, tail;
        c->family = t[0][0] == 'e' ? SWEEP_FAM_EMB : SWEEP_FAM_KV; c->kind = t[0][0] == 'e' ? SWEEP_FEED : SWEEP_KV;
        if (n != 5 || !sweep_parse_l(t[1], &c->l) || sscanf(t[2], "a%db%d%c", &c->a, &c->b, &tail) != 2 || t[3][0] != 'c') return -1;
        c->coeff = strtod(t[3] + 1, &end);
        if (end == t[3] + 1 || *end || !(c->coeff - c->coeff == 0)) return -1;
        c->zero = c->coeff == 0;
        return sweep_parse_role(t[4], "diff", c);
    }
    if (!strcmp(t[0], "noise")) {
        c->family = SWEEP_FAM_NOISE; c->kind = SWEEP_FEED;
        if ((n != 4 && n != 5) || !sweep_parse_l(t[1], &c->l) || (strcmp(t[2], "self") && strcmp(t[2], "dim")) || t[3][0] != 's') return -1;
        c->noise_dim = t[2][0] == 'd';
        return n == 5 ? sweep_parse_role(t[4], NULL, c) : 0;
    }
    if (!strcmp(t[0], "custom")) {
        c->family = SWEEP_FAM_CUSTOM; c->kind = SWEEP_RUN;
        if (n != 2 && n != 3) return -1;
        return n == 3 ? sweep_parse_role(t[2], NULL, c) : 0;
    }
    return -1;
}

typedef struct { const sweep_cond *c; int *order; int n; } sweep_names;   /* names sorted, for lookups */

static const sweep_cond *sweep_sort_base;
static int sweep_cmp_name(const void *x, const void *y) { return strcmp(sweep_sort_base[*(const int *)x].name, sweep_sort_base[*(const int *)y].name); }

static int sweep_names_init(sweep_names *nm, const sweep_cond *c, int n) {
    int i;
    nm->c = c; nm->n = n;
    if (n < 0 || !(nm->order = (int *)malloc(sizeof(int) * (size_t)(n > 0 ? n : 1)))) return -1;
    for (i = 0; i < n; i++) nm->order[i] = i;
    sweep_sort_base = c;
    qsort(nm->order, (size_t)n, sizeof(int), sweep_cmp_name);
    return 0;
}

static int sweep_find(const sweep_names *nm, const char *name) {
    int lo = 0, hi = nm->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, r = strcmp(nm->c[nm->order[mid]].name, name);
        if (!r) return nm->order[mid];
        if (r < 0) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

/* Parses every name and links baselines, first controls and cells; 0, or -1 after a message. */
static int sweep_link(sweep_cond *c, int n, sweep_names *nm) {
    int i;
    for (i = 0; i < n; i++)
        if (sweep_parse_name(&c[i])) { fprintf(stderr, "codi sweep: condition \"%s\": not a name of the sweep's forms\n", c[i].name); return -1; }
    if (sweep_names_init(nm, c, n)) return -1;
    for (i = 1; i < n; i++)
        if (!strcmp(c[nm->order[i]].name, c[nm->order[i - 1]].name)) { fprintf(stderr, "codi sweep: condition \"%s\" twice\n", c[nm->order[i]].name); return -1; }
    for (i = 0; i < n; i++) {
        char want[200];
        const char *slash = strrchr(c[i].name, '/');
        int stem = slash ? (int)(slash - c[i].name) : (int)strlen(c[i].name);
        if (c[i].family == SWEEP_FAM_BASE) continue;
        if (c[i].family == SWEEP_FAM_CUSTOM) snprintf(want, sizeof want, "base/run");
        else snprintf(want, sizeof want, "base/l%d/%s", c[i].l, c[i].family == SWEEP_FAM_KV ? "kv" : "emb");
        if ((c[i].base = sweep_find(nm, want)) < 0) { fprintf(stderr, "codi sweep: condition \"%s\" has no baseline \"%s\"\n", c[i].name, want); return -1; }
        if (c[i].role == SWEEP_CELL) {
            if (c[i].family == SWEEP_FAM_EMB || c[i].family == SWEEP_FAM_KV) snprintf(want, sizeof want, "%.*s/random", stem, c[i].name);
            else snprintf(want, sizeof want, "%s/random", c[i].name);
            c[i].control = sweep_find(nm, want);
        } else {
            if (c[i].family == SWEEP_FAM_EMB || c[i].family == SWEEP_FAM_KV) snprintf(want, sizeof want, "%.*s/diff", stem, c[i].name);
            else snprintf(want, sizeof want, "%.*s", stem, c[i].name);
            if ((c[i].cell = sweep_find(nm, want)) < 0) { fprintf(stderr, "codi sweep: control \"%s\" has no cell \"%s\"\n", c[i].name, want); return -1; }
        }
    }
    return 0;
}

/* --- the grid ------------------------------------------------------------------------------ */

#define SWEEP_MAXLIST 64
typedef struct {
    int N, steps[SWEEP_MAXLIST], n_steps, pa[SWEEP_MAXLIST], pb[SWEEP_MAXLIST], n_pairs;
    double coeffs[SWEEP_MAXLIST], kv_coeffs[SWEEP_MAXLIST];
    int n_coeffs, n_kv, noise_seeds, random_controls;
    unsigned char layer_on[1024];
} sweep_grid;

/* "1,0.5,-2" or "none" -> values (distinct as %g prints them); the count, or -1 after a message. */
static int sweep_parse_numbers(const char *opt, const char *s, double *v) {
    int n = 0, i;
    if (!strcmp(s, "none")) return 0;
    for (;;) {
        char *end, a[32], b[32];
        errno = 0;
        if (n == SWEEP_MAXLIST) { fprintf(stderr, "codi sweep: %s: more than %d values\n", opt, SWEEP_MAXLIST); return -1; }
        v[n] = strtod(s, &end);
        if (end == s || (*end && *end != ',') || errno == ERANGE || !(v[n] - v[n] == 0) || fabs(v[n]) > 1e6) {
            fprintf(stderr, "codi sweep: %s: '%.*s' is not a finite number (a list like -1,0,0.5, or none)\n", opt, (int)strcspn(s, ","), s); return -1;
        }
        snprintf(b, sizeof b, "%g", v[n]);
        v[n] = strtod(b, NULL);                       /* the value its condition name says */
        for (i = 0; i < n; i++) {
            snprintf(a, sizeof a, "%g", v[i]);
            if (!strcmp(a, b)) { fprintf(stderr, "codi sweep: %s: %s given twice\n", opt, a); return -1; }
        }
        n++;
        if (!*end) return n;
        s = end + 1;
    }
}

/* "1-3,5" -> whole numbers in [lo, hi] (marks in on[]); the count, or -1 after a message. */
static int sweep_parse_range(const char *opt, const char *s, int lo, int hi, int *v, unsigned char *on) {
    int n = 0;
    for (;;) {
        char *end;
        long a = strtol(s, &end, 10), b = a, k;
        if (end != s && *end == '-') { const char *t = end + 1; b = strtol(t, &end, 10); if (end == t) b = lo - 1; }
        if (end == s || (*end && *end != ',') || a < lo || b > hi || b < a) {
            fprintf(stderr, "codi sweep: %s: '%.*s' is not a number or range in %d..%d\n", opt, (int)strcspn(s, ","), s, lo, hi); return -1;
        }
        for (k = a; k <= b; k++) {
            if (on[k]) { fprintf(stderr, "codi sweep: %s: %ld given twice\n", opt, k); return -1; }
            if (v) { if (n == SWEEP_MAXLIST) { fprintf(stderr, "codi sweep: %s: too many values\n", opt); return -1; } v[n] = (int)k; }
            on[k] = 1; n++;
        }
        if (!*end) return n;
        s = end + 1;
    }
}

/* "1-2,3-4" -> pairs A < B in 1..N; the count, or -1 after a message. */
static int sweep_parse_pairs(const char *s, int N, int *pa, int *pb) {
    int n = 0, i;
    for (;;) {
        char *end, *end2 = NULL;
        long a = strtol(s, &end, 10), b = *end == '-' ? strtol(end + 1, &end2, 10) : 0;
        if (end == s || *end != '-' || end2 == end + 1 || (*end2 && *end2 != ',') || a < 1 || b > N || a >= b) {
            fprintf(stderr, "codi sweep: --pairs: '%.*s' is not a pair A-B with 1 <= A < B <= %d\n", (int)strcspn(s, ","), s, N); return -1;
        }
        for (i = 0; i < n; i++) if (pa[i] == a && pb[i] == b) { fprintf(stderr, "codi sweep: --pairs: %ld-%ld given twice\n", a, b); return -1; }
        if (n == SWEEP_MAXLIST) { fprintf(stderr, "codi sweep: --pairs: too many pairs\n"); return -1; }
        pa[n] = (int)a; pb[n] = (int)b; n++;
        if (!*end2) return n;
        s = end2 + 1;
    }
}

typedef struct { sweep_cond *c; int n, cap; } sweep_cond_list;

static sweep_cond *sweep_add(sweep_cond_list *cl, const char *fmt, ...) {
    va_list ap;
    if (cl->n == cl->cap) {
        sweep_cond *g = (sweep_cond *)realloc(cl->c, sizeof *g * (size_t)(cl->cap ? 2 * cl->cap : 256));
        if (!g) return NULL;
        cl->c = g; cl->cap = cl->cap ? 2 * cl->cap : 256;
    }
    memset(&cl->c[cl->n], 0, sizeof *cl->c);
    va_start(ap, fmt);
    vsnprintf(cl->c[cl->n].name, sizeof cl->c->name, fmt, ap);
    va_end(ap);
    return &cl->c[cl->n++];
}

/* The condition names of a grid (custom: the specs' names, has_control[i] 0 when spec i's control would
   be the spec itself: vectors of norm 0). 0, or -1 out of memory. */
static int sweep_grid_conditions(const sweep_grid *g, char **custom, const int *has_control, int n_custom, sweep_cond_list *cl) {
    int s, p, k, r, ok = 1;
    for (s = 0; s < g->n_steps && ok; s++) {
        int l = g->steps[s];
        if (g->n_coeffs || g->noise_seeds) ok = ok && sweep_add(cl, "base/l%d/emb", l);
        if (g->n_kv) ok = ok && sweep_add(cl, "base/l%d/kv", l);
        for (p = 0; p < g->n_pairs; p++)
            for (k = 0; k < g->n_coeffs; k++) {
                ok = ok && sweep_add(cl, "emb/l%d/a%db%d/c%g/diff", l, g->pa[p], g->pb[p], g->coeffs[k]);
                for (r = 1; r <= g->random_controls; r++) ok = ok && (r == 1 ? sweep_add(cl, "emb/l%d/a%db%d/c%g/random", l, g->pa[p], g->pb[p], g->coeffs[k])
                                                                             : sweep_add(cl, "emb/l%d/a%db%d/c%g/random%d", l, g->pa[p], g->pb[p], g->coeffs[k], r));
            }
        for (p = 0; p < g->n_pairs; p++)
            for (k = 0; k < g->n_kv; k++) {
                ok = ok && sweep_add(cl, "kv/l%d/a%db%d/c%g/diff", l, g->pa[p], g->pb[p], g->kv_coeffs[k]);
                for (r = 1; r <= g->random_controls; r++) ok = ok && (r == 1 ? sweep_add(cl, "kv/l%d/a%db%d/c%g/random", l, g->pa[p], g->pb[p], g->kv_coeffs[k])
                                                                             : sweep_add(cl, "kv/l%d/a%db%d/c%g/random%d", l, g->pa[p], g->pb[p], g->kv_coeffs[k], r));
            }
        for (k = 1; k <= g->noise_seeds; k++) {
            ok = ok && sweep_add(cl, "noise/l%d/self/s%d", l, k) && sweep_add(cl, "noise/l%d/dim/s%d", l, k);
            for (r = 1; r <= g->random_controls; r++) ok = ok && (r == 1 ? sweep_add(cl, "noise/l%d/dim/s%d/random", l, k) : sweep_add(cl, "noise/l%d/dim/s%d/random%d", l, k, r));
        }
    }
    if (n_custom) ok = ok && sweep_add(cl, "base/run");
    for (k = 0; k < n_custom; k++) {
        ok = ok && sweep_add(cl, "custom/%s", custom[k]);
        for (r = 1; r <= g->random_controls && has_control[k]; r++) ok = ok && (r == 1 ? sweep_add(cl, "custom/%s/random", custom[k]) : sweep_add(cl, "custom/%s/random%d", custom[k], r));
    }
    return ok ? 0 : -1;
}

/* The seed of a control: FNV-1a of its name, the run's seed and the question (-1: one draw per condition). */
static uint64_t sweep_seed(uint64_t seed, const char *name, long question) {
    uint64_t h = 1469598103934665603ULL;
    for (; *name; name++) { h ^= (unsigned char)*name; h *= 1099511628211ULL; }
    h ^= seed * 0x9E3779B97F4A7C15ULL; h *= 1099511628211ULL;
    h ^= (uint64_t)(question + 1) * 0xC2B2AE3D27D4EB4FULL; h *= 1099511628211ULL;
    return h;
}

/* 1 when two sets have equal vectors everywhere (a control of norm-0 vectors is its cell). */
static int sweep_same_vectors(const codi_steer *x, const codi_steer *y) {
    int i;
    for (i = 0; i < x->n_edits; i++) {
        const codi_edit *a = &x->edits[i], *b = &y->edits[i];
        if ((a->vector && memcmp(a->vector, b->vector, sizeof(float) * (size_t)a->vector_len)) ||
            (a->key_vector && memcmp(a->key_vector, b->key_vector, sizeof(float) * (size_t)x->n_layers * x->n_kv_heads * x->head_dim)) ||
            (a->value_vector && memcmp(a->value_vector, b->value_vector, sizeof(float) * (size_t)x->n_layers * x->n_kv_heads * x->head_dim))) return 0;
    }
    return 1;
}

/* --- the branch runner: prefixes and branches through the batched runner ----------------------- */

/* A question's branches start from its prefix after l latents (the prompt and l latent steps):
     SWEEP_FEED  z_(l+1) = prj(h) fed through the steer's hooks (n_latent l + 1), eot and the answer;
     SWEEP_KV    the steer's cache edits after latent l (the batch calls after_latent(l), here
                 codi_steer_after_latent(steer, copy, l, l), on the branch's copy when it joins), eot
                 and the answer;
     SWEEP_RUN   a whole run of the question (prompt, N latents, eot, answer), the steer installed.
   Each is a request of one codi_batch (codi_batch_*): --batch of them advance together, one pass over
   the weights per step. The prefix is a run of the batch too (its prompt rides in the same passes):
   its after_latent copies the state after each latent step l that branches start from into a prefix
   state; l's branches are submitted once it is there, and it goes back to the worker's pool when the
   last of them has joined (taken its copy). */

#define SWEEP_MAXN 16                   /* --latents at most */

typedef struct {                        /* a branch's result */
    int ok, correct, has_pred;          /* ok 0 = failed (message printed) */
    double pred;
    char answer[160];
} sweep_branch;

typedef struct { const codi_model *m; const codi_tokenizer *t; int N, answer_tokens; } sweep_runner;

struct sweep_open;
typedef struct {                        /* a request of the batch: a branch, or a question's prefix run (cond -1) */
    struct sweep_open *o;
    int cond, l, joined;                /* the condition; the prefix it starts from (0: none); 1 once it joined */
    codi_steer *own;                    /* a control drawn for this question, or NULL */
    float *logits;                      /* [answer_tokens, V] for --dump-logits, or NULL */
} sweep_job;

typedef struct sweep_open {             /* a question in flight */
    const codi_model *m;
    int qp, in_use, n_jobs, next, running, prefix_done;
    int reached;                        /* latent steps the prefix run has made (its copies up to there are ready) */
    sweep_job pre, *job;                /* the prefix run; [nc] the branches by l (whole runs first), next to submit */
    codi_state *prefix[SWEEP_MAXN + 1]; /* [l] the state after l latents, or NULL */
    int users[SWEEP_MAXN + 1];          /* [l] branches from prefix l that have not joined */
    int zero_rep[SWEEP_MAXN + 1][SWEEP_NFAM];   /* the alpha-0 branch run for each (l, family), or -1 */
    sweep_branch *res;                  /* [nc] */
    unsigned char *need;                /* [nc] */
} sweep_open;

/* --- running the conditions over the questions ------------------------------------------------ */

typedef struct {
    sweep_runner run;
    sweep_cond *c; int nc;
    sweep_question *q; int nq;          /* every question of the file (up to --limit): global index = position */
    const unsigned char *confirm_q;     /* [nq] 1 = a confirmation question */
    int *todo; int n_todo;              /* this phase's questions */
    const unsigned char *active;        /* [nc] this phase's conditions */
    signed char *grid;                  /* [nc, nq]: -1 no result, 0 wrong, 1 right */
    float **dump;                       /* [nc] where a condition's first answer logits go (first question), or NULL */
    int dump_q, draw_question, max_ids;
    int batch, batch_threads;           /* runs per worker's batch (--batch); threads of its products */
    uint64_t seed;
    long next, finished, failed;
    FILE *out;
    char out_path[4200];
    int write_failed;                   /* a write of out failed: no result counted after it, every worker stops */
    pthread_mutex_t lock;
    cli_progress *progress;
} sweep_ctx;

/* One JSON result line (as codi eval's, with "split"). */
static size_t sweep_row(char *buf, size_t cap, const sweep_cond *c, const sweep_question *q, int split, const sweep_branch *b) {
    size_t n = (size_t)snprintf(buf, cap, "{\"condition\": \"%s\", \"split\": \"%s\", \"index\": %d, \"line\": %d, \"correct\": %s, \"prediction\": ",
                                c->name, split ? "confirm" : "explore", q->qindex, q->line, b->correct ? "true" : "false");
    const unsigned char *t;
    n += (size_t)(b->has_pred ? snprintf(buf + n, cap - n, "%.17g", b->pred) : snprintf(buf + n, cap - n, "null"));
    n += (size_t)(q->has_gold ? snprintf(buf + n, cap - n, ", \"gold\": %.17g, \"answer\": \"", q->gold) : snprintf(buf + n, cap - n, ", \"gold\": null, \"answer\": \""));
    for (t = (const unsigned char *)b->answer; *t && n + 8 < cap; t++) {
        if (*t == '"' || *t == '\\') { buf[n++] = '\\'; buf[n++] = (char)*t; }
        else if (*t < 0x20) n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *t);
        else buf[n++] = (char)*t;
    }
    n += (size_t)snprintf(buf + n, cap - n, "\"}\n");
    return n;
}

/* The prefix states a worker holds at most: 2 max(N, batch) (the batch's own run states aside). */
static int sweep_max_prefix(int N, int batch) { return 2 * (N > batch ? N : batch); }

/* MB of a state of P positions (residuals of every layer, K/V cache, logits): a run's or a prefix's. */
static double sweep_state_mb(const codi_model *m, int positions) {
    const codi_config *c = &m->config;
    double per_pos = 4.0 * ((double)(c->n_layers + 1) * c->dim + 2.0 * c->n_layers * c->n_kv_heads * c->head_dim);
    return (per_pos * positions + 4.0 * (c->vocab + c->dim + c->ffn_dim)) / 1048576;
}

typedef struct {
    sweep_ctx *sc;
    codi_batch *b;
    sweep_open *slot;                   /* [max_open + 1] */
    sweep_open **live;                  /* [max_open] the questions in flight, oldest first */
    sweep_open *planned;                /* taken and planned, waiting for prefix states; or NULL */
    int batch, max_open, n_live;        /* the batch's slots: --batch, or fewer when there are fewer branches */
    codi_state **pool;                  /* [max_prefix] free prefix states */
    int n_free, n_alloc, max_prefix, prefix_pos;
    char *rows; size_t rows_cap;
} sweep_worker_mem;

/* The batch's setup callback: the branch joins (its prefix copy is taken right after). */
static int sweep_joined(void *user, codi_state *s, codi_run_opts *o) {
    sweep_job *j = (sweep_job *)user;
    (void)s; (void)o;
    j->joined = 1;
    if (j->l) j->o->users[j->l]--;
    return 0;
}

/* The prefix run's after_latent: the state after latent step k kept where branches start from it. */
static int sweep_keep_prefix(void *user, codi_state *s, int k, int n_latent) {
    sweep_open *o = ((sweep_job *)user)->o;
    (void)n_latent;
    if (k >= 1 && o->prefix[k] && codi_state_copy(o->m, o->prefix[k], s)) { snprintf(s->error, sizeof s->error, "%s", o->prefix[k]->error); return -1; }
    o->reached = k;
    return 0;
}

/* Job j will not run (failed, message printed): it counts as joined. */
static void sweep_job_drop(sweep_job *j) {
    if (!j->joined && j->l) j->o->users[j->l]--;
    j->joined = 1;
    codi_steer_free(j->own); j->own = NULL;
    free(j->logits); j->logits = NULL;
}

/* The branches from prefixes the prefix run will not reach (it failed): dropped. */
static void sweep_cut_unreached(sweep_open *o) {
    int k, i;
    for (k = o->next; k < o->n_jobs && o->job[k].l <= o->reached; k++) {}
    for (i = k; i < o->n_jobs; i++) sweep_job_drop(&o->job[i]);
    o->n_jobs = k;
    o->prefix_done = 1;
}

/* The batch's done callback: a branch's answer decoded and scored, or the prefix run ended. */
static int sweep_done(void *user, const codi_batch_result *r) {
    sweep_worker_mem *w = (sweep_worker_mem *)user;
    sweep_ctx *sc = w->sc;
    sweep_job *j = (sweep_job *)r->user;
    sweep_open *o = j->o;
    const sweep_question *q = &sc->q[o->qp];
    o->running--;
    if (j->cond < 0) {
        if (r->status) { fprintf(stderr, "codi sweep: line %d: %s\n", q->line, r->error); sweep_cut_unreached(o); }
        o->prefix_done = 1;
        return 0;
    }
    if (r->status) fprintf(stderr, "codi sweep: %s, line %d: %s\n", sc->c[j->cond].name, q->line, r->error);
    else {
        sweep_branch *b = &o->res[j->cond];
        b->ok = 1; b->correct = b->has_pred = 0; b->pred = 0; b->answer[0] = 0;
        if (j->logits) memcpy(sc->dump[j->cond], j->logits, sizeof(float) * (size_t)(sc->run.m->config.vocab - 1));
        if (sc->run.t) {
            codi_decode(sc->run.t, r->result->answer, r->result->n_answer, 1, b->answer, sizeof b->answer);
            b->has_pred = codi_extract_answer(b->answer, &b->pred);
            b->correct = q->has_gold && b->has_pred && b->pred == q->gold;
        }
    }
    sweep_job_drop(j);
    return 0;
}

/* Submits branch j of question o (its prefix, if any, is ready). */
static void sweep_submit(sweep_worker_mem *w, sweep_open *o, sweep_job *j) {
    sweep_ctx *sc = w->sc;
    const sweep_cond *c = &sc->c[j->cond];
    const sweep_question *q = &sc->q[o->qp];
    const codi_model *m = sc->run.m;
    codi_batch_request rq;
    memset(&rq, 0, sizeof rq);
    rq.opts = codi_run_opts_default(m);
    rq.opts.max_answer = sc->run.answer_tokens;
    rq.steer = c->steer;
    rq.setup = sweep_joined; rq.user = j;
    if (c->kind == SWEEP_RUN) { rq.ids = q->ids; rq.n_ids = q->n_ids; rq.opts.n_latent = sc->run.N; }
    else { rq.prefix = o->prefix[j->l]; rq.opts.n_latent = j->l + (c->kind == SWEEP_FEED); }
    if (c->role == SWEEP_CONTROL && sc->draw_question && !c->zero && !(j->own = codi_steer_random_like(sc->c[c->cell].steer, sweep_seed(sc->seed, c->name, q->qindex)))) {
        fprintf(stderr, "codi sweep: %s, line %d: out of memory\n", c->name, q->line); sweep_job_drop(j); return;
    }
    if (j->own) rq.steer = j->own;
    if (o->qp == sc->dump_q && sc->dump && sc->dump[j->cond]) {
        if (!(j->logits = (float *)malloc(sizeof(float) * (size_t)sc->run.answer_tokens * m->config.vocab))) {
            fprintf(stderr, "codi sweep: %s, line %d: out of memory\n", c->name, q->line); sweep_job_drop(j); return;
        }
        rq.opts.answer_logits = j->logits;
    }
    if (codi_batch_submit(w->b, &rq)) { fprintf(stderr, "codi sweep: %s, line %d: %s\n", c->name, q->line, codi_batch_error(w->b)); sweep_job_drop(j); return; }
    o->running++;
}

/* Plans question qp into slot o: the active conditions without a result, as branches ordered by l
   (the alpha-0 cells of an (l, family) share one). The prefix states it needs, or -1 if nothing to run. */
static int sweep_plan(sweep_worker_mem *w, sweep_open *o, int qp) {
    sweep_ctx *sc = w->sc;
    int i, l, n_need = 0, n_prefix = 0;
    o->qp = qp; o->m = sc->run.m; o->n_jobs = o->next = o->running = o->prefix_done = 0; o->reached = 0;
    for (i = 0; i < sc->nc; i++) {
        o->need[i] = sc->active[i] && sc->grid[(size_t)i * sc->nq + qp] < 0;
        n_need += o->need[i];
        o->res[i].ok = 0;
    }
    if (!n_need) return -1;
    for (l = 0; l <= sc->run.N; l++) {              /* l = 0: the whole runs */
        int f;
        o->prefix[l] = NULL; o->users[l] = 0;
        for (f = 0; f < SWEEP_NFAM; f++) o->zero_rep[l][f] = -1;
        for (i = 0; i < sc->nc; i++) {
            const sweep_cond *c = &sc->c[i];
            sweep_job *j;
            if (!o->need[i] || (l ? c->l != l || c->kind == SWEEP_RUN : c->kind != SWEEP_RUN)) continue;
            if (c->zero && o->zero_rep[l][c->family] >= 0) continue;     /* alpha 0: the one run stands for all */
            if (c->zero) o->zero_rep[l][c->family] = i;
            j = &o->job[o->n_jobs++];
            j->o = o; j->cond = i; j->l = l; j->joined = 0; j->own = NULL; j->logits = NULL;
            if (l) o->users[l]++;
        }
        n_prefix += l && o->users[l];
    }
    return n_prefix;
}

/* Starts planned question o: its prefix states taken, its prefix run (prompt and latents up to the
   largest l) submitted. */
static void sweep_start(sweep_worker_mem *w, sweep_open *o) {
    sweep_ctx *sc = w->sc;
    const sweep_question *q = &sc->q[o->qp];
    int l, last = 0, ok = 1;
    for (l = 1; l <= sc->run.N; l++) {
        if (!o->users[l]) continue;
        last = l;
        if (w->n_free) o->prefix[l] = w->pool[--w->n_free];
        else if ((o->prefix[l] = codi_state_new_chunked(sc->run.m, w->prefix_pos, 1, 1)) != NULL) w->n_alloc++;
        else ok = 0;
    }
    o->pre.o = o; o->pre.cond = -1; o->pre.l = 0; o->pre.joined = 1; o->pre.own = NULL; o->pre.logits = NULL;
    o->prefix_done = !last;
    if (last && ok) {
        codi_batch_request rq;
        memset(&rq, 0, sizeof rq);
        rq.ids = q->ids; rq.n_ids = q->n_ids; rq.user = &o->pre;
        rq.opts = codi_run_opts_default(sc->run.m);
        rq.opts.n_latent = last; rq.opts.max_answer = 0; rq.opts.feed_eot = 0;
        rq.opts.after_latent = sweep_keep_prefix; rq.opts.after_latent_user = &o->pre;
        if (codi_batch_submit(w->b, &rq) == 0) { o->running++; return; }
        fprintf(stderr, "codi sweep: line %d: %s\n", q->line, codi_batch_error(w->b));
    } else if (last) fprintf(stderr, "codi sweep: line %d: out of memory\n", q->line);
    if (last) sweep_cut_unreached(o);
}

/* Takes, plans and starts the next question that has work, when a slot and its prefix states are
   free. 1 if one started. */
static int sweep_open_next(sweep_worker_mem *w) {
    sweep_ctx *sc = w->sc;
    for (;;) {
        int n_prefix, i;
        if (!w->planned) {
            long u;
            sweep_open *o = NULL;
            if (w->n_live == w->max_open) return 0;
            pthread_mutex_lock(&sc->lock);
            u = sc->next < sc->n_todo && !sc->write_failed ? sc->next++ : -1;
            pthread_mutex_unlock(&sc->lock);
            if (u < 0) return 0;
            for (i = 0; i <= w->max_open && !o; i++) if (!w->slot[i].in_use) o = &w->slot[i];
            if (!o->job) {
                o->job = (sweep_job *)malloc(sizeof *o->job * (size_t)sc->nc); o->res = (sweep_branch *)malloc(sizeof *o->res * (size_t)sc->nc);
                o->need = (unsigned char *)malloc((size_t)sc->nc);
                if (!o->job || !o->res || !o->need) {
                    fprintf(stderr, "codi sweep: out of memory\n");
                    pthread_mutex_lock(&sc->lock); sc->failed++; pthread_mutex_unlock(&sc->lock);
                    return 0;
                }
            }
            if (sweep_plan(w, o, sc->todo[u]) < 0) continue;
            o->in_use = 1;
            w->planned = o;
        }
        for (i = 1, n_prefix = 0; i <= sc->run.N; i++) n_prefix += w->planned->users[i] > 0;
        if (n_prefix > w->n_free + w->max_prefix - w->n_alloc) return 0;
        w->live[w->n_live++] = w->planned;
        sweep_start(w, w->planned);
        w->planned = NULL;
        return 1;
    }
}

/* Keeps about 2 batches of runs queued: the ready branches of the questions in flight, oldest first;
   a new question starts when fewer than (N + 2) batches of branches are left to run, so that its
   prefix is ready before the batch runs dry. */
static void sweep_top_up(sweep_worker_mem *w) {
    sweep_ctx *sc = w->sc;
    int cap = 2 * w->batch, k;
    for (;;) {
        long backlog = 0;
        for (k = 0; k < w->n_live; k++) {
            sweep_open *o = w->live[k];
            while (o->next < o->n_jobs && o->job[o->next].l <= o->reached && codi_batch_pending(w->b) < cap) sweep_submit(w, o, &o->job[o->next++]);
            backlog += o->n_jobs - o->next;
        }
        backlog += codi_batch_pending(w->b);
        if (backlog >= (long)(sc->run.N + 2) * w->batch || !sweep_open_next(w)) return;
    }
}

/* Question o has ended: the alpha-0 cells share their run; its rows are written together. */
static void sweep_finish(sweep_worker_mem *w, sweep_open *o) {
    sweep_ctx *sc = w->sc;
    const sweep_question *q = &sc->q[o->qp];
    size_t len = 0;
    int i;
    for (i = 0; i < sc->nc; i++) {
        const sweep_cond *c = &sc->c[i];
        int rep = c->zero && o->need[i] ? o->zero_rep[c->l][c->family] : -1;
        if (rep < 0 || rep == i) continue;
        o->res[i] = o->res[rep];
        if (o->qp == sc->dump_q && sc->dump && sc->dump[i] && sc->dump[rep]) memcpy(sc->dump[i], sc->dump[rep], sizeof(float) * (size_t)(sc->run.m->config.vocab - 1));
    }
    for (i = 0; i < sc->nc; i++) {
        if (!o->need[i] || !o->res[i].ok) continue;
        if (len + 1024 > w->rows_cap) {
            char *g = (char *)realloc(w->rows, w->rows_cap * 2 + 4096);
            if (!g) break;
            w->rows = g; w->rows_cap = w->rows_cap * 2 + 4096;
        }
        len += sweep_row(w->rows + len, w->rows_cap - len, &sc->c[i], q, sc->confirm_q[o->qp], &o->res[i]);
    }
    pthread_mutex_lock(&sc->lock);
    if (!sc->write_failed && (fwrite(w->rows, 1, len, sc->out) != len || cli_out_flush(sc->out, sc->out_path))) sc->write_failed = 1;
    for (i = 0; i < sc->nc && !sc->write_failed; i++) {
        if (o->need[i] && o->res[i].ok) sc->grid[(size_t)i * sc->nq + o->qp] = (signed char)o->res[i].correct;
        else if (o->need[i]) sc->failed++;
    }
    cli_progress_update(sc->progress, ++sc->finished);
    pthread_mutex_unlock(&sc->lock);
}

/* Prefix states whose branches have all joined go back to the pool; ended questions are written.
   Returns how many ended. */
static int sweep_housekeep(sweep_worker_mem *w) {
    int k = 0, l, n = 0;
    while (k < w->n_live) {
        sweep_open *o = w->live[k];
        for (l = 1; l <= w->sc->run.N; l++)
            if (o->prefix[l] && o->users[l] <= 0) { w->pool[w->n_free++] = o->prefix[l]; o->prefix[l] = NULL; }
        if (o->prefix_done && !o->running && o->next == o->n_jobs) {
            sweep_finish(w, o);
            o->in_use = 0;
            memmove(&w->live[k], &w->live[k + 1], sizeof *w->live * (size_t)(w->n_live - k - 1));
            w->n_live--; n++;
        } else k++;
    }
    return n;
}

/* A worker: one batched runner of sc->batch runs on sc->batch_threads threads, fed with the branches of
   the questions it takes (as many at once as keep it full, within its prefix states). */
static void *sweep_worker(void *user) {
    sweep_ctx *sc = (sweep_ctx *)user;
    sweep_worker_mem w;
    int i, l;
    long runs;
    memset(&w, 0, sizeof w);
    w.sc = sc;
    for (i = 0, runs = 0; i < sc->nc; i++) runs += sc->active[i];
    runs *= sc->n_todo;                               /* no more slots than branches to run */
    w.batch = runs < sc->batch ? (runs > 0 ? (int)runs : 1) : sc->batch;
    w.max_prefix = sweep_max_prefix(sc->run.N, w.batch);
    w.max_open = 2 * w.batch + 2;
    w.prefix_pos = sc->max_ids + sc->run.N + 2;
    w.b = codi_batch_new(sc->run.m, w.batch, sc->max_ids + sc->run.N + sc->run.answer_tokens + 2, sc->batch_threads);
    w.slot = (sweep_open *)calloc((size_t)w.max_open + 1, sizeof *w.slot); w.live = (sweep_open **)malloc(sizeof *w.live * (size_t)w.max_open);
    w.pool = (codi_state **)malloc(sizeof *w.pool * (size_t)w.max_prefix);
    w.rows_cap = 1 << 16; w.rows = (char *)malloc(w.rows_cap);
    if (!w.b || !w.slot || !w.live || !w.pool || !w.rows) {
        fprintf(stderr, "codi sweep: out of memory\n");
        pthread_mutex_lock(&sc->lock); sc->failed++; pthread_mutex_unlock(&sc->lock);
    } else
        for (;;) {
            sweep_housekeep(&w);
            sweep_top_up(&w);
            if (!codi_batch_pending(w.b)) {
                if (!w.n_live) break;
                if (sweep_housekeep(&w)) continue;
                fprintf(stderr, "codi sweep: the branch runner stalled with %d questions in flight\n", w.n_live);
                break;
            }
            if (codi_batch_step(w.b, sweep_done, &w) < 0) { fprintf(stderr, "codi sweep: %s\n", codi_batch_error(w.b)); break; }
        }
    for (i = 0; w.live && i < w.n_live; i++) {       /* after a failure: what was in flight */
        sweep_open *o = w.live[i];
        int k;
        for (k = 0; k < o->n_jobs; k++) sweep_job_drop(&o->job[k]);
        for (k = 0; k < sc->nc; k++) if (o->need[k]) { pthread_mutex_lock(&sc->lock); sc->failed++; pthread_mutex_unlock(&sc->lock); }
        for (l = 1; l <= sc->run.N; l++) codi_state_free(o->prefix[l]);
    }
    codi_batch_free(w.b);
    for (i = 0; w.slot && i <= w.max_open; i++) { free(w.slot[i].job); free(w.slot[i].res); free(w.slot[i].need); }
    for (i = 0; i < w.n_free; i++) codi_state_free(w.pool[i]);
    free(w.slot); free(w.live); free(w.pool); free(w.rows);
    return NULL;
}

/* Runs the active conditions over the todo questions on `workers` threads. */
static void sweep_phase(sweep_ctx *sc, int workers, const char *label) {
    pthread_t *th = (pthread_t *)malloc(sizeof *th * (size_t)workers);
    int i;
    double t0 = cli_now();
    sc->next = 0; sc->finished = 0;
    if (!th) { sc->failed++; return; }
    pthread_mutex_init(&sc->lock, NULL);
    sc->progress = cli_progress_start(label, sc->n_todo, 0);
    for (i = 0; i < workers; i++) pthread_create(&th[i], NULL, sweep_worker, sc);
    for (i = 0; i < workers; i++) pthread_join(th[i], NULL);
    cli_progress_end(sc->progress);
    pthread_mutex_destroy(&sc->lock);
    fprintf(stderr, "codi sweep: %s: %d questions in %.1f s\n", label, sc->n_todo, cli_now() - t0);
    free(th);
}

/* --- statistics from the results ---------------------------------------------------------------- */

typedef struct {
    long n, k, paired, to_right, to_wrong, paired_r, r_only, c_only;   /* vs baseline: flips; vs control: discordant */
    double p_base, p_rand, p_primary, holm, bh;
    int has;                        /* 1: the condition has results in this split */
} sweep_stat;

/* Condition ci's counts on the questions of split (0 explore, 1 confirm). */
static void sweep_tally(const sweep_cond *c, int ci, const signed char *grid, int nq, const unsigned char *confirm_q, int split, sweep_stat *st) {
    const signed char *x = grid + (size_t)ci * nq, *b = c[ci].base >= 0 ? grid + (size_t)c[ci].base * nq : NULL;
    const signed char *r = c[ci].control >= 0 ? grid + (size_t)c[ci].control * nq : NULL;
    int i;
    memset(st, 0, sizeof *st);
    for (i = 0; i < nq; i++) {
        if (confirm_q[i] != split || x[i] < 0) continue;
        st->n++; st->k += x[i];
        if (b && b[i] >= 0) { st->paired++; st->to_right += !b[i] && x[i]; st->to_wrong += b[i] && !x[i]; }
        if (r && r[i] >= 0) { st->paired_r++; st->r_only += r[i] && !x[i]; st->c_only += !r[i] && x[i]; }
    }
    st->has = st->n > 0;
    st->p_base = b && st->paired ? codi_mcnemar_exact(st->to_wrong, st->to_right) : NAN;
    st->p_rand = r && st->paired_r ? codi_mcnemar_exact(st->r_only, st->c_only) : NAN;
    st->p_primary = c[ci].role != SWEEP_CELL || !st->has ? NAN : r ? st->p_rand : st->p_base;
    st->holm = st->bh = NAN;
}

/* Stats of every condition in both splits ([2, nc]) with Holm and BH: per family on exploration,
   over all the confirmed cells on confirmation. 0, or -1 out of memory. */
static int sweep_stats(const sweep_cond *c, int nc, const signed char *grid, int nq, const unsigned char *confirm_q, sweep_stat *st) {
    double *p = (double *)malloc(sizeof(double) * (size_t)(nc ? nc : 1)), *h = (double *)malloc(sizeof(double) * (size_t)(nc ? nc : 1));
    double *q = (double *)malloc(sizeof(double) * (size_t)(nc ? nc : 1));
    int s, f, i, rc = 0;
    if (!p || !h || !q) { free(p); free(h); free(q); return -1; }
    for (s = 0; s < 2; s++)
        for (i = 0; i < nc; i++) sweep_tally(c, i, grid, nq, confirm_q, s, &st[(size_t)s * nc + i]);
    for (s = 0; s < 2 && !rc; s++)
        for (f = s ? -1 : 1; f < (s ? 0 : SWEEP_NFAM) && !rc; f++) {
            for (i = 0; i < nc; i++) p[i] = f < 0 || c[i].family == f ? st[(size_t)s * nc + i].p_primary : NAN;
            rc = codi_holm(p, nc, h) || codi_bh(p, nc, q) ? -1 : 0;
            for (i = 0; i < nc; i++) if (p[i] == p[i]) { st[(size_t)s * nc + i].holm = h[i]; st[(size_t)s * nc + i].bh = q[i]; }
        }
    free(p); free(h); free(q);
    return rc;
}

static const sweep_stat *sweep_rank_stat;
static int sweep_cmp_rank(const void *x, const void *y) {
    const sweep_stat *a = &sweep_rank_stat[*(const int *)x], *b = &sweep_rank_stat[*(const int *)y];
    double ea = a->paired ? fabs((double)(a->to_right - a->to_wrong)) / a->paired : 0, eb = b->paired ? fabs((double)(b->to_right - b->to_wrong)) / b->paired : 0;
    if (a->p_primary != b->p_primary) return a->p_primary < b->p_primary ? -1 : 1;
    if (ea != eb) return ea > eb ? -1 : 1;
    return *(const int *)x - *(const int *)y;
}

/* The cells ranked on exploration: smallest p_primary first, then the larger |difference| to the
   baseline, then grid order. Fills idx with the first at most top; returns how many. */
static int sweep_rank(const sweep_cond *c, int nc, const sweep_stat *explore, int top, int *idx) {
    int *all = (int *)malloc(sizeof(int) * (size_t)(nc ? nc : 1)), n = 0, i;
    if (!all) return 0;
    for (i = 0; i < nc; i++) if (c[i].role == SWEEP_CELL && explore[i].p_primary == explore[i].p_primary) all[n++] = i;
    sweep_rank_stat = explore;
    qsort(all, (size_t)n, sizeof(int), sweep_cmp_rank);
    if (n > top) n = top;
    memcpy(idx, all, sizeof(int) * (size_t)n);
    free(all);
    return n;
}

static void sweep_jnum(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ", \"%s\": ", key);
    if (v - v == 0) fprintf(f, fmt, v); else fputs("null", f);
}

static void sweep_cnum(FILE *f, double v, const char *fmt) { fputc(',', f); if (v - v == 0) fprintf(f, fmt, v); }

/* One summary line (JSON and CSV) of condition ci in split s. */
static void sweep_summary_line(FILE *js, FILE *csv, const sweep_cond *c, int ci, const sweep_stat *st, const sweep_stat *base_st, int s) {
    double lo, hi, dlo = NAN, dhi = NAN, diff = NAN, acc = st->n ? (double)st->k / st->n : NAN;
    int surv = st->holm < SWEEP_ALPHA;
    codi_wilson_interval((int)st->k, (int)st->n, SWEEP_Z95, &lo, &hi);
    if (st->paired) { diff = (double)(st->to_right - st->to_wrong) / st->paired; codi_paired_diff_interval(st->to_wrong, st->to_right, st->paired, &dlo, &dhi); }
    if (js) {
        fprintf(js, "{\"condition\": \"%s\", \"family\": \"%s\", \"role\": \"%s\", \"split\": \"%s\", \"n\": %ld, \"correct\": %ld",
                c[ci].name, sweep_fam_names[c[ci].family], sweep_role_names[c[ci].role], s ? "confirm" : "explore", st->n, st->k);
        sweep_jnum(js, "accuracy", acc, "%.6f"); sweep_jnum(js, "ci_low", lo, "%.6f"); sweep_jnum(js, "ci_high", hi, "%.6f");
        fprintf(js, ", \"baseline\": ");
        if (c[ci].base >= 0) fprintf(js, "\"%s\"", c[c[ci].base].name); else fputs("null", js);
        sweep_jnum(js, "baseline_accuracy", base_st && base_st->n ? (double)base_st->k / base_st->n : NAN, "%.6f");
        fprintf(js, ", \"paired\": %ld", st->paired);
        sweep_jnum(js, "diff_vs_baseline", diff, "%.6f"); sweep_jnum(js, "diff_ci_low", dlo, "%.6f"); sweep_jnum(js, "diff_ci_high", dhi, "%.6f");
        fprintf(js, ", \"flips_to_right\": %ld, \"flips_to_wrong\": %ld", st->to_right, st->to_wrong);
        sweep_jnum(js, "p_vs_baseline", st->p_base, "%.6g");
        fprintf(js, ", \"control\": ");
        if (c[ci].control >= 0) fprintf(js, "\"%s\"", c[c[ci].control].name); else fputs("null", js);
        sweep_jnum(js, "diff_vs_random", st->paired_r ? (double)(st->c_only - st->r_only) / st->paired_r : NAN, "%.6f");
        sweep_jnum(js, "p_vs_random", st->p_rand, "%.6g"); sweep_jnum(js, "p_primary", st->p_primary, "%.6g");
        sweep_jnum(js, "p_holm", st->holm, "%.6g"); sweep_jnum(js, "q_bh", st->bh, "%.6g");
        fprintf(js, ", \"survives\": %s}\n", surv ? "true" : "false");
    }
    if (csv) {
        fprintf(csv, "%s,%s,%s,%s,%ld,%ld", c[ci].name, sweep_fam_names[c[ci].family], sweep_role_names[c[ci].role], s ? "confirm" : "explore", st->n, st->k);
        sweep_cnum(csv, acc, "%.6f"); sweep_cnum(csv, lo, "%.6f"); sweep_cnum(csv, hi, "%.6f");
        fprintf(csv, ",%s", c[ci].base >= 0 ? c[c[ci].base].name : "");
        sweep_cnum(csv, base_st && base_st->n ? (double)base_st->k / base_st->n : NAN, "%.6f");
        fprintf(csv, ",%ld", st->paired);
        sweep_cnum(csv, diff, "%.6f"); sweep_cnum(csv, dlo, "%.6f"); sweep_cnum(csv, dhi, "%.6f");
        fprintf(csv, ",%ld,%ld", st->to_right, st->to_wrong);
        sweep_cnum(csv, st->p_base, "%.6g");
        fprintf(csv, ",%s", c[ci].control >= 0 ? c[c[ci].control].name : "");
        sweep_cnum(csv, st->paired_r ? (double)(st->c_only - st->r_only) / st->paired_r : NAN, "%.6f");
        sweep_cnum(csv, st->p_rand, "%.6g"); sweep_cnum(csv, st->p_primary, "%.6g"); sweep_cnum(csv, st->holm, "%.6g"); sweep_cnum(csv, st->bh, "%.6g");
        fprintf(csv, ",%d\n", surv);
    }
}

/* One line of the printed report: a cell with its interval, its difference to the baseline and the control. */
static void sweep_print_cell(const sweep_cond *c, int ci, const sweep_stat *st) {
    double lo, hi, dlo = 0, dhi = 0;
    codi_wilson_interval((int)st->k, (int)st->n, SWEEP_Z95, &lo, &hi);
    if (st->paired) codi_paired_diff_interval(st->to_wrong, st->to_right, st->paired, &dlo, &dhi);
    printf("  %s %-34s n %4ld  acc %5.1f%% [%5.1f, %5.1f]  vs base %+6.1f [%+6.1f, %+6.1f] pts (+%ld -%ld)  p_base %-8.3g p_rand ",
           st->holm < SWEEP_ALPHA ? "*" : " ", c[ci].name, st->n, 100.0 * st->k / (st->n ? st->n : 1), 100 * lo, 100 * hi,
           st->paired ? 100.0 * (st->to_right - st->to_wrong) / st->paired : 0.0, 100 * dlo, 100 * dhi, st->to_right, st->to_wrong, st->p_base);
    if (st->p_rand == st->p_rand) printf("%-8.3g", st->p_rand); else printf("%-8s", "-");
    printf(" holm %-8.3g q %.3g\n", st->holm, st->bh);
}

/* --- figures --------------------------------------------------------------------------------- */

static double sweep_nice_up(double x) {
    static const double v[] = { 0.1, 0.2, 0.5, 1 };
    int i;
    for (i = 0; i < 4; i++) if (x <= v[i] + 1e-12) return v[i];
    return 1;
}

/* Heatmaps (pairs x l) of a family's exploration results: per coefficient, the accuracy of the cells
   and of their first controls on one fixed scale (0-1, or --auto-range: the family's range on round
   values), and the differences to the baseline and to the control on a diverging scale centred at 0,
   shared by the family;
   cells surviving Holm outlined and starred. 0, or 1 when a figure could not be written. */
static int sweep_figures(const char *dir, const sweep_cond *c, int nc, const sweep_stat *st, int fam, const char *qname, int auto_range, long n_questions, int n_tested) {
    int steps[1024], n_steps = 0, pairs[256], n_pairs = 0, i, j, k, v, ci;
    double coeffs[SWEEP_MAXLIST], amin = 1, amax = 0, dmax = 0;
    int n_coeffs = 0, bad = 0;
    const char *fname = fam == SWEEP_FAM_EMB ? "embedding" : "kv";
    for (i = 0; i < nc; i++) {                        /* the grid's axes, from the names */
        int pk = c[i].a * 100 + c[i].b;
        if (c[i].family != fam || c[i].role != SWEEP_CELL || !st[i].has) continue;
        for (j = 0; j < n_steps && steps[j] != c[i].l; j++) {}
        if (j == n_steps && n_steps < 1024) steps[n_steps++] = c[i].l;
        for (j = 0; j < n_pairs && pairs[j] != pk; j++) {}
        if (j == n_pairs && n_pairs < 256) pairs[n_pairs++] = pk;
        for (j = 0; j < n_coeffs && coeffs[j] != c[i].coeff; j++) {}
        if (j == n_coeffs && n_coeffs < SWEEP_MAXLIST) coeffs[n_coeffs++] = c[i].coeff;
        for (v = 0; v < 2; v++) {
            const sweep_stat *s = v ? (c[i].control >= 0 ? &st[c[i].control] : NULL) : &st[i];
            if (!s || !s->n) continue;
            if ((double)s->k / s->n < amin) amin = (double)s->k / s->n;
            if ((double)s->k / s->n > amax) amax = (double)s->k / s->n;
            if (s->paired && fabs((double)(s->to_right - s->to_wrong) / s->paired) > dmax) dmax = fabs((double)(s->to_right - s->to_wrong) / s->paired);
        }
        if (st[i].paired_r && fabs((double)(st[i].c_only - st[i].r_only) / st[i].paired_r) > dmax) dmax = fabs((double)(st[i].c_only - st[i].r_only) / st[i].paired_r);
    }
    if (!n_steps) return 0;
    for (i = 1; i < n_steps; i++) for (j = i; j > 0 && steps[j - 1] > steps[j]; j--) { k = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = k; }
    for (i = 1; i < n_pairs; i++) for (j = i; j > 0 && pairs[j - 1] > pairs[j]; j--) { k = pairs[j]; pairs[j] = pairs[j - 1]; pairs[j - 1] = k; }
    dmax = sweep_nice_up(dmax);
    if (auto_range) { amin = floor(amin * 10 + 1e-9) / 10; amax = ceil(amax * 10 - 1e-9) / 10; if (amax <= amin) amax = amin + 0.1; }
    else { amin = 0; amax = 1; }
    {
        size_t cells = (size_t)n_steps * n_pairs;
        double *val = (double *)malloc(sizeof(double) * cells), ticks_a[11], ticks_d[5];
        char (*text)[24] = (char (*)[24])malloc(sizeof *text * cells), (*rl)[24] = (char (*)[24])malloc(sizeof *rl * (size_t)n_pairs), (*cl)[16] = (char (*)[16])malloc(sizeof *cl * (size_t)n_steps);
        const char **ct = (const char **)malloc(sizeof(char *) * cells), **rows = (const char **)malloc(sizeof(char *) * (size_t)n_pairs), **cols = (const char **)malloc(sizeof(char *) * (size_t)n_steps);
        unsigned char *mark = (unsigned char *)malloc(cells);
        int n_ta = 0;
        double step_a = amax - amin > 0.5 ? 0.25 : 0.1;
        if (!val || !text || !rl || !cl || !ct || !rows || !cols || !mark) goto done;
        for (k = 0; amin + k * step_a <= amax + 1e-9 && n_ta < 11; k++) ticks_a[n_ta++] = floor((amin + k * step_a) * 1000 + 0.5) / 1000;
        for (k = 0; k < 5; k++) ticks_d[k] = -dmax + k * dmax / 2;
        for (i = 0; i < n_pairs; i++) { snprintf(rl[i], 24, "(%d, %d)", pairs[i] / 100, pairs[i] % 100); rows[i] = rl[i]; }
        for (i = 0; i < n_steps; i++) { snprintf(cl[i], 16, "%d", steps[i]); cols[i] = cl[i]; }
        for (k = 0; k < n_coeffs; k++)
            for (v = 0; v < 4; v++) {                 /* 0: cells' accuracy, 1: controls' accuracy, 2: cells minus baseline, 3: minus control */
                svg_heatmap_spec sp;
                char path[4096], title[256], sub[512];
                int any = 0;
                for (i = 0; i < (int)cells; i++) { val[i] = NAN; text[i][0] = 0; ct[i] = text[i]; mark[i] = 0; }
                for (ci = 0; ci < nc; ci++) {
                    const sweep_stat *s;
                    int r, col;
                    if (c[ci].family != fam || c[ci].role != SWEEP_CELL || c[ci].coeff != coeffs[k] || !st[ci].has) continue;
                    s = v == 1 ? (c[ci].control >= 0 ? &st[c[ci].control] : NULL) : &st[ci];
                    if (!s || !s->n || (v == 2 && !s->paired) || (v == 3 && !s->paired_r)) continue;
                    for (r = 0; pairs[r] != c[ci].a * 100 + c[ci].b; r++) {}
                    for (col = 0; steps[col] != c[ci].l; col++) {}
                    val[(size_t)r * n_steps + col] = v == 2 ? (double)(s->to_right - s->to_wrong) / s->paired
                                                   : v == 3 ? (double)(s->c_only - s->r_only) / s->paired_r : (double)s->k / s->n;
                    mark[(size_t)r * n_steps + col] = v != 1 && st[ci].holm < SWEEP_ALPHA;
                    snprintf(text[(size_t)r * n_steps + col], 24, v >= 2 ? "%+.2f%s" : "%.2f%s", val[(size_t)r * n_steps + col], mark[(size_t)r * n_steps + col] ? "*" : "");
                    any = 1;
                }
                if (!any) continue;
                memset(&sp, 0, sizeof sp);
                snprintf(path, sizeof path, "%s/%s_%s_c%g.svg", dir, fname, v == 0 ? "diff_acc" : v == 1 ? "random_acc" : v == 2 ? "diff_delta" : "diff_vs_random", coeffs[k]);
                snprintf(title, sizeof title, "%s steering, coeff %g: %s", fname, coeffs[k],
                         v == 0 ? "accuracy (mean-difference direction)" : v == 1 ? "accuracy (random control, same norms)"
                         : v == 2 ? "accuracy minus its baseline (paired)" : "accuracy minus its random control (paired: the test)");
                snprintf(sub, sizeof sub, "explore split: n = %ld questions of %s; * = survives Holm at 0.05 among %d %s cells", n_questions, qname, n_tested, fname);
                sp.rows = n_pairs; sp.cols = n_steps; sp.value = val; sp.cell_text = ct; sp.mark = mark;
                sp.row_labels = rows; sp.col_labels = cols; sp.title = title; sp.subtitle = sub;
                sp.xlabel = fam == SWEEP_FAM_EMB ? "latent steps l before z_(l+1) is steered" : "latent steps l (K, V edited at latent l's slot)";
                sp.ylabel = "pair (A, B)";
                sp.cell_h = n_pairs * 22 < 150 ? 150.0 / n_pairs : 22;   /* room for the colour bar's ticks and label */
                if (v >= 2) { sp.vmin = -dmax; sp.vmax = dmax; sp.colormap = SVG_RDBU; sp.ticks = ticks_d; sp.n_ticks = 5; sp.colorbar_label = v == 2 ? "minus baseline" : "minus control"; }
                else { sp.vmin = amin; sp.vmax = amax; sp.colormap = SVG_VIRIDIS; sp.ticks = ticks_a; sp.n_ticks = n_ta; sp.colorbar_label = "accuracy"; }
                if (svg_heatmap(path, &sp)) { fprintf(stderr, "codi sweep: cannot write %s\n", path); bad = 1; }
            }
    done:
        free(val); free(text); free(rl); free(cl); free(ct); free(rows); free(cols); free(mark);
    }
    return bad;
}

/* --- the report: summary files, the printed tables, figures -------------------------------- */

/* Everything from the results grid; returns 0, or 1 when a file cannot be written. */
static int sweep_report(const char *dir, const sweep_cond *c, int nc, const signed char *grid, int nq, const unsigned char *confirm_q,
                        const char *qname, int auto_range, int confirming) {
    sweep_stat *st = (sweep_stat *)malloc(sizeof *st * 2 * (size_t)(nc ? nc : 1));
    int *top = (int *)malloc(sizeof(int) * (size_t)(nc ? nc : 1)), s, i, f, n_top, bad = 0;
    char path[4096];
    FILE *js, *csv;
    long nq_split[2] = { 0, 0 };
    if (!st || !top || sweep_stats(c, nc, grid, nq, confirm_q, st)) { fprintf(stderr, "codi sweep: out of memory\n"); free(st); free(top); return 1; }
    for (i = 0; i < nq; i++) {                        /* questions with any result, per split */
        int has = 0, k;
        for (k = 0; k < nc && !has; k++) has = grid[(size_t)k * nq + i] >= 0;
        nq_split[confirm_q[i]] += has;
    }
    snprintf(path, sizeof path, "%s/summary.jsonl", dir);
    js = cli_out_open(path, "w");
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    csv = js ? cli_out_open(path, "w") : NULL;
    if (!js || !csv) { cli_out_abort(js); free(st); free(top); return 1; }
    fprintf(csv, "condition,family,role,split,n,correct,accuracy,ci_low,ci_high,baseline,baseline_accuracy,paired,diff_vs_baseline,diff_ci_low,diff_ci_high,"
                 "flips_to_right,flips_to_wrong,p_vs_baseline,control,diff_vs_random,p_vs_random,p_primary,p_holm,q_bh,survives\n");
    for (s = 0; s < 2; s++)
        for (i = 0; i < nc; i++)
            if (st[(size_t)s * nc + i].has)
                sweep_summary_line(js, csv, c, i, &st[(size_t)s * nc + i], c[i].base >= 0 ? &st[(size_t)s * nc + c[i].base] : NULL, s);
    if (cli_out_close(js)) { cli_out_abort(csv); free(st); free(top); return 1; }
    if (cli_out_close(csv)) { free(st); free(top); return 1; }
    /* the printed report: confirmed results first */
    if (confirming) {
        int n_conf = 0, n_surv = 0;
        for (i = 0; i < nc; i++) if (c[i].role == SWEEP_CELL && st[(size_t)nc + i].has) { n_conf++; n_surv += st[(size_t)nc + i].holm < SWEEP_ALPHA; }
        printf("CONFIRMED on the %ld held-out questions (never used for selection): %d cells re-evaluated, %d survive Holm at 0.05 over those %d\n",
               nq_split[1], n_conf, n_surv, n_conf);
        n_top = sweep_rank(c, nc, st, nc, top);
        for (i = 0; i < n_top; i++) if (st[(size_t)nc + top[i]].has) sweep_print_cell(c, top[i], &st[(size_t)nc + top[i]]);
        printf("\n");
    }
    for (i = 0; i < nq && !confirm_q[i]; i++) {}
    printf("%s on %ld questions%s: p_primary = McNemar vs the random control where there is one, else vs the baseline\n",
           confirming ? "EXPLORATION (selection only; not evidence)" : "EXPLORATION", nq_split[0],
           confirming ? "" : i < nq ? " (the confirmation is still to run)" : " (no held-out confirmation: add --confirm 0.5)");
    for (f = 1; f < SWEEP_NFAM; f++) {
        int n_t = 0, n_h = 0, n_b = 0;
        for (i = 0; i < nc; i++)
            if (c[i].family == f && st[i].p_primary == st[i].p_primary) { n_t++; n_h += st[i].holm < SWEEP_ALPHA; n_b += st[i].bh < SWEEP_ALPHA; }
        if (n_t) printf("  %-9s %5d cells tested, %d survive Holm at 0.05, %d have BH q < 0.05\n", sweep_fam_names[f], n_t, n_h, n_b);
    }
    n_top = sweep_rank(c, nc, st, 10, top);
    if (n_top) printf("  the %d cells of smallest p_primary (* = survives Holm in its family):\n", n_top);
    for (i = 0; i < n_top; i++) sweep_print_cell(c, top[i], &st[top[i]]);
    for (f = SWEEP_FAM_EMB; f <= SWEEP_FAM_KV; f++) {
        int n_t = 0;
        for (i = 0; i < nc; i++) n_t += c[i].family == f && st[i].p_primary == st[i].p_primary;
        bad |= sweep_figures(dir, c, nc, st, f, qname, auto_range, nq_split[0], n_t);
    }
    if (!bad) printf("wrote %s: results.jsonl (every question), summary.jsonl, summary.csv, SVG heatmaps\n", dir);
    free(st); free(top);
    return bad;
}

/* --- the results file ----------------------------------------------------------------------------- */

/* Reads a results file: its first line (malloc'd into *header), the selection line (into *selected,
   malloc'd, or NULL), the rows into grid (conditions by name; NULL nm: rows not read). A last line
   without its newline is ignored; *good_len is where the whole lines end. Rows read, or -1. */
static long sweep_read_results(const char *path, const sweep_names *nm, signed char *grid, int nq, char **header, char **selected, long *good_len) {
    size_t len;
    char *text = codi_read_text(path, &len), *p, err[256];
    long n = 0;
    int line = 0;
    *header = NULL; if (selected) *selected = NULL;
    if (good_len) *good_len = 0;
    if (!text) return -1;
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        if (!e) break;
        line++;
        if (line == 1) { *header = (char *)malloc((size_t)(e - p) + 1); if (*header) { memcpy(*header, p, (size_t)(e - p)); (*header)[e - p] = 0; } }
        else if (!strncmp(p, "{\"selected\": ", 13)) {
            if (selected && !*selected && (*selected = (char *)malloc((size_t)(e - p) + 1)) != NULL) { memcpy(*selected, p, (size_t)(e - p)); (*selected)[e - p] = 0; }
        } else if (nm) {
            codi_json *j = codi_json_parse(p, (size_t)(e - p), err, sizeof err);
            const codi_json *c = j ? codi_json_get(j, "condition") : NULL, *ix = j ? codi_json_get(j, "index") : NULL, *ok = j ? codi_json_get(j, "correct") : NULL;
            int ci = c && c->type == CODI_JSON_STR ? sweep_find(nm, c->str) : -1;
            if (ci >= 0 && ix && ix->type == CODI_JSON_NUM && ix->num >= 0 && ix->num < nq && ok) { grid[(size_t)ci * nq + (int)ix->num] = ok->type == CODI_JSON_TRUE; n++; }
            else fprintf(stderr, "%s:%d: %s (ignored)\n", path, line, j ? "not a result line of this sweep" : err);
            codi_json_free(j);
        }
        p = e + 1;
        if (good_len) *good_len = (long)(p - text);
    }
    free(text);
    return n;
}

/* A settings line with its shard blanked out (in a copy): the shards of one run compare equal. */
static char *sweep_unshard(const char *h) {
    char *u = cli_strdup(h), *p = u ? strstr(u, "\"shard\": \"") : NULL, *q;
    if (p && (q = strchr(p + 10, '"')) != NULL) { p[10] = '*'; memmove(p + 11, q, strlen(q) + 1); }
    return u;
}

/* Selection line <-> indices. */
static char *sweep_selection_line(const sweep_cond *c, const int *sel, int n) {
    size_t cap = 64 + (size_t)n * 170, len;
    char *s = (char *)malloc(cap);
    int i;
    if (!s) return NULL;
    len = (size_t)snprintf(s, cap, "{\"selected\": [");
    for (i = 0; i < n; i++) len += (size_t)snprintf(s + len, cap - len, "%s\"%s\"", i ? ", " : "", c[sel[i]].name);
    snprintf(s + len, cap - len, "]}");
    return s;
}

static int sweep_parse_selection(const char *line, const sweep_names *nm, int *sel, const char *where) {
    char err[256];
    codi_json *j = codi_json_parse(line, strlen(line), err, sizeof err);
    const codi_json *a = j ? codi_json_get(j, "selected") : NULL, *e;
    int n = 0;
    if (!a || a->type != CODI_JSON_ARR) { fprintf(stderr, "codi sweep: %s: no \"selected\" list%s%s\n", where, j ? "" : ": ", j ? "" : err); codi_json_free(j); return -1; }
    for (e = a->child; e; e = e->next) {
        int ci = e->type == CODI_JSON_STR ? sweep_find(nm, e->str) : -1;
        if (ci < 0 || nm->c[ci].role != SWEEP_CELL) { fprintf(stderr, "codi sweep: %s: \"%s\" is not a cell of this sweep\n", where, e->type == CODI_JSON_STR ? e->str : "?"); codi_json_free(j); return -1; }
        sel[n++] = ci;
    }
    codi_json_free(j);
    return n;
}

/* The confirmation set: round(F nq) questions of a seeded permutation of 0..nq-1 (whole questions;
   the same for every shard). */
static void sweep_split(int nq, double frac, int split_seed, unsigned char *confirm_q) {
    int *perm = (int *)malloc(sizeof(int) * (size_t)(nq ? nq : 1)), i, n_conf = (int)floor(frac * nq + 0.5);
    codi_rng rng;
    memset(confirm_q, 0, (size_t)nq);
    if (!perm || frac <= 0) { free(perm); return; }
    for (i = 0; i < nq; i++) perm[i] = i;
    codi_rng_seed(&rng, (uint64_t)split_seed * 2654435761ULL + 17);
    for (i = nq - 1; i > 0; i--) { int j = (int)(codi_rng_uniform(&rng) * (i + 1)), t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
    for (i = 0; i < n_conf; i++) confirm_q[perm[i]] = 1;
    free(perm);
}

/* The conditions a confirmation runs: the selected cells, their controls and baselines. */
static void sweep_confirm_active(const sweep_cond *c, int nc, const int *sel, int n_sel, unsigned char *active) {
    int i, k;
    memset(active, 0, (size_t)nc);
    for (k = 0; k < n_sel; k++) active[sel[k]] = 1;
    for (i = 0; i < nc; i++) {
        if (c[i].role == SWEEP_CONTROL && active[c[i].cell]) active[i] = 1;
    }
    for (i = 0; i < nc; i++) if (active[i] && c[i].base >= 0) active[c[i].base] = 1;
}

/* --- merge --------------------------------------------------------------------------------------- */

static int sweep_merge(char **files, int n_files, const char *dir, int auto_range) {
    char **hdr = (char **)calloc((size_t)n_files, sizeof(char *)), **selected = (char **)calloc((size_t)n_files, sizeof(char *)), *u0 = NULL, path[4096], err[256];
    codi_json *h = NULL;
    const codi_json *conds, *nqj, *cf, *ss, *qn, *e;
    sweep_cond *c = NULL;
    sweep_names nm;
    signed char *grid = NULL;
    unsigned char *confirm_q = NULL;
    int nc = 0, nq, i, rc = 1, n_sel_files = 0;
    long rows = 0;
    memset(&nm, 0, sizeof nm);
    if (!hdr || !selected) goto done;
    for (i = 0; i < n_files; i++) {                  /* DIR -> DIR/results.jsonl */
        char *u;
        snprintf(path, sizeof path, cli_is_dir(files[i]) ? "%s/results.jsonl" : "%s", files[i]);
        if (sweep_read_results(path, NULL, NULL, 0, &hdr[i], NULL, NULL) < 0 || !hdr[i]) { fprintf(stderr, "codi sweep: cannot read %s\n", path); goto done; }
        if (strncmp(hdr[i], "{\"codi_sweep\": ", 15)) { fprintf(stderr, "codi sweep: %s is not a codi sweep results file\n", path); goto done; }
        u = sweep_unshard(hdr[i]);
        if (!i) u0 = u;
        else {
            int same = u && u0 && !strcmp(u, u0);
            free(u);
            if (!same) { fprintf(stderr, "codi sweep: %s was made with other settings than %s (only --shard may differ)\n", path, files[0]); goto done; }
        }
    }
    if (!(h = codi_json_parse(hdr[0], strlen(hdr[0]), err, sizeof err))) { fprintf(stderr, "codi sweep: %s: settings line: %s\n", files[0], err); goto done; }
    conds = codi_json_get(h, "conditions"); nqj = codi_json_get(h, "n_questions"); cf = codi_json_get(h, "confirm");
    ss = codi_json_get(h, "split_seed"); qn = codi_json_get(h, "questions");
    if (!conds || conds->type != CODI_JSON_ARR || !nqj || nqj->type != CODI_JSON_NUM || !cf || cf->type != CODI_JSON_NUM || !ss || ss->type != CODI_JSON_NUM || !qn || qn->type != CODI_JSON_STR) {
        fprintf(stderr, "codi sweep: %s: the settings line lacks conditions / n_questions / confirm / split_seed / questions\n", files[0]); goto done;
    }
    nq = (int)nqj->num;
    c = (sweep_cond *)calloc((size_t)conds->count + 1, sizeof *c);
    grid = (signed char *)malloc((size_t)conds->count * (size_t)(nq ? nq : 1) + 1);
    confirm_q = (unsigned char *)malloc((size_t)(nq ? nq : 1));
    if (!c || !grid || !confirm_q) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    for (e = conds->child; e; e = e->next) if (e->type == CODI_JSON_STR) snprintf(c[nc++].name, sizeof c->name, "%s", e->str);
    if (sweep_link(c, nc, &nm)) goto done;
    memset(grid, -1, (size_t)nc * (size_t)nq);
    sweep_split(nq, cf->num, (int)ss->num, confirm_q);
    for (i = 0; i < n_files; i++) {
        char *hh;
        long r;
        snprintf(path, sizeof path, cli_is_dir(files[i]) ? "%s/results.jsonl" : "%s", files[i]);
        r = sweep_read_results(path, &nm, grid, nq, &hh, &selected[i], NULL);
        free(hh);
        if (r < 0) { fprintf(stderr, "codi sweep: cannot read %s\n", path); goto done; }
        rows += r;
        if (selected[i]) {
            n_sel_files++;
            if (n_sel_files > 1) {
                int k;
                for (k = 0; k < i && !selected[k]; k++) {}
                if (strcmp(selected[k], selected[i])) { fprintf(stderr, "codi sweep: %s confirms another selection than %s\n", files[i], files[k]); goto done; }
            }
        }
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) { fprintf(stderr, "codi sweep: cannot create %s\n", dir); goto done; }
    fprintf(stderr, "codi sweep: merged %d files: %ld results, %d conditions\n", n_files, rows, nc);
    if (cf->num > 0 && n_sel_files < n_files) {       /* shards explored: select on their union */
        const codi_json *top = codi_json_get(h, "confirm_top");
        sweep_stat *st = (sweep_stat *)malloc(sizeof *st * 2 * (size_t)nc);
        int *sel = (int *)malloc(sizeof(int) * (size_t)nc), n_sel, k, missing = 0;
        char *line;
        FILE *f;
        for (k = 0; k < nc; k++)
            for (i = 0; i < nq; i++) missing += !confirm_q[i] && grid[(size_t)k * nq + i] < 0;
        if (n_sel_files) { fprintf(stderr, "codi sweep: only %d of %d files confirm a selection: run the others with --selection\n", n_sel_files, n_files); free(st); free(sel); goto done; }
        if (missing || !st || !sel || sweep_stats(c, nc, grid, nq, confirm_q, st)) {
            fprintf(stderr, "codi sweep: the exploration is incomplete (%d results missing): finish every shard before selecting\n", missing); free(st); free(sel); goto done;
        }
        n_sel = sweep_rank(c, nc, st, top && top->type == CODI_JSON_NUM ? (int)top->num : 10, sel);
        line = sweep_selection_line(c, sel, n_sel);
        snprintf(path, sizeof path, "%s/selection.json", dir);
        if (!line) { fprintf(stderr, "codi sweep: out of memory\n"); free(st); free(sel); goto done; }
        if (!(f = cli_out_open(path, "w"))) { free(line); free(st); free(sel); goto done; }
        fprintf(f, "%s\n", line);
        if (cli_out_close(f)) { free(line); free(st); free(sel); goto done; }
        printf("selected %d cells on the exploration questions: %s\nnow run each shard again with --selection %s, then merge again\n\n", n_sel, path, path);
        free(line); free(st); free(sel);
    }
    rc = sweep_report(dir, c, nc, grid, nq, confirm_q, qn->str, auto_range, cf->num > 0 && n_sel_files == n_files);
done:
    for (i = 0; hdr && i < n_files; i++) free(hdr[i]);
    for (i = 0; selected && i < n_files; i++) free(selected[i]);
    free(hdr); free(selected); free(u0); free(c); free(grid); free(confirm_q); free(nm.order);
    codi_json_free(h);
    return rc;
}

/* --- mean vectors (as codi vectors), with per-dimension latent statistics for the noise ------------ */

static uint64_t sweep_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ULL; }
    return h;
}

typedef struct {
    codi_means *fin, *kv; const codi_model *m; const codi_tokenizer *t; codi_state *s; int N, recipe, failed;
    uint64_t hash;         /* of the prompts used (FNV-1a) */
    float *z;              /* [N+1, D] the latents of one run */
    double *zsum, *zsq;    /* [N+1, D] their sums and sums of squares over the questions */
} sweep_means_ctx;

static int sweep_mean_question(void *user, const cli_question *q) {
    sweep_means_ctx *mc = (sweep_means_ctx *)user;
    const codi_json *op = codi_json_get(q->obj, "op");
    codi_run_opts ro = codi_run_opts_default(mc->m);
    codi_run_result rr;
    int32_t ids[4096];
    int n = vectors_prompt(mc->m, mc->t, q, mc->recipe, ids, 4096);
    size_t j;
    ro.n_latent = mc->N; ro.latents = mc->z;
    if (n <= 0 || n + mc->N + 1 > mc->s->max_pos || codi_run_latents(mc->m, mc->s, ids, n, &ro, &rr) ||
        codi_means_add(mc->fin, mc->m, mc->s, rr.prompt_len) ||
        ((!op || (op->type == CODI_JSON_STR && !strcmp(op->str, "addition"))) && codi_means_add(mc->kv, mc->m, mc->s, rr.prompt_len))) {
        fprintf(stderr, "codi sweep: line %d: %s\n", q->line, n <= 0 ? "no usable prompt" : mc->s->error); mc->failed++;
        return 0;
    }
    for (j = 0; j < (size_t)(mc->N + 1) * mc->m->config.dim; j++) { mc->zsum[j] += mc->z[j]; mc->zsq[j] += (double)mc->z[j] * mc->z[j]; }
    mc->hash = sweep_fnv(mc->hash, ids, sizeof(int32_t) * (size_t)n);
    return 0;
}

typedef struct { sweep_question *q; int n, cap; const codi_model *m; const codi_tokenizer *t; int recipe; uint64_t hash; } sweep_list;

static int sweep_collect(void *user, const cli_question *cq) {
    sweep_list *sl = (sweep_list *)user;
    int32_t ids[4096];
    int n = vectors_prompt(sl->m, sl->t, cq, sl->recipe, ids, 4096);
    char gold[40];
    if (n <= 0) { fprintf(stderr, "codi sweep: line %d: no usable prompt (needs \"ids\" or a tokenizer)\n", cq->line); return -1; }
    if (sl->n == sl->cap) {
        sweep_question *g = (sweep_question *)realloc(sl->q, sizeof *g * (size_t)(sl->cap ? 2 * sl->cap : 256));
        if (!g) return -1;
        sl->q = g; sl->cap = sl->cap ? 2 * sl->cap : 256;
    }
    if (!(sl->q[sl->n].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n))) return -1;
    memcpy(sl->q[sl->n].ids, ids, sizeof(int32_t) * (size_t)n);
    sl->q[sl->n].n_ids = n; sl->q[sl->n].gold = cq->gold; sl->q[sl->n].has_gold = cq->has_gold;
    sl->q[sl->n].line = cq->line; sl->q[sl->n].qindex = cq->index;
    snprintf(gold, sizeof gold, cq->has_gold ? "%.17g;" : "-;", cq->gold);
    sl->hash = sweep_fnv(sweep_fnv(sl->hash, ids, sizeof(int32_t) * (size_t)n), gold, strlen(gold));
    sl->n++;
    return 0;
}

/* Builds each condition's edits (c[i].steer). zstats [N+1, 2, D]: per-dimension mean and std of the
   latents over the means questions. 0, or -1 after a message. */
static int sweep_build_steers(const codi_model *m, sweep_cond *c, int nc, const vectors_set *v, const double *zstats, const sweep_grid *g,
                              codi_steer **custom, int n_custom, int seed, int draw_question) {
    int i, j, p, l, h, KVD = m->config.n_kv_heads * m->config.head_dim;
    char err[256];
    for (i = 0; i < nc; i++) {
        sweep_cond *x = &c[i];
        codi_edit e = codi_edit_default();
        codi_steer *st = NULL;
        if (x->role == SWEEP_BASELINE) continue;
        if (x->role == SWEEP_CONTROL) {
            if (!draw_question && !(x->steer = codi_steer_random_like(c[x->cell].steer, sweep_seed((uint64_t)seed, x->name, -1)))) goto oom;
            continue;
        }
        for (p = x->b - x->a - 1, j = 1; j < x->a; j++) p += v->N - j;   /* the pair's index in (1,2), (1,3), ..., (N-1,N) */
        if (x->family == SWEEP_FAM_EMB) {             /* z_(l+1) += c diff(A, B) */
            e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.alpha = (float)x->coeff;
            e.vector = v->diff + (size_t)p * v->D; e.vector_len = v->D;
            if (!(st = codi_steer_new(m)) || codi_steer_add(st, &e, err, sizeof err)) goto bad;
        } else if (x->family == SWEEP_FAM_KV) {       /* K, V at latent l's slot += c (mean[B] - mean[A]) in the chosen layers */
            float *kd = (float *)malloc(sizeof(float) * (size_t)v->KV), *vd = (float *)malloc(sizeof(float) * (size_t)v->KV);
            int rc;
            if (!kd || !vd) { free(kd); free(vd); goto oom; }
            for (l = 0; l < m->config.n_layers; l++)
                for (h = 0; h < KVD; h++) {
                    size_t o = (size_t)l * KVD + h;
                    kd[o] = g->layer_on[l] ? v->key_diff[(size_t)p * v->KV + o] : 0;
                    vd[o] = g->layer_on[l] ? v->value_diff[(size_t)p * v->KV + o] : 0;
                }
            e.at = CODI_AT_KV_CACHE; e.when = e.pos_latent = x->l; e.alpha = (float)x->coeff;
            e.key_vector = kd; e.value_vector = vd; e.kv_len = v->KV;
            rc = !(st = codi_steer_new(m)) || codi_steer_add(st, &e, err, sizeof err);
            free(kd); free(vd);
            if (rc) goto bad;
        } else if (x->family == SWEEP_FAM_NOISE && !x->noise_dim) {   /* z_(l+1) := mean(z) + std(z) g, g ~ N(0, 1) seeded */
            char js[200];
            int k = atoi(strrchr(x->name, 's') + 1);
            snprintf(js, sizeof js, "{\"edits\": [{\"at\": \"latent_input\", \"op\": \"set\", \"random\": {\"seed\": %d, \"mean_std_of\": \"self\"}}]}", seed + 100 + k - 1);
            if (!(st = codi_steer_parse(m, js, strlen(js), NULL, err, sizeof err))) goto bad;
        } else if (x->family == SWEEP_FAM_NOISE) {   /* z_(l+1) := mu + sd g per dimension */
            int k = atoi(strrchr(x->name, 's') + 1) - 1, rc;
            float *z = (float *)malloc(sizeof(float) * (size_t)v->D);
            const double *mu = zstats + (size_t)x->l * 2 * v->D, *sd = mu + v->D;
            codi_rng rng;
            if (!z) goto oom;
            codi_rng_seed(&rng, (uint64_t)seed + 200 + 16 * (uint64_t)x->l + (uint64_t)k);
            for (j = 0; j < v->D; j++) z[j] = (float)(mu[j] + sd[j] * codi_rng_normal(&rng));
            e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.op = CODI_EDIT_SET; e.vector = z; e.vector_len = v->D;
            rc = !(st = codi_steer_new(m)) || codi_steer_add(st, &e, err, sizeof err);
            free(z);
            if (rc) goto bad;
        } else {                                      /* custom: the spec as loaded */
            for (j = 0; j < n_custom && (!custom[j] || strcmp(x->name + 7, custom[j]->name)); j++) {}
            if (j == n_custom) { fprintf(stderr, "codi sweep: %s: no such spec\n", x->name); return -1; }
            x->steer = custom[j]; custom[j] = NULL;
            continue;
        }
        x->steer = st;
        continue;
    bad:
        fprintf(stderr, "codi sweep: %s: %s\n", x->name, st ? err : "out of memory");
        codi_steer_free(st);
        return -1;
    }
    return 0;
oom:
    fprintf(stderr, "codi sweep: out of memory\n");
    return -1;
}

/* The settings line: everything that defines the work (a resume or a merge must match it). */
static char *sweep_header(const cli_model_args *ma, const char *questions, uint64_t qhash, int nq, const char *means_q, uint64_t means_hash, int means_limit, int limit,
                          int recipe, int N, int answer_tokens, int seed, const char *draw, double confirm, int confirm_top, int split_seed,
                          const char *layers, const uint64_t *spec_hash, int n_specs, int shard_k, int shard_n, const sweep_cond *c, int nc) {
    size_t cap = 4096 + (size_t)nc * 170, n;
    char *h = (char *)malloc(cap);
    int i;
    if (!h) return NULL;
    n = (size_t)snprintf(h, cap, "{\"codi_sweep\": 1, \"model\": \"%s\", \"base\": \"%s\", \"head_dim\": %d, \"lora_scale\": %.17g, \"exact\": %d, \"questions\": \"%s\", \"questions_hash\": \"%016llx\", \"n_questions\": %d, "
                         "\"limit\": %d, \"means_questions\": \"%s\", \"means_hash\": \"%016llx\", \"means_limit\": %d, \"recipe\": %d, \"latents\": %d, \"answer_tokens\": %d, \"seed\": %d, "
                         "\"random_draw\": \"%s\", \"confirm\": %.17g, \"confirm_top\": %d, \"split_seed\": %d, \"layers\": \"%s\", \"specs\": [",
                         ma->model, ma->base ? ma->base : "", ma->head_dim, ma->lora_scale, ma->exact, questions, (unsigned long long)qhash, nq, limit, means_q, (unsigned long long)means_hash, means_limit, recipe, N, answer_tokens, seed,
                         draw, confirm, confirm_top, split_seed, layers);
    for (i = 0; i < n_specs; i++) n += (size_t)snprintf(h + n, cap - n, "%s\"%016llx\"", i ? ", " : "", (unsigned long long)spec_hash[i]);
    n += (size_t)snprintf(h + n, cap - n, "], \"shard\": \"%d/%d\", \"conditions\": [", shard_k, shard_n);
    for (i = 0; i < nc; i++) n += (size_t)snprintf(h + n, cap - n, "%s\"%s\"", i ? ", " : "", c[i].name);
    snprintf(h + n, cap - n, "]}");
    return h;
}

typedef struct { sweep_runner run; const sweep_question *q; int batch, threads; codi_state *keep; double t_prefix, t_branch; int failed; } sweep_calib;

static int sweep_calib_keep(void *user, codi_state *s, int k, int n_latent) {
    sweep_calib *cb = (sweep_calib *)user;
    return k == n_latent - 1 ? codi_state_copy(cb->run.m, cb->keep, s) : 0;
}

static int sweep_calib_done(void *user, const codi_batch_result *r) {
    if (r->status) ((sweep_calib *)user)->failed = 1;
    return 0;
}

/* One calibration worker, as a sweep worker runs: a batch of cb->batch runs on cb->threads threads;
   the prompt and N latents timed as a run of it (keeping the state after N - 1; the second of two),
   then max(12, 4 batch) branches from that state timed as they advance together, half fed (z_N),
   half not. */
static void *sweep_calibrate(void *user) {
    sweep_calib *cb = (sweep_calib *)user;
    const codi_model *m = cb->run.m;
    int N = cb->run.N, nb = 4 * cb->batch > 12 ? 4 * cb->batch : 12, i;
    codi_batch *b = codi_batch_new(m, cb->batch, cb->q->n_ids + N + cb->run.answer_tokens + 2, cb->threads);
    codi_batch_request rq;
    double t0;
    cb->keep = codi_state_new_chunked(m, cb->q->n_ids + N + 2, 1, 1);
    cb->failed = !b || !cb->keep;
    memset(&rq, 0, sizeof rq);
    rq.ids = cb->q->ids; rq.n_ids = cb->q->n_ids;
    rq.opts = codi_run_opts_default(m); rq.opts.n_latent = N; rq.opts.max_answer = 0; rq.opts.feed_eot = 0;
    rq.opts.after_latent = sweep_calib_keep; rq.opts.after_latent_user = cb;
    for (i = 0; i < 2; i++) {                        /* the first warms the batch's memory and threads up */
        t0 = cli_now();
        if (!cb->failed && (codi_batch_submit(b, &rq) || codi_batch_run(b, sweep_calib_done, cb))) cb->failed = 1;
        cb->t_prefix = cli_now() - t0;
    }
    for (i = 0; i < nb && !cb->failed; i++) {
        memset(&rq, 0, sizeof rq);
        rq.prefix = cb->keep; rq.opts = codi_run_opts_default(m);
        rq.opts.n_latent = N - i % 2; rq.opts.max_answer = cb->run.answer_tokens;
        if (codi_batch_submit(b, &rq)) cb->failed = 1;
    }
    t0 = cli_now();
    if (!cb->failed && codi_batch_run(b, sweep_calib_done, cb)) cb->failed = 1;
    cb->t_branch = (cli_now() - t0) / nb;
    codi_batch_free(b); codi_state_free(cb->keep);
    return NULL;
}

/* --dry-run: the plan, and a time estimate from branches timed on this machine as the run would
   make them: one batch of --batch runs on all --threads (--batch 1: --threads workers at once). */
static void sweep_dry_run(const codi_model *m, const codi_tokenizer *t, const sweep_cond *c, int nc, const sweep_question *q, const int *todo, int n_todo,
                          int n_conf, int confirm_top, int random_controls, int N, int answer_tokens, int means_limit, int threads, int batch, int shard_n) {
    long fam[SWEEP_NFAM][3], branches = 0, conf_branches = 0, prompt = 0, steps_branch = 0;
    int i, f, zero_seen[1024][SWEEP_NFAM], workers = batch > 1 ? 1 : threads;
    double t_branch = 0, t_prefix = 0, t_means = 0, total;
    memset(fam, 0, sizeof fam); memset(zero_seen, 0, sizeof zero_seen);
    for (i = 0; i < nc; i++) {
        fam[c[i].family][c[i].role]++;
        if (c[i].zero && c[i].l < 1024) { if (zero_seen[c[i].l][c[i].family]++) continue; }
        branches++;
        steps_branch += (c[i].kind == SWEEP_FEED) + 1 + answer_tokens + (c[i].kind == SWEEP_RUN ? N : 0);
    }
    conf_branches = (long)confirm_top * (2 + random_controls);   /* each cell, its controls, its baseline at most */
    for (i = 0; i < n_todo; i++) prompt += q[todo[i]].n_ids;
    printf("plan: %d questions in this run (%d of them held out for confirmation), %d conditions:\n", n_todo, n_conf, nc);
    for (f = 0; f < SWEEP_NFAM; f++)
        if (fam[f][0] + fam[f][1] + fam[f][2])
            printf("  %-9s %5ld cells, %5ld random controls, %3ld baselines\n", sweep_fam_names[f], fam[f][1], fam[f][2], fam[f][0]);
    printf("  per exploration question: %ld branches (the alpha-0 cells share one per l and family), at most %ld decode steps + the prompt (%.1f tokens on average) and %d latents once\n",
           branches, steps_branch, n_todo ? (double)prompt / n_todo : 0.0, N);
    if (n_conf) printf("  per confirmation question: at most %ld branches (the top %d cells, their controls and baselines)\n", conf_branches, confirm_top);
    if (n_todo > 0) {
        sweep_calib *cb = (sweep_calib *)calloc((size_t)workers, sizeof *cb);
        pthread_t *th = (pthread_t *)malloc(sizeof *th * (size_t)workers);
        codi_state *s = codi_state_new(m, q[todo[0]].n_ids + N + 2, 1);
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        int ok = cb && th && s;
        double t0 = cli_now();
        ro.n_latent = N;                              /* the means phase: one question at a time on one thread */
        if (ok) ok = codi_run_latents(m, s, q[todo[0]].ids, q[todo[0]].n_ids, &ro, &rr) == 0;
        t_means = cli_now() - t0;
        codi_state_free(s);
        for (i = 0; ok && i < workers; i++) {
            cb[i].run.m = m; cb[i].run.t = t; cb[i].run.N = N; cb[i].run.answer_tokens = answer_tokens; cb[i].q = &q[todo[i % n_todo]];
            cb[i].batch = batch; cb[i].threads = batch > 1 ? threads : 1;
            pthread_create(&th[i], NULL, sweep_calibrate, &cb[i]);
        }
        for (i = 0; ok && i < workers; i++) pthread_join(th[i], NULL);
        for (i = 0; ok && i < workers; i++) { ok = !cb[i].failed; t_prefix += cb[i].t_prefix / workers; t_branch += cb[i].t_branch / workers; }
        free(cb); free(th);
        if (!ok) { fprintf(stderr, "codi sweep: the calibration run failed\n"); return; }
    }
    total = ((double)(n_todo - n_conf) * (branches * t_branch + t_prefix) + (double)n_conf * (conf_branches * t_branch + t_prefix)) / workers + means_limit * t_means;
    printf("calibration: %.2f ms per branch (%d answer tokens; %d at once in a batch of %d on %d thread%s%s), %.2f ms per prompt + %d latents (a run of the batch), "
           "%.2f ms per mean-vector question (one thread), on this machine now\n",
           1e3 * t_branch, answer_tokens, 4 * batch > 12 ? 4 * batch : 12, batch, batch > 1 ? threads : 1, batch > 1 && threads > 1 ? "s" : "",
           workers > 1 ? ", one such batch per thread" : "", 1e3 * t_prefix, N, 1e3 * t_means);
    printf("estimate: %.2f hours (%.0f minutes) for this run on %d thread%s, batch %d", total / 3600, total / 60, threads, threads > 1 ? "s" : "", batch);
    if (shard_n > 1) printf("; it is one of %d shards", shard_n);
    else printf("; with 8 shards on 8 such machines about %.2f hours (%.0f minutes) each", total / 3600 / 8, total / 60 / 8);
    printf("\n");
}

static int sweep_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *questions = NULL, *means_questions = NULL, *dir = NULL, *dump = NULL, *coeffs = "-1,0,0.5,1,2,5", *kv_coeffs = "-0.5,-2,-5,0";
    const char *steps = NULL, *pairs = NULL, *layers = NULL, *draw = "cell", *shard = NULL, *selection = NULL;
    int limit = 0, means_limit = 500, recipe = 0, latents = 6, seed = 1, answer_tokens = 1, rc = 1, prc, n_bad = 0, i, workers, threads, random_controls = 1, batch = CLI_BATCH_DEFAULT;
    int noise_seeds = 3, confirm_top = 10, split_seed = 1, shard_k = 0, shard_n = 0, merge = 0, dry_run = 0, auto_range = 0;
    double confirm = 0;
    cli_list specs;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "the evaluation questions (\"question\" or \"ids\", \"answer\"; e.g. data/templates.jsonl)" },
        { "--limit", CLI_INT, &limit, 0, 100000000, "N", "only the first N evaluation questions (default all)" },
        { "--means-questions", CLI_STR, &means_questions, 0, 0, "FILE.jsonl", "questions for the mean vectors (default: --questions)" },
        { "--means-limit", CLI_INT, &means_limit, 1, 100000000, "N", "questions for the mean vectors (default 500)" },
        CLI_RECIPE_OPT(&recipe),
        CLI_LATENTS_OPT(&latents, 2, SWEEP_MAXN),
        CLI_MAX_ANSWER_OPT(&answer_tokens, 1, 1 as in the sprint; more for models that write words first),
        { "--answer-tokens", CLI_INT, &answer_tokens, 1, 1024, NULL, NULL },
        { "--steps", CLI_STR, &steps, 0, 0, "LIST", "the l of the embedding, KV and noise cells, e.g. 1-3,5 (default 1..N)" },
        { "--pairs", CLI_STR, &pairs, 0, 0, "LIST", "pairs (A, B) of the mean differences, e.g. 1-2,3-4 (default every A < B)" },
        { "--coeffs", CLI_STR, &coeffs, 0, 0, "LIST", "embedding coefficients (default -1,0,0.5,1,2,5; none: no embedding cells)" },
        { "--kv-coeffs", CLI_STR, &kv_coeffs, 0, 0, "LIST", "KV coefficients (default -0.5,-2,-5,0; none: no KV cells)" },
        { "--layers", CLI_STR, &layers, 0, 0, "LIST", "layers whose K and V the KV cells edit, e.g. 0-3 (default all)" },
        { "--noise-seeds", CLI_INT, &noise_seeds, 0, 100, "N", "noise cells per l and kind (default 3; 0: none)" },
        { "--steer", CLI_LIST, &specs, 0, 0, "SPEC.json", "a custom cell: a spec as codi eval --steer takes, over a whole run of N latents (repeatable)" },
        { "--random-controls", CLI_INT, &random_controls, 0, 100, "N", "random controls per cell (default 1); p_vs_random uses the first" },
        { "--random-draw", CLI_STR, &draw, 0, 0, "cell|question", "one random draw per control condition (default) or per question" },
        { "--seed", CLI_INT, &seed, 0, 1000000, "S", "seed of the random directions and noise (default 1)" },
        { "--confirm", CLI_DOUBLE, &confirm, 0, 0.9, "F", "hold out a fraction F of the questions; confirm the top cells of the rest on them (default 0: none)" },
        { "--confirm-top", CLI_INT, &confirm_top, 1, 10000, "K", "cells re-evaluated on the held-out questions (default 10)" },
        { "--split-seed", CLI_INT, &split_seed, 0, 1000000, "S", "seed of the exploration / confirmation split (default 1)" },
        { "--selection", CLI_STR, &selection, 0, 0, "FILE.json", "with --shard and --confirm: the cells --merge selected on the shards' exploration" },
        { "--shard", CLI_STR, &shard, 0, 0, "K/N", "questions K-1, K-1+N, ... (1 <= K <= N): one of N machines; join with --merge" },
        { "--merge", CLI_FLAG, &merge, 0, 0, NULL, "--merge DIR1 DIR2 ... --out DIR: join the shards' results and report on their union" },
        { "--dry-run", CLI_FLAG, &dry_run, 0, 0, NULL, "print the plan and a time estimate from a few timed branches; run nothing else" },
        { "--auto-range", CLI_FLAG, &auto_range, 0, 0, NULL, "heatmaps of accuracy on the data's range (default: a fixed 0-1 scale)" },
        { "--out", CLI_STR, &dir, 0, 0, "DIR", "output folder (created; an existing results.jsonl of the same settings is resumed)" },
        { "--dump-logits", CLI_STR, &dump, 0, 0, "FILE.safetensors", "the first question's first answer logits of the diff cells (checks)" },
        { "--batch", CLI_INT, &batch, 1, 1024, "N", "branches advanced together through one pass over the weights (codi_batch_*) on all --threads; "
          "1: one branch at a time per thread; default " CLI_QUOTE(CLI_BATCH_DEFAULT) " (its memory: above)" },
        CLI_END
    };
    char **rest = (char **)malloc(sizeof(char *) * (size_t)(argc + 1)), **files = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int n_rest = 0, n_files = 0;
    sweep_grid g;
    sweep_cond_list cl;
    sweep_names nm;
    sweep_list sl;
    sweep_ctx sc;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_means fin, kvm;
    vectors_set vs;
    double *zstats = NULL;
    codi_steer *custom[CLI_LIST_MAX + 1];
    char *custom_names[CLI_LIST_MAX], *header = NULL, *old_header = NULL, *old_sel = NULL, path[4096];
    int has_control[CLI_LIST_MAX], *sel = NULL, n_sel = 0;
    uint64_t spec_hash[CLI_LIST_MAX], means_hash = 0;
    unsigned char *confirm_q = NULL, *active = NULL;
    memset(&g, 0, sizeof g); memset(&cl, 0, sizeof cl); memset(&nm, 0, sizeof nm); memset(&sl, 0, sizeof sl); memset(&sc, 0, sizeof sc);
    memset(&fin, 0, sizeof fin); memset(&kvm, 0, sizeof kvm); memset(&vs, 0, sizeof vs); memset(&specs, 0, sizeof specs); memset(custom, 0, sizeof custom);
    if (!rest || !files) { free(rest); free(files); return 1; }
    for (i = 0; i < argc; i++) {                     /* the files after --merge */
        if (i > 0 && argv[i][0] != '-' && (!strcmp(argv[i - 1], "--merge") || (n_files && !strcmp(argv[i - 1], files[n_files - 1])))) files[n_files++] = argv[i];
        else rest[n_rest++] = argv[i];
    }
    rest[n_rest] = NULL;
    if ((prc = cli_parse(self, opts, n_rest, rest)) != CLI_OK) { rc = prc == CLI_HELP ? 0 : 2; goto done; }
    if (merge) {
        if (n_files < 1 || !dir) { fprintf(stderr, "codi sweep: --merge needs result folders (or files) and --out DIR\n"); rc = 2; goto done; }
        if (cli_out_check("sweep", dir, CLI_OUT_DIR | CLI_OUT_RESUME, 0, (const char *const *)files, n_files)) { rc = 2; goto done; }
        rc = sweep_merge(files, n_files, dir, auto_range);
        goto done;
    }
    rc = 2;
    if (cli_check_args(self, &ma, NULL)) goto done;
    if (!questions || !dir) { fprintf(stderr, "codi sweep: needs --questions and --out DIR (codi sweep --help)\n"); goto done; }
    if (strcmp(draw, "cell") && strcmp(draw, "question")) { fprintf(stderr, "codi sweep: --random-draw must be cell or question, not '%s'\n", draw); goto done; }
    if (shard && cli_parse_shard(shard, &shard_k, &shard_n)) goto done;
    if (selection && !(confirm > 0)) { fprintf(stderr, "codi sweep: --selection goes with --confirm\n"); goto done; }
    {   /* the outputs, before any work: DIR and --dump-logits are written again when the run resumes */
        const char *in[CLI_LIST_MAX + 5];
        int n_in = 0;
        in[n_in++] = ma.model; in[n_in++] = ma.tokenizer; in[n_in++] = questions; in[n_in++] = means_questions; in[n_in++] = selection;
        for (i = 0; i < specs.n; i++) in[n_in++] = specs.v[i];
        if (!dry_run && cli_out_check("sweep", dir, CLI_OUT_DIR | CLI_OUT_RESUME, 0, in, n_in)) goto done;
        if (!dry_run && mkdir(dir, 0777) != 0 && errno != EEXIST) { fprintf(stderr, "codi sweep: cannot create %s: %s\n", dir, strerror(errno)); goto done; }
        if (!dry_run && dump && cli_out_check("sweep", dump, CLI_OUT_RESUME, 0, in, n_in)) goto done;   /* in DIR or beside it, part of the run */
    }
    g.N = latents; g.noise_seeds = noise_seeds; g.random_controls = random_controls;
    {
        unsigned char on[1024];
        memset(on, 0, sizeof on);
        if (steps) { if ((g.n_steps = sweep_parse_range("--steps", steps, 1, latents, g.steps, on)) < 0) goto done; }
        else for (g.n_steps = 0; g.n_steps < latents; g.n_steps++) g.steps[g.n_steps] = g.n_steps + 1;
        for (i = 1; i < g.n_steps; i++) { int j, x; for (j = i; j > 0 && g.steps[j - 1] > g.steps[j]; j--) { x = g.steps[j]; g.steps[j] = g.steps[j - 1]; g.steps[j - 1] = x; } }
        if (pairs) { if ((g.n_pairs = sweep_parse_pairs(pairs, latents, g.pa, g.pb)) < 0) goto done; }
        else { int a, b; for (a = 1; a <= latents; a++) for (b = a + 1; b <= latents; b++) { g.pa[g.n_pairs] = a; g.pb[g.n_pairs++] = b; } }
        if ((g.n_coeffs = sweep_parse_numbers("--coeffs", coeffs, g.coeffs)) < 0 || (g.n_kv = sweep_parse_numbers("--kv-coeffs", kv_coeffs, g.kv_coeffs)) < 0) goto done;
    }
    threads = cli_threads_checked(&ma);
    workers = batch > 1 ? 1 : threads;     /* one batched runner on every thread, or one runner of 1 per thread */
    rc = 1;
    if (!(m = cli_load_model(&ma))) goto done;
    if (layers) { if (sweep_parse_range("--layers", layers, 0, m->config.n_layers - 1, NULL, g.layer_on) < 0) { rc = 2; goto done; } }
    else memset(g.layer_on, 1, (size_t)m->config.n_layers);
    t = cli_load_tokenizer(&ma, m, 1);
    if (!t) fprintf(stderr, "codi sweep: note: no tokenizer: answers cannot be scored (accuracy 0); logits are still dumped\n");
    for (i = 0; i < specs.n; i++) {                  /* custom cells, and whether a random control differs from them */
        char err[512];
        size_t len;
        char *text = codi_read_text(specs.v[i], &len);
        codi_steer *r;
        int j;
        if (!(custom[i] = codi_steer_load(m, specs.v[i], err, sizeof err))) { fprintf(stderr, "codi sweep: %s\n", err); free(text); goto done; }
        spec_hash[i] = text ? sweep_fnv(1469598103934665603ULL, text, len) : 0;
        free(text);
        custom_names[i] = custom[i]->name;
        if (!custom[i]->name[0] || strpbrk(custom[i]->name, "/\"\\, ")) { fprintf(stderr, "codi sweep: %s: give the spec a \"name\" without / \" \\ , or spaces\n", specs.v[i]); rc = 2; goto done; }
        for (j = 0; j < i; j++) if (!strcmp(custom[j]->name, custom[i]->name)) { fprintf(stderr, "codi sweep: %s: the name \"%s\" is taken\n", specs.v[i], custom[i]->name); rc = 2; goto done; }
        if (!(r = codi_steer_random_like(custom[i], 1))) goto done;
        has_control[i] = !sweep_same_vectors(custom[i], r);
        codi_steer_free(r);
        if (!has_control[i] && random_controls)
            fprintf(stderr, "codi sweep: note: %s: its vectors have norm 0, so a random control of the same norms is the spec itself: none; tested against the baseline\n", specs.v[i]);
    }
    if (sweep_grid_conditions(&g, custom_names, has_control, specs.n, &cl) || !cl.n) { fprintf(stderr, "codi sweep: %s\n", cl.n ? "out of memory" : "no conditions (the grid is empty)"); goto done; }
    if (sweep_link(cl.c, cl.n, &nm)) goto done;
    /* the questions: all of them (up to --limit), hashed; the split before the shard */
    sl.m = m; sl.t = t; sl.recipe = recipe; sl.hash = 1469598103934665603ULL;
    if (cli_for_each_question(questions, limit, 0, 0, sweep_collect, &sl, &n_bad) || !sl.n) { fprintf(stderr, "codi sweep: no questions in %s\n", questions); goto done; }
    confirm_q = (unsigned char *)malloc((size_t)sl.n);
    sc.todo = (int *)malloc(sizeof(int) * (size_t)sl.n);
    active = (unsigned char *)malloc((size_t)cl.n);
    sel = (int *)malloc(sizeof(int) * (size_t)cl.n);
    sc.grid = (signed char *)malloc((size_t)cl.n * (size_t)sl.n);
    if (!confirm_q || !sc.todo || !active || !sel || !sc.grid) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    memset(sc.grid, -1, (size_t)cl.n * (size_t)sl.n);
    sweep_split(sl.n, confirm, split_seed, confirm_q);
    for (i = 0; i < sl.n; i++) if (sl.q[i].n_ids > sc.max_ids) sc.max_ids = sl.q[i].n_ids;
    if (dry_run) {
        int n_todo = 0, n_conf = 0;
        for (i = 0; i < sl.n; i++) if (shard_n <= 1 || i % shard_n == shard_k - 1) { sc.todo[n_todo++] = i; n_conf += confirm_q[i]; }
        sweep_dry_run(m, t, cl.c, cl.n, sl.q, sc.todo, n_todo, n_conf, confirm > 0 ? confirm_top : 0, random_controls, latents, answer_tokens, means_limit, threads, batch, shard_n);
        rc = 0; goto done;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) { fprintf(stderr, "codi sweep: cannot create %s\n", dir); goto done; }
    /* 1. mean vectors */
    if (codi_means_init(&fin, m, latents) || codi_means_init(&kvm, m, latents)) { fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
    {
        sweep_means_ctx mc;
        char cnt[32], sd[16];
        const char *meta[] = { "format", "codi_lens.vectors.v1", "model", ma.model, "source", means_questions ? means_questions : questions,
                               "questions", cnt, "seed", sd, "keys", "K / V means over the questions with \"op\": \"addition\" (all when there is no op)", NULL };
        size_t nz = (size_t)(latents + 1) * m->config.dim, j;
        memset(&mc, 0, sizeof mc);
        mc.fin = &fin; mc.kv = &kvm; mc.m = m; mc.t = t; mc.N = latents; mc.recipe = recipe; mc.hash = 1469598103934665603ULL;
        mc.s = codi_state_new(m, 4096 + latents + 2, 1);
        mc.z = (float *)malloc(sizeof(float) * nz); mc.zsum = (double *)calloc(nz, sizeof(double)); mc.zsq = (double *)calloc(nz, sizeof(double));
        zstats = (double *)malloc(sizeof(double) * 2 * nz);
        if (!mc.s || !mc.z || !mc.zsum || !mc.zsq || !zstats ||
            cli_for_each_question(means_questions ? means_questions : questions, means_limit, 0, 0, sweep_mean_question, &mc, &n_bad) || !fin.count || !kvm.count) {
            fprintf(stderr, "codi sweep: no mean vectors (%ld questions, %ld for K/V)\n", fin.count, kvm.count);
            codi_state_free(mc.s); free(mc.z); free(mc.zsum); free(mc.zsq); goto done;
        }
        for (j = 0; j < nz; j++) {                   /* per latent k and dimension: mean, std */
            size_t k = j / (size_t)m->config.dim, d = j % (size_t)m->config.dim;
            double mu = mc.zsum[j] / fin.count, var = mc.zsq[j] / fin.count - mu * mu;
            zstats[(k * 2) * m->config.dim + d] = mu;
            zstats[(k * 2 + 1) * m->config.dim + d] = var > 0 ? sqrt(var) : 0;
        }
        codi_state_free(mc.s); free(mc.z); free(mc.zsum); free(mc.zsq);
        means_hash = mc.hash;
        snprintf(cnt, sizeof cnt, "%ld", fin.count); snprintf(sd, sizeof sd, "%d", seed);
        snprintf(path, sizeof path, "%s/vectors.safetensors", dir);
        if (vectors_build(&vs, &fin, &kvm, seed) || vectors_save(path, m, &vs, fin.count, meta)) goto done;
    }
    if (sweep_build_steers(m, cl.c, cl.n, &vs, zstats, &g, custom, specs.n, seed, !strcmp(draw, "question"))) goto done;
    /* the results file: resumed when its settings match */
    header = sweep_header(&ma, questions, sl.hash, sl.n, means_questions ? means_questions : questions, means_hash, means_limit, limit, recipe, latents, answer_tokens, seed,
                          draw, confirm, confirm_top, split_seed, layers ? layers : "all", spec_hash, specs.n, shard_k, shard_n, cl.c, cl.n);
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    {
        long good = 0, n_old = sweep_read_results(path, &nm, sc.grid, sl.n, &old_header, &old_sel, &good);
        if (!header) goto done;
        if (n_old >= 0 && old_header && strcmp(old_header, header)) {
            fprintf(stderr, "codi sweep: %s holds results of other settings (options, grid, shard or questions differ); give another --out or delete it\n", path);
            goto done;
        }
        if (n_old > 0) fprintf(stderr, "codi sweep: resuming %s: %ld results already there\n", path, n_old);
        if (n_old >= 0 && truncate(path, good) != 0) { fprintf(stderr, "codi sweep: cannot truncate %s\n", path); goto done; }
        if (!(sc.out = fopen(path, "a"))) { fprintf(stderr, "codi sweep: cannot write %s\n", path); goto done; }
        snprintf(sc.out_path, sizeof sc.out_path, "%s", path);
        if (!old_header) { fprintf(sc.out, "%s\n", header); if (cli_out_flush(sc.out, path)) goto done; }
    }
    sc.run.m = m; sc.run.t = t; sc.run.N = latents; sc.run.answer_tokens = answer_tokens;
    sc.c = cl.c; sc.nc = cl.n; sc.q = sl.q; sc.nq = sl.n; sc.confirm_q = confirm_q; sc.active = active;
    sc.draw_question = !strcmp(draw, "question"); sc.seed = (uint64_t)seed; sc.dump_q = -1;
    sc.batch = batch; sc.batch_threads = batch > 1 ? threads : 1;
    if (dump) {                                       /* [steps, pairs, coeffs, V-1] per family, the diff cells */
        size_t V1 = (size_t)m->config.vocab - 1;
        float *emb = (float *)calloc((size_t)g.n_steps * g.n_pairs * (g.n_coeffs ? g.n_coeffs : 1) * V1, sizeof(float));
        float *kv = (float *)calloc((size_t)g.n_steps * g.n_pairs * (g.n_kv ? g.n_kv : 1) * V1, sizeof(float));
        int dumped = 0;
        sc.dump = (float **)calloc((size_t)cl.n, sizeof(float *));
        if (!emb || !kv || !sc.dump) { free(emb); free(kv); fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
        for (i = 0; i < cl.n; i++) {
            const sweep_cond *x = &cl.c[i];
            int s, p, k;
            if (x->role != SWEEP_CELL || (x->family != SWEEP_FAM_EMB && x->family != SWEEP_FAM_KV)) continue;
            for (s = 0; g.steps[s] != x->l; s++) {}
            for (p = 0; g.pa[p] != x->a || g.pb[p] != x->b; p++) {}
            if (x->family == SWEEP_FAM_EMB) { for (k = 0; g.coeffs[k] != x->coeff; k++) {} sc.dump[i] = emb + (((size_t)s * g.n_pairs + p) * g.n_coeffs + k) * V1; }
            else { for (k = 0; g.kv_coeffs[k] != x->coeff; k++) {} sc.dump[i] = kv + (((size_t)s * g.n_pairs + p) * g.n_kv + k) * V1; }
        }
        for (i = 0; i < cl.n && !dumped; i++) dumped = sc.grid[(size_t)i * sl.n] >= 0;
        if (!confirm_q[0] && (shard_n <= 1 || shard_k == 1) && !dumped) {   /* question 0 first; its rows are kept like any other */
            codi_safetensors_entry e[2];
            sc.todo[0] = 0; sc.n_todo = 1; sc.dump_q = 0;
            memset(active, 1, (size_t)cl.n);
            sweep_phase(&sc, 1, "sweep question 0 (logits)");
            memset(e, 0, sizeof e);
            e[0].name = "emb_logits"; e[0].dtype = CODI_F32; e[0].data = emb; e[0].ndim = 4;
            e[0].shape[0] = g.n_steps; e[0].shape[1] = g.n_pairs; e[0].shape[2] = g.n_coeffs; e[0].shape[3] = (int64_t)V1;
            e[1] = e[0]; e[1].name = "kv_logits"; e[1].data = kv; e[1].shape[2] = g.n_kv;
            if (cli_out_safetensors(dump, e, 2, NULL)) { free(emb); free(kv); goto done; }
        } else fprintf(stderr, "codi sweep: --dump-logits: question 0 is not among this run's exploration questions still to run; nothing dumped\n");
        free(emb); free(kv); free(sc.dump); sc.dump = NULL; sc.dump_q = -1;
    }
    /* 2. exploration: every condition on this shard's exploration questions */
    sc.n_todo = 0;
    for (i = 0; i < sl.n; i++) if ((shard_n <= 1 || i % shard_n == shard_k - 1) && !confirm_q[i]) sc.todo[sc.n_todo++] = i;
    memset(active, 1, (size_t)cl.n);
    fprintf(stderr, "codi sweep: %d questions (%d exploration here) x %d conditions on %d thread%s, batch %d (%d run and at most %d prefix states of %.1f MB)\n",
            sl.n, sc.n_todo, cl.n, threads, threads > 1 ? "s" : "", batch, workers * batch, workers * sweep_max_prefix(latents, batch),
            sweep_state_mb(m, sc.max_ids + latents + answer_tokens + 2));
    sweep_phase(&sc, workers, "sweep explore");
    if (sc.write_failed) { fprintf(stderr, "codi sweep: stopped: %s could not be written (see above); free space and run the command again to resume it\n", sc.out_path); goto done; }
    if (sc.failed) { fprintf(stderr, "codi sweep: %ld results failed (see above); run the command again to retry them\n", sc.failed); goto done; }
    /* 3. confirmation: the top cells of the exploration, on the held-out questions */
    if (confirm > 0) {
        if (old_sel && selection) {                  /* a resumed confirmation: the same selection */
            size_t len;
            char *text = codi_read_text(selection, &len), *line = text ? strtok(text, "\n") : NULL;
            int same = line && !strcmp(line, old_sel);
            free(text);
            if (!same) { fprintf(stderr, "codi sweep: %s confirms another selection than %s\n", path, selection); goto done; }
        }
        if (old_sel) n_sel = sweep_parse_selection(old_sel, &nm, sel, path);
        else if (selection) {
            char *line = NULL;
            size_t len;
            char *text = codi_read_text(selection, &len);
            if (!text) { fprintf(stderr, "codi sweep: cannot read %s\n", selection); goto done; }
            line = strtok(text, "\n");
            n_sel = line ? sweep_parse_selection(line, &nm, sel, selection) : -1;
            if (n_sel >= 0) {
                char *sl_line = sweep_selection_line(cl.c, sel, n_sel);
                int wbad = !sl_line || fprintf(sc.out, "%s\n", sl_line) < 0 || cli_out_flush(sc.out, path);
                free(sl_line);
                if (wbad) { free(text); goto done; }
            }
            free(text);
        } else if (shard_n > 1) {
            i = fclose(sc.out); sc.out = NULL;
            if (i) { fprintf(stderr, "codi sweep: error writing %s: %s\n", path, strerror(errno)); goto done; }
            printf("shard %d/%d explored. Merge the shards (codi sweep --merge DIR1 DIR2 ... --out M) to select the top %d cells on all the\n"
                   "exploration questions, then run each shard again with --selection M/selection.json to confirm them\n", shard_k, shard_n, confirm_top);
            rc = sweep_report(dir, cl.c, cl.n, sc.grid, sl.n, confirm_q, questions, auto_range, 0);
            goto done;
        } else {
            sweep_stat *st = (sweep_stat *)malloc(sizeof *st * 2 * (size_t)cl.n);
            char *line;
            if (!st || sweep_stats(cl.c, cl.n, sc.grid, sl.n, confirm_q, st)) { free(st); fprintf(stderr, "codi sweep: out of memory\n"); goto done; }
            n_sel = sweep_rank(cl.c, cl.n, st, confirm_top, sel);
            free(st);
            if (!(line = sweep_selection_line(cl.c, sel, n_sel))) goto done;
            i = fprintf(sc.out, "%s\n", line) < 0 || cli_out_flush(sc.out, path);
            free(line);
            if (i) goto done;
        }
        if (n_sel < 0) goto done;
        sweep_confirm_active(cl.c, cl.n, sel, n_sel, active);
        sc.n_todo = 0;
        for (i = 0; i < sl.n; i++) if ((shard_n <= 1 || i % shard_n == shard_k - 1) && confirm_q[i]) sc.todo[sc.n_todo++] = i;
        fprintf(stderr, "codi sweep: confirming %d cells on %d held-out questions\n", n_sel, sc.n_todo);
        sweep_phase(&sc, workers, "sweep confirm");
    if (sc.write_failed) { fprintf(stderr, "codi sweep: stopped: %s could not be written (see above); free space and run the command again to resume it\n", sc.out_path); goto done; }
        if (sc.failed) { fprintf(stderr, "codi sweep: %ld results failed (see above); run the command again to retry them\n", sc.failed); goto done; }
    }
    i = fclose(sc.out); sc.out = NULL;
    if (i) { fprintf(stderr, "codi sweep: error writing %s: %s\n", path, strerror(errno)); goto done; }
    rc = sweep_report(dir, cl.c, cl.n, sc.grid, sl.n, confirm_q, questions, auto_range, confirm > 0);
    if (confirm > 0 && shard_n > 1) printf("(this shard's confirmation only: merge the shards for the whole report)\n");
done:
    if (sc.out) fclose(sc.out);
    for (i = 0; i < cl.n; i++) codi_steer_free(cl.c[i].steer);
    for (i = 0; i < specs.n; i++) codi_steer_free(custom[i]);
    for (i = 0; i < sl.n; i++) free(sl.q[i].ids);
    free(sl.q); free(cl.c); free(nm.order); free(zstats); free(header); free(old_header); free(old_sel);
    free(confirm_q); free(sc.todo); free(active); free(sel); free(sc.grid); free(sc.dump);
    vectors_free(&vs);
    codi_means_free(&fin); codi_means_free(&kvm);
    codi_tokenizer_free(t);
    codi_model_free(m);
    free(rest); free(files);
    return rc;
}

static const cli_command cmd_sweep = {
    "sweep", "the Latent Reasoning Sprint's steering protocols as a controlled, corrected, resumable experiment",
    "codi sweep --model PATH --questions FILE.jsonl --out DIR [grid and test options]\n"
    "       codi sweep --merge DIR1 DIR2 ... --out DIR",
    "1. mean vectors over --means-limit questions (codi vectors): DIR/vectors.safetensors;\n"
    "2. cells, each with a random control of the same norms (.../random: Gaussian directions, per vector,\n"
    "   per layer and kv head for K and V separately) and its baseline:\n"
    "   emb/lL/aAbB/cC/diff     L latents, then z_(L+1) = prj(h) + C diff(A, B)      baseline base/lL/emb\n"
    "   kv/lL/aAbB/cC/diff      L latents, K and V at latent L's slot += C (mean[B] - mean[A]) in --layers\n"
    "                                                                                 baseline base/lL/kv\n"
    "   noise/lL/self/sK        z_(L+1) := Gaussian of its own mean and std (no control) baseline base/lL/emb\n"
    "   noise/lL/dim/sK         z_(L+1) := per-dimension mean + std g (means questions) baseline base/lL/emb\n"
    "   custom/NAME             a --steer spec over a whole run                        baseline base/run\n"
    "   then eot and --max-answer greedy tokens; the last number is scored. base/lL/emb is L + 1 plain\n"
    "   latents, base/lL/kv L plain latents. Per question the prompt and L latents are computed once.\n"
    "3. every result -> DIR/results.jsonl (one line per condition and question, a question's lines flushed\n"
    "   together when its last branch ends; run the same command again to resume; other settings are\n"
    "   refused);\n"
    "4. per cell on the same questions: McNemar's exact p vs the baseline and vs the first random control,\n"
    "   flips, the paired difference with its 95% interval; p_primary = vs the control (else the baseline);\n"
    "   Holm and BH within each family (embedding, kv, noise, custom); * = survives Holm at 0.05;\n"
    "5. --confirm F: a seeded split by whole questions; cells are ranked on the exploration part only and\n"
    "   the top --confirm-top re-run (with controls and baselines) on the held-out part, corrected over\n"
    "   those K: the report leads with them.\n"
    "Writes DIR/summary.jsonl and summary.csv (one line per condition and split: condition, family, role,\n"
    "split, n, correct, accuracy, ci_low, ci_high, diff_vs_baseline and its interval, flips_to_right,\n"
    "flips_to_wrong, p_vs_baseline, p_vs_random, p_primary, p_holm, q_bh, survives) and SVG heatmaps.\n\n"
    "The branches go through the batched runner: --batch N of them (of one question or several) advance\n"
    "together, one pass over the weights per step, on all --threads; the prompt and latents of each question\n"
    "run once, in the same passes, and the state after each L is copied for its branches. --batch 1: one\n"
    "branch at a time per thread (codi_run's results bit for bit; a larger batch agrees within float\n"
    "rounding). Memory besides the weights: N run states and at most 2 max(--latents, N) prefix states\n"
    "(--batch 1: per thread), each 4 ((layers + 1) dim + 2 layers kv_heads head_dim) bytes per position of\n"
    "the longest prompt + latents + answer: at the 1B's shapes 0.2 MB per position, ~12 MB for 60\n"
    "positions, so --batch 32 holds up to 96 states, ~1.2 GB (a run's first line prints its own figure).\n\n"
    "Examples:\n"
    "  codi sweep --model models/codi-nano/codi_nano.bin --exact --questions models/codi-nano/test.jsonl --limit 200 --max-answer 12 \\\n"
    "             --steps 1-3 --pairs 1-2,3-4 --coeffs 0,2 --kv-coeffs -5,0 --noise-seeds 1 --confirm 0.5 --threads 2 --out sweep\n"
    "  codi sweep --model M --questions data/templates.jsonl --dry-run --out sprint      # the plan and hours\n"
    "  codi sweep ... --shard 3/8 --out part3;  codi sweep --merge part1 ... part8 --out all",
    sweep_run
};
