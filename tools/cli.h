/* cli.h - what every `codi` command shares: a table-driven option parser with help, the model /
   tokenizer / prompt option groups, progress on stderr, the questions-file reader and small output
   helpers. Included once by tools/codi.c after the codi_lens.h implementation (a unity build: each
   tools/cmd_*.c is included after it, so command files prefix their static names). */
#ifndef CODI_CLI_H
#define CODI_CLI_H

#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <dirent.h>
#include <signal.h>

#define CLI_VERSION "codi_lens 0.3"

#if defined(__GNUC__)
#define CLI_API static __attribute__((unused))   /* each command uses only some helpers */
#else
#define CLI_API static
#endif

static const codi_model *cli__q_model;      /* with a tokenizer: prompts are measured as they are read */
static const codi_tokenizer *cli__q_tok;

enum { CLI_FLAG, CLI_STR, CLI_INT, CLI_DOUBLE, CLI_LIST };
enum { CLI_OK = 0, CLI_HELP = 1, CLI_ERROR = 2 };

/* ---- small helpers (the library's own are private) ---------------------------------------- */

CLI_API void cli_err(char *err, size_t errsz, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
CLI_API void cli_err(char *err, size_t errsz, const char *fmt, ...) {
    va_list ap;
    if (!err || !errsz) return;
    va_start(ap, fmt); vsnprintf(err, errsz, fmt, ap); va_end(ap);
}
CLI_API char *cli_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
CLI_API int cli_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}
CLI_API int cli_all_finite(const float *x, int n) {
    int i;
    for (i = 0; i < n; i++) if (x[i] - x[i] != 0) return 0;
    return 1;
}
CLI_API int cli_cmp_double(const void *a, const void *b) {   /* qsort, ascending */
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* 1 if path names a regular file (following links): a FIFO or device would block fopen. */
CLI_API int cli_is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

#define CLI_LIST_MAX 64
/* Runs per batched runner (codi_batch_*) for --batch (eval, record, lens --questions, vectors, bench): the fastest
   measured on a 2-core machine with the 1B (README "Speed"). */
#define CLI_BATCH_DEFAULT 32
#define CLI_QUOTE_(x) #x
#define CLI_QUOTE(x) CLI_QUOTE_(x)
typedef struct { const char *v[CLI_LIST_MAX]; int n; } cli_list;   /* a repeatable option's values */

/* One option of a command. Numbers are parsed strictly: the whole string, finite, in [min, max]. */
typedef struct {
    const char *name;   /* "--top-k" */
    int kind;           /* CLI_FLAG: int* set to 1; CLI_STR: const char**; CLI_INT: int*; CLI_DOUBLE: double*;
                           CLI_LIST: cli_list* (the option may be repeated) */
    void *dest;
    double min, max;    /* inclusive range of CLI_INT / CLI_DOUBLE */
    const char *arg;    /* metavariable shown in help, e.g. "K" */
    const char *help;   /* one line, with the default; NULL: an old name of the option with the same
                           dest, accepted for one release (not listed; using it says the new name) */
} cli_opt;
#define CLI_END { NULL, 0, NULL, 0, 0, NULL, NULL }

typedef struct cli_command_s {
    const char *name;          /* "lens" */
    const char *summary;       /* one line for `codi help` */
    const char *usage;         /* "codi lens --model PATH (--question TEXT | --ids 1,2,3) [options]" */
    const char *description;   /* what it does, then "Examples:" lines */
    int (*run)(const struct cli_command_s *self, int argc, char **argv);   /* argv[0] = command name */
} cli_command;

/* ---- option parsing ---------------------------------------------------------------------- */

CLI_API void cli_print_help(const cli_command *cmd, const cli_opt *opts) {
    const cli_opt *o;
    printf("usage: %s\n\n%s\n", cmd->usage, cmd->description);
    printf("\noptions:\n");
    for (o = opts; o->name; o++) {
        char left[64];
        if (!o->help) continue;
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-24s %s\n", left, o->help);
    }
    printf("  %-24s %s\n", "-h, --help", "show this help");
}

/* Parses text as option o's value into its destination; 0, or -1 after a message. */
CLI_API int cli_set_value(const cli_command *cmd, const cli_opt *o, const char *text) {
    char *end;
    double v;
    if (o->kind == CLI_STR) { *(const char **)o->dest = text; return 0; }
    if (o->kind == CLI_LIST) {
        cli_list *l = (cli_list *)o->dest;
        if (l->n == CLI_LIST_MAX) { fprintf(stderr, "codi %s: %s given more than %d times\n", cmd->name, o->name, CLI_LIST_MAX); return -1; }
        l->v[l->n++] = text;
        return 0;
    }
    errno = 0;
    v = o->kind == CLI_INT ? (double)strtol(text, &end, 10) : strtod(text, &end);
    if (end == text || *end || errno == ERANGE || !(v - v == 0)) {
        fprintf(stderr, "codi %s: %s needs %s, not '%s'\n", cmd->name, o->name, o->kind == CLI_INT ? "a whole number" : "a finite number", text);
        return -1;
    }
    if (v < o->min || v > o->max) {
        fprintf(stderr, "codi %s: %s %s is out of range [%.10g, %.10g]\n", cmd->name, o->name, text, o->min, o->max);
        return -1;
    }
    if (o->kind == CLI_INT) *(int *)o->dest = (int)v; else *(double *)o->dest = v;
    return 0;
}

/* Parses argv[1..] against opts (--name VALUE or --name=VALUE). --help prints the command's help and
   returns CLI_HELP; a bad option prints why and returns CLI_ERROR; CLI_OK otherwise. An option other
   than a CLI_LIST given twice is an error. */
CLI_API int cli_parse(const cli_command *cmd, const cli_opt *opts, int argc, char **argv) {
    unsigned char seen[128];
    int i, n_opts = 0;
    while (opts[n_opts].name) n_opts++;
    CODI_ASSERT(n_opts <= (int)sizeof seen);
    memset(seen, 0, sizeof seen);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '='), *value = NULL;
        size_t len = eq && !strncmp(a, "--", 2) ? (size_t)(eq - a) : strlen(a);
        int k;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { cli_print_help(cmd, opts); return CLI_HELP; }
        for (k = 0; k < n_opts; k++) if (strlen(opts[k].name) == len && !strncmp(a, opts[k].name, len)) break;
        if (k == n_opts) {
            fprintf(stderr, "codi %s: unknown option '%s' (codi %s --help lists the options)\n", cmd->name, a, cmd->name);
            return CLI_ERROR;
        }
        if (seen[k]++ && opts[k].kind != CLI_LIST) { fprintf(stderr, "codi %s: %s given twice\n", cmd->name, opts[k].name); return CLI_ERROR; }
        if (!opts[k].help) {                 /* an old name: say the new one */
            int j;
            for (j = 0; j < n_opts && !(opts[j].dest == opts[k].dest && opts[j].help); j++) {}
            if (j < n_opts) fprintf(stderr, "codi %s: note: %s is now %s\n", cmd->name, opts[k].name, opts[j].name);
        }
        if (opts[k].kind == CLI_FLAG) {
            if (eq && len < strlen(a)) { fprintf(stderr, "codi %s: %s takes no value\n", cmd->name, opts[k].name); return CLI_ERROR; }
            *(int *)opts[k].dest = 1;
            continue;
        }
        if (len < strlen(a)) value = a + len + 1;
        else if (i + 1 < argc) value = argv[++i];
        else { fprintf(stderr, "codi %s: %s needs a value (%s)\n", cmd->name, opts[k].name, opts[k].arg ? opts[k].arg : "value"); return CLI_ERROR; }
        if (cli_set_value(cmd, &opts[k], value)) return CLI_ERROR;
    }
    return CLI_OK;
}

