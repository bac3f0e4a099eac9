/* Loader formats nothing else covers, each checked against what it must equal:
   1. the published Llama 3.2 config.json spelling (rope_theta + rope_scaling, eos_token_id a
      list, torch_dtype) gives the config and bit-identical logits of transformers 5's
      rope_parameters spelling (tests/data/llama_tiny_hf), and golden_llama_tiny_f32's logits;
   2. a sharded directory (index + 2 shards written here) gives bit-identical logits to the single
      file; hostile indexes fail with a message;
   3. f16 and mixed BF16/F16/F32 CODI checkpoints (converted here, round to nearest even) give
      golden_tiny's answer logits in both precision modes;
   4. unknown dtypes are kept and ignored on tensors the model does not use, an error on one it does.
   Scratch files go to build/fmt_*. Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define DATA "tests/data/"
#define HF DATA "llama_tiny_hf"
#define V 515

static int spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    size_t w;
    if (!f) return -1;
    w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static codi_model *load(const char *path, int exact, int head_dim, char *err, size_t errsz) {
    codi_load_opts o = codi_load_opts_default();
    o.exact = exact; o.head_dim = head_dim;
    err[0] = 0;
    return codi_load(path, &o, err, errsz);
}

/* ---- safetensors in memory (keys as stored) and a writer ---- */

typedef struct { const char *name, *dtype; int ndim; int64_t shape[4]; const void *data; size_t nbytes; } st_tensor;
typedef struct { unsigned char *bytes; codi_json *hdr; st_tensor t[128]; int n; } st_file;

static int st_read(st_file *f, const char *path) {
    size_t size = 0, hlen = 0;
    const codi_json *e, *v;
    char err[200];
    int i;
    memset(f, 0, sizeof *f);
    if (!(f->bytes = t_slurp(path, &size)) || size < 8) { printf("# cannot read %s\n", path); return -1; }
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | f->bytes[i];
    if (!(f->hdr = codi_json_parse((const char *)f->bytes + 8, hlen, err, sizeof err))) { printf("# %s: %s\n", path, err); return -1; }
    for (e = f->hdr->child; e && f->n < 128; e = e->next) {
        st_tensor *t = &f->t[f->n];
        const codi_json *offs = codi_json_get(e, "data_offsets");
        if (!strcmp(e->key, "__metadata__")) continue;
        t->name = e->key; t->dtype = codi_json_get(e, "dtype")->str;
        for (v = codi_json_get(e, "shape")->child; v; v = v->next) t->shape[t->ndim++] = (int64_t)v->num;
        t->data = f->bytes + 8 + hlen + (size_t)offs->child->num;
        t->nbytes = (size_t)(offs->child->next->num - offs->child->num);
        f->n++;
    }
    return 0;
}

static void st_free(st_file *f) { codi_json_free(f->hdr); free(f->bytes); }

/* 8-byte little-endian header length, JSON header padded with spaces to 8 bytes, raw data. */
static int st_write(const char *path, const st_tensor *t, int n) {
    size_t cap = 64 + (size_t)n * 320, len, off = 0;
    char *h = malloc(cap);
    unsigned char l8[8];
    FILE *f;
    int i, d, rc;
    len = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (d = 0; d < t[i].ndim; d++) len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%lu,%lu]}", (unsigned long)off, (unsigned long)(off + t[i].nbytes));
        off += t[i].nbytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    for (i = 0; i < 8; i++) l8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    if (!(f = fopen(path, "wb"))) { free(h); return -1; }
    fwrite(l8, 1, 8, f);
    fwrite(h, 1, len, f);
    for (i = 0; i < n; i++) fwrite(t[i].data, 1, t[i].nbytes, f);
    rc = fclose(f);
    free(h);
    return rc;
}

/* ---- forward passes ---- */

static int forward_logits(codi_model *m, const int32_t *ids, int n, float *lg) {
    codi_state *s = codi_state_new(m, 64, 1);
    int rc = codi_forward(m, s, ids, NULL, n, lg);
    if (rc) printf("# %s\n", s->error);
    codi_state_free(s);
    return rc;
}

