/* codi kv-response: the Latent Reasoning Sprint #4 protocol "steer latent l, run one more latent,
   read the new KV". For every question, CODI runs l + 1 latent steps plain and under each steering
   spec (e.g. the principal-component specs `codi pca --steer-components` writes) and under random
   controls of the same norm; at the steered latent's cache slot and at the next latent's slot it
   compares every layer's cached keys and values (post-RoPE) with the plain run's: relative change
   |K' - K| / |K| and cosine, averaged over the questions. */

#define KVR_MAX_COND 66

typedef struct {
    const codi_model *m; const codi_tokenizer *t; codi_state *s;
    cli_prompt_args pa; int step;
    const codi_steer *cond[KVR_MAX_COND]; int n_cond;
    int keys_pre;           /* 1: compare keys before RoPE (--keys pre) */
    double *sum;            /* [cond, 2 slots, L, 4]: key rel, value rel, key cos, value cos */
    float *base;            /* [2 slots, L, 2, KVD] the plain run's K and V */
    int n, failed;
    cli_progress *progress;
} kvr_ctx;

/* K and V of every layer at slot pos into out [L, 2, KVD]; keys rotated back before RoPE when pre. */
static void kvr_read(const codi_model *m, codi_state *s, int pre, int pos, float *out) {
    int L = m->config.n_layers, KVH = m->config.n_kv_heads, HD = m->config.head_dim, l, h, KVD = KVH * HD;
    for (l = 0; l < L; l++) {
        for (h = 0; h < KVH; h++) {
            memcpy(out + ((size_t)l * 2) * KVD + (size_t)h * HD, codi_state_key(s, l, h, pos), sizeof(float) * HD);
            memcpy(out + ((size_t)l * 2 + 1) * KVD + (size_t)h * HD, codi_state_value(s, l, h, pos), sizeof(float) * HD);
        }
        if (pre) codi_rope_rotate(m, pos, 1, out + ((size_t)l * 2) * KVD, KVH);
    }
}

/* |a - b| / |b| and cos(a, b) of n floats. */
static void kvr_compare(const float *a, const float *b, int n, double *rel, double *cosv) {
    double d = 0, bb = 0, aa = 0, ab = 0;
    int i;
    for (i = 0; i < n; i++) { d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); bb += (double)b[i] * b[i]; aa += (double)a[i] * a[i]; ab += (double)a[i] * b[i]; }
    *rel = bb > 0 ? sqrt(d / bb) : 0;
    *cosv = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 1;
}

/* l + 1 latent steps under condition c (-1: plain); K / V of the steered and the next slot into kv [2, L, 2, KVD]. */
static int kvr_run(kvr_ctx *k, const int32_t *ids, int n, int c, float *kv) {
    const codi_config *cf = &k->m->config;
    size_t per_slot = (size_t)cf->n_layers * 2 * cf->n_kv_heads * cf->head_dim;
    codi_run_opts ro = codi_run_opts_default(k->m);
    codi_run_result rr;
    int slot;
    ro.n_latent = k->step + 1;
    codi_state_clear_hooks(k->s);
    if (c >= 0 && codi_steer_install(k->cond[c], k->s, &ro)) return -1;
    if (codi_run_latents(k->m, k->s, ids, n, &ro, &rr)) return -1;
    for (slot = 0; slot < 2; slot++)            /* latent l's slot is T0 + l - 1; the next one follows */
        kvr_read(k->m, k->s, k->keys_pre, n + k->step - 1 + slot, kv + slot * per_slot);
    return 0;
}