/* ---- model, tokenizer and prompt option groups ----------------------------------------------- */

typedef struct { const char *model, *base, *tokenizer, *compute; int exact, head_dim, threads, no_crc; double lora_scale; } cli_model_args;

#define CLI_MODEL_OPTS(a) \
    { "--model", CLI_STR, &(a)->model, 0, 0, "PATH", "checkpoint (.bin, .safetensors), HF Llama directory, or a directory holding one checkpoint" }, \
    { "--base", CLI_STR, &(a)->base, 0, 0, "DIR", "Hugging Face Llama directory the checkpoint is layered over" }, \
    { "--tokenizer", CLI_STR, &(a)->tokenizer, 0, 0, "PATH", "tokenizer.json / tokenizer.model (default: beside the model, else in --base)" }, \
    { "--exact", CLI_FLAG, &(a)->exact, 0, 0, NULL, "keep merged weights in f32 (default: bf16)" }, \
    { "--head-dim", CLI_INT, &(a)->head_dim, 1, 4096, "N", "head dim, overriding config.json / the default 64" }, \
    { "--threads", CLI_INT, &(a)->threads, 1, 1e6, "N", "worker threads (1; capped at 4 x the online cores)" }, \
    { "--lora-scale", CLI_DOUBLE, &(a)->lora_scale, 0, 1e6, "S", "LoRA alpha / r (0.25, CODI's 32 / 128)" }, \
    { "--no-crc", CLI_FLAG, &(a)->no_crc, 0, 0, NULL, "skip the CRC-32 check of a .bin's zip entries (default: verify)" }, \
    { "--compute", CLI_STR, &(a)->compute, 0, 0, "f32|bf16", "bf16: products with bf16 weights take the activations rounded to bf16 " \
      "(vdpbf16ps, AVX512-BF16 CPUs): faster prefill and batches, 8 significant bits in each product's input (default f32, or CODI_COMPUTE)" }

CLI_API cli_model_args cli_model_defaults(void) {
    cli_model_args a;
    memset(&a, 0, sizeof a);
    a.threads = 1; a.lora_scale = 0.25;
    return a;
}

/* Caps --threads at 4 x the online cores, with a note; returns the count used. */
CLI_API int cli_threads_checked(cli_model_args *a) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (a->threads > 4 * cores) {
        fprintf(stderr, "codi: note: --threads %d capped at %ld (4 x %ld online cores)\n", a->threads, 4 * cores, cores);
        a->threads = (int)(4 * cores);
    }
    return a->threads;
}

