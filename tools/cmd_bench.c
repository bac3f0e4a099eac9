/* codi bench: speed of a model beside the machine's limits, measured in the same process.
   Limits: read bandwidth (a STREAM-style pass over 1 GiB, every thread reading its own part) and
   compute peaks (independent chains in registers, every thread): FMA, and where the CPU has them
   the bf16 dot product (vdpbf16ps) and the AMX tile product (TDPBF16PS). Decode is bound by
   bandwidth: limit = bandwidth / bytes of weights streamed per token. Prefill by compute: limit =
   peak / FLOPs per token (2 per weight of the layers, attention excluded), with the peak of the
   instructions the path uses: FMA; for avx512bf16 and amx, which multiply x as two bf16 parts
   (hi + lo), half the bf16 dot or AMX peak (both the ratio to that and to the FMA peak are printed). Each figure also records its
   CPU share (process CPU seconds / (wall seconds x threads)): on a machine shared with other work
   it falls below 1, and each ratio to a limit divides both sides by their shares. */

static double bench_peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

static int bench_threads = 1;

/* Process CPU seconds (every thread). */
static double bench_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct { double wall, cpu; } bench_clock;
static bench_clock bench_start(void) { bench_clock c; c.wall = cli_now(); c.cpu = bench_cpu_now(); return c; }
/* Wall seconds since c; *share = the CPU share over that time. */
static double bench_stop(bench_clock c, double *share) {
    double wall = cli_now() - c.wall;
    if (share) *share = wall > 0 ? (bench_cpu_now() - c.cpu) / (wall * bench_threads) : 1;
    if (share && *share > 1) *share = 1;
    return wall;
}

/* Starts the peak-RSS count afresh (Linux: "5" to /proc/self/clear_refs), so it is the model's, not the bandwidth buffer's. */
static void bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) { fputs("5", f); fclose(f); }
}

/* --- the machine's limits ---------------------------------------------------------------- */

typedef struct { const float *buf; size_t n; double *sums; } bench_bw_ctx;

/* Each item is a 16 KiB block read with the kernel's dot against an L1-resident vector. */
static void bench_bw_task(void *ctx, int tid, int b0, int b1) {
    bench_bw_ctx *c = (bench_bw_ctx *)ctx;
    const float *ones = c->buf;                  /* the first block stays in L1 */
    float (*dot)(const float *, const float *, int) = codi__kernel_active()->dot;
    double s = 0;
    int b;
    for (b = b0; b < b1; b++) s += dot(c->buf + (size_t)b * 4096, ones, 4096);
    c->sums[tid] += s;
}

/* Read bandwidth in GB/s: best of 5 passes over 1 GiB (*share: that pass's CPU share). */
static double bench_bandwidth(codi__pool *pool, double *share) {
    size_t n = (size_t)1 << 28, i;
    bench_bw_ctx c;
    double best = 0, sums[256] = { 0 };
    float *buf = (float *)malloc(n * sizeof(float));
    int pass;
    if (!buf) return -1;
    for (i = 0; i < n; i++) buf[i] = 1.0f / (float)(1 + (i & 1023));
    c.buf = buf; c.n = n; c.sums = sums;
    for (pass = 0; pass < 5; pass++) {
        bench_clock t0 = bench_start();
        double sh, dt;
        CODI__PARALLEL(pool, bench_bw_task, &c, (int)(n / 4096));
        dt = bench_stop(t0, &sh);
        if (n * sizeof(float) / dt / 1e9 > best) { best = n * sizeof(float) / dt / 1e9; *share = sh; }
    }
    free(buf);
    return sums[0] == 12345.0 ? -1 : best;      /* (keeps the sums alive) */
}

/* FLOPs of `iters` steps of 12 independent FMA chains, in registers (named variables: an array
   would live in memory and time store forwarding instead). */
#define BENCH_CHAINS(T, FMA, INIT, ADD)                                                   \
    T a0 = INIT(0), a1 = INIT(1), a2 = INIT(2), a3 = INIT(3), a4 = INIT(4), a5 = INIT(5);    \
    T a6 = INIT(6), a7 = INIT(7), a8 = INIT(8), a9 = INIT(9), a10 = INIT(10), a11 = INIT(11); \
    long i;                                                                               \
    for (i = 0; i < iters; i++) {                                                         \
        a0 = FMA(a0); a1 = FMA(a1); a2 = FMA(a2); a3 = FMA(a3); a4 = FMA(a4); a5 = FMA(a5);   \
        a6 = FMA(a6); a7 = FMA(a7); a8 = FMA(a8); a9 = FMA(a9); a10 = FMA(a10); a11 = FMA(a11); \
    }                                                                                     \
    a0 = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));               \
    a0 = ADD(a0, ADD(ADD(a8, a9), ADD(a10, a11)))

