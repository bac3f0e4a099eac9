/* codi eval: accuracy of CODI over a questions file under a list of conditions (the baseline, each
   --steer spec, random controls of each spec), with Wilson 95% intervals and McNemar's exact test
   of each condition against the baseline on the same questions.

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

typedef struct {
    int line, index;          /* line in the file (1-based), index among the valid questions (0-based) */
    char *question;
    double gold;
    int has_gold;
    int32_t *ids; int n_ids;  /* the prompt */
} eval_question;

typedef struct {
    char name[160];
    codi_steer *steer;        /* NULL: the baseline */
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
    int batch, batch_threads;   /* runs per batched runner (--batch), threads of each runner */
    long next, total, finished, failed;
    FILE *out;
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
    if (!(x.question = codi__strdup(cq->question))) { fprintf(stderr, "codi eval: out of memory\n"); return -1; }
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
                         "\"max_answer\": %d, \"limit\": %d, \"seed\": %d, \"shard\": \"%d/%d\", \"conditions\": [",
                         model, questions, ec->latents, recipe, ec->max_answer, limit, seed, shard_k, shard_n);
    for (i = 0; i < ec->nc && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\"", i ? ", " : "", ec->c[i].name);
    if (n < cap) snprintf(buf + n, cap - n, "]}\n");
}

static int eval_cond_index(const eval_ctx *ec, const char *name) {
    int i;
    for (i = 0; i < ec->nc; i++) if (!strcmp(ec->c[i].name, name)) return i;
    return -1;
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
   *good_len is where the whole lines end. Returns the number of results read, -1 on a bad file. */
static long eval_read_results(eval_ctx *ec, const char *path, char *header_out, size_t hcap, long *good_len, int add_conditions) {
    size_t len;
    char *text = codi__read_text(path, &len), *p, err[256];
    long n = 0;
    int line = 0;
    if (!text) return -1;
    header_out[0] = 0;
    *good_len = 0;
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi__json *j;
        if (!e) break;                                       /* an unfinished last line */
        line++;
        if (line == 1) snprintf(header_out, hcap, "%.*s\n", (int)(e - p), p);
        else if ((j = codi__json_parse(p, (size_t)(e - p), err, sizeof err)) != NULL) {
            const codi__json *c = codi__json_get(j, "condition"), *ix = codi__json_get(j, "index"), *ok = codi__json_get(j, "correct");
            if (c && c->type == CODI__J_STR && ix && ix->type == CODI__J_NUM && ok) {
                int ci = eval_cond_index(ec, c->str);
                if (ci < 0 && add_conditions) {
                    ec->c = (eval_condition *)realloc(ec->c, sizeof *ec->c * (size_t)(ec->nc + 1));
                    memset(&ec->c[ec->nc], 0, sizeof *ec->c);
                    snprintf(ec->c[ec->nc].name, sizeof ec->c[ec->nc].name, "%s", c->str);
                    ci = ec->nc++;
                }
                if (ci >= 0) { eval_add_result(ec, ci, (int)ix->num, ok->type == CODI__J_TRUE); n++; }
            } else fprintf(stderr, "%s:%d: not a result line (ignored)\n", path, line);
            codi__json_free(j);
        } else fprintf(stderr, "%s:%d: %s (ignored)\n", path, line, err);
        p = e + 1;
        *good_len = (long)(p - text);
    }
    free(text);
    return n;
}

/* --- running ------------------------------------------------------------------------------ */

/* One (condition, question)'s result: decode, score; the JSON line is written under the lock. */
static void eval_record(eval_ctx *ec, int ci, int qi, const codi_run_result *rr, char *line, size_t cap) {
    const eval_question *q = &ec->q[qi];
    const eval_condition *c = &ec->c[ci];
    char text[4096];
    double pred = 0;
    int has_pred, correct;
    size_t n;
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
    snprintf(line + n, cap - n, "\"}\n");
    pthread_mutex_lock(&ec->lock);
    fputs(line, ec->out);
    fflush(ec->out);
    eval_add_result(ec, ci, q->index, correct);
    ec->finished++;
    cli_progress_update(ec->progress, ec->finished);
    pthread_mutex_unlock(&ec->lock);
}

