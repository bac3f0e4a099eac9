/* codi eval: accuracy of CODI over a questions file under a list of conditions (the baseline, each
   --steer spec, random controls of each spec), with Wilson 95% intervals, McNemar's exact test of
   each condition against the baseline and of each spec against its random controls on the same
   questions, and Holm / Benjamini-Hochberg corrections within the families steer and control.

   Every (condition, question) result is appended to --out as one JSON line and flushed as soon as
   it is known; the file's first line records the command's settings. Running the same command
   again skips the results already there (a line cut short by kill -9 is dropped), so an
   interrupted run resumes and ends with the same totals. --shard K/N (1 <= K <= N) takes the
   questions with index K-1, K-1+N, K-1+2N, ...; `codi eval --merge a.jsonl b.jsonl ...` joins the
   shards' files and prints the summary of the union. Part of the unity build of tools/codi.c
   (prefix eval_). */

#include <pthread.h>
#include <unistd.h>
#include <sys/types.h>
#include "eval_line.h"

typedef struct {
    int line, index;          /* line in the file (1-based), index among the valid questions (0-based) */
    char *question;
    double gold;
    int has_gold;
    int32_t *ids; int n_ids;  /* the prompt */
} eval_question;

enum { EVAL_BASELINE, EVAL_STEER, EVAL_CONTROL };
static const char *const eval_family_name[3] = { "baseline", "steer", "control" };

typedef struct {
    char name[160];
    codi_steer *steer;        /* NULL: the baseline, and a control drawn per question */
    int family;               /* EVAL_* */
    int parent;               /* a control: its spec's condition index; else -1 */
    int spec_no, r;           /* a spec's number (1-based) and a control's number r (1..N) */
} eval_condition;

typedef struct {              /* one result, as read back or as computed */
    int cond, index, correct;
} eval_result;

typedef struct {
    const codi_model *m;
    const codi_tokenizer *t;
    eval_question *q; int nq;
    eval_condition *c; int nc;
    unsigned char *done;      /* [nc * nq] 1 when the result is in the file */
    eval_result *res; long n_res, cap_res;
    int latents, max_answer;
    int draw_per_question;    /* --random-draw question: a control's directions drawn per question */
    uint64_t seed;
    int batch, batch_threads;   /* runs per batched runner (--batch), threads of each runner */
    long next, total, finished, failed;
    FILE *out;
    const char *out_path;
    long out_good;            /* bytes of out that hold whole lines: the file is cut back to them after a failed write */
    int stop;                 /* a write failed: no run starts or is recorded after it */
    struct eval_job_s *jobs;  /* [total] the runs in flight (their per-question controls) */
    pthread_mutex_t lock;
    cli_progress *progress;
} eval_ctx;

/* --- questions -------------------------------------------------------------------------- */

typedef struct { eval_question *q; int n, cap; const char *path; } eval_question_list;

static int eval_collect_question(void *user, const cli_question *cq) {
    eval_question_list *l = (eval_question_list *)user;
    eval_question x;
    if (l->n == l->cap) {
        eval_question *grown = (eval_question *)realloc(l->q, sizeof *grown * (size_t)(l->cap ? 2 * l->cap : 256));
        if (!grown) { fprintf(stderr, "codi eval: out of memory\n"); return -1; }
        l->q = grown; l->cap = l->cap ? 2 * l->cap : 256;
    }
    memset(&x, 0, sizeof x);
    x.line = cq->line; x.index = cq->index; x.gold = cq->gold; x.has_gold = cq->has_gold;
    if (!x.has_gold) fprintf(stderr, "codi: %s:%d: no numeric \"answer\" (counted as wrong)\n", l->path, cq->line);
    if (!(x.question = cli_strdup(cq->question))) { fprintf(stderr, "codi eval: out of memory\n"); return -1; }
    l->q[l->n++] = x;
    return 0;
}

/* --- the results file --------------------------------------------------------------------- */

/* The settings line: what must match for a resume or a merge. */
static void eval_header(char *buf, size_t cap, const char *model, const char *questions, const eval_ctx *ec,
                        int recipe, int limit, int shard_k, int shard_n, int seed) {
    size_t n;
    int i;
    n = (size_t)snprintf(buf, cap, "{\"codi_eval\": 1, \"model\": \"%s\", \"questions\": \"%s\", \"latents\": %d, \"recipe\": %d, "
                         "\"max_answer\": %d, \"limit\": %d, \"seed\": %d, \"shard\": \"%d/%d\", %s\"conditions\": [",
                         model, questions, ec->latents, recipe, ec->max_answer, limit, seed, shard_k, shard_n,
                         ec->draw_per_question ? "\"random_draw\": \"question\", " : "");
    for (i = 0; i < ec->nc && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\"", i ? ", " : "", ec->c[i].name);
    if (n < cap) snprintf(buf + n, cap - n, "]}\n");
}

static int eval_cond_index(const eval_ctx *ec, const char *name) {
    int i;
    for (i = 0; i < ec->nc; i++) if (!strcmp(ec->c[i].name, name)) return i;
    return -1;
}

/* Families from the names (a merge reads only names): "baseline"; "S~randomK" is a random control
   of spec S when S is a condition (spec names holding "~random" are refused, so this cannot
   misread); every other name is a steered spec. */
static void eval_classify(eval_ctx *ec) {
    int i, j, n_spec = 0;
    for (i = 0; i < ec->nc; i++) {
        const char *cut = strstr(ec->c[i].name, "~random");
        eval_condition *c = &ec->c[i];
        c->family = !strcmp(c->name, "baseline") ? EVAL_BASELINE : EVAL_STEER;
        c->parent = -1;
        for (j = 0; cut && j < ec->nc; j++)
            if (j != i && strlen(ec->c[j].name) == (size_t)(cut - c->name) && !strncmp(ec->c[j].name, c->name, (size_t)(cut - c->name)) &&
                cut[7] >= '0' && cut[7] <= '9' && strspn(cut + 7, "0123456789") == strlen(cut + 7)) { c->family = EVAL_CONTROL; c->parent = j; c->r = atoi(cut + 7); }
        if (c->family == EVAL_STEER) c->spec_no = ++n_spec;
    }
}

/* The seed of control r of spec spec_no for question index (--random-draw question): splitmix64
   of the three numbers and --seed, so every (spec, control, question) has its own directions; 53
   bits, so that any JSON reader reads the draw_seed of a result line exactly. */
static uint64_t eval_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static uint64_t eval_question_seed(uint64_t seed, int spec_no, int r, int index) {
    return eval_mix(eval_mix(eval_mix(eval_mix(seed) ^ (uint64_t)spec_no) ^ (uint64_t)r) ^ (uint64_t)index) >> 11;
}