/* The golden CODI question as test_model.c runs it: 6 latent steps, 16 answer steps. */
static int codi_answer(codi_model *m, const int32_t *ids, int T, float *lg) {
    codi_state *s = codi_state_new(m, 64, 1);
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    int rc;
    ro.n_latent = 6; ro.max_answer = 16; ro.stop_at_eos = 0; ro.answer_logits = lg;
    rc = codi_run(m, s, ids, T, &ro, &rr);
    if (rc) printf("# %s\n", s->error);
    codi_state_free(s);
    return rc;
}

/* max |got - ref| over rows: got [rows, V], ref [rows, Vg] */
static double max_diff(const float *got, const float *ref, int rows, int Vg) {
    double e = 0, x;
    int r;
    for (r = 0; r < rows; r++) if ((x = t_max_abs(got + (size_t)r * V, ref + (size_t)r * Vg, (size_t)Vg)) > e) e = x;
    return e;
}

/* ---- 1. the published config.json spelling ---- */

static void write_published_config(const char *dir, double theta, double factor, double low, double high, int orig) {
    char path[256], text[2048];
    snprintf(text, sizeof text,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n"
             "  \"bos_token_id\": 1,\n  \"eos_token_id\": [2, 7, 9],\n  \"head_dim\": 32,\n  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": 256,\n  \"initializer_range\": 0.02,\n  \"intermediate_size\": 512,\n"
             "  \"max_position_embeddings\": 131072,\n  \"mlp_bias\": false,\n  \"model_type\": \"llama\",\n"
             "  \"num_attention_heads\": 8,\n  \"num_hidden_layers\": 4,\n  \"num_key_value_heads\": 2,\n"
             "  \"pretraining_tp\": 1,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_scaling\": {\n    \"factor\": %.1f,\n"
             "    \"high_freq_factor\": %.1f,\n    \"low_freq_factor\": %.1f,\n    \"original_max_position_embeddings\": %d,\n"
             "    \"rope_type\": \"llama3\"\n  },\n  \"rope_theta\": %.1f,\n  \"tie_word_embeddings\": true,\n"
             "  \"torch_dtype\": \"bfloat16\",\n  \"transformers_version\": \"4.45.0.dev0\",\n  \"use_cache\": true,\n"
             "  \"vocab_size\": 515\n}\n", factor, high, low, orig, theta);
    if (theta == 0) {                /* plain RoPE: "rope_scaling": null and no rope_theta (Llama 2's form) */
        char *a = strstr(text, "\"rope_scaling\": {"), *b = strstr(text, "  \"tie_word");
        memmove(a + 22, b, strlen(b) + 1);
        memcpy(a, "\"rope_scaling\": null,\n", 22);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    spit(path, text, strlen(text));
}

/* The first codi_config field that differs, or NULL (eos ids aside). */
static const char *config_diff(const codi_config *a, const codi_config *b) {
#define F(x) if (a->x != b->x) return #x;
    F(dim) F(ffn_dim) F(n_layers) F(n_heads) F(n_kv_heads) F(head_dim) F(vocab) F(prj_dim) F(norm_eps) F(ln_eps)
    F(rope_theta) F(rope_llama3) F(rope_factor) F(rope_low_freq_factor) F(rope_high_freq_factor)
    F(rope_original_max_pos) F(bos_id) F(pad_id) F(bot_id) F(eot_id) F(lora_scale)
#undef F
    return NULL;
}

static void published_config(codi_model *mh, const float *lg_hf, const int32_t *ids, int n, const float *golden,
                             size_t model_size, const unsigned char *model_bytes) {
    char err[256];
    codi_model *m;
    float *lg = malloc(sizeof(float) * n * V), *lg2 = malloc(sizeof(float) * n * V);
    mkdir("build/fmt_legacy", 0755); mkdir("build/fmt_legacy_rope", 0755);
    write_published_config("build/fmt_legacy", 500000, 32, 1, 4, 8192);
    spit("build/fmt_legacy/model.safetensors", model_bytes, model_size);
    m = load("build/fmt_legacy", 1, 0, err, sizeof err);
    if (!m) t_result(0, "published config.json (rope_theta + rope_scaling, eos list, torch_dtype) loads", "%s", err);
    else t_result(1, "published config.json (rope_theta + rope_scaling, eos list, torch_dtype) loads", "%d tensors", m->n_tensors);
    if (m) {
        const codi_config *c = &m->config, *ch = &mh->config;
        const char *d = config_diff(c, ch);
        if (d) t_result(0, "published config: every field equals the rope_parameters config's", "%s differs", d);
        else t_result(1, "published config: every field equals the rope_parameters config's", "rope_theta %g, llama3 %g/%g/%g/%d, bos %d",
                      (double)c->rope_theta, (double)c->rope_factor, (double)c->rope_low_freq_factor,
                      (double)c->rope_high_freq_factor, c->rope_original_max_pos, c->bos_id);
        t_result(c->n_eos == 3 && c->eos_ids[0] == 2 && c->eos_ids[1] == 7 && c->eos_ids[2] == 9 && ch->n_eos == 1 && ch->eos_ids[0] == 2,
                 "published config: eos_token_id list [2, 7, 9] read (the scalar 2 for rope_parameters)", "n_eos %d and %d", c->n_eos, ch->n_eos);
        if (forward_logits(m, ids, n, lg) == 0) {
            t_result(!memcmp(lg, lg_hf, sizeof(float) * n * V), "published config: logits bit-identical to the rope_parameters directory's", "");
            {   /* the PyTorch f32-activation reference (tools/reference_fixtures.py) */
                double e = max_diff(lg, golden, n, V);
                t_result(e <= 1e-3, "published config: logits vs golden_llama_tiny_f32 (PyTorch, f32 activations)", "max |diff| %.3g over %d rows (tol 1e-03)", e, n);
            }
        } else t_result(0, "published config forward", "");
        codi_model_free(m);
    }
    /* other rope values prove they are read from rope_scaling (the tiny model's equal the defaults) */
    write_published_config("build/fmt_legacy_rope", 10000, 8, 2, 8, 2048);
    spit("build/fmt_legacy_rope/model.safetensors", model_bytes, model_size);
    m = load("build/fmt_legacy_rope", 1, 0, err, sizeof err);
    if (m && forward_logits(m, ids, n, lg2) == 0) {
        const codi_config *c = &m->config;
        double e = max_diff(lg2, lg_hf, n, V);
        t_result(c->rope_theta == 10000 && c->rope_llama3 == 1 && c->rope_factor == 8 && c->rope_low_freq_factor == 2 &&
                 c->rope_high_freq_factor == 8 && c->rope_original_max_pos == 2048 && e > 1e-2,
                 "published config: other rope_theta/rope_scaling values are read and change the logits",
                 "theta %g, llama3 %g/%g/%g/%d; logits move by %.3g", (double)c->rope_theta, (double)c->rope_factor,
                 (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_original_max_pos, e);
    } else t_result(0, "published config with other rope values", "%s", err);
    codi_model_free(m);
    mkdir("build/fmt_plain_rope", 0755);
    write_published_config("build/fmt_plain_rope", 0, 32, 1, 4, 8192);
    spit("build/fmt_plain_rope/model.safetensors", model_bytes, model_size);
    m = load("build/fmt_plain_rope", 1, 0, err, sizeof err);
    t_result(m && m->config.rope_llama3 == 0 && m->config.rope_theta == 10000, "config with \"rope_scaling\": null and no rope_theta: plain RoPE, theta 10000 (transformers' defaults)",
             "%s", m ? "" : err);
    codi_model_free(m);
    free(lg); free(lg2);
}

/* ---- 2. sharded safetensors ---- */

/* weight_map: tensor i -> shard[i]; `odd` (if not NULL) gets the raw JSON value `odd_value`. */
static void write_index(const char *dir, const st_file *f, const int *shard, const char *odd, const char *odd_value) {
    size_t cap = 256 + (size_t)f->n * 200, len, total = 0;
    char *s = malloc(cap), path[256];
    int i;
    for (i = 0; i < f->n; i++) total += f->t[i].nbytes;
    len = (size_t)snprintf(s, cap, "{\n  \"metadata\": {\"total_size\": %lu},\n  \"weight_map\": {", (unsigned long)total);
    for (i = 0; i < f->n; i++) {
        if (odd && !strcmp(f->t[i].name, odd))
            len += (size_t)snprintf(s + len, cap - len, "%s\n    \"%s\": %s", i ? "," : "", f->t[i].name, odd_value);
        else
            len += (size_t)snprintf(s + len, cap - len, "%s\n    \"%s\": \"model-0000%d-of-00002.safetensors\"", i ? "," : "", f->t[i].name, shard[i]);
    }
    len += (size_t)snprintf(s + len, cap - len, "\n  }\n}\n");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    spit(path, s, len);
    free(s);
}

/* Shards 1 and 2 of f (shard[i]), leaving out tensor `drop` (or none). */
static void write_shards(const char *dir, const st_file *f, const int *shard, const char *drop) {
    st_tensor part[128];
    char path[256];
    int k, i, n;
    for (k = 1; k <= 2; k++) {
        for (i = n = 0; i < f->n; i++) if (shard[i] == k && !(drop && !strcmp(f->t[i].name, drop))) part[n++] = f->t[i];
        snprintf(path, sizeof path, "%s/model-0000%d-of-00002.safetensors", dir, k);
        st_write(path, part, n);
    }
}

static void sharded(codi_model *mh, const float *lg_hf, const int32_t *ids, int n, size_t cfg_size, const unsigned char *cfg) {
    static const char *up3 = "model.layers.3.mlp.up_proj.weight";
    st_file f;
    int shard[128], i, n1 = 0;
    char err[256];
    codi_model *m;
    float *lg = malloc(sizeof(float) * n * V);
    if (st_read(&f, HF "/model.safetensors")) { t_result(0, "read llama_tiny_hf/model.safetensors", ""); free(lg); return; }
    for (i = 0; i < f.n; i++) {   /* embeddings + layers 0, 1 | layers 2, 3 + final norm */
        const char *nm = f.t[i].name;
        shard[i] = strstr(nm, "embed_tokens") || !strncmp(nm, "model.layers.0.", 15) || !strncmp(nm, "model.layers.1.", 15) ? 1 : 2;
        n1 += shard[i] == 1;
    }
    mkdir("build/fmt_sharded", 0755); mkdir("build/fmt_badidx", 0755);
    write_shards("build/fmt_sharded", &f, shard, NULL);
    write_index("build/fmt_sharded", &f, shard, NULL, NULL);
    spit("build/fmt_sharded/config.json", cfg, cfg_size);
    m = load("build/fmt_sharded", 1, 0, err, sizeof err);
    t_result(m != NULL && m->n_tensors == mh->n_tensors, "sharded directory (index + 2 shards) loads",
             "%d + %d tensors%s%s", n1, f.n - n1, err[0] ? ": " : "", err);
    if (m && forward_logits(m, ids, n, lg) == 0)
        t_result(!memcmp(lg, lg_hf, sizeof(float) * n * V), "sharded: logits bit-identical to the single file's", "");
    codi_model_free(m);

    /* hostile indexes, over shard 1 and a shard 2 that lacks layer 3's up_proj */
    write_shards("build/fmt_badidx", &f, shard, up3);
    spit("build/fmt_badidx/config.json", cfg, cfg_size);
    {
        static const struct { const char *what, *value, *expect; } bad[] = {
            { "index naming a missing shard file", "\"model-00003-of-00002.safetensors\"", "cannot open build/fmt_badidx/model-00003-of-00002.safetensors" },
            { "index with a shard name containing '/'", "\"../fmt_sharded/model-00001-of-00002.safetensors\"", "index.json: bad shard name for" },
            { "index with a shard name that is not a string", "5", "index.json: bad shard name for" },
            { "tensor in the index but absent from its shard", NULL, "missing tensor model.layers.3.mlp.up_proj.weight" },
        };
        for (i = 0; i < (int)(sizeof bad / sizeof *bad); i++) {
            /* the odd entry is layer 0's input_layernorm, the second in the map (after a good shard) */
            write_index("build/fmt_badidx", &f, shard, bad[i].value ? "model.layers.0.input_layernorm.weight" : NULL, bad[i].value);
            m = load("build/fmt_badidx", 1, 0, err, sizeof err);
            t_result(!m && strstr(err, bad[i].expect), bad[i].what, "\"%s\"", err);
            codi_model_free(m);
        }
    }
    {
        static const char trunc[] = "{\"metadata\": {\"total_size\": 4724736}, \"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",";
        spit("build/fmt_badidx/model.safetensors.index.json", trunc, strlen(trunc));
        m = load("build/fmt_badidx", 1, 0, err, sizeof err);
        t_result(!m && strstr(err, "model.safetensors.index.json: JSON error"), "index that is not JSON (truncated)", "\"%s\"", err);
        codi_model_free(m);
    }
    st_free(&f);
    free(lg);
}

/* ---- 3. f16 and mixed dtypes ---- */

/* f32 -> f16 bits, round to nearest even, subnormals and overflow to inf; *inexact when the value changes. */
static uint16_t f32_to_f16(float x, int *inexact) {
    uint32_t u, a, sign, m, q, rem, half, h;
    int e, E, shift;
    memcpy(&u, &x, 4);
    sign = (u >> 16) & 0x8000u; a = u & 0x7fffffffu;
    *inexact = 0;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));   /* inf, NaN */
    e = (a >> 23) ? (int)(a >> 23) - 127 : -126;          /* x = m * 2^(e - 23), m < 2^24 */
    m = (a & 0x7fffffu) | ((a >> 23) ? 0x800000u : 0);
    if (e > 15) { *inexact = 1; return (uint16_t)(sign | 0x7c00u); }
    E = e < -14 ? -14 : e;                                /* f16 exponent; -14 with subnormals */
    shift = 13 + (E - e);                                 /* q = x in units of 2^(E - 10) */
    if (shift > 31) { *inexact = m != 0; return (uint16_t)sign; }
    q = m >> shift; rem = m & ((1u << shift) - 1); half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    *inexact = rem != 0;
    h = ((uint32_t)(E + 14) << 10) + q;                   /* q's bit 10 is the implicit 1; carries are exact */
    return (uint16_t)(sign | (h > 0x7c00u ? 0x7c00u : h));
}