typedef struct { eval_ctx *ec; char *line; } eval_worker_ctx;

/* A run of the batched runner ended: unit u = question u / nc under condition u % nc. */
static int eval_done(void *user, const codi_batch_result *r) {
    eval_worker_ctx *w = (eval_worker_ctx *)user;
    eval_ctx *ec = w->ec;
    long u = (long)(intptr_t)r->user;
    int ci = (int)(u % ec->nc), qi = (int)(u / ec->nc);
    if (r->status == 0) { eval_record(ec, ci, qi, r->result, w->line, 16384); return 0; }
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
    b = codi_batch_alloc(ec->m, slots > 0 ? slots : 1, max_ids + ec->latents + ec->max_answer + 2, ec->batch_threads);
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
            u = ec->next < ec->total ? ec->next++ : -1;
            pthread_mutex_unlock(&ec->lock);
            if (u < 0) { more = 0; break; }
            memset(&rq, 0, sizeof rq);
            rq.ids = ec->q[u / ec->nc].ids; rq.n_ids = ec->q[u / ec->nc].n_ids;
            rq.opts = codi_run_opts_default(ec->m);
            rq.opts.n_latent = ec->latents; rq.opts.max_answer = ec->max_answer;
            rq.steer = ec->c[u % ec->nc].steer;
            rq.user = (void *)(intptr_t)u;
            if (codi_batch_submit(b, &rq)) {
                fprintf(stderr, "codi eval: %s, line %d: %s\n", ec->c[u % ec->nc].name, ec->q[u / ec->nc].line, codi_batch_error(b));
                pthread_mutex_lock(&ec->lock); ec->failed++; pthread_mutex_unlock(&ec->lock);
            }
        }
        if (!codi_batch_pending(b) && !more) break;
        if (codi_batch_step(b, eval_done, &w) < 0) {
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

/* Condition ci's counts over grid [conditions, questions] (1 right, 0 wrong, -1 not run; row 0 is the
   baseline): n run, k right, paired with a baseline result, b right only in the baseline, c only in ci. */
static void eval_tally(const signed char *grid, int nq_max, int ci, long *n, long *k, long *paired, long *b, long *c) {
    int i;
    *n = *k = *paired = *b = *c = 0;
    for (i = 0; i < nq_max; i++) {
        int x = grid[(size_t)ci * nq_max + i], y = grid[i];
        if (x < 0) continue;
        (*n)++; *k += x;
        if (y >= 0) { (*paired)++; *b += y && !x; *c += !y && x; }
    }
}

/* Wilson score interval for k successes in n at 95% (z = 1.959964). */
static void eval_wilson(long k, long n, double *lo, double *hi) {
    const double z = 1.959963984540054;
    double p, den, mid, half;
    if (n == 0) { *lo = 0; *hi = 1; return; }
    p = (double)k / n; den = 1 + z * z / n;
    mid = (p + z * z / (2.0 * n)) / den;
    half = z / den * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n));
    *lo = mid - half < 0 ? 0 : mid - half; *hi = mid + half > 1 ? 1 : mid + half;
}

/* McNemar's exact test: two-sided p of b vs c discordant pairs, 2 P(X <= min(b, c)), X ~ Bin(b + c, 1/2). */
static double eval_mcnemar(long b, long c) {
    long n = b + c, k = b < c ? b : c, i;
    double p = 0;
    if (n == 0) return 1;
    for (i = 0; i <= k; i++) p += exp(lgamma((double)n + 1) - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - n * log(2.0));
    return 2 * p > 1 ? 1 : 2 * p;
}

