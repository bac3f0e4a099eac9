/* random_codi: writes a CODI checkpoint of Llama 3.2 1B's shape with deterministic random
   weights, as .safetensors with CODI's key names (bf16 base, f32 LoRA r 128 and prj), for
   benchmarks and stress runs.
     random_codi OUT.safetensors [--layers 16] [--dim 2048] [--ffn 8192] [--heads 32]
                 [--kv-heads 8] [--head-dim 64] [--vocab 128256] [--lora-r 128] [--seed 1]
   The embedding table gets vocab + 3 rows (pad, bot, eot), as CODI resizes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>

typedef struct { char name[128]; int bf16; int64_t rows, cols; float scale, offset; } spec;

static uint64_t rng_state;
static uint32_t rng_next(void) {            /* splitmix64, upper half */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* offset + uniform(-scale, scale) */
static float rng_uniform(float scale, float offset) { return offset + scale * ((float)rng_next() / 2147483648.0f - 1.0f); }

static uint16_t to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }

int main(int argc, char **argv) {
    int L = 16, D = 2048, F = 8192, H = 32, KVH = 8, HD = 64, V = 128256, R = 128, i, l, k, n = 0;
    unsigned long long seed = 1;
    spec *sp = (spec *)calloc(1024, sizeof(spec));
    static const char *lin[7] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" };
    char *hdr;
    size_t hlen = 0, hcap = 1 << 20, off = 0, pad;
    uint64_t hl;
    FILE *f;
    void *buf;
    if (argc < 2) { fprintf(stderr, "usage: random_codi OUT.safetensors [--layers N] [--dim D] [--ffn F] [--heads H] [--kv-heads K] [--head-dim HD] [--vocab V] [--lora-r R] [--seed S]\n"); return 2; }
    for (i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--layers")) L = v; else if (!strcmp(argv[i], "--dim")) D = v;
        else if (!strcmp(argv[i], "--ffn")) F = v; else if (!strcmp(argv[i], "--heads")) H = v;
        else if (!strcmp(argv[i], "--kv-heads")) KVH = v; else if (!strcmp(argv[i], "--head-dim")) HD = v;
        else if (!strcmp(argv[i], "--vocab")) V = v; else if (!strcmp(argv[i], "--lora-r")) R = v;
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else { fprintf(stderr, "random_codi: unknown option %s\n", argv[i]); return 2; }
    }
    if (L < 1 || L > 200 || D < 8 || F < 8 || H < 1 || KVH < 1 || HD < 2 || V < 1 || R < 1 || H % KVH) { fprintf(stderr, "random_codi: bad shape\n"); return 2; }
    rng_state = seed;
#define ADD(nm, b, r, c, sc, of) do { snprintf(sp[n].name, sizeof sp[n].name, "%s", nm); sp[n].bf16 = b; \
        sp[n].rows = r; sp[n].cols = c; sp[n].scale = sc; sp[n].offset = of; n++; } while (0)
    ADD("codi.base_model.model.model.embed_tokens.weight", 1, V + 3, D, 0.05f, 0);
    for (l = 0; l < L; l++) {
        for (k = 0; k < 7; k++) {
            int64_t out = k < 4 ? (k == 1 || k == 2 ? (int64_t)KVH * HD : k == 3 ? D : (int64_t)H * HD) : k == 6 ? D : F;
            int64_t in = k == 3 ? (int64_t)H * HD : k == 6 ? F : D;
            char nm[128];
            float sc = sqrtf(3.0f / (float)in);           /* unit-variance outputs for unit inputs */
            snprintf(nm, sizeof nm, "codi.base_model.model.model.layers.%d.%s.base_layer.weight", l, lin[k]);
            ADD(nm, 1, out, in, sc, 0);
            snprintf(nm, sizeof nm, "codi.base_model.model.model.layers.%d.%s.lora_A.default.weight", l, lin[k]);
            ADD(nm, 0, R, in, sc, 0);
            snprintf(nm, sizeof nm, "codi.base_model.model.model.layers.%d.%s.lora_B.default.weight", l, lin[k]);
            ADD(nm, 0, out, R, 0.01f, 0);
        }
        {
            char nm[128];
            snprintf(nm, sizeof nm, "codi.base_model.model.model.layers.%d.input_layernorm.weight", l);
            ADD(nm, 1, D, 0, 0.1f, 1.0f);
            snprintf(nm, sizeof nm, "codi.base_model.model.model.layers.%d.post_attention_layernorm.weight", l);
            ADD(nm, 1, D, 0, 0.1f, 1.0f);
        }
    }
    ADD("codi.base_model.model.model.norm.weight", 1, D, 0, 0.1f, 1.0f);
    ADD("prj.1.weight", 0, D, D, sqrtf(3.0f / D), 0); ADD("prj.1.bias", 0, D, 0, 0.01f, 0);
    ADD("prj.3.weight", 0, D, D, sqrtf(3.0f / D), 0); ADD("prj.3.bias", 0, D, 0, 0.01f, 0);
    ADD("prj.ln.weight", 0, D, 0, 0.1f, 1.0f); ADD("prj.ln.bias", 0, D, 0, 0.01f, 0);
#undef ADD
    hdr = (char *)malloc(hcap);
    hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++) {
        size_t bytes = (size_t)sp[i].rows * (size_t)(sp[i].cols ? sp[i].cols : 1) * (sp[i].bf16 ? 2 : 4);
        if (sp[i].cols) hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%lu,%lu]}",
                                                 sp[i].name, sp[i].bf16 ? "BF16" : "F32", (long long)sp[i].rows, (long long)sp[i].cols, (unsigned long)off, (unsigned long)(off + bytes));
        else hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%lu,%lu]}",
                                      sp[i].name, sp[i].bf16 ? "BF16" : "F32", (long long)sp[i].rows, (unsigned long)off, (unsigned long)(off + bytes));
        off += bytes;
    }
    hlen += (size_t)snprintf(hdr + hlen, hcap - hlen, "}");
    pad = (8 - hlen % 8) % 8;
    memset(hdr + hlen, ' ', pad);
    hlen += pad;
    if (!(f = fopen(argv[1], "wb"))) { fprintf(stderr, "random_codi: cannot write %s\n", argv[1]); return 1; }
    hl = hlen;
    for (i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 255), f);
    fwrite(hdr, 1, hlen, f);
    buf = malloc((size_t)4 << 20);
    for (i = 0; i < n; i++) {                     /* stream each tensor in 4 MiB pieces */
        size_t total = (size_t)sp[i].rows * (size_t)(sp[i].cols ? sp[i].cols : 1), done = 0, j;
        while (done < total) {
            size_t m = total - done < ((size_t)1 << 20) ? total - done : ((size_t)1 << 20);
            for (j = 0; j < m; j++) {
                float v = rng_uniform(sp[i].scale, sp[i].offset);
                if (sp[i].bf16) ((uint16_t *)buf)[j] = to_bf16(v); else ((float *)buf)[j] = v;
            }
            fwrite(buf, sp[i].bf16 ? 2 : 4, m, f);
            done += m;
        }
    }
    if (fclose(f) != 0) { fprintf(stderr, "random_codi: error writing %s\n", argv[1]); return 1; }
    printf("wrote %s: %d tensors, %.2f GB\n", argv[1], n, (double)(off + hlen + 8) / 1e9);
    free(buf); free(hdr); free(sp);
    return 0;
}
