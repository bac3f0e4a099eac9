/* codi record: run CODI over a question file and store chosen activations as an activation
   dataset (codi_lens.h >>acts; the layout every lens / steering / probe tool reads). */
#include "positions.h"

typedef struct { int32_t *ids; int n, index; double gold; int has_gold; } record_question;

typedef struct { record_question *q; int n, cap, max_prompt; const codi_model *m; const codi_tokenizer *t; const cli_prompt_args *pa; int failed; } record_list;

/* Tokenizes every question first: the dataset's shapes need the count and the longest prompt. */
static int record_collect(void *user, const cli_question *q) {
    record_list *rl = (record_list *)user;
    cli_prompt_args pa = *rl->pa;
    int32_t ids[4096];
    int n;
    pa.question = q->question; pa.ids = NULL;
    if ((n = cli_prompt_ids(&pa, rl->m, rl->t, ids, 4096)) < 0) { rl->failed = 1; return 1; }
    if (rl->n == rl->cap) {
        int nc = rl->cap ? rl->cap * 2 : 256;
        record_question *nq = (record_question *)realloc(rl->q, sizeof *nq * (size_t)nc);
        if (!nq) { rl->failed = 1; return 1; }
        rl->q = nq; rl->cap = nc;
    }
    rl->q[rl->n].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    if (!rl->q[rl->n].ids) { rl->failed = 1; return 1; }
    memcpy(rl->q[rl->n].ids, ids, sizeof(int32_t) * (size_t)n);
    rl->q[rl->n].n = n; rl->q[rl->n].index = q->index; rl->q[rl->n].gold = q->gold; rl->q[rl->n].has_gold = q->has_gold;
    if (n > rl->max_prompt) rl->max_prompt = n;
    rl->n++;
    return 0;
}

/* A run in the batched runner: question q, its latent inputs (the run's opts.latents). */
typedef struct record_job { int q; float *lat; struct record_job *next; } record_job;

/* What a finished run needs: the dataset, the gather buffers, the free jobs. */
typedef struct {
    const codi_model *m; const codi_tokenizer *t; const record_list *rl; const pos_spec *ps;
    codi_acts *acts; cli_progress *prog;
    float *resid, *fin, *key, *val;
    int32_t *pos;
    int latents, failed;
    record_job *free_jobs;
} record_ctx;

/* A run ended: its row (positions gathered from its final state) goes into the dataset at its
   question's place, done flag last (codi_acts_write), so rows land where they belong whatever
   order the runs end in. Nonzero stops the batch. */
static int record_done(void *user, const codi_batch_result *r) {
    record_ctx *c = (record_ctx *)user;
    record_job *job = (record_job *)r->user;
    const record_question *q = &c->rl->q[job->q];
    codi_state *s = r->state;
    const codi_run_result *rr = r->result;
    codi_acts_row row;
    char text[4096], err[512];
    double pred;
    int p;
    job->next = c->free_jobs; c->free_jobs = job;
    if (r->status) { fprintf(stderr, "codi record: question %d: %s\n", q->index, r->error); c->failed = 1; return 1; }
    for (p = 0; p < c->ps->n; p++) c->pos[p] = pos_resolve(c->ps, p, rr->prompt_len, rr->n_answer, s->n_pos);
    codi_acts_gather(c->m, s, c->pos, c->ps->n, c->resid, c->fin, c->key, c->val);
    codi_decode(c->t, rr->answer, rr->n_answer, 1, text, sizeof text);
    memset(&row, 0, sizeof row);
    row.resid = c->resid; row.final = c->fin; row.latent_inputs = c->latents ? job->lat : NULL; row.key = c->key; row.value = c->val; row.positions = c->pos;
    row.prompt_ids = q->ids; row.n_prompt = q->n; row.answer_ids = rr->answer; row.n_answer = rr->n_answer;
    row.gold = q->has_gold ? q->gold : NAN;
    row.prediction = codi_extract_answer(text, &pred) ? pred : NAN;
    row.correct = q->has_gold && row.prediction == q->gold;
    row.question_index = q->index;
    if (codi_acts_write(c->acts, job->q, &row, err, sizeof err)) { fprintf(stderr, "codi record: %s\n", err); c->failed = 1; return 1; }
    cli_progress_update(c->prog, codi_acts_count_done(c->acts));
    return 0;
}

