/* Bad input: truncated and corrupted checkpoints, missing tensors, wrong shapes, unknown
   dtypes, hostile pickles, out-of-range ids, layers, positions and NaN vectors. Each must give
   a clear error and no crash or leak (this runs under AddressSanitizer + UBSan). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define DATA "tests/data/"
static char tmp_path[256];
static int skip_crc;   /* 1 while testing the parsers behind the CRC-32 check with edited archives */

/* Writes bytes to the temp checkpoint and loads it; returns 1 if the load failed with a message. */
static int load_fails(const unsigned char *b, size_t n, const char *ext, char *err, size_t errsz) {
    FILE *f;
    codi_model *m;
    codi_load_opts o = codi_load_opts_default();
    snprintf(tmp_path, sizeof tmp_path, "build/bad_ckpt%s", ext);
    f = fopen(tmp_path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    o.head_dim = 32; o.skip_crc = skip_crc;
    err[0] = 0;
    m = codi_load(tmp_path, &o, err, errsz);
    if (m) { codi_model_free(m); return 0; }
    return err[0] != 0;
}

static size_t find(const unsigned char *b, size_t n, const char *s, size_t from) {
    size_t l = strlen(s), i;
    for (i = from; i + l <= n; i++) if (!memcmp(b + i, s, l)) return i;
    return (size_t)-1;
}

static void truncations(const char *path, const char *ext) {
    size_t n, cut, tried = 0, failed = 0;
    unsigned char *b = t_slurp(path, &n);
    char err[256], name[128];
    /* every byte of the first 600, then 100 offsets across the file, then the last 64 bytes */
    for (cut = 0; cut < n; cut += cut < 600 ? 1 : cut + 64 >= n ? 1 : n / 100) {
        tried++;
        failed += load_fails(b, cut, ext, err, sizeof err);
    }
    snprintf(name, sizeof name, "%s truncated at %lu offsets: every load fails with a message", path, (unsigned long)tried);
    t_result(failed == tried, name, "%lu of %lu; e.g. \"%s\"", (unsigned long)failed, (unsigned long)tried, err);
    free(b);
}

static void corruptions(const char *path, const char *ext, size_t upto, size_t step) {
    size_t n, i, loaded = 0, failed = 0, tried = 0;
    unsigned char *b = t_slurp(path, &n);
    char err[256], name[128];
    if (upto > n) upto = n;
    for (i = 0; i < upto; i += step) { /* header bytes flipped in turn: an error or a valid load, never a crash */
        unsigned char keep = b[i];
        codi_model *m;
        b[i] = (unsigned char)(keep ^ 0x5a);
        tried++;
        if (load_fails(b, n, ext, err, sizeof err)) failed++;
        else {
            codi_load_opts o = codi_load_opts_default();
            o.head_dim = 32; o.skip_crc = skip_crc;
            if ((m = codi_load(tmp_path, &o, err, sizeof err)) != NULL) { loaded++; codi_model_free(m); }
        }
        b[i] = keep;
    }
    snprintf(name, sizeof name, "%s with %lu of its first %lu bytes corrupted in turn: no crash", path, (unsigned long)tried, (unsigned long)upto);
    t_result(failed + loaded == tried, name, "%lu errors, %lu still-valid loads", (unsigned long)failed, (unsigned long)loaded);
    free(b);
}

/* Replaces the first occurrence of `from` by `to` (same length) and expects an error containing `expect`. */
static void edit_expect(const char *path, const char *ext, const char *from, const char *to, const char *expect, const char *what) {
    size_t n, at;
    unsigned char *b = t_slurp(path, &n);
    char err[256];
    int fails;
    at = find(b, n, from, 0);
    if (at == (size_t)-1) { t_result(0, what, "pattern %s not found", from); free(b); return; }
    memcpy(b + at, to, strlen(to));
    fails = load_fails(b, n, ext, err, sizeof err);
    t_result(fails && strstr(err, expect) != NULL, what, "\"%s\"", err);
    free(b);
}

int main(void) {
    codi_model *m;
    codi_state *s;
    codi_load_opts o = codi_load_opts_default();
    char err[256];
    size_t n;
    int32_t ids[4] = { 1, 5, 7, 513 };
    unsigned char *b;

    truncations(DATA "codi_tiny.safetensors", ".safetensors");
    truncations(DATA "codi_tiny.bin", ".bin");
    b = t_slurp(DATA "codi_tiny.safetensors", &n);
    corruptions(DATA "codi_tiny.safetensors", ".safetensors", 8 + (size_t)(b[0] | b[1] << 8 | b[2] << 16), 13);
    free(b);
    skip_crc = 1;                                     /* the pickle and zip readers behind the CRC-32 check */
    corruptions(DATA "codi_tiny.bin", ".bin", 1200, 3);

    edit_expect(DATA "codi_tiny.safetensors", ".safetensors", "layers.1.mlp.up_proj.base_layer.weight",
                "layers.1.mlp.up_proj.base_layer.wEight", "missing tensor model.layers.1.mlp.up_proj.weight", "missing tensor");
    edit_expect(DATA "codi_tiny.safetensors", ".safetensors", "\"BF16\"", "\"BX16\"", "dtype BX16", "unknown dtype");
    {   /* wrong shape with the right byte count: down_proj [256, 512] declared [512, 256] */
        size_t at, sh;
        b = t_slurp(DATA "codi_tiny.safetensors", &n);
        at = find(b, n, "layers.0.mlp.down_proj.base_layer.weight", 0);
        sh = find(b, n, "[256,512]", at);
        memcpy(b + sh, "[512,256]", 9);
        t_result(load_fails(b, n, ".safetensors", err, sizeof err) && strstr(err, "expected [256, 512]"), "wrong shape", "\"%s\"", err);
        free(b);
    }
    edit_expect(DATA "codi_tiny.bin", ".bin", "\x80\x02}", "\x80\x02\xfe", "opcode 0xfe", "pickle with an unknown opcode");
    edit_expect(DATA "codi_tiny.bin", ".bin", "torch._utils\n_rebuild_tensor_v2\n", "builtins\neval\n", "not allowed", "pickle naming a global outside the allow-list");
    edit_expect(DATA "codi_tiny.bin", ".bin", "FloatStorage", "FloatStorag_", "not allowed", "pickle with an unknown storage type");
    skip_crc = 0;
    edit_expect(DATA "codi_tiny.bin", ".bin", "FloatStorage", "FloatStorag_", "is corrupted: CRC-32", "an edited pickle fails its CRC-32");
    {
        b = (unsigned char *)"not a checkpoint at all";
        t_result(load_fails(b, strlen((const char *)b), ".bin", err, sizeof err), "garbage file", "\"%s\"", err);
    }
    m = codi_load("tests/data/no_such_file.bin", &o, err, sizeof err);
    t_result(!m && strstr(err, "cannot open"), "missing file", "\"%s\"", err);

    /* run-time errors on a good model */
    o.head_dim = 32; o.exact = 1;
    m = codi_load(DATA "codi_tiny.bin", &o, err, sizeof err);
    if (!m) { t_result(0, "load", "%s", err); return t_summary(); }
    s = codi_state_new(m, 8, 1);
    ids[1] = 515;
    t_result(codi_forward(m, s, ids, NULL, 4, NULL) == -1 && strstr(s->error, "out of range"), "token id out of range", "\"%s\"", s->error);
    ids[1] = -1;
    t_result(codi_forward(m, s, ids, NULL, 4, NULL) == -1 && s->n_pos == 0, "negative token id", "\"%s\"", s->error);
    ids[1] = 5;
    {
        float v[256];
        int i;
        for (i = 0; i < 256; i++) v[i] = 0.1f;
        v[17] = NAN;
        t_result(codi_forward(m, s, NULL, v, 1, NULL) == -1 && strstr(s->error, "not finite") && s->n_pos == 0, "NaN embedding vector", "\"%s\"", s->error);
    }
    t_result(codi_forward(m, s, ids, NULL, 4, NULL) == 0, "good forward after errors", "");
    {
        float lg[515];
        t_result(codi_lens_at(m, s, 5, 0, lg) == -1 && strstr(s->error, "out of range"), "lens at layer 5 of 4 (0..4 valid)", "\"%s\"", s->error);
        t_result(codi_lens_at(m, s, -1, 0, lg) == -1, "lens at layer -1", "");
        t_result(codi_lens_at(m, s, 2, 4, lg) == -1, "lens at an unprocessed position", "\"%s\"", s->error);
        t_result(codi_lens_at(m, s, 4, 3, lg) == 0, "lens at the last layer and position", "");
    }
    {
        int32_t more[5] = { 1, 2, 3, 4, 5 };
        t_result(codi_forward(m, s, more, NULL, 5, NULL) == -1 && strstr(s->error, "do not fit"), "state overflow", "\"%s\"", s->error);
    }
    codi_state_free(s);
    codi_model_free(m);
    return t_summary();
}
