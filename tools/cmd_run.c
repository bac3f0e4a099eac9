/* codi run: one question with its answer, decoded latents and a logit-lens table, or a questions
   file with one JSON result per question and the accuracy. */

/* Top-k ids of a logits row, best first, and the top-1 probability. */
static void run_topk(const float *lg, int V, int k, int *best, float *prob1) {
    int i, j;
    double sum = 0;
    for (j = 0; j < k; j++) best[j] = -1;
    for (i = 0; i < V; i++)
        for (j = 0; j < k; j++)
            if (best[j] < 0 || lg[i] > lg[best[j]]) { memmove(best + j + 1, best + j, sizeof(int) * (size_t)(k - j - 1)); best[j] = i; break; }
    for (i = 0; i < V; i++) sum += exp((double)lg[i] - lg[best[0]]);
    *prob1 = (float)(1.0 / sum);
}

/* The decoded latents (lm_head at bot and each latent, top 5) and the logit lens at every layer. */
static void run_print_lens_table(const codi_config *c, const codi_tokenizer *t, const float *final_logits, const float *lens, int N) {
    int k, l, j, L = c->n_layers, V = c->vocab, best[5];
    float p;
    char cell[96], lab[16];
    printf("\ndecoded latents: top-5 tokens of lm_head(final norm(h)) at bot and each latent\n");
    for (k = 0; k <= N; k++) {
        snprintf(lab, sizeof lab, k ? "latent%d" : "bot", k);
        printf("  %-9s", lab);
        run_topk(final_logits + (size_t)k * V, V, 5, best, &p);
        for (j = 0; j < 5; j++) { cli_token_cell(t, best[j], cell, sizeof cell, 12); printf(" "); cli_print_padded(cell, 15); }
        printf("\n");
    }
    printf("\nlogit lens: top-1 token (probability) of lm_head(final norm(residual)) entering each layer\n  %-9s", "pos");
    for (l = 0; l <= L; l++) { snprintf(lab, sizeof lab, l < L ? "L%d" : "out", l); printf(" %-16s", lab); }
    printf("\n");
    for (k = 0; k <= N; k++) {
        snprintf(lab, sizeof lab, k ? "latent%d" : "bot", k);
        printf("  %-9s", lab);
        for (l = 0; l <= L; l++) {
            char both[128];
            run_topk(lens + ((size_t)k * (L + 1) + l) * V, V, 1, best, &p);
            cli_token_cell(t, best[0], cell, sizeof cell, 8);
            snprintf(both, sizeof both, "%s %.2f", cell, p);
            printf(" "); cli_print_padded(both, 16);
        }
        printf("\n");
    }
}

typedef struct { const codi_tokenizer *t; codi_utf8_state st; } run_stream;

static void run_print_token(void *user, int32_t id) {   /* codi_run_opts.on_token: the answer as it comes */
    run_stream *sc = (run_stream *)user;
    char buf[1024];
    if (codi_decode_stream(sc->t, &sc->st, id, 1, buf, sizeof buf) > 0) { fputs(buf, stdout); fflush(stdout); }
}

/* One question: streamed answer, answer ids, decoded latents and the lens table. */
/* A steering spec's intervention set for m (NULL path: none); *bad = 1 after a message when it fails. */
static codi_steer *run_load_steer(const codi_model *m, const char *path, int *bad) {
    char err[512];
    codi_steer *st = path ? codi_steer_load(m, path, err, sizeof err) : NULL;
    *bad = path && !st;
    if (*bad) fprintf(stderr, "codi: %s\n", err);
    return st;
}

