/* Structure-aware libFuzzer harness for the activation-dataset check every reader runs first
   (codi_acts_check after codi_st_open). The input is a program: per tensor of the layout (resid,
   done, positions, ...) whether it is present, its dtype and rank, and each dimension as one of a
   few shared sizes (so most files agree, some disagree) or an edge value, plus "layers" / "dim"
   metadata. The file is written with consistent data offsets unless the input asks otherwise. A
   dataset the check accepts is then read the way tune-lens / pca / probe read it (done[q],
   positions[q, p], every row of resid); with CODI_NO_MMAP each tensor is its own heap block
   region, so a read past the file is an ASan report.
     make build/fuzz_acts && build/fuzz_acts -max_total_time=60 build/acts_corpus tests/fuzz/acts_seeds */
#define CODI_LENS_IMPLEMENTATION
#define CODI_NO_MMAP
#include "../../codi_lens.h"

typedef struct { const uint8_t *p; size_t n; } prog;
static unsigned next(prog *g) { if (!g->n) return 0; g->n--; return *g->p++; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const dtypes[] = { "F32", "BF16", "F16", "F64", "I32", "U8", "I64" };
    static const int esz[] = { 4, 2, 2, 8, 4, 1, 8 };
    static const int64_t edge[] = { 0, 1, 4096, 4097, 2147483647LL, 2147483648LL, 1000000000000LL };
    prog g = { data, size };
    int64_t sizes[6];
    char *hdr = (char *)malloc(1 << 16), path[96], err[512];
    size_t hn = 0, off = 0;
    int k, d, first = 1;
    codi_st_file *f;
    static codi_model m;
    if (!hdr) abort();
    if (!m.config.dim) { m.config.dim = 4; m.config.n_layers = 2; m.config.n_kv_heads = 1; m.config.head_dim = 4; }
    for (k = 0; k < 6; k++) sizes[k] = 1 + next(&g) % 6;
    hn += (size_t)snprintf(hdr + hn, 4096, "{\"__metadata__\":{\"layers\":\"%u\",\"dim\":\"%u\"}", next(&g) % 6, next(&g) % 6);
    for (k = 0; k < CODI__A_COUNT; k++) {
        unsigned c = next(&g), dt, nd;
        int64_t numel = 1;
        if (!(c & 1)) continue;
        dt = (c >> 1) % 7; nd = next(&g) % 6;
        hn += (size_t)snprintf(hdr + hn, 1024, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", codi__acts_names[k], dtypes[dt]);
        for (d = 0; d < (int)nd; d++) {
            unsigned s = next(&g);
            int64_t v = s < 200 ? sizes[s % 6] : edge[s % 7];
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
        memcpy(body, g.p, g.n < off ? g.n : off);
        fwrite(l8, 1, 8, fp); fwrite(hdr, 1, hn, fp); fwrite(body, 1, off, fp);
        fclose(fp); free(body);
    }
    free(hdr);
    if (!(f = codi_st_open(path, err, sizeof err))) return 0;
    for (k = 0; k < 2; k++) {
        codi_st_tensor resid, done, pos;
        int64_t q, p, Q, P;
        volatile unsigned char sink = 0;
        err[0] = 0;
        if (codi_acts_check(f, k ? &m : NULL, err, sizeof err)) { if (!err[0]) abort(); continue; }
        if (codi_st_find(f, "resid", &resid) || codi_st_find(f, "done", &done) || codi_st_find(f, "positions", &pos)) continue;
        Q = resid.shape[0]; P = resid.shape[1];
        if ((int64_t)done.numel != Q || (int64_t)pos.numel != Q * P) abort();
        for (q = 0; q < Q; q++) {
            sink ^= ((const unsigned char *)done.data)[q * (int64_t)(done.numel ? codi__st_elem_size(done.dtype) : 0)];
            for (p = 0; p < P; p++) sink ^= ((const unsigned char *)pos.data)[(q * P + p) * (int64_t)codi__st_elem_size(pos.dtype)];
        }
        if (resid.numel) sink ^= ((const unsigned char *)resid.data)[resid.numel * codi__st_elem_size(resid.dtype) - 1];
        (void)sink;
    }
    codi_st_close(f);
    return 0;
}