static void converter_check(void) {
    static const struct { float x; int e2; uint16_t h; } c[] = {   /* x * 2^e2 -> h */
        { 1, 0, 0x3c00 }, { -2.5f, 0, 0xc100 }, { 65504, 0, 0x7bff }, { 65520, 0, 0x7c00 }, { 1, -14, 0x0400 },
        { 1023, -24, 0x03ff }, { 1, -24, 0x0001 }, { 1, -25, 0x0000 }, { 3, -25, 0x0002 }, { 5, -25, 0x0002 },
        { 2047, -25, 0x0400 }, { 2049, -11, 0x3c00 }, { 2051, -11, 0x3c02 }, { -0.0f, 0, 0x8000 }, { 1, -30, 0x0000 },
    };
    int i, bad = -1, inexact, exact_ok = 1;
    for (i = 0; i < (int)(sizeof c / sizeof *c); i++) {
        float x = ldexpf(c[i].x, c[i].e2);
        uint16_t h = f32_to_f16(x, &inexact);
        if (h != c[i].h && bad < 0) bad = i;
        if (!inexact && codi__f16_to_f32(h) != x) exact_ok = 0;   /* and the header decodes it back */
    }
    t_result(bad < 0 && exact_ok, "f32 -> f16 converter on normals, subnormals, ties and overflow; header decodes them",
             bad < 0 ? "%d values" : "value %d wrong", bad < 0 ? (int)(sizeof c / sizeof *c) : bad);
}

