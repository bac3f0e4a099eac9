/* Tokenizer: Llama 3's tokenizer.json and the tokenizer.model derived from it against Hugging
   Face tokenizers' output (tests/data/golden_hf.jsonl.gz: every GSM8K test question and answer,
   then hard cases), the codi-nano tokenizer, added tokens, streaming decode, invalid UTF-8,
   fuzzing and bad files. The Llama 3 vocabulary is fetched by tools/fetch_tokenizer.sh (its
   licence keeps it out of the repository); without it those checks report themselves skipped.
   Run from the repository root after `make` has made build/golden_hf.jsonl. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define LLAMA3_JSON "third_party/llama3/tokenizer.json"
#define LLAMA3_MODEL "build/llama3_tokenizer.model"     /* codi tokenize --export-tiktoken */
#define GOLDEN "build/golden_hf.jsonl"                  /* gunzipped tests/data/golden_hf.jsonl.gz */
#define NANO "models/codi-nano/tokenizer.json"
#define HF_CASES "tests/data/hf_tokenizer_cases.jsonl"  /* tools/hf_cases: Hugging Face tokenizers 0.23.2 */

static int32_t ids[1 << 16];
static char text[1 << 18];

static unsigned rng_state = 20261125u;
static unsigned rng(void) { rng_state = rng_state * 1664525u + 1013904223u; return rng_state >> 8; }

/* Every golden line: ids equal and decode(ids) equal to Hugging Face's. */
static void golden(const codi_tokenizer *t, const char *what) {
    size_t len;
    char *all = codi_read_text(GOLDEN, &len), *p, err[256], name[160];
    int lines = 0, bad_ids = 0, bad_text = 0;
    if (!all) { snprintf(name, sizeof name, "%s: golden_hf.jsonl", what); t_skip(name, GOLDEN " missing (make builds it)"); return; }
    for (p = all; p < all + len;) {
        char *e = strchr(p, '\n');
        codi_json *j;
        const codi_json *tx, *gi, *gd, *c;
        int n, i, same;
        if (!e) e = all + len;
        if (!(j = codi_json_parse(p, (size_t)(e - p), err, sizeof err))) { bad_ids++; break; }
        tx = codi_json_get(j, "text"); gi = codi_json_get(j, "ids"); gd = codi_json_get(j, "decoded");
        n = codi_encode(t, tx->str, tx->len, 0, 1, ids, (int)(sizeof ids / sizeof *ids));
        same = n == gi->count;
        for (i = 0, c = gi->child; same && i < n; i++, c = c->next) same = ids[i] == (int32_t)c->num;
        if (!same && bad_ids++ < 3) {
            printf("# line %d \"%.60s\": got", lines + 1, tx->str);
            for (i = 0; i < n && i < 16; i++) printf(" %d", ids[i]);
            printf(", reference");
            for (i = 0, c = gi->child; c && i < 16; i++, c = c->next) printf(" %d", (int)c->num);
            printf("\n");
        }
        if (codi_decode(t, ids, n, 0, text, sizeof text) != (long)gd->len || memcmp(text, gd->str, gd->len)) bad_text++;
        codi_json_free(j);
        lines++;
        p = e + 1;
    }
    free(all);
    snprintf(name, sizeof name, "%s: ids of all %d golden_hf lines equal Hugging Face's", what, lines);
    t_result(lines == 2671 && bad_ids == 0, name, "%d differ", bad_ids);
    snprintf(name, sizeof name, "%s: decode(ids) of all %d lines equals Hugging Face's", what, lines);
    t_result(lines == 2671 && bad_text == 0, name, "%d differ", bad_text);
}

/* A random string of code points chosen to hit every branch of the pre-tokenizer. */
static size_t random_text(char *out, int n_chars, const codi_tokenizer *t) {
    static const uint32_t pool[] = { ' ', ' ', ' ', '\n', '\r', '\t', '\'', '\'', 's', 'S', 'l', 'L', 'e', 'v', 'r', 'd', 'm', 't',
        'a', 'Z', '0', '7', '9', '.', ',', '?', '<', '>', '|', '_', '$', '-', 0xA0, 0x85, 0x17F, 0xE9, 0xDF, 0x3A9, 0x416,
        0x5D0, 0x627, 0x663, 0xB2, 0xBD, 0x2167, 0x200B, 0x2028, 0x3000, 0x65E5, 0xD55C, 0x1F600, 0x1F44D, 0x1F3FD, 0x200D,
        0x301, 0xFFFF, 0xE000, 0x10FFFF };
    size_t n = 0;
    int i;
    for (i = 0; i < n_chars; i++) {
        unsigned r = rng() % 100;
        uint32_t cp;
        if (r < 4 && t) {                            /* an added token's text */
            const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
            if (ti->n_added) {
                const codi__added *a = &ti->added[rng() % (unsigned)ti->n_added];
                memcpy(out + n, CODI__ADDED_TEXT(ti, a), a->len);
                n += a->len;
                continue;
            }
        }
        if (r < 80) cp = pool[rng() % (sizeof pool / sizeof *pool)];
        else do cp = rng() % 0x110000; while (cp >= 0xD800 && cp < 0xE000);
        n += codi__utf8_put(out + n, cp);
    }
    out[n] = 0;
    return n;
}