static void eval_add_result(eval_ctx *ec, int cond, int index, int correct) {
    if (ec->n_res == ec->cap_res) {
        ec->cap_res = ec->cap_res ? 2 * ec->cap_res : 1024;
        ec->res = (eval_result *)realloc(ec->res, sizeof *ec->res * (size_t)ec->cap_res);
    }
    ec->res[ec->n_res].cond = cond; ec->res[ec->n_res].index = index; ec->res[ec->n_res].correct = correct;
    ec->n_res++;
}

/* Reads the result lines of a file into ec (conditions by name; merge: adds unknown ones).
   header_out receives the first line. A line without its newline (cut by a kill) is ignored and
   *good_len is where the whole lines end. index_bound > 0: indices must be below it; 0: below a
   bound of the file's size (EVAL_INDEX_PER_BYTE). Returns the number of results read, -1 when the
   file cannot be read, -2 after a message when an index is out of range. */
#define EVAL_INDEX_PER_BYTE 64      /* merge: a result line has ~100 bytes; shards of up to ~6000 machines fit */
static long eval_read_results(eval_ctx *ec, const char *path, char *header_out, size_t hcap, long *good_len, int add_conditions,
                              long index_bound) {
    size_t len;
    char *text = codi_read_text(path, &len), *p, err[256];
    long n = 0;
    int line = 0;
    if (!text) return -1;
    if (index_bound <= 0) index_bound = len < (size_t)(INT_MAX / EVAL_INDEX_PER_BYTE) ? (long)len * EVAL_INDEX_PER_BYTE + 1 : INT_MAX;
    header_out[0] = 0;
    *good_len = 0;
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        if (!e) break;                                       /* an unfinished last line */
        line++;
        if (line == 1) snprintf(header_out, hcap, "%.*s\n", (int)(e - p), p);
        else {
            char cond[sizeof ec->c->name];
            long index;
            int correct, r = eval_parse_line(p, (size_t)(e - p), index_bound, cond, sizeof cond, &index, &correct, err, sizeof err);
            if (r < 0) { fprintf(stderr, "codi eval: %s:%d: %s\n", path, line, err); free(text); return -2; }
            if (r > 0) {
                int ci = eval_cond_index(ec, cond);
                if (ci < 0 && add_conditions) {
                    ec->c = (eval_condition *)realloc(ec->c, sizeof *ec->c * (size_t)(ec->nc + 1));
                    memset(&ec->c[ec->nc], 0, sizeof *ec->c);
                    snprintf(ec->c[ec->nc].name, sizeof ec->c[ec->nc].name, "%s", cond);
                    ci = ec->nc++;
                }
                if (ci >= 0) { eval_add_result(ec, ci, (int)index, correct); n++; }
            } else fprintf(stderr, "%s:%d: %s (ignored)\n", path, line, err);
        }
        p = e + 1;
        *good_len = (long)(p - text);
    }
    free(text);
    return n;
}

/* --- running ------------------------------------------------------------------------------ */

/* The seed of a random control's directions for question q: the name's number (per spec), or one drawn
   from the seed, the spec's number, the control's number and the question index (--random-draw question). */
static uint64_t eval_draw_seed(const eval_ctx *ec, const eval_condition *c, const eval_question *q) {
    return ec->draw_per_question ? eval_question_seed(ec->seed, ec->c[c->parent].spec_no, c->r, q->index) : (uint64_t)c->r;
}

/* One (condition, question)'s result: decode, score; the JSON line is written under the lock. */
static void eval_record(eval_ctx *ec, int ci, int qi, const codi_run_result *rr, char *line, size_t cap) {
    const eval_question *q = &ec->q[qi];
    const eval_condition *c = &ec->c[ci];
    char text[4096];
    double pred = 0;
    int has_pred, correct;
    size_t n;
    uint64_t draw_seed = c->family == EVAL_CONTROL ? eval_draw_seed(ec, c, q) : 0;
    codi_decode(ec->t, rr->answer, rr->n_answer, 1, text, sizeof text);
    has_pred = codi_extract_answer(text, &pred);
    correct = q->has_gold && has_pred && pred == q->gold;
    n = (size_t)snprintf(line, cap, "{\"condition\": \"%s\", \"index\": %d, \"line\": %d, \"correct\": %s, \"prediction\": ",
                         c->name, q->index, q->line, correct ? "true" : "false");
    n += (size_t)(has_pred ? snprintf(line + n, cap - n, "%.17g", pred) : snprintf(line + n, cap - n, "null"));
    n += (size_t)(q->has_gold ? snprintf(line + n, cap - n, ", \"gold\": %.17g, \"answer\": \"", q->gold) : snprintf(line + n, cap - n, ", \"gold\": null, \"answer\": \""));
    {   /* the answer text, JSON-escaped */
        const unsigned char *t;
        for (t = (const unsigned char *)text; *t && n + 8 < cap; t++) {
            if (*t == '"' || *t == '\\') { line[n++] = '\\'; line[n++] = (char)*t; }
            else if (*t < 0x20) n += (size_t)snprintf(line + n, cap - n, "\\u%04x", *t);
            else line[n++] = (char)*t;
        }
    }
    n += (size_t)snprintf(line + n, cap - n, "\"");
    if (c->family == EVAL_CONTROL) n += (size_t)snprintf(line + n, cap - n, ", \"draw_seed\": %llu", (unsigned long long)draw_seed);
    snprintf(line + n, cap - n, "}\n");
    pthread_mutex_lock(&ec->lock);
    if (!ec->stop) {
        fputs(line, ec->out);
        if (cli_out_flush(ec->out, ec->out_path)) ec->stop = 1;    /* the first failed write stops the command */
        else {
            ec->out_good += (long)strlen(line);
            eval_add_result(ec, ci, q->index, correct);
            ec->finished++;
            cli_progress_update(ec->progress, ec->finished);
        }
    }
    pthread_mutex_unlock(&ec->lock);
}

static int eval_stopped(eval_ctx *ec) {
    int stop;
    pthread_mutex_lock(&ec->lock); stop = ec->stop; pthread_mutex_unlock(&ec->lock);
    return stop;
}

typedef struct { eval_ctx *ec; char *line; } eval_worker_ctx;
typedef struct eval_job_s { long u; codi_steer *drawn; } eval_job;   /* a run: unit u, its per-question control (or NULL) */

