/* codi: the command-line face of codi_lens.h.
     codi run      --model PATH (--question TEXT | --questions FILE.jsonl | --ids 1,2,3) [--latents 6]
     codi trace    --model PATH (--question TEXT | --ids 1,2,3) [--latents 6] [--answer-steps 16] --out F
     codi info     --model PATH
     codi bench    --model PATH [--json] [--threads N]
     codi tokenize --tokenizer PATH (--text TEXT | --jsonl FILE [--bench] | --export-tiktoken OUT)
   Common options: --base DIR (HF Llama the checkpoint is layered over), --exact (f32 weights),
   --lora-scale S (alpha / r, default 0.25), --head-dim N (when no config.json is found),
   --tokenizer PATH (default: tokenizer.json beside the model, else in --base), --recipe 0|1
   (prompt: 0 = BOS q bot, zhenyi4/codi; 1 = BOS q <|eot_id|> bot, the Latent Reasoning Sprint). */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <time.h>

typedef struct {
    const char *model, *base, *out, *ids, *tokenizer, *question, *questions, *text, *jsonl, *export_tiktoken;
    int exact, head_dim, latents, answer_steps, threads, json, stop_at_eos, recipe, bench, limit;
    float lora_scale;
} cli_opts;

static int usage(void) {
    fprintf(stderr,
            "usage: codi COMMAND [options]\n"
            "commands:\n"
            "  run       a CODI question: answer text, decoded latents, logit-lens table;\n"
            "            with --questions FILE.jsonl, every question's answer and the accuracy\n"
            "  trace     run one question and write every buffer to --out (safetensors)\n"
            "  info      print the config and where every tensor came from\n"
            "  bench     prefill and decode tokens/s, peak memory (--json for one JSON object)\n"
            "  tokenize  --text T: ids and tokens; --jsonl FILE ({\"text\": ...} lines): {\"ids\": [...]} lines;\n"
            "            --bench: encode speed; --export-tiktoken OUT: write the vocabulary as tokenizer.model\n"
            "options: --model PATH  --question TEXT  --questions FILE  --ids 1,2,3  --tokenizer PATH\n"
            "         --recipe 0|1  --latents N (6)  --answer-steps N  --limit N  --out FILE  --base DIR\n"
            "         --exact  --lora-scale S (0.25)  --head-dim N  --threads N  --stop-at-eos  --json\n");
    return 2;
}

static int parse_args(int argc, char **argv, cli_opts *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->latents = 6; o->answer_steps = -1; o->threads = 1; o->lora_scale = 0.25f;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("--model")) o->model = v;
        else if (ARG("--base")) o->base = v;
        else if (ARG("--out")) o->out = v;
        else if (ARG("--ids")) o->ids = v;
        else if (ARG("--tokenizer")) o->tokenizer = v;
        else if (ARG("--question")) o->question = v;
        else if (ARG("--questions")) o->questions = v;
        else if (ARG("--text")) o->text = v;
        else if (ARG("--jsonl")) o->jsonl = v;
        else if (ARG("--export-tiktoken")) o->export_tiktoken = v;
        else if (ARG("--recipe")) o->recipe = atoi(v);
        else if (ARG("--limit")) o->limit = atoi(v);
        else if (ARG("--head-dim")) o->head_dim = atoi(v);
        else if (ARG("--latents")) o->latents = atoi(v);
        else if (ARG("--answer-steps")) o->answer_steps = atoi(v);
        else if (ARG("--threads")) o->threads = atoi(v);
        else if (ARG("--lora-scale")) o->lora_scale = (float)atof(v);
        else if (!strcmp(a, "--exact")) o->exact = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--bench")) o->bench = 1;
        else if (!strcmp(a, "--stop-at-eos")) o->stop_at_eos = 1;
        else { fprintf(stderr, "codi: unknown or incomplete option %s\n", a); return -1; }
#undef ARG
    }
    if (!o->model && strcmp(argv[1], "tokenize")) { fprintf(stderr, "codi: --model is required\n"); return -1; }
    if (o->latents < 0 || o->latents > 1000) { fprintf(stderr, "codi: --latents must be in [0, 1000]\n"); return -1; }
    if (o->recipe != 0 && o->recipe != 1) { fprintf(stderr, "codi: --recipe is 0 (BOS q bot) or 1 (BOS q <|eot_id|> bot)\n"); return -1; }
    return 0;
}