#define SCALAR_INIT(k) ((float)(k))
#define SCALAR_FMA(x) ((x) * 0.999999f + 1e-7f)
#define SCALAR_ADD(x, y) ((x) + (y))
static double bench_fma_scalar(long iters, float *sink) {
    BENCH_CHAINS(float, SCALAR_FMA, SCALAR_INIT, SCALAR_ADD);
    *sink += a0;
    return 2.0 * 12 * iters;
}
#ifdef CODI__X86
#define AVX2_INIT(k) _mm256_set1_ps((float)(k))
#define AVX2_FMA(x) _mm256_fmadd_ps(x, m, d)
CODI__AVX2 static double bench_fma_avx2(long iters, float *sink) {
    __m256 m = _mm256_set1_ps(0.999999f), d = _mm256_set1_ps(1e-7f);
    BENCH_CHAINS(__m256, AVX2_FMA, AVX2_INIT, _mm256_add_ps);
    *sink += codi__hsum_avx2(a0);
    return 2.0 * 8 * 12 * iters;
}
#define AVX512_INIT(k) _mm512_set1_ps((float)(k))
#define AVX512_FMA(x) _mm512_fmadd_ps(x, m, d)
CODI__AVX512 static double bench_fma_avx512(long iters, float *sink) {
    __m512 m = _mm512_set1_ps(0.999999f), d = _mm512_set1_ps(1e-7f);
    BENCH_CHAINS(__m512, AVX512_FMA, AVX512_INIT, _mm512_add_ps);
    *sink += codi__hsum_avx512(a0);
    return 2.0 * 16 * 12 * iters;
}
#define DPBF16_FMA(x) _mm512_dpbf16_ps(x, xv, yv)
CODI__AVX512BF16 static double bench_dpbf16_avx512(long iters, float *sink) {   /* 64 FLOPs per instruction */
    __m512bh xv = (__m512bh)_mm512_set1_epi32(0x3f803f80), yv = (__m512bh)_mm512_set1_epi32(0x33d633d6);  /* 1.0, 1e-7 */
    BENCH_CHAINS(__m512, DPBF16_FMA, AVX512_INIT, _mm512_add_ps);
    *sink += codi__hsum_avx512(a0);
    return 2.0 * 32 * 12 * iters;
}
#endif

#ifdef CODI__AMX
/* iters / 8 steps of 4 independent tile products (16 x 16 x 32 bf16 -> f32 each) on tiles in registers. */
CODI__AMX static double bench_tdp_amx(long iters, float *sink) {
    static const uint16_t ones[16 * 32] = { 0 };          /* zeros: the products' speed does not depend on values */
    float c[16 * 16];
    codi__tilecfg cfg;
    long i, n = iters / 8;
    int t;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64);
    for (i = 0; i < n; i++) { _tile_dpbf16ps(0, 4, 5); _tile_dpbf16ps(1, 4, 5); _tile_dpbf16ps(2, 4, 5); _tile_dpbf16ps(3, 4, 5); }
    _tile_stored(0, c, 64);
    _tile_release();
    *sink += c[0];
    return 2.0 * 16 * 16 * 32 * 4 * n;
}
#endif

#ifdef CODI__X86
/* 1 if this CPU runs kernel path `name`. */
static int bench_cpu_runs(const char *name) {
    const char *av[8];
    int n = codi_kernels_available(av, 8), k;
    for (k = 0; k < n && k < 8; k++) if (!strcmp(av[k], name)) return 1;
    return 0;
}
#endif

typedef struct { double (*fn)(long, float *); long iters; double flops[256]; float sink[256]; } bench_peak_ctx;
static void bench_peak_task(void *ctx, int tid, int a, int b) {
    bench_peak_ctx *c = (bench_peak_ctx *)ctx;
    for (; a < b; a++) c->flops[tid] += c->fn(c->iters, &c->sink[tid]);
}

/* GFLOP/s of fn on every thread at once: best of 3 rounds (*share: that round's CPU share). */
static double bench_peak(codi__pool *pool, int threads, double (*fn)(long, float *), double *share) {
    bench_peak_ctx c;
    double best = 0;
    int round, t;
    memset(&c, 0, sizeof c);
    c.fn = fn; c.iters = 50000000;               /* ~0.1-0.3 s a round: long against time slices */
    for (round = 0; round < 3; round++) {
        bench_clock t0;
        double dt, sh, total = 0;
        for (t = 0; t < 256; t++) c.flops[t] = 0;
        t0 = bench_start();
        CODI__PARALLEL(pool, bench_peak_task, &c, threads);
        dt = bench_stop(t0, &sh);
        for (t = 0; t < 256; t++) total += c.flops[t];
        if (total / dt / 1e9 > best) { best = total / dt / 1e9; *share = sh; }
    }
    return best;
}

/* --- the model ----------------------------------------------------------------------------- */

/* Bytes of weights one decode step streams (every layer matrix and lm_head) and the multiply-adds
   per position in the layers (what prefill computes; lm_head only at the last position). */
static void bench_model_cost(const codi_model *m, double *bytes, double *layer_macs) {
    const codi_matrix *mats[7];
    int l, k;
    *bytes = 0; *layer_macs = 0;
    for (l = 0; l < m->config.n_layers; l++) {
        const codi_layer *w = &m->w.layers[l];
        mats[0] = &w->wq; mats[1] = &w->wk; mats[2] = &w->wv; mats[3] = &w->wo; mats[4] = &w->gate; mats[5] = &w->up; mats[6] = &w->down;
        for (k = 0; k < 7; k++) {
            *bytes += (double)mats[k]->rows * mats[k]->cols * (mats[k]->dtype == CODI_F32 ? 4 : 2);
            *layer_macs += (double)mats[k]->rows * mats[k]->cols;
        }
    }
    *bytes += (double)m->w.lm_head.rows * m->w.lm_head.cols * (m->w.lm_head.dtype == CODI_F32 ? 4 : 2);
}