/* A run of the batched runner ended: unit u = question u / nc under condition u % nc. */
static int eval_done(void *user, const codi_batch_result *r) {
    eval_worker_ctx *w = (eval_worker_ctx *)user;
    eval_ctx *ec = w->ec;
    eval_job *job = (eval_job *)r->user;
    long u = job->u;
    int ci = (int)(u % ec->nc), qi = (int)(u / ec->nc);
    codi_steer_free(job->drawn);
    job->drawn = NULL;
    if (r->status == 0) { eval_record(ec, ci, qi, r->result, w->line, 16384); return eval_stopped(ec); }   /* nonzero: the batch stops */
    fprintf(stderr, "codi eval: %s, line %d: %s\n", ec->c[ci].name, ec->q[qi].line, r->error);
    pthread_mutex_lock(&ec->lock); ec->failed++; pthread_mutex_unlock(&ec->lock);
    return 0;
}

/* A worker: a batched runner of ec->batch runs (codi_batch_*: one pass over the weights advances
   every run); it takes the next unfinished (question, condition) whenever its queue runs low. */
static void *eval_worker(void *user) {
    eval_ctx *ec = (eval_ctx *)user;
    eval_worker_ctx w;
    int max_ids = 0, i, slots;
    codi_batch *b;
    w.ec = ec; w.line = (char *)malloc(16384);
    pthread_mutex_lock(&ec->lock);
    slots = ec->total - ec->finished < ec->batch ? (int)(ec->total - ec->finished) : ec->batch;   /* no more than the runs left */
    pthread_mutex_unlock(&ec->lock);
    for (i = 0; i < ec->nq; i++) if (ec->q[i].n_ids > max_ids) max_ids = ec->q[i].n_ids;
    b = codi_batch_new(ec->m, slots > 0 ? slots : 1, max_ids + ec->latents + ec->max_answer + 2, ec->batch_threads);
    if (!b || !w.line) {
        fprintf(stderr, "codi eval: out of memory\n");
        pthread_mutex_lock(&ec->lock); ec->failed++; pthread_mutex_unlock(&ec->lock);
        free(w.line); codi_batch_free(b); return NULL;
    }
    for (;;) {
        int more = 1;
        while (more && codi_batch_pending(b) < 2 * ec->batch) {       /* keep a batch's worth queued */
            codi_batch_request rq;
            long u;
            pthread_mutex_lock(&ec->lock);
            while (ec->next < ec->total && ec->done[ec->next]) ec->next++;
            u = !ec->stop && ec->next < ec->total ? ec->next++ : -1;
            pthread_mutex_unlock(&ec->lock);
            if (u < 0) { more = 0; break; }
            memset(&rq, 0, sizeof rq);
            rq.ids = ec->q[u / ec->nc].ids; rq.n_ids = ec->q[u / ec->nc].n_ids;
            rq.opts = codi_run_opts_default(ec->m);
            rq.opts.n_latent = ec->latents; rq.opts.max_answer = ec->max_answer;
            {
                const eval_condition *c = &ec->c[u % ec->nc];
                eval_job *job = &ec->jobs[u];
                if (c->family == EVAL_CONTROL && ec->draw_per_question)
                    job->drawn = codi_steer_random_like(ec->c[c->parent].steer, eval_draw_seed(ec, c, &ec->q[u / ec->nc]));
                if (c->family == EVAL_CONTROL && ec->draw_per_question && !job->drawn) {
                    fprintf(stderr, "codi eval: out of memory\n");
                    pthread_mutex_lock(&ec->lock); ec->failed++; pthread_mutex_unlock(&ec->lock);
                    continue;
                }
                job->u = u;
                rq.steer = job->drawn ? job->drawn : c->steer;
                rq.user = job;
                if (codi_batch_submit(b, &rq)) {
                    fprintf(stderr, "codi eval: %s, line %d: %s\n", c->name, ec->q[u / ec->nc].line, codi_batch_error(b));
                    codi_steer_free(job->drawn); job->drawn = NULL;
                    pthread_mutex_lock(&ec->lock); ec->failed++; pthread_mutex_unlock(&ec->lock);
                }
            }
        }
        if ((!codi_batch_pending(b) && !more) || eval_stopped(ec)) break;   /* a failed write: the runs in flight are dropped */
        if (codi_batch_step(b, eval_done, &w) < 0) {
            if (eval_stopped(ec)) break;
            fprintf(stderr, "codi eval: %s\n", codi_batch_error(b));
            pthread_mutex_lock(&ec->lock); ec->failed += codi_batch_pending(b); pthread_mutex_unlock(&ec->lock);
            break;
        }
    }
    free(w.line);
    codi_batch_free(b);
    return NULL;
}

/* --- statistics --------------------------------------------------------------------------- */

/* Results of condition a against condition o on the questions both ran (grid [conditions, questions]:
   1 right, 0 wrong, -1 not run): pairs, right only under o (b) and only under a (c). */
static void eval_pair(const signed char *grid, int nq_max, int a, int o, long *paired, long *b, long *c) {
    int i;
    *paired = *b = *c = 0;
    for (i = 0; i < nq_max; i++) {
        int x = grid[(size_t)a * nq_max + i], y = grid[(size_t)o * nq_max + i];
        if (x < 0 || y < 0) continue;
        (*paired)++; *b += y && !x; *c += !y && x;
    }
}

typedef struct {
    long n, k;                         /* questions run, right */
    double lo, hi;                     /* Wilson 95% */
    long paired, b, c;                 /* vs the baseline: pairs, flips to wrong (b), flips to right (c) */
    double p_base, d_base, d_base_lo, d_base_hi;
    int control;                       /* a steered spec: the control with the largest p (the decisive one); else -1 */
    long r_paired, r_b, r_c;           /* vs that control: pairs, right only under it, right only under the spec */
    double p_rand, d_rand, d_rand_lo, d_rand_hi;
    double p_primary, p_holm, q_bh;
    int effect;                        /* Holm-adjusted p vs the random control(s) < 0.05 */
} eval_stat;

static void eval_json_num(FILE *f, double v) { if (isfinite(v)) fprintf(f, "%.6g", v); else fputs("null", f); }
static void eval_csv_num(FILE *f, double v) { if (isfinite(v)) fprintf(f, "%.6g", v); }   /* empty cell when not computed */

/* Table on stdout, CSV to csv_path (if any), then one JSON object per condition (the last lines).
   A steered spec with several random controls is tested against each; its p_vs_random is the
   largest of those p values (it must beat every control), and the diff vs random is against that
   control. p_primary (vs random where there is a control, else vs the baseline) is corrected
   within its family: the steered specs, and the random controls. */