/* Copy of f with the BF16 tensors picked by `every` (1: all, 2: every second) as F16. */
static int write_f16(const char *path, const st_file *f, int every, long *inexact, long *total, int counts[3], unsigned char **bufs) {
    st_tensor out[128];
    int i, nb = 0, rc;
    *inexact = *total = 0; counts[0] = counts[1] = counts[2] = 0;
    for (i = 0; i < f->n; i++) {
        out[i] = f->t[i]; bufs[i] = NULL;
        if (!strcmp(f->t[i].dtype, "BF16") && nb++ % every == 0) {
            const unsigned char *s = (const unsigned char *)f->t[i].data;
            size_t j, cnt = f->t[i].nbytes / 2;
            unsigned char *d = bufs[i] = malloc(f->t[i].nbytes);
            for (j = 0; j < cnt; j++) {
                int ix;
                uint16_t h = f32_to_f16(codi__bf16_to_f32((uint16_t)(s[2 * j] | s[2 * j + 1] << 8)), &ix);
                d[2 * j] = (unsigned char)h; d[2 * j + 1] = (unsigned char)(h >> 8);
                *inexact += ix;
            }
            *total += (long)cnt;
            out[i].dtype = "F16"; out[i].data = d;
        }
        counts[!strcmp(out[i].dtype, "F32") ? 0 : !strcmp(out[i].dtype, "BF16") ? 1 : 2]++;
    }
    rc = st_write(path, out, f->n);
    return rc;
}

