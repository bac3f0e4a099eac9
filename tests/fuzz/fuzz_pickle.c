/* Structure-aware libFuzzer harness for the torch.save reader (zip + pickle): the input is not a
   file but a program. Each byte chooses an instruction: emit a whole state-dict entry
   (_rebuild_tensor_v2 of a persistent storage) whose storage type, storage key, numel, offset,
   shape and strides come from the following bytes (often "interesting" integers: 0, 2^31, 2^32,
   2^40, 2^62, 2^63 - 1, -1 ...), or a raw opcode, a memo put/get, a mark, a pop. The program is
   assembled into a real archive (data.pkl, byteorder, storages of sizes from the input, correct
   CRC-32s unless the input asks for a wrong one) and read from memory (FUZZ_PICKLE_VERBOSE=1
   prints what the reader said). Every tensor the reader
   accepts is then read in full: a pointer outside the archive is an ASan report. A failure
   without a message aborts.
     make build/fuzz_pickle && mkdir -p build/pickle_corpus &&
     build/fuzz_pickle -max_total_time=600 -rss_limit_mb=4096 build/pickle_corpus tests/fuzz/pickle_seeds
   Seeds (tests/fuzz/pickle_seeds/): programs for a valid f32 / bf16 / shared-storage dict and
   for the overflowing storage numel and offset of issue 11. */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"

typedef struct { const uint8_t *p; size_t n; } prog;
typedef struct { unsigned char *b; size_t n, cap; } buf;

static unsigned next(prog *g) { if (!g->n) return 0; g->n--; return *g->p++; }

static void put(buf *o, const void *s, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 256;
        if (!(o->b = (unsigned char *)realloc(o->b, o->cap))) abort();
    }
    memcpy(o->b + o->n, s, n); o->n += n;
}
static void put1(buf *o, unsigned c) { unsigned char b = (unsigned char)c; put(o, &b, 1); }
static void put_le(buf *o, uint64_t v, int bytes) { int i; for (i = 0; i < bytes; i++) put1(o, (unsigned)(v >> (8 * i)) & 255); }

/* An integer chosen by the program: a table entry, a small value, or 8 raw bytes. */
static int64_t pick_int(prog *g) {
    static const int64_t table[] = { 0, 1, 2, 3, 7, 8, 16, 255, 256, 65535, 65536, 2147483647LL, 2147483648LL,
        4294967295LL, 4294967296LL, (int64_t)1 << 36, (int64_t)1 << 40, ((int64_t)1 << 40) + 1, (int64_t)1 << 61,
        (int64_t)1 << 62, INT64_MAX, -1, INT64_MIN, 100000 };
    unsigned k = next(g);
    if (k < 128) return table[k % (sizeof table / sizeof *table)];
    if (k < 224) return (int64_t)(k - 128);
    { uint64_t v = 0; int i; for (i = 0; i < 8; i++) v = v << 8 | next(g); return (int64_t)v; }
}