static int eval_summary(eval_ctx *ec, const char *csv_path) {   /* 0, or -1 when the CSV could not be written */
    int csv_bad = 0, ci, j, nq_max = 0, n_tested[3] = { 0, 0, 0 }, n_effects = 0, base = eval_cond_index(ec, "baseline");
    signed char *grid;              /* [nc, max index + 1]: -1 absent, 0 wrong, 1 right */
    eval_stat *st = (eval_stat *)calloc((size_t)(ec->nc ? ec->nc : 1), sizeof *st);
    double *pf = (double *)malloc(sizeof(double) * (size_t)(ec->nc ? ec->nc : 1) * 3);
    long r;
    FILE *csv = NULL;
    eval_classify(ec);
    for (r = 0; r < ec->n_res; r++) if (ec->res[r].index + 1 > nq_max) nq_max = ec->res[r].index + 1;
    if (!st || !pf || !(grid = (signed char *)malloc((size_t)ec->nc * (size_t)(nq_max ? nq_max : 1)))) {
        fprintf(stderr, "codi: out of memory\n"); free(st); free(pf); return -1;
    }
    memset(grid, -1, (size_t)ec->nc * (size_t)(nq_max ? nq_max : 1));
    for (r = 0; r < ec->n_res; r++) grid[(size_t)ec->res[r].cond * nq_max + ec->res[r].index] = (signed char)ec->res[r].correct;
    for (ci = 0; ci < ec->nc; ci++) {
        eval_stat *s = &st[ci];
        int i;
        for (i = 0; i < nq_max; i++) { int x = grid[(size_t)ci * nq_max + i]; if (x >= 0) { s->n++; s->k += x; } }
        codi_wilson_interval((int)s->k, (int)s->n, 1.959963984540054, &s->lo, &s->hi);
        if (base >= 0) eval_pair(grid, nq_max, ci, base, &s->paired, &s->b, &s->c);   /* a merge of files without it: no pairs */
        s->p_base = ci != base && base >= 0 ? codi_mcnemar_exact(s->b, s->c) : NAN;
        s->d_base = s->paired ? (double)(s->c - s->b) / s->paired : NAN;
        codi_paired_diff_interval(s->b, s->c, s->paired, &s->d_base_lo, &s->d_base_hi);
        if (ci == base || !s->paired) s->d_base_lo = s->d_base_hi = NAN;
        s->control = -1; s->p_rand = s->d_rand = s->d_rand_lo = s->d_rand_hi = NAN;
        for (j = 0; j < ec->nc; j++) {
            long pr, b, c;
            double p;
            if (ec->c[j].family != EVAL_CONTROL || ec->c[j].parent != ci) continue;
            eval_pair(grid, nq_max, ci, j, &pr, &b, &c);
            p = codi_mcnemar_exact(b, c);
            if (s->control < 0 || p > s->p_rand) { s->control = j; s->p_rand = p; s->r_paired = pr; s->r_b = b; s->r_c = c; }
        }
        if (s->control >= 0 && s->r_paired) {
            s->d_rand = (double)(s->r_c - s->r_b) / s->r_paired;
            codi_paired_diff_interval(s->r_b, s->r_c, s->r_paired, &s->d_rand_lo, &s->d_rand_hi);
        }
        s->p_primary = s->control >= 0 ? s->p_rand : s->p_base;
        for (j = 0; j < 3; j++) pf[(size_t)j * ec->nc + ci] = ec->c[ci].family == j && j != EVAL_BASELINE ? s->p_primary : NAN;
        if (ec->c[ci].family != EVAL_BASELINE && s->p_primary == s->p_primary) n_tested[ec->c[ci].family]++;
    }
    for (j = EVAL_STEER; j <= EVAL_CONTROL; j++) {        /* Holm and BH within each family */
        double *h = (double *)malloc(sizeof(double) * (size_t)ec->nc), *q = (double *)malloc(sizeof(double) * (size_t)ec->nc);
        if (h && q && !codi_holm(pf + (size_t)j * ec->nc, ec->nc, h) && !codi_bh(pf + (size_t)j * ec->nc, ec->nc, q))
            for (ci = 0; ci < ec->nc; ci++) if (ec->c[ci].family == j) { st[ci].p_holm = h[ci]; st[ci].q_bh = q[ci]; }
        free(h); free(q);
    }
    for (ci = 0; ci < ec->nc; ci++) {
        if (ec->c[ci].family == EVAL_BASELINE) st[ci].p_holm = st[ci].q_bh = NAN;
        st[ci].effect = ec->c[ci].family == EVAL_STEER && st[ci].control >= 0 && st[ci].p_holm < 0.05;
        n_effects += st[ci].effect;
    }
    if (csv_path && !(csv = cli_out_open(csv_path, "w"))) csv_bad = 1;
    if (csv) fprintf(csv, "condition,questions,correct,accuracy,ci95_low,ci95_high,paired,diff_vs_baseline,baseline_only,condition_only,mcnemar_p,"
                          "family,split,diff_vs_baseline_ci_low,diff_vs_baseline_ci_high,random_control,paired_vs_random,random_only,spec_only,"
                          "diff_vs_random,diff_vs_random_ci_low,diff_vs_random_ci_high,p_vs_random,p_primary,p_holm,q_bh,effect\n");
    printf("split: confirm (pre-specified conditions). Tested: %d steered spec(s) (family steer) and %d random control(s) (family control);\n"
           "p_primary = McNemar vs the spec's random control(s) (the largest p over its controls), else vs the baseline; Holm within each family.\n"
           "* = an effect: Holm-adjusted p vs its random control < 0.05, either way (diff rnd gives the sign; %d of %d specs; a spec without a control is never an effect)\n",
           n_tested[EVAL_STEER], n_tested[EVAL_CONTROL], n_effects, n_tested[EVAL_STEER]);
    printf("%-32s %-8s %5s %7s %8s %17s %8s %9s %8s %9s %9s\n", "condition", "family", "n", "correct", "accuracy", "95% CI (Wilson)",
           "diff", "p base", "diff rnd", "p random", "p Holm");
    for (ci = 0; ci < ec->nc; ci++) {
        const eval_stat *s = &st[ci];
        char pb[16], dr[16], prn[16], ph[16];
        if (s->p_base == s->p_base) snprintf(pb, sizeof pb, "%.4g", s->p_base); else snprintf(pb, sizeof pb, "-");
        if (s->d_rand == s->d_rand) snprintf(dr, sizeof dr, "%+.2f%%", 100 * s->d_rand); else snprintf(dr, sizeof dr, "-");
        if (s->p_rand == s->p_rand) snprintf(prn, sizeof prn, "%.4g", s->p_rand); else snprintf(prn, sizeof prn, "-");
        if (s->p_holm == s->p_holm) snprintf(ph, sizeof ph, "%.4g%s", s->p_holm, s->effect ? " *" : ""); else snprintf(ph, sizeof ph, "-");
        printf("%-32s %-8s %5ld %7ld %7.2f%% %7.2f%% - %5.2f%% %+7.2f%% %9s %8s %9s %9s\n", ec->c[ci].name, eval_family_name[ec->c[ci].family],
               s->n, s->k, s->n ? 100.0 * s->k / s->n : 0.0, 100 * s->lo, 100 * s->hi, s->paired ? 100 * s->d_base : 0.0, pb, dr, prn, ph);
        if (csv) {
            fprintf(csv, "\"%s\",%ld,%ld,%.6f,%.6f,%.6f,%ld,%.6f,%ld,%ld,%.6g,%s,confirm,", ec->c[ci].name, s->n, s->k, s->n ? (double)s->k / s->n : 0.0,
                    s->lo, s->hi, s->paired, s->paired ? s->d_base : 0.0, s->b, s->c, codi_mcnemar_exact(s->b, s->c), eval_family_name[ec->c[ci].family]);
            eval_csv_num(csv, s->d_base_lo); fputc(',', csv); eval_csv_num(csv, s->d_base_hi);
            if (s->control >= 0) fprintf(csv, ",\"%s\",%ld,%ld,%ld,", ec->c[s->control].name, s->r_paired, s->r_b, s->r_c); else fprintf(csv, ",,,,,");
            eval_csv_num(csv, s->d_rand); fputc(',', csv); eval_csv_num(csv, s->d_rand_lo); fputc(',', csv); eval_csv_num(csv, s->d_rand_hi); fputc(',', csv);
            eval_csv_num(csv, s->p_rand); fputc(',', csv); eval_csv_num(csv, s->p_primary); fputc(',', csv);
            eval_csv_num(csv, s->p_holm); fputc(',', csv); eval_csv_num(csv, s->q_bh); fprintf(csv, ",%d\n", s->effect);
        }
    }
    if (csv && cli_out_close(csv)) csv_bad = 1;
    for (ci = 0; ci < ec->nc; ci++) {               /* strict JSON: null for what was not computed */
        const eval_stat *s = &st[ci];
        printf("{\"condition\": ");
        cli_json_string(stdout, ec->c[ci].name);
        printf(", \"questions\": %ld, \"correct\": %ld, \"accuracy\": %.6f, \"ci95\": [%.6f, %.6f], \"paired\": %ld, "
               "\"diff_vs_baseline\": %.6f, \"baseline_only\": %ld, \"condition_only\": %ld, \"mcnemar_p\": %.6g",
               s->n, s->k, s->n ? (double)s->k / s->n : 0.0, s->lo, s->hi, s->paired, s->paired ? s->d_base : 0.0, s->b, s->c, codi_mcnemar_exact(s->b, s->c));
        printf(", \"family\": \"%s\", \"split\": \"confirm\", \"n\": %ld, \"ci_low\": %.6f, \"ci_high\": %.6f, \"p_vs_baseline\": ",
               eval_family_name[ec->c[ci].family], s->n, s->lo, s->hi);
        eval_json_num(stdout, s->p_base);
        printf(", \"flips_to_right\": %ld, \"flips_to_wrong\": %ld, \"diff_vs_baseline_ci_low\": ", s->c, s->b);
        eval_json_num(stdout, s->d_base_lo); printf(", \"diff_vs_baseline_ci_high\": "); eval_json_num(stdout, s->d_base_hi);
        printf(", \"random_controls\": [");
        for (j = 0, r = 0; j < ec->nc; j++)
            if (ec->c[j].family == EVAL_CONTROL && ec->c[j].parent == ci) { printf("%s", r++ ? ", " : ""); cli_json_string(stdout, ec->c[j].name); }
        printf("], \"random_control\": ");
        if (s->control >= 0) cli_json_string(stdout, ec->c[s->control].name); else printf("null");
        if (s->control >= 0) printf(", \"paired_vs_random\": %ld, \"random_only\": %ld, \"spec_only\": %ld", s->r_paired, s->r_b, s->r_c);
        else printf(", \"paired_vs_random\": null, \"random_only\": null, \"spec_only\": null");
        printf(", \"diff_vs_random\": "); eval_json_num(stdout, s->d_rand);
        printf(", \"diff_vs_random_ci_low\": "); eval_json_num(stdout, s->d_rand_lo);
        printf(", \"diff_vs_random_ci_high\": "); eval_json_num(stdout, s->d_rand_hi);
        printf(", \"p_vs_random\": "); eval_json_num(stdout, s->p_rand);
        printf(", \"p_primary\": "); eval_json_num(stdout, s->p_primary);
        printf(", \"p_holm\": "); eval_json_num(stdout, s->p_holm);
        printf(", \"q_bh\": "); eval_json_num(stdout, s->q_bh);
        printf(", \"family_size\": %d, \"effect\": %s}\n", ec->c[ci].family == EVAL_BASELINE ? 0 : n_tested[ec->c[ci].family], s->effect ? "true" : "false");
    }
    free(grid); free(st); free(pf);
    return csv_bad ? -1 : 0;
}

