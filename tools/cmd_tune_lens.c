/* codi tune-lens: train a tuned lens on CODI's residual stream (codi_lens.h >>lenstrain), from an
   activation dataset or by running the model over a question file, with the tuned-lens
   library's recipe or the Latent Reasoning Sprint's. */
#include "positions.h"

typedef struct {
    const codi_model *m;
    /* in-memory samples (--questions): resid [n, L+1, D] */
    float *mem;
    /* dataset samples (--acts): the resid tensor and (question, slot) pairs */
    codi_st_tensor resid;
    int32_t *pairs;                  /* [n, 2] */
    long n, n_train;                 /* samples; the first n_train train, the rest are held out */
    int sprint_norm;
    float *tmp;                      /* [D] */
} tune_data;

/* Sample i (held-out samples follow the training ones: the eval callback adds n_train). */
static int tune_sample_at(const tune_data *d, long i, float *resid, float *target) {
    const codi_config *c = &d->m->config;
    size_t L1 = (size_t)c->n_layers + 1, D = (size_t)c->dim, k;
    if (d->mem) memcpy(resid, d->mem + (size_t)i * L1 * D, sizeof(float) * L1 * D);
    else {
        size_t P = (size_t)d->resid.shape[1], row = ((size_t)d->pairs[2 * i] * P + (size_t)d->pairs[2 * i + 1]) * L1 * D;
        const unsigned char *b = (const unsigned char *)d->resid.data;
        int bf16 = !strcmp(d->resid.dtype, "BF16");
        for (k = 0; k < L1 * D; k++) resid[k] = codi__load_elem(b, bf16 ? CODI_BF16 : CODI_F32, row + k);
    }
    if (!d->sprint_norm) return 0;
    /* the sprint's target: the final norm applied to HF's already-normed last hidden state */
    codi__rmsnorm(d->tmp, resid + (L1 - 1) * D, d->m->w.final_norm, c->dim, c->norm_eps);
    if (codi_lens_logits(d->m, d->tmp, target)) return -1;
    return 1;
}

static int tune_train_sample(void *user, long i, float *resid, float *target) { return tune_sample_at((const tune_data *)user, i, resid, target); }
static int tune_eval_sample(void *user, long i, float *resid, float *target) {
    const tune_data *d = (const tune_data *)user;
    return tune_sample_at(d, d->n_train + i, resid, target);
}

/* Which slots train: "direct" = the last prompt position (bot); "codi" = latent positions of a
   subset (all, even, odd, or a list such as 3,5; 0-based with --sprint-index). want[k], k = 0..N
   (0 = bot). */
static int tune_slots(const char *mode, const char *subset, int sprint_index, int N, unsigned char *want) {
    int k;
    memset(want, 0, (size_t)N + 1);
    if (!strcmp(mode, "direct")) { want[0] = 1; return 0; }
    if (strcmp(mode, "codi")) { fprintf(stderr, "codi tune-lens: --mode is direct or codi\n"); return -1; }
    if (!strcmp(subset, "all") || !strcmp(subset, "even") || !strcmp(subset, "odd")) {
        for (k = 1; k <= N; k++) want[k] = !strcmp(subset, "all") || (k % 2 == 0) == !strcmp(subset, "even");
        return 0;
    }
    while (*subset) {
        char *end;
        long v = strtol(subset, &end, 10) + (sprint_index ? 1 : 0);
        if (end == subset || (*end && *end != ',') || v < 1 || v > N) {
            fprintf(stderr, "codi tune-lens: --subset is all, even, odd or latent numbers 1..%d (0..%d with --sprint-index), e.g. 3,5\n", N, N - 1);
            return -1;
        }
        want[v] = 1;
        subset = *end ? end + 1 : end;
    }
    return 0;
}

typedef struct { const codi_model *m; const codi_tokenizer *t; const cli_prompt_args *pa; const unsigned char *want; codi_state *s;
                 int threads; float *buf; long n, cap; int failed; } tune_collect;