static int kvr_question(void *user, const cli_question *q) {
    kvr_ctx *k = (kvr_ctx *)user;
    const codi_config *cf = &k->m->config;
    int L = cf->n_layers, KVD = cf->n_kv_heads * cf->head_dim, c, slot, l, w, n;
    size_t per_slot = (size_t)L * 2 * KVD;
    float *kv = k->base + 2 * per_slot;          /* scratch after the plain run's copy */
    cli_prompt_args pa = k->pa;
    int32_t ids[4096];
    pa.question = q->question;
    if ((n = cli_prompt_ids(&pa, k->m, k->t, ids, 4096)) < 0 || n + k->step + 2 > k->s->max_pos) { k->failed++; return 0; }
    if (kvr_run(k, ids, n, -1, k->base)) goto fail;
    for (c = 0; c < k->n_cond; c++) {
        if (kvr_run(k, ids, n, c, kv)) goto fail;
        for (slot = 0; slot < 2; slot++)
            for (l = 0; l < L; l++)
                for (w = 0; w < 2; w++) {
                    double rel, cosv, *acc = k->sum + (((size_t)c * 2 + slot) * L + l) * 4;
                    size_t off = slot * per_slot + ((size_t)l * 2 + w) * KVD;
                    kvr_compare(kv + off, k->base + off, KVD, &rel, &cosv);
                    acc[w] += rel; acc[2 + w] += cosv;
                }
    }
    k->n++;
    cli_progress_update(k->progress, k->n + k->failed);
    return 0;
fail:
    fprintf(stderr, "codi kv-response: question %d (line %d): %s\n", q->index, q->line, k->s->error);
    k->failed++;
    return 0;
}

/* A heatmap of condition x layer: the mean relative change of values (w = 1) or keys (w = 0) at a slot.
   0, or 1 after a message when it could not be written. */
static int kvr_heatmap(const kvr_ctx *k, const char *prefix, const char *const *names, int slot, int w) {
    int L = k->m->config.n_layers, c, l;
    double *v = (double *)malloc(sizeof(double) * (size_t)k->n_cond * L);
    char path[4096], title[160], (*cols)[12] = (char (*)[12])malloc(12 * (size_t)L);
    const char **colp = (const char **)malloc(sizeof(char *) * (size_t)L);
    svg_heatmap_spec sp;
    double hi = 0;
    int bad = 0;
    if (!v || !cols || !colp) { free(v); free(cols); free(colp); fprintf(stderr, "codi kv-response: out of memory\n"); return 1; }
    for (c = 0; c < k->n_cond; c++)
        for (l = 0; l < L; l++) {
            v[(size_t)c * L + l] = k->sum[(((size_t)c * 2 + slot) * L + l) * 4 + w] / (k->n ? k->n : 1);
            if (v[(size_t)c * L + l] > hi) hi = v[(size_t)c * L + l];
        }
    for (l = 0; l < L; l++) { snprintf(cols[l], 12, "%d", l); colp[l] = cols[l]; }
    memset(&sp, 0, sizeof sp);
    snprintf(title, sizeof title, "relative change of cached %s at the %s slot (step %d%s)", w ? "values" : "keys",
             slot ? "next latent's" : "steered latent's", k->step + slot, slot ? ", one latent after the edit" : "");
    sp.rows = k->n_cond; sp.cols = L; sp.value = v; sp.vmin = 0; sp.vmax = hi > 0 ? hi : 1; sp.colormap = SVG_VIRIDIS;
    sp.row_labels = names; sp.col_labels = colp; sp.title = title; sp.xlabel = "layer"; sp.ylabel = "condition";
    sp.colorbar_label = "|KV' - KV| / |KV|"; sp.cell_w = 40; sp.cell_h = 20;
    snprintf(path, sizeof path, "%s_%s_%s.svg", prefix, slot ? "next" : "steered", w ? "values" : "keys");
    if (svg_heatmap(path, &sp)) { fprintf(stderr, "codi kv-response: cannot write %s\n", path); bad = 1; }
    free(v); free(cols); free(colp);
    return bad;
}

