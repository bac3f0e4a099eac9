/* codi-nano, the trained CODI model shipped in models/: text in, text out, against what Hugging
   Face transformers + peft printed for it (models/codi-nano/results.json: 12 questions with the
   top-5 decoded latents at bot and each of the 6 latents, and the generated answer text). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define NANO "models/codi-nano/"

/* Top-5 ids of logits [V], best first. */
static void top5(const float *lg, int V, int *best) {
    int i, j;
    for (j = 0; j < 5; j++) best[j] = -1;
    for (i = 0; i < V; i++)
        for (j = 0; j < 5; j++)
            if (best[j] < 0 || lg[i] > lg[best[j]]) { memmove(best + j + 1, best + j, sizeof(int) * (size_t)(4 - j)); best[j] = i; break; }
}

int main(void) {
    char err[256], text[4096];
    size_t len;
    char *json = codi_read_text(NANO "results.json", &len);
    codi_json *root = json ? codi_json_parse(json, len, err, sizeof err) : NULL;
    const codi_json *ex, *e;
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    codi_tokenizer *t;
    int n_q = 0, answers_same = 0, rows = 0, top1_same = 0, top5_same = 0;
    if (!root) { t_result(0, "read results.json", "%s", json ? err : "missing"); return t_summary(); }
    lo.exact = 1;
    m = codi_load(NANO "codi_nano.bin", &lo, err, sizeof err);
    t = m ? codi_tokenizer_load(NANO "tokenizer.json", err, sizeof err) : NULL;
    if (!m || !t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { t_result(0, "load codi-nano", "%s", err); return t_summary(); }
    ex = codi_json_get(root, "decoded_latent_examples");
    for (e = ex ? ex->child : NULL; e; e = e->next) {
        const codi_json *q = codi_json_get(e, "question"), *lat = codi_json_get(e, "decoded_latents_top5"), *pred = codi_json_get(e, "prediction"), *row;
        codi_state *s;
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        int32_t ids[512];
        float lg[7 * 515];
        int n = codi_prompt_from_text(m, t, q->str, 0, ids, 512), k, j;
        s = codi_state_new(m, n + 6 + 64, 1);
        ro.latent_logits = lg; ro.max_answer = 64;
        if (codi_run(m, s, ids, n, &ro, &rr)) { t_result(0, "run", "%s", s->error); codi_state_free(s); break; }
        codi_decode(t, rr.answer, rr.n_answer, 1, text, sizeof text);
        answers_same += !strcmp(text, pred->str);
        if (strcmp(text, pred->str)) printf("# question %d: got \"%s\", reference \"%s\"\n", n_q, text, pred->str);
        for (k = 0, row = lat->child; row && k < 7; k++, row = row->next) {
            const codi_json *tok = row->child;
            const float *l = lg + (size_t)k * m->config.vocab;
            int best[5], same5 = 1;
            top5(l, m->config.vocab, best);
            for (j = 0; j < 5 && tok; j++, tok = tok->next) {
                /* the reference names eot "<eot>" (codi-nano's training); a swap of near-equal logits is no difference */
                int ref = !strcmp(tok->str, "<eot>") ? m->config.eot_id : codi_token_id(t, tok->str, tok->len);
                int same = ref == best[j] || (ref >= 0 && fabsf(l[ref] - l[best[j]]) <= 0.02f);
                if (j == 0) top1_same += same;
                if (!same) printf("# question %d, position %d, rank %d: got id %d (%.4f), reference \"%s\" (%.4f)\n",
                                  n_q, k, j + 1, best[j], l[best[j]], tok->str, ref >= 0 ? l[ref] : -1.0);
                same5 &= same;
            }
            top5_same += same5;
            rows++;
        }
        codi_state_free(s);
        n_q++;
    }
    t_result(n_q == 12 && answers_same == n_q, "codi-nano: generated answer text equals Hugging Face's for the 12 example questions", "%d of %d", answers_same, n_q);
    t_result(rows == 84 && top1_same == rows, "codi-nano: top-1 decoded latent equals Hugging Face's at bot and 6 latents", "%d of %d", top1_same, rows);
    t_result(rows == 84 && top5_same == rows, "codi-nano: top-5 decoded latents in Hugging Face's order (ties within 0.02 either way)", "%d of %d", top5_same, rows);
    codi_tokenizer_free(t);
    codi_model_free(m);
    codi_json_free(root);
    free(json);
    return t_summary();
}
