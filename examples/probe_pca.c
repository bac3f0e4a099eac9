/* Probes and PCA over CODI's latent chain, in one sitting.

   CODI "thinks" in 6 latent steps: the final-norm hidden state h_k at latent step k is projected
   (prj) into the next input embedding. Do the steps carry structure a linear method can see?
   This example
     1. runs codi-nano on 200 arithmetic questions and keeps h_1..h_6 of each (a hook),
     2. fits a PCA over those 1,200 vectors and prints how much variance each component explains
        and the mean position of every latent step along PC1 and PC2,
     3. reads PC1 through the unembedding (the lens over a component: which tokens moving along
        +PC1 and -PC1 promotes),
     4. trains a logistic-regression probe for "is this an odd latent step?" on 160 questions and
        scores it on the other 40 (accuracy and AUC with 95% intervals).
   The command-line tools do the same on recorded datasets: `codi pca`, `codi probe train`.

   Build and run from the repository root:
       cc -O2 examples/probe_pca.c -lm -o build/probe_pca && build/probe_pca */
#include <stdio.h>
#include <stdlib.h>
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

#define N_QUESTIONS 200
#define N_LATENT 6

/* The hook: copies the final-norm hidden state of each latent step into rows[step - 1]. */
typedef struct { float *rows; int dim; } capture;

static int capture_final(void *user, const codi_hook_info *info, float *data) {
    capture *c = (capture *)user;
    if (info->point == CODI_HOOK_FINAL && info->phase == CODI_PHASE_LATENT && info->step >= 1 && info->step <= N_LATENT)
        memcpy(c->rows + (size_t)(info->step - 1) * c->dim, data, (size_t)c->dim * sizeof(float));
    return 0;
}

/* The question text of one JSONL line ({"question": "...", ...}), unescaped enough for these files. */
static int question_of(const char *line, char *out, size_t cap) {
    const char *p = strstr(line, "\"question\": \"");
    size_t n = 0;
    if (!p) return -1;
    for (p += 13; *p && *p != '"' && n + 1 < cap; p++) out[n++] = *p == '\\' ? *++p : *p;
    out[n] = 0;
    return 0;
}

int main(void) {
    char err[256], line[2048], question[1024], tok[64];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err);
    codi_tokenizer *t = m ? codi_tokenizer_load("models/codi-nano", err, sizeof err) : NULL;
    FILE *qf = fopen("models/codi-nano/test.jsonl", "r");
    if (!t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err) || !qf) { fprintf(stderr, "%s\n", qf ? err : "no test.jsonl"); return 1; }
    int D = m->config.dim, V = m->config.vocab, n_rows = N_QUESTIONS * N_LATENT, q, k, i;
    float *x = (float *)malloc((size_t)n_rows * D * sizeof(float));   /* [question, step, D] */
    int32_t *odd = (int32_t *)malloc((size_t)n_rows * sizeof(int32_t));   /* label: step is odd */

    /* 1. Run the questions; the hook fills x with h_1..h_6 of each. */
    codi_state *s = codi_state_new(m, 512, 1);
    codi_run_opts ro = codi_run_opts_default(m);
    ro.max_answer = 16;
    capture cap = { NULL, D };
    codi_state_add_hook(s, capture_final, &cap);
    for (q = 0; q < N_QUESTIONS && fgets(line, sizeof line, qf); q++) {
        int32_t ids[512];
        codi_run_result r;
        int n = question_of(line, question, sizeof question) ? -1 : codi_prompt_from_text(m, t, question, 0, ids, 400);
        cap.rows = x + (size_t)q * N_LATENT * D;
        if (n < 0 || codi_run(m, s, ids, n, &ro, &r)) { fprintf(stderr, "question %d: %s\n", q, s->error); return 1; }
        for (k = 1; k <= N_LATENT; k++) odd[q * N_LATENT + k - 1] = k % 2;
    }
    fclose(qf);
    if (q < N_QUESTIONS) { fprintf(stderr, "test.jsonl has only %d questions\n", q); return 1; }

    /* 2. PCA: rows stream into an accumulator (double sums), then one eigen-decomposition. */
    codi_pca_acc *acc = codi_pca_acc_new(D, 1, err, sizeof err);
    codi_pca_acc_add(acc, x, n_rows, err, sizeof err);
    codi_pca *pca = codi_pca_fit(acc, 4, err, sizeof err);
    if (!pca) { fprintf(stderr, "%s\n", err); return 1; }
    printf("PCA of h_1..h_6 over %d questions (%d rows, D = %d)\n", N_QUESTIONS, n_rows, D);
    for (i = 0; i < 4; i++) printf("  PC%d explains %5.1f%% of the variance\n", i + 1, 100 * pca->explained[i]);
    float *proj = (float *)malloc((size_t)n_rows * 4 * sizeof(float));
    codi_pca_project(pca, x, n_rows, proj);
    printf("mean projection by latent step:\n  step    PC1     PC2\n");
    for (k = 0; k < N_LATENT; k++) {
        double p1 = 0, p2 = 0;
        for (q = 0; q < N_QUESTIONS; q++) { p1 += proj[(q * N_LATENT + k) * 4]; p2 += proj[(q * N_LATENT + k) * 4 + 1]; }
        printf("  %d    %6.2f  %6.2f\n", k + 1, p1 / N_QUESTIONS, p2 / N_QUESTIONS);
    }

    /* 3. The lens over PC1. h is already final-normed, so the lens is lm_head alone (normed = 1)
          and moving 3 standard deviations along PC1 changes the logits by 3 sd * lm_head(PC1). */
    float *delta = (float *)malloc((size_t)V * sizeof(float));
    int sign;
    for (sign = 1; sign >= -1; sign -= 2) {
        codi_lens_direction(m, pca->mean, pca->components, (float)(sign * 3 * sqrt(pca->variance[0])), 1, delta);
        printf("lens over %sPC1, tokens promoted most:", sign > 0 ? "+" : "-");
        for (i = 0; i < 6; i++) {                         /* the 6 largest entries of delta */
            int best = 0, j;
            for (j = 1; j < V; j++) if (delta[j] > delta[best]) best = j;
            codi_token_text(t, best, tok, sizeof tok);
            printf(" '%s'", tok);
            delta[best] = -INFINITY;
        }
        printf("\n");
    }

    /* 4. A probe for odd vs even steps: train on the first 160 questions, score the last 40. */
    int n_train = 160 * N_LATENT, n_test = n_rows - n_train;
    codi_probe_opts po = codi_probe_opts_default();          /* L2 0.01, standardised inputs */
    codi_probe *probe = codi_probe_train(x, odd, n_train, D, 2, &po, err, sizeof err);
    if (!probe) { fprintf(stderr, "%s\n", err); return 1; }
    float *proba = (float *)malloc((size_t)n_test * 2 * sizeof(float));
    codi_probe_predict_proba(probe, x + (size_t)n_train * D, n_test, proba);
    codi_probe_metrics met;
    codi_probe_metrics_of(proba, odd + n_train, n_test, 2, &met, err, sizeof err);
    printf("odd-step probe (%d L-BFGS iterations): held-out accuracy %.3f [%.3f, %.3f], AUC %.3f [%.3f, %.3f] on %d rows\n",
           probe->iterations, met.accuracy, met.acc_lo, met.acc_hi, met.auc, met.auc_lo, met.auc_hi, met.n);

    free(x); free(odd); free(proj); free(delta); free(proba);
    codi_probe_free(probe); codi_pca_free(pca); codi_pca_acc_free(acc);
    codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);
    return 0;
}