static int tune_collect_question(void *user, const cli_question *q) {
    tune_collect *tc = (tune_collect *)user;
    const codi_config *c = &tc->m->config;
    size_t L1 = (size_t)c->n_layers + 1, D = (size_t)c->dim;
    cli_prompt_args pa = *tc->pa;
    codi_run_opts ro = codi_run_opts_default(tc->m);
    codi_run_result rr;
    int32_t ids[4096];
    int n, k, l;
    pa.question = q->question; pa.ids = NULL;
    if ((n = cli_prompt_ids(&pa, tc->m, tc->t, ids, 4096)) < 0) { tc->failed = 1; return 1; }
    ro.n_latent = pa.latents;
    if (!tc->s || tc->s->max_pos < n + pa.latents) {               /* a state as long as the longest prompt so far */
        codi_state_free(tc->s);
        if (!(tc->s = codi_state_alloc(tc->m, n + pa.latents + 64, tc->threads))) { fprintf(stderr, "codi tune-lens: out of memory\n"); tc->failed = 1; return 1; }
    }
    if (codi_run_latents(tc->m, tc->s, ids, n, &ro, &rr)) { fprintf(stderr, "codi tune-lens: %s\n", tc->s->error); tc->failed = 1; return 1; }
    for (k = 0; k <= pa.latents; k++) {
        if (!tc->want[k]) continue;
        if (tc->n == tc->cap) {
            long nc = tc->cap ? tc->cap * 2 : 64;
            float *nb = (float *)realloc(tc->buf, sizeof(float) * (size_t)nc * L1 * D);
            if (!nb) { fprintf(stderr, "codi tune-lens: out of memory\n"); tc->failed = 1; return 1; }
            tc->buf = nb; tc->cap = nc;
        }
        for (l = 0; l < (int)L1; l++) memcpy(tc->buf + ((size_t)tc->n * L1 + l) * D, codi_state_resid(tc->s, l, n - 1 + k), sizeof(float) * D);
        tc->n++;
    }
    return 0;
}

