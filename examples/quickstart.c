/* The quick start of codi_lens.h: a CODI question given as text, run through 6 latent steps,
   its answer decoded to text, and one residual-stream vector read from the state.
   Build and run from the repository root:  cc -O2 examples/quickstart.c -lm && ./a.out */
#include <stdio.h>
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

int main(void) {
    char err[256], text[1024];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err);
    codi_tokenizer *t = m ? codi_tokenizer_load("models/codi-nano", err, sizeof err) : NULL;
    if (!t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    int32_t ids[512];                                 /* BOS question bot */
    int n = codi_prompt_from_text(m, t, "Tom has 3 bags with 4 apples each. How many apples?", 0, ids, 512);
    codi_state *s = codi_state_new(m, n + 6 + 64, 1);
    codi_run_opts ro = codi_run_opts_default(m);      /* 6 latent steps, greedy answer */
    ro.max_answer = 64;
    codi_run_result r;
    if (codi_run(m, s, ids, n, &ro, &r) != 0) { fprintf(stderr, "%s\n", s->error); return 1; }
    codi_decode(t, r.answer, r.n_answer, 1, text, sizeof text);
    float *h = codi_state_resid(s, 2, n);             /* residual entering layer 2 at latent 1 */
    printf("%s (h[0] = %g)\n", text, h[0]);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    return 0;
}
