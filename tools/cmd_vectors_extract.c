/* codi vectors extract: one vector from a `codi record` dataset, written as a named tensor of a
   vectors file, ready for a steering spec: a single row (question Q at a slot: "patch question B's
   latent 3 into question A"), or the mean over the rows of several questions at a slot, chosen by a
   list of question indices or by a field of the questions file (Cywinski et al.'s mean-latent
   patching: same vs different intermediate result). Reads datasets with pca_acts_* (cmd_pca.c) and
   fields with probe_json_path (cmd_probe.c). */

typedef struct {
    const char *acts, *out, *name, *tensor, *keys, *slot, *list, *where, *questions, *exclude;
    int layer, head, question, force, random_question;
    cli_model_args ma;
} vex_args;

/* Question indices of "3,5,9-12" into mark[0..max] (1 = listed); the count, or -1 after a message. */
static int vex_parse_list(const char *opt, const char *s, unsigned char *mark, int max) {
    int count = 0;
    char *end;
    while (*s) {
        long a = strtol(s, &end, 10), b = a;
        if (end == s) break;
        if (*end == '-') { const char *t = end + 1; b = strtol(t, &end, 10); if (end == t) break; }
        if (a < 0 || b < a) break;
        for (; a <= b && a <= max; a++) count += !mark[a], mark[a] = 1;
        if (!*end) return count;
        if (*end != ',') break;
        s = end + 1;
    }
    fprintf(stderr, "codi vectors extract: %s needs question indices like 3,5,9-12\n", opt);
    return -1;
}

typedef struct { const char *field, *value; unsigned char *mark; int max, matched, differ; } vex_where;

/* cli_for_each_question callback: marks the questions whose field equals the value (numbers by
   value), or with differ, those that have the field with another value. */
static int vex_where_line(void *user, const cli_question *q) {
    vex_where *w = (vex_where *)user;
    const codi_json *v = probe_json_path(q->obj, w->field);
    char text[48];
    if (!v || q->index > w->max) return 0;
    if (v->type == CODI_JSON_STR) snprintf(text, sizeof text, "%s", v->str);
    else if (v->type == CODI_JSON_NUM) snprintf(text, sizeof text, "%.17g", v->num);
    else if (v->type == CODI_JSON_TRUE || v->type == CODI_JSON_FALSE) snprintf(text, sizeof text, "%s", v->type == CODI_JSON_TRUE ? "true" : "false");
    else return 0;
    if ((probe_value_cmp(text, w->value) == 0) != w->differ) { w->mark[q->index] = 1; w->matched++; }
    return 0;
}

/* The vectors file out with tensor name set to v [n] of shape (nd, shape), every other tensor of an
   existing out kept (as F32) with its "vector.NAME" description; 0, or -1 after a message. */