/* Table on stdout, CSV to csv_path (if any), then one JSON object per condition (the last lines). */
static void eval_summary(const eval_ctx *ec, const char *csv_path) {
    int ci, nq_max = 0;
    signed char *grid;              /* [nc, max index + 1]: -1 absent, 0 wrong, 1 right */
    long r;
    FILE *csv = NULL;
    for (r = 0; r < ec->n_res; r++) if (ec->res[r].index + 1 > nq_max) nq_max = ec->res[r].index + 1;
    if (!(grid = (signed char *)malloc((size_t)ec->nc * (size_t)(nq_max ? nq_max : 1)))) { fprintf(stderr, "codi: out of memory\n"); return; }
    memset(grid, -1, (size_t)ec->nc * (size_t)(nq_max ? nq_max : 1));
    for (r = 0; r < ec->n_res; r++) grid[(size_t)ec->res[r].cond * nq_max + ec->res[r].index] = (signed char)ec->res[r].correct;
    if (csv_path && !(csv = fopen(csv_path, "w"))) fprintf(stderr, "codi eval: cannot write %s\n", csv_path);
    if (csv) fprintf(csv, "condition,questions,correct,accuracy,ci95_low,ci95_high,paired,diff_vs_baseline,baseline_only,condition_only,mcnemar_p\n");
    printf("%-40s %9s %8s %9s %17s %9s %10s\n", "condition", "questions", "correct", "accuracy", "95% CI (Wilson)", "diff", "McNemar p");
    for (ci = 0; ci < ec->nc; ci++) {
        long n, k, paired, b, c;
        double lo, hi, p;
        eval_tally(grid, nq_max, ci, &n, &k, &paired, &b, &c);
        eval_wilson(k, n, &lo, &hi);
        p = eval_mcnemar(b, c);
        printf("%-40s %9ld %8ld %8.2f%% %7.2f%% - %5.2f%% %+8.2f%% %10.4g\n", ec->c[ci].name, n, k, n ? 100.0 * k / n : 0.0, 100 * lo, 100 * hi,
               paired ? 100.0 * (c - b) / paired : 0.0, p);
        if (csv) fprintf(csv, "\"%s\",%ld,%ld,%.6f,%.6f,%.6f,%ld,%.6f,%ld,%ld,%.6g\n", ec->c[ci].name, n, k, n ? (double)k / n : 0.0, lo, hi,
                         paired, paired ? (double)(c - b) / paired : 0.0, b, c, p);
    }
    if (csv) fclose(csv);
    for (ci = 0; ci < ec->nc; ci++) {
        long n, k, paired, b, c;
        double lo, hi;
        eval_tally(grid, nq_max, ci, &n, &k, &paired, &b, &c);
        eval_wilson(k, n, &lo, &hi);
        printf("{\"condition\": ");
        cli_json_string(stdout, ec->c[ci].name);
        printf(", \"questions\": %ld, \"correct\": %ld, \"accuracy\": %.6f, \"ci95\": [%.6f, %.6f], \"paired\": %ld, "
               "\"diff_vs_baseline\": %.6f, \"baseline_only\": %ld, \"condition_only\": %ld, \"mcnemar_p\": %.6g}\n",
               n, k, n ? (double)k / n : 0.0, lo, hi, paired, paired ? (double)(c - b) / paired : 0.0, b, c, eval_mcnemar(b, c));
    }
    free(grid);
}

/* --- the command ---------------------------------------------------------------------------- */

static void eval_free(eval_ctx *ec) {
    int i;
    for (i = 0; i < ec->nq; i++) { free(ec->q[i].question); free(ec->q[i].ids); }
    for (i = 0; i < ec->nc; i++) codi_steer_free(ec->c[i].steer);
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
    memset(&ec, 0, sizeof ec);
    for (i = 0; i < n; i++) {
        long good;
        if (eval_read_results(&ec, files[i], i ? h : h0, sizeof h, &good, 1) < 0) { fprintf(stderr, "codi eval: cannot read %s\n", files[i]); eval_free(&ec); return 1; }
        if (i && strcmp(eval_unshard(h), eval_unshard(h0))) {
            fprintf(stderr, "codi eval: %s was made with other settings than %s:\n  %s  %s", files[i], files[0], h, h0); eval_free(&ec); return 1;
        }
    }
    {   /* the same (condition, question) in two files counts once */
        long r, w = 0;
        int max_index = 0;
        unsigned char *seen;
        for (r = 0; r < ec.n_res; r++) if (ec.res[r].index + 1 > max_index) max_index = ec.res[r].index + 1;
        seen = (unsigned char *)calloc((size_t)ec.nc * (size_t)(max_index ? max_index : 1), 1);
        for (r = 0; r < ec.n_res; r++) {
            size_t key = (size_t)ec.res[r].cond * max_index + ec.res[r].index;
            if (!seen[key]) { seen[key] = 1; ec.res[w++] = ec.res[r]; }
        }
        ec.n_res = w;
        free(seen);
    }
    fprintf(stderr, "codi eval: merged %d files: %ld results, %d conditions\n", n, ec.n_res, ec.nc);
    eval_summary(&ec, csv_path);
    eval_free(&ec);
    return 0;
}

