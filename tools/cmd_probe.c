/* codi probe train / apply: linear probes (codi_lens.h >>probe) on a `codi record` dataset, one per
   (layer, slot) cell or one per layer pooled over slots, with held-out accuracy and AUC and their
   95% intervals. Reads datasets with pca_acts_* (tools/cmd_pca.c). */

/* Labels of a rule: label[q * P + slot] in 0..n_classes-1, or -1 (row not labelled). */
typedef struct {
    const char *rule;            /* "correct", "parity", "step" or "field:NAME" */
    int pooled;                  /* 1: the label varies by slot, so one probe per layer over the slots */
    int n_classes;
    char (*class_name)[48];      /* [n_classes] */
    int32_t *label;              /* [Q * P] */
} probe_labels;

static void probe_labels_free(probe_labels *pl) { free(pl->class_name); free(pl->label); memset(pl, 0, sizeof *pl); }

typedef struct { const char *field; int n_values, cap; char (*value)[48]; int *index; } probe_field_read;

/* cli_for_each_question callback: the text of field NAME of each question line, by its index. */
static int probe_field_line(void *user, const cli_question *q) {
    probe_field_read *fr = (probe_field_read *)user;
    const codi__json *v = codi__json_get(q->obj, fr->field);
    if (!v || v->type == CODI__J_NULL || v->type == CODI__J_ARR || v->type == CODI__J_OBJ) return 0;
    if (fr->n_values == fr->cap) {
        int cap = fr->cap ? 2 * fr->cap : 1024;
        char (*nv)[48] = (char (*)[48])realloc(fr->value, (size_t)cap * sizeof *nv);
        int *ni = nv ? (int *)realloc(fr->index, (size_t)cap * sizeof *ni) : NULL;
        if (nv) fr->value = nv;
        if (!nv || !ni) return -2;
        fr->index = ni; fr->cap = cap;
    }
    if (v->type == CODI__J_STR) snprintf(fr->value[fr->n_values], 48, "%s", v->str);
    else if (v->type == CODI__J_NUM) snprintf(fr->value[fr->n_values], 48, "%.17g", v->num);
    else snprintf(fr->value[fr->n_values], 48, "%s", v->type == CODI__J_TRUE ? "true" : "false");
    fr->index[fr->n_values++] = q->index;
    return 0;
}

static int probe_value_cmp(const void *a, const void *b) {
    const char *x = (const char *)a, *y = (const char *)b;
    char *ex, *ey;
    double dx = strtod(x, &ex), dy = strtod(y, &ey);
    if (!*ex && !*ey && ex != x && ey != y) return (dx > dy) - (dx < dy);   /* numbers by value */
    return strcmp(x, y);
}

/* The number a token spells (optional leading space, 1 to 9 digits), or -1. */
static double probe_token_number(const codi_tokenizer *t, int id) {
    char text[64], *p = text, *end;
    double v;
    if (codi_token_text(t, id, text, sizeof text) < 0) return -1;
    if (*p == ' ') p++;
    if (*p < '0' || *p > '9' || strlen(p) > 9) return -1;
    v = strtod(p, &end);
    return *end ? -1 : v;
}

/* answer-token labels: per (question, slot), is the top token of lm_head(final) the number CODI
   finally answered (1), another number, i.e. an intermediate result (0), or no number (-1)? */
