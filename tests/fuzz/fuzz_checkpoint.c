/* libFuzzer harness: codi_load on hostile checkpoints, the input written once as a .safetensors
   file and once as a PyTorch .bin (zip + pickle) file; it must never crash, leak or hang.
     clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. tests/fuzz/fuzz_checkpoint.c -lm -o build/fuzz_checkpoint
     build/fuzz_checkpoint -max_len=262144 -rss_limit_mb=4096 -max_total_time=300 CORPUS_DIR
   Seeds: the first 64 KB of tests/data/codi_tiny.{bin,safetensors} reach every parser. */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *ext[2] = { "safetensors", "bin" };
    char path[96], err[256];
    codi_load_opts o = codi_load_opts_default();
    int k;
    o.head_dim = 32;
    for (k = 0; k < 2; k++) {
        FILE *fp;
        codi_model *m;
        snprintf(path, sizeof path, "/tmp/fuzz_ckpt_%d.%s", (int)getpid(), ext[k]);
        if (!(fp = fopen(path, "wb"))) abort();
        fwrite(data, 1, size, fp);
        fclose(fp);
        if ((m = codi_load(path, &o, err, sizeof err)) != NULL) codi_model_free(m);
    }
    return 0;
}