/* Prefill of n tokens into a fresh state; returns tokens/s, or -1. */
static double bench_prefill(const codi_model *m, codi_state *s, int n, double *share) {
    int32_t *ids = malloc(sizeof(int32_t) * n);
    bench_clock t0;
    double dt;
    int i;
    if (!ids) return -1;
    for (i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % (m->config.vocab - 3));
    codi_state_reset(s);
    t0 = bench_start();
    if (codi_forward(m, s, ids, NULL, n, NULL)) { fprintf(stderr, "codi: %s\n", s->error); free(ids); return -1; }
    dt = bench_stop(t0, share);
    free(ids);
    return n / dt;
}

/* Decode tokens/s: n_gen greedy steps after a ctx-token prompt. */
static double bench_decode(const codi_model *m, codi_state *s, int ctx, int n_gen, double *share) {
    bench_clock t0;
    int i;
    int32_t tok;
    if (bench_prefill(m, s, ctx, NULL) < 0) return -1;
    t0 = bench_start();
    for (i = 0; i < n_gen; i++) {
        tok = codi_argmax_answer(m, s->logits);
        if (codi_forward(m, s, &tok, NULL, 1, NULL)) { fprintf(stderr, "codi: %s\n", s->error); return -1; }
    }
    return n_gen / bench_stop(t0, share);
}

/* Aggregate decode tokens/s of B sequences advanced together (codi_forward_batch): each after a
   ctx-token prompt (its own up to 16 tokens; longer: copies of one prefilled prompt), n_gen steps.
   states[0] holds 256+ positions, so its chunk lets lm_head run on 16 sequences per pass. */
static double bench_decode_batch(const codi_model *m, int B, int ctx, int n_gen, int threads, double *share) {
    codi_state **st = (codi_state **)calloc((size_t)B, sizeof *st);
    int32_t *tok = (int32_t *)malloc(sizeof(int32_t) * (size_t)B), *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)ctx);
    double rate = -1;
    bench_clock t0;
    int b, i, ok = st && tok && ids;
    for (b = 0; ok && b < B; b++) {
        ok = (st[b] = codi_state_new(m, b ? ctx + n_gen + 1 : 256 > ctx + n_gen + 1 ? 256 : ctx + n_gen + 1, b ? 1 : threads)) != NULL;
        if (ok && b && ctx > 16) { ok = codi_state_copy(m, st[b], st[0]) == 0; continue; }
        for (i = 0; ok && i < ctx; i++) ids[i] = (int32_t)((i * 7919 + 13 * b + 1) % (m->config.vocab - 3));
        ok = ok && codi_forward(m, st[b], ids, NULL, ctx, NULL) == 0;
    }
    if (ok) {
        t0 = bench_start();
        for (i = 0; ok && i < n_gen; i++) {
            for (b = 0; b < B; b++) tok[b] = codi_argmax_answer(m, st[b]->logits);
            ok = codi_forward_batch(m, st, tok, NULL, B) == 0;
        }
        if (ok) rate = (double)B * n_gen / bench_stop(t0, share);
    }
    if (!ok) fprintf(stderr, "codi bench: batch of %d failed\n", B);
    for (b = 0; st && b < B; b++) codi_state_free(st[b]);
    free(st); free(tok); free(ids);
    return rate;
}

/* Seconds for one CODI question: a 100-token prompt ending in bot, 6 latent steps, eot, 16 answer tokens. */
static double bench_question(const codi_model *m, codi_state *s) {
    int32_t ids[100];
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    double t0;
    int i;
    ids[0] = m->config.bos_id >= 0 && m->config.bos_id < m->config.vocab ? m->config.bos_id : 1;
    for (i = 1; i < 99; i++) ids[i] = (int32_t)((i * 7919 + 13) % (m->config.vocab - 3));
    ids[99] = m->config.bot_id;
    ro.max_answer = 16; ro.stop_at_eos = 0;
    t0 = cli_now();
    if (codi_run(m, s, ids, 100, &ro, &rr)) { fprintf(stderr, "codi: %s\n", s->error); return -1; }
    return cli_now() - t0;
}

/* --- the research workload: branches of the sweep and whole questions, single-stream and batched --- */

#define BENCH_PREFIX 50          /* the sweep's shape: a shared 50-token prefix, then per branch */
#define BENCH_BRANCH_LATENTS 3   /* 3 latents, eot and */
#define BENCH_BRANCH_ANSWER 2    /* 2 answer tokens: 5 positions per branch */
#define BENCH_Q_PROMPT 100       /* a question: 100-token prompt, 6 latents, eot, 16 answer tokens */
#define BENCH_Q_ANSWER 16

static void bench_prompt(const codi_model *m, int32_t *ids, int n, int salt) {
    int i;
    ids[0] = m->config.bos_id >= 0 && m->config.bos_id < m->config.vocab ? m->config.bos_id : 1;
    for (i = 1; i < n - 1; i++) ids[i] = (int32_t)((i * 7919 + 13 + salt * 104729) % (m->config.vocab - 3));
    ids[n - 1] = m->config.bot_id >= 0 ? m->config.bot_id : 2;
}

/* The prefix every branch starts from: an n-token prompt prefilled (phase prefill, l = 0). */
static codi_state *bench_prefix(const codi_model *m, int n, int threads) {
    int32_t ids[BENCH_PREFIX];
    codi_state *p = codi_state_new(m, BENCH_PREFIX + BENCH_BRANCH_LATENTS + BENCH_BRANCH_ANSWER + 1, threads);
    bench_prompt(m, ids, n, 0);
    if (p && codi_forward(m, p, ids, NULL, n, NULL)) { fprintf(stderr, "codi: %s\n", p->error); codi_state_free(p); return NULL; }
    return p;
}

