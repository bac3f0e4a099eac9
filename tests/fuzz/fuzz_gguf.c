/* Structure-aware libFuzzer harness for the GGUF control-vector reader (`codi vectors --from-gguf`,
   vectors_read_gguf in tools/cmd_vectors.c, included here with the CLI it belongs to). The input
   is a program: a version, key/value pairs (general.alignment among them), then tensors whose
   name (direction.N with N from a table of edge values, or raw bytes), rank, dims, type and data
   offset come from the input, then data of a length from the input. Directions it accepts must be
   distinct, in range and finite; a refusal must say why.
     make build/fuzz_gguf && build/fuzz_gguf -max_total_time=60 build/gguf_corpus tests/fuzz/gguf_seeds */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#define CODI_NO_MMAP
#include "../../codi_lens.h"
#include "../../tools/cli.h"
#include "../../tools/cmd_vectors.c"

typedef struct { const uint8_t *p; size_t n; } prog;
typedef struct { unsigned char *b; size_t n, cap; } buf;
static unsigned next(prog *g) { if (!g->n) return 0; g->n--; return *g->p++; }
static void put(buf *o, const void *s, size_t n) {
    if (o->n + n > o->cap) { o->cap = (o->n + n) * 2 + 256; if (!(o->b = (unsigned char *)realloc(o->b, o->cap))) abort(); }
    memcpy(o->b + o->n, s, n); o->n += n;
}
static void put_le(buf *o, uint64_t v, int bytes) { int i; for (i = 0; i < bytes; i++) { unsigned char c = (unsigned char)(v >> (8 * i)); put(o, &c, 1); } }
static uint64_t pick(prog *g) {
    static const uint64_t table[] = { 0, 1, 2, 3, 4, 8, 16, 32, 255, 256, 4096, 65536, 100000, 100001, 1000000, 1000001,
        2147483647ull, 2147483648ull, 4294967295ull, 4294967296ull, (uint64_t)1 << 40, (uint64_t)1 << 62, ~(uint64_t)0 };
    unsigned k = next(g);
    if (k < 100) return table[k % (sizeof table / sizeof *table)];
    if (k < 240) return k - 100;
    { uint64_t v = 0; int i; for (i = 0; i < 8; i++) v = v << 8 | next(g); return v; }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    prog g = { data, size };
    buf o = { NULL, 0, 0 };
    uint64_t nt = next(&g) % 8, nkv = next(&g) % 4, i, pad;
    char path[96], err[512];
    float *rows = NULL;
    int *layers = NULL, n = 0, D = 0, j, k;
    put(&o, "GGUF", 4); put_le(&o, next(&g) % 4 == 0 ? 2 : 3, 4);
    put_le(&o, next(&g) % 16 == 0 ? pick(&g) : nt, 8); put_le(&o, nkv, 8);
    for (i = 0; i < nkv; i++) {
        unsigned kind = next(&g) % 3;
        const char *key = kind == 0 ? "general.alignment" : "controlvector.model_hint";
        put_le(&o, strlen(key), 8); put(&o, key, strlen(key));
        if (kind == 0) { put_le(&o, 4, 4); put_le(&o, pick(&g), 4); }
        else if (kind == 1) { uint64_t len = pick(&g) % 64; put_le(&o, 8, 4); put_le(&o, len, 8); for (k = 0; k < (int)len; k++) put_le(&o, 'a', 1); }
        else { put_le(&o, 9, 4); put_le(&o, next(&g) % 13, 4); put_le(&o, pick(&g) % 16, 8); }
    }
    for (i = 0; i < nt; i++) {
        char name[80];
        uint64_t nd = next(&g) % 8 == 0 ? next(&g) % 3 : 1, d;
        if (next(&g) % 8) snprintf(name, sizeof name, "direction.%llu", (unsigned long long)pick(&g));
        else { int len = (int)(next(&g) % 20); for (k = 0; k < len; k++) name[k] = (char)next(&g); name[len] = 0; }
        put_le(&o, strlen(name), 8); put(&o, name, strlen(name));
        put_le(&o, nd, 4);
        for (d = 0; d < nd; d++) put_le(&o, next(&g) % 4 ? 4 + next(&g) % 4 : pick(&g), 8);
        put_le(&o, next(&g) % 8 ? 0 : next(&g), 4);
        put_le(&o, next(&g) % 4 ? i * 32 : pick(&g), 8);
    }
    pad = (32 - o.n % 32) % 32;
    for (i = 0; i < pad; i++) put_le(&o, 0, 1);
    for (i = 0, pad = next(&g) * 4; i < pad; i++) { float f = (float)(next(&g)) - 128; put(&o, &f, 4); }
    while (g.n) put_le(&o, next(&g), 1);
    snprintf(path, sizeof path, "/tmp/fuzz_gguf_%d.gguf", (int)getpid());
    { FILE *fp = fopen(path, "wb"); if (!fp) abort(); fwrite(o.b, 1, o.n, fp); fclose(fp); }
    free(o.b);
    err[0] = 0;
    if (vectors_read_gguf(path, &rows, &layers, &n, &D, err, sizeof err)) { if (!err[0]) abort(); return 0; }
    for (j = 0; j < n; j++) {
        if (layers[j] < 0 || layers[j] > 100000 || !codi__all_finite(rows + (size_t)j * D, D)) abort();
        for (k = 0; k < j; k++) if (layers[k] == layers[j]) abort();
    }
    free(rows); free(layers);
    return 0;
}