/* Loads --model (with --base etc.); prints "codi: <error>" and returns NULL on failure. */
CLI_API codi_model *cli_load_model(cli_model_args *a) {
    char err[1024];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    if (!a->model) { fprintf(stderr, "codi: --model PATH is required\n"); return NULL; }
    lo.base = a->base; lo.exact = a->exact; lo.head_dim = a->head_dim; lo.lora_scale = (float)a->lora_scale; lo.skip_crc = a->no_crc;
    lo.n_threads = cli_threads_checked(a);
    if (a->compute) {
        if (strcmp(a->compute, "f32") && strcmp(a->compute, "bf16")) { fprintf(stderr, "codi: --compute: '%s' is not f32 or bf16\n", a->compute); return NULL; }
        lo.compute = !strcmp(a->compute, "bf16") ? CODI_COMPUTE_BF16 : CODI_COMPUTE_F32;
    }
    if (!(m = codi_load(a->model, &lo, err, sizeof err))) fprintf(stderr, "codi: %s\n", err);
    else if (m->compute == CODI_COMPUTE_BF16) fprintf(stderr, "codi: note: bf16 compute: activations rounded to bf16 in every product with bf16 weights\n");
    cli__q_model = m;
    return m;
}

CLI_API int cli_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

CLI_API int cli_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Loads a tokenizer, reporting the real error with the file name; NULL on failure. */
CLI_API codi_tokenizer *cli_tokenizer_from(const char *path, const codi_model *m) {
    char err[1024];
    codi_tokenizer *t = codi_tokenizer_load(path, err, sizeof err);
    if (!t) { fprintf(stderr, "codi: tokenizer %s: %s\n", path, err); return NULL; }
    if (m && codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) {
        fprintf(stderr, "codi: tokenizer %s: %s\n", path, err); codi_tokenizer_free(t); return NULL;
    }
    if (m == cli__q_model) cli__q_tok = t;
    return t;
}

/* --tokenizer, else tokenizer.json in the model directory / beside the model file, else in --base.
   optional: NULL without a message when no --tokenizer was given and no tokenizer.json exists. */
CLI_API codi_tokenizer *cli_load_tokenizer(const cli_model_args *a, const codi_model *m, int optional) {
    char path[4096];
    const char *slash;
    if (a->tokenizer) return cli_tokenizer_from(a->tokenizer, m);
    if (a->model && cli_is_dir(a->model)) snprintf(path, sizeof path, "%s/tokenizer.json", a->model);
    else {
        slash = a->model ? strrchr(a->model, '/') : NULL;
        snprintf(path, sizeof path, "%.*stokenizer.json", slash ? (int)(slash - a->model + 1) : 0, a->model ? a->model : "");
    }
    if (cli_exists(path)) return cli_tokenizer_from(path, m);
    if (a->base) {
        snprintf(path, sizeof path, "%s/tokenizer.json", a->base);
        if (cli_exists(path)) return cli_tokenizer_from(path, m);
    }
    if (!optional)
        fprintf(stderr, "codi: no tokenizer.json beside %s%s%s: give --tokenizer PATH (tokenizer.json or tokenizer.model)\n",
                a->model ? a->model : "the model", a->base ? " or in " : "", a->base ? a->base : "");
    return NULL;
}

typedef struct { const char *question, *ids; int recipe, latents, parse_special; } cli_prompt_args;

/* The options every command that runs CODI shares, declared once: the prompt recipe, the latent
   steps (the range is the command's) and the answer's length (the default is the command's, in its
   help: 256 where the answer is scored, fewer where its tokens are stored or read). */
#define CLI_RECIPE_OPT(dest) \
    { "--recipe", CLI_INT, dest, 0, 1, "R", "prompt: 0 = BOS q bot (zhenyi4/codi, default); 1 = BOS q <|eot_id|> bot (Latent Reasoning Sprint)" }
