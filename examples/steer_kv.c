/* steer_kv.c - KV-cache steering of CODI, written as a steering spec (the JSON format that `codi eval`
   and `codi run` read) over vectors saved as safetensors.
     1. mean post-RoPE keys and values at each latent slot over some questions (codi_means);
     2. key_diff / value_diff = mean at latent 5's slot - mean at latent 3's slot, per layer and kv
        head [L, KVH, HD], saved to build/kv_vectors.safetensors;
     3. a spec: after the 6th latent step, add -2 x (key_diff, value_diff) to the cache at latent 6's
        slot in every layer and head; the answer (eot, then greedy tokens) attends to the edited cache;
     4. the next questions with and without it; the answers that changed are printed.
   Build and run from the repository root:
       cc -O2 examples/steer_kv.c -lm -o build/steer_kv && build/steer_kv 30 */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <stdlib.h>
#include <string.h>

static int read_question(FILE *f, char *q, size_t cap, double *gold) {   /* one line of test.jsonl */
    char line[4096], *a, *b;
    if (!fgets(line, sizeof line, f) || !(a = strstr(line, "\"question\": \"")) || !(b = strchr(a + 13, '"'))) return 0;
    snprintf(q, cap, "%.*s", (int)(b - a - 13), a + 13);
    *gold = (a = strstr(line, "\"answer\": ")) ? atof(a + 10) : -1;
    return 1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 30, i, j, c, correct[2] = { 0, 0 }, changed = 0;
    char err[512], q[2048], text[2][512];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    codi_tokenizer *t;
    codi_state *s;
    codi_means means;
    codi_steer *steer;
    float *key, *value, *dk, *dv;
    int KV;
    FILE *f = fopen("models/codi-nano/test.jsonl", "r");
    lo.exact = 1;
    if (!f || !(m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err)) ||
        !(t = codi_tokenizer_load("models/codi-nano", err, sizeof err)) || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) {
        fprintf(stderr, "%s\n", f ? err : "run from the repository root"); return 1;
    }
    s = codi_state_new(m, 512, 1);
    KV = m->config.n_layers * m->config.n_kv_heads * m->config.head_dim;
    key = malloc(sizeof(float) * 6 * KV); value = malloc(sizeof(float) * 6 * KV);
    dk = malloc(sizeof(float) * KV); dv = malloc(sizeof(float) * KV);

    /* 1. mean K and V at latent slots 1..6 */
    codi_means_init(&means, m, 6);
    for (i = 0; i < n; i++) {
        int32_t ids[512];
        double gold;
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result r;
        int len;
        if (!read_question(f, q, sizeof q, &gold) || (len = codi_prompt_from_text(m, t, q, 0, ids, 512)) < 0) break;
        codi_run_latents(m, s, ids, len, &ro, &r);
        codi_means_add(&means, m, s, r.prompt_len);
    }
    codi_means_get(&means, NULL, key, value);

    /* 2. the differences, saved where the spec will find them */
    for (j = 0; j < KV; j++) { dk[j] = key[4 * KV + j] - key[2 * KV + j]; dv[j] = value[4 * KV + j] - value[2 * KV + j]; }
    {
        codi_safetensors_entry e[2];
        const char *meta[] = { "what", "mean K / V at latent 5's slot minus latent 3's (post-RoPE), [L, KVH, HD]", NULL };
        memset(e, 0, sizeof e);
        e[0].name = "key_diff"; e[0].dtype = CODI_F32; e[0].data = dk; e[0].ndim = 3;
        e[0].shape[0] = m->config.n_layers; e[0].shape[1] = m->config.n_kv_heads; e[0].shape[2] = m->config.head_dim;
        e[1] = e[0]; e[1].name = "value_diff"; e[1].data = dv;
        if (codi_write_safetensors("build/kv_vectors.safetensors", e, 2, meta, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    }

    /* 3. the spec: "step": 6 = after latent step 6, at latent 6's slot; layer and head default to all */
    {
        const char *spec = "{\"name\": \"kv_5_minus_3\", \"edits\": [{\"at\": \"kv_cache\", \"step\": 6, \"alpha\": -2,"
                           " \"key_vector\": \"kv_vectors.safetensors:key_diff\", \"value_vector\": \"kv_vectors.safetensors:value_diff\"}]}";
        if (!(steer = codi_steer_parse(m, spec, strlen(spec), "build", err, sizeof err))) { fprintf(stderr, "%s\n", err); return 1; }
    }

    /* 4. the next n questions, plain and steered */
    for (i = 0; i < n; i++) {
        int32_t ids[512];
        double gold, pred;
        int len;
        if (!read_question(f, q, sizeof q, &gold) || (len = codi_prompt_from_text(m, t, q, 0, ids, 512)) < 0) break;
        for (c = 0; c < 2; c++) {
            codi_run_opts ro = codi_run_opts_default(m);
            codi_run_result r;
            ro.max_answer = 16;
            codi_state_clear_hooks(s);
            if (c) codi_steer_install(steer, s, &ro);     /* sets ro.after_latent: the cache edit */
            if (codi_run(m, s, ids, len, &ro, &r)) { fprintf(stderr, "%s\n", s->error); return 1; }
            codi_decode(t, r.answer, r.n_answer, 1, text[c], sizeof text[c]);
            correct[c] += codi_extract_answer(text[c], &pred) && pred == gold;
        }
        if (strcmp(text[0], text[1]) && changed++ < 5) printf("  %s -> %s (gold %g)\n", text[0], text[1], gold);
    }
    printf("%d questions: plain %d correct, KV-steered %d correct, %d answers changed\n", i, correct[0], correct[1], changed);
    codi_steer_free(steer);
    codi_means_free(&means);
    free(key); free(value); free(dk); free(dv);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    fclose(f);
    return 0;
}
