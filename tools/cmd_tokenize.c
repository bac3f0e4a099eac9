/* codi tokenize: text to ids, encode speed, and the tiktoken export of a vocabulary. */

typedef struct { const codi_tokenizer *t; char **texts; size_t *lens; int n, cap; } tokenize_texts;

static int tokenize_collect(void *user, int index, const codi_json *j) {
    tokenize_texts *tl = (tokenize_texts *)user;
    const codi_json *x = codi_json_get(j, "text");
    if (!x || x->type != CODI_JSON_STR) { fprintf(stderr, "codi: line %d has no \"text\" string\n", index + 1); return -1; }
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
static long tokenize_encode_all(const codi_tokenizer *t, const tokenize_texts *tl, int upto, int32_t *buf, int cap, int print) {
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
static int tokenize_bench(const codi_tokenizer *t, const tokenize_texts *tl, double load_ms, int32_t *buf, int cap) {
    double best = 1e30, bytes = 0, t0, word_ms[2];
    long tokens = 0;
    int pass, i, w;
    for (i = 0; i < tl->n; i++) bytes += (double)tl->lens[i];
    if (tokenize_encode_all(t, tl, tl->n < 100 ? tl->n : 100, buf, cap, 0) < 0) return 1;
    for (pass = 0; pass < 3; pass++) {
        t0 = cli_now();
        tokens = tokenize_encode_all(t, tl, tl->n, buf, cap, 0);
        if (tokens < 0) return 1;
        if (cli_now() - t0 < best) best = cli_now() - t0;
    }
    for (w = 0; w < 2; w++) {                   /* random letters: one piece of 10^4, then 10^5 bytes */
        int n = w ? 100000 : 10000;
        char *word = malloc((size_t)n);
        unsigned seed = 12345;
        for (i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; word[i] = (char)('a' + (seed >> 16) % 26); }
        t0 = cli_now();
        if (codi_encode(t, word, (size_t)n, 0, 1, NULL, 0) < 0) { free(word); return 1; }
        word_ms[w] = (cli_now() - t0) * 1e3;
        free(word);
    }
    printf("{\"impl\": \"codi_lens.h C99\", \"load_ms\": %.1f, \"texts\": %d, \"bytes\": %.0f, \"tokens\": %ld, \"seconds\": %.6f, "
           "\"mb_per_s\": %.3f, \"word10k_ms\": %.2f, \"word100k_ms\": %.2f}\n",
           load_ms, tl->n, bytes, tokens, best, bytes / best / 1e6, word_ms[0], word_ms[1]);
    return 0;
}

static const char tokenize_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The BPE vocabulary as tiktoken's tokenizer.model: "base64(bytes) rank" per line, by rank. */
static int tokenize_export_tiktoken(const codi_tokenizer *t, const char *path) {
    FILE *f = cli_out_open(path, "wb");
    int id;
    if (!f) return 1;
    for (id = 0; id < t->n_ids; id++) {
        const unsigned char *p = (const unsigned char *)t->bytes + t->offset[id];
        uint32_t i, n = t->length[id];
        if (t->kind[id] != CODI_TOK_BPE) continue;
        for (i = 0; i < n; i += 3) {
            uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
            fputc(tokenize_b64[v >> 18], f); fputc(tokenize_b64[(v >> 12) & 63], f);
            fputc(i + 1 < n ? tokenize_b64[(v >> 6) & 63] : '=', f); fputc(i + 2 < n ? tokenize_b64[v & 63] : '=', f);
        }
        fprintf(f, " %d\n", id);
    }
    return cli_out_close(f) ? 1 : 0;
}

/* Calls fn(user, index, parsed line) for each non-empty line of a JSONL file; -1 on a bad line. */
static int tokenize_each_jsonl(const char *path, int limit, int (*fn)(void *, int, const codi_json *), void *user) {
    size_t len;
    char *text = codi_read_text(path, &len), *p, err[256];
    int i = 0, line = 0, rc = 0;
    if (!text) { fprintf(stderr, "codi: cannot read %s\n", path); return -1; }
    for (p = text; p < text + len && (limit <= 0 || i < limit); ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        if (!e) e = text + len;
        line++;
        if (e > p && !(e == p + 1 && *p == '\r')) {
            if (!(j = codi_json_parse(p, (size_t)(e - p), err, sizeof err))) { fprintf(stderr, "codi: %s:%d: %s\n", path, line, err); rc = -1; break; }
            rc = fn(user, i++, j);
            codi_json_free(j);
            if (rc) break;
        }
        p = e + 1;
    }
    free(text);
    return rc;
}

static int tokenize_run(const cli_command *self, int argc, char **argv) {
    const char *path = NULL, *text = NULL, *jsonl = NULL, *export_path = NULL;
    int bench = 0, limit = 0, force = 0;
    cli_opt opts[] = {
        { "--tokenizer", CLI_STR, &path, 0, 0, "PATH", "tokenizer.json (or a directory holding one) or tiktoken tokenizer.model (required)" },
        { "--text", CLI_STR, &text, 0, 0, "TEXT", "print the ids and tokens of TEXT" },
        { "--jsonl", CLI_STR, &jsonl, 0, 0, "FILE", "{\"text\": ...} lines: print {\"ids\": [...]} lines" },
        { "--bench", CLI_FLAG, &bench, 0, 0, NULL, "with --jsonl: encode speed instead of ids" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "with --jsonl: the first N lines only (0: all)" },
        { "--export-tiktoken", CLI_STR, &export_path, 0, 0, "OUT", "write the BPE vocabulary as a tiktoken tokenizer.model" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    char err[1024];
    double t0 = cli_now(), load_ms;
    codi_tokenizer *t;
    int rc = 0, i, cap = 1 << 20;
    int32_t *buf;
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (!path) { fprintf(stderr, "codi tokenize: --tokenizer PATH is required\n"); return 2; }
    if ((text != NULL) + (jsonl != NULL) + (export_path != NULL) != 1) {
        fprintf(stderr, "codi tokenize: give exactly one of --text, --jsonl, --export-tiktoken\n"); return 2;
    }
    if (bench && !jsonl) { fprintf(stderr, "codi tokenize: --bench needs --jsonl\n"); return 2; }
    if (export_path && cli_out_check("tokenize", export_path, CLI_OUT_STREAM, force, &path, 1)) return 2;
    if (!(t = codi_tokenizer_load(path, err, sizeof err))) { fprintf(stderr, "codi: tokenizer %s: %s\n", path, err); return 1; }
    load_ms = (cli_now() - t0) * 1e3;
    if (!(buf = malloc(sizeof(int32_t) * (size_t)cap))) { fprintf(stderr, "codi: out of memory\n"); codi_tokenizer_free(t); return 1; }
    if (export_path) rc = tokenize_export_tiktoken(t, export_path);
    else if (text) {
        int n = codi_encode(t, text, strlen(text), 0, 1, buf, cap);
        char cell[96];
        if (n < 0 || n > cap) { fprintf(stderr, "codi: cannot encode the text\n"); rc = 1; }
        for (i = 0; i < n && i < cap; i++) { cli_token_cell(t, buf[i], cell, sizeof cell, 40); printf("%d\t%s\n", buf[i], cell); }
    } else {
        tokenize_texts tl;
        memset(&tl, 0, sizeof tl);
        rc = tokenize_each_jsonl(jsonl, limit, tokenize_collect, &tl) ? 1 : 0;
        if (!rc) rc = bench ? tokenize_bench(t, &tl, load_ms, buf, cap) : tokenize_encode_all(t, &tl, tl.n, buf, cap, 1) < 0;
        for (i = 0; i < tl.n; i++) free(tl.texts[i]);
        free(tl.texts); free(tl.lens);
    }
    free(buf);
    codi_tokenizer_free(t);
    return rc;
}

static const cli_command cmd_tokenize = {
    "tokenize", "text to token ids with a tokenizer.json or tokenizer.model; encode speed; tiktoken export",
    "codi tokenize --tokenizer PATH (--text TEXT | --jsonl FILE [--bench] | --export-tiktoken OUT)",
    "Encodes as Hugging Face's encode(text, add_special_tokens=False) does (special-token strings are\n"
    "recognised). --text prints one \"id<TAB>'token'\" line per token; --jsonl prints {\"ids\": [...]} per line.\n\n"
    "Examples:\n"
    "  codi tokenize --tokenizer models/codi-nano/tokenizer.json --text \"Tom has 12 apples.\"\n"
    "  codi tokenize --tokenizer third_party/llama3/tokenizer.json --export-tiktoken tokenizer.model",
    tokenize_run
};