/* Random Unicode round-trips; random bytes never crash and their tokens' bytes are the input. */
static void fuzz(const codi_tokenizer *t, const char *what, int rounds) {
    char buf[2048], name[160];
    int r, bad_trip = 0, bad_bytes = 0, bad_stream = 0;
    for (r = 0; r < rounds; r++) {
        size_t n = random_text(buf, 1 + (int)(rng() % 120), t), i, m = 0;
        int k = codi_encode(t, buf, n, 0, 1, ids, 4096), j;
        long d = codi_decode(t, ids, k, 0, text, sizeof text);
        codi_utf8_state st;
        if (d != (long)n || memcmp(text, buf, n)) { if (!bad_trip++) printf("# round trip failed for \"%s\"\n", buf); }
        memset(&st, 0, sizeof st);
        for (j = 0; j <= k; j++) {                 /* streaming decode gives the same text, in whole characters */
            char chunk[1024];
            int c = codi_decode_stream(t, &st, j < k ? ids[j] : -1, 0, chunk, sizeof chunk);
            if (c < 0 || codi_utf8_invalid_at(chunk, (size_t)c) >= 0 || m + (size_t)c > n || memcmp(buf + m, chunk, (size_t)c)) { bad_stream++; break; }
            m += (size_t)c;
        }
        if (m != n && !bad_stream) bad_stream++;
        n = 1 + rng() % 200;                        /* raw bytes */
        for (i = 0; i < n; i++) buf[i] = (char)(rng() & 0xFF);
        k = codi_encode(t, buf, n, 0, 0, ids, 4096);
        for (j = 0, m = 0; j < k; j++) {
            if (m + t->length[ids[j]] > n || memcmp(buf + m, t->bytes + t->offset[ids[j]], t->length[ids[j]])) { bad_bytes++; break; }
            m += t->length[ids[j]];
        }
        if (m != n) bad_bytes++;
        if (codi_decode(t, ids, k, 0, text, sizeof text) < 0 || codi_utf8_invalid_at(text, strlen(text)) >= 0) bad_bytes++;
    }
    snprintf(name, sizeof name, "%s: %d random Unicode strings: decode(encode(x)) == x", what, rounds);
    t_result(bad_trip == 0, name, "%d failed", bad_trip);
    snprintf(name, sizeof name, "%s: streaming decode emits whole characters that add up to x", what);
    t_result(bad_stream == 0, name, "%d failed", bad_stream);
    snprintf(name, sizeof name, "%s: %d random byte strings: the tokens' bytes are the input, decode is valid UTF-8", what, rounds);
    t_result(bad_bytes == 0, name, "%d failed", bad_bytes);
}

static int ids_equal(const int32_t *a, int n, const int32_t *b, int m) {
    return n == m && (n == 0 || !memcmp(a, b, (size_t)n * sizeof *a));
}

/* Writes bytes to build/bad_tok<ext> and loads it; returns 1 when loading fails with a message. */
static int tok_load_fails(const char *b, size_t n, const char *ext, char *err, size_t errsz) {
    char path[64];
    FILE *f;
    codi_tokenizer *t;
    snprintf(path, sizeof path, "build/bad_tok%s", ext);
    f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    err[0] = 0;
    if ((t = codi_tokenizer_load(path, err, errsz)) != NULL) { codi_tokenizer_free(t); return 0; }
    return err[0] != 0;
}

/* Replaces the first `from` in src by `to` and expects loading to fail with `expect` in the message. */
static void edit_expect(const char *src, size_t n, const char *from, const char *to, const char *expect, const char *what) {
    char *b = (char *)malloc(n + strlen(to) + 1), err[256];
    const char *at = strstr(src, from);
    size_t pre;
    if (!at) { t_result(0, what, "pattern not found"); free(b); return; }
    pre = (size_t)(at - src);
    memcpy(b, src, pre);
    memcpy(b + pre, to, strlen(to));
    memcpy(b + pre + strlen(to), at + strlen(from), n - pre - strlen(from));
    t_result(tok_load_fails(b, n - strlen(from) + strlen(to), ".json", err, sizeof err) && strstr(err, expect), what, "\"%s\"", err);
    free(b);
}