static int probe_answer_token_labels(probe_labels *pl, const pca_acts *a, cli_model_args *ma, const char *cmd) {
    pca_acts fin;
    codi_model *m = NULL;
    codi_tokenizer *tok = NULL;
    float *pred = NULL, *x = NULL, *logits = NULL;
    char err[256];
    int q, s, rc = -1, V, j;
    long n_rows = 0;
    cli_progress *prog;
    if (!ma->model) { fprintf(stderr, "codi %s: --label answer-token needs --model (the lens reads lm_head)\n", cmd); return -1; }
    if (pca_acts_open(&fin, cmd, a->path, "final", -1)) return -1;
    if (!(m = cli_load_model(ma)) || !(tok = cli_load_tokenizer(ma, m, 0))) goto done;
    V = m->config.vocab;
    if (m->config.dim != fin.row) { fprintf(stderr, "codi %s: the model has dimension %d, the dataset %d\n", cmd, m->config.dim, fin.row); goto done; }
    pred = (float *)malloc((size_t)a->Q * sizeof(float)); x = (float *)malloc((size_t)fin.row * sizeof(float));
    logits = (float *)malloc((size_t)V * sizeof(float));
    if (!pred || !x || !logits) { fprintf(stderr, "codi %s: out of memory\n", cmd); goto done; }
    if (codi_st_read_f32(a->f, "prediction", pred, (size_t)a->Q, err, sizeof err) != a->Q) { fprintf(stderr, "codi %s: %s: %s\n", cmd, a->path, err); goto done; }
    prog = cli_progress_start("lens labels", (long)a->n_done * a->P, 0);
    for (q = 0; q < a->Q; q++) {
        if (!a->done[q]) continue;
        for (s = 0; s < a->P; s++) {
            int best = 0;
            double v;
            cli_progress_update(prog, ++n_rows);
            if (!pca_acts_valid(&fin, q, s)) continue;
            pca_acts_row(&fin, q, s, 0, x);
            if (codi_lens_direction(m, x, x, 1.0f, 1, logits)) { fprintf(stderr, "codi %s: out of memory\n", cmd); cli_progress_end(prog); goto done; }
            for (j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
            v = probe_token_number(tok, best);
            pl->label[q * a->P + s] = v < 0 || pred[q] != pred[q] ? -1 : v == pred[q];
        }
    }
    cli_progress_end(prog);
    rc = 0;
done:
    free(pred); free(x); free(logits);
    codi_tokenizer_free(tok); codi_model_free(m);
    pca_acts_close(&fin);
    return rc;
}

/* Builds the labels of rule for dataset a; 0, or -1 after a message. */
static int probe_make_labels(probe_labels *pl, const pca_acts *a, const char *rule, const char *questions, cli_model_args *ma,
                             const char *cmd) {
    int Q = a->Q, P = a->P, q, s, i, k;
    memset(pl, 0, sizeof *pl);
    pl->rule = rule;
    if (!(pl->label = (int32_t *)malloc((size_t)Q * P * sizeof(int32_t))) || !(pl->class_name = (char (*)[48])calloc(256, 48))) {
        fprintf(stderr, "codi %s: out of memory\n", cmd); probe_labels_free(pl); return -1;
    }
    for (i = 0; i < Q * P; i++) pl->label[i] = -1;
    if (!strcmp(rule, "correct")) {
        pl->n_classes = 2;
        strcpy(pl->class_name[0], "wrong"); strcpy(pl->class_name[1], "correct");
        for (q = 0; q < Q; q++) for (s = 0; s < P; s++) pl->label[q * P + s] = a->correct[q];
    } else if (!strcmp(rule, "parity") || !strcmp(rule, "step")) {
        int parity = rule[0] == 'p', n_steps = 0, step_class[PCA_MAX_SLOTS];
        pl->pooled = 1;
        for (s = 0; s < P; s++) {
            int step = pca_slot_step(a, s);
            step_class[s] = step < 0 ? -1 : parity ? step % 2 : n_steps++;
            if (!parity && step >= 0 && step_class[s] < 256) snprintf(pl->class_name[step_class[s]], 48, "%s", a->slot_label[s]);
        }
        pl->n_classes = parity ? 2 : n_steps;
        if (parity) { strcpy(pl->class_name[0], "even step"); strcpy(pl->class_name[1], "odd step"); }
        if (pl->n_classes > 256) { fprintf(stderr, "codi %s: %d latent steps; a probe has at most 256 classes\n", cmd, pl->n_classes); probe_labels_free(pl); return -1; }
        for (q = 0; q < Q; q++) for (s = 0; s < P; s++) pl->label[q * P + s] = step_class[s];
    } else if (!strcmp(rule, "answer-token")) {
        pl->pooled = 1; pl->n_classes = 2;
        strcpy(pl->class_name[0], "intermediate"); strcpy(pl->class_name[1], "final answer");
        if (probe_answer_token_labels(pl, a, ma, cmd)) { probe_labels_free(pl); return -1; }
    } else if (!strncmp(rule, "field:", 6) && rule[6]) {
        probe_field_read fr;
        char (*sorted)[48];
        int n_bad, n_distinct = 0;
        memset(&fr, 0, sizeof fr);
        fr.field = rule + 6;
        if (!questions) { fprintf(stderr, "codi %s: --label %s needs --questions FILE.jsonl\n", cmd, rule); probe_labels_free(pl); return -1; }
        if (cli_for_each_question(questions, 0, 0, 0, probe_field_line, &fr, &n_bad)) {
            fprintf(stderr, "codi %s: could not read %s\n", cmd, questions); free(fr.value); free(fr.index); probe_labels_free(pl); return -1;
        }
        sorted = (char (*)[48])malloc((size_t)(fr.n_values ? fr.n_values : 1) * sizeof *sorted);
        if (!sorted) { free(fr.value); free(fr.index); probe_labels_free(pl); return -1; }
        memcpy(sorted, fr.value, (size_t)fr.n_values * sizeof *sorted);
        qsort(sorted, (size_t)fr.n_values, sizeof *sorted, probe_value_cmp);
        for (i = 0; i < fr.n_values; i++)
            if (!n_distinct || probe_value_cmp(sorted[i], sorted[n_distinct - 1])) {
                if (n_distinct == 256) break;
                memmove(sorted[n_distinct++], sorted[i], 48);
            }
        if (i < fr.n_values) { fprintf(stderr, "codi %s: field \"%s\" has more than 256 distinct values; a probe label needs classes\n", cmd, fr.field); }
        else {
            int *used = (int *)calloc((size_t)n_distinct, sizeof(int)), n_used = 0;
            for (q = 0; used && q < Q; q++) {     /* the dataset's question_index -> the line's value */
                if (!a->done[q]) continue;
                for (i = 0; i < fr.n_values && fr.index[i] != a->qindex[q]; i++) {}
                if (i == fr.n_values) continue;
                for (k = 0; k < n_distinct && probe_value_cmp(sorted[k], fr.value[i]); k++) {}
                for (s = 0; s < P; s++) pl->label[q * P + s] = k;
                used[k] = 1;
            }
            for (k = 0; used && k < n_distinct; k++) if (used[k]) used[k] = n_used++; else used[k] = -1;
            for (k = 0; used && k < n_distinct; k++) if (used[k] >= 0) memcpy(pl->class_name[used[k]], sorted[k], 48);
            for (i = 0; used && i < Q * P; i++) if (pl->label[i] >= 0) pl->label[i] = used[pl->label[i]];
            pl->n_classes = n_used;               /* classes: the values the dataset's questions have */
            free(used);
        }
        free(sorted); free(fr.value); free(fr.index);
        if (!pl->n_classes) { probe_labels_free(pl); return -1; }
    } else {
        fprintf(stderr, "codi %s: --label is correct, parity, step, answer-token or field:NAME, not '%s'\n", cmd, rule);
        probe_labels_free(pl);
        return -1;
    }
    return 0;
}

/* Held-out questions: a fixed hash of (question index, seed) below test_frac. */
static int probe_is_test(int qindex, int seed, double test_frac) {
    uint64_t h = (uint64_t)(uint32_t)qindex * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)seed * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 29;
    return (double)(h >> 11) / 9007199254740992.0 < test_frac;
}