/* Single-stream branches per minute: n branches, each a copy of the prefix, 3 latent steps, eot
   and 2 answer tokens (codi_latent_step, codi_run_answer); *copy_ms: the copy's share. */
static double bench_branches_single(const codi_model *m, const codi_state *pre, int n, int threads, double *share, double *copy_ms) {
    codi_state *s = codi_state_new(m, pre->max_pos, threads);
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    double copy = 0, t;
    bench_clock t0;
    int i, k, ok = s != NULL;
    ro.n_latent = BENCH_BRANCH_LATENTS; ro.max_answer = BENCH_BRANCH_ANSWER; ro.stop_at_eos = 0;
    t0 = bench_start();
    for (i = 0; ok && i < n; i++) {
        t = cli_now();
        ok = codi_state_copy(m, s, pre) == 0;
        copy += cli_now() - t;
        for (k = 1; ok && k <= BENCH_BRANCH_LATENTS; k++) { s->phase = CODI_PHASE_LATENT; s->step = k; ok = codi_latent_step(m, s, NULL) == 0; }
        ok = ok && codi_run_answer(m, s, &ro, &rr) == 0;
    }
    t = bench_stop(t0, share);
    if (!ok) fprintf(stderr, "codi bench: single-stream branch failed: %s\n", s ? s->error : "out of memory");
    codi_state_free(s);
    *copy_ms = 1000 * copy / n;
    return ok ? 60.0 * n / t : -1;
}

/* Batched branches per minute: n branch requests from the prefix through a batch of B. */
static double bench_branches_batch(const codi_model *m, const codi_state *pre, int B, int n, int threads, double *share) {
    codi_batch *b = codi_batch_new(m, B, pre->max_pos, threads);
    codi_batch_request q;
    bench_clock t0;
    double t;
    int i, ok = b != NULL;
    memset(&q, 0, sizeof q);
    q.prefix = pre; q.opts = codi_run_opts_default(m);
    q.opts.n_latent = BENCH_BRANCH_LATENTS; q.opts.max_answer = BENCH_BRANCH_ANSWER; q.opts.stop_at_eos = 0;
    t0 = bench_start();
    for (i = 0; ok && i < n; i++) ok = codi_batch_submit(b, &q) == 0;
    ok = ok && codi_batch_run(b, NULL, NULL) == 0;
    t = bench_stop(t0, share);
    if (!ok) fprintf(stderr, "codi bench: batched branches failed: %s\n", b ? codi_batch_error(b) : "out of memory");
    codi_batch_free(b);
    return ok ? 60.0 * n / t : -1;
}

static int bench_count_done(void *user, const codi_batch_result *r) { (void)r; ++*(int *)user; return r->status; }

/* Whole questions per minute through a batch of B: n questions of bench_question's shape, all
   submitted at once (prefills ride beside the decode rows of the runs ahead of them). */
static double bench_questions_batch(const codi_model *m, int B, int n, int threads, double *share) {
    codi_batch *b = codi_batch_new(m, B, BENCH_Q_PROMPT + 6 + 1 + BENCH_Q_ANSWER, threads);
    codi_batch_request q;
    int32_t ids[BENCH_Q_PROMPT];
    bench_clock t0;
    double t;
    int i, ok = b != NULL, done = 0;
    memset(&q, 0, sizeof q);
    q.ids = ids; q.n_ids = BENCH_Q_PROMPT; q.opts = codi_run_opts_default(m);
    q.opts.max_answer = BENCH_Q_ANSWER; q.opts.stop_at_eos = 0;
    t0 = bench_start();
    for (i = 0; ok && i < n; i++) { bench_prompt(m, ids, BENCH_Q_PROMPT, i + 1); ok = codi_batch_submit(b, &q) == 0; }
    ok = ok && codi_batch_run(b, bench_count_done, &done) == 0 && done == n;
    t = bench_stop(t0, share);
    if (!ok) fprintf(stderr, "codi bench: batched questions failed: %s\n", b ? codi_batch_error(b) : "out of memory");
    codi_batch_free(b);
    return ok ? 60.0 * n / t : -1;
}

/* Roofline seconds of a workload: passes over the weights of `bytes` each and `flops` in all, B
   runs sharing each pass. B = 1: each pass alone, sum of max(its FLOPs / peak, bytes / bw) with
   pass 0 the prompt (prompt_flops) and the others one position each; B > 1: the passes overlap
   (prefill rows ride beside decode rows), max(FLOPs / peak, passes / B x bytes / bw). */
static double bench_roofline_s(int B, int passes, double prompt_flops, double flops, double bytes, double peak_gflops, double bw_gbs) {
    double t_bw = bytes / (bw_gbs * 1e9), t_c = flops / (peak_gflops * 1e9), step_flops;
    if (B > 1) return t_c > passes * t_bw / B ? t_c : passes * t_bw / B;
    step_flops = passes > 1 ? (flops - prompt_flops) / (passes - 1) : 0;
    return (prompt_flops / (peak_gflops * 1e9) > t_bw ? prompt_flops / (peak_gflops * 1e9) : t_bw) +
           (passes - 1) * (step_flops / (peak_gflops * 1e9) > t_bw ? step_flops / (peak_gflops * 1e9) : t_bw);
}

typedef struct { const char *path; double pp128, pp512, tg, question_s, tg_b8, tg_b32, sh128, sh512, shtg, shb8, shb32; } bench_row;

