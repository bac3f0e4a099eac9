/* codi trace: one CODI question with every buffer written to a .safetensors file. */

static const char *trace_join_args(int argc, char **argv, char *buf, size_t cap) {
    size_t len = 0;
    int i;
    buf[0] = 0;
    for (i = 0; i < argc && len + 1 < cap; i++) len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " " : "codi ", argv[i]);
    return buf;
}

static int trace_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    const char *out = NULL, *steer_path = NULL;
    int steps = 16, stop_at_eos = 0, force = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma), CLI_PROMPT_OPTS(&pa),
        CLI_MAX_ANSWER_OPT(&steps, 0, 16),
        { "--answer-steps", CLI_INT, &steps, 0, 1024, NULL, NULL },
        { "--stop-at-eos", CLI_FLAG, &stop_at_eos, 0, 0, NULL, "stop the answer at eos (default: always --max-answer tokens)" },
        { "--out", CLI_STR, &out, 0, 0, "FILE", "the .safetensors file to write (required)" },
        { "--steer", CLI_STR, &steer_path, 0, 0, "SPEC.json", "run under a steering spec (codi_lens.h >>steer; e.g. tests/data/steer/*.json)" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    codi_model *m;
    codi_tokenizer *tk = NULL;
    codi_steer *steer = NULL;
    const codi_config *c;
    codi_state *s = NULL;
    codi_run_opts ro;
    codi_run_result rr;
    int32_t ids[4096], answer_len;
    int n, N, L, D, V, T, KVH, HD, l, h, k, rc = 1;
    float *pl = NULL, *pr = NULL, *pk = NULL, *pv = NULL, *li = NULL, *lr = NULL, *lf = NULL, *ll = NULL, *al = NULL, *al2 = NULL;
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, &pa)) return 2;
    if (!out) { fprintf(stderr, "codi trace: --out FILE is required\n"); return 2; }
    {
        const char *in[] = { ma.model, ma.base, ma.tokenizer, steer_path };
        if (cli_out_check("trace", out, CLI_OUT_FILE, force, in, CLI_N(in))) return 2;
    }
    if (!(m = cli_load_model(&ma))) return 1;
    if (pa.question && !(tk = cli_load_tokenizer(&ma, m, 0))) { codi_model_free(m); return 1; }
    c = &m->config; L = c->n_layers; D = c->dim; V = c->vocab; KVH = c->n_kv_heads; HD = c->head_dim; N = pa.latents;
    if ((n = cli_prompt_ids(&pa, m, tk, ids, 4096)) <= 0) { rc = 2; goto done; }
    T = n;
    s = codi_state_new(m, T + N + steps + 2, ma.threads);
    pl = malloc(sizeof(float) * T * V); pr = malloc(sizeof(float) * (L + 1) * T * D);
    pk = malloc(sizeof(float) * L * KVH * T * HD); pv = malloc(sizeof(float) * L * KVH * T * HD);
    li = malloc(sizeof(float) * (N + 1) * D); lr = malloc(sizeof(float) * (N + 1) * (L + 1) * D);
    lf = malloc(sizeof(float) * (N + 1) * V); ll = malloc(sizeof(float) * (N + 1) * (L + 1) * V);
    al = malloc(sizeof(float) * (steps + 1) * V); al2 = malloc(sizeof(float) * (steps + 1) * (V - 1));
    if (!s || !pl || !pr || !pk || !pv || !li || !lr || !lf || !ll || !al || !al2) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    ro = codi_run_opts_default(m);
    ro.n_latent = N;
    if (steer_path) {                             /* its hooks act on the prefill pass below too */
        char err[512];
        if (!(steer = codi_steer_load(m, steer_path, err, sizeof err))) { fprintf(stderr, "codi: %s\n", err); goto done; }
        if (codi_steer_install(steer, s, &ro)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    }
    /* the prefill alone, for every position's logits, residuals and cache */
    if (codi_forward(m, s, ids, NULL, T, pl)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (l = 0; l <= L; l++) memcpy(pr + (size_t)l * T * D, codi_state_resid(s, l, 0), sizeof(float) * T * D);
    for (l = 0; l < L; l++)
        for (h = 0; h < KVH; h++) {
            size_t off = ((size_t)l * KVH + h) * T * HD;
            memcpy(pk + off, codi_state_key(s, l, h, 0), sizeof(float) * T * HD);
            memcpy(pv + off, codi_state_value(s, l, h, 0), sizeof(float) * T * HD);
        }
    ro.max_answer = steps; ro.stop_at_eos = stop_at_eos;
    ro.latents = c->prj_dim ? li : NULL; ro.latent_logits = lf; ro.answer_logits = al;
    if (codi_run(m, s, ids, T, &ro, &rr)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (k = 0; k <= N; k++)
        for (l = 0; l <= L; l++) {
            memcpy(lr + ((size_t)k * (L + 1) + l) * D, codi_state_resid(s, l, T - 1 + k), sizeof(float) * D);
            codi_lens_at(m, s, l, T - 1 + k, ll + ((size_t)k * (L + 1) + l) * V);
        }
    for (k = 0; k < rr.n_answer; k++) memcpy(al2 + (size_t)k * (V - 1), al + (size_t)k * V, sizeof(float) * (V - 1));
    /* the answer proper ends at the first eos; tokens after it are marked by answer_length */
    for (answer_len = 0; answer_len < rr.n_answer && !codi_is_eos(c, rr.answer[answer_len]); answer_len++) {}
    if (answer_len < rr.n_answer) answer_len++;
    {
        char cmdline[2048], num[4][32];
        const char *meta[] = { "codi_lens", CLI_VERSION, "model", ma.model, "question", pa.question ? pa.question : "",
                               "ids", pa.ids ? pa.ids : "", "recipe", num[0], "latents", num[1], "answer_steps", num[2],
                               "answer_length", num[3], "weights", m->exact ? "f32" : "bf16",
                               "steer", steer_path ? steer_path : "",
                               "command", trace_join_args(argc, argv, cmdline, sizeof cmdline), NULL };
        codi_safetensors_entry e[12];
        int ne = 0;
        snprintf(num[0], sizeof num[0], "%d", pa.recipe); snprintf(num[1], sizeof num[1], "%d", N);
        snprintf(num[2], sizeof num[2], "%d", steps); snprintf(num[3], sizeof num[3], "%d", answer_len);
#define ENT(nm, dt, ptr, nd, a0, a1, a2, a3) \
        e[ne].name = nm; e[ne].dtype = dt; e[ne].data = ptr; e[ne].ndim = nd; \
        e[ne].shape[0] = a0; e[ne].shape[1] = a1; e[ne].shape[2] = a2; e[ne].shape[3] = a3; ne++;
        ENT("prompt_ids", CODI_I32, ids, 1, T, 0, 0, 0)
        ENT("prefill_logits", CODI_F32, pl, 2, T, V, 0, 0)
        ENT("prefill_resid", CODI_F32, pr, 3, L + 1, T, D, 0)
        ENT("prefill_k", CODI_F32, pk, 4, L, KVH, T, HD)
        ENT("prefill_v", CODI_F32, pv, 4, L, KVH, T, HD)
        if (c->prj_dim) { ENT("latent_inputs", CODI_F32, li, 2, N + 1, D, 0, 0) }
        ENT("latent_resid", CODI_F32, lr, 3, N + 1, L + 1, D, 0)
        ENT("latent_final_logits", CODI_F32, lf, 2, N + 1, V, 0, 0)
        ENT("latent_lens_logits", CODI_F32, ll, 3, N + 1, L + 1, V, 0)
        ENT("answer_tokens", CODI_I32, rr.answer, 1, rr.n_answer, 0, 0, 0)
        ENT("answer_length", CODI_I32, &answer_len, 1, 1, 0, 0, 0)
        ENT("answer_logits", CODI_F32, al2, 2, rr.n_answer, V - 1, 0, 0)
#undef ENT
        if (cli_out_safetensors(out, e, ne, meta)) goto done;
        printf("wrote %s: %d prompt positions, %d latents, %d answer tokens (%d up to eos)\n", out, T, N, rr.n_answer, answer_len);
    }
    rc = 0;
done:
    free(pl); free(pr); free(pk); free(pv); free(li); free(lr); free(lf); free(ll); free(al); free(al2);
    codi_state_free(s);
    codi_steer_free(steer);
    codi_tokenizer_free(tk);
    codi_model_free(m);
    return rc;
}

static const cli_command cmd_trace = {
    "trace", "run one question and write every buffer to a .safetensors file",
    "codi trace --model PATH (--question TEXT | --ids 1,2,3) --out FILE [options]",
    "Runs one CODI question (prefill, latent steps, eot, greedy answer) and writes for numpy / torch:\n"
    "prompt_ids, prefill_logits [T, V], prefill_resid [L+1, T, D], prefill_k / prefill_v [L, KVH, T, HD]\n"
    "(keys after RoPE), latent_inputs [N+1, D], latent_resid [N+1, L+1, D], latent_final_logits [N+1, V],\n"
    "latent_lens_logits [N+1, L+1, V], answer_tokens, answer_length (tokens up to and including the first\n"
    "eos; later ones were decoded past it) and answer_logits [steps, V-1]. The header's metadata records the\n"
    "model, question, recipe, options, command line and library version. With --steer SPEC.json every buffer\n"
    "is recorded under that steering spec (codi_lens.h >>steer).\n\n"
    "Examples:\n"
    "  codi trace --model tests/data/codi_tiny.bin --head-dim 32 --exact --ids 1,63,213,513 --steer tests/data/steer/s3_kv.json --out kv.safetensors\n"
    "  codi trace --model models/codi-nano/codi_nano.bin --question \"Tom has 3 bags of 4 apples. How many?\" --out t.safetensors\n"
    "  python3 -c \"from safetensors.numpy import load_file; print(load_file('t.safetensors')['latent_resid'].shape)\"",
    trace_run
};
