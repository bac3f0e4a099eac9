/* libFuzzer harness for the tuned-lens reader (codi_tuned_lens_load): the input's first byte picks
   the form (our .safetensors, a params.pt torch zip, or a directory with config.json + params.pt,
   the config taken from the input up to a 0 byte), the rest is the file. A lens it accepts must
   have finite translators of the model's shape. Seeds: tests/fuzz/lens_seeds/.
     make build/fuzz_tuned_lens && build/fuzz_tuned_lens -max_total_time=60 build/lens_corpus tests/fuzz/lens_seeds */
#define CODI_LENS_IMPLEMENTATION
#define CODI_NO_MMAP
#include "../../codi_lens.h"

static void write_file(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) abort();
    fwrite(p, 1, n, fp);
    fclose(fp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static codi_model m;
    char dir[96], path[160], err[512];
    codi_tuned_lens *t;
    int form;
    if (!m.config.dim) { m.config.dim = 4; m.config.n_layers = 2; }
    if (size < 1) return 0;
    form = data[0] % 3; data++; size--;
    snprintf(dir, sizeof dir, "/tmp/fuzz_lens_%d", (int)getpid());
    mkdir(dir, 0777);
    if (form == 2) {                                   /* directory: config.json up to a 0 byte, then params.pt */
        const uint8_t *z = (const uint8_t *)memchr(data, 0, size);
        size_t nc = z ? (size_t)(z - data) : size;
        snprintf(path, sizeof path, "%s/config.json", dir); write_file(path, data, nc);
        snprintf(path, sizeof path, "%s/params.pt", dir); write_file(path, data + nc + (z != NULL), size - nc - (z != NULL));
        snprintf(path, sizeof path, "%s", dir);
    } else {
        snprintf(path, sizeof path, "%s/config.json", dir); remove(path);
        snprintf(path, sizeof path, "%s/params.pt", dir); remove(path);
        snprintf(path, sizeof path, "%s/lens.%s", dir, form ? "pt" : "safetensors");
        write_file(path, data, size);
    }
    err[0] = 0;
    t = codi_tuned_lens_load(&m, path, err, sizeof err);
    if (!t && !err[0]) abort();
    if (t && (t->dim != 4 || t->n_layers != 2 || !codi__all_finite(t->weight, 32) || !codi__all_finite(t->bias, 8))) abort();
    codi_tuned_lens_free(t);
    return 0;
}
