/* codi: the command-line face of codi_lens.h.
     codi trace --model PATH --ids 1,2,3 [--latents 6] [--answer-steps 16] --out trace.safetensors
     codi run   --model PATH --ids 1,2,3 [--latents 6] [--answer-steps 256]
     codi info  --model PATH
     codi bench --model PATH [--json] [--threads N]
   Common options: --base DIR (HF Llama the checkpoint is layered over), --exact (f32 weights),
   --lora-scale S (alpha / r, default 0.25), --head-dim N (when no config.json is found). */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include <time.h>

typedef struct {
    const char *model, *base, *out, *ids;
    int exact, head_dim, latents, answer_steps, threads, json, stop_at_eos;
    float lora_scale;
} cli_opts;

static int usage(void) {
    fprintf(stderr,
            "usage: codi COMMAND --model PATH [options]\n"
            "commands:\n"
            "  trace  run a CODI question given as ids (the last is bot) and write every buffer to --out\n"
            "  run    run a CODI question and print the answer ids\n"
            "  info   print the config and where every tensor came from\n"
            "  bench  prefill and decode tokens/s, peak memory (--json for one JSON object)\n"
            "options: --ids 1,2,3  --latents N (6)  --answer-steps N  --out FILE  --base DIR  --exact\n"
            "         --lora-scale S (0.25)  --head-dim N  --threads N  --stop-at-eos  --json\n");
    return 2;
}

static int parse_args(int argc, char **argv, cli_opts *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->latents = 6; o->answer_steps = -1; o->threads = 1; o->lora_scale = 0.25f;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (i++, 1))
        if (ARG("--model")) o->model = v;
        else if (ARG("--base")) o->base = v;
        else if (ARG("--out")) o->out = v;
        else if (ARG("--ids")) o->ids = v;
        else if (ARG("--head-dim")) o->head_dim = atoi(v);
        else if (ARG("--latents")) o->latents = atoi(v);
        else if (ARG("--answer-steps")) o->answer_steps = atoi(v);
        else if (ARG("--threads")) o->threads = atoi(v);
        else if (ARG("--lora-scale")) o->lora_scale = (float)atof(v);
        else if (!strcmp(a, "--exact")) o->exact = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--stop-at-eos")) o->stop_at_eos = 1;
        else { fprintf(stderr, "codi: unknown or incomplete option %s\n", a); return -1; }
#undef ARG
    }
    if (!o->model) { fprintf(stderr, "codi: --model is required\n"); return -1; }
    if (o->latents < 0 || o->latents > 1000) { fprintf(stderr, "codi: --latents must be in [0, 1000]\n"); return -1; }
    return 0;
}

static codi_model *load_model(const cli_opts *o) {
    char err[512];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m;
    lo.base = o->base; lo.exact = o->exact; lo.head_dim = o->head_dim; lo.lora_scale = o->lora_scale; lo.n_threads = o->threads;
    m = codi_load(o->model, &lo, err, sizeof err);
    if (!m) fprintf(stderr, "codi: %s\n", err);
    return m;
}