/* The effective peak of path p (GFLOP/s): amx and avx512bf16 multiply x as two bf16 parts. */
#define PATH_PEAK_OF(p) (bf16c ? peak_bf16 : !strcmp(p, "amx") ? peak_amx / 2 : !strcmp(p, "avx512bf16") ? peak_bf16 / 2 : peak)
#define PATH_SH_OF(p) (bf16c || !strcmp(p, "avx512bf16") ? sh_bf16 : !strcmp(p, "amx") ? sh_amx : sh_peak)

static int bench_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *kernels = NULL, *batches = NULL;
    int json = 0, n_gen = 32, ctx = 16, bf16c = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--json", CLI_FLAG, &json, 0, 0, NULL, "print one JSON object" },
        { "--tokens", CLI_INT, &n_gen, 1, 4096, "N", "decode steps to time (32)" },
        { "--context", CLI_INT, &ctx, 1, 512, "N", "prompt tokens before the timed decode steps of tg, tg_b8 and tg_b32 (16): "
          "decode attention grows with it" },
        { "--kernels", CLI_STR, &kernels, 0, 0, "LIST", "kernel paths to time, comma-separated, e.g. avx512,scalar "
          "(\"default\": the path chosen for this CPU); the first gets every figure, the others pp128 and tg" },
        { "--batch", CLI_STR, &batches, 0, 0, "N[,N...]", "runs per batched runner for branch_bN and eval_qpm (default "
          CLI_QUOTE(CLI_BATCH_DEFAULT) "); with a list, branch_bN at each and eval_qpm at the first" },
        CLI_END
    };
    double t0, load_s, bw, peak, peak_bf16 = 0, peak_amx = 0, bytes, macs, rss, sh_bw = 1, sh_peak = 1, sh_bf16 = 1, sh_amx = 1;
    double tg_lim, pp_lim, tgb_lim, pp_per_gflop, tgb_per_gflop;
    codi_model *m;
    codi_state *s;
    codi__pool *pool = NULL;
    bench_row rows[8];
    char list[256], blist[256], *name, *save = NULL;
    int n_rows = 0, r, batch[8], n_batch = 0, best = 0, bi;
    double br1 = -1, br_n[8], br_p1 = -1, evq = -1, sh_br1 = 1, sh_brn[8], sh_evq = 1, sh_p1 = 1, copy_ms = 0;
    double br_flops, q_flops, q_prompt_flops, lim_br1, lim_brn, lim_q1, lim_qn, pk0, bw0, lm;
    codi_state *pre;
    const char *dflt = codi_kernel_name();    /* CODI_KERNEL's choice, else the fastest path */
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    snprintf(list, sizeof list, "%s", kernels ? kernels : dflt);
    for (name = strtok_r(list, ",", &save); name && n_rows < 8; name = strtok_r(NULL, ",", &save)) {
        if (!strcmp(name, "default")) name = (char *)dflt;
        if (codi_set_kernel(name)) {
            const char *av[8];
            int na = codi_kernels_available(av, 8), k;
            fprintf(stderr, "codi bench: kernel path '%s' is not available here; available:", name);
            for (k = 0; k < na && k < 8; k++) fprintf(stderr, " %s", av[k]);
            fprintf(stderr, "\n");
            return 2;
        }
        rows[n_rows++].path = name;
    }
    snprintf(blist, sizeof blist, "%s", batches ? batches : CLI_QUOTE(CLI_BATCH_DEFAULT));
    for (name = strtok_r(blist, ",", &save); name && n_batch < 8; name = strtok_r(NULL, ",", &save))
        if ((batch[n_batch++] = atoi(name)) < 1 || batch[n_batch - 1] > 1024) { fprintf(stderr, "codi bench: --batch: '%s' is not in 1..1024\n", name); return 2; }
    if (ma.threads > 1) pool = codi__pool_new(ma.threads);   /* the limits first: their 1 GiB is freed before the load */
    bench_threads = pool ? ma.threads : 1;
    codi_set_kernel(rows[0].path);               /* the first path reads the bandwidth buffer */
    bw = bench_bandwidth(pool, &sh_bw);
    peak = 0;                                    /* the widest FMA this CPU has (256-bit when the first path is avx2) */
#ifdef CODI__X86
    if (bench_cpu_runs("avx512") && strcmp(rows[0].path, "avx2")) peak = bench_peak(pool, ma.threads, bench_fma_avx512, &sh_peak);
    else if (bench_cpu_runs("avx2")) peak = bench_peak(pool, ma.threads, bench_fma_avx2, &sh_peak);
    if (bench_cpu_runs("avx512bf16")) peak_bf16 = bench_peak(pool, ma.threads, bench_dpbf16_avx512, &sh_bf16);
#endif
#ifdef CODI__AMX
    if (bench_cpu_runs("amx")) peak_amx = bench_peak(pool, ma.threads, bench_tdp_amx, &sh_amx);