static int eval_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *questions = NULL, *out = NULL, *shard = NULL, *csv = NULL;
    int limit = 0, recipe = 0, latents = 6, max_answer = 256, random_controls = 0, seed = 1, shard_k = 0, shard_n = 0, merge = 0;
    int batch = CLI_BATCH_DEFAULT;
    cli_list steers;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "questions, one {\"question\": ..., \"answer\": N or \"... #### N\"} per line" },
        { "--steer", CLI_LIST, &steers, 0, 0, "SPEC.json", "a steering spec (tests/data/steer/*.json; codi_lens.h >>steer): one condition each, repeatable" },
        { "--random-controls", CLI_INT, &random_controls, 0, 1000, "N", "per spec, N conditions with its vectors replaced by random directions of the same norms (seeds seed+1..seed+N; default 0)" },
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "seed of the random controls (default 1)" },
        { "--out", CLI_STR, &out, 0, 0, "RESULTS.jsonl", "per-question results, appended as they come; an existing file is resumed" },
        { "--csv", CLI_STR, &csv, 0, 0, "FILE.csv", "the summary table as CSV (default: RESULTS.jsonl with .csv)" },
        { "--limit", CLI_INT, &limit, 0, 100000000, "N", "only the first N questions (default all)" },
        { "--shard", CLI_STR, &shard, 0, 0, "K/N", "questions K-1, K-1+N, ... of the file (1 <= K <= N): one of N machines; join with --merge" },
        { "--merge", CLI_FLAG, &merge, 0, 0, NULL, "--merge A.jsonl B.jsonl ...: join result files (shards) and print their summary" },
        { "--recipe", CLI_INT, &recipe, 0, 1, "0|1", "prompt: 0 BOS q bot (zhenyi4/codi), 1 BOS q <|eot_id|> bot (the sprint); default 0" },
        { "--latents", CLI_INT, &latents, 0, 1000, "N", "latent steps (default 6)" },
        { "--max-answer", CLI_INT, &max_answer, 1, 1024, "N", "answer tokens at most (default 256)" },
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
        rc = eval_merge(files, n_files, csv);
        goto done;
    }
    if (!ma.model || !questions || !out) { fprintf(stderr, "codi eval: needs --model, --questions and --out (codi eval --help)\n"); rc = 2; goto done; }
    if (shard && cli_parse_shard(shard, &shard_k, &shard_n)) { rc = 2; goto done; }
    if (random_controls && !steers.n) { fprintf(stderr, "codi eval: --random-controls needs at least one --steer spec to take the norms from\n"); rc = 2; goto done; }
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
        if (eval_cond_index(&ec, st->name) >= 0 || strchr(st->name, '"') || strchr(st->name, '\\')) {
            fprintf(stderr, "codi eval: %s: condition name \"%s\" is taken or has quotes; give the spec a \"name\"\n", steers.v[i], st->name); ec.nc++; goto done;
        }
        ec.nc++;
        for (r = 1; r <= random_controls; r++) {
            if (!(ec.c[ec.nc].steer = codi_steer_random_like(st, (uint64_t)seed + (uint64_t)r))) { fprintf(stderr, "codi eval: out of memory\n"); goto done; }
            snprintf(ec.c[ec.nc].name, sizeof ec.c->name, "%.120s~random%d", st->name, seed + r);
            ec.nc++;
        }
    }
    ec.m = m; ec.t = t; ec.latents = latents; ec.max_answer = max_answer;
    ec.batch = batch; ec.batch_threads = batch > 1 ? workers : 1;
    if (batch > 1) workers = 1;           /* one batched runner on every thread */
    {
        eval_question_list ql;
        memset(&ql, 0, sizeof ql);
        ql.path = questions;
        i = cli_for_each_question(questions, limit, shard_k, shard_n, eval_collect_question, &ql, &n_bad);
        ec.q = ql.q; ec.nq = ql.n;
        if (i) goto done;
    }
    for (i = 0; i < ec.nq; i++) {
        int32_t ids[4096];
        int n = codi_prompt_from_text(m, t, ec.q[i].question, recipe, ids, 4096);
        if (n < 0) { fprintf(stderr, "%s:%d: the question does not fit in 4096 tokens\n", questions, ec.q[i].line); goto done; }
        ec.q[i].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
        memcpy(ec.q[i].ids, ids, sizeof(int32_t) * (size_t)n);
        ec.q[i].n_ids = n;
    }
    /* the results file: resume it when its settings match */
    eval_header(header, sizeof header, ma.model, questions, &ec, recipe, limit, shard_k, shard_n, seed);
    ec.total = (long)ec.nq * ec.nc;
    ec.done = (unsigned char *)calloc((size_t)(ec.total ? ec.total : 1), 1);
    {
        long good = 0, r, n_old = eval_read_results(&ec, out, old_header, sizeof old_header, &good, 0);
        int *pos_of = (int *)malloc(sizeof(int) * (size_t)(ec.nq ? ec.q[ec.nq - 1].index + 1 : 1));
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
        if (!(ec.out = fopen(out, "a"))) { fprintf(stderr, "codi eval: cannot write %s\n", out); goto done; }
        if (!old_header[0] || n_old < 0) { fputs(header, ec.out); fflush(ec.out); }
        ec.finished = n_old > 0 ? n_old : 0;
    }
    pthread_mutex_init(&ec.lock, NULL);
    fprintf(stderr, "codi eval: %d questions (%d malformed lines skipped) x %d conditions on %d threads, batch %d\n", ec.nq, n_bad, ec.nc,
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
    fclose(ec.out);
    if (ec.failed) { fprintf(stderr, "codi eval: %ld runs failed (see above); run the command again to retry them\n", ec.failed); goto done; }
    {
        char csv_default[4096];
        const char *dot = strrchr(out, '.');
        snprintf(csv_default, sizeof csv_default, "%.*s.csv", dot && !strchr(dot, '/') ? (int)(dot - out) : (int)strlen(out), out);
        eval_summary(&ec, csv ? csv : csv_default);
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
    "name) and, with --random-controls N, each spec with its vectors replaced by random directions of the\n"
    "same norms (seeds S+1..S+N). The runs go through the batched runner: --batch N of them advance\n"
    "together, one pass over the weights per step, on all --threads (--batch 1: one run per thread).\n"
    "Every result is appended to RESULTS.jsonl as soon as it is known (first line: the settings); running\n"
    "the same command again resumes (after Ctrl-C or kill -9) and ends with the same totals. A malformed\n"
    "line of the questions file is reported with its number and skipped.\n"
    "Prints a table (accuracy, Wilson 95% interval, difference to the baseline on the same questions,\n"
    "McNemar's exact p), writes it as CSV, and ends with one JSON object per condition: condition,\n"
    "questions, correct, accuracy, ci95, paired, diff_vs_baseline, baseline_only, condition_only, mcnemar_p.\n\n"
    "Spread over machines (Slurm array task K of N, or GNU parallel), then merge:\n"
    "  codi eval --model M --questions Q.jsonl --steer s.json --shard $SLURM_ARRAY_TASK_ID/8 --out part$SLURM_ARRAY_TASK_ID.jsonl\n"
    "  codi eval --merge part*.jsonl --csv all.csv\n\n"
    "Examples:\n"
    "  codi eval --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --out r.jsonl --threads 2\n"
    "  codi eval --model models/codi-nano/codi_nano.bin --questions data/templates.jsonl --steer tests/data/steer/s1_z_add.json\n"
    "            --random-controls 3 --limit 200 --out steer.jsonl",
    eval_run
};