static int run_one(cli_model_args *ma, const cli_prompt_args *pa, int steps, const char *steer_path) {
    codi_model *m = cli_load_model(ma);
    codi_steer *steer = NULL;
    codi_tokenizer *tk = NULL;
    const codi_config *c;
    codi_state *s = NULL;
    codi_run_opts ro;
    codi_run_result rr;
    run_stream sc;
    int32_t ids[4096];
    int n, N = pa->latents, L, V, k, l, rc = 1, bad;
    float *lf = NULL, *ll = NULL;
    if (!m) return 1;
    if (!(steer = run_load_steer(m, steer_path, &bad)) && bad) { codi_model_free(m); return 1; }
    if (!(tk = cli_load_tokenizer(ma, m, pa->question == NULL)) && (pa->question || ma->tokenizer)) { codi_model_free(m); return 1; }
    c = &m->config; L = c->n_layers; V = c->vocab;
    if ((n = cli_prompt_ids(pa, m, tk, ids, 4096)) <= 0) { rc = 2; goto done; }
    s = codi_state_new(m, n + N + steps + 2, ma->threads);
    lf = malloc(sizeof(float) * (N + 1) * V); ll = malloc(sizeof(float) * (N + 1) * (L + 1) * V);
    if (!s || !lf || !ll) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    ro = codi_run_opts_default(m);
    ro.n_latent = N; ro.max_answer = steps; ro.latent_logits = lf;
    if (steer && codi_steer_install(steer, s, &ro)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    if (tk) {
        char q[16384];
        codi_decode(tk, ids, n, 0, q, sizeof q);
        printf("prompt (%d tokens): %s\nanswer: ", n, q);
        memset(&sc, 0, sizeof sc); sc.t = tk;
        ro.on_token = run_print_token; ro.on_token_user = &sc;
        fflush(stdout);
    }
    if (codi_run(m, s, ids, n, &ro, &rr)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (k = 0; k <= N; k++)
        for (l = 0; l <= L; l++) codi_lens_at(m, s, l, n - 1 + k, ll + ((size_t)k * (L + 1) + l) * V);
    if (tk) {
        char text[8192];
        double num;
        run_print_token(&sc, -1);
        codi_decode(tk, rr.answer, rr.n_answer, 1, text, sizeof text);
        if (codi_extract_answer(text, &num)) printf("\nanswer number: %g", num);
        printf("\n");
    }
    printf("answer ids:");
    for (k = 0; k < rr.n_answer; k++) printf(" %d", rr.answer[k]);
    printf("\n");
    run_print_lens_table(c, tk, lf, ll, N);
    rc = 0;
done:
    free(lf); free(ll);
    codi_state_free(s);
    codi_steer_free(steer);
    codi_tokenizer_free(tk);
    codi_model_free(m);
    return rc;
}

typedef struct {
    const codi_model *m; const codi_tokenizer *t; codi_state *s; const codi_steer *steer;
    cli_prompt_args pa; int steps, threads, n, correct, failed;
    cli_progress *progress;
} run_file_ctx;

/* One line of --questions: run it, print its JSON result line. */
static int run_question(void *user, const cli_question *q) {
    run_file_ctx *rc = (run_file_ctx *)user;
    codi_run_opts ro = codi_run_opts_default(rc->m);
    codi_run_result rr;
    cli_prompt_args pa = rc->pa;
    int32_t ids[4096];
    int n, has_pred;
    double pred = 0;
    char text[8192];
    pa.question = q->question;
    if ((n = cli_prompt_ids(&pa, rc->m, rc->t, ids, 4096)) < 0) { rc->failed++; return 0; }
    if (n + pa.latents + rc->steps + 2 > rc->s->max_pos) {
        codi_state_free(rc->s);
        if (!(rc->s = codi_state_new(rc->m, 2 * (n + pa.latents + rc->steps + 2), rc->threads))) { fprintf(stderr, "codi: out of memory\n"); return -1; }
    }
    ro.n_latent = pa.latents; ro.max_answer = rc->steps;
    codi_state_clear_hooks(rc->s);
    if ((rc->steer && codi_steer_install(rc->steer, rc->s, &ro)) || codi_run(rc->m, rc->s, ids, n, &ro, &rr)) { fprintf(stderr, "codi: question %d (line %d): %s\n", q->index, q->line, rc->s->error); rc->failed++; return 0; }
    codi_decode(rc->t, rr.answer, rr.n_answer, 1, text, sizeof text);
    has_pred = codi_extract_answer(text, &pred);
    rc->n++;
    rc->correct += q->has_gold && has_pred && pred == q->gold;
    printf("{\"index\": %d, \"line\": %d, \"answer\": ", q->index, q->line);
    cli_json_string(stdout, text);
    if (has_pred) printf(", \"prediction\": %.17g", pred); else printf(", \"prediction\": null");
    if (q->has_gold) printf(", \"gold\": %.17g, \"correct\": %s}\n", q->gold, has_pred && pred == q->gold ? "true" : "false");
    else printf(", \"gold\": null, \"correct\": null}\n");
    fflush(stdout);
    cli_progress_update(rc->progress, rc->n + rc->failed);
    return 0;
}

static int run_file(cli_model_args *ma, const cli_prompt_args *pa, const char *path, int limit, int steps, const char *steer_path) {
    run_file_ctx rc;
    codi_steer *steer;
    int rv, n_bad, bad;
    if (pa->ids) { fprintf(stderr, "codi run: give --questions or --ids, not both\n"); return 2; }
    memset(&rc, 0, sizeof rc);
    rc.pa = *pa; rc.steps = steps; rc.threads = ma->threads;
    if (!(rc.m = cli_load_model(ma))) return 1;
    if (!(rc.steer = steer = run_load_steer(rc.m, steer_path, &bad)) && bad) { codi_model_free((codi_model *)rc.m); return 1; }
    if (!(rc.t = cli_load_tokenizer(ma, rc.m, 0)) || !(rc.s = codi_state_new(rc.m, 1024, ma->threads))) {
        if (rc.t) fprintf(stderr, "codi: out of memory\n");
        codi_steer_free(steer); codi_tokenizer_free((codi_tokenizer *)rc.t); codi_model_free((codi_model *)rc.m); return 1;
    }
    rc.progress = cli_progress_start("questions", cli_count_lines(path, limit), 0);
    rv = cli_for_each_question(path, limit, 0, 0, run_question, &rc, &n_bad);
    if (rv == 0) cli_progress_update(rc.progress, rc.progress ? rc.progress->total : 0);   /* every line handled */
    cli_progress_end(rc.progress);
    if (rv == 0)
        printf("{\"questions\": %d, \"correct\": %d, \"accuracy\": %.4f, \"latents\": %d, \"failed\": %d, \"bad_lines\": %d}\n",
               rc.n, rc.correct, rc.n ? (double)rc.correct / rc.n : 0.0, pa->latents, rc.failed, n_bad);
    codi_state_free(rc.s);
    codi_steer_free(steer);
    codi_tokenizer_free((codi_tokenizer *)rc.t);
    codi_model_free((codi_model *)rc.m);
    return rv || rc.failed || n_bad ? 1 : 0;
}

static int run_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    const char *questions = NULL, *steer_path = NULL;
    int steps = 256, limit = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma), CLI_PROMPT_OPTS(&pa),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE", "JSONL questions ({\"question\", \"answer\"} lines, GSM8K's format)" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "only the first N questions of --questions (0: all)" },
        CLI_MAX_ANSWER_OPT(&steps, 1, 256),
        { "--answer-steps", CLI_INT, &steps, 1, 1024, NULL, NULL },
        { "--steer", CLI_STR, &steer_path, 0, 0, "SPEC.json", "run under a steering spec (codi_lens.h >>steer); compare conditions with codi eval" },
        CLI_END
    };
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, &pa)) return 2;
    if (questions && pa.question) { fprintf(stderr, "codi run: give --questions or --question, not both\n"); return 2; }
    if (questions) return run_file(&ma, &pa, questions, limit, steps, steer_path);
    if (limit) { fprintf(stderr, "codi run: --limit applies to --questions only\n"); return 2; }
    return run_one(&ma, &pa, steps, steer_path);
}

static const cli_command cmd_run = {
    "run", "answer a question (text or ids) with decoded latents and a logit-lens table, or a questions file",
    "codi run --model PATH (--question TEXT | --ids 1,2,3 | --questions FILE.jsonl) [options]",
    "One question: prints the prompt, the answer as it is generated, the answer number, the decoded latents\n"
    "(top-5 tokens of lm_head at bot and each latent) and the logit lens at every layer.\n"
    "A questions file: one JSON line per question ({\"index\", \"answer\", \"prediction\", \"gold\", \"correct\"};\n"
    "null where absent), then a line with the accuracy; progress goes to stderr. Exit status 1 when a\n"
    "question could not run or a line was malformed (each is reported with its line number).\n\n"
    "Examples:\n"
    "  codi run --model models/codi-nano/codi_nano.bin --question \"Zoe is 3. Sam is 9 years older. How old is Sam?\"\n"
    "  codi run --model models/codi-nano --questions models/codi-nano/test.jsonl --limit 50\n"
    "  codi run --model models/codi-nano --question \"Tom has 3 bags of 4 apples. How many?\" --steer tests/data/steer/s1_z_add.json",
    run_run
};
