/* Hostile and out-of-range input (issue 11, issue 6 items 2 and 3), each defect with its crafted
   file or call: overflowing pickle storage sizes, offsets, shapes and strides; safetensors
   shapes whose element count overflows; config.json values out of range (1e30 is cast nowhere:
   this file also runs as a clang build with -fsanitize=float-cast-overflow); special-token ids
   outside the vocabulary; the recipe-1 separator missing; CRC-32 of zip entries; a directory
   holding one checkpoint; a FIFO; API limits (max_answer, a state made for another shape); the
   safetensors writer's long and odd names; every allocation failure of a load reported as
   "out of memory". */
#include <stdlib.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
static long t_alloc_countdown = -1;   /* allocations left before one fails (-1: never) */
static long t_allocs;                 /* allocations made */
static void *t_malloc(size_t n) {
    t_allocs++;
    if (t_alloc_countdown == 0) return NULL;
    if (t_alloc_countdown > 0) t_alloc_countdown--;
    return malloc(n);
}
static void *t_realloc(void *p, size_t n) {
    t_allocs++;
    if (t_alloc_countdown == 0) return NULL;
    if (t_alloc_countdown > 0) t_alloc_countdown--;
    return realloc(p, n);
}
#define CODI_MALLOC(n) t_malloc(n)
#define CODI_REALLOC(p, n) t_realloc(p, n)
#define CODI_FREE(p) free(p)
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define DATA "tests/data/"
#define CFG_DIR "build/hard_cfg"

static void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) { printf("# cannot write %s\n", path); exit(2); }
    fclose(f);
}

static codi_model *load(const char *path, codi_load_opts *o, char *err, size_t errsz) {
    err[0] = 0;
    return codi_load(path, o, err, errsz);
}

/* ---- a torch.save archive written here: one tensor, its pickle fields given ---- */

typedef struct { unsigned char *b; size_t n, cap; } buf;
static void put(buf *o, const void *s, size_t n) {
    if (o->n + n > o->cap) { o->cap = (o->n + n) * 2 + 256; o->b = (unsigned char *)realloc(o->b, o->cap); }
    memcpy(o->b + o->n, s, n); o->n += n;
}
static void put1(buf *o, unsigned c) { unsigned char b = (unsigned char)c; put(o, &b, 1); }
static void put_le(buf *o, uint64_t v, int bytes) { int i; for (i = 0; i < bytes; i++) put1(o, (unsigned)(v >> (8 * i)) & 255); }
static void pk_int(buf *o, int64_t v) { put1(o, 0x8a); put1(o, 8); put_le(o, (uint64_t)v, 8); }   /* LONG1, 8 bytes */
static void pk_str(buf *o, const char *s) { put1(o, 'X'); put_le(o, strlen(s), 4); put(o, s, strlen(s)); }
static void pk_global(buf *o, const char *m, const char *n) { put1(o, 'c'); put(o, m, strlen(m)); put1(o, '\n'); put(o, n, strlen(n)); put1(o, '\n'); }

static void zip_entry(buf *z, buf *cd, const char *name, const void *data, size_t n) {
    static codi__crc32_tables crc;
    uint32_t c;
    uint64_t at = z->n;
    codi__crc32_init(&crc);
    c = codi__crc32(&crc, (const unsigned char *)data, n);
    put_le(z, 0x04034b50u, 4); put_le(z, 20, 2); put_le(z, 0, 8); put_le(z, c, 4); put_le(z, n, 4); put_le(z, n, 4);
    put_le(z, strlen(name), 2); put_le(z, 0, 2); put(z, name, strlen(name)); put(z, data, n);
    put_le(cd, 0x02014b50u, 4); put_le(cd, 20, 2); put_le(cd, 20, 2); put_le(cd, 0, 8); put_le(cd, c, 4); put_le(cd, n, 4);
    put_le(cd, n, 4); put_le(cd, strlen(name), 2); put_le(cd, 0, 8); put_le(cd, 0, 4); put_le(cd, at, 4); put(cd, name, strlen(name));
}