/* The pickle opcodes for an int: BININT1 / BININT2 / BININT / LONG1, the form chosen by size. */
static void emit_int(buf *o, int64_t v) {
    if (v >= 0 && v < 256) { put1(o, 'K'); put1(o, (unsigned)v); }
    else if (v >= 0 && v < 65536) { put1(o, 'M'); put_le(o, (uint64_t)v, 2); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { put1(o, 'J'); put_le(o, (uint64_t)v, 4); }
    else { put1(o, 0x8a); put1(o, 8); put_le(o, (uint64_t)v, 8); }
}
static void emit_str(buf *o, const char *s) { size_t n = strlen(s); put1(o, 'X'); put_le(o, n, 4); put(o, s, n); }
static void emit_global(buf *o, const char *mod, const char *name) {
    put1(o, 'c'); put(o, mod, strlen(mod)); put1(o, '\n'); put(o, name, strlen(name)); put1(o, '\n');
}

/* One state-dict entry: key, then _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict()). */
static void emit_tensor(buf *o, prog *g, int index, int n_storages) {
    static const char *types[] = { "FloatStorage", "BFloat16Storage", "HalfStorage", "LongStorage", "ByteStorage", "DoubleStorage" };
    char key[32];
    int ndim = (int)(next(g) % 6), d, fuzz_strides = next(g) & 1;
    int64_t shape[6], stride = 1;
    snprintf(key, sizeof key, "t%d", index);
    emit_str(o, key);
    emit_global(o, "torch._utils", "_rebuild_tensor_v2");
    put1(o, '(');
    put1(o, '('); emit_str(o, "storage"); emit_global(o, "torch", types[next(g) % 6]);
    snprintf(key, sizeof key, "%u", next(g) % (unsigned)(n_storages + 1));   /* one past the last: missing */
    emit_str(o, key); emit_str(o, "cpu"); emit_int(o, pick_int(g)); put1(o, 't'); put1(o, 'Q');
    emit_int(o, pick_int(g));                                                 /* storage offset */
    for (d = 0; d < ndim; d++) shape[d] = pick_int(g);
    put1(o, '('); for (d = 0; d < ndim; d++) emit_int(o, shape[d]); put1(o, 't');
    put1(o, '(');
    {
        int64_t strides[6];
        for (d = ndim - 1; d >= 0; d--) { strides[d] = fuzz_strides ? pick_int(g) : stride; stride = (int64_t)((uint64_t)stride * (uint64_t)shape[d]); }
        for (d = 0; d < ndim; d++) emit_int(o, strides[d]);
    }
    put1(o, 't');
    put1(o, 0x89);
    emit_global(o, "collections", "OrderedDict"); put1(o, ')'); put1(o, 'R');
    put1(o, 't'); put1(o, 'R');
}

/* The pickle the program describes. */
static void build_pickle(buf *o, prog *g, int n_storages) {
    int index = 0, steps = 0;
    put1(o, 0x80); put1(o, 2); put1(o, '}'); put1(o, '(');
    while (g->n && steps++ < 64) {
        unsigned op = next(g);
        switch (op % 10) {
        case 0: case 1: case 2: case 3: case 4: emit_tensor(o, g, index++, n_storages); break;
        case 5: put1(o, 'q'); put1(o, next(g)); break;                          /* BINPUT */
        case 6: put1(o, 'h'); put1(o, next(g)); break;                          /* BINGET */
        case 7: put1(o, "(0t2)1"[next(g) % 6]); break;                           /* MARK POP TUPLE DUP () POP_MARK */
        case 8: put1(o, next(g)); break;                                         /* any opcode, its argument next */
        default: emit_int(o, pick_int(g)); break;
        }
    }
    put1(o, 'u'); put1(o, '.');
}

/* A stored zip entry: local header + data now, its central record appended to cd. */
static void zip_entry(buf *z, buf *cd, const codi__crc32_tables *t, const char *name, const void *data, size_t n, int bad_crc) {
    uint32_t crc = codi__crc32(t, (const unsigned char *)data, n) ^ (bad_crc ? 1u : 0u);
    uint64_t at = z->n;
    size_t nl = strlen(name);
    put_le(z, 0x04034b50u, 4); put_le(z, 20, 2); put_le(z, 0, 2); put_le(z, 0, 2); put_le(z, 0, 4);
    put_le(z, crc, 4); put_le(z, n, 4); put_le(z, n, 4); put_le(z, nl, 2); put_le(z, 0, 2);
    put(z, name, nl); put(z, data, n);
    put_le(cd, 0x02014b50u, 4); put_le(cd, 20, 2); put_le(cd, 20, 2); put_le(cd, 0, 2); put_le(cd, 0, 2); put_le(cd, 0, 4);
    put_le(cd, crc, 4); put_le(cd, n, 4); put_le(cd, n, 4); put_le(cd, nl, 2); put_le(cd, 0, 2); put_le(cd, 0, 2);
    put_le(cd, 0, 2); put_le(cd, 0, 2); put_le(cd, 0, 4); put_le(cd, at, 4); put(cd, name, nl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static codi__crc32_tables crc;
    static int crc_ready;
    prog g = { data, size };
    buf pk = { NULL, 0, 0 }, z = { NULL, 0, 0 }, cd = { NULL, 0, 0 };
    unsigned flags = next(&g), n_storages = next(&g) % 4, i;
    codi__tensors ts;
    codi__file f;
    char err[256] = "", name[64];
    int rc;
    if (!crc_ready) { codi__crc32_init(&crc); crc_ready = 1; }
    for (i = 0; i < n_storages; i++) {           /* storage i: 0..4095 bytes */
        size_t n = (size_t)(next(&g) << 4 | (next(&g) & 15));
        unsigned char *s = (unsigned char *)malloc(n + 1);
        memset(s, (int)(0x3c + i), n);
        snprintf(name, sizeof name, "archive/data/%u", i);
        zip_entry(&z, &cd, &crc, name, s, n, (flags & 6) == 6 && i == 0);
        free(s);
    }
    build_pickle(&pk, &g, (int)n_storages);
    zip_entry(&z, &cd, &crc, "archive/data.pkl", pk.b, pk.n, 0);
    zip_entry(&z, &cd, &crc, "archive/byteorder", (flags & 8) ? "big" : "little", (flags & 8) ? 3 : 6, 0);
    {
        uint64_t cd_off = z.n;
        unsigned count = n_storages + 2;
        put(&z, cd.b, cd.n);
        put_le(&z, 0x06054b50u, 4); put_le(&z, 0, 4); put_le(&z, count, 2); put_le(&z, count, 2);
        put_le(&z, cd.n, 4); put_le(&z, cd_off, 4); put_le(&z, 0, 2);
    }
    /* an exactly sized heap copy, so that any read past the archive is an ASan report */
    memset(&f, 0, sizeof f);
    f.data = (const unsigned char *)malloc(z.n);
    memcpy((void *)f.data, z.b, z.n); f.size = z.n;
    memset(&ts, 0, sizeof ts);
    rc = codi__torch_zip_tensors(&ts, &f, "fuzz.bin", 0, flags & 1, err, sizeof err);
    if (rc != 0 && !err[0]) abort();
    if (getenv("FUZZ_PICKLE_VERBOSE")) printf("%d tensors; %s\n", rc == 0 ? ts.n : -1, rc == 0 ? "accepted" : err);
    if (rc == 0) {
        int k;
        volatile unsigned sum = 0;
        for (k = 0; k < ts.n; k++) {
            const codi__tensor *t = &ts.t[k];
            size_t bytes = (size_t)codi__numel(t->ndim, t->shape) * (t->dtype >= 0 ? codi__dtype_size(t->dtype) : 0), b;
            for (b = 0; b < bytes; b++) sum += ((const unsigned char *)t->data)[b];
        }
    }
    codi__tensors_free(&ts);
    free((void *)f.data); free(pk.b); free(z.b); free(cd.b);
    return 0;
}