#endif
    if (peak == 0) peak = bench_peak(pool, ma.threads, bench_fma_scalar, &sh_peak);
    codi__pool_free(pool);
    bench_reset_peak_rss();
    codi_set_kernel(rows[0].path);               /* the first path also loads (merges) the model */
    t0 = cli_now();
    if (!(m = cli_load_model(&ma))) return 1;
    load_s = cli_now() - t0;
    bf16c = m->compute == CODI_COMPUTE_BF16 && peak_bf16 > 0;    /* products on vdpbf16ps: their peak binds */
    if (!(s = codi_state_new(m, 512 + n_gen + 8, ma.threads))) { fprintf(stderr, "codi: out of memory\n"); codi_model_free(m); return 1; }
    bench_model_cost(m, &bytes, &macs);
    pp_per_gflop = 1e9 / (2 * macs);
    tgb_per_gflop = 1e9 / (2 * (macs + (double)m->w.lm_head.rows * m->w.lm_head.cols));   /* batched decode: compute, lm_head included */
    tg_lim = bw * 1e9 / bytes; pp_lim = peak * pp_per_gflop; tgb_lim = peak * tgb_per_gflop;
    for (r = 0; r < n_rows; r++) {
        bench_row *b = &rows[r];
        codi_set_kernel(b->path);
        b->sh512 = 1;
        b->pp128 = bench_prefill(m, s, 128, &b->sh128);
        b->pp512 = r == 0 ? bench_prefill(m, s, 512, &b->sh512) : -1;
        b->tg = bench_decode(m, s, ctx, n_gen, &b->shtg);
        b->question_s = r == 0 ? bench_question(m, s) : -1;
        b->tg_b8 = r == 0 ? bench_decode_batch(m, 8, ctx, n_gen, ma.threads, &b->shb8) : -1;
        b->tg_b32 = r == 0 ? bench_decode_batch(m, 32, ctx, n_gen, ma.threads, &b->shb32) : -1;
    }
    /* the research workload on the first path: branches (single-stream, then batched at each --batch;
       and from a 1-token prefix: what a shared read-only prefix could save at most), whole questions */
    codi_set_kernel(rows[0].path);
    for (bi = 0; bi < n_batch; bi++) { br_n[bi] = -1; sh_brn[bi] = 1; }
    if ((pre = bench_prefix(m, BENCH_PREFIX, ma.threads)) != NULL) {
        br1 = bench_branches_single(m, pre, 8, ma.threads, &sh_br1, &copy_ms);
        for (bi = 0; bi < n_batch; bi++) {
            br_n[bi] = bench_branches_batch(m, pre, batch[bi], 3 * batch[bi], ma.threads, &sh_brn[bi]);
            if (br_n[bi] > br_n[best]) best = bi;
        }
        codi_state_free(pre);
    }
    if ((pre = bench_prefix(m, 1, ma.threads)) != NULL) {
        br_p1 = bench_branches_batch(m, pre, batch[best], 3 * batch[best], ma.threads, &sh_p1);
        codi_state_free(pre);
    }
    evq = bench_questions_batch(m, batch[0], batch[0], ma.threads, &sh_evq);
    rss = bench_peak_rss_mb();
    /* their rooflines (FLOPs: 2 per weight of the layers per position, lm_head where logits are read: the
       answer tokens), from the peak and bandwidth per CPU share, as the other ratios */
    pk0 = PATH_PEAK_OF(rows[0].path) / PATH_SH_OF(rows[0].path);
    bw0 = bw / sh_bw;
    lm = (double)m->w.lm_head.rows * m->w.lm_head.cols;
    br_flops = 2 * ((BENCH_BRANCH_LATENTS + 1 + BENCH_BRANCH_ANSWER - 1) * macs + BENCH_BRANCH_ANSWER * lm);
    q_prompt_flops = 2 * BENCH_Q_PROMPT * macs;
    q_flops = q_prompt_flops + 2 * ((6 + 1 + BENCH_Q_ANSWER - 1) * macs + BENCH_Q_ANSWER * lm);
    lim_br1 = 60 / bench_roofline_s(1, 5, br_flops / 5, br_flops, bytes, pk0, bw0);
    lim_brn = 60 / bench_roofline_s(batch[best], 5, br_flops / 5, br_flops, bytes, pk0, bw0);
    lim_q1 = 60 / bench_roofline_s(1, 1 + 6 + BENCH_Q_ANSWER, q_prompt_flops, q_flops, bytes, pk0, bw0);
    lim_qn = 60 / bench_roofline_s(batch[0], 1 + 6 + BENCH_Q_ANSWER, q_prompt_flops, q_flops, bytes, pk0, bw0);