static int vex_write(const char *out, const char *name, const float *v, int nd, const int64_t *shape, const char *desc) {
    codi_safetensors_file *f = NULL;
    codi_safetensors_entry *e = NULL;
    float **data = NULL;
    char (*keys)[300] = NULL, err[512];
    const char **meta = NULL;
    int n_old = 0, ne = 0, nm = 0, i, rc = -1;
    struct stat st;
    if (!stat(out, &st)) {
        const char *fmt;
        if (!(f = codi_safetensors_open(out, err, sizeof err))) { fprintf(stderr, "codi vectors extract: %s (remove it or choose another --out)\n", err); return -1; }
        fmt = codi_safetensors_metadata(f, "format");
        if (!fmt || strcmp(fmt, "codi_lens.vectors.v1")) {
            fprintf(stderr, "codi vectors extract: %s exists and is not a vectors file (format %s); remove it or choose another --out\n", out, fmt ? fmt : "missing");
            codi_safetensors_close(f); return -1;
        }
        n_old = codi_safetensors_count(f);
    }
    e = (codi_safetensors_entry *)calloc((size_t)n_old + 1, sizeof *e);
    data = (float **)calloc((size_t)n_old + 1, sizeof *data);
    keys = (char (*)[300])calloc((size_t)n_old + 1, sizeof *keys);
    meta = (const char **)calloc(2 * ((size_t)n_old + 1) + 8, sizeof *meta);
    if (!e || !data || !keys || !meta) { fprintf(stderr, "codi vectors extract: out of memory\n"); goto done; }
    meta[nm++] = "format"; meta[nm++] = "codi_lens.vectors.v1";
    for (i = 0; i < n_old; i++) {                 /* the file's other tensors, kept */
        codi_safetensors_tensor t;
        const char *d;
        int k;
        if (codi_safetensors_tensor_at(f, i, &t) || !strcmp(t.name, name)) continue;
        if (!(data[ne] = (float *)malloc((t.numel ? t.numel : 1) * sizeof(float)))) { fprintf(stderr, "codi vectors extract: out of memory\n"); goto done; }
        if (codi_safetensors_read_f32(f, t.name, data[ne], t.numel, err, sizeof err) < 0) { fprintf(stderr, "codi vectors extract: %s: %s\n", out, err); goto done; }
        e[ne].name = t.name; e[ne].dtype = CODI_F32; e[ne].data = data[ne]; e[ne].ndim = t.ndim;
        for (k = 0; k < t.ndim && k < 8; k++) e[ne].shape[k] = t.shape[k];
        snprintf(keys[ne], sizeof keys[ne], "vector.%s", t.name);
        if ((d = codi_safetensors_metadata(f, keys[ne])) != NULL) { meta[nm++] = keys[ne]; meta[nm++] = d; }
        ne++;
    }
    e[ne].name = name; e[ne].dtype = CODI_F32; e[ne].data = v; e[ne].ndim = nd;
    for (i = 0; i < nd; i++) e[ne].shape[i] = shape[i];
    snprintf(keys[ne], sizeof keys[ne], "vector.%s", name);
    meta[nm++] = keys[ne]; meta[nm++] = desc;
    meta[nm++] = "codi_lens"; meta[nm++] = CLI_VERSION;
    meta[nm] = NULL;
    ne++;
    if (cli_out_safetensors(out, e, ne, meta)) goto done;
    rc = 0;
done:
    for (i = 0; data && i < n_old + 1; i++) free(data[i]);
    free(e); free(data); free(keys); free(meta);
    codi_safetensors_close(f);
    return rc;
}