static void bad_files(void) {
    size_t n, cut;
    char *src = codi_read_text(NANO, &n), err[256];
    int tried = 0, failed = 0;
    codi_tokenizer *t;
    while (n && (src[n - 1] == '\n' || src[n - 1] == ' ')) n--;       /* cut inside the JSON text */
    for (cut = 0; cut < n; cut += cut < 300 ? 1 : 37) { tried++; failed += tok_load_fails(src, cut, ".json", err, sizeof err); }
    t_result(failed == tried, "codi-nano tokenizer.json truncated at many offsets: every load fails with a message", "%d of %d; e.g. \"%s\"", failed, tried, err);
    edit_expect(src, n, "\\\\s+(?!\\\\S)|", "", "Split regex", "another pre-tokenizer regex is refused");
    edit_expect(src, n, "\"BPE\"", "\"WordPiece\"", "only BPE", "a non-BPE model is refused");
    edit_expect(src, n, "\"\xC4\xA0has\": ", "\"x y\": ", "not a byte-level token", "a vocab entry outside GPT-2's byte map is refused");
    edit_expect(src, n, "\"merges\": [\n      \"1 0\"", "\"merges\": [\n      \"1 \xC3\xA9\"", "not in the vocab", "a merge naming an unknown token is refused");
    edit_expect(src, n, "\"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n    \"trim_offsets\": true", "\"type\": \"Metaspace\"", "decoder", "a decoder other than ByteLevel is refused");
    t_result(tok_load_fails("QUJD 0\nQUJE\n", 12, ".model", err, sizeof err) && strstr(err, ":2:"), "tiktoken line without a rank", "\"%s\"", err);
    t_result(tok_load_fails("QUJD 0\nQU*D 1\n", 14, ".model", err, sizeof err) && strstr(err, "base64"), "tiktoken line with bad base64", "\"%s\"", err);
    t_result(tok_load_fails("QUJD 0\nQUJE 0\n", 14, ".model", err, sizeof err) && strstr(err, "twice"), "tiktoken rank given twice", "\"%s\"", err);
    edit_expect(src, n, "\"ids\": [\n              510", "\"ids\": [\n              1e20", "out of range", "a post-processor id out of range is refused");
    edit_expect(src, n, "\"id\": 511,", "\"id\": 9000000,", "lacks an id", "an added token id far beyond the vocabulary is refused");
    t_result(tok_load_fails("QQ== 16777215\n", 14, ".model", err, sizeof err) && strstr(err, "far beyond"), "tiktoken rank far beyond the line count", "\"%s\"", err);
    t_result(!tok_load_fails("QUJD 0\n\nQUJE 1\n\n", 16, ".model", err, sizeof err), "tiktoken blank lines are skipped", "%s", err);
    t = codi_tokenizer_load("build/bad_tok.model", err, sizeof err);
    t_result(t && codi_tokenizer_add_token(t, "<|big|>", 2000000000, 1, err, sizeof err) < 0 && strstr(err, "out of range"), "adding a token with a huge id fails", "\"%s\"", err);
    codi_tokenizer_free(t);
    t = codi_tokenizer_load("tests/data/no_such_tokenizer.json", err, sizeof err);
    t_result(!t && strstr(err, "cannot open"), "missing tokenizer file", "\"%s\"", err);
    free(src);
}

/* codi-nano's own tokenizer (byte-level BPE with Llama 3's structure, 510 tokens + bos/eos). */
static void nano(void) {
    /* Hugging Face tokenizers 0.23.2 (models/codi-nano/results.json) */
    static const int32_t ref[] = { 510, 51, 78, 76, 300, 220, 257, 382, 79, 79, 75, 270, 13, 285, 68, 507, 88, 82, 220, 18, 295,
                                   64, 70, 82, 410, 502, 71, 220, 19, 382, 79, 79, 75, 270, 508, 13 };
    const char *q = "Tom has 12 apples. He buys 3 bags with 4 apples each.";
    char err[256];
    int n;
    codi_tokenizer *t = codi_tokenizer_load(NANO, err, sizeof err);
    if (!t) { t_result(0, "load codi-nano tokenizer.json", "%s", err); return; }
    t_result(t->n_ids == 512 && t->n_merges == 254 && t->bos_id == 510, "load codi-nano tokenizer.json", "%d ids, %d merges, bos %d", t->n_ids, t->n_merges, t->bos_id);
    n = codi_encode(t, q, strlen(q), 1, 1, ids, 256);
    t_result(ids_equal(ids, n, ref, (int)(sizeof ref / sizeof *ref)), "codi-nano: HF's ids of its example (template adds bos)", "%d ids", n);
    fuzz(t, "codi-nano", 1500);
    codi_tokenizer_free(t);
}