/* {"w": FloatStorage tensor (storage numel, offset, shape, stride)} over a 64-byte storage. */
static void write_archive(const char *path, int64_t numel, int64_t offset, int ndim, const int64_t *shape, const int64_t *stride) {
    buf pk = { NULL, 0, 0 }, z = { NULL, 0, 0 }, cd = { NULL, 0, 0 };
    unsigned char storage[64];
    uint64_t cd_off;
    int d;
    memset(storage, 0x3c, sizeof storage);
    put1(&pk, 0x80); put1(&pk, 2); put1(&pk, '}'); pk_str(&pk, "w");
    pk_global(&pk, "torch._utils", "_rebuild_tensor_v2"); put1(&pk, '(');
    put1(&pk, '('); pk_str(&pk, "storage"); pk_global(&pk, "torch", "FloatStorage"); pk_str(&pk, "0"); pk_str(&pk, "cpu");
    pk_int(&pk, numel); put1(&pk, 't'); put1(&pk, 'Q');
    pk_int(&pk, offset);
    put1(&pk, '('); for (d = 0; d < ndim; d++) pk_int(&pk, shape[d]); put1(&pk, 't');
    put1(&pk, '('); for (d = 0; d < ndim; d++) pk_int(&pk, stride[d]); put1(&pk, 't');
    put1(&pk, 0x89); pk_global(&pk, "collections", "OrderedDict"); put1(&pk, ')'); put1(&pk, 'R');
    put1(&pk, 't'); put1(&pk, 'R'); put1(&pk, 's'); put1(&pk, '.');
    zip_entry(&z, &cd, "archive/data.pkl", pk.b, pk.n);
    zip_entry(&z, &cd, "archive/byteorder", "little", 6);
    zip_entry(&z, &cd, "archive/data/0", storage, sizeof storage);
    cd_off = z.n;
    put(&z, cd.b, cd.n);
    put_le(&z, 0x06054b50u, 4); put_le(&z, 0, 4); put_le(&z, 3, 2); put_le(&z, 3, 2); put_le(&z, cd.n, 4); put_le(&z, cd_off, 4); put_le(&z, 0, 2);
    spit(path, z.b, z.n);
    free(pk.b); free(z.b); free(cd.b);
}

static void pickle_sizes(void) {
    codi_load_opts o = codi_load_opts_default();
    char err[256];
    codi_model *m;
    const int64_t s16[1] = { 16 }, st1[1] = { 1 }, big2[2] = { (int64_t)1 << 32, (int64_t)1 << 32 }, st_big2[2] = { (int64_t)1 << 32, 1 };
    const int64_t s4x4[2] = { 4, 4 }, huge_stride[2] = { (int64_t)1 << 62, 1 }, s2x1[2] = { 2, 1 };
    /* control: the archive writer makes a file the reader accepts (then the model lacks its tensors) */
    write_archive("build/hard_pk.bin", 16, 0, 1, s16, st1);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "missing tensor model.embed_tokens.weight"), "crafted archive control: a 16-element storage is read", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", (int64_t)1 << 62, (int64_t)1 << 36, 1, s16, st1);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "does not fit its storage"), "pickle storage numel 2^62 at offset 2^36 (numel * 4 wraps): refused, no pointer outside the file", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", (int64_t)1 << 62, 100000, 1, s16, st1);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "does not fit its storage"), "pickle storage numel 2^62 at offset 100000: refused (not read from other bytes)", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", 1000, 100, 1, s16, st1);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "does not fit its storage"), "pickle storage of 1000 floats in a 64-byte entry, tensor at 100: refused (would read other entries)", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", 16, INT64_MAX - 4, 1, s16, st1);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "does not fit its storage"), "pickle offset 2^63 - 5 (offset + span overflows): refused", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", 16, 0, 2, big2, st_big2);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "too many elements"), "pickle shape [2^32, 2^32] (the element count overflows): refused", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", 16, 0, 2, s2x1, huge_stride);
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "not contiguous"), "pickle stride 2^62: refused", "\"%s\"", err);
    codi_model_free(m);
    write_archive("build/hard_pk.bin", 16, 1, 2, s4x4, (const int64_t[]){ 4, 1 });
    m = load("build/hard_pk.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "does not fit its storage"), "pickle tensor one element past its storage: refused", "\"%s\"", err);
    codi_model_free(m);
}