/* FNV-1a, 64 bits, of n bytes continuing from h. */
static uint64_t record_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    while (n--) { h ^= *b++; h *= 1099511628211ull; }
    return h;
}

static int record_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    const char *questions = NULL, *out = NULL, *positions = "latents", *dtype = "f32", *shard = NULL;
    int kv = 0, limit = 0, max_answer = 32, overwrite = 0, max_new = 0, n_new = 0, shard_k = 0, shard_n = 0, n_bad = 0, rc, i;
    int batch = CLI_BATCH_DEFAULT, n_todo, n_jobs = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--questions", CLI_STR, &questions, 0, 0, "FILE.jsonl", "questions ({\"question\": ..., \"answer\": ...} lines)" },
        { "--out", CLI_STR, &out, 0, 0, "FILE", "the activation dataset (.safetensors); an existing one is resumed" },
        { "--positions", CLI_STR, &positions, 0, 0, "SPEC", "latents (bot + latent 1..N, default), prompt, answer, all, or a list: bot,latent3,answer1,prompt0,17" },
        { "--dtype", CLI_STR, &dtype, 0, 0, "f32|bf16", "float tensors' type (default f32)" },
        { "--kv", CLI_FLAG, &kv, 0, 0, NULL, "also record keys and values at the positions: key (post-RoPE, as cached), key_pre_rope (before RoPE), value" },
        CLI_RECIPE_OPT(&pa.recipe),
        CLI_LATENTS_OPT(&pa.latents, 0, 1000),
        CLI_MAX_ANSWER_OPT(&max_answer, 1, 32),
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "first N questions only (default all)" },
        { "--shard", CLI_STR, &shard, 0, 0, "K/N", "every N-th question from the K-th (run N processes into N files)" },
        { "--overwrite", CLI_FLAG, &overwrite, 0, 0, NULL, "start --out afresh instead of resuming it" },
        { "--max-new", CLI_INT, &max_new, 0, 1e9, "N", "record at most N more questions, then stop (time-boxed jobs; run again to continue)" },
        { "--batch", CLI_INT, &batch, 1, 1024, "N", "runs advanced together through one pass over the weights (codi_batch_*) on --threads; "
          "1: codi_run's results bit for bit; default " CLI_QUOTE(CLI_BATCH_DEFAULT) },
        CLI_END };
    record_list rl;
    pos_spec ps;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_acts *acts = NULL;
    codi_batch *b = NULL;
    record_job *jobs = NULL;
    record_ctx ctx;
    codi_acts_spec sp;
    char err[512], *labels = NULL, *command = NULL, qhash[17], work[256];
    size_t cmd_len = 1;
    memset(&rl, 0, sizeof rl);
    memset(&ctx, 0, sizeof ctx);
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!questions || !out) { fprintf(stderr, "codi record: --questions FILE.jsonl and --out FILE are required\n"); return 2; }
    if (strcmp(dtype, "f32") && strcmp(dtype, "bf16")) { fprintf(stderr, "codi record: --dtype is f32 or bf16\n"); return 2; }
    if (shard && cli_parse_shard(shard, &shard_k, &shard_n)) return 2;
    if (pos_parse("record", positions, pa.latents, &ps) || pos_check("record", &ps, -1, max_answer)) return 2;
    {
        const char *in[] = { ma.model, ma.base, ma.tokenizer, questions };
        if (cli_out_check("record", out, CLI_OUT_RESUME, 0, in, CLI_N(in))) return 2;
    }
    if (!(m = cli_load_model(&ma))) return 1;
    rc = 1;
    if (!(t = cli_load_tokenizer(&ma, m, 0))) goto done;
    rl.m = m; rl.t = t; rl.pa = &pa;
    if (cli_for_each_question(questions, limit, shard_k, shard_n, record_collect, &rl, &n_bad) < 0 || rl.failed) goto done;
    if (!rl.n) { fprintf(stderr, "codi record: no questions in %s\n", questions); goto done; }
    if (pos_check("record", &ps, rl.max_prompt, max_answer)) { rc = 2; goto done; }
    pos_size(&ps, rl.max_prompt, max_answer);
    for (i = 0; i < argc; i++) cmd_len += strlen(argv[i]) + 1;
    if (!(labels = pos_labels_json(&ps)) || !(command = (char *)malloc(cmd_len + 8))) { fprintf(stderr, "codi record: out of memory\n"); goto done; }
    strcpy(command, "codi");
    for (i = 0; i < argc; i++) { strcat(command, " "); strcat(command, argv[i]); }
    memset(&sp, 0, sizeof sp);
    sp.n_questions = rl.n; sp.n_positions = ps.n; sp.n_latent = pa.latents; sp.max_prompt = rl.max_prompt; sp.max_answer = max_answer;
    sp.bf16 = !strcmp(dtype, "bf16"); sp.kv = kv; sp.model = ma.model; sp.questions = questions; sp.positions = positions;
    sp.labels_json = labels; sp.recipe = pa.recipe ? "1" : "0"; sp.command = command;
    if (cli_file_hash(questions, qhash)) { fprintf(stderr, "codi record: cannot read %s\n", questions); goto done; }
    sp.questions_hash = qhash;
    {   /* what a resume must find the same: the shard, --limit and the chosen questions' content */
        uint64_t h = 1469598103934665603ull;
        for (i = 0; i < rl.n; i++) {
            int32_t head[3];
            head[0] = rl.q[i].index; head[1] = rl.q[i].n; head[2] = rl.q[i].has_gold;
            h = record_fnv1a(h, head, sizeof head);
            h = record_fnv1a(h, rl.q[i].ids, sizeof(int32_t) * (size_t)rl.q[i].n);
            h = record_fnv1a(h, &rl.q[i].gold, sizeof rl.q[i].gold);
        }
        snprintf(work, sizeof work, "shard %d/%d, limit %d, questions fnv1a64 %016llx", shard_k, shard_n, limit, (unsigned long long)h);
        sp.work = work;
    }
    if (overwrite) remove(out);
    if (!(acts = codi_acts_open(m, out, &sp, 1, err, sizeof err))) { fprintf(stderr, "codi record: %s\n", err); goto done; }
    if (codi_acts_count_done(acts)) fprintf(stderr, "codi record: resuming %s: %d of %d questions already recorded\n", out, codi_acts_count_done(acts), rl.n);
    n_todo = rl.n - codi_acts_count_done(acts);
    if (max_new && n_todo > max_new) n_todo = max_new;
    {
        size_t D = (size_t)m->config.dim, L1 = (size_t)m->config.n_layers + 1, KV = (size_t)m->config.n_layers * m->config.n_kv_heads * m->config.head_dim;
        ctx.m = m; ctx.t = t; ctx.rl = &rl; ctx.ps = &ps; ctx.acts = acts; ctx.latents = pa.latents;
        ctx.resid = (float *)malloc(sizeof(float) * (size_t)ps.n * L1 * D);
        ctx.fin = (float *)malloc(sizeof(float) * (size_t)ps.n * D);
        ctx.pos = (int32_t *)malloc(sizeof(int32_t) * (size_t)ps.n);
        if (kv) { ctx.key = (float *)malloc(sizeof(float) * (size_t)ps.n * KV); ctx.val = (float *)malloc(sizeof(float) * (size_t)ps.n * KV); }
        /* the runs in flight: at most 2 x batch (the active ones and a batch's worth queued) */
        n_jobs = 2 * batch;
        if (!(jobs = (record_job *)calloc((size_t)n_jobs, sizeof *jobs))) n_jobs = 0;
        for (i = 0; i < n_jobs; i++) {
            if (!(jobs[i].lat = (float *)malloc(sizeof(float) * (size_t)(pa.latents + 1) * D))) break;
            jobs[i].next = ctx.free_jobs; ctx.free_jobs = &jobs[i];
        }
        b = codi_batch_new(m, n_todo < batch ? (n_todo > 0 ? n_todo : 1) : batch, rl.max_prompt + pa.latents + max_answer + 2, ma.threads);
        if (!ctx.resid || !ctx.fin || !ctx.pos || (kv && (!ctx.key || !ctx.val)) || !jobs || i < n_jobs || !b) { fprintf(stderr, "codi record: out of memory\n"); goto done; }
    }
    fprintf(stderr, "codi record: %d questions to record on %d threads, batch %d\n", n_todo, ma.threads, batch);
    ctx.prog = cli_progress_start("record", rl.n, codi_acts_count_done(acts));
    for (i = 0;;) {
        while (i < rl.n && n_new < n_todo && ctx.free_jobs) {     /* keep a batch's worth queued */
            codi_batch_request rq;
            record_job *job = ctx.free_jobs;
            if (codi_acts_done(acts, i)) { i++; continue; }
            memset(&rq, 0, sizeof rq);
            rq.ids = rl.q[i].ids; rq.n_ids = rl.q[i].n;
            rq.opts = codi_run_opts_default(m);
            rq.opts.n_latent = pa.latents; rq.opts.max_answer = max_answer; rq.opts.latents = job->lat;
            rq.user = job;
            if (codi_batch_submit(b, &rq)) { fprintf(stderr, "codi record: question %d: %s\n", rl.q[i].index, codi_batch_error(b)); goto done; }
            ctx.free_jobs = job->next; job->q = i;
            i++; n_new++;
        }
        if (!codi_batch_pending(b)) break;
        if (codi_batch_step(b, record_done, &ctx) < 0) {
            if (!ctx.failed) fprintf(stderr, "codi record: %s\n", codi_batch_error(b));
            goto done;
        }
    }
    cli_progress_end(ctx.prog); ctx.prog = NULL;
    rc = 0;