/* "1,2,3" -> ids; returns the count or -1. */
static int parse_ids(const char *s, int32_t *ids, int cap) {
    int n = 0;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n == cap || v < 0 || v > INT32_MAX) return -1;
        ids[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* Top-1 id and its probability of a logits row. */
static int top1(const float *lg, int V, float *prob) {
    int i, best = 0;
    double sum = 0;
    for (i = 1; i < V; i++) if (lg[i] > lg[best]) best = i;
    for (i = 0; i < V; i++) sum += exp((double)lg[i] - lg[best]);
    *prob = (float)(1.0 / sum);
    return best;
}

/* The decoded latents (lm_head at bot and each latent) and the logit lens at every layer. */
static void print_lens_table(const codi_config *c, const float *final_logits, const float *lens, int N) {
    int k, l, L = c->n_layers, V = c->vocab;
    printf("\nlogit lens: top-1 id (probability) of lm_head(norm(residual)) per layer; 'final' = decoded latent\n");
    printf("%-8s", "pos");
    for (l = 0; l <= L; l++) { char h[16]; snprintf(h, sizeof h, l < L ? "in L%d" : "out", l); printf(" %14s", h); }
    printf(" %14s\n", "final");
    for (k = 0; k <= N; k++) {
        float p;
        int id;
        char lab[16];
        snprintf(lab, sizeof lab, k ? "latent%d" : "bot", k);
        printf("%-8s", lab);
        for (l = 0; l <= L; l++) {
            id = top1(lens + ((size_t)k * (L + 1) + l) * V, V, &p);
            printf(" %7d (%.2f)", id, p);
        }
        id = top1(final_logits + (size_t)k * V, V, &p);
        printf(" %7d (%.2f)\n", id, p);
    }
}

static int cmd_trace(const cli_opts *o, int write_file) {
    codi_model *m = load_model(o);
    const codi_config *c;
    codi_state *s;
    codi_run_opts ro;
    codi_run_result rr;
    int32_t ids[4096];
    int n = parse_ids(o->ids, ids, 4096), S, N = o->latents, L, D, V, T, l, h, k, rc = 1;
    float *pl = NULL, *pr = NULL, *pk = NULL, *pv = NULL, *li = NULL, *lr = NULL, *lf = NULL, *ll = NULL, *al = NULL, *al2 = NULL;
    if (!m) return 1;
    c = &m->config; L = c->n_layers; D = c->dim; V = c->vocab;
    S = o->answer_steps >= 0 ? o->answer_steps : write_file ? 16 : 256;
    if (n <= 0) { fprintf(stderr, "codi: --ids must be a comma-separated list of token ids\n"); codi_model_free(m); return 1; }
    if (S > 1024) { fprintf(stderr, "codi: --answer-steps at most 1024\n"); codi_model_free(m); return 1; }
    T = n;
    s = codi_state_alloc(m, T + N + S + 2, o->threads);
    pl = malloc(sizeof(float) * T * V); pr = malloc(sizeof(float) * (L + 1) * T * D);
    pk = malloc(sizeof(float) * L * c->n_kv_heads * T * c->head_dim); pv = malloc(sizeof(float) * L * c->n_kv_heads * T * c->head_dim);
    li = malloc(sizeof(float) * (N + 1) * D); lr = malloc(sizeof(float) * (N + 1) * (L + 1) * D);
    lf = malloc(sizeof(float) * (N + 1) * V); ll = malloc(sizeof(float) * (N + 1) * (L + 1) * V);
    al = malloc(sizeof(float) * (S + 1) * V); al2 = malloc(sizeof(float) * (S + 1) * (V - 1));
    if (!s || !pl || !pr || !pk || !pv || !li || !lr || !lf || !ll || !al || !al2) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    /* the prefill alone, for every position's logits, residuals and cache */
    if (codi_forward(m, s, ids, NULL, T, pl)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (l = 0; l <= L; l++) memcpy(pr + (size_t)l * T * D, codi_state_resid(s, l, 0), sizeof(float) * T * D);
    for (l = 0; l < L; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            size_t off = ((size_t)l * c->n_kv_heads + h) * T * c->head_dim;
            memcpy(pk + off, codi_state_key(s, l, h, 0), sizeof(float) * T * c->head_dim);
            memcpy(pv + off, codi_state_value(s, l, h, 0), sizeof(float) * T * c->head_dim);
        }
    ro = codi_run_opts_default(m);
    ro.n_latent = N; ro.max_answer = S; ro.stop_at_eos = o->stop_at_eos;
    ro.latents = c->prj_dim ? li : NULL; ro.latent_logits = lf; ro.answer_logits = al;
    if (codi_run(m, s, ids, T, &ro, &rr)) { fprintf(stderr, "codi: %s\n", s->error); goto done; }
    for (k = 0; k <= N; k++)
        for (l = 0; l <= L; l++) {
            memcpy(lr + ((size_t)k * (L + 1) + l) * D, codi_state_resid(s, l, T - 1 + k), sizeof(float) * D);
            codi_lens_at(m, s, l, T - 1 + k, ll + ((size_t)k * (L + 1) + l) * V);
        }
    for (k = 0; k < rr.n_answer; k++) memcpy(al2 + (size_t)k * (V - 1), al + (size_t)k * V, sizeof(float) * (V - 1));
    if (write_file) {
        char err[256];
        codi_st_entry e[11];
        int ne = 0;
#define ENT(nm, isint, ptr, nd, a0, a1, a2, a3) \
        e[ne].name = nm; e[ne].is_int = isint; e[ne].data = ptr; e[ne].ndim = nd; \
        e[ne].shape[0] = a0; e[ne].shape[1] = a1; e[ne].shape[2] = a2; e[ne].shape[3] = a3; ne++;
        ENT("prompt_ids", 1, ids, 1, T, 0, 0, 0)
        ENT("prefill_logits", 0, pl, 2, T, V, 0, 0)
        ENT("prefill_resid", 0, pr, 3, L + 1, T, D, 0)
        ENT("prefill_k", 0, pk, 4, L, c->n_kv_heads, T, c->head_dim)
        ENT("prefill_v", 0, pv, 4, L, c->n_kv_heads, T, c->head_dim)
        if (c->prj_dim) { ENT("latent_inputs", 0, li, 2, N + 1, D, 0, 0) }
        ENT("latent_resid", 0, lr, 3, N + 1, L + 1, D, 0)
        ENT("latent_final_logits", 0, lf, 2, N + 1, V, 0, 0)
        ENT("latent_lens_logits", 0, ll, 3, N + 1, L + 1, V, 0)
        ENT("answer_tokens", 1, rr.answer, 1, rr.n_answer, 0, 0, 0)
        ENT("answer_logits", 0, al2, 2, rr.n_answer, V - 1, 0, 0)
#undef ENT
        if (!o->out) { fprintf(stderr, "codi: trace needs --out FILE\n"); goto done; }
        if (codi_write_safetensors(o->out, e, ne, err, sizeof err)) { fprintf(stderr, "codi: %s\n", err); goto done; }
        printf("wrote %s: %d prompt positions, %d latents, %d answer tokens\n", o->out, T, N, rr.n_answer);
    } else {
        printf("answer ids:");
        for (k = 0; k < rr.n_answer; k++) printf(" %d", rr.answer[k]);
        printf("\n");
        print_lens_table(c, lf, ll, N);
    }
    rc = 0;
done:
    free(pl); free(pr); free(pk); free(pv); free(li); free(lr); free(lf); free(ll); free(al); free(al2);
    codi_state_free(s);
    codi_model_free(m);
    return rc;
}

static int cmd_info(const cli_opts *o) {
    codi_model *m = load_model(o);
    const codi_config *c;
    int i, from_base = 0;
    static const char *dt[] = { "F32", "BF16", "F16" };
    if (!m) return 1;
    c = &m->config;
    printf("layers %d  dim %d  ffn %d  heads %d  kv heads %d  head dim %d  vocab %d  prj %d\n",
           c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab, c->prj_dim);
    printf("rope theta %g  llama3 %d (factor %g, low %g, high %g, original %d)  eps %g\n", c->rope_theta, c->rope_llama3,
           c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos, c->norm_eps);
    printf("bos %d  eos", c->bos_id);
    for (i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("  pad %d  bot %d  eot %d  lora scale %g  weights %s\n", c->pad_id, c->bot_id, c->eot_id, c->lora_scale, m->exact ? "f32" : "bf16");
    for (i = 0; i < m->n_tensors; i++) {
        const codi_tensor_info *t = &m->tensors[i];
        int d;
        from_base += t->source;
        printf("%-6s %-5s [", t->source ? "base" : "ckpt", t->dtype >= 0 ? dt[t->dtype] : "other");
        for (d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("] %s\n", t->name);
    }
    printf("%d tensors: %d from the checkpoint, %d from the base\n", m->n_tensors, m->n_tensors - from_base, from_base);
    codi_model_free(m);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

/* Prefill of n tokens into a fresh state; returns tokens/s. */
static double bench_prefill(const codi_model *m, codi_state *s, int n) {
    int32_t *ids = malloc(sizeof(int32_t) * n);
    double t0, t1;
    int i;
    for (i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % (m->config.vocab - 3));
    codi_state_reset(s);
    t0 = now_s();
    if (codi_forward(m, s, ids, NULL, n, NULL)) { fprintf(stderr, "codi: %s\n", s->error); free(ids); return -1; }
    t1 = now_s();
    free(ids);
    return n / (t1 - t0);
}

static int cmd_bench(const cli_opts *o) {
    double t0 = now_s(), load_s, pp128, pp512, tg, t1;
    codi_model *m = load_model(o);
    codi_state *s;
    int i, n_gen = 32;
    int32_t tok;
    if (!m) return 1;
    load_s = now_s() - t0;
    s = codi_state_alloc(m, 512 + n_gen + 8, o->threads);
    if (!s) { fprintf(stderr, "codi: out of memory\n"); codi_model_free(m); return 1; }
    pp128 = bench_prefill(m, s, 128);
    pp512 = bench_prefill(m, s, 512);
    /* decode: one token at a time after a 16-token prompt */
    bench_prefill(m, s, 16);
    t0 = now_s();
    for (i = 0; i < n_gen; i++) {
        tok = codi_argmax_answer(m, s->logits);
        if (codi_forward(m, s, &tok, NULL, 1, NULL)) { fprintf(stderr, "codi: %s\n", s->error); break; }
    }
    t1 = now_s();
    tg = n_gen / (t1 - t0);
    if (o->json)
        printf("{\"pp128\": %.2f, \"pp512\": %.2f, \"tg\": %.2f, \"rss_mb\": %.0f, \"load_s\": %.2f, \"threads\": %d, \"weights\": \"%s\"}\n",
               pp128, pp512, tg, peak_rss_mb(), load_s, o->threads, m->exact ? "f32" : "bf16");
    else
        printf("load %.2f s  pp128 %.2f tok/s  pp512 %.2f tok/s  tg %.2f tok/s  peak rss %.0f MB  threads %d\n",
               load_s, pp128, pp512, tg, peak_rss_mb(), o->threads);
    codi_state_free(s);
    codi_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    cli_opts o;
    if (argc < 2) return usage();
    if (parse_args(argc, argv, &o)) return usage();
    if (!strcmp(argv[1], "trace")) return cmd_trace(&o, 1);
    if (!strcmp(argv[1], "run")) return cmd_trace(&o, 0);
    if (!strcmp(argv[1], "info")) return cmd_info(&o);
    if (!strcmp(argv[1], "bench")) return cmd_bench(&o);
    fprintf(stderr, "codi: unknown command %s\n", argv[1]);
    return usage();
}