static void safetensors_sizes(void) {
    static const char *cases[][2] = {
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", "[2^32, 2^32] with 0 bytes (the element count wraps to 0)" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1000000000000,1000000000000,1000000000000],\"data_offsets\":[0,0]}}", "[1e12, 1e12, 1e12] with 0 bytes" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8.5]}}", "fractional data offsets" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1e300,1e300]}}", "data offsets 1e300" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", "negative data offset" },
    };
    codi_load_opts o = codi_load_opts_default();
    char err[256], name[160];
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        buf b = { NULL, 0, 0 };
        unsigned char data[16];
        codi_model *m;
        memset(data, 0, sizeof data);
        put_le(&b, strlen(cases[i][0]), 8); put(&b, cases[i][0], strlen(cases[i][0])); put(&b, data, sizeof data);
        spit("build/hard_st.safetensors", b.b, b.n);
        m = load("build/hard_st.safetensors", &o, err, sizeof err);
        snprintf(name, sizeof name, "safetensors %s: refused", cases[i][1]);
        t_result(!m && (strstr(err, "more elements than") || strstr(err, "data offsets")), name, "\"%s\"", err);
        codi_model_free(m);
        free(b.b);
    }
}

/* ---- config.json values ---- */

static const char *good_config =
    "{\"hidden_size\": 256, \"intermediate_size\": 512, \"num_hidden_layers\": 4, \"num_attention_heads\": 8, "
    "\"num_key_value_heads\": 2, \"head_dim\": 32, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
    "\"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": true, \"rope_scaling\": {\"rope_type\": \"llama3\", "
    "\"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}";

/* good_config with `from` replaced by `to`, written beside codi_tiny.safetensors in CFG_DIR. */
static void write_config(const char *from, const char *to) {
    char text[2048];
    const char *at = from ? strstr(good_config, from) : NULL;
    if (from && !at) { printf("# %s not in the config\n", from); exit(2); }
    if (!from) snprintf(text, sizeof text, "%s", good_config);
    else snprintf(text, sizeof text, "%.*s%s%s", (int)(at - good_config), good_config, to, at + strlen(from));
    spit(CFG_DIR "/config.json", text, strlen(text));
}

static void config_values(void) {
    static const char *cases[][3] = {   /* replaced, by, the field the message must name */
        { "\"hidden_size\": 256", "\"hidden_size\": 1e30", "hidden_size" },
        { "\"hidden_size\": 256", "\"hidden_size\": 256.5", "hidden_size" },
        { "\"intermediate_size\": 512", "\"intermediate_size\": -512", "intermediate_size" },
        { "\"num_hidden_layers\": 4", "\"num_hidden_layers\": 0", "num_hidden_layers" },
        { "\"num_attention_heads\": 8", "\"num_attention_heads\": 0", "num_attention_heads" },
        { "\"num_attention_heads\": 8", "\"num_attention_heads\": 7", "7 heads" },
        { "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "3 kv heads" },
        { "\"head_dim\": 32", "\"head_dim\": 64", "head_dim 64" },
        { "\"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 32", "\"num_attention_heads\": 7, \"num_key_value_heads\": 2",
          "does not divide hidden_size" },
        { "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1", "rms_norm_eps" },
        { "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", "rms_norm_eps" },
        { "\"rope_theta\": 500000.0", "\"rope_theta\": -5", "rope_theta" },
        { "\"rope_theta\": 500000.0", "\"rope_theta\": 1e300", "rope_theta" },
        { "\"factor\": 32.0", "\"factor\": 0", "factor" },
        { "\"high_freq_factor\": 4.0", "\"high_freq_factor\": 1.0", "high_freq_factor" },
        { "\"original_max_position_embeddings\": 8192", "\"original_max_position_embeddings\": 1e10", "original_max_position_embeddings" },
        { "\"bos_token_id\": 1", "\"bos_token_id\": 600", "bos_token_id 600" },
        { "\"bos_token_id\": 1", "\"bos_token_id\": -1", "bos_token_id" },
        { "\"eos_token_id\": 2", "\"eos_token_id\": [2, 9999]", "eos_token_id 9999" },
        { "\"eos_token_id\": 2", "\"eos_token_id\": [2, \"x\"]", "eos_token_id" },
    };
    codi_load_opts o = codi_load_opts_default();
    char err[512], name[200];
    codi_model *m;
    size_t i, n;
    unsigned char *model = t_slurp(DATA "codi_tiny.safetensors", &n);
    mkdir(CFG_DIR, 0755);
    spit(CFG_DIR "/model.safetensors", model, n);
    free(model);
    write_config(NULL, NULL);                       /* control: the unedited config loads */
    m = load(CFG_DIR, &o, err, sizeof err);
    t_result(m && m->config.n_heads == 8 && m->config.head_dim == 32 && m->config.bos_id == 1, "config control: the valid config.json loads", "%s", m ? "" : err);
    codi_model_free(m);
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_config(cases[i][0], cases[i][1]);
        m = load(CFG_DIR, &o, err, sizeof err);
        snprintf(name, sizeof name, "config %s: an error naming '%s' and the file", cases[i][1], cases[i][2]);
        t_result(!m && strstr(err, cases[i][2]) && strstr(err, CFG_DIR "/config.json"), name, "\"%s\"", err);
        codi_model_free(m);
    }
    write_config(NULL, NULL);
    o.lora_scale = NAN;
    m = load(CFG_DIR, &o, err, sizeof err);
    t_result(!m && strstr(err, "lora_scale"), "lora_scale NaN: an error naming lora_scale", "\"%s\"", err);
    codi_model_free(m);
    o.lora_scale = INFINITY;
    m = load(CFG_DIR, &o, err, sizeof err);
    t_result(!m && strstr(err, "lora_scale"), "lora_scale inf: an error naming lora_scale", "\"%s\"", err);
    codi_model_free(m);
    o = codi_load_opts_default();
    o.base_vocab = 514;                             /* eot would be 516 of 515 ids */
    m = load(CFG_DIR, &o, err, sizeof err);
    t_result(!m && strstr(err, "base_vocab"), "base_vocab putting eot outside the vocabulary: an error", "\"%s\"", err);
    codi_model_free(m);
}