#define CLI_LATENTS_OPT(dest, lo, hi) { "--latents", CLI_INT, dest, lo, hi, "N", "latent steps (default 6)" }
#define CLI_MAX_ANSWER_OPT(dest, lo, dflt) \
    { "--max-answer", CLI_INT, dest, lo, 1024, "N", "greedy answer tokens after eot, at most; an eos ends it sooner (default " #dflt ")" }

#define CLI_PROMPT_OPTS(p) \
    { "--question", CLI_STR, &(p)->question, 0, 0, "TEXT", "the question as text (needs a tokenizer)" }, \
    { "--ids", CLI_STR, &(p)->ids, 0, 0, "1,2,3", "the prompt as token ids, used as given (the last is bot)" }, \
    CLI_RECIPE_OPT(&(p)->recipe), \
    CLI_LATENTS_OPT(&(p)->latents, 0, 1000), \
    { "--parse-special", CLI_FLAG, &(p)->parse_special, 0, 0, NULL, "read special-token text in --question (e.g. <|bocot|>) as that token (default: plain text)" }

CLI_API cli_prompt_args cli_prompt_defaults(void) {
    cli_prompt_args p;
    memset(&p, 0, sizeof p);
    p.latents = 6;
    return p;
}

/* Usage errors of the groups, found before anything is loaded: CLI_OK, or CLI_ERROR after a message. */
CLI_API int cli_check_args(const cli_command *cmd, const cli_model_args *a, const cli_prompt_args *p) {
    if (a && !a->model) { fprintf(stderr, "codi %s: --model PATH is required\n", cmd->name); return CLI_ERROR; }
    if (p && p->question && p->ids) { fprintf(stderr, "codi %s: give --question or --ids, not both\n", cmd->name); return CLI_ERROR; }
    if (a && a->compute && strcmp(a->compute, "f32") && strcmp(a->compute, "bf16")) {
        fprintf(stderr, "codi %s: --compute: '%s' is not f32 or bf16\n", cmd->name, a->compute); return CLI_ERROR;
    }
    return CLI_OK;
}

/* "1,2,3" -> ids in [0, vocab); returns the count, or -1 after naming the bad item. */
CLI_API int cli_parse_ids(const char *s, int vocab, int32_t *ids, int cap) {
    int n = 0;
    if (!*s) { fprintf(stderr, "codi: --ids is empty\n"); return -1; }
    for (;;) {
        char *end;
        long v;
        errno = 0;
        v = strtol(s, &end, 10);
        if (end == s || (*end && *end != ',') || errno == ERANGE) {
            fprintf(stderr, "codi: --ids item %d ('%.*s') is not a token id\n", n + 1, (int)strcspn(s, ","), s); return -1;
        }
        if (v < 0 || v >= vocab) { fprintf(stderr, "codi: --ids item %d (%ld) is out of range [0, %d)\n", n + 1, v, vocab); return -1; }
        if (n == cap) { fprintf(stderr, "codi: --ids has more than %d items\n", cap); return -1; }
        ids[n++] = (int32_t)v;
        if (!*end) return n;
        s = end + 1;
    }
}

/* Prompt ids from --question (normalised, BOS q [<|eot_id|>] bot) or --ids; -1 after a message. */
CLI_API int cli_prompt_ids(const cli_prompt_args *p, const codi_model *m, const codi_tokenizer *t, int32_t *ids, int cap) {
    int n;
    long bad;
    char err[512];
    if (p->question && p->ids) { fprintf(stderr, "codi: give --question or --ids, not both\n"); return -1; }
    if (!p->question && !p->ids) { fprintf(stderr, "codi: give --question TEXT or --ids 1,2,3\n"); return -1; }
    if (p->ids) {
        if ((n = cli_parse_ids(p->ids, m->config.vocab, ids, cap)) > 0 && m->config.bot_id >= 0 && ids[n - 1] != m->config.bot_id)
            fprintf(stderr, "codi: warning: --ids does not end with bot (%d): the latent loop starts from token %d, not from CODI's prompt\n",
                    m->config.bot_id, ids[n - 1]);
        return n;
    }
    if (!t) { fprintf(stderr, "codi: a text question needs a tokenizer: give --tokenizer PATH\n"); return -1; }
    if ((bad = codi_utf8_invalid_at(p->question, strlen(p->question))) >= 0)
        fprintf(stderr, "codi: warning: the question is not valid UTF-8 at byte %ld; its bytes are encoded as they are\n", bad);
    if (codi_prompt_check(m, p->recipe, err, sizeof err)) { fprintf(stderr, "codi: %s\n", err); return -1; }
    if ((n = codi_prompt_from_text_ex(m, t, p->question, p->recipe, p->parse_special, ids, cap)) < 0)
        fprintf(stderr, "codi: the question does not fit in %d tokens\n", cap);
    return n;
}

/* ---- progress on stderr ---------------------------------------------------------------------- */

CLI_API double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A bar with rate and ETA when stderr is a terminal; otherwise a plain line every 10 s. */
typedef struct cli_progress { const char *label; long total, start_done, done; double t0, last; int tty; } cli_progress;

CLI_API void cli_progress_draw(cli_progress *p, int final) {
    double el = cli_now() - p->t0, rate = el > 0 ? (p->done - p->start_done) / el : 0;
    double eta = rate > 0 && p->total > p->done ? (p->total - p->done) / rate : 0;
    if (p->tty) {
        int w = 30, f = p->total > 0 ? (int)((double)w * p->done / p->total) : 0, i;
        fprintf(stderr, "\r%s [", p->label);
        for (i = 0; i < w; i++) fputc(i < f ? '#' : '.', stderr);
        fprintf(stderr, "] %ld/%ld  %.2f/s  %s %dm%02ds \033[K", p->done, p->total, rate, final ? "took" : "eta",
                (int)((final ? el : eta) / 60), (int)(final ? el : eta) % 60);
        if (final) fputc('\n', stderr);
    } else
        fprintf(stderr, "%s: %ld/%ld done, %.2f/s, %s %dm%02ds\n", p->label, p->done, p->total, rate, final ? "took" : "eta",
                (int)((final ? el : eta) / 60), (int)(final ? el : eta) % 60);
    fflush(stderr);
}

CLI_API cli_progress *cli_progress_start(const char *label, long total, long done_already) {
    cli_progress *p = (cli_progress *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->label = label; p->total = total; p->start_done = p->done = done_already;
    p->t0 = p->last = cli_now(); p->tty = isatty(2);
    return p;
}

CLI_API void cli_progress_update(cli_progress *p, long done) {
    double t;
    if (!p) return;
    p->done = done;
    t = cli_now();
    if (t - p->last >= (p->tty ? 0.2 : 10.0)) { p->last = t; cli_progress_draw(p, 0); }
}

CLI_API void cli_progress_end(cli_progress *p) {
    if (!p) return;
    cli_progress_draw(p, 1);
    free(p);
}

/* ---- questions files (JSONL) ----------------------------------------------------------------- */

/* One question: {"question": TEXT, "answer": N | "... #### N" | "... N"} plus any other fields. */
typedef struct { int line, index; const char *question; double gold; int has_gold; const codi_json *obj; } cli_question;

/* The gold answer of a question object: a number, or the number after "####", else the last number. */
CLI_API int cli_gold(const codi_json *obj, double *gold) {
    const codi_json *a = codi_json_get(obj, "answer");
    if (a && a->type == CODI_JSON_NUM) { *gold = a->num; return 1; }
    if (a && a->type == CODI_JSON_STR) {
        const char *hash = strstr(a->str, "####");
        return codi_extract_answer(hash ? hash + 4 : a->str, gold);
    }
    return 0;
}

/* Non-empty lines of a file, at most limit when limit > 0 (a progress bar's total). */
CLI_API long cli_count_lines(const char *path, int limit) {
    FILE *f = cli_is_regular(path) ? fopen(path, "rb") : NULL;     /* a FIFO would block here */
    long n = 0;
    int ch, in_line = 0;
    if (!f) return 0;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n') { n += in_line; in_line = 0; } else if (ch != '\r') in_line = 1;
    }
    n += in_line;
    fclose(f);
    return limit > 0 && limit < n ? limit : n;
}

/* "K/N" with 1 <= K <= N; 0, or -1 after a message. */
CLI_API int cli_parse_shard(const char *s, int *k, int *n) {
    char *end;
    long a, b;
    errno = 0;
    a = strtol(s, &end, 10);
    if (end == s || *end != '/') goto bad;
    b = strtol(end + 1, &end, 10);
    if (*end || errno == ERANGE || b < 1 || b > 100000 || a < 1 || a > b) goto bad;
    *k = (int)a; *n = (int)b;
    return 0;
bad:
    fprintf(stderr, "codi: --shard needs K/N with 1 <= K <= N (e.g. 2/8), not '%s'\n", s);
    return -1;
}

/* The questions policy, the same in every command (README "Questions files"): a line that is not
   a JSON object with a "question" string (duplicate keys and numbers beyond a double refused), or
   whose prompt exceeds cli_prompt_limit tokens, is reported as FILE:LINE and skipped, and the command
   exits 1 at the end (tools/codi.c reads cli_questions_skipped); blank lines are ignored; a file
   without a usable question is an error. Rows are numbered by file line ("line", 1-based). */
#define CLI_MAX_PROMPT 4096                 /* prompt tokens: the commands' prompt buffers and states */
#define CLI_PROMPT_ROOM 264                 /* positions a run needs after its prompt unless the command says
                                               (cli_questions_room): 6 latents, eot, bot and 256 answer tokens */
static int cli_questions_skipped;           /* lines skipped by every reader of this process */
static char cli__q_last_path[4096];         /* the file read last and the lines skipped in it: a file */
static int cli__q_last_bad;                 /* read twice in a row (sweep: means, then questions) counts once */
static int cli__q_room = CLI_PROMPT_ROOM;

/* The positions each run of this command needs after its prompt (latents + 2 + answer tokens). */
CLI_API void cli_questions_room(int positions) { cli__q_room = positions > 0 ? positions : 0; }

/* The longest prompt (tokens, BOS, eot and bot included) a question may have with model m: the
   prompt buffers' CLI_MAX_PROMPT, or less when the model's trained context (max_position_embeddings)
   leaves less room before the run's latents and answer. why (may be NULL) says which bound holds. */
CLI_API int cli_prompt_limit(const codi_model *m, char *why, size_t cap) {
    int ctx = m ? m->config.max_positions : 0, limit = CLI_MAX_PROMPT;
    if (ctx > 0 && ctx - cli__q_room < limit) {
        limit = ctx - cli__q_room > 1 ? ctx - cli__q_room : 1;
        if (why) snprintf(why, cap, "the model's context of %d positions (max_position_embeddings) less %d for the latents, eot and answer", ctx, cli__q_room);
    } else if (why && ctx > 0) snprintf(why, cap, "the commands' prompt buffer; the model's context is %d positions", ctx);
    else if (why) snprintf(why, cap, "the commands' prompt buffer; config.json gives no max_position_embeddings");
    return limit;
}

/* Calls fn for the questions of path: the first `limit` (0: all), then every N-th from the K-th
   (shard K/N; 0/0 = no sharding). A malformed or over-long line is reported as FILE:LINE on stderr,
   counted in *n_bad and skipped. Returns 0, fn's first non-zero return, or -1 after a message when
   the file cannot be read or holds no usable question. */
CLI_API int cli_for_each_question(const char *path, int limit, int shard_k, int shard_n,
                                 int (*fn)(void *user, const cli_question *q), void *user, int *n_bad) {
    size_t len;
    char *text, *p, err[256];
    int index = 0, line = 0, rc = 0, bad = 0, n_tok = 0, max_prompt;
    char why[160];
    max_prompt = cli_prompt_limit(cli__q_model, why, sizeof why);
    if (n_bad) *n_bad = 0;
    if (!(text = codi_read_text(path, &len))) { fprintf(stderr, "codi: cannot read %s\n", path); return -1; }
    for (p = text; p < text + len && (limit <= 0 || index < limit) && !rc; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        const codi_json *q;
        cli_question cq;
        if (!e) e = text + len;
        line++;
        if (e > p && !(e == p + 1 && *p == '\r')) {
            if (!(j = codi_json_parse_strict(p, (size_t)(e - p), err, sizeof err))) {
                fprintf(stderr, "codi: %s:%d: %s (line skipped)\n", path, line, err);
                bad++;
            } else if (!(q = codi_json_get(j, "question")) || q->type != CODI_JSON_STR) {
                fprintf(stderr, "codi: %s:%d: no \"question\" string (line skipped)\n", path, line);
                bad++;
                codi_json_free(j);
            } else if (cli__q_model && cli__q_tok && (n_tok = codi_encode(cli__q_tok, q->str, q->len, 0, 0, NULL, 0) + 3) > max_prompt) {   /* + BOS, eot, bot */
                fprintf(stderr, "codi: %s:%d: the question's prompt has %d tokens, over the limit of %d: %s (line skipped)\n",
                        path, line, n_tok, max_prompt, why);
                bad++;
                codi_json_free(j);
            } else {
                if (shard_n <= 1 || index % shard_n == shard_k - 1) {
                    cq.line = line; cq.index = index; cq.question = q->str; cq.obj = j;
                    cq.has_gold = cli_gold(j, &cq.gold);
                    rc = fn(user, &cq);
                }
                index++;
                codi_json_free(j);
            }
        }
        p = e + 1;
    }
    free(text);
    if (n_bad) *n_bad = bad;
    if (!strcmp(cli__q_last_path, path)) {
        if (bad > cli__q_last_bad) { cli_questions_skipped += bad - cli__q_last_bad; cli__q_last_bad = bad; }
    } else {
        cli_questions_skipped += bad;
        snprintf(cli__q_last_path, sizeof cli__q_last_path, "%s", path); cli__q_last_bad = bad;
    }
    if (!rc && !index) { fprintf(stderr, "codi: %s: no usable question (%d line%s skipped)\n", path, bad, bad == 1 ? "" : "s"); rc = -1; }
    return rc;
}

/* ---- checked outputs --------------------------------------------------------------------------
   One rule for every file a command writes: the path is checked before any work (its directory
   exists and is writable; it is not an input, by name or by inode; it does not exist unless --force,
   or unless the command resumes it), the file is written under PATH.tmp.PID and renamed to PATH only
   when every byte reached the disk, and standard output is checked at exit (tools/codi.c). */

#define CLI_FORCE_OPT(p) { "--force", CLI_FLAG, (p), 0, 0, NULL, "overwrite existing outputs (an input is never overwritten)" }
#define CLI_N(a) (int)(sizeof (a) / sizeof *(a))

enum { CLI_OUT_FILE = 0, CLI_OUT_RESUME = 1, CLI_OUT_DIR = 2, CLI_OUT_STREAM = 4 };

/* The directory part of path ("." when it has none). */
CLI_API void cli_dirname(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* Checks the output path before the work. kind: CLI_OUT_FILE (a file: refused when it exists,
   unless force), CLI_OUT_DIR (a directory the command creates or fills: refused when it is not
   empty, unless force), plus CLI_OUT_RESUME (the command resumes the file or fills the directory
   again: an existing one is fine) and CLI_OUT_STREAM (written through cli_out_open, so an existing
   device or pipe is written as it is; other outputs are renamed into place and must be regular
   files). inputs: the command's input paths (NULL entries skipped); an output naming one (by path
   or inode, or a file inside an input directory) is refused even with force. 0, or -1 after a
   message. */
CLI_API int cli_out_check(const char *cmd, const char *path, int kind, int force, const char *const *inputs, int n_inputs) {
    struct stat so, si;
    char dir[4096];
    int i, exists;
    if (!path || !*path) { fprintf(stderr, "codi %s: an output path is empty\n", cmd); return -1; }
    exists = stat(path, &so) == 0;
    for (i = 0; i < n_inputs; i++) {
        const char *in = inputs[i];
        int same;
        if (!in) continue;
        same = !strcmp(in, path) || (exists && stat(in, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino);
        if (!same && exists && stat(in, &si) == 0 && S_ISDIR(si.st_mode) && !(kind & CLI_OUT_DIR)) {   /* a file inside an input directory */
            struct stat sd;
            cli_dirname(path, dir, sizeof dir);
            same = stat(dir, &sd) == 0 && sd.st_dev == si.st_dev && sd.st_ino == si.st_ino;
        }
        if (same) { fprintf(stderr, "codi %s: output %s is the input %s: refusing to overwrite it\n", cmd, path, in); return -1; }
    }
    if (exists && (kind & CLI_OUT_DIR)) {
        if (!S_ISDIR(so.st_mode)) { fprintf(stderr, "codi %s: output directory %s exists and is not a directory\n", cmd, path); return -1; }
        if (!force && !(kind & CLI_OUT_RESUME)) {
            DIR *d = opendir(path);
            struct dirent *e;
            int full = 0;
            while (d && (e = readdir(d)) != NULL) full |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
            if (d) closedir(d);
            if (full) { fprintf(stderr, "codi %s: output directory %s is not empty (give --force to write into it)\n", cmd, path); return -1; }
        }
    } else if (exists) {
        if (S_ISDIR(so.st_mode)) { fprintf(stderr, "codi %s: output %s is a directory\n", cmd, path); return -1; }
        if (!S_ISREG(so.st_mode) && !(kind & CLI_OUT_STREAM)) { fprintf(stderr, "codi %s: output %s is not a regular file\n", cmd, path); return -1; }
        if (S_ISREG(so.st_mode) && !(kind & CLI_OUT_RESUME) && !force) { fprintf(stderr, "codi %s: output %s exists (give --force to overwrite it)\n", cmd, path); return -1; }
    }
    cli_dirname(path, dir, sizeof dir);
    if (!cli_is_dir(dir)) { fprintf(stderr, "codi %s: cannot write %s: directory %s does not exist\n", cmd, path, dir); return -1; }
    if (access(dir, W_OK | X_OK)) { fprintf(stderr, "codi %s: cannot write %s: %s: %s\n", cmd, path, dir, strerror(errno)); return -1; }
    return 0;
}

/* Files being written: the stream, its temporary name and its real name. */
#define CLI_OUT_MAX 64
static struct { FILE *f; char tmp[4200], path[4096]; } cli__outs[CLI_OUT_MAX];
static int cli__outs_hooked;

static void cli__outs_cleanup(void) {   /* at exit: the temporary files of outputs never finished */
    int i;
    for (i = 0; i < CLI_OUT_MAX; i++)
        if (cli__outs[i].f) { if (strcmp(cli__outs[i].tmp, cli__outs[i].path)) remove(cli__outs[i].tmp); cli__outs[i].f = NULL; }
}

/* On SIGINT/SIGTERM/SIGHUP: the temporary files of outputs never finished are unlinked (unlink is
   async-signal-safe), then the signal is raised again with its default action. */
static void cli__outs_signal(int sig) {
    int i;
    for (i = 0; i < CLI_OUT_MAX; i++)
        if (cli__outs[i].f && strcmp(cli__outs[i].tmp, cli__outs[i].path)) unlink(cli__outs[i].tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Opens path for writing ("w" or "wb") under a temporary name; NULL after a message. */
CLI_API FILE *cli_out_open(const char *path, const char *mode) {
    struct stat st;
    int i;
    for (i = 0; i < CLI_OUT_MAX && cli__outs[i].f; i++) {}
    if (i == CLI_OUT_MAX || strlen(path) >= sizeof cli__outs[i].path) { fprintf(stderr, "codi: cannot write %s: too many outputs open or name too long\n", path); return NULL; }
    if (!cli__outs_hooked) {
        atexit(cli__outs_cleanup);
        static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
        int k;
        for (k = 0; k < 3; k++) if (signal(sigs[k], cli__outs_signal) == SIG_IGN) signal(sigs[k], SIG_IGN);   /* an ignored signal stays ignored */
        cli__outs_hooked = 1;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) snprintf(cli__outs[i].tmp, sizeof cli__outs[i].tmp, "%s", path);   /* a device or pipe: as it is */
    else snprintf(cli__outs[i].tmp, sizeof cli__outs[i].tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(cli__outs[i].path, sizeof cli__outs[i].path, "%s", path);
    if (!(cli__outs[i].f = fopen(cli__outs[i].tmp, mode))) { fprintf(stderr, "codi: cannot write %s: %s\n", path, strerror(errno)); return NULL; }
    return cli__outs[i].f;
}

/* Finishes a file of cli_out_open: flushed, synced, closed and renamed to its real name. 0, or -1
   after a message naming the file and the error (the temporary file is removed). NULL: 0. */
CLI_API int cli_out_close(FILE *f) {
    int i, bad, e = 0, renamed;
    if (!f) return 0;
    for (i = 0; i < CLI_OUT_MAX && cli__outs[i].f != f; i++) {}
    CODI_ASSERT(i < CLI_OUT_MAX);
    bad = fflush(f) != 0 || ferror(f);
    if (bad) e = errno;
    if (!bad && fsync(fileno(f)) != 0 && errno != EINVAL) { bad = 1; e = errno; }
    if (fclose(f) != 0 && !bad) { bad = 1; e = errno; }
    cli__outs[i].f = NULL;
    renamed = strcmp(cli__outs[i].tmp, cli__outs[i].path) != 0;
    if (!bad && renamed && rename(cli__outs[i].tmp, cli__outs[i].path) != 0) { bad = 1; e = errno; }
    if (bad) {
        if (renamed) remove(cli__outs[i].tmp);
        fprintf(stderr, "codi: error writing %s: %s\n", cli__outs[i].path, e ? strerror(e) : "write failed");
        return -1;
    }
    return 0;
}

/* Drops a file of cli_out_open after a failure: closed, its temporary file removed. NULL: nothing. */
CLI_API void cli_out_abort(FILE *f) {
    int i;
    if (!f) return;
    for (i = 0; i < CLI_OUT_MAX && cli__outs[i].f != f; i++) {}
    fclose(f);
    if (i < CLI_OUT_MAX) { if (strcmp(cli__outs[i].tmp, cli__outs[i].path)) remove(cli__outs[i].tmp); cli__outs[i].f = NULL; }
}

/* A stream appended to in place (a resumable results file): flushed and checked; 0, or -1 after a
   message. */
CLI_API int cli_out_flush(FILE *f, const char *path) {
    if (fflush(f) == 0 && !ferror(f)) return 0;
    fprintf(stderr, "codi: error writing %s: %s\n", path, strerror(errno ? errno : EIO));
    return -1;
}

/* A .safetensors file through the checked outputs (temporary name, renamed when complete); 0, or
   -1 after a message naming the file. */
CLI_API int cli_out_safetensors(const char *path, const codi_safetensors_entry *e, int n, const char *const *meta) {
    char err[512];
    FILE *f = cli_out_open(path, "wb");
    if (!f) return -1;
    if (codi_write_safetensors_file(f, e, n, meta, err, sizeof err)) {
        fprintf(stderr, "codi: error writing %s: %s\n", path, ferror(f) && errno ? strerror(errno) : err);
        cli_out_abort(f);
        return -1;
    }
    return cli_out_close(f);
}

/* At exit: standard output flushed and checked (a full disk or closed pipe is an error). */
CLI_API int cli_stdout_check(const char *cmd) {
    int bad = fflush(stdout) != 0 || ferror(stdout);
    if (!bad) return 0;
    fprintf(stderr, "codi %s: error writing standard output: %s\n", cmd, strerror(errno ? errno : EIO));
    return -1;
}

#define SVG_FOPEN(path) cli_out_open(path, "w")   /* tools/svg.h writes through the checked outputs */
#define SVG_FCLOSE(f) cli_out_close(f)

/* v as a JSON number, or null when it is not finite. */
CLI_API void cli_json_number(FILE *f, double v) {
    if (v - v == 0) fprintf(f, "%.17g", v); else fputs("null", f);
}

/* ---- output helpers -------------------------------------------------------------------------- */

/* s as a JSON string literal (the header's one escaper). */
CLI_API void cli_json_string(FILE *f, const char *s) { codi_json_write_string(f, s); }

/* A token for a table cell: its escaped text in quotes, cut to at most max code points. */
CLI_API void cli_token_cell(const codi_tokenizer *t, int id, char *buf, size_t cap, int max) {
    char text[256];
    int chars = 0;
    size_t i = 0;
    if (!t || codi_token_text(t, id, text, sizeof text) < 0) { snprintf(buf, cap, "%d", id); return; }
    while (text[i] && chars < max) { i++; while ((text[i] & 0xC0) == 0x80) i++; chars++; }
    snprintf(buf, cap, "'%.*s%s'", (int)i, text, text[i] ? "~" : "");
}

/* Prints s padded to width display columns (code points, not bytes). */
CLI_API void cli_print_padded(const char *s, int width) {
    int cols = 0;
    const char *p;
    for (p = s; *p; p++) cols += (*p & 0xC0) != 0x80;
    printf("%s%*s", s, width > cols ? width - cols : 0, "");
}

/* FNV-1a 64 of a file's bytes as 16 hex digits into hex[17] (what codi record stores as the
   dataset's questions_hash); 0, or -1 when the file cannot be read. */
CLI_API int cli_file_hash(const char *path, char *hex) {
    size_t len, i;
    char *text = codi_read_text(path, &len);
    uint64_t h = 0xcbf29ce484222325ull;
    if (!text) return -1;
    for (i = 0; i < len; i++) { h ^= (unsigned char)text[i]; h *= 0x100000001b3ull; }
    free(text);
    snprintf(hex, 17, "%016llx", (unsigned long long)h);
    return 0;
}

/* --keys post|pre (NULL: post): which keys a command reads, post-RoPE as cached or pre-RoPE
   (codi_key_pre_rope; a dataset's key_pre_rope). 0 post, 1 pre, -1 after a message. */
CLI_API int cli_keys_option(const char *cmd, const char *keys) {
    if (!keys || !strcmp(keys, "post")) return 0;
    if (!strcmp(keys, "pre")) return 1;
    fprintf(stderr, "codi %s: --keys is post (after RoPE, as cached) or pre (before RoPE), not '%s'\n", cmd, keys);
    return -1;
}

#endif /* CODI_CLI_H */