static void f16_checkpoints(t_golden *g, const int32_t *ids, int T) {
    static const char *files[2] = { "build/fmt_f16.safetensors", "build/fmt_mixed.safetensors" };
    static const char *gold[2] = { "bf16merged.answer_logits", "f32.answer_logits" };   /* by exact */
    st_file f;
    unsigned char *bufs[128];
    float *orig[2], *lg = malloc(sizeof(float) * 16 * V);
    char err[256], name[160];
    int k, exact, i;
    converter_check();
    if (st_read(&f, DATA "codi_tiny.safetensors")) { t_result(0, "read codi_tiny.safetensors", ""); free(lg); return; }
    for (exact = 0; exact < 2; exact++) {   /* the BF16 original, for comparison */
        codi_model *m = load(DATA "codi_tiny.safetensors", exact, 32, err, sizeof err);
        orig[exact] = malloc(sizeof(float) * 16 * V);
        if (!m || codi_answer(m, ids, T, orig[exact])) memset(orig[exact], 0, sizeof(float) * 16 * V);
        codi_model_free(m);
    }
    for (k = 0; k < 2; k++) {
        long inexact, total;
        int counts[3];
        write_f16(files[k], &f, k ? 2 : 1, &inexact, &total, counts, bufs);
        printf("# %s: %d F32, %d BF16, %d F16 tensors; %ld of %ld converted values not exact in f16\n",
               files[k], counts[0], counts[1], counts[2], inexact, total);
        for (i = 0; i < f.n; i++) free(bufs[i]);
        for (exact = 1; exact >= 0; exact--) {
            double tol = exact ? 1e-3 : 5e-3, e, eo;
            codi_model *m = load(files[k], exact, 32, err, sizeof err);
            snprintf(name, sizeof name, "%s (%s) answer_logits vs golden %s", k ? "mixed BF16/F16/F32" : "F16 base weights",
                     exact ? "exact" : "bf16 merged", gold[exact]);
            if (!m) { t_result(0, name, "load: %s", err); continue; }
            if (codi_answer(m, ids, T, lg) == 0) {
                e = max_diff(lg, t_gf(g, gold[exact], NULL), 16, 514);
                eo = max_diff(lg, orig[exact], 16, V);
                t_result(e <= tol, name, "max |diff| %.3g (tol %.0e); %.3g from the BF16 original", e, tol, eo);
            } else t_result(0, name, "run failed");
            codi_model_free(m);
        }
    }
    st_free(&f);
    free(orig[0]); free(orig[1]); free(lg);
}