/* --- the command ---------------------------------------------------------------------------- */

static void eval_free(eval_ctx *ec) {
    int i;
    for (i = 0; i < ec->nq; i++) { free(ec->q[i].question); free(ec->q[i].ids); }
    for (i = 0; i < ec->nc; i++) codi_steer_free(ec->c[i].steer);
    if (ec->jobs) { long u; for (u = 0; u < ec->total; u++) codi_steer_free(ec->jobs[u].drawn); free(ec->jobs); }
    free(ec->q); free(ec->c); free(ec->done); free(ec->res);
}

/* A settings line with its shard blanked out (in place): shards of one run compare equal. */
static const char *eval_unshard(char *h) {
    char *p = strstr(h, "\"shard\": \""), *q;
    if (p && (q = strchr(p + 10, '"')) != NULL) { p[10] = '*'; memmove(p + 11, q, strlen(q) + 1); }
    return h;
}

/* `--merge a.jsonl b.jsonl ...`: the union of the files' results (same settings but the shard). */
static int eval_merge(char **files, int n, const char *csv_path) {
    eval_ctx ec;
    char h0[8192], h[8192];
    int i;
    double bytes = 0;
    memset(&ec, 0, sizeof ec);
    {   /* the conditions in the order of the first file's settings line (results come in any order) */
        FILE *f = fopen(files[0], "rb");
        char err[256];
        codi_json *j = f && fgets(h0, sizeof h0, f) ? codi_json_parse(h0, strlen(h0), err, sizeof err) : NULL;
        const codi_json *list = j ? codi_json_get(j, "conditions") : NULL, *c;
        for (c = list && list->type == CODI_JSON_ARR ? list->child : NULL; c; c = c->next)
            if (c->type == CODI_JSON_STR && eval_cond_index(&ec, c->str) < 0) {
                eval_condition *grown = (eval_condition *)realloc(ec.c, sizeof *ec.c * (size_t)(ec.nc + 1));
                if (!grown) break;
                ec.c = grown;
                memset(&ec.c[ec.nc], 0, sizeof *ec.c);
                snprintf(ec.c[ec.nc++].name, sizeof ec.c->name, "%s", c->str);
            }
        codi_json_free(j);
        if (f) fclose(f);
    }
    for (i = 0; i < n; i++) {
        long good, r = eval_read_results(&ec, files[i], i ? h : h0, sizeof h, &good, 1, 0);
        if (r < 0) { if (r == -1) fprintf(stderr, "codi eval: cannot read %s\n", files[i]); eval_free(&ec); return 1; }
        bytes += (double)good;
        if (i && strcmp(eval_unshard(h), eval_unshard(h0))) {
            fprintf(stderr, "codi eval: %s was made with other settings than %s:\n  %s  %s", files[i], files[0], h, h0); eval_free(&ec); return 1;
        }
    }
    {   /* the same (condition, question) in two files counts once */
        long r, w = 0;
        int max_index = 0;
        unsigned char *seen;
        for (r = 0; r < ec.n_res; r++) if (ec.res[r].index + 1 > max_index) max_index = ec.res[r].index + 1;
        if ((double)ec.nc * max_index > EVAL_INDEX_PER_BYTE * bytes + 1e6) {
            fprintf(stderr, "codi eval: %d conditions x question indices up to %d do not fit %.0f bytes of results: not results files of codi eval\n",
                    ec.nc, max_index - 1, bytes);
            eval_free(&ec); return 1;
        }
        if (!(seen = (unsigned char *)calloc((size_t)ec.nc * (size_t)(max_index ? max_index : 1), 1))) { fprintf(stderr, "codi eval: out of memory\n"); eval_free(&ec); return 1; }
        for (r = 0; r < ec.n_res; r++) {
            size_t key = (size_t)ec.res[r].cond * max_index + ec.res[r].index;
            if (!seen[key]) { seen[key] = 1; ec.res[w++] = ec.res[r]; }
        }
        ec.n_res = w;
        free(seen);
    }
    fprintf(stderr, "codi eval: merged %d files: %ld results, %d conditions\n", n, ec.n_res, ec.nc);
    {
        int rc = eval_summary(&ec, csv_path) ? 1 : 0;
        eval_free(&ec);
        return rc;
    }
}