typedef struct {
    const char *acts, *tensor, *layers, *positions, *out, *label, *questions, *probes, *csv;
    int head, max_iter, seed, limit;
    double l2, test_frac;
    cli_model_args ma;
} probe_args;

/* Rows of cell (layer, slots) split into train / test: x [n, row], y [n]. */
static int probe_gather(const pca_acts *a, const probe_labels *pl, const probe_args *g, int layer, const int *slots,
                        int n_slots, int want_test, float *x, int32_t *y) {
    int q, s, n = 0, used = 0;
    for (q = 0; q < a->Q; q++) {
        if (!a->done[q]) continue;
        if (g->limit && used++ >= g->limit) break;
        if (probe_is_test(a->qindex[q], g->seed, g->test_frac) != want_test) continue;
        for (s = 0; s < n_slots; s++) {
            int lab = pl->label[q * a->P + slots[s]];
            if (lab < 0 || !pca_acts_valid(a, q, slots[s])) continue;
            pca_acts_row(a, q, slots[s], layer, x + (size_t)n * a->row);
            y[n++] = lab;
        }
    }
    return n;
}

static int probe_train_run(const cli_command *self, int argc, char **argv) {
    probe_args g;
    cli_opt opts[] = {
        { "--acts", CLI_STR, &g.acts, 0, 0, "FILE", "activation dataset written by codi record (required)" },
        { "--label", CLI_STR, &g.label, 0, 0, "RULE", "correct | parity | step | answer-token | field:NAME (required; see above)" },
        { "--out", CLI_STR, &g.out, 0, 0, "DIR", "output directory (required; created)" },
        { "--questions", CLI_STR, &g.questions, 0, 0, "FILE", "questions JSONL for --label field:NAME" },
        { "--tensor", CLI_STR, &g.tensor, 0, 0, "NAME", "resid (default), final, latent_inputs, key or value" },
        { "--head", CLI_INT, &g.head, -1, 1024, "H", "key/value: one kv head (default -1: all heads concatenated)" },
        { "--layers", CLI_STR, &g.layers, 0, 0, "LIST", "layers, e.g. 0,8,16 or 4-16 (default all)" },
        { "--positions", CLI_STR, &g.positions, 0, 0, "LIST", "recorded slots (default all; parity/step: the latent slots)" },
        { "--test-frac", CLI_DOUBLE, &g.test_frac, 0.01, 0.99, "F", "held-out share of questions (default 0.2)" },
        { "--seed", CLI_INT, &g.seed, 0, 2147483647, "S", "seed of the held-out split (default 0)" },
        { "--l2", CLI_DOUBLE, &g.l2, 0, 1e6, "LAMBDA", "L2 strength: mean cross-entropy + LAMBDA/2 |W|^2 (default 0.01; sklearn C = 1/(LAMBDA n))" },
        { "--max-iter", CLI_INT, &g.max_iter, 1, 1000000, "N", "L-BFGS iterations at most (default 1000)" },
        { "--limit", CLI_INT, &g.limit, 0, 1e9, "N", "use the first N finished questions (default 0: all)" },
        CLI_MODEL_OPTS(&g.ma),
        CLI_END
    };
    pca_acts a;
    probe_labels pl;
    int layers[PCA_MAX_SLOTS], slots[PCA_MAX_SLOTS], n_layers, n_slots, rc = 1, prc, li, ci, n_cells, cols, i, j;
    float *xtr = NULL, *xte = NULL, *proba = NULL;
    int32_t *ytr = NULL, *yte = NULL;
    codi_probe **probes = NULL;
    codi_probe_metrics *met = NULL;
    char (*names)[128] = NULL, path[1024], err[512];
    FILE *csv = NULL;
    cli_progress *prog = NULL;
    double t0 = cli_now();
    memset(&g, 0, sizeof g);
    memset(&pl, 0, sizeof pl);
    g.tensor = "resid"; g.head = -1; g.test_frac = 0.2; g.l2 = 1e-2; g.max_iter = 1000; g.ma = cli_model_defaults();
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.acts || !g.out || !g.label) { fprintf(stderr, "codi probe train: --acts, --label and --out are required (codi probe train --help)\n"); return 2; }
    cli_threads_checked(&g.ma);
    if (pca_acts_open(&a, "probe", g.acts, g.tensor, g.head)) return 1;
    if (probe_make_labels(&pl, &a, g.label, g.questions, &g.ma, "probe")) { pca_acts_close(&a); return 1; }
    if ((n_layers = pca_parse_indices("probe", "--layers", g.layers, a.n_layers, layers)) < 0 ||
        (n_slots = pca_parse_indices("probe", "--positions", g.positions, a.P, slots)) < 0) { rc = 2; goto done; }
    if (pl.pooled) {                             /* parity / step: keep the latent slots */
        for (i = j = 0; i < n_slots; i++) if (pca_slot_step(&a, slots[i]) >= 0) slots[j++] = slots[i];
        n_slots = j;
        if (n_slots < 2) { fprintf(stderr, "codi probe: --label %s needs at least two latent slots among --positions\n", g.label); goto done; }
    }
    {   /* rows per class over the chosen slots of finished questions */
        long count[257] = {0};
        int present = 0;
        for (i = 0; i < a.Q; i++) for (j = 0; j < n_slots; j++) if (pca_acts_valid(&a, i, slots[j])) count[pl.label[i * a.P + slots[j]] + 1]++;
        fprintf(stderr, "codi probe: label %s:", g.label);
        for (i = 0; i < pl.n_classes; i++) { fprintf(stderr, " %s %ld%s", pl.class_name[i], count[i + 1], i + 1 < pl.n_classes ? "," : ""); present += count[i + 1] > 0; }
        fprintf(stderr, "; unlabelled %ld (rows over the chosen slots)\n", count[0]);
        if (present < 2) { fprintf(stderr, "codi probe: label %s: %d class(es) occur among these rows; a probe needs two\n", g.label, present); goto done; }
    }
    cols = pl.pooled ? 1 : n_slots;
    n_cells = n_layers * cols;
    if (pca_mkdir("probe", g.out)) goto done;
    {
        size_t rows = (size_t)a.n_done * (pl.pooled ? (size_t)n_slots : 1);
        xtr = (float *)malloc(rows * a.row * sizeof(float)); xte = (float *)malloc(rows * a.row * sizeof(float));
        ytr = (int32_t *)malloc(rows * sizeof(int32_t)); yte = (int32_t *)malloc(rows * sizeof(int32_t));
        proba = (float *)malloc(rows * pl.n_classes * sizeof(float));
    }
    probes = (codi_probe **)calloc((size_t)n_cells, sizeof *probes);
    met = (codi_probe_metrics *)calloc((size_t)n_cells, sizeof *met);
    names = (char (*)[128])calloc((size_t)n_cells, sizeof *names);
    if (!xtr || !xte || !ytr || !yte || !proba || !probes || !met || !names) { fprintf(stderr, "codi probe: out of memory\n"); goto done; }
    snprintf(path, sizeof path, "%s/cells.csv", g.out);
    if (!(csv = fopen(path, "w"))) { fprintf(stderr, "codi probe: cannot write %s\n", path); goto done; }
    fprintf(csv, "name,tensor,layer,slot,slot_label,label,n_train,n_test,accuracy,acc_lo,acc_hi,auc,auc_lo,auc_hi,log_loss,iterations,converged\n");
    fprintf(stderr, "codi probe: %s [%s], label %s (%d classes), %d cell(s), held out %.0f%% of questions\n", g.acts, g.tensor, g.label,
            pl.n_classes, n_cells, 100 * g.test_frac);
    prog = cli_progress_start("probe cells", n_cells, 0);
    for (li = 0; li < n_layers; li++) for (ci = 0; ci < cols; ci++) {
        int cell = li * cols + ci, ntr, nte, *cs = pl.pooled ? slots : slots + ci, ns = pl.pooled ? n_slots : 1;
        codi_probe_opts po = codi_probe_opts_default();
        const char *head_part = a.head >= 0 ? ".head" : "";
        char hbuf[16] = "";
        if (a.head >= 0) snprintf(hbuf, sizeof hbuf, "%d", a.head);
        if (pl.pooled) snprintf(names[cell], 128, "%s.layer%d%s%s.pooled", g.tensor, layers[li], head_part, hbuf);
        else snprintf(names[cell], 128, "%s.layer%d%s%s.slot%d", g.tensor, layers[li], head_part, hbuf, cs[0]);
        ntr = probe_gather(&a, &pl, &g, layers[li], cs, ns, 0, xtr, ytr);
        nte = probe_gather(&a, &pl, &g, layers[li], cs, ns, 1, xte, yte);
        po.l2 = g.l2; po.max_iter = g.max_iter; po.n_threads = g.ma.threads;
        if (!nte) { fprintf(stderr, "\ncodi probe: %s: no held-out rows (raise --test-frac or use more questions)\n", names[cell]); goto done; }
        if (!(probes[cell] = codi_probe_train(xtr, ytr, ntr, a.row, pl.n_classes, &po, err, sizeof err))) {
            fprintf(stderr, "\ncodi probe: %s: %s\n", names[cell], err); goto done;
        }
        codi_probe_predict_proba(probes[cell], xte, nte, proba);
        if (codi_probe_metrics_of(proba, yte, nte, pl.n_classes, &met[cell], err, sizeof err)) { fprintf(stderr, "codi probe: %s\n", err); goto done; }
        fprintf(csv, "%s,%s,%d,%s,%s,%s,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%d,%d\n", names[cell], g.tensor, layers[li],
                pl.pooled ? "pooled" : (snprintf(hbuf, sizeof hbuf, "%d", cs[0]), hbuf), pl.pooled ? "pooled" : a.slot_label[cs[0]], g.label,
                ntr, nte, met[cell].accuracy, met[cell].acc_lo, met[cell].acc_hi, met[cell].auc, met[cell].auc_lo, met[cell].auc_hi,
                met[cell].log_loss, probes[cell]->iterations, probes[cell]->converged);
        cli_progress_update(prog, cell + 1);
    }
    cli_progress_end(prog); prog = NULL;
    if (fclose(csv)) { csv = NULL; fprintf(stderr, "codi probe: error writing cells.csv\n"); goto done; }
    csv = NULL;

    printf("held-out %s [95%% CI], label %s, %s\n", pl.n_classes == 2 ? "AUC" : "macro AUC", g.label, g.tensor);
    printf("%-8s", "layer");
    for (ci = 0; ci < cols; ci++) printf(" %-20s", pl.pooled ? "pooled" : a.slot_label[slots[ci]]);
    printf("\n");
    for (li = 0; li < n_layers; li++) {
        printf("%-8d", layers[li]);
        for (ci = 0; ci < cols; ci++) {
            const codi_probe_metrics *mm = &met[li * cols + ci];
            char cell[32];
            snprintf(cell, sizeof cell, "%.3f [%.3f,%.3f]", mm->auc, mm->auc_lo, mm->auc_hi);
            printf(" %-20s", cell);
        }
        printf("\n");
    }

    {   /* probes.safetensors and the heatmap */
        char classes[256 * 52] = "[", pos[64], frac[32], sd[16];
        const char **nm = (const char **)malloc((size_t)n_cells * sizeof *nm);
        double *val = (double *)malloc((size_t)n_cells * sizeof(double));
        char (*text)[16] = (char (*)[16])malloc((size_t)n_cells * sizeof *text);
        const char **tp = (const char **)malloc((size_t)n_cells * sizeof *tp), **rl = (const char **)malloc((size_t)n_layers * sizeof *rl);
        const char **cl = (const char **)malloc((size_t)cols * sizeof *cl);
        char (*rlab)[16] = (char (*)[16])malloc((size_t)n_layers * sizeof *rlab);
        char title[256];
        svg_heatmap_spec hs;
        const char *meta[] = { "acts", g.acts, "tensor", g.tensor, "label", g.label, "classes", classes, "positions", pos,
                               "test_frac", frac, "seed", sd, "model", a.model, "codi_lens", CLI_VERSION, NULL };
        if (!nm || !val || !text || !tp || !rl || !cl || !rlab) {
            free(nm); free(val); free(text); free(tp); free(rl); free(cl); free(rlab);
            fprintf(stderr, "codi probe: out of memory\n"); goto done;
        }
        for (i = 0; i < pl.n_classes; i++) {
            size_t len = strlen(classes);
            snprintf(classes + len, sizeof classes - len, "%s\"%s\"", i ? "," : "", pl.class_name[i]);
        }
        strcat(classes, "]");
        snprintf(pos, sizeof pos, "%s", g.positions ? g.positions : "all");
        snprintf(frac, sizeof frac, "%g", g.test_frac);
        snprintf(sd, sizeof sd, "%d", g.seed);
        for (i = 0; i < n_cells; i++) {
            nm[i] = names[i];
            val[i] = met[i].auc;
            snprintf(text[i], 16, val[i] == val[i] ? "%.3f" : "-", val[i]);
            tp[i] = text[i];
        }
        for (li = 0; li < n_layers; li++) { snprintf(rlab[li], 16, "layer %d", layers[li]); rl[li] = rlab[li]; }
        for (ci = 0; ci < cols; ci++) cl[ci] = pl.pooled ? "pooled" : a.slot_label[slots[ci]];
        snprintf(path, sizeof path, "%s/probes.safetensors", g.out);
        prc = codi_probe_save(path, (const codi_probe *const *)probes, nm, n_cells, meta, err, sizeof err);
        if (prc) fprintf(stderr, "codi probe: %s\n", err);
        snprintf(title, sizeof title, "Held-out %s of probes for '%s' on %s", pl.n_classes == 2 ? "AUC" : "macro AUC", g.label, g.tensor);
        memset(&hs, 0, sizeof hs);
        hs.rows = n_layers; hs.cols = cols; hs.value = val; hs.vmin = 0.5; hs.vmax = 1; hs.colormap = SVG_VIRIDIS;
        hs.cell_text = tp; hs.row_labels = rl; hs.col_labels = cl; hs.title = title;
        hs.xlabel = pl.pooled ? "latent slots pooled" : "recorded position"; hs.ylabel = "layer"; hs.colorbar_label = "AUC";
        snprintf(path, sizeof path, "%s/heatmap.svg", g.out);
        if (!prc && svg_heatmap(path, &hs)) { fprintf(stderr, "codi probe: cannot write %s\n", path); prc = -1; }
        free(nm); free(val); free(text); free(tp); free(rl); free(cl); free(rlab);
        if (prc) goto done;
    }
    fprintf(stderr, "codi probe: wrote %s/probes.safetensors, cells.csv, heatmap.svg in %.1f s\n", g.out, cli_now() - t0);
    rc = 0;