static codi_model *load_model(const cli_opts *o) {
    char err[512];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    lo.base = o->base; lo.exact = o->exact; lo.head_dim = o->head_dim; lo.lora_scale = o->lora_scale; lo.n_threads = o->threads;
    m = codi_load(o->model, &lo, err, sizeof err);
    if (!m) fprintf(stderr, "codi: %s\n", err);
    return m;
}

/* --tokenizer, else tokenizer.json beside the model (or in it, for a directory), else in --base;
   the model's pad/bot/eot get the research tokenizer's names where the tokenizer lacks them.
   optional: no message when no --tokenizer was given and none is found. */
static codi_tokenizer *load_tokenizer(const cli_opts *o, const codi_model *m, int optional) {
    char path[4096], err[512];
    codi_tokenizer *t = NULL;
    if (o->tokenizer) t = codi_tokenizer_load(o->tokenizer, err, sizeof err);
    else {
        const char *slash = strrchr(o->model, '/');
        snprintf(path, sizeof path, "%.*stokenizer.json", slash ? (int)(slash - o->model + 1) : 0, o->model);
        if (!(t = codi_tokenizer_load(path, err, sizeof err))) t = codi_tokenizer_load(o->model, err, sizeof err);
        if (!t && o->base) t = codi_tokenizer_load(o->base, err, sizeof err);
        if (!t) snprintf(err, sizeof err, "no tokenizer.json beside %s%s%s: give --tokenizer PATH", o->model, o->base ? " or in " : "", o->base ? o->base : "");
    }
    if (!t) { if (!optional || o->tokenizer) fprintf(stderr, "codi: %s\n", err); return NULL; }
    if (m && codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { fprintf(stderr, "codi: %s\n", err); codi_tokenizer_free(t); return NULL; }
    return t;
}

/* "1,2,3" -> ids; returns the count or -1. */
static int parse_ids(const char *s, int32_t *ids, int cap) {
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n == cap || v < 0 || v > INT32_MAX) return -1;
        ids[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* Prompt ids from --ids (used as given: the last is bot) or from a text question. */
static int prompt_ids(const cli_opts *o, const codi_model *m, const codi_tokenizer *t, const char *question, int32_t *ids, int cap) {
    int n;
    if (!question) {
        if ((n = parse_ids(o->ids, ids, cap)) <= 0) fprintf(stderr, "codi: give --question TEXT or --ids as comma-separated token ids\n");
        return n > 0 ? n : -1;
    }
    if (codi_utf8_invalid_at(question, strlen(question)) >= 0)
        fprintf(stderr, "codi: warning: the question is not valid UTF-8 at byte %ld; its bytes are encoded as they are\n",
                codi_utf8_invalid_at(question, strlen(question)));
    if ((n = codi_prompt_from_text(m, t, question, o->recipe, ids, cap)) < 0) fprintf(stderr, "codi: the question does not fit in %d tokens\n", cap);
    return n;
}

/* A token for a table cell: its escaped text in quotes, cut to at most max code points. */
static void token_cell(const codi_tokenizer *t, int id, char *buf, size_t cap, int max) {
    char text[256];
    int chars = 0;
    size_t i = 0;
    if (!t || codi_token_text(t, id, text, sizeof text) < 0) { snprintf(buf, cap, "%d", id); return; }
    while (text[i] && chars < max) { i++; while ((text[i] & 0xC0) == 0x80) i++; chars++; }
    snprintf(buf, cap, "'%.*s%s'", (int)i, text, text[i] ? "~" : "");
}

/* Prints s padded to width display columns (code points, not bytes). */
static void print_padded(const char *s, int width) {
    int cols = 0;
    const char *p;
    for (p = s; *p; p++) cols += (*p & 0xC0) != 0x80;
    printf("%s%*s", s, width > cols ? width - cols : 0, "");
}

/* Top-k ids of a logits row, best first, and the top-1 probability. */
static void topk(const float *lg, int V, int k, int *best, float *prob1) {
    int i, j;
    double sum = 0;
    for (j = 0; j < k; j++) best[j] = -1;
    for (i = 0; i < V; i++)
        for (j = 0; j < k; j++)
            if (best[j] < 0 || lg[i] > lg[best[j]]) { memmove(best + j + 1, best + j, sizeof(int) * (size_t)(k - j - 1)); best[j] = i; break; }
    for (i = 0; i < V; i++) sum += exp((double)lg[i] - lg[best[0]]);
    *prob1 = (float)(1.0 / sum);
}

/* The decoded latents (lm_head at bot and each latent, top 5) and the logit lens at every layer. */
static void print_lens_table(const codi_config *c, const codi_tokenizer *t, const float *final_logits, const float *lens, int N) {
    int k, l, j, L = c->n_layers, V = c->vocab, best[5];
    float p;
    char cell[96], lab[16];
    printf("\ndecoded latents: top-5 tokens of lm_head(final norm(h)) at bot and each latent\n");
    for (k = 0; k <= N; k++) {
        snprintf(lab, sizeof lab, k ? "latent%d" : "bot", k);
        printf("  %-9s", lab);
        topk(final_logits + (size_t)k * V, V, 5, best, &p);
        for (j = 0; j < 5; j++) { token_cell(t, best[j], cell, sizeof cell, 12); printf(" "); print_padded(cell, 15); }
        printf("\n");
    }
    printf("\nlogit lens: top-1 token (probability) of lm_head(final norm(residual)) entering each layer\n  %-9s", "pos");
    for (l = 0; l <= L; l++) { snprintf(lab, sizeof lab, l < L ? "L%d" : "out", l); printf(" %-16s", lab); }
    printf("\n");
    for (k = 0; k <= N; k++) {
        snprintf(lab, sizeof lab, k ? "latent%d" : "bot", k);
        printf("  %-9s", lab);
        for (l = 0; l <= L; l++) {
            char both[128];
            topk(lens + ((size_t)k * (L + 1) + l) * V, V, 1, best, &p);
            token_cell(t, best[0], cell, sizeof cell, 8);
            snprintf(both, sizeof both, "%s %.2f", cell, p);
            printf(" "); print_padded(both, 16);
        }
        printf("\n");
    }
}

typedef struct { const codi_tokenizer *t; codi_utf8_state st; } stream_ctx;

static void print_token(void *user, int32_t id) {   /* codi_run_opts.on_token: the answer as it comes */
    stream_ctx *sc = (stream_ctx *)user;
    char buf[1024];
    if (codi_decode_stream(sc->t, &sc->st, id, 1, buf, sizeof buf) > 0) { fputs(buf, stdout); fflush(stdout); }
}

static int cmd_trace(const cli_opts *o, int write_file) {
    codi_model *m = load_model(o);
    codi_tokenizer *tk = NULL;
    const codi_config *c;
    codi_state *s = NULL;
    codi_run_opts ro;
    codi_run_result rr;
    stream_ctx sc;
    int32_t ids[4096];
    int n, S, N = o->latents, L, D, V, T, l, h, k, rc = 1;
    float *pl = NULL, *pr = NULL, *pk = NULL, *pv = NULL, *li = NULL, *lr = NULL, *lf = NULL, *ll = NULL, *al = NULL, *al2 = NULL;
    if (!m) return 1;
    if (o->question || !write_file) {            /* run prints text when a tokenizer is found */
        if (!(tk = load_tokenizer(o, m, !o->question)) && (o->question || o->tokenizer)) { codi_model_free(m); return 1; }
    }
    c = &m->config; L = c->n_layers; D = c->dim; V = c->vocab;
    S = o->answer_steps >= 0 ? o->answer_steps : write_file ? 16 : 256;
    if ((n = prompt_ids(o, m, tk, o->question, ids, 4096)) <= 0) goto done;
    if (S > 1024) { fprintf(stderr, "codi: --answer-steps at most 1024\n"); goto done; }
    T = n;
    s = codi_state_alloc(m, T + N + S + 2, o->threads);
    pl = malloc(sizeof(float) * T * V); pr = malloc(sizeof(float) * (L + 1) * T * D);
    pk = malloc(sizeof(float) * L * c->n_kv_heads * T * c->head_dim); pv = malloc(sizeof(float) * L * c->n_kv_heads * T * c->head_dim);
    li = malloc(sizeof(float) * (N + 1) * D); lr = malloc(sizeof(float) * (N + 1) * (L + 1) * D);
    lf = malloc(sizeof(float) * (N + 1) * V); ll = malloc(sizeof(float) * (N + 1) * (L + 1) * V);
    al = malloc(sizeof(float) * (S + 1) * V); al2 = malloc(sizeof(float) * (S + 1) * (V - 1));
    if (!s || !pl || !pr || !pk || !pv || !li || !lr || !lf || !ll || !al || !al2) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    /* the prefill alone, for every position's logits, residuals and cache */
    if (codi_forward(m, s, ids, NULL, T, pl)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (l = 0; l <= L; l++) memcpy(pr + (size_t)l * T * D, codi_state_resid(s, l, 0), sizeof(float) * T * D);
    for (l = 0; l < L; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            size_t off = ((size_t)l * c->n_kv_heads + h) * T * c->head_dim;
            memcpy(pk + off, codi_state_key(s, l, h, 0), sizeof(float) * T * c->head_dim);
            memcpy(pv + off, codi_state_value(s, l, h, 0), sizeof(float) * T * c->head_dim);
        }
    ro = codi_run_opts_default(m);
    ro.n_latent = N; ro.max_answer = S; ro.stop_at_eos = write_file ? o->stop_at_eos : 1;
    ro.latents = c->prj_dim ? li : NULL; ro.latent_logits = lf; ro.answer_logits = al;
    if (!write_file) {
        char q[4096];
        if (tk) {
            codi_decode(tk, ids, T, 0, q, sizeof q);
            printf("prompt (%d tokens): %s\nanswer: ", T, q);
            memset(&sc, 0, sizeof sc); sc.t = tk;
            ro.on_token = print_token; ro.on_token_user = &sc;
        }
        fflush(stdout);
    }
    if (codi_run(m, s, ids, T, &ro, &rr)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (k = 0; k <= N; k++)
        for (l = 0; l <= L; l++) {
            memcpy(lr + ((size_t)k * (L + 1) + l) * D, codi_state_resid(s, l, T - 1 + k), sizeof(float) * D);
            codi_lens_at(m, s, l, T - 1 + k, ll + ((size_t)k * (L + 1) + l) * V);
        }
    for (k = 0; k < rr.n_answer; k++) memcpy(al2 + (size_t)k * (V - 1), al + (size_t)k * V, sizeof(float) * (V - 1));
    if (write_file) {
        char err[256];
        codi_st_entry e[11];
        int ne = 0;
#define ENT(nm, isint, ptr, nd, a0, a1, a2, a3) \
        e[ne].name = nm; e[ne].is_int = isint; e[ne].data = ptr; e[ne].ndim = nd; \
        e[ne].shape[0] = a0; e[ne].shape[1] = a1; e[ne].shape[2] = a2; e[ne].shape[3] = a3; ne++;
        ENT("prompt_ids", 1, ids, 1, T, 0, 0, 0)
        ENT("prefill_logits", 0, pl, 2, T, V, 0, 0)
        ENT("prefill_resid", 0, pr, 3, L + 1, T, D, 0)
        ENT("prefill_k", 0, pk, 4, L, c->n_kv_heads, T, c->head_dim)
        ENT("prefill_v", 0, pv, 4, L, c->n_kv_heads, T, c->head_dim)
        if (c->prj_dim) { ENT("latent_inputs", 0, li, 2, N + 1, D, 0, 0) }
        ENT("latent_resid", 0, lr, 3, N + 1, L + 1, D, 0)
        ENT("latent_final_logits", 0, lf, 2, N + 1, V, 0, 0)
        ENT("latent_lens_logits", 0, ll, 3, N + 1, L + 1, V, 0)
        ENT("answer_tokens", 1, rr.answer, 1, rr.n_answer, 0, 0, 0)
        ENT("answer_logits", 0, al2, 2, rr.n_answer, V - 1, 0, 0)
#undef ENT
        if (!o->out) { fprintf(stderr, "codi: trace needs --out FILE\n"); goto done; }
        if (codi_write_safetensors(o->out, e, ne, err, sizeof err)) { fprintf(stderr, "codi: %s\n", err); goto done; }
        printf("wrote %s: %d prompt positions, %d latents, %d answer tokens\n", o->out, T, N, rr.n_answer);
    } else {
        double num;
        char text[8192];
        if (tk) {
            print_token(&sc, -1);
            codi_decode(tk, rr.answer, rr.n_answer, 1, text, sizeof text);
            if (codi_extract_answer(text, &num)) printf("\nanswer number: %g", num);
            printf("\n");
        }
        printf("answer ids:");
        for (k = 0; k < rr.n_answer; k++) printf(" %d", rr.answer[k]);
        printf("\n");
        print_lens_table(c, tk, lf, ll, N);
    }
    rc = 0;
done:
    free(pl); free(pr); free(pk); free(pv); free(li); free(lr); free(lf); free(ll); free(al); free(al2);
    codi_state_free(s);
    codi_tokenizer_free(tk);
    codi_model_free(m);
    return rc;
}

/* Prints s as a JSON string. */
static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch == '\n') printf("\\n");
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

/* Calls fn(user, index, parsed line) for each non-empty line of a JSONL file; -1 on a bad line. */
static int for_each_jsonl(const char *path, int limit, int (*fn)(void *, int, const codi__json *), void *user) {
    size_t len;
    char *text = codi__read_text(path, &len), *p, err[256];
    int i = 0, line = 0, rc = 0;
    if (!text) { fprintf(stderr, "codi: cannot read %s\n", path); return -1; }
    for (p = text; p < text + len && (limit <= 0 || i < limit); ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi__json *j;
        if (!e) e = text + len;
        line++;
        if (e > p && !(e == p + 1 && *p == '\r')) {
            if (!(j = codi__json_parse(p, (size_t)(e - p), err, sizeof err))) { fprintf(stderr, "codi: %s:%d: %s\n", path, line, err); rc = -1; break; }
            rc = fn(user, i++, j);
            codi__json_free(j);
            if (rc) break;
        }
        p = e + 1;
    }
    free(text);
    return rc;
}

typedef struct {
    const cli_opts *o; const codi_model *m; const codi_tokenizer *t;
    int n, correct;
} eval_ctx;

/* One line of --questions: {"question": ..., "answer": N or "... #### N"}: run it, print the result. */
static int eval_question(void *user, int index, const codi__json *j) {
    eval_ctx *ec = (eval_ctx *)user;
    const codi__json *q = codi__json_get(j, "question"), *a = codi__json_get(j, "answer");
    codi_run_opts ro = codi_run_opts_default(ec->m);
    codi_run_result rr;
    codi_state *s;
    int32_t ids[4096];
    int n, has_gold = 0, has_pred, S = ec->o->answer_steps >= 0 ? ec->o->answer_steps : 256;
    double gold = 0, pred = 0;
    char text[8192];
    if (!q || q->type != CODI__J_STR) { fprintf(stderr, "codi: question %d has no \"question\" string\n", index); return -1; }
    if (a && a->type == CODI__J_NUM) { gold = a->num; has_gold = 1; }
    else if (a && a->type == CODI__J_STR) {
        const char *hash = strstr(a->str, "####");
        has_gold = codi_extract_answer(hash ? hash + 4 : a->str, &gold);
    }
    if ((n = prompt_ids(ec->o, ec->m, ec->t, q->str, ids, 4096)) < 0) return -1;
    if (!(s = codi_state_alloc(ec->m, n + ec->o->latents + S + 2, ec->o->threads))) { fprintf(stderr, "codi: out of memory\n"); return -1; }
    ro.n_latent = ec->o->latents; ro.max_answer = S > 1024 ? 1024 : S;
    if (codi_run(ec->m, s, ids, n, &ro, &rr)) { fprintf(stderr, "codi: question %d: %s\n", index, s->error); codi_state_free(s); return -1; }
    codi_state_free(s);
    codi_decode(ec->t, rr.answer, rr.n_answer, 1, text, sizeof text);
    has_pred = codi_extract_answer(text, &pred);
    ec->n++;
    ec->correct += has_gold && has_pred && pred == gold;
    printf("{\"index\": %d, \"answer\": ", index);
    print_json_string(text);
    if (has_pred) printf(", \"prediction\": %.17g", pred); else printf(", \"prediction\": null");
    if (has_gold) printf(", \"gold\": %.17g, \"correct\": %s}\n", gold, has_pred && pred == gold ? "true" : "false");
    else printf("}\n");
    return 0;
}

static int cmd_run(const cli_opts *o) {
    codi_model *m;
    eval_ctx ec;
    int rc;
    if (!o->questions) return cmd_trace(o, 0);
    if (!(m = load_model(o))) return 1;
    memset(&ec, 0, sizeof ec);
    ec.o = o; ec.m = m;
    if (!(ec.t = load_tokenizer(o, m, 0))) { codi_model_free(m); return 1; }
    rc = for_each_jsonl(o->questions, o->limit, eval_question, &ec);
    if (!rc) printf("{\"questions\": %d, \"correct\": %d, \"accuracy\": %.4f, \"latents\": %d}\n", ec.n, ec.correct, ec.n ? (double)ec.correct / ec.n : 0.0, o->latents);
    codi_tokenizer_free((codi_tokenizer *)ec.t);
    codi_model_free(m);
    return rc ? 1 : 0;
}

static int cmd_info(const cli_opts *o) {
    codi_model *m = load_model(o);
    const codi_config *c;
    int i, from_base = 0;
    static const char *dt[] = { "F32", "BF16", "F16" };
    if (!m) return 1;
    c = &m->config;
    printf("layers %d  dim %d  ffn %d  heads %d  kv heads %d  head dim %d  vocab %d  prj %d\n",
           c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab, c->prj_dim);
    printf("rope theta %g  llama3 %d (factor %g, low %g, high %g, original %d)  eps %g\n", c->rope_theta, c->rope_llama3,
           c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos, c->norm_eps);
    printf("bos %d  eos", c->bos_id);
    for (i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("  pad %d  bot %d  eot %d  lora scale %g  weights %s\n", c->pad_id, c->bot_id, c->eot_id, c->lora_scale, m->exact ? "f32" : "bf16");
    for (i = 0; i < m->n_tensors; i++) {
        const codi_tensor_info *t = &m->tensors[i];
        int d;
        from_base += t->source;
        printf("%-6s %-5s [", t->source ? "base" : "ckpt", t->dtype >= 0 ? dt[t->dtype] : "other");
        for (d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("] %s\n", t->name);
    }
    printf("%d tensors: %d from the checkpoint, %d from the base\n", m->n_tensors, m->n_tensors - from_base, from_base);
    codi_model_free(m);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

/* Prefill of n tokens into a fresh state; returns tokens/s. */
static double bench_prefill(const codi_model *m, codi_state *s, int n) {
    int32_t *ids = malloc(sizeof(int32_t) * n);
    double t0, t1;
    int i;
    for (i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % (m->config.vocab - 3));
    codi_state_reset(s);
    t0 = now_s();
    if (codi_forward(m, s, ids, NULL, n, NULL)) { fprintf(stderr, "codi: %s\n", s->error); free(ids); return -1; }
    t1 = now_s();
    free(ids);
    return n / (t1 - t0);
}

static int cmd_bench(const cli_opts *o) {
    double t0 = now_s(), load_s, pp128, pp512, tg, t1;
    codi_model *m = load_model(o);
    codi_state *s;
    int i, n_gen = 32;
    int32_t tok;
    if (!m) return 1;
    load_s = now_s() - t0;
    s = codi_state_alloc(m, 512 + n_gen + 8, o->threads);
    if (!s) { fprintf(stderr, "codi: out of memory\n"); codi_model_free(m); return 1; }
    pp128 = bench_prefill(m, s, 128);
    pp512 = bench_prefill(m, s, 512);
    /* decode: one token at a time after a 16-token prompt */
    bench_prefill(m, s, 16);
    t0 = now_s();
    for (i = 0; i < n_gen; i++) {
        tok = codi_argmax_answer(m, s->logits);
        if (codi_forward(m, s, &tok, NULL, 1, NULL)) { fprintf(stderr, "codi: %s\n", s->error); break; }
    }
    t1 = now_s();
    tg = n_gen / (t1 - t0);
    if (o->json)
        printf("{\"pp128\": %.2f, \"pp512\": %.2f, \"tg\": %.2f, \"rss_mb\": %.0f, \"load_s\": %.2f, \"threads\": %d, \"weights\": \"%s\"}\n",
               pp128, pp512, tg, peak_rss_mb(), load_s, o->threads, m->exact ? "f32" : "bf16");
    else
        printf("load %.2f s  pp128 %.2f tok/s  pp512 %.2f tok/s  tg %.2f tok/s  peak rss %.0f MB  threads %d\n",
               load_s, pp128, pp512, tg, peak_rss_mb(), o->threads);
    codi_state_free(s);
    codi_model_free(m);
    return 0;
}

/* --- tokenize ------------------------------------------------------------------------------ */

typedef struct { const codi_tokenizer *t; char **texts; size_t *lens; int n, cap; } text_list;

static int collect_text(void *user, int index, const codi__json *j) {
    text_list *tl = (text_list *)user;
    const codi__json *x = codi__json_get(j, "text");
    if (!x || x->type != CODI__J_STR) { fprintf(stderr, "codi: line %d has no \"text\" string\n", index + 1); return -1; }
    if (tl->n == tl->cap) {
        tl->cap = tl->cap ? tl->cap * 2 : 1024;
        tl->texts = realloc(tl->texts, sizeof(char *) * (size_t)tl->cap);
        tl->lens = realloc(tl->lens, sizeof(size_t) * (size_t)tl->cap);
    }
    tl->texts[tl->n] = malloc(x->len + 1);
    memcpy(tl->texts[tl->n], x->str, x->len + 1);
    tl->lens[tl->n++] = x->len;
    return 0;
}

/* Encodes every text once; returns the total ids (or -1). */
static long encode_all(const codi_tokenizer *t, const text_list *tl, int upto, int32_t *buf, int cap, int print) {
    long total = 0;
    int i, k, n;
    for (i = 0; i < upto; i++) {
        n = codi_encode(t, tl->texts[i], tl->lens[i], 0, 1, buf, cap);
        if (n < 0 || n > cap) { fprintf(stderr, "codi: text %d: %s\n", i + 1, n < 0 ? "out of memory" : "too many ids"); return -1; }
        if (print) {
            if (codi_utf8_invalid_at(tl->texts[i], tl->lens[i]) >= 0)
                fprintf(stderr, "codi: line %d is not valid UTF-8 at byte %ld; its bytes are encoded as they are\n", i + 1, codi_utf8_invalid_at(tl->texts[i], tl->lens[i]));
            printf("{\"ids\": [");
            for (k = 0; k < n; k++) printf(k ? ", %d" : "%d", buf[k]);
            printf("]}\n");
        }
        total += n;
    }
    return total;
}

/* Encode throughput (best of 3 passes after a warm-up) and the time a long word takes. */
static int tokenize_bench(const codi_tokenizer *t, const text_list *tl, double load_ms, int32_t *buf, int cap) {
    double best = 1e30, bytes = 0, t0, word_ms[2];
    long tokens = 0;
    int pass, i, w;
    for (i = 0; i < tl->n; i++) bytes += (double)tl->lens[i];
    if (encode_all(t, tl, tl->n < 100 ? tl->n : 100, buf, cap, 0) < 0) return 1;
    for (pass = 0; pass < 3; pass++) {
        t0 = now_s();
        tokens = encode_all(t, tl, tl->n, buf, cap, 0);
        if (tokens < 0) return 1;
        if (now_s() - t0 < best) best = now_s() - t0;
    }
    for (w = 0; w < 2; w++) {                   /* random letters: one piece of 10^4, then 10^5 bytes */
        int n = w ? 100000 : 10000;
        char *word = malloc((size_t)n);
        unsigned seed = 12345;
        for (i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; word[i] = (char)('a' + (seed >> 16) % 26); }
        t0 = now_s();
        if (codi_encode(t, word, (size_t)n, 0, 1, NULL, 0) < 0) { free(word); return 1; }
        word_ms[w] = (now_s() - t0) * 1e3;
        free(word);
    }
    printf("{\"impl\": \"codi_lens.h C99\", \"load_ms\": %.1f, \"texts\": %d, \"bytes\": %.0f, \"tokens\": %ld, \"seconds\": %.6f, "
           "\"mb_per_s\": %.3f, \"word10k_ms\": %.2f, \"word100k_ms\": %.2f}\n",
           load_ms, tl->n, bytes, tokens, best, bytes / best / 1e6, word_ms[0], word_ms[1]);
    return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The BPE vocabulary as tiktoken's tokenizer.model: "base64(bytes) rank" per line, by rank. */
static int export_tiktoken(const codi_tokenizer *t, const char *path) {
    FILE *f = fopen(path, "wb");
    int id;
    if (!f) { fprintf(stderr, "codi: cannot write %s\n", path); return 1; }
    for (id = 0; id < t->n_ids; id++) {
        const unsigned char *p = (const unsigned char *)t->bytes + t->offset[id];
        uint32_t i, n = t->length[id];
        if (t->kind[id] != CODI_TOK_BPE) continue;
        for (i = 0; i < n; i += 3) {
            uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
            fputc(b64[v >> 18], f); fputc(b64[(v >> 12) & 63], f);
            fputc(i + 1 < n ? b64[(v >> 6) & 63] : '=', f); fputc(i + 2 < n ? b64[v & 63] : '=', f);
        }
        fprintf(f, " %d\n", id);
    }
    if (fclose(f) != 0) { fprintf(stderr, "codi: error writing %s\n", path); return 1; }
    return 0;
}

static int cmd_tokenize(const cli_opts *o) {
    char err[512];
    double t0 = now_s(), load_ms;
    codi_tokenizer *t;
    int rc = 0, i, cap = 1 << 20;
    int32_t *buf;
    if (!o->tokenizer) { fprintf(stderr, "codi: tokenize needs --tokenizer PATH\n"); return 2; }
    if (!(t = codi_tokenizer_load(o->tokenizer, err, sizeof err))) { fprintf(stderr, "codi: %s\n", err); return 1; }
    load_ms = (now_s() - t0) * 1e3;
    buf = malloc(sizeof(int32_t) * (size_t)cap);
    if (o->export_tiktoken) rc = export_tiktoken(t, o->export_tiktoken);
    else if (o->text) {
        int n = codi_encode(t, o->text, strlen(o->text), 0, 1, buf, cap);
        char cell[96];
        if (n < 0 || n > cap) { fprintf(stderr, "codi: cannot encode the text\n"); rc = 1; }
        for (i = 0; i < n && i < cap; i++) { token_cell(t, buf[i], cell, sizeof cell, 40); printf("%d\t%s\n", buf[i], cell); }
    } else if (o->jsonl) {
        text_list tl;
        memset(&tl, 0, sizeof tl);
        rc = for_each_jsonl(o->jsonl, o->limit, collect_text, &tl) ? 1 : 0;
        if (!rc) rc = o->bench ? tokenize_bench(t, &tl, load_ms, buf, cap) : encode_all(t, &tl, tl.n, buf, cap, 1) < 0;
        for (i = 0; i < tl.n; i++) free(tl.texts[i]);
        free(tl.texts); free(tl.lens);
    } else { fprintf(stderr, "codi: tokenize needs --text, --jsonl or --export-tiktoken\n"); rc = 2; }
    free(buf);
    codi_tokenizer_free(t);
    return rc;
}

int main(int argc, char **argv) {
    cli_opts o;
    if (argc < 2) return usage();
    if (parse_args(argc, argv, &o)) return usage();
    if (!strcmp(argv[1], "trace")) return cmd_trace(&o, 1);
    if (!strcmp(argv[1], "run")) return cmd_run(&o);
    if (!strcmp(argv[1], "info")) return cmd_info(&o);
    if (!strcmp(argv[1], "bench")) return cmd_bench(&o);
    if (!strcmp(argv[1], "tokenize")) return cmd_tokenize(&o);
    fprintf(stderr, "codi: unknown command %s\n", argv[1]);
    return usage();
}