static int vex_run(const cli_command *self, int argc, char **argv) {
    vex_args g;
    cli_opt opts[] = {
        { "--acts", CLI_STR, &g.acts, 0, 0, "FILE", "activation dataset written by codi record (required)" },
        { "--name", CLI_STR, &g.name, 0, 0, "NAME", "the tensor's name in --out (required)" },
        { "--out", CLI_STR, &g.out, 0, 0, "V.safetensors", "vectors file: created, or NAME added to / replaced in an existing one (required)" },
        { "--tensor", CLI_STR, &g.tensor, 0, 0, "NAME", "latent_inputs (default: z_k, what a latent_input edit sets), final, resid, key, key_pre_rope or value" },
        { "--keys", CLI_STR, &g.keys, 0, 0, "post|pre", "--tensor key: post-RoPE as cached (default) or pre-RoPE (key_pre_rope)" },
        { "--layer", CLI_INT, &g.layer, -1, 100000, "L", "resid (0..L), key / value (0..L-1): the layer (required for those)" },
        { "--head", CLI_INT, &g.head, -1, 1024, "H", "key / value: one kv head, a [HD] vector (default: all heads, [KVH, HD])" },
        { "--slot", CLI_STR, &g.slot, 0, 0, "SLOT", "the recorded position, named as codi record does: latent3, bot, answer1, prompt0, 17 (required)" },
        { "--question", CLI_INT, &g.question, -1, 1e9, "Q", "one row: the question with index Q (its line in the questions file, 0-based)" },
        { "--random-question", CLI_INT, &g.random_question, 0, 2147483647, "SEED", "or one row: a question drawn with this seed from the dataset's finished ones, --exclude left out (a patching control: another random question's latent)" },
        { "--mean-of", CLI_STR, &g.list, 0, 0, "LIST", "or the mean over these question indices, e.g. 3,5,9-12" },
        { "--where", CLI_STR, &g.where, 0, 0, "FIELD=VALUE", "or the mean over the questions whose field (a dotted path: steps.0.3) equals VALUE (FIELD!=VALUE: differs)" },
        { "--questions", CLI_STR, &g.questions, 0, 0, "FILE", "--where: the questions file the dataset was recorded from" },
        { "--force", CLI_FLAG, &g.force, 0, 0, NULL, "--where: use a questions file other than the dataset's own" },
        { "--exclude", CLI_STR, &g.exclude, 0, 0, "LIST", "question indices left out of a mean (e.g. the question to be patched)" },
        CLI_END
    };
    pca_acts a;
    unsigned char *mark = NULL, *skip = NULL;
    int max_q = 0, q, slot, rc = 1, prc, n_rows = 0, n_sel = 0, i, pre, nd;
    double *sum = NULL;
    float *row = NULL;
    int64_t shape[2];
    char desc[1024], sel[600], where_layer[48] = "";
    memset(&g, 0, sizeof g);
    g.tensor = "latent_inputs"; g.layer = -1; g.head = -1; g.question = -1; g.random_question = -1;
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.acts || !g.out || !g.name || !g.slot) { fprintf(stderr, "codi vectors extract: --acts, --slot, --name and --out are required\n"); return 2; }
    if ((g.question >= 0) + (g.random_question >= 0) + !!g.list + !!g.where != 1) {
        fprintf(stderr, "codi vectors extract: give one of --question, --random-question, --mean-of, --where\n"); return 2;
    }
    if (g.where && (!g.questions || !strchr(g.where, '=') || g.where[0] == '=')) { fprintf(stderr, "codi vectors extract: --where FIELD=VALUE needs --questions FILE\n"); return 2; }
    if (!*g.name || strlen(g.name) > 200) { fprintf(stderr, "codi vectors extract: --name must have 1 to 200 characters\n"); return 2; }
    if ((pre = cli_keys_option("vectors extract", g.keys)) < 0) return 2;
    if (pre && strcmp(g.tensor, "key")) { fprintf(stderr, "codi vectors extract: --keys applies to --tensor key, not %s\n", g.tensor); return 2; }
    if (pre) g.tensor = "key_pre_rope";
    if (strcmp(g.tensor, "latent_inputs") && strcmp(g.tensor, "final") && strcmp(g.tensor, "resid") && strcmp(g.tensor, "key") &&
        strcmp(g.tensor, "key_pre_rope") && strcmp(g.tensor, "value")) {
        fprintf(stderr, "codi vectors extract: --tensor is latent_inputs, final, resid, key, key_pre_rope or value, not '%s'\n", g.tensor); return 2;
    }
    {   /* the output before any work: an existing vectors file is added to (checked by vex_write) */
        const char *in[] = { g.acts, g.questions };
        if (cli_out_check("vectors extract", g.out, CLI_OUT_RESUME, 0, in, CLI_N(in))) return 2;
    }
    if (pca_acts_open(&a, "vectors extract", g.acts, g.tensor, g.head)) return 1;
    if (a.n_layers > 1 && (g.layer < 0 || g.layer >= a.n_layers)) {
        fprintf(stderr, "codi vectors extract: --tensor %s needs --layer 0..%d\n", g.tensor, a.n_layers - 1); rc = 2; goto done;
    }
    if (a.n_layers == 1 && g.layer > 0) { fprintf(stderr, "codi vectors extract: --tensor %s has no layers (leave out --layer)\n", g.tensor); rc = 2; goto done; }
    if ((slot = pca_slot_by_name(&a, g.slot)) < 0) {
        fprintf(stderr, "codi vectors extract: %s [%s] has no slot '%s' (its slots:", g.acts, g.tensor, g.slot);
        for (i = 0; i < a.P; i++) fprintf(stderr, "%s %s", i ? "," : "", a.slot_label[i]);
        fprintf(stderr, ")\n"); rc = 2; goto done;
    }
    for (q = 0; q < a.Q; q++) if (a.qindex[q] > max_q) max_q = a.qindex[q];
    mark = (unsigned char *)calloc((size_t)max_q + 1, 1); skip = (unsigned char *)calloc((size_t)max_q + 1, 1);
    sum = (double *)calloc((size_t)a.row, sizeof(double)); row = (float *)malloc((size_t)a.row * sizeof(float));
    if (!mark || !skip || !sum || !row) { fprintf(stderr, "codi vectors extract: out of memory\n"); goto done; }
    if (g.question >= 0) {
        if (g.question <= max_q) mark[g.question] = 1;
        snprintf(sel, sizeof sel, "question %d", g.question);
    } else if (g.random_question >= 0) {
        snprintf(sel, sizeof sel, "a random question (seed %d)", g.random_question);   /* drawn below, after --exclude */
    } else if (g.list) {
        if (vex_parse_list("--mean-of", g.list, mark, max_q) < 0) { rc = 2; goto done; }
        snprintf(sel, sizeof sel, "questions %.500s", g.list);
    } else {
        char field[256];
        vex_where w;
        int n_bad;
        const char *eq = strchr(g.where, '=');
        w.differ = eq > g.where && eq[-1] == '!';
        snprintf(field, sizeof field, "%.*s", (int)(eq - g.where - w.differ), g.where);
        w.field = field; w.value = eq + 1; w.mark = mark; w.max = max_q; w.matched = 0;
        if (pca_check_questions(&a, "vectors extract", g.questions, g.force)) goto done;
        if (cli_for_each_question(g.questions, 0, 0, 0, vex_where_line, &w, &n_bad) < 0) goto done;
        snprintf(sel, sizeof sel, "questions where %.500s", g.where);
    }
    if (g.exclude) {
        if (vex_parse_list("--exclude", g.exclude, skip, max_q) < 0) { rc = 2; goto done; }
        for (i = 0; i <= max_q; i++) if (skip[i]) mark[i] = 0;
        snprintf(sel + strlen(sel), sizeof sel - strlen(sel), " except %.60s", g.exclude);
    }
    if (g.random_question >= 0) {                /* uniform over the finished questions with a row at the slot, --exclude left out */
        int n_cand = 0, pick;
        codi_rng rng;
        for (q = 0; q < a.Q; q++) n_cand += a.qindex[q] >= 0 && !skip[a.qindex[q]] && pca_acts_valid(&a, q, slot);
        if (!n_cand) { fprintf(stderr, "codi vectors extract: no question of %s has a row at %s outside --exclude to draw from\n", g.acts, a.slot_label[slot]); goto done; }
        codi_rng_seed(&rng, (uint64_t)g.random_question);
        pick = (int)(codi_rng_uniform(&rng) * n_cand);
        for (q = 0; q < a.Q; q++)
            if (a.qindex[q] >= 0 && !skip[a.qindex[q]] && pca_acts_valid(&a, q, slot) && pick-- == 0) { mark[a.qindex[q]] = 1; break; }
        snprintf(sel, sizeof sel, "question %d, drawn with seed %d from %d%s", a.qindex[q], g.random_question, n_cand,
                 g.exclude ? " (--exclude left out)" : "");
    }
    for (i = 0; i <= max_q; i++) n_sel += mark[i];
    for (q = 0; q < a.Q; q++) {
        int j;
        if (a.qindex[q] < 0 || !mark[a.qindex[q]]) continue;
        if (!pca_acts_valid(&a, q, slot)) { fprintf(stderr, "codi vectors extract: note: question %d has no recorded row at %s (left out)\n", a.qindex[q], a.slot_label[slot]); continue; }
        pca_acts_row(&a, q, slot, g.layer < 0 ? 0 : g.layer, row);
        for (j = 0; j < a.row; j++) sum[j] += row[j];
        n_rows++;
    }
    if (!n_rows) {
        fprintf(stderr, "codi vectors extract: no recorded row of %s at %s in %s (%d question(s) selected)\n", sel, a.slot_label[slot], g.acts, n_sel);
        goto done;
    }
    for (i = 0; i < a.row; i++) row[i] = (float)(sum[i] / n_rows);
    nd = 1; shape[0] = a.row;
    if (a.head < 0 && a.t.ndim == 5) { nd = 2; shape[0] = a.t.shape[3]; shape[1] = a.t.shape[4]; }   /* [KVH, HD] */
    if (a.n_layers > 1) snprintf(where_layer, sizeof where_layer, ", layer %d", g.layer);
    if (a.head >= 0) snprintf(where_layer + strlen(where_layer), sizeof where_layer - strlen(where_layer), ", kv head %d", a.head);
    snprintf(desc, sizeof desc, "%s of %s at %s%s over %d row(s): %s of %s", g.question < 0 && g.random_question < 0 ? "mean" : "row", g.tensor,
             a.slot_label[slot], where_layer, n_rows, sel, g.acts);
    if (vex_write(g.out, g.name, row, nd, shape, desc)) goto done;
    {
        double norm = 0;
        for (i = 0; i < a.row; i++) norm += (double)row[i] * row[i];
        printf("%s:%s = %s (norm %.6g)\n", g.out, g.name, desc, sqrt(norm));
    }
    rc = 0;