/* Samples of an activation dataset: done rows, slots whose label is wanted, position >= 0. */
static int tune_from_acts(const char *path, const codi_model *m, const unsigned char *want, int N, codi_st_file **fp, tune_data *d) {
    char err[512];
    codi_st_file *f = codi_st_open(path, err, sizeof err);
    codi_st_tensor done, pos;
    const char *labels, *lay, *dim;
    codi__json *lj = NULL;
    const codi__json *e;
    int slot_k[1024], P = 0, q, p;
    if (!f) { fprintf(stderr, "codi tune-lens: %s\n", err); return -1; }
    *fp = f;
    if (codi_acts_check(f, m, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s: %s\n", path, err); return -1; }
    lay = codi_st_metadata(f, "layers"); dim = codi_st_metadata(f, "dim"); labels = codi_st_metadata(f, "labels");
    if (codi_st_find(f, "resid", &d->resid) || codi_st_find(f, "done", &done) || codi_st_find(f, "positions", &pos) || !labels || !lay || !dim ||
        atoi(lay) != m->config.n_layers || atoi(dim) != m->config.dim || d->resid.ndim != 4 ||
        (strcmp(d->resid.dtype, "F32") && strcmp(d->resid.dtype, "BF16")) || strcmp(done.dtype, "U8") || strcmp(pos.dtype, "I32")) {
        fprintf(stderr, "codi tune-lens: %s is not an activation dataset of this model (codi record)\n", path); return -1;
    }
    if (!(lj = codi__json_parse(labels, strlen(labels), err, sizeof err)) || lj->type != CODI__J_ARR || lj->count != d->resid.shape[1] || lj->count > 1024) {
        fprintf(stderr, "codi tune-lens: %s: bad labels metadata\n", path); codi__json_free(lj); return -1;
    }
    for (e = lj->child; e; e = e->next, P++) {       /* slot -> latent number (0 = bot), -1 for others */
        int k = -1;
        if (e->type == CODI__J_STR && !strcmp(e->str, "bot")) k = 0;
        else if (e->type == CODI__J_STR && !strncmp(e->str, "latent ", 7)) k = atoi(e->str + 7);
        slot_k[P] = k >= 0 && k <= N ? k : -1;
    }
    codi__json_free(lj);
    d->pairs = (int32_t *)malloc(sizeof(int32_t) * 2 * (size_t)d->resid.shape[0] * (size_t)P);
    if (!d->pairs) { fprintf(stderr, "codi tune-lens: out of memory\n"); return -1; }
    for (q = 0; q < d->resid.shape[0]; q++) {
        if (!((const unsigned char *)done.data)[q]) continue;
        for (p = 0; p < P; p++) {
            int32_t at;
            memcpy(&at, (const unsigned char *)pos.data + 4 * ((size_t)q * P + p), 4);
            if (slot_k[p] < 0 || !want[slot_k[p]] || at < 0) continue;
            d->pairs[2 * d->n] = q; d->pairs[2 * d->n + 1] = p; d->n++;
        }
    }
    return 0;
}

/* The identity of a training file: FNV-1a 64 of its first MiB, and its size ("" when unreadable). */
static void tune_data_id(const char *kind, const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    uint64_t h = 1469598103934665603ULL;
    long long size = 0;
    size_t n, i;
    out[0] = 0;
    if (!f) return;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (size < (1 << 20)) for (i = 0; i < n; i++) { h ^= buf[i]; h *= 1099511628211ULL; }
        size += (long long)n;
    }
    fclose(f);
    snprintf(out, cap, "%s fnv1a64 %016llx, %lld bytes", kind, (unsigned long long)h, size);
}

static int tune_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    const char *acts = NULL, *questions = NULL, *out = NULL, *recipe = "library", *mode = "codi", *subset = "all", *ckpt = NULL, *init = NULL;
    int force = 0, limit = 0, steps = 0, batch = 0, epochs = 3, sprint_norm = 0, sprint_index = 0, ckpt_every = 50, log_every = 0, held_out = -1, rc, l;
    double lr = 0, seed = 42;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--acts", CLI_STR, &acts, 0, 0, "FILE", "train on an activation dataset (codi record; its bot / latent slots)" },
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "or run the model over these questions and train on what it computes (held in memory: (L+1) x D floats per sample; for large runs record a bf16 dataset)" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "with --questions: first N questions (default all)" },
        { "--recipe", CLI_INT, &pa.recipe, 0, 1, "R", "with --questions, prompt: 0 = BOS q bot (default); 1 = BOS q <|eot_id|> bot" },
        { "--latents", CLI_INT, &pa.latents, 0, 1000, "N", "latent steps (6)" },
        { "--out", CLI_STR, &out, 0, 0, "DIR|FILE", "the lens: a directory (tuned-lens library form: params.pt + config.json) or FILE.safetensors" },
        { "--train", CLI_STR, &recipe, 0, 0, "library|sprint", "recipe: library (SGD Nesterov, lr 1.0 x (1 - 0.9), wd 1e-3, clip 1, linear decay; default) or sprint (Adam 1e-3, batch 1, 3 epochs)" },
        { "--mode", CLI_STR, &mode, 0, 0, "codi|direct", "positions trained: codi = latent positions (default); direct = the last prompt position (bot)" },
        { "--subset", CLI_STR, &subset, 0, 0, "all|even|odd|K,K", "codi mode: which latents (default all), e.g. 3,5" },
        { "--sprint-index", CLI_FLAG, &sprint_index, 0, 0, NULL, "read --subset numbers 0-based, as the sprint's code does" },
        { "--sprint-norm", CLI_FLAG, &sprint_norm, 0, 0, NULL, "the sprint's target: final norm applied twice to the last layer's output" },
        { "--steps", CLI_INT, &steps, 1, 1e9, "N", "optimiser steps (library default 250; sprint: epochs x samples)" },
        { "--batch", CLI_INT, &batch, 1, 1 << 20, "B", "samples per step (library default 64; sprint 1)" },
        { "--epochs", CLI_INT, &epochs, 1, 1e6, "E", "sprint recipe: passes over the samples (3)" },
        { "--lr", CLI_DOUBLE, &lr, 0, 1e3, "X", "learning rate (default: the recipe's)" },
        { "--seed", CLI_DOUBLE, &seed, 0, 1e15, "S", "sample order seed (42)" },
        { "--held-out", CLI_INT, &held_out, 0, 1e9, "N", "samples kept out of training to measure KL before and after (default a tenth)" },
        { "--init", CLI_STR, &init, 0, 0, "DIR|FILE", "start from this lens (default: zero translators = the logit lens)" },
        { "--checkpoint", CLI_STR, &ckpt, 0, 0, "FILE", "save the training state here every --checkpoint-every steps; an existing one is resumed" },
        { "--checkpoint-every", CLI_INT, &ckpt_every, 1, 1e9, "N", "steps between checkpoints (50)" },
        { "--log-every", CLI_INT, &log_every, 1, 1e9, "N", "print the per-layer loss every N steps (default: 20 lines per run)" },
        CLI_FORCE_OPT(&force),
        CLI_END };
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_tuned_lens *lens = NULL;
    codi_lens_trainer *tr = NULL;
    codi_st_file *af = NULL;
    tune_data d;
    tune_collect tc;
    codi_lens_train_opts o;
    unsigned char want[1001];
    double *loss = NULL, *before = NULL, *after = NULL;
    char err[512], data_id[160];
    cli_progress *prog = NULL;
    memset(&d, 0, sizeof d); memset(&tc, 0, sizeof tc);
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!out || (!acts) == (!questions)) { fprintf(stderr, "codi tune-lens: give --out and exactly one of --acts, --questions\n"); return 2; }
    if (strcmp(recipe, "library") && strcmp(recipe, "sprint")) { fprintf(stderr, "codi tune-lens: --train is library or sprint\n"); return 2; }
    if (tune_slots(mode, subset, sprint_index, pa.latents, want)) return 2;
    {                                              /* outputs checked before the model runs */
        const char *in[] = { ma.model, ma.base, ma.tokenizer, acts, questions, init };
        if (cli_out_check("tune-lens", out, (codi__ends_with(out, ".safetensors") ? CLI_OUT_FILE : CLI_OUT_DIR) | (ckpt ? CLI_OUT_RESUME : 0), force, in, CLI_N(in))
            || (ckpt && cli_out_check("tune-lens", ckpt, CLI_OUT_RESUME, force, in, CLI_N(in)))) return 2;
    }
    if (!(m = cli_load_model(&ma))) return 1;
    rc = 1;
    d.m = m; d.sprint_norm = sprint_norm;
    if (!(d.tmp = (float *)malloc(sizeof(float) * (size_t)m->config.dim))) goto done;
    if (acts) { if (tune_from_acts(acts, m, want, pa.latents, &af, &d)) goto done; }
    else {
        int n_bad = 0;
        if (!(t = cli_load_tokenizer(&ma, m, 0))) goto done;
        tc.m = m; tc.t = t; tc.pa = &pa; tc.want = want; tc.threads = ma.threads;
        fprintf(stderr, "codi tune-lens: running the model over %s\n", questions);
        if (cli_for_each_question(questions, limit, 0, 0, tune_collect_question, &tc, &n_bad) < 0 || tc.failed) { codi_state_free(tc.s); goto done; }
        codi_state_free(tc.s);
        d.mem = tc.buf; d.n = tc.n;
    }
    if (held_out < 0) held_out = (int)(d.n / 10);
    if (d.n - held_out < 1) { fprintf(stderr, "codi tune-lens: %ld samples, %d held out: nothing to train on\n", d.n, held_out); goto done; }
    d.n_train = d.n - held_out;
    if (!strcmp(recipe, "library")) o = codi_lens_train_library(steps ? steps : 250, batch ? batch : 64);
    else {
        o = codi_lens_train_sprint(d.n_train);
        o.total_steps = steps ? steps : (long)epochs * d.n_train;
        if (batch) o.batch = batch;
    }
    if (lr > 0) o.lr = lr;
    o.seed = (uint64_t)seed; o.n_threads = ma.threads;
    tune_data_id(acts ? "acts" : "questions", acts ? acts : questions, data_id, sizeof data_id);
    o.data_id = data_id[0] ? data_id : NULL;
    if (!(lens = init ? codi_tuned_lens_load(m, init, err, sizeof err) : codi_tuned_lens_new(m))) { fprintf(stderr, "codi tune-lens: %s\n", init ? err : "out of memory"); goto done; }
    if (!(tr = codi_lens_trainer_new(m, lens, &o, d.n_train, tune_train_sample, &d, err, sizeof err))) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
    if (ckpt && cli_exists(ckpt)) {
        codi_st_file *cf = codi_st_open(ckpt, err, sizeof err);
        const char *was = cf ? codi_st_metadata(cf, "data") : NULL;
        int other = was && o.data_id && strcmp(was, o.data_id);
        if (other) fprintf(stderr, "codi tune-lens: %s was trained on other data (%s; now %s)%s\n", ckpt, was, o.data_id,
                           force ? ": continuing on this data (--force)" : ": give the same --acts / --questions, or --force to continue on this data");
        if (cf) codi_st_close(cf);
        if (other && !force) { rc = 2; goto done; }
        if (codi_lens_trainer_resume(tr, ckpt, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
        fprintf(stderr, "codi tune-lens: resumed %s at step %ld\n", ckpt, codi_lens_trainer_steps_done(tr));
    }
    loss = (double *)malloc(sizeof(double) * (size_t)m->config.n_layers);
    before = (double *)malloc(sizeof(double) * (size_t)m->config.n_layers);
    after = (double *)malloc(sizeof(double) * (size_t)m->config.n_layers);
    if (!loss || !before || !after) goto done;
    if (held_out && codi_tuned_lens_eval(m, NULL, tune_eval_sample, &d, 0, held_out, ma.threads, before, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
    fprintf(stderr, "codi tune-lens: %ld samples (%ld train, %d held out), %s recipe, %ld steps of %d, lr %g\n",
            d.n, d.n_train, held_out, recipe, o.total_steps, o.batch, o.lr);
    if (!log_every) log_every = o.total_steps / 20 > 0 ? (int)(o.total_steps / 20) : 1;
    prog = cli_progress_start("tune-lens", o.total_steps, codi_lens_trainer_steps_done(tr));
    while (codi_lens_trainer_steps_done(tr) < o.total_steps) {
        long s;
        if (codi_lens_trainer_step(tr, loss)) { fprintf(stderr, "\ncodi tune-lens: %s\n", codi_lens_trainer_error(tr)); goto done; }
        s = codi_lens_trainer_steps_done(tr);
        if (s % log_every == 0 || s == o.total_steps) {
            fprintf(stderr, "%sstep %ld/%ld  KL per layer:", prog && prog->tty ? "\r\033[K" : "", s, o.total_steps);
            for (l = 0; l < m->config.n_layers; l++) fprintf(stderr, " %.4f", loss[l]);
            fprintf(stderr, "\n");
        }
        if (ckpt && (s % ckpt_every == 0 || s == o.total_steps) && codi_lens_trainer_save(tr, ckpt, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
        cli_progress_update(prog, s);
    }
    cli_progress_end(prog); prog = NULL;
    if (codi__ends_with(out, ".safetensors") ? codi_tuned_lens_save(lens, out, ma.model, err, sizeof err)
                                             : (!cli_is_dir(out) && mkdir(out, 0777) != 0 && errno != EEXIST ? (snprintf(err, sizeof err, "cannot create %s", out), -1)
                                                                                                              : codi_tuned_lens_save_dir(lens, out, ma.model, err, sizeof err))) {
        fprintf(stderr, "codi tune-lens: %s\n", err); goto done;
    }
    if (held_out) {
        if (codi_tuned_lens_eval(m, lens, tune_eval_sample, &d, 0, held_out, ma.threads, after, err, sizeof err)) { fprintf(stderr, "codi tune-lens: %s\n", err); goto done; }
        printf("held-out KL(final || lens) per residual index, %d samples:\nlayer  logit lens  tuned lens\n", held_out);
        for (l = 0; l < m->config.n_layers; l++) printf("%5d  %10.4f  %10.4f\n", l, before[l], after[l]);
    }
    printf("wrote %s\n", out);
    rc = 0;
done:
    if (prog) cli_progress_end(prog);
    free(loss); free(before); free(after); free(d.tmp); free(d.pairs); free(tc.buf);
    codi_lens_trainer_free(tr); codi_tuned_lens_free(lens);
    if (af) codi_st_close(af);
    codi_tokenizer_free(t); codi_model_free(m);
    return rc;
}

static const cli_command cmd_tune_lens = {
    "tune-lens", "train a tuned lens on CODI's latent positions (tuned-lens library or sprint recipe)",
    "codi tune-lens --model PATH (--acts FILE | --questions FILE.jsonl) --out DIR|FILE.safetensors [options]",
    "Trains one affine translator per residual index 0..L-1 so that lm_head(final_norm(h + W h + b))\n"
    "matches the model's own final distribution (loss: KL(final || lens), per layer). --train library\n"
    "follows the tuned-lens library's train_loop (zero-initialised translators, SGD with Nesterov\n"
    "momentum 0.9, lr 1.0 x (1 - 0.9), weight decay 1e-3, gradient norm clipped to 1, lr decayed\n"
    "linearly to 0); --train sprint the Latent Reasoning Sprint's (Adam lr 1e-3, batch 1, 3 epochs;\n"
    "their identity-initialised affine map is the same map as zero residual translators). Samples\n"
    "are the residuals at bot (--mode direct) or at the latent positions (--mode codi, --subset).\n"
    "Threads (--threads) do not change the result; --checkpoint makes a run resumable. Prints the\n"
    "per-layer loss as it goes and the held-out KL of the logit lens and of the trained lens.\n\n"
    "Examples:\n"
    "  codi tune-lens --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --out nano_lens\n"
    "  codi tune-lens --model M --acts gsm8k_train.safetensors --train sprint --subset even --out even.safetensors\n"
    "  codi tune-lens --model M --acts A --steps 500 --batch 256 --threads 8 --checkpoint lens.ckpt --out lens_dir",
    tune_run };
