/* steer_latent.c - embedding steering of a CODI latent, against a random control (the Latent
   Reasoning Sprint's experiment, on the small codi-nano model).
     1. mean activations: over some questions, the final-normed last-layer hidden state at each latent
        step k (what prj turns into the next latent), accumulated by codi_means;
     2. a steering vector diff = mean[5] - mean[3], and a random direction with the same norm;
     3. answer the next questions three times: plain, with z_4 += 2 diff, with z_4 += 2 random.
   If the difference carries meaning, it should move accuracy more than the random vector does.
   Build and run from the repository root:
       cc -O2 examples/steer_latent.c -lm -o build/steer_latent && build/steer_latent 50 */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <stdlib.h>
#include <string.h>

/* One line of models/codi-nano/test.jsonl: {"question": "...", ..., "answer": N, ...}. */
static int read_question(FILE *f, char *q, size_t cap, double *gold) {
    char line[4096], *a, *b;
    if (!fgets(line, sizeof line, f) || !(a = strstr(line, "\"question\": \"")) || !(b = strchr(a + 13, '"'))) return 0;
    snprintf(q, cap, "%.*s", (int)(b - a - 13), a + 13);
    *gold = (a = strstr(line, "\"answer\": ")) ? atof(a + 10) : -1;
    return 1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 50, i, c, correct[3] = { 0, 0, 0 };
    char err[256], q[2048], text[512];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    codi_tokenizer *t;
    codi_state *s;
    codi_means means;
    float mean[6 * 256], diff[256], random[256];
    codi_steer *steer[3] = { NULL, NULL, NULL };   /* plain, difference, random */
    FILE *f = fopen("models/codi-nano/test.jsonl", "r");
    lo.exact = 1;
    if (!f || !(m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err)) ||
        !(t = codi_tokenizer_load("models/codi-nano", err, sizeof err)) || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) {
        fprintf(stderr, "%s\n", f ? err : "run from the repository root"); return 1;
    }
    s = codi_state_new(m, 512, 1);

    /* 1. mean final-normed hidden state at latent steps 1..6 over the first n questions */
    codi_means_init(&means, m, 6);
    for (i = 0; i < n; i++) {
        int32_t ids[512];
        double gold;
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result r;
        int len;
        if (!read_question(f, q, sizeof q, &gold) || (len = codi_prompt_from_text(m, t, q, 0, ids, 512)) < 0) break;
        codi_run_latents(m, s, ids, len, &ro, &r);   /* the latents are all we need here */
        codi_means_add(&means, m, s, r.prompt_len);
    }
    codi_means_get(&means, mean, NULL, NULL);

    /* 2. diff = mean[5] - mean[3] (latent steps, 1-based); a seeded random direction of the same norm */
    {
        double norm = 0, rn = 0;
        codi_rng rng;
        codi_rng_seed(&rng, 42);
        for (i = 0; i < 256; i++) { diff[i] = mean[4 * 256 + i] - mean[2 * 256 + i]; norm += diff[i] * diff[i]; }
        for (i = 0; i < 256; i++) { random[i] = (float)codi_rng_normal(&rng); rn += random[i] * random[i]; }
        for (i = 0; i < 256; i++) random[i] = (float)(random[i] * sqrt(norm / rn));
    }
    /* an intervention set each: add 2 x vector to z_4 (the latent input of step 4) before it is fed */
    for (c = 1; c < 3; c++) {
        codi_edit e = codi_edit_default();
        e.at = CODI_AT_LATENT_INPUT; e.phase = CODI_PHASE_LATENT; e.step = 4; e.alpha = 2.0f;
        e.vector = c == 1 ? diff : random; e.vector_len = 256;
        steer[c] = codi_steer_new(m);
        if (codi_steer_add(steer[c], &e, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    }

    /* 3. the next n questions (the file goes on where the means stopped) under each condition */
    for (i = 0; i < n; i++) {
        int32_t ids[512];
        double gold, pred;
        int len;
        if (!read_question(f, q, sizeof q, &gold) || (len = codi_prompt_from_text(m, t, q, 0, ids, 512)) < 0) break;
        for (c = 0; c < 3; c++) {
            codi_run_opts ro = codi_run_opts_default(m);
            codi_run_result r;
            ro.max_answer = 16;
            codi_state_clear_hooks(s);
            if (steer[c]) codi_steer_install(steer[c], s, &ro);
            if (codi_run(m, s, ids, len, &ro, &r)) { fprintf(stderr, "%s\n", s->error); return 1; }
            codi_decode(t, r.answer, r.n_answer, 1, text, sizeof text);
            correct[c] += codi_extract_answer(text, &pred) && pred == gold;
        }
    }
    printf("%d questions: plain %d correct, z_4 + 2 diff(3,5): %d, z_4 + 2 random (same norm): %d\n", i, correct[0], correct[1], correct[2]);
    for (c = 0; c < 3; c++) codi_steer_free(steer[c]);
    codi_means_free(&means);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    fclose(f);
    return 0;
}