done:
    free(mark); free(skip); free(sum); free(row);
    pca_acts_close(&a);
    return rc;
}

static const cli_command cmd_vectors_extract = {
    "vectors extract", "", "codi vectors extract --acts ACTS --slot SLOT (--question Q | --random-question SEED | --mean-of LIST | --where FIELD=VALUE --questions FILE) --name NAME --out V.safetensors [options]",
    "One vector from a `codi record` dataset, as tensor NAME of a vectors file (F32; the file is created,\n"
    "or NAME is added to / replaced in it, its other tensors kept; metadata vector.NAME says where it came\n"
    "from): the row of one question at a recorded slot, or the mean over several questions' rows there.\n"
    "Default tensor latent_inputs: z_k at slot latentK, exactly the vector a {\"at\": \"latent_input\",\n"
    "\"step\": K, \"op\": \"set\"} edit puts in its place. final / resid [D] (resid at --layer), key / value\n"
    "[KVH, HD] at --layer (or [HD] with --head; post-RoPE keys as cached, --keys pre for key_pre_rope).\n"
    "Questions are named by their index, the 0-based line of the questions file (question_index).\n"
    "--random-question SEED draws one finished question (uniformly, seeded; --exclude the patched one and\n"
    "the donor): the control of patching question B's latent is patching another random question's\n"
    "(codi eval's --random-controls add the other control: a random vector of the same norm).\n\n"
    "Examples (README: \"Steering, patching and experiments\"; specs in examples/specs/):\n"
    "  codi vectors extract --acts acts.safetensors --slot latent3 --question 1 --name b_latent3 --out patch.safetensors\n"
    "  codi vectors extract --acts acts.safetensors --slot latent3 --random-question 7 --exclude 0,1 --name rnd_latent3 --out patch.safetensors\n"
    "  codi vectors extract --acts acts.safetensors --slot latent3 --where steps.0.3=12 --questions q.jsonl --exclude 0 --name same --out means.safetensors\n"
    "  codi vectors extract --acts acts.safetensors --tensor key --keys pre --layer 3 --slot latent2 --mean-of 0-99 --name k3 --out k.safetensors",
    vex_run
};

static int vectors_extract_main(int argc, char **argv) { return vex_run(&cmd_vectors_extract, argc, argv); }
