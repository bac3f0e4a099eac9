/* examples/lens.c - the logit lens over CODI's latent chain, in one page.
   Run a question, then read the residual stream entering every layer at bot and at each of
   the 6 latent positions through lm_head(final_norm(h)) and print the most likely token.
     make build/lens_example && build/lens_example [models/codi-nano/codi_nano.bin "question"]
   (codi lens does the same with tuned lenses, JSON and SVG output.) */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/codi-nano/codi_nano.bin";
    const char *question = argc > 2 ? argv[2] : "Zoe is 3 years old. Sam is 9 years older than Zoe. Max is twice as old as Sam. How old is Max?";
    char err[256], text[256];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = codi_load(path, &lo, err, sizeof err);
    codi_tokenizer *t = m ? codi_tokenizer_load("models/codi-nano/tokenizer.json", err, sizeof err) : NULL;
    codi_state *s;
    codi_run_opts ro;
    codi_run_result r;
    int32_t ids[512], top;
    float *logits, p;
    int n, k, l;
    if (!t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    n = codi_prompt_from_text(m, t, question, 0, ids, 512);           /* BOS question bot */
    s = codi_state_new(m, n + 6 + 64, 1);
    logits = (float *)malloc(sizeof(float) * (size_t)m->config.vocab);
    ro = codi_run_opts_default(m);                                    /* 6 latent steps, greedy answer */
    ro.max_answer = 64;
    if (n < 0 || !s || !logits || codi_run(m, s, ids, n, &ro, &r)) { fprintf(stderr, "run failed\n"); return 1; }
    codi_decode(t, r.answer, r.n_answer, 1, text, sizeof text);
    printf("answer: %s\n\nlayer", text);
    for (k = 0; k <= 6; k++) {
        snprintf(text, sizeof text, k ? "latent %d" : "bot", k);
        printf("   %-12s", text);
    }
    printf("\n");
    for (l = m->config.n_layers; l >= 0; l--) {                      /* residual index L = the model's own output */
        printf("%5d", l);
        for (k = 0; k <= 6; k++) {
            codi_lens_logits(m, codi_state_resid(s, l, n - 1 + k), logits);   /* bot is at n-1, latent k at n-1+k */
            codi_top_k(logits, m->config.vocab, 1, &top, &p);
            codi_token_text(t, top, text, 9);
            printf("   %-8s%3.0f%%", text, 100 * p);
        }
        printf("\n");
    }
    free(logits); codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    return 0;
}