done:
    if (prog) cli_progress_end(prog);
    if (csv) fclose(csv);
    for (i = 0; probes && i < n_cells; i++) codi_probe_free(probes[i]);
    free(probes); free(met); free(names); free(xtr); free(xte); free(ytr); free(yte); free(proba);
    probe_labels_free(&pl);
    pca_acts_close(&a);
    return rc;
}

/* codi probe apply: every probe of a file on the matching rows of a dataset. */
static int probe_apply_run(const cli_command *self, int argc, char **argv) {
    probe_args g;
    cli_opt opts[] = {
        { "--probes", CLI_STR, &g.probes, 0, 0, "FILE", "probes.safetensors written by codi probe train (required)" },
        { "--acts", CLI_STR, &g.acts, 0, 0, "FILE", "activation dataset to score (required)" },
        { "--out", CLI_STR, &g.csv, 0, 0, "FILE", "per-row CSV of probabilities (default: none)" },
        { "--questions", CLI_STR, &g.questions, 0, 0, "FILE", "questions JSONL when the probes' label is field:NAME" },
        CLI_MODEL_OPTS(&g.ma),
        CLI_END
    };
    char err[512];
    codi_st_file *f;
    pca_acts a;
    probe_labels pl;
    const char *tensor, *label;
    int n, i, rc = 1, prc, have_labels;
    FILE *csv = NULL;
    float *x = NULL, *pr = NULL;
    memset(&g, 0, sizeof g);
    g.ma = cli_model_defaults();
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.probes || !g.acts) { fprintf(stderr, "codi probe apply: --probes and --acts are required\n"); return 2; }
    if (!(f = codi_st_open(g.probes, err, sizeof err))) { fprintf(stderr, "codi probe apply: %s\n", err); return 1; }
    tensor = codi_st_metadata(f, "tensor"); label = codi_st_metadata(f, "label");
    if (!tensor || !label) { fprintf(stderr, "codi probe apply: %s has no tensor/label metadata (not from codi probe train)\n", g.probes); codi_st_close(f); return 1; }
    if (pca_acts_open(&a, "probe apply", g.acts, tensor, -1)) { codi_st_close(f); return 1; }
    have_labels = !probe_make_labels(&pl, &a, label, g.questions, &g.ma, "probe apply");
    if (!have_labels) fprintf(stderr, "codi probe apply: no labels for '%s' here: probabilities only\n", label);
    if (g.csv && !(csv = fopen(g.csv, "w"))) { fprintf(stderr, "codi probe apply: cannot write %s\n", g.csv); goto done; }
    if (csv) fprintf(csv, "probe,question_index,slot,slot_label,label,predicted,p_class1\n");
    x = (float *)malloc((size_t)a.row * sizeof(float));
    pr = (float *)malloc(256 * sizeof(float));
    if (!x || !pr) { fprintf(stderr, "codi probe apply: out of memory\n"); goto done; }
    printf("%-28s %-12s %6s %8s %s\n", "probe", "slot", "rows", "mean p1", "accuracy [95% CI]");
    for (n = codi_st_count(f), i = 0; i < n; i++) {
        codi_st_tensor t;
        char name[160], *dot;
        codi_probe *p;
        int layer = -1, slot = -1, s, q, s0, s1;
        if (codi_st_tensor_at(f, i, &t) || strlen(t.name) >= sizeof name || !(dot = strrchr(strcpy(name, t.name), '.')) || strcmp(dot, ".weight")) continue;
        *dot = 0;
        if (strncmp(name, tensor, strlen(tensor)) || sscanf(name + strlen(tensor), ".layer%d.slot%d", &layer, &slot) < 1) continue;
        if (strstr(name, ".head")) { fprintf(stderr, "codi probe apply: %s: probes of one kv head are not applied here (skipped)\n", name); continue; }
        if (!(p = codi_probe_load(g.probes, name, err, sizeof err))) { fprintf(stderr, "codi probe apply: %s\n", err); goto done; }
        if (p->dim != a.row || layer < 0 || layer >= a.n_layers || slot >= a.P) {
            fprintf(stderr, "codi probe apply: probe %s (dimension %d) does not fit %s (%d layers, %d slots, dimension %d)\n",
                    name, p->dim, g.acts, a.n_layers, a.P, a.row);
            codi_probe_free(p); goto done;
        }
        s0 = slot >= 0 ? slot : 0; s1 = slot >= 0 ? slot + 1 : a.P;
        for (s = s0; s < s1; s++) {                /* pooled probes: every slot, one line each */
            int rows = 0, correct = 0, labelled = 0;
            double sum = 0, lo, hi;
            for (q = 0; q < a.Q; q++) {
                int best = 0, c, lab = have_labels ? pl.label[q * a.P + s] : -1;
                if (!pca_acts_valid(&a, q, s)) continue;
                pca_acts_row(&a, q, s, layer, x);
                codi_probe_predict_proba(p, x, 1, pr);
                for (c = 1; c < p->n_classes; c++) if (pr[c] > pr[best]) best = c;
                rows++; sum += pr[1];
                if (lab >= 0 && lab < p->n_classes) { labelled++; correct += best == lab; }
                if (csv) fprintf(csv, "%s,%d,%d,%s,%d,%d,%.6g\n", name, a.qindex[q], s, a.slot_label[s], lab, best, pr[1]);
            }
            codi_wilson_interval(correct, labelled, 1.96, &lo, &hi);
            if (!rows) continue;
            if (labelled) printf("%-28s %-12s %6d %8.4f %.4f [%.4f, %.4f]\n", name, a.slot_label[s], rows, sum / rows, (double)correct / labelled, lo, hi);
            else printf("%-28s %-12s %6d %8.4f -\n", name, a.slot_label[s], rows, sum / rows);
        }
        codi_probe_free(p);
    }
    rc = 0;