/* After a failed write: the results file cut back to its whole lines (bytes good), so that no torn
   line is left for a reader other than eval's own resume (which drops one). */
static void eval_cut(const char *path, long good) {
    if (truncate(path, good) != 0) fprintf(stderr, "codi eval: cannot cut %s back to its whole lines: %s (a resume drops the torn line)\n", path, strerror(errno));
}

static int eval_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *questions = NULL, *out = NULL, *shard = NULL, *csv = NULL, *random_draw = "spec";
    int limit = 0, recipe = 0, latents = 6, max_answer = 256, random_controls = -1, seed = 1, shard_k = 0, shard_n = 0, merge = 0;
    int batch = CLI_BATCH_DEFAULT;
    cli_list steers;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "questions, one {\"question\": ..., \"answer\": N or \"... #### N\"} per line" },
        { "--steer", CLI_LIST, &steers, 0, 0, "SPEC.json", "a steering spec (tests/data/steer/*.json; codi_lens.h >>steer): one condition each, repeatable" },
        { "--random-controls", CLI_INT, &random_controls, 0, 1000, "N", "per spec, N conditions with its vectors replaced by random directions of the same norms (seeds seed+1..seed+N; default 1 with --steer; 0: none)" },
        { "--random-draw", CLI_STR, &random_draw, 0, 0, "spec|question", "random controls drawn once per spec (default: control K's directions from seed S+K) or per question (seeded from S, spec, K and the question index)" },
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "seed of the random controls (default 1)" },
        { "--out", CLI_STR, &out, 0, 0, "RESULTS.jsonl", "per-question results, appended as they come; an existing file is resumed" },
        { "--csv", CLI_STR, &csv, 0, 0, "FILE.csv", "the summary table as CSV (default: RESULTS.jsonl with .csv)" },
        { "--limit", CLI_INT, &limit, 0, 100000000, "N", "only the first N questions (default all)" },
        { "--shard", CLI_STR, &shard, 0, 0, "K/N", "questions K-1, K-1+N, ... of the file (1 <= K <= N): one of N machines; join with --merge" },
        { "--merge", CLI_FLAG, &merge, 0, 0, NULL, "--merge A.jsonl B.jsonl ...: join result files (shards) and print their summary" },
        CLI_RECIPE_OPT(&recipe),
        CLI_LATENTS_OPT(&latents, 0, 1000),
        CLI_MAX_ANSWER_OPT(&max_answer, 1, 256),
        { "--batch", CLI_INT, &batch, 1, 1024, "N", "runs advanced together through one pass over the weights (codi_batch_*) on all --threads; "
          "1: one run per thread (codi_run's results bit for bit); default " CLI_QUOTE(CLI_BATCH_DEFAULT) },
        CLI_END
    };
    char **rest = (char **)malloc(sizeof(char *) * (size_t)(argc + 1)), **files = (char **)malloc(sizeof(char *) * (size_t)(argc + 1));
    int n_rest = 0, n_files = 0, i, rc = 1, n_bad = 0, workers;
    eval_ctx ec;
    char header[8192], old_header[8192];
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    pthread_t *th = NULL;
    double t0;
    memset(&ec, 0, sizeof ec);
    memset(&steers, 0, sizeof steers);
    /* the files after --merge are collected here; the rest goes to the table parser */
    for (i = 0; i < argc; i++) {
        if (i > 0 && argv[i][0] != '-' && (!strcmp(argv[i - 1], "--merge") || (n_files && !strcmp(argv[i - 1], files[n_files - 1])))) files[n_files++] = argv[i];
        else rest[n_rest++] = argv[i];
    }
    rest[n_rest] = NULL;
    if ((rc = cli_parse(self, opts, n_rest, rest)) != CLI_OK) { rc = rc == CLI_HELP ? 0 : 2; goto done; }
    rc = 1;
    if (merge) {
        if (n_files < 1) { fprintf(stderr, "codi eval: --merge needs result files\n"); rc = 2; goto done; }
        if (csv && cli_out_check("eval", csv, CLI_OUT_RESUME | CLI_OUT_STREAM, 0, (const char *const *)files, n_files)) { rc = 2; goto done; }
        rc = eval_merge(files, n_files, csv);
        goto done;
    }
    if (!ma.model || !questions || !out) { fprintf(stderr, "codi eval: needs --model, --questions and --out (codi eval --help)\n"); rc = 2; goto done; }
    if (shard && cli_parse_shard(shard, &shard_k, &shard_n)) { rc = 2; goto done; }
    if (strcmp(random_draw, "spec") && strcmp(random_draw, "question")) { fprintf(stderr, "codi eval: --random-draw is spec or question, not '%s'\n", random_draw); rc = 2; goto done; }
    ec.draw_per_question = !strcmp(random_draw, "question");
    ec.seed = (uint64_t)seed;
    if (random_controls < 0) random_controls = steers.n ? 1 : 0;   /* every spec is tested against a control unless told otherwise */
    if (random_controls && !steers.n) { fprintf(stderr, "codi eval: --random-controls needs at least one --steer spec to take the norms from\n"); rc = 2; goto done; }
    {
        const char *in[CLI_LIST_MAX + 3];
        char csv_default[4096];
        const char *dot = strrchr(out, '.');
        int n_in = 0;
        in[n_in++] = ma.model; in[n_in++] = ma.tokenizer; in[n_in++] = questions;
        for (i = 0; i < steers.n; i++) in[n_in++] = steers.v[i];
        snprintf(csv_default, sizeof csv_default, "%.*s.csv", dot && !strchr(dot, '/') ? (int)(dot - out) : (int)strlen(out), out);
        if (cli_out_check("eval", out, CLI_OUT_RESUME, 0, in, n_in) ||
            cli_out_check("eval", csv ? csv : csv_default, CLI_OUT_RESUME | CLI_OUT_STREAM, 0, in, n_in)) { rc = 2; goto done; }
    }
    workers = cli_threads_checked(&ma);
    if (!(m = cli_load_model(&ma)) || !(t = cli_load_tokenizer(&ma, m, 0))) goto done;
    /* conditions: baseline, the specs, their random controls */
    ec.c = (eval_condition *)calloc((size_t)(1 + steers.n * (1 + random_controls)), sizeof *ec.c);
    snprintf(ec.c[ec.nc++].name, sizeof ec.c->name, "baseline");
    for (i = 0; i < steers.n; i++) {
        char err[512];
        codi_steer *st = codi_steer_load(m, steers.v[i], err, sizeof err);
        int r;
        if (!st) { fprintf(stderr, "codi eval: %s\n", err); goto done; }
        ec.c[ec.nc].steer = st;
        snprintf(ec.c[ec.nc].name, sizeof ec.c->name, "%s", st->name);
        if (eval_cond_index(&ec, st->name) >= 0 || strchr(st->name, '"') || strchr(st->name, '\\') || strstr(st->name, "~random")) {
            fprintf(stderr, "codi eval: %s: condition name \"%s\" is taken, has quotes or holds \"~random\" (kept for random controls); "
                            "give the spec another \"name\"\n", steers.v[i], st->name); ec.nc++; goto done;
        }
        ec.nc++;
        for (r = 1; r <= random_controls; r++) {
            if (!ec.draw_per_question && !(ec.c[ec.nc].steer = codi_steer_random_like(st, (uint64_t)seed + (uint64_t)r))) { fprintf(stderr, "codi eval: out of memory\n"); goto done; }
            if (ec.draw_per_question) snprintf(ec.c[ec.nc].name, sizeof ec.c->name, "%.120s~random%d", st->name, r);
            else snprintf(ec.c[ec.nc].name, sizeof ec.c->name, "%.120s~random%d", st->name, seed + r);
            ec.nc++;
        }
    }
    eval_classify(&ec);
    ec.m = m; ec.t = t; ec.latents = latents; ec.max_answer = max_answer;
    ec.batch = batch; ec.batch_threads = batch > 1 ? workers : 1;
    if (batch > 1) workers = 1;           /* one batched runner on every thread */
    {
        eval_question_list ql;
        memset(&ql, 0, sizeof ql);
        ql.path = questions;
        cli_questions_room(latents + 2 + max_answer);
        i = cli_for_each_question(questions, limit, shard_k, shard_n, eval_collect_question, &ql, &n_bad);
        ec.q = ql.q; ec.nq = ql.n;
        if (i) goto done;
    }
    for (i = 0; i < ec.nq; i++) {
        int32_t ids[CLI_MAX_PROMPT];
        int n = codi_prompt_from_text(m, t, ec.q[i].question, recipe, ids, CLI_MAX_PROMPT);
        if (n < 0) { fprintf(stderr, "codi eval: %s:%d: the question does not fit in %d tokens\n", questions, ec.q[i].line, CLI_MAX_PROMPT); goto done; }
        ec.q[i].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
        memcpy(ec.q[i].ids, ids, sizeof(int32_t) * (size_t)n);
        ec.q[i].n_ids = n;
    }
    /* the results file: resume it when its settings match */
    eval_header(header, sizeof header, ma.model, questions, &ec, recipe, limit, shard_k, shard_n, seed);
    ec.total = (long)ec.nq * ec.nc;
    ec.done = (unsigned char *)calloc((size_t)(ec.total ? ec.total : 1), 1);
    ec.jobs = (eval_job *)calloc((size_t)(ec.total ? ec.total : 1), sizeof *ec.jobs);
    if (!ec.done || !ec.jobs) { fprintf(stderr, "codi eval: out of memory\n"); goto done; }
    {
        long good = 0, r, n_old = eval_read_results(&ec, out, old_header, sizeof old_header, &good, 0, ec.nq ? ec.q[ec.nq - 1].index + 1L : 1);
        int *pos_of;
        if (n_old == -2) { fprintf(stderr, "codi eval: %s is not a results file of these questions; give another --out or delete it\n", out); goto done; }
        pos_of = (int *)malloc(sizeof(int) * (size_t)(ec.nq ? ec.q[ec.nq - 1].index + 1 : 1));
        for (i = 0; i < ec.nq; i++) pos_of[ec.q[i].index] = i;
        if (n_old >= 0 && old_header[0] && strcmp(old_header, header)) {
            fprintf(stderr, "codi eval: %s holds results of another command; give another --out or delete it.\n  file:    %s  command: %s", out, old_header, header);
            free(pos_of); goto done;
        }
        for (r = 0; r < ec.n_res; r++) {
            int qi = ec.res[r].index <= (ec.nq ? ec.q[ec.nq - 1].index : -1) ? pos_of[ec.res[r].index] : -1;
            if (qi >= 0 && ec.q[qi].index == ec.res[r].index) ec.done[(size_t)qi * ec.nc + ec.res[r].cond] = 1;
        }
        free(pos_of);
        if (n_old > 0) fprintf(stderr, "codi eval: resuming %s: %ld results already there\n", out, n_old);
        if (n_old >= 0 && truncate(out, good) != 0) { fprintf(stderr, "codi eval: cannot truncate %s\n", out); goto done; }
        if (!(ec.out = fopen(out, "a"))) { fprintf(stderr, "codi eval: cannot write %s: %s\n", out, strerror(errno)); goto done; }
        ec.out_path = out; ec.out_good = n_old >= 0 ? good : 0;
        if (!old_header[0] || n_old < 0) {
            fputs(header, ec.out);
            if (cli_out_flush(ec.out, out)) {
                fclose(ec.out); ec.out = NULL;
                if (n_old < 0) remove(out); else eval_cut(out, ec.out_good);   /* a new file is not left empty */
                goto done;
            }
            ec.out_good += (long)strlen(header);
        }
        ec.finished = n_old > 0 ? n_old : 0;
    }
    pthread_mutex_init(&ec.lock, NULL);
    fprintf(stderr, "codi eval: %d questions (%d lines skipped) x %d conditions on %d threads, batch %d\n", ec.nq, n_bad, ec.nc,
            workers * ec.batch_threads, ec.batch);
    ec.progress = cli_progress_start("eval", ec.total, ec.finished);
    t0 = cli_now();
    {
        long before = ec.finished;
        th = (pthread_t *)malloc(sizeof *th * (size_t)workers);
        for (i = 0; i < workers; i++) pthread_create(&th[i], NULL, eval_worker, &ec);
        for (i = 0; i < workers; i++) pthread_join(th[i], NULL);
        cli_progress_end(ec.progress);
        if (ec.finished > before)
            fprintf(stderr, "codi eval: %ld runs in %.1f s: %.1f questions/minute per condition (%.1f runs/minute)\n", ec.finished - before,
                    cli_now() - t0, (ec.finished - before) / (double)ec.nc / ((cli_now() - t0) / 60), (ec.finished - before) / ((cli_now() - t0) / 60));
    }
    pthread_mutex_destroy(&ec.lock);
    if (ec.stop || cli_out_flush(ec.out, out) | fclose(ec.out)) {   /* whole lines only: a torn last line is cut off */
        if (ec.stop) fclose(ec.out);
        ec.out = NULL;
        eval_cut(out, ec.out_good);
        fprintf(stderr, "codi eval: stopped at the first failed write to %s: its %ld results are whole lines and are kept; "
                        "free space and run the same command again to resume\n", out, ec.finished);
        goto done;
    }
    ec.out = NULL;
    if (ec.failed) { fprintf(stderr, "codi eval: %ld runs failed (see above); run the command again to retry them\n", ec.failed); goto done; }
    {
        char csv_default[4096];
        const char *dot = strrchr(out, '.');
        snprintf(csv_default, sizeof csv_default, "%.*s.csv", dot && !strchr(dot, '/') ? (int)(dot - out) : (int)strlen(out), out);
        if (eval_summary(&ec, csv ? csv : csv_default)) goto done;
    }
    rc = 0;