#define OF(x, sh, lim, shl) ((x) / (sh) / ((lim) / (shl)))     /* a figure over its limit, both per CPU share */
#define PATH_PEAK(p) PATH_PEAK_OF(p)   /* effective GFLOP/s (bf16 compute: the bf16 dot peak itself) */
#define PATH_SH(p) PATH_SH_OF(p)
#define PATH_PEAK_NAME(p) (bf16c ? "bf16_dot" : !strcmp(p, "amx") ? "amx/2" : !strcmp(p, "avx512bf16") ? "bf16_dot/2" : "fma")
    if (json) {
        bench_row *b = &rows[0];
        double pk = PATH_PEAK(b->path), shp = PATH_SH(b->path);
        printf("{\"path\": \"%s\", \"threads\": %d, \"weights\": \"%s\", \"load_s\": %.2f, \"rss_mb\": %.0f, "
               "\"bw_gbs\": %.2f, \"peak_gflops\": %.1f, \"peak_bf16_gflops\": %.1f, "
               "\"pp128\": %.2f, \"pp512\": %.2f, \"tg\": %.3f, \"question_s\": %.3f, \"gsm8k_qpm\": %.2f, "
               "\"tg_b8\": %.3f, \"tg_b32\": %.3f, \"tg_b8_of_peak\": %.3f, \"tg_b32_of_peak\": %.3f, "
               "\"tg_of_bw\": %.3f, \"pp512_of_peak\": %.3f, \"cpu_share\": {\"bw\": %.2f, \"peak\": %.2f, \"pp128\": %.2f, "
               "\"pp512\": %.2f, \"tg\": %.2f, \"peak_bf16\": %.2f, \"peak_amx\": %.2f}, \"peak_amx_gflops\": %.1f, "
               "\"path_peak\": \"%s\", \"path_peak_gflops\": %.1f, \"pp512_of_path_peak\": %.3f, \"tg_b8_of_path_peak\": %.3f, "
               "\"tg_b32_of_path_peak\": %.3f, \"context\": %d, \"compute\": \"%s\"",
               b->path, ma.threads, m->exact ? "f32" : "bf16", load_s, rss, bw, peak, peak_bf16,
               b->pp128, b->pp512, b->tg, b->question_s, b->question_s > 0 ? 60.0 / b->question_s : -1,
               b->tg_b8, b->tg_b32, OF(b->tg_b8, b->shb8, tgb_lim, sh_peak), OF(b->tg_b32, b->shb32, tgb_lim, sh_peak),
               OF(b->tg, b->shtg, tg_lim, sh_bw), OF(b->pp512, b->sh512, pp_lim, sh_peak), sh_bw, sh_peak, b->sh128, b->sh512, b->shtg, sh_bf16,
               sh_amx, peak_amx, PATH_PEAK_NAME(b->path), pk, OF(b->pp512, b->sh512, pk * pp_per_gflop, shp),
               OF(b->tg_b8, b->shb8, pk * tgb_per_gflop, shp), OF(b->tg_b32, b->shb32, pk * tgb_per_gflop, shp), ctx,
               m->compute == CODI_COMPUTE_BF16 ? "bf16" : "f32");
        printf(", \"batch\": %d, \"best_batch\": %d, \"branch_b1\": %.1f, \"branch_bN\": %.1f, \"branch_ratio\": %.2f, "
               "\"branch_b1_of_roofline\": %.3f, \"branch_bN_of_roofline\": %.3f, \"branch_copy_ms\": %.3f, \"branch_bN_prefix1\": %.1f, "
               "\"eval_qpm\": %.2f, \"eval_ratio\": %.2f, \"eval_qpm_of_roofline\": %.3f, \"gsm8k_qpm_of_roofline\": %.3f, "
               "\"cpu_share_research\": {\"branch_b1\": %.2f, \"branch_bN\": %.2f, \"eval_qpm\": %.2f}, \"branch_by_batch\": {",
               batch[0], batch[best], br1, br_n[best], br_n[best] / br1, br1 / sh_br1 / lim_br1, br_n[best] / sh_brn[best] / lim_brn, copy_ms, br_p1,
               evq, b->question_s > 0 ? evq * b->question_s / 60 : -1, evq / sh_evq / lim_qn,
               b->question_s > 0 ? 60 / b->question_s / b->shtg / lim_q1 : -1, sh_br1, sh_brn[best], sh_evq);
        for (bi = 0; bi < n_batch; bi++) printf("%s\"%d\": %.1f", bi ? ", " : "", batch[bi], br_n[bi]);
        printf("}");
        printf(", \"by_path\": {");
        for (r = 0; r < n_rows; r++)
            printf("%s\"%s\": {\"pp128\": %.2f, \"tg\": %.3f, \"pp128_of_peak\": %.3f, \"tg_of_bw\": %.3f, \"pp128_of_path_peak\": %.3f}",
                   r ? ", " : "", rows[r].path, rows[r].pp128, rows[r].tg, OF(rows[r].pp128, rows[r].sh128, pp_lim, sh_peak),
                   OF(rows[r].tg, rows[r].shtg, tg_lim, sh_bw),
                   OF(rows[r].pp128, rows[r].sh128, PATH_PEAK(rows[r].path) * pp_per_gflop, PATH_SH(rows[r].path)));
        printf("}}\n");
    } else {
        printf("machine: read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s", bw, peak);
        if (peak_bf16 > 0) printf(", bf16 dot peak %.1f GFLOP/s", peak_bf16);
        if (peak_amx > 0) printf(", AMX bf16 peak %.1f GFLOP/s [%.2f]", peak_amx, sh_amx);
        printf(" (%d threads; CPU share %.2f, %.2f)\n", ma.threads, sh_bw, sh_peak);
        printf("model: %.2f GB streamed per decode step, %.2f GFLOP per prefill position; load %.2f s, peak rss %.0f MB\n",
               bytes / 1e9, 2 * macs / 1e9, load_s, rss);
        printf("limits: decode %.2f tok/s (bandwidth), prefill %.2f tok/s (FMA peak), batched decode %.2f tok/s (FMA peak, lm_head included)\n",
               tg_lim, pp_lim, tgb_lim);
        if (peak_amx > 0) printf("        at half the AMX bf16 peak: prefill %.2f tok/s, batched decode %.2f tok/s\n",
                                 peak_amx / 2 * pp_per_gflop, peak_amx / 2 * tgb_per_gflop);
        printf("decode (tg, tg_b8, tg_b32): %d steps after a %d-token prompt; %s compute%s\n", n_gen, ctx,
               m->compute == CODI_COMPUTE_BF16 ? "bf16" : "f32", bf16c ? " ({%} of the bf16 dot peak)" : "");
        printf("ratios divide each side by its CPU share (shown in []: < 1 when other processes had the cores)\n");
        printf("prefill and batched decode: %% of the FMA peak; amx and avx512bf16 (x as bf16 hi + lo: two products each)\n"
               "also {%% of half the AMX / bf16 dot peak} and, amx, (%% of the AMX bf16 peak itself)\n");
        for (r = 0; r < n_rows; r++) {
            bench_row *b = &rows[r];
            double pk = PATH_PEAK(b->path), shp = PATH_SH(b->path);
            int own = strcmp(PATH_PEAK_NAME(b->path), "fma") != 0;
#define PCT(x, sh, per) do { printf(" %3.0f%%", 100 * OF(x, sh, peak * (per), sh_peak)); \
        if (own) printf(" {%.0f%%}", 100 * OF(x, sh, pk * (per), shp)); \
        if (own && !strcmp(b->path, "amx")) printf(" (%.0f%%)", 50 * OF(x, sh, pk * (per), shp)); } while (0)
            printf("%-11s pp128 %7.2f tok/s", b->path, b->pp128); PCT(b->pp128, b->sh128, pp_per_gflop); printf(" [%.2f]", b->sh128);
            if (b->pp512 > 0) { printf("  pp512 %7.2f tok/s", b->pp512); PCT(b->pp512, b->sh512, pp_per_gflop); printf(" [%.2f]", b->sh512); }
            printf("  tg %6.2f tok/s %3.0f%% of bandwidth [%.2f]", b->tg, 100 * OF(b->tg, b->shtg, tg_lim, sh_bw), b->shtg);
            if (b->question_s > 0) printf("  question %.2f s (%.1f/min)", b->question_s, 60 / b->question_s);
            if (b->tg_b8 > 0) {
                printf("\n            tg_b8 %.2f tok/s", b->tg_b8); PCT(b->tg_b8, b->shb8, tgb_per_gflop); printf(" [%.2f]", b->shb8);
                printf("  tg_b32 %.2f tok/s", b->tg_b32); PCT(b->tg_b32, b->shb32, tgb_per_gflop); printf(" [%.2f]", b->shb32);
            }
#undef PCT
            printf("\n");
        }
        printf("research workload (%s): branches of a shared %d-token prefix, %d latents + eot + %d answer tokens each; questions "
               "of %d-token prompts, 6 latents, eot, %d answer tokens; [CPU share], {%% of the roofline min(compute, bandwidth)}\n",
               rows[0].path, BENCH_PREFIX, BENCH_BRANCH_LATENTS, BENCH_BRANCH_ANSWER, BENCH_Q_PROMPT, BENCH_Q_ANSWER);
        printf("  branch_b1 %.1f/min [%.2f] {%.0f%%} (copy of the prefix %.2f ms each)\n", br1, sh_br1, 100 * br1 / sh_br1 / lim_br1, copy_ms);
        for (bi = 0; bi < n_batch; bi++)
            printf("  branch_b%d %.1f/min [%.2f] {%.0f%%}: %.2fx branch_b1%s\n", batch[bi], br_n[bi], sh_brn[bi],
                   100 * br_n[bi] / sh_brn[bi] / (60 / bench_roofline_s(batch[bi], 5, br_flops / 5, br_flops, bytes, pk0, bw0)), br_n[bi] / br1, bi == best ? " (best)" : "");
        printf("  branch_b%d from a 1-token prefix %.1f/min (what a shared read-only prefix could reach at most)\n", batch[best], br_p1);
        printf("  eval_qpm (batch %d) %.2f questions/min [%.2f] {%.0f%%}: %.2fx gsm8k_qpm %.2f {%.0f%%}\n", batch[0], evq, sh_evq,
               100 * evq / sh_evq / lim_qn, rows[0].question_s > 0 ? evq * rows[0].question_s / 60 : -1,
               rows[0].question_s > 0 ? 60 / rows[0].question_s : -1, rows[0].question_s > 0 ? 100 * 60 / rows[0].question_s / rows[0].shtg / lim_q1 : -1);
    }
