/* codi bench: prefill and decode speed of a model. */

static double bench_peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

/* Prefill of n tokens into a fresh state; returns tokens/s, or -1. */
static double bench_prefill(const codi_model *m, codi_state *s, int n) {
    int32_t *ids = malloc(sizeof(int32_t) * n);
    double t0, t1;
    int i;
    if (!ids) return -1;
    for (i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % (m->config.vocab - 3));
    codi_state_reset(s);
    t0 = cli_now();
    if (codi_forward(m, s, ids, NULL, n, NULL)) { fprintf(stderr, "codi: %s\n", s->error); free(ids); return -1; }
    t1 = cli_now();
    free(ids);
    return n / (t1 - t0);
}

static int bench_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    int json = 0, n_gen = 32;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--json", CLI_FLAG, &json, 0, 0, NULL, "print one JSON object" },
        { "--tokens", CLI_INT, &n_gen, 1, 4096, "N", "decode steps to time (32)" },
        CLI_END
    };
    double t0, load_s, pp128, pp512, tg;
    codi_model *m;
    codi_state *s;
    int i;
    int32_t tok;
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    t0 = cli_now();
    if (!(m = cli_load_model(&ma))) return 1;
    load_s = cli_now() - t0;
    if (!(s = codi_state_alloc(m, 512 + n_gen + 8, ma.threads))) { fprintf(stderr, "codi: out of memory\n"); codi_model_free(m); return 1; }
    pp128 = bench_prefill(m, s, 128);
    pp512 = bench_prefill(m, s, 512);
    bench_prefill(m, s, 16);                      /* decode: one token at a time after a 16-token prompt */
    t0 = cli_now();
    for (i = 0; i < n_gen; i++) {
        tok = codi_argmax_answer(m, s->logits);
        if (codi_forward(m, s, &tok, NULL, 1, NULL)) { fprintf(stderr, "codi: %s\n", s->error); break; }
    }
    tg = n_gen / (cli_now() - t0);
    if (json)
        printf("{\"pp128\": %.2f, \"pp512\": %.2f, \"tg\": %.2f, \"rss_mb\": %.0f, \"load_s\": %.2f, \"threads\": %d, \"weights\": \"%s\"}\n",
               pp128, pp512, tg, bench_peak_rss_mb(), load_s, ma.threads, m->exact ? "f32" : "bf16");
    else
        printf("load %.2f s  pp128 %.2f tok/s  pp512 %.2f tok/s  tg %.2f tok/s  peak rss %.0f MB  threads %d\n",
               load_s, pp128, pp512, tg, bench_peak_rss_mb(), ma.threads);
    codi_state_free(s);
    codi_model_free(m);
    return 0;
}

static const cli_command cmd_bench = {
    "bench", "prefill and decode tokens/s and peak memory of a model",
    "codi bench --model PATH [--json] [--threads N]",
    "Times loading, a 128- and a 512-token prefill and single-token decode steps.\n\n"
    "Examples:\n"
    "  make bench    (writes bench/random_1b.safetensors, a full-size random CODI checkpoint, once)\n"
    "  codi bench --model bench/random_1b.safetensors --threads 2 --json",
    bench_run
};