done:
    free(th);
    eval_free(&ec);
    codi_tokenizer_free(t);
    codi_model_free(m);
    free(rest); free(files);
    return rc;
}

static const cli_command cmd_eval = {
    "eval", "accuracy over a questions file under steering conditions, with intervals and paired tests",
    "codi eval --model PATH --questions FILE.jsonl --out RESULTS.jsonl [--steer SPEC.json ...] [options]\n"
    "       codi eval --merge A.jsonl B.jsonl ... [--csv FILE.csv]",
    "Runs every question under each condition: the baseline, each --steer spec (named by its \"name\" or file\n"
    "name) and, with --random-controls N (default 1), each spec with its vectors replaced by random directions of the\n"
    "same norms: drawn once per spec (default; control K uses seed S+K, named SPEC~random<S+K>) or, with\n"
    "--random-draw question, per question (seeded from S, the spec's number, K and the question index;\n"
    "named SPEC~randomK; each result line records its draw_seed). Names are checked: \"baseline\", a\n"
    "taken name and names holding \"~random\" are refused. The runs go through the batched runner: --batch N\n"
    "of them advance together, one pass over the weights per step, on all --threads (--batch 1: one run per\n"
    "thread).\n"
    "Every result is appended to RESULTS.jsonl as soon as it is known (first line: the settings); running\n"
    "the same command again resumes (after Ctrl-C or kill -9) and ends with the same totals. A malformed\n"
    "line of the questions file is reported with its number and skipped.\n"
    "Statistics (split \"confirm\": eval tests pre-specified conditions; explore elsewhere, e.g. codi sweep):\n"
    "accuracy with its Wilson 95% interval; McNemar's exact test and the paired difference (Bonett-Price\n"
    "95% interval) of each condition vs the baseline (flips_to_right / flips_to_wrong) and of each spec vs\n"
    "its random controls on the same questions: with several controls the spec is tested against each and\n"
    "p_vs_random is the largest p (it must beat every control; the diff is against that control).\n"
    "p_primary (vs random where the spec has controls, else vs the baseline) is adjusted within its family\n"
    "(steer: the specs; control: the random controls): p_holm (Holm) and q_bh (Benjamini-Hochberg). The\n"
    "table marks an effect (*, either direction) only for a spec whose Holm-adjusted p vs its random\n"
    "control is < 0.05.\n"
    "Writes the table as CSV and ends with one JSON object per condition (null where a number was not\n"
    "computed): condition, family, split, n, correct, accuracy, ci_low, ci_high, p_vs_baseline,\n"
    "flips_to_right, flips_to_wrong, diff_vs_baseline(_ci_low/_ci_high), random_controls, random_control,\n"
    "diff_vs_random(_ci_low/_ci_high), p_vs_random, p_primary, p_holm, q_bh, family_size, effect, and the\n"
    "older keys questions, ci95, paired, baseline_only, condition_only, mcnemar_p. --merge recomputes\n"
    "all of it from the result lines.\n\n"
    "Spread over machines (Slurm array task K of N, or GNU parallel), then merge:\n"
    "  codi eval --model M --questions Q.jsonl --steer s.json --shard $SLURM_ARRAY_TASK_ID/8 --out part$SLURM_ARRAY_TASK_ID.jsonl\n"
    "  codi eval --merge part*.jsonl --csv all.csv\n\n"
    "Examples:\n"
    "  codi eval --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --out r.jsonl --threads 2\n"
    "  codi eval --model models/codi-nano/codi_nano.bin --questions data/templates.jsonl --steer tests/data/steer/s1_z_add.json\n"
    "            --random-controls 3 --limit 200 --out steer.jsonl",
    eval_run
};