/* ---- 4. unknown dtypes ---- */

static void unknown_dtypes(const int32_t *ids, int T) {
    static const double f64[6] = { 1, 2, 3, 4, 5, 6 };
    static const int64_t i64[1] = { 42 };
    static const unsigned char f8[4] = { 1, 2, 3, 4 };
    st_file f;
    st_tensor out[131];
    double norm64[256];
    float *lg = malloc(sizeof(float) * 16 * V), *ref = malloc(sizeof(float) * 16 * V);
    char err[256];
    codi_model *m;
    int i, n, found = 0;
    if (st_read(&f, DATA "codi_tiny.safetensors")) { t_result(0, "read codi_tiny.safetensors", ""); free(lg); free(ref); return; }
    for (i = 0; i < f.n; i++) out[i] = f.t[i];
    n = f.n;
    out[n].name = "extra.weight"; out[n].dtype = "F64"; out[n].ndim = 2; out[n].shape[0] = 2; out[n].shape[1] = 3; out[n].data = f64; out[n++].nbytes = sizeof f64;
    out[n].name = "extra.step"; out[n].dtype = "I64"; out[n].ndim = 1; out[n].shape[0] = 1; out[n].data = i64; out[n++].nbytes = sizeof i64;
    out[n].name = "extra.scale"; out[n].dtype = "F8_E4M3"; out[n].ndim = 1; out[n].shape[0] = 4; out[n].data = f8; out[n++].nbytes = sizeof f8;
    st_write("build/fmt_extra.safetensors", out, n);
    m = load("build/fmt_extra.safetensors", 1, 32, err, sizeof err);
    if (m) {
        for (i = 0; i < m->n_tensors; i++)
            if (!strncmp(m->tensors[i].name, "extra.", 6)) found += m->tensors[i].dtype == -1;
        t_result(found == 3 && m->n_tensors == f.n + 3, "unused F64, I64 and F8_E4M3 tensors: the load succeeds, listed with dtype -1",
                 "%d of %d tensors listed with dtype -1", found, m->n_tensors);
        {
            codi_model *mo = load(DATA "codi_tiny.safetensors", 1, 32, err, sizeof err);
            if (mo && codi_answer(m, ids, T, lg) == 0 && codi_answer(mo, ids, T, ref) == 0)
                t_result(!memcmp(lg, ref, sizeof(float) * 16 * V), "unused unknown-dtype tensors change nothing (answer logits bit-identical)", "");
            else t_result(0, "run with extra tensors", "%s", err);
            codi_model_free(mo);
        }
        codi_model_free(m);
    } else t_result(0, "unused F64, I64 and F8_E4M3 tensors: the load succeeds", "\"%s\"", err);

    /* the final norm as F64 (right byte count): the model needs it, so the load fails naming the dtype */
    for (i = 0; i < f.n; i++)
        if (!strcmp(f.t[i].name, "codi.base_model.model.model.norm.weight")) {
            const unsigned char *s = (const unsigned char *)f.t[i].data;
            int j;
            for (j = 0; j < 256; j++) norm64[j] = codi__bf16_to_f32((uint16_t)(s[2 * j] | s[2 * j + 1] << 8));
            out[i].dtype = "F64"; out[i].data = norm64; out[i].nbytes = sizeof norm64;
        }
    st_write("build/fmt_f64_norm.safetensors", out, f.n);
    m = load("build/fmt_f64_norm.safetensors", 1, 32, err, sizeof err);
    t_result(!m && strstr(err, "model.norm.weight") && strstr(err, "dtype F64"), "needed tensor (final norm) with dtype F64 fails naming the dtype", "\"%s\"", err);
    codi_model_free(m);
    st_free(&f);
    free(lg); free(ref);
}

