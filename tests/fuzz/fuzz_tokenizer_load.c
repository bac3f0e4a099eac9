/* libFuzzer harness: codi_tokenizer_load on hostile tokenizer.json / tiktoken files (the input is
   written to a per-process temp file; a loaded tokenizer is then used for a short encode/decode).
   It must never crash, leak or hang.
     clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. tests/fuzz/fuzz_tokenizer_load.c -lm -o build/fuzz_tokenizer_load
     build/fuzz_tokenizer_load -max_len=65536 -rss_limit_mb=4096 -max_total_time=300 CORPUS_DIR */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[64], path[96];
    char err[256], out[256];
    int32_t ids[64];
    FILE *fp;
    codi_tokenizer *t;
    int n;
    if (!dir[0]) {            /* a directory of our own, so no stray tokenizer_config.json is read */
        snprintf(dir, sizeof dir, "/tmp/fuzz_tok_%d", (int)getpid());
        mkdir(dir, 0700);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    }
    if (!(fp = fopen(path, "wb"))) abort();
    fwrite(data, 1, size, fp);
    fclose(fp);
    if (!(t = codi_tokenizer_load(path, err, sizeof err))) return 0;
    n = codi_encode(t, (const char *)data, size < 256 ? size : 256, 0, 1, ids, 64);
    if (n > 0) codi_decode(t, ids, n < 64 ? n : 64, 0, out, sizeof out);
    codi_encode(t, "Hello world's 123 <|eot_id|>\r\n  x", 33, 1, 1, ids, 64);
    codi_tokenizer_free(t);
    return 0;
}
