/* Structure-aware libFuzzer harness for the activation-dataset check every reader runs first
   (codi_acts_check after codi_safetensors_open). The input is a program: per tensor of the layout (resid,
   done, positions, ...) whether it is present, its dtype and rank, and each dimension as one of a
   few shared sizes (so most files agree, some disagree) or an edge value, plus "layers" / "dim"
   metadata. The file is written with consistent data offsets unless the input asks otherwise. A
   dataset the check accepts is then read the way tune-lens reads it (done[q], positions[q, p],
   the end of resid) and by pca / probe's own reader (pca_acts_open and every row of every tensor
   it takes, tools/cmd_pca.c included with the CLI); with CODI_NO_MMAP the file is one heap
   block, so a read past it is an ASan report (the reader's messages go to stderr).
     make build/fuzz_acts && build/fuzz_acts -max_total_time=60 build/acts_corpus tests/fuzz/acts_seeds */
#define _POSIX_C_SOURCE 200809L
#define CODI_LENS_IMPLEMENTATION
#define CODI_NO_MMAP
#include "../../codi_lens.h"
#include "../../tools/cli.h"
#include "../../tools/cmd_pca.c"

/* pca / probe's reader over tensor: every row of every finished question, slot and layer. */
static void read_like_pca(const char *path, const char *tensor) {
    pca_acts a;
    float *row;
    int q, s, l;
    if (pca_acts_open(&a, "fuzz", path, tensor, -1)) return;
    if (!(row = (float *)malloc(sizeof(float) * (size_t)(a.row > 0 ? a.row : 1)))) abort();
    for (q = 0; q < a.Q; q++)
        for (s = 0; s < a.P; s++)
            if (pca_acts_valid(&a, q, s)) for (l = 0; l < a.n_layers; l++) pca_acts_row(&a, q, s, l, row);
    free(row);
    pca_acts_close(&a);
}