int main(void) {
    t_golden g, gl;
    codi_model *mh;
    const int32_t *pid, *ids;
    size_t n, T, model_size, cfg_size;
    unsigned char *model_bytes, *cfg;
    float *lg;
    char err[256];
    if (t_golden_open(&g, DATA "golden_tiny.safetensors") || t_golden_open(&gl, DATA "golden_llama_tiny_f32.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    pid = t_gi(&gl, "prompt_ids", &n);
    model_bytes = t_slurp(HF "/model.safetensors", &model_size);
    cfg = t_slurp(HF "/config.json", &cfg_size);
    mh = load(HF, 1, 0, err, sizeof err);
    lg = malloc(sizeof(float) * n * V);
    if (!mh || !model_bytes || !cfg || forward_logits(mh, pid, (int)n, lg)) { t_result(0, "load and run llama_tiny_hf", "%s", err); return t_summary(); }

    published_config(mh, lg, pid, (int)n, t_gf(&gl, "logits", NULL), model_size, model_bytes);
    sharded(mh, lg, pid, (int)n, cfg_size, cfg);
    f16_checkpoints(&g, ids, (int)T);
    unknown_dtypes(ids, (int)T);

    codi_model_free(mh);
    free(lg); free(model_bytes); free(cfg);
    t_golden_close(&g); t_golden_close(&gl);
    return t_summary();
}