static void prompt_ids(void) {
    codi_load_opts o = codi_load_opts_default();
    char err[512], msg[256];
    int32_t q[2] = { 5, 7 }, out[8];
    codi_model *m;
    int n;
    write_config(NULL, NULL);
    m = load(CFG_DIR, &o, err, sizeof err);
    if (!m) { t_result(0, "load with the valid config", "%s", err); return; }
    n = codi_prompt_ids(m, 0, q, 2, out, 8);
    t_result(n == 4 && out[0] == 1 && out[3] == 513 && codi_prompt_check(m, 0, msg, sizeof msg) == 0, "recipe 0: BOS q bot", "%d ids", n);
    msg[0] = 0;
    t_result(codi_prompt_ids(m, 1, q, 2, out, 8) == -1 && codi_prompt_check(m, 1, msg, sizeof msg) == -1 &&
             strstr(msg, "<|eot_id|>") && strstr(msg, "128009") && strstr(msg, "recipe 0"),
             "recipe 1 on a vocabulary without <|eot_id|> 128009: refused, saying what is missing and what to do", "\"%s\"", msg);
    t_result(codi_prompt_check(m, 2, msg, sizeof msg) == -1 && strstr(msg, "recipe 2"), "recipe 2: refused", "\"%s\"", msg);
    codi_model_free(m);
    write_config("\"bos_token_id\": 1, ", "");
    m = load(CFG_DIR, &o, err, sizeof err);
    msg[0] = 0;
    t_result(m && m->config.bos_id == -1 && codi_prompt_ids(m, 0, q, 2, out, 8) == -1 && codi_prompt_check(m, 0, msg, sizeof msg) == -1 &&
             strstr(msg, "bos_token_id"), "no bos_token_id, Llama 3's 128000 outside the vocabulary: bos -1, prompts refused naming bos_token_id",
             "\"%s\"", m ? msg : err);
    codi_model_free(m);
    m = load(DATA "llama_tiny_hf", &o, err, sizeof err);
    t_result(m && m->config.bot_id == -1 && codi_prompt_check(m, 0, msg, sizeof msg) == -1 && strstr(msg, "bot"),
             "a plain Llama (no prj): no CODI ids, prompts refused", "\"%s\"", m ? msg : err);
    codi_model_free(m);
}

/* ---- CRC-32, directories, FIFOs ---- */