done:
    if (csv && fclose(csv)) { fprintf(stderr, "codi probe apply: error writing %s\n", g.csv); rc = 1; }
    free(x); free(pr);
    if (have_labels) probe_labels_free(&pl);
    pca_acts_close(&a); codi_st_close(f);
    return rc;
}

static const cli_command cmd_probe_train = {
    "probe train", "", "codi probe train --acts FILE --label RULE --out DIR [options]",
    "Fits L2-regularised logistic-regression probes (full-batch L-BFGS, standardised inputs) on a\n"
    "`codi record` dataset and reports held-out accuracy (Wilson 95% interval) and AUC (Hanley-McNeil\n"
    "95% interval; one-vs-rest macro for more than two classes). Questions are split into train and\n"
    "held-out sets by a fixed hash of their index (--test-frac, --seed), so every slot of a question\n"
    "lands on the same side.\n"
    "Label rules: correct (did CODI answer right: one probe per layer and slot), field:NAME (that\n"
    "field of each --questions line, distinct values as classes: one probe per layer and slot),\n"
    "parity (odd vs even latent step) and step (which latent step; multinomial): one probe per layer\n"
    "over the latent slots among --positions; answer-token (needs --model): is the top token of\n"
    "lm_head(final) at that slot the number CODI finally answered (1) or another number, an intermediate\n"
    "result (0); slots whose top token is no number are left out; one probe per layer over the slots\n"
    "(Latent Reasoning Sprint #2; costs one lm_head per recorded slot).\n"
    "Writes DIR/probes.safetensors (codi_probe_load reads each by name, e.g. resid.layer8.slot3),\n"
    "cells.csv and heatmap.svg (AUC per layer and slot).\n\n"
    "Examples:\n"
    "  codi probe train --acts acts.safetensors --label parity --positions 1-6 --out probe_parity\n"
    "  codi probe train --acts acts.safetensors --label correct --tensor final --out probe_correct\n"
    "  codi probe train --acts acts.safetensors --label field:kind --questions q.jsonl --layers 4-16 --out p",
    probe_train_run
};