#undef OF
#undef PATH_PEAK
#undef PATH_SH
#undef PATH_PEAK_NAME
#undef PATH_PEAK_OF
#undef PATH_SH_OF
    codi_set_kernel(rows[0].path);
    codi_state_free(s);
    codi_model_free(m);
    return 0;
}

static const cli_command cmd_bench = {
    "bench", "speed beside the machine's measured limits (bandwidth, FMA / bf16 / AMX peaks)",
    "codi bench --model PATH [--json] [--threads N] [--kernels LIST] [--tokens N] [--context N] [--batch N[,N...]]",
    "Measures, in one process: read bandwidth and compute peaks (FMA; bf16 dot and AMX tiles where\n"
    "the CPU has them); load time; 128- and 512-token prefill;\n"
    "single-token decode; batched decode of 8 and 32 sequences (codi_forward_batch); one CODI question\n"
    "end to end (100-token prompt, 6 latents, 16 answer tokens; gsm8k_qpm); the research workload:\n"
    "branches per minute of the sweep's shape (a shared 50-token prefix, then 3 latents, eot and 2 answer\n"
    "tokens each) single-stream (branch_b1) and through the batched runner (branch_bN, codi_batch_*), and\n"
    "whole questions per minute through it (eval_qpm), each beside its roofline min(compute, bandwidth);\n"
    "each beside its limit (decode: bandwidth / bytes per token; prefill: peak / FLOPs per token).\n\n"
    "Examples:\n"
    "  make bench    (writes bench/random_1b.safetensors, a full-size random CODI checkpoint, once)\n"
    "  codi bench --model bench/random_1b.safetensors --threads 2 --json\n"
    "  codi bench --model bench/random_1b.safetensors --threads 2 --kernels avx512,avx2,scalar",
    bench_run
};