static void archive_checks(void) {
    codi_load_opts o = codi_load_opts_default();
    char err[512];
    size_t n;
    unsigned char *b = t_slurp(DATA "codi_tiny.bin", &n);
    codi_model *m;
    codi__crc32_tables crc;
    codi__crc32_init(&crc);
    t_result(codi__crc32(&crc, (const unsigned char *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value of \"123456789\" is cbf43926 (ISO 3309)", "");
    o.head_dim = 32;
    b[15446 + 2000] ^= 1;                           /* one bit inside storage codi_tiny/data/0 */
    spit("build/hard_crc.bin", b, n);
    m = load("build/hard_crc.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "codi_tiny/data/0 is corrupted: CRC-32"), "one flipped bit in a tensor's bytes: CRC-32 error naming the entry", "\"%s\"", err);
    codi_model_free(m);
    o.skip_crc = 1;
    m = load("build/hard_crc.bin", &o, err, sizeof err);
    t_result(m != NULL, "the same file with skip_crc: loads", "%s", m ? "" : err);
    codi_model_free(m);
    o.skip_crc = 0;
    b[15446 + 2000] ^= 1;
    mkdir("build/hard_dir1", 0755); mkdir("build/hard_dir2", 0755); mkdir("build/hard_dir0", 0755);
    spit("build/hard_dir1/some_name.bin", b, n);
    m = load("build/hard_dir1", &o, err, sizeof err);
    t_result(m && m->n_tensors == 101, "a directory holding one .bin: loads it", "%s", m ? "" : err);
    codi_model_free(m);
    spit("build/hard_dir2/a.bin", b, n);
    spit("build/hard_dir2/b.safetensors", b, n);
    m = load("build/hard_dir2", &o, err, sizeof err);
    t_result(!m && strstr(err, "holds 2 checkpoints"), "a directory holding two checkpoints: an error naming them", "\"%s\"", err);
    codi_model_free(m);
    m = load("build/hard_dir0", &o, err, sizeof err);
    t_result(!m && strstr(err, "no model.safetensors"), "a directory without a checkpoint: an error", "\"%s\"", err);
    codi_model_free(m);
    free(b);
    {   /* 46 bytes: a zip64 end record whose locator points at offset 0, where a directory record
           would need 56 bytes */
        buf z = { NULL, 0, 0 };
        put_le(&z, 0x06064b50u, 4);
        put_le(&z, 0x07064b50u, 4); put_le(&z, 0, 4); put_le(&z, 0, 8); put_le(&z, 1, 4);
        put_le(&z, 0x06054b50u, 4); put_le(&z, 0, 4); put_le(&z, 0xFFFF, 2); put_le(&z, 0xFFFF, 2);
        put_le(&z, 0xFFFFFFFFu, 4); put_le(&z, 0xFFFFFFFFu, 4); put_le(&z, 0, 2);
        spit("build/hard_zip64.bin", z.b, z.n);
        m = load("build/hard_zip64.bin", &o, err, sizeof err);
        t_result(!m && strstr(err, "zip64 directory record missing"), "a 46-byte zip64 archive (its record would end past the file): refused",
                 "\"%s\"", err);
        codi_model_free(m);
        free(z.b);
    }
    /* a FIFO would block open() forever: alarm() turns a hang into a failed run */
    unlink("build/hard_fifo.bin");
    if (mkfifo("build/hard_fifo.bin", 0600) != 0) t_skip("FIFO as the model", "mkfifo failed");
    else {
        alarm(20);
        m = load("build/hard_fifo.bin", &o, err, sizeof err);
        t_result(!m && strstr(err, "not a regular file"), "a FIFO as the model: refused before open() blocks", "\"%s\"", err);
        codi_model_free(m);
        unlink(CFG_DIR "/config.json");
        if (mkfifo(CFG_DIR "/config.json", 0600) == 0) {
            m = load(CFG_DIR, &o, err, sizeof err);
            t_result(!m && strstr(err, "config.json"), "a FIFO as config.json: an error, no hang", "\"%s\"", err);
            codi_model_free(m);
            unlink(CFG_DIR "/config.json");
        }
        alarm(0);
        unlink("build/hard_fifo.bin");
    }
}

/* ---- API limits ---- */

static void api_limits(void) {
    codi_load_opts o = codi_load_opts_default();
    char err[256];
    codi_model *m32, *m64;
    codi_state *s32, *s64;
    codi_run_opts ro;
    codi_run_result *r = (codi_run_result *)malloc(sizeof *r);
    int32_t ids[4] = { 1, 5, 7, 513 };
    o.head_dim = 32;
    m32 = load(DATA "codi_tiny.safetensors", &o, err, sizeof err);
    o.head_dim = 64;                                /* same dim, layers and vocab; 4 heads, 1 kv head */
    m64 = load(DATA "codi_tiny.safetensors", &o, err, sizeof err);
    if (!m32 || !m64) { t_result(0, "load codi_tiny with head_dim 32 and 64", "%s", err); free(r); return; }
    s32 = codi_state_new(m32, 64, 1); s64 = codi_state_new(m64, 64, 1);
    ro = codi_run_opts_default(m32);
    ro.n_latent = 1; ro.max_answer = 2;
    t_result(codi_run(m32, s32, ids, 4, &ro, r) == 0 && r->n_answer == 2, "control: a run with max_answer 2", "%s", s32->error);
    ro.max_answer = 1025;
    r->n_answer = 77;
    s32->error[0] = 0;
    t_result(codi_run_answer(m32, s32, &ro, r) == -1 && strstr(s32->error, "max_answer") && r->n_answer == 0,
             "codi_run_answer with max_answer 1025 (answer[] holds 1024): refused", "\"%s\"", s32->error);
    ro.max_answer = -1;
    t_result(codi_run_answer(m32, s32, &ro, r) == -1 && strstr(s32->error, "max_answer"), "codi_run_answer with max_answer -1: refused", "\"%s\"", s32->error);
    ro.max_answer = 2;
    s64->error[0] = 0;
    t_result(codi_forward(m32, s64, ids, NULL, 4, NULL) == -1 && strstr(s64->error, "another model"),
             "forward with a state made for head_dim 64 (4 heads, 1 kv head): refused", "\"%s\"", s64->error);
    s64->error[0] = 0;
    t_result(codi_run_answer(m32, s64, &ro, r) == -1 && strstr(s64->error, "another model"), "codi_run_answer with that state: refused", "\"%s\"", s64->error);
    s64->error[0] = 0;
    t_result(codi_state_copy(m32, s64, s32) == -1 && strstr(s64->error, "another model"), "codi_state_copy into that state: refused", "\"%s\"", s64->error);
    {   /* CODI's argmax is over logits[:, :-1]: the last id (eot) never answers */
        float *lg = (float *)calloc(515, sizeof(float));
        lg[514] = 10; lg[7] = 5;
        t_result(codi_argmax_answer(m32, lg) == 7, "answer argmax skips the last id (CODI's logits[:, :-1])", "%d", codi_argmax_answer(m32, lg));
        free(lg);
    }
    codi_state_free(s32); codi_state_free(s64);
    codi_model_free(m32); codi_model_free(m64);
    free(r);
}

/* ---- the safetensors writer (issue 11: a 699-character name overflowed its header buffer;
   names were not JSON-escaped) ---- */

static void writer(void) {
    static char long_name[5001], mid_name[700];
    const char *odd_name = "q\"uote\\back\nline\x01ctl \xc3\xa9";
    const char *meta[] = { "note", "a \"quoted\"\nvalue\\", "k\x02", "v", NULL };
    float v[4] = { 1, 2, 3, 4 };
    codi_safetensors_entry e[3];
    codi_safetensors_tensor t;
    codi_safetensors_file *f;
    char err[256];
    int ok;
    memset(long_name, 'n', sizeof long_name - 1); memset(mid_name, 'm', sizeof mid_name - 1);
    memset(e, 0, sizeof e);
    e[0].name = mid_name; e[1].name = long_name; e[2].name = odd_name;
    e[0].dtype = e[1].dtype = e[2].dtype = CODI_F32;
    e[0].data = e[1].data = e[2].data = v;
    e[0].ndim = e[1].ndim = e[2].ndim = 1;
    e[0].shape[0] = e[1].shape[0] = e[2].shape[0] = 4;
    ok = codi_write_safetensors("build/hard_w.safetensors", e, 3, meta, err, sizeof err) == 0;
    f = ok ? codi_safetensors_open("build/hard_w.safetensors", err, sizeof err) : NULL;
    t_result(f && codi_safetensors_count(f) == 3 && codi_safetensors_find(f, mid_name, &t) == 0 && t.numel == 4 && codi_safetensors_find(f, long_name, &t) == 0 &&
             !memcmp(t.data, v, sizeof v), "writer: names of 699 and 5000 characters are written whole and read back", "%s", f ? "" : err);
    t_result(f && codi_safetensors_find(f, odd_name, &t) == 0 && !memcmp(t.data, v, sizeof v),
             "writer: a name with a quote, backslash, newline, control byte and UTF-8 reads back unchanged", "%s", f ? "" : err);
    t_result(f && codi_safetensors_metadata(f, "note") && !strcmp(codi_safetensors_metadata(f, "note"), meta[1]) && codi_safetensors_metadata(f, "k\x02") &&
             !strcmp(codi_safetensors_metadata(f, "k\x02"), "v"), "writer: metadata with quotes, newlines and control bytes reads back unchanged", "");
    t_result(f && codi_safetensors_metadata(f, "format") && !strcmp(codi_safetensors_metadata(f, "format"), "pt"), "writer: \"format\": \"pt\" by default", "");
    codi_safetensors_close(f);
    {   /* a caller's own "format" replaces the default: one key, never a duplicate */
        const char *own[] = { "format", "mine.v1", NULL };
        size_t len;
        char *text;
        ok = codi_write_safetensors("build/hard_w3.safetensors", e, 1, own, err, sizeof err) == 0;
        text = ok ? codi_read_text("build/hard_w3.safetensors", &len) : NULL;
        f = ok ? codi_safetensors_open("build/hard_w3.safetensors", err, sizeof err) : NULL;
        {
        const char *p = text && len > 8 ? text + 8 : NULL, *q;   /* the header text, after its 8-byte length */
        int n_format = 0;
        while (p && (q = strstr(p, "\"format\"")) != NULL) { n_format++; p = q + 1; }
        t_result(f && codi_safetensors_metadata(f, "format") && !strcmp(codi_safetensors_metadata(f, "format"), "mine.v1") && n_format == 1,
                 "writer: a caller's \"format\" replaces the default (one key)", "%d keys", n_format);
        }
        free(text);
        codi_safetensors_close(f);
    }
    e[0].name = "big"; e[0].ndim = 2; e[0].shape[0] = (int64_t)1 << 32; e[0].shape[1] = (int64_t)1 << 32;
    t_result(codi_write_safetensors("build/hard_w2.safetensors", e, 1, NULL, err, sizeof err) == -1 && strstr(err, "too large"),
             "writer: shape [2^32, 2^32] (bytes overflow): refused", "\"%s\"", err);
    e[0].ndim = 1; e[0].shape[0] = -4;
    t_result(codi_write_safetensors("build/hard_w2.safetensors", e, 1, NULL, err, sizeof err) == -1, "writer: a negative dim: refused", "\"%s\"", err);
    e[0].ndim = 9; e[0].shape[0] = 4;
    t_result(codi_write_safetensors("build/hard_w2.safetensors", e, 1, NULL, err, sizeof err) == -1, "writer: 9 dims: refused", "\"%s\"", err);
}

/* ---- every allocation failure while loading ---- */

static void allocation_failures(const char *path) {
    codi_load_opts o = codi_load_opts_default();
    char err[256], name[200], bad[400] = "";
    long total, k, failed = 0, loaded = 0, bad_msgs = 0;
    codi_model *m;
    o.head_dim = 32;
    t_allocs = 0; t_alloc_countdown = -1;
    m = load(path, &o, err, sizeof err);
    total = t_allocs;
    codi_model_free(m);
    for (k = 0; k < total; k++) {
        memset(err, 'x', sizeof err - 1); err[sizeof err - 1] = 0;   /* a message left unset shows as x's */
        t_alloc_countdown = k;
        m = codi_load(path, &o, err, sizeof err);
        t_alloc_countdown = -1;
        if (m) { loaded++; codi_model_free(m); continue; }
        failed++;
        if (!strstr(err, "out of memory") && !bad_msgs++) snprintf(bad, sizeof bad, "allocation %ld: \"%s\"", k, err);
    }
    snprintf(name, sizeof name, "%s: each of its %ld allocations failing in turn gives an \"out of memory\" error", path, total);
    t_result(total > 100 && bad_msgs == 0 && failed + loaded == total, name, "%ld failed, %ld still loaded, %ld without the message %s",
             failed, loaded, bad_msgs, bad);
}

int main(void) {
    pickle_sizes();
    safetensors_sizes();
    config_values();
    prompt_ids();
    archive_checks();
    api_limits();
    writer();
    allocation_failures(DATA "codi_tiny.bin");
    allocation_failures(DATA "codi_tiny.safetensors");
    return t_summary();
}