static const cli_command cmd_probe_apply = {
    "probe apply", "", "codi probe apply --probes FILE --acts FILE [--out ROWS.csv]",
    "Scores every row of a dataset with every probe of a probes file (a pooled probe on every slot)\n"
    "and prints per probe and slot the rows, the mean probability of class 1 and, when the dataset\n"
    "carries the probes' labels, the accuracy with its Wilson 95% interval. --out writes one CSV line\n"
    "per row.\n\n"
    "Examples:\n"
    "  codi probe apply --probes probe_parity/probes.safetensors --acts other_acts.safetensors\n"
    "  codi probe apply --probes p/probes.safetensors --acts acts.safetensors --out rows.csv",
    probe_apply_run
};

static int probe_run(const cli_command *self, int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "train")) return probe_train_run(&cmd_probe_train, argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "apply")) return probe_apply_run(&cmd_probe_apply, argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: codi probe train ... | codi probe apply ...\n\n%s\n\n%s\n\n(codi probe train --help, codi probe apply --help: options)\n",
               cmd_probe_train.description, cmd_probe_apply.description);
        return 0;
    }
    fprintf(stderr, "codi %s: give a subcommand: train or apply (codi probe --help)\n", self->name);
    return 2;
}

static const cli_command cmd_probe = {
    "probe", "linear probes on recorded activations: probe train (held-out accuracy / AUC per cell), probe apply",
    "codi probe (train | apply) [options]", "", probe_run
};