static int kv_response_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_prompt_args pa = cli_prompt_defaults();
    cli_list specs;
    const char *questions = NULL, *out = NULL, *keys = NULL;
    int limit = 0, controls = 1, seed = 1, step = 3, keys_pre, force = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--recipe", CLI_INT, &pa.recipe, 0, 1, "R", "prompt: 0 = BOS q bot (default); 1 = BOS q <|eot_id|> bot" },
        { "--questions", CLI_STR, &questions, 0, 0, "FILE", "JSONL questions (required)" },
        { "--limit", CLI_INT, &limit, 0, 1e9, "N", "only the first N questions (0: all)" },
        { "--steer", CLI_LIST, &specs, 0, 0, "SPEC.json", "a steering spec editing latent step --step (repeatable; at least one)" },
        { "--step", CLI_INT, &step, 1, 999, "L", "the steered latent step: runs L + 1 latents and reads slots L and L + 1 (3)" },
        { "--random-controls", CLI_INT, &controls, 0, 8, "N", "per spec, N seeded random directions of the same norm (1)" },
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "first seed of the random controls (1)" },
        { "--out", CLI_STR, &out, 0, 0, "PREFIX", "writes PREFIX.csv and PREFIX_{steered,next}_{keys,values}.svg (required)" },
        { "--keys", CLI_STR, &keys, 0, 0, "post|pre", "keys compared after RoPE, as cached (default), or before RoPE (same numbers up to rounding: see above)" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    kvr_ctx k;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_steer *owned[KVR_MAX_COND];
    char names[KVR_MAX_COND][160];
    const char *namep[KVR_MAX_COND];
    int prc, i, r, c, slot, l, n_bad = 0, rc = 1, L;
    size_t per_slot;
    FILE *csv = NULL;
    char path[4096];
    memset(&specs, 0, sizeof specs);
    memset(&k, 0, sizeof k);
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!questions || !out || !specs.n) { fprintf(stderr, "codi kv-response: --questions, --steer and --out are required\n"); return 2; }
    if ((keys_pre = cli_keys_option("kv-response", keys)) < 0) return 2;
    if (specs.n * (1 + controls) > KVR_MAX_COND) { fprintf(stderr, "codi kv-response: at most %d conditions (specs x (1 + controls))\n", KVR_MAX_COND); return 2; }
    snprintf(path, sizeof path, "%s.csv", out);
    {
        const char *in[CLI_LIST_MAX + 3];
        int n_in = 0;
        in[n_in++] = ma.model; in[n_in++] = ma.tokenizer; in[n_in++] = questions;
        for (i = 0; i < specs.n; i++) in[n_in++] = specs.v[i];
        if (cli_out_check("kv-response", path, CLI_OUT_STREAM, force, in, n_in)) return 2;
        for (i = 0; i < 4; i++) {                    /* the heatmaps kvr_heatmap writes */
            snprintf(path, sizeof path, "%s_%s_%s.svg", out, i & 2 ? "next" : "steered", i & 1 ? "values" : "keys");
            if (cli_out_check("kv-response", path, CLI_OUT_STREAM, force, in, n_in)) return 2;
        }
    }
    if (!(m = cli_load_model(&ma)) || !(t = cli_load_tokenizer(&ma, m, 0))) goto done;
    L = m->config.n_layers;
    for (i = 0; i < specs.n; i++) {
        char err[1024];
        codi_steer *st = codi_steer_load(m, specs.v[i], err, sizeof err);
        if (!st) { fprintf(stderr, "codi kv-response: %s: %s\n", specs.v[i], err); goto done; }
        owned[k.n_cond] = st; k.cond[k.n_cond] = st;
        snprintf(names[k.n_cond], sizeof names[0], "%s", st->name); namep[k.n_cond] = names[k.n_cond]; k.n_cond++;
        for (r = 0; r < controls; r++) {
            if (!(owned[k.n_cond] = codi_steer_random_like(st, (uint64_t)seed + r))) { fprintf(stderr, "codi: out of memory\n"); goto done; }
            k.cond[k.n_cond] = owned[k.n_cond];
            snprintf(names[k.n_cond], sizeof names[0], "%s random %d", st->name, seed + r); namep[k.n_cond] = names[k.n_cond]; k.n_cond++;
        }
    }
    per_slot = (size_t)L * 2 * m->config.n_kv_heads * m->config.head_dim;
    k.m = m; k.t = t; k.pa = pa; k.step = step; k.keys_pre = keys_pre;
    k.sum = (double *)calloc((size_t)k.n_cond * 2 * L * 4, sizeof(double));
    k.base = (float *)malloc(sizeof(float) * 4 * per_slot);
    k.s = codi_state_alloc(m, 4096 + step + 2, ma.threads);
    if (!k.sum || !k.base || !k.s) { fprintf(stderr, "codi: out of memory\n"); goto done; }
    k.progress = cli_progress_start("questions", cli_count_lines(questions, limit), 0);
    if (cli_for_each_question(questions, limit, 0, 0, kvr_question, &k, &n_bad) < 0) goto done;
    cli_progress_end(k.progress); k.progress = NULL;
    if (!k.n) { fprintf(stderr, "codi kv-response: no question ran\n"); goto done; }
    snprintf(path, sizeof path, "%s.csv", out);
    if (!(csv = cli_out_open(path, "w"))) goto done;
    fprintf(csv, "condition,slot,latent,layer,key_rel_change,value_rel_change,key_cos,value_cos,questions\n");
    for (c = 0; c < k.n_cond; c++) {
        double mean_v[2] = { 0, 0 };
        for (slot = 0; slot < 2; slot++)
            for (l = 0; l < L; l++) {
                const double *a = k.sum + (((size_t)c * 2 + slot) * L + l) * 4;
                fputc('"', csv);
                for (i = 0; names[c][i]; i++) { if (names[c][i] == '"') fputc('"', csv); fputc(names[c][i], csv); }
                fprintf(csv, "\",%s,%d,%d,%.6g,%.6g,%.6g,%.6g,%d\n", slot ? "next" : "steered", step + slot, l,
                        a[0] / k.n, a[1] / k.n, a[2] / k.n, a[3] / k.n, k.n);
                mean_v[slot] += a[1] / k.n / L;
            }
        printf("{\"condition\": ");
        cli_json_string(stdout, names[c]);
        printf(", \"questions\": %d, \"step\": %d, \"value_rel_change_steered\": %.6g, \"value_rel_change_next\": %.6g}\n",
               k.n, step, mean_v[0], mean_v[1]);
    }
    if (cli_out_close(csv) != 0) { csv = NULL; goto done; }
    csv = NULL;
    for (i = slot = 0; slot < 2; slot++) { i |= kvr_heatmap(&k, out, namep, slot, 0); i |= kvr_heatmap(&k, out, namep, slot, 1); }
    if (i) goto done;
    fprintf(stderr, "codi kv-response: %d questions (%d failed, %d bad lines): %s.csv, %s_*.svg\n", k.n, k.failed, n_bad, out, out);
    rc = k.failed || n_bad ? 1 : 0;
