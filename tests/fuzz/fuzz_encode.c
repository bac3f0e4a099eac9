/* libFuzzer harness: codi_encode / codi_decode / codi_decode_stream on arbitrary bytes with the
   nano tokenizer (and Llama 3's, if third_party/llama3/tokenizer.json is there); aborts when
   plain-text tokens do not spell the input, decode(encode(x)) != x for valid UTF-8, or the
   streaming decoder disagrees with codi_decode. Run from the repository root:
     clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. tests/fuzz/fuzz_encode.c -lm -o build/fuzz_encode
     build/fuzz_encode -rss_limit_mb=4096 -max_total_time=300 CORPUS_DIR */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"

static void check(const codi_tokenizer *t, const char *x, size_t len, int bos, int special) {
    int n = codi_encode(t, x, len, bos, special, NULL, 0), i, c;
    int32_t *ids = (int32_t *)malloc((size_t)n * 4 + 4);
    size_t cap = 4 * len + 64, at = 0, sn = 0, sl = CODI_STREAM_BYTES(t);
    char *a = (char *)malloc(cap), *b = (char *)malloc(cap), *chunk = (char *)malloc(sl);
    codi_utf8_state st = {0};
    long dn;
    if (n < 0 || codi_encode(t, x, len, bos, special, ids, n) != n) abort();
    for (i = 0; i < n; i++) {      /* no BOS, no special tokens: the tokens' bytes spell x */
        if (ids[i] < 0 || ids[i] >= t->n_ids) abort();
        if (!bos && !special) {
            if (at + t->length[ids[i]] > len || memcmp(x + at, t->bytes + t->offset[ids[i]], t->length[ids[i]])) abort();
            at += t->length[ids[i]];
        }
    }
    if (!bos && !special && at != len) abort();
    dn = codi_decode(t, ids, n, 0, a, cap);
    if (dn < 0 || (size_t)dn >= cap) abort();
    if (!bos && codi_utf8_invalid_at(x, len) < 0 && ((size_t)dn != len || memcmp(a, x, len))) abort();
    for (i = 0; i <= n; i++) {     /* streaming, id by id then a flush, gives the same text */
        if ((c = codi_decode_stream(t, &st, i < n ? ids[i] : -1, 0, chunk, sl)) < 0 || sn + (size_t)c > cap) abort();
        memcpy(b + sn, chunk, (size_t)c); sn += (size_t)c;
    }
    if (sn != (size_t)dn || memcmp(a, b, sn)) abort();
    free(ids); free(a); free(b); free(chunk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static codi_tokenizer *tok[2];
    static int loaded;
    char err[256];
    int k, bos, special;
    if (!loaded) {
        loaded = 1;
        if (!(tok[0] = codi_tokenizer_load("models/codi-nano/tokenizer.json", err, sizeof err))) { fprintf(stderr, "%s\n", err); abort(); }
        tok[1] = codi_tokenizer_load("third_party/llama3/tokenizer.json", err, sizeof err);
    }
    for (k = 0; k < 2; k++)
        for (bos = 0; bos < 2; bos++)
            for (special = 0; special < 2; special++)
                if (tok[k]) check(tok[k], (const char *)data, size, bos, special);
    return 0;
}