static void llama3(void) {
    char err[256];
    codi_tokenizer *tj, *tm;
    int n, m;
    int32_t more[64];
    tj = codi_tokenizer_load(LLAMA3_JSON, err, sizeof err);
    if (!tj) {
        t_skip("Llama 3 tokenizer.json", "not fetched (tools/fetch_tokenizer.sh needs npm and the registry)");
        return;
    }
    t_result(tj->n_ids == 128256 && tj->n_merges == 280147 && tj->bos_id == 128000, "load Llama 3 tokenizer.json",
             "%d ids, %d merges, bos %d", tj->n_ids, tj->n_merges, tj->bos_id);
    golden(tj, "tokenizer.json");
    tm = codi_tokenizer_load(LLAMA3_MODEL, err, sizeof err);
    if (!tm) t_skip("Llama 3 tokenizer.model", LLAMA3_MODEL " missing (make exports it from tokenizer.json)");
    else {
        /* the same 128,000 BPE tokens; of the special tokens, those both Llama 3.0 (this tokenizer.json)
           and 3.1+ (Meta's tokenizer.py, used for tiktoken files) name alike */
        static const char *common[] = { "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" };
        int i, same = tm->n_ids == tj->n_ids;
        for (i = 0; same && i < 128000; i++)
            same = tm->kind[i] == CODI_TOK_BPE && tm->length[i] == tj->length[i] && !memcmp(tm->bytes + tm->offset[i], tj->bytes + tj->offset[i], tj->length[i]);
        for (i = 0; same && i < 5; i++) same = codi_token_id(tm, common[i], strlen(common[i])) == codi_token_id(tj, common[i], strlen(common[i]));
        for (i = 128000; same && i < 128256; i++) same = tm->kind[i] == CODI_TOK_SPECIAL;
        t_result(same, "tokenizer.model: the same 128,000 tokens and 256 special tokens as tokenizer.json", "");
        golden(tm, "tokenizer.model");
        codi_tokenizer_free(tm);
    }
    /* special tokens: parsed by default, plain text on request; add_bos */
    n = codi_encode(tj, "<|begin_of_text|>Hello<|eot_id|>", 32, 0, 0, ids, 64);
    for (m = 0; m < n && ids[m] < 128000; m++) {}
    t_result(n > 3 && m == n && codi_decode(tj, ids, n, 0, text, sizeof text) == 32,
             "parse_special 0 encodes special-token strings as text", "%d ids", n);
    n = codi_encode(tj, "Hello", 5, 1, 1, ids, 64);
    t_result(n == 2 && ids[0] == 128000 && ids[1] == 9906, "add_bos prepends <|begin_of_text|>", "");
    /* the CODI research tokenizer's added tokens */
    t_result(codi_tokenizer_add_token(tj, "[PAD]", 128256, 1, err, sizeof err) == 128256 &&
             codi_tokenizer_add_token(tj, "<|bocot|>", 128257, 1, err, sizeof err) == 128257 &&
             codi_tokenizer_add_token(tj, "<|eocot|>", -1, 1, err, sizeof err) == 128258 && tj->n_ids == 128259,
             "add [PAD], <|bocot|>, <|eocot|> as 128256..128258", "%s", err);
    n = codi_encode(tj, "What is 2+3?<|eot_id|><|bocot|>", 31, 1, 1, ids, 64);
    m = codi_decode(tj, ids, n, 1, text, sizeof text);
    t_result(n >= 3 && ids[n - 1] == 128257 && ids[n - 2] == 128009 && m == 12 && !strcmp(text, "What is 2+3?"),
             "added tokens are found in text; skip_special drops them", "%d ids, \"%s\"", n, text);
    t_result(codi_tokenizer_add_token(tj, "<|x|>", 5, 1, err, sizeof err) < 0 && strstr(err, "already"), "adding a token over a used id fails", "\"%s\"", err);
    /* long pieces: one 100,000-letter word */
    {
        static char word[100001];
        int i;
        for (i = 0; i < 100000; i++) word[i] = (char)('a' + rng() % 26);
        n = codi_encode(tj, word, 100000, 0, 1, ids, (int)(sizeof ids / sizeof *ids));
        t_result(n > 10000 && n < 65536 && codi_decode(tj, ids, n, 0, text, sizeof text) == 100000 && !memcmp(text, word, 100000),
                 "a 100,000-letter word encodes and round-trips", "%d ids", n);
    }
    /* display text of tokens; invalid UTF-8 */
    codi_token_text(tj, 198, text, sizeof text);
    t_result(!strcmp(text, "\\n"), "token text escapes a newline", "\"%s\"", text);
    n = codi_encode(tj, "\xF0\x9F\x98\x80", 4, 0, 1, more, 64);
    codi_token_text(tj, more[0], text, sizeof text);
    t_result(n == 2 && strstr(text, "\\x") != NULL, "token text shows a partial character as \\xNN", "%d ids, first \"%s\"", n, text);
    n = codi_encode(tj, "ab\xFF\xFE" "cd", 6, 0, 1, more, 64);
    m = codi_decode(tj, more, n, 0, text, sizeof text);
    t_result(codi_utf8_invalid_at("ab\xFF\xFE" "cd", 6) == 2 && m == 10 && !strcmp(text, "ab\xEF\xBF\xBD\xEF\xBF\xBD" "cd"),
             "invalid UTF-8: reported, encoded byte-wise, decoded as U+FFFD", "\"%s\"", text);
    fuzz(tj, "Llama 3", 1500);
    codi_tokenizer_free(tj);
}