done:
    cli_out_abort(csv);
    cli_progress_end(k.progress);
    for (c = 0; c < k.n_cond; c++) codi_steer_free(owned[c]);
    free(k.sum); free(k.base);
    codi_state_free(k.s);
    codi_tokenizer_free(t);
    codi_model_free(m);
    return rc;
}

static const cli_command cmd_kv_response = {
    "kv-response", "steer a latent, run one more latent, and measure how each layer's new K/V moved",
    "codi kv-response --model PATH --questions FILE.jsonl --steer SPEC.json [--steer ...] --step L --out PREFIX",
    "The Latent Reasoning Sprint #4 protocol. Per question: l + 1 latent steps plain, under each spec and\n"
    "under --random-controls seeded random directions of each spec's norm (codi_steer_random_like). At the\n"
    "steered latent's cache slot (T0 + l - 1) and at the next latent's (T0 + l), every layer's cached keys\n"
    "(post-RoPE) and values are compared with the plain run's: |KV' - KV| / |KV| and cosine, averaged over\n"
    "the questions. --keys pre compares the keys rotated back before RoPE (codi_key_pre_rope); both runs'\n"
    "keys at a slot share its rotation, which keeps norms and angles, so the numbers agree with post-RoPE\n"
    "ones up to float rounding: a check that a change is not a rotation artefact.\n"
    "Writes PREFIX.csv (condition, slot, latent, layer, ...) and four SVG heatmaps\n"
    "(condition x layer), and prints one JSON line per condition. The specs should edit latent step L\n"
    "(\"at\": \"latent_input\", \"step\": L), such as those `codi pca --steer-components N --steer-step L` writes.\n\n"
    "Examples:\n"
    "  codi pca --acts acts.safetensors --tensor final --steer-components 2 --steer-step 3 --out pca\n"
    "  codi kv-response --model M --questions data/templates.jsonl --limit 100 --steer pca/steer_final.L16.pc1.sd2.json --step 3 --out kvr",
    kv_response_run
};