typedef struct { const uint8_t *p; size_t n; } prog;
static unsigned next(prog *g) { if (!g->n) return 0; g->n--; return *g->p++; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const dtypes[] = { "F32", "BF16", "F16", "F64", "I32", "U8", "I64" };
    static const int esz[] = { 4, 2, 2, 8, 4, 1, 8 };
    /* the layout (codi_lens.h >>acts): rank, then dimensions as Q P L+1 D N L KVH HD Tmax A = 0..9 */
    static const char layout[CODI__A_COUNT][6] = { { 1, 0 }, { 1, 0 }, { 4, 0, 1, 2, 3 }, { 3, 0, 1, 3 }, { 3, 0, 4, 3 },
        { 5, 0, 1, 5, 6, 7 }, { 5, 0, 1, 5, 6, 7 }, { 2, 0, 1 }, { 1, 0 }, { 2, 0, 8 }, { 2, 0, 9 }, { 1, 0 }, { 1, 0 }, { 1, 0 } };
    static const int good_dtype[CODI__A_COUNT] = { 3, 3, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 5, 5 };
    static const int64_t edge[] = { 0, 1, 4096, 4097, 2147483647LL, 2147483648LL, 1000000000000LL };
    prog g = { data, size };
    int64_t sizes[10];
    char *hdr = (char *)malloc(1 << 16), path[96], err[512];
    size_t hn = 0, off = 0;
    int k, d, first = 1;
    codi_safetensors_file *f;
    static codi_model m;
    if (!hdr) abort();
    if (!m.config.dim) { m.config.dim = 4; m.config.n_layers = 2; m.config.n_kv_heads = 1; m.config.head_dim = 4; }
    for (k = 0; k < 10; k++) sizes[k] = 1 + next(&g) % 4;
    sizes[2] = sizes[5] + (next(&g) % 8 != 0);                   /* L+1, mostly */
    hn += (size_t)snprintf(hdr + hn, 4096, "{\"__metadata__\":{\"format\":\"codi_lens.acts.v1\",\"labels\":\"[\\\"bot\\\",\\\"latent 1\\\"]\",\"layers\":\"%u\",\"dim\":\"%u\"}", next(&g) % 6, next(&g) % 6);
    for (k = 0; k < CODI__A_COUNT; k++) {
        unsigned c = next(&g), dt, nd;
        int64_t numel = 1;
        if (!(c & 1)) continue;
        dt = (c >> 1) % 8 ? (unsigned)good_dtype[k] : (c >> 4) % 7;     /* mostly the layout's dtype, rank and sizes */
        nd = (c >> 5) % 8 ? (unsigned)layout[k][0] : next(&g) % 6;
        hn += (size_t)snprintf(hdr + hn, 1024, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", codi__acts_names[k], dtypes[dt]);
        for (d = 0; d < (int)nd; d++) {
            unsigned s = next(&g);
            int64_t v = s < 224 ? sizes[d < layout[k][0] ? layout[k][d + 1] : s % 10] : s < 240 ? sizes[s % 10] : edge[s % 7];
            numel = v && numel > (INT64_C(1) << 40) / v ? INT64_C(1) << 40 : numel * v;
            hn += (size_t)snprintf(hdr + hn, 64, "%s%lld", d ? "," : "", (long long)v);
        }
        if (numel > (1 << 12)) numel = 1 << 12;             /* claimed larger than the data: the reader must refuse */
        hn += (size_t)snprintf(hdr + hn, 128, "],\"data_offsets\":[%lu,%lu]}", (unsigned long)off, (unsigned long)(off + (size_t)numel * esz[dt]));
        off += (size_t)numel * esz[dt];
        first = 0;
    }
    (void)first;
    hdr[hn++] = '}';
    snprintf(path, sizeof path, "/tmp/fuzz_acts_%d.safetensors", (int)getpid());
    {
        FILE *fp = fopen(path, "wb");
        unsigned char l8[8];
        unsigned char *body = (unsigned char *)calloc(off + 1, 1);
        size_t i;
        if (!fp || !body) abort();
        for (i = 0; i < 8; i++) l8[i] = (unsigned char)((uint64_t)hn >> (8 * i));
        memset(body, 1, off);                            /* done = 1, positions >= 0 where the input stops */
        memcpy(body, g.p, g.n < off ? g.n : off);
        fwrite(l8, 1, 8, fp); fwrite(hdr, 1, hn, fp); fwrite(body, 1, off, fp);
        fclose(fp); free(body);
    }
    free(hdr);
    if (!(f = codi_safetensors_open(path, err, sizeof err))) return 0;
    for (k = 0; k < 2; k++) {
        codi_safetensors_tensor resid, done, pos;
        int64_t q, p, Q, P;
        volatile unsigned char sink = 0;
        err[0] = 0;
        if (codi_acts_check(f, k ? &m : NULL, err, sizeof err)) { if (!err[0]) abort(); continue; }
        if (codi_safetensors_find(f, "resid", &resid) || codi_safetensors_find(f, "done", &done) || codi_safetensors_find(f, "positions", &pos)) continue;
        Q = resid.shape[0]; P = resid.shape[1];
        if ((int64_t)done.numel != Q || (int64_t)pos.numel != Q * P) abort();
        for (q = 0; q < Q; q++) {
            sink ^= ((const unsigned char *)done.data)[q * (int64_t)(done.numel ? codi__st_elem_size(done.dtype) : 0)];
            for (p = 0; p < P; p++) sink ^= ((const unsigned char *)pos.data)[(q * P + p) * (int64_t)codi__st_elem_size(pos.dtype)];
        }
        if (resid.numel) sink ^= ((const unsigned char *)resid.data)[resid.numel * codi__st_elem_size(resid.dtype) - 1];
        (void)sink;
    }
    codi_safetensors_close(f);
    read_like_pca(path, "resid");
    read_like_pca(path, "final");
    return 0;
}