/* One rule of Hugging Face tokenizers per case (merge ranks, add_prefix_space, added tokens:
   normalized or not, single_word, lstrip/rstrip, overlaps): a small tokenizer.json, texts, and
   the ids and decoded text HF gave. */
static void hf_cases(void) {
    size_t len;
    char *all = codi_read_text(HF_CASES, &len), *p, err[256], name[160];
    codi_tokenizer *t = NULL;
    int texts = 0, bad = 0, cases = 0;
    for (p = all; p && p < all + len;) {
        char *e = strchr(p, '\n'), *tj;
        codi_json *j;
        if (!e) e = all + len;
        *e = 0;
        if ((tj = strstr(p, "\"tokenizer\":")) != NULL) {          /* {"case": ..., "tokenizer": {...}} */
            codi_tokenizer_free(t);
            tok_load_fails(tj + 12, strlen(tj + 12) - 1, ".json", err, sizeof err);
            t = codi_tokenizer_load("build/bad_tok.json", err, sizeof err);
            if (!t) { printf("# case %.40s: %s\n", p, err); bad++; }
            cases++;
        } else if (t && (j = codi_json_parse(p, (size_t)(e - p), err, sizeof err)) != NULL) {
            const codi_json *tx = codi_json_get(j, "text"), *gi = codi_json_get(j, "ids"), *gd = codi_json_get(j, "decoded"), *c;
            int n = codi_encode(t, tx->str, tx->len, 0, 1, ids, 256), i, same = n == gi->count;
            for (i = 0, c = gi->child; same && i < n; i++, c = c->next) same = ids[i] == (int32_t)c->num;
            same = same && codi_decode(t, ids, n, 0, text, sizeof text) == (long)gd->len && !memcmp(text, gd->str, gd->len);
            if (!same) { bad++; printf("# %s \"%s\": %d ids, first %d\n", codi_json_get(j, "case")->str, tx->str, n, n > 0 ? ids[0] : -1); }
            texts++;
            codi_json_free(j);
        }
        p = e + 1;
    }
    codi_tokenizer_free(t);
    free(all);
    snprintf(name, sizeof name, "%d rules of Hugging Face tokenizers (%d texts): same ids and decoded text", cases, texts);
    t_result(all && cases >= 10 && bad == 0, name, "%d differ", bad);
}

static void normalize(void) {
    static const char *cases[][2] = {
        { "  What is 2 + 3?\n", "What is 2 + 3?" }, { "a  b   c    d", "a b  c  d" }, { "\xC2\xA0x\xE3\x80\x80", "x" },
        { "\x1Fq\t", "q" }, { "", "" }, { " \n\t ", "" }, { "caf\xC3\xA9  ok", "caf\xC3\xA9 ok" } };
    size_t i;
    int bad = 0;
    char out[64];
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        long n = codi_normalize_question(cases[i][0], out, sizeof out);
        if (n != (long)strlen(cases[i][1]) || strcmp(out, cases[i][1])) { bad++; printf("# \"%s\" -> \"%s\"\n", cases[i][0], out); }
    }
    t_result(bad == 0, "question normalisation is Python's q.strip().replace('  ', ' ')", "%d cases", (int)i);
}

int main(void) {
    normalize();
    hf_cases();
    nano();
    bad_files();
    llama3();
    return t_summary();
}
