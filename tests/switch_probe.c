/* Built once per build switch by tests/test_switches.sh (CODI_NO_SIMD, CODI_SCALAR, CODI_NO_TORCH,
   CODI_NO_RESEARCH, all three): the quick start's question on codi-nano, 6 latent steps and 16
   answer tokens on MODEL; prints the kernel path and the answer ids, writes the latent and answer
   logits to OUT (f32), and with REF (the full build's OUT) prints their max |diff| and exits 1
   above 1e-3; with the research half, writes a tuned lens's params.pt (or prints why not).
   Usage: switch_probe MODEL OUT [REF], or switch_probe --export MODEL OUT.safetensors
   (codi_save_merged: the model as safetensors, for the CODI_NO_TORCH build). */
#include <stdio.h>
#include <stdlib.h>
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

int main(int argc, char **argv) {
    char err[256];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    codi_tokenizer *t;
    codi_state *s;
    codi_run_opts ro;
    codi_run_result r;
    int32_t ids[512];
    float *logits;
    size_t count, i;
    int n, rc = 0;
    FILE *fp;
    if (argc < 3) { fprintf(stderr, "usage: switch_probe MODEL OUT [REF] | --export MODEL OUT.safetensors\n"); return 2; }
    if (!strcmp(argv[1], "--export")) {
        if (argc < 4 || !(m = codi_load(argv[2], &lo, err, sizeof err)) || codi_save_merged(m, argv[3], err, sizeof err)) {
            printf("export: %s\n", argc < 4 ? "--export MODEL OUT.safetensors" : err); return 1;
        }
        codi_model_free(m);
        return 0;
    }
    if (!(m = codi_load(argv[1], &lo, err, sizeof err))) { printf("load: %s\n", err); return 1; }
    t = codi_tokenizer_load("models/codi-nano", err, sizeof err);
    if (!t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { printf("tokenizer: %s\n", err); return 1; }
    n = codi_prompt_from_text(m, t, "Tom has 3 bags with 4 apples each. How many apples?", 0, ids, 512);
    s = codi_state_new(m, n + 6 + 16, 1);
    ro = codi_run_opts_default(m);
    ro.max_answer = 16; ro.stop_at_eos = 0;
    count = (size_t)(7 + 16) * m->config.vocab;
    logits = (float *)calloc(count, sizeof(float));
    ro.latent_logits = logits; ro.answer_logits = logits + (size_t)7 * m->config.vocab;
    if (n < 0 || !s || !logits || codi_run(m, s, ids, n, &ro, &r) != 0) { printf("run failed: %s\n", s ? s->error : "out of memory"); return 1; }
    printf("kernel %s\nanswer", codi_kernel_name());
    for (i = 0; i < (size_t)r.n_answer; i++) printf(" %d", (int)r.answer[i]);
    printf("\n");
    if (!(fp = fopen(argv[2], "wb")) || fwrite(logits, sizeof(float), count, fp) != count || fclose(fp)) { printf("cannot write %s\n", argv[2]); return 1; }
    if (argc > 3) {
        float *ref = (float *)calloc(count, sizeof(float));
        double e = 0;
        if (!ref || !(fp = fopen(argv[3], "rb")) || fread(ref, sizeof(float), count, fp) != count) { printf("cannot read %s\n", argv[3]); return 1; }
        fclose(fp);
        for (i = 0; i < count; i++) { double d = logits[i] > ref[i] ? logits[i] - ref[i] : ref[i] - logits[i]; if (!(d <= e)) e = d; }
        printf("max |diff| %.3g against the full build's logits (tol 1e-3)\n", e);
        rc = e <= 1e-3 ? 0 : 1;
        free(ref);
    }
#ifndef CODI_NO_RESEARCH
    {   /* a tuned lens as the tuned-lens library's directory: params.pt is a torch.save file */
        codi_tuned_lens *tl = codi_tuned_lens_new(m);
        printf("lens save_dir: %s\n", tl && codi_tuned_lens_save_dir(tl, "build/switches", "codi-nano", err, sizeof err) == 0 ? "ok" : err);
        codi_tuned_lens_free(tl);
    }
#endif
    free(logits);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    return rc;
}