done:
    if (ctx.prog) cli_progress_end(ctx.prog);
    n_new = acts ? codi_acts_count_done(acts) : 0;
    if (acts && codi_acts_close(acts, err, sizeof err)) { fprintf(stderr, "codi record: %s\n", err); rc = 1; }
    if (!rc) printf("%s: %d of %d questions x %d positions (%s), %s%s\n", out, n_new, rl.n, ps.n, positions, dtype, kv ? ", with K/V" : "");
    for (i = 0; i < rl.n; i++) free(rl.q[i].ids);
    for (i = 0; i < n_jobs; i++) free(jobs[i].lat);
    free(rl.q); free(labels); free(command); free(ctx.resid); free(ctx.fin); free(ctx.pos); free(ctx.key); free(ctx.val); free(jobs);
    codi_batch_free(b); codi_tokenizer_free(t); codi_model_free(m);
    return rc;
}

static const cli_command cmd_record = {
    "record", "run CODI over a question file and store activations as a dataset numpy/torch read",
    "codi record --model PATH --questions FILE.jsonl --out FILE.safetensors [options]",
    "Runs every question (prompt, latent steps, eot, greedy answer) and writes, per question and\n"
    "chosen position: the residual entering every layer (0..L; L = the last layer's output), the\n"
    "final-norm hidden state, the latent inputs z_1..z_N, optionally (--kv) keys and values, plus\n"
    "prompt / answer ids, gold, prediction, correct. The file is sized for every question when the run\n"
    "starts and rows are filled in place, a done flag last: a killed run resumes where it stopped when\n"
    "started again with the same options (other options, another --shard / --limit or edited questions\n"
    "are refused; --overwrite starts afresh).\n"
    "The runs go through the batched runner: --batch N of them advance together, one pass over the\n"
    "weights per step, on --threads. --batch 1 gives codi_run's tensors bit for bit; batched products\n"
    "sum in another order, so tensors agree with them within ~1e-6 (relative L2) and answers are the\n"
    "same (tests/test_batch_runners.sh); a resumed batched run agrees with an uninterrupted one likewise.\n"
    "Keys come twice: \"key\" after RoPE, as the cache holds them (HF past_key_values, TransformerLens\n"
    "hook_rot_k), and \"key_pre_rope\", the same keys rotated back by their position's angles (W_k times the\n"
    "attention-normed residual, hook_k): comparable across positions; pca / probe --tensor, vectors and\n"
    "kv-response --keys pre read them.\n"
    "Layout: codi_lens.h, section >>acts (read it with safetensors.numpy.load_file).\n\n"
    "Examples:\n"
    "  codi record --model models/codi-nano/codi_nano.bin --questions models/codi-nano/test.jsonl --out nano_acts.safetensors\n"
    "  codi record --model M --questions data/gsm8k/train.jsonl --dtype bf16 --kv --out gsm8k_train.safetensors\n"
    "  codi record --model M --questions Q.jsonl --positions bot,latent1,latent6,answer1 --out some.safetensors",
    record_run };
