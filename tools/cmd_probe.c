/* codi probe train / apply: linear probes (codi_lens.h >>probe) on a `codi record` dataset, one per
   (layer, slot) cell or one per layer pooled over slots, with held-out accuracy and AUC and their
   95% intervals. Reads datasets with pca_acts_* (tools/cmd_pca.c). */

/* Labels of a rule: label[q * P + slot] in 0..n_classes-1, or -1 (row not labelled). */
typedef struct {
    const char *rule;            /* "correct", "parity", "step", "answer-token", "field:NAME" or "labels:FILE" */
    int pooled;                  /* 1: the label varies by slot, so one probe per layer over the slots */
    int n_classes;
    char (*class_name)[48];      /* [n_classes] */
    int32_t *label;              /* [Q * P] */
} probe_labels;

static void probe_labels_free(probe_labels *pl) { free(pl->class_name); free(pl->label); memset(pl, 0, sizeof *pl); }

typedef struct { const char *field; int n_values, cap; char (*value)[48]; int *index; } probe_field_read;

/* The value at a field of a question object: a member name, or a dotted path through objects and
   arrays ("steps.0.3": member steps, element 0, element 3); NULL when absent. */
static const codi_json *probe_json_path(const codi_json *obj, const char *path) {
    const codi_json *v = codi_json_get(obj, path);
    char key[128];
    if (v) return v;
    for (v = obj; v && *path;) {
        size_t len = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)(len < 127 ? len : 127), path);
        if (v->type == CODI_JSON_ARR) {
            char *end;
            long i = strtol(key, &end, 10);
            const codi_json *c;
            if (*end || end == key || i < 0) return NULL;
            for (c = v->child; c && i > 0; c = c->next) i--;
            v = c;
        } else if (v->type == CODI_JSON_OBJ) v = codi_json_get(v, key);
        else return NULL;
        path += len + (path[len] == '.');
    }
    return v;
}

/* cli_for_each_question callback: the text of field NAME of each question line, by its index. */
static int probe_field_line(void *user, const cli_question *q) {
    probe_field_read *fr = (probe_field_read *)user;
    const codi_json *v = probe_json_path(q->obj, fr->field);
    if (!v || v->type == CODI_JSON_NULL || v->type == CODI_JSON_ARR || v->type == CODI_JSON_OBJ) return 0;
    if (fr->n_values == fr->cap) {
        int cap = fr->cap ? 2 * fr->cap : 1024;
        char (*nv)[48] = (char (*)[48])realloc(fr->value, (size_t)cap * sizeof *nv);
        int *ni = nv ? (int *)realloc(fr->index, (size_t)cap * sizeof *ni) : NULL;
        if (nv) fr->value = nv;
        if (!nv || !ni) return -2;
        fr->index = ni; fr->cap = cap;
    }
    if (v->type == CODI_JSON_STR) snprintf(fr->value[fr->n_values], 48, "%s", v->str);
    else if (v->type == CODI_JSON_NUM) snprintf(fr->value[fr->n_values], 48, "%.17g", v->num);
    else snprintf(fr->value[fr->n_values], 48, "%s", v->type == CODI_JSON_TRUE ? "true" : "false");
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
    if (codi_safetensors_read_f32(a->f, "prediction", pred, (size_t)a->Q, err, sizeof err) != a->Q) { fprintf(stderr, "codi %s: %s: %s\n", cmd, a->path, err); goto done; }
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

/* Sorted distinct strings of v [n] into out (at most 256); their count, or -1 when more. */
static int probe_distinct(char (*v)[48], int n, char (*out)[48]) {
    int i, k = 0;
    char (*sorted)[48] = (char (*)[48])malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) return -1;
    memcpy(sorted, v, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, probe_value_cmp);
    for (i = 0; i < n; i++)
        if (!k || probe_value_cmp(sorted[i], out[k - 1])) {
            if (k == 256) { free(sorted); return -1; }
            memcpy(out[k++], sorted[i], 48);
        }
    free(sorted);
    return k;
}

/* Per-row labels from a file: lines (or CSV with a header) "question_index,position,label", the
   position a slot name as codi record spells it ("latent3", "bot", "answer1", "prompt0", "17" for an
   absolute position, "#K" for slot K) or "*" for every slot; '#' starts a comment line. Rows of
   questions the dataset lacks (or has not finished) are skipped with a note. 0, or -1 after a message. */
static int probe_labels_file(probe_labels *pl, const pca_acts *a, const char *path, const char *cmd) {
    size_t len;
    char *text = codi_read_text(path, &len), *p, *line_end;
    char (*val)[48] = NULL, (*classes)[48] = NULL;
    int *row_of = NULL, max_qi = 0, line = 0, n = 0, cap = 0, q, i, k, rc = -1, n_skipped = 0, data_lines = 0;
    int *ent = NULL;                              /* [n, 2]: q * P + slot (or -1 - q for every slot), line */
    if (!text) { fprintf(stderr, "codi %s: cannot read --labels %s\n", cmd, path); return -1; }
    for (q = 0; q < a->Q; q++) if (a->qindex[q] > max_qi) max_qi = a->qindex[q];
    if (!(row_of = (int *)malloc((size_t)(max_qi + 1) * sizeof(int)))) goto oom;
    for (i = 0; i <= max_qi; i++) row_of[i] = -1;
    for (q = 0; q < a->Q; q++) if (a->done[q] && a->qindex[q] >= 0) row_of[a->qindex[q]] = q;
    for (p = text; p < text + len; p = line_end + 1) {
        char *f[3], *end, *c;
        long qi;
        int slot, nf = 0;
        line_end = memchr(p, '\n', (size_t)(text + len - p));
        if (!line_end) line_end = text + len;
        *line_end = 0; line++;
        if (line_end > p && line_end[-1] == '\r') line_end[-1] = 0;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        for (f[nf++] = p, c = p; *c && nf < 3; c++) if (*c == ',' || *c == '\t') { *c = 0; f[nf++] = c + 1; }
        if (nf < 3) { fprintf(stderr, "codi %s: %s:%d: expected question_index,position,label\n", cmd, path, line); goto done; }
        for (k = 0; k < 3; k++) {                 /* trim, and drop CSV quotes around the label */
            char *e;
            while (*f[k] == ' ') f[k]++;
            e = f[k] + strlen(f[k]);
            while (e > f[k] && e[-1] == ' ') *--e = 0;
            if (k == 2 && e - f[k] >= 2 && *f[k] == '"' && e[-1] == '"') { e[-1] = 0; f[k]++; }
        }
        qi = strtol(f[0], &end, 10);
        if (*end || end == f[0]) {
            if (!data_lines++) continue;          /* a header line */
            fprintf(stderr, "codi %s: %s:%d: question index '%s' is not an integer\n", cmd, path, line, f[0]); goto done;
        }
        data_lines++;
        if (!*f[2] || strlen(f[2]) > 47) { fprintf(stderr, "codi %s: %s:%d: the label must have 1 to 47 characters\n", cmd, path, line); goto done; }
        slot = strcmp(f[1], "*") ? pca_slot_by_name(a, f[1]) : -2;
        if (slot == -1) { fprintf(stderr, "codi %s: %s:%d: the dataset has no slot '%s' (its slots: %s, ...)\n", cmd, path, line, f[1], a->slot_label[0]); goto done; }
        if (qi < 0 || qi > max_qi || row_of[qi] < 0) { n_skipped++; continue; }
        if (n == cap) {
            int nc = cap ? 2 * cap : 1024;
            char (*nv)[48] = (char (*)[48])realloc(val, (size_t)nc * sizeof *nv);
            int *ne = nv ? (int *)realloc(ent, (size_t)nc * 2 * sizeof(int)) : NULL;
            if (nv) val = nv;
            if (!ne) goto oom;
            ent = ne; cap = nc;
        }
        snprintf(val[n], 48, "%s", f[2]);
        ent[2 * n] = slot == -2 ? -1 - row_of[qi] : row_of[qi] * a->P + slot; ent[2 * n + 1] = line;
        n++;
    }
    if (!n) { fprintf(stderr, "codi %s: %s: no label belongs to a finished question of %s\n", cmd, path, a->path); goto done; }
    if (!(classes = (char (*)[48])malloc(256 * sizeof *classes))) goto oom;
    if ((pl->n_classes = probe_distinct(val, n, classes)) < 0) { fprintf(stderr, "codi %s: %s has more than 256 distinct labels\n", cmd, path); goto done; }
    memcpy(pl->class_name, classes, (size_t)pl->n_classes * 48);
    for (i = 0; i < n; i++) {
        int c, s0, s1, s;
        for (c = 0; c < pl->n_classes && probe_value_cmp(classes[c], val[i]); c++) {}
        s0 = ent[2 * i] < 0 ? (-1 - ent[2 * i]) * a->P : ent[2 * i]; s1 = ent[2 * i] < 0 ? s0 + a->P : s0 + 1;
        for (s = s0; s < s1; s++) {
            if (pl->label[s] >= 0 && pl->label[s] != c) {
                fprintf(stderr, "codi %s: %s:%d: question %d, %s is labelled twice (%s, %s)\n", cmd, path, ent[2 * i + 1], a->qindex[s / a->P],
                        a->slot_label[s % a->P], classes[pl->label[s]], classes[c]);
                goto done;
            }
            pl->label[s] = c;
        }
    }
    if (n_skipped) fprintf(stderr, "codi %s: note: %d label line(s) of %s name questions %s lacks or has not finished (skipped)\n", cmd, n_skipped, path, a->path);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "codi %s: out of memory\n", cmd);
done:
    free(text); free(row_of); free(val); free(ent); free(classes);
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
    } else if (!strncmp(rule, "labels:", 7) && rule[7]) {
        if (probe_labels_file(pl, a, rule + 7, cmd)) { probe_labels_free(pl); return -1; }
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
        if (fr.n_values) memcpy(sorted, fr.value, (size_t)fr.n_values * sizeof *sorted);
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
        if (!pl->n_classes) {
            fprintf(stderr, "codi %s: --label %s: no question of the dataset has field \"%s\" in %s\n", cmd, rule, rule + 6, questions);
            probe_labels_free(pl); return -1;
        }
    } else {
        fprintf(stderr, "codi %s: --label is correct, parity, step, answer-token or field:NAME (or --labels FILE), not '%s'\n", cmd, rule);
        probe_labels_free(pl);
        return -1;
    }
    return 0;
}

#define PROBE_MIN_ROWS 10   /* rows of each class in each split below which probe train refuses */

/* Held-out questions: a fixed hash of (question index, seed) below test_frac. Every row of a
   question (each slot) lands on the same side. */
static int probe_is_test(int qindex, int seed, double test_frac) {
    uint64_t h = (uint64_t)(uint32_t)qindex * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)seed * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 29;
    return (double)(h >> 11) / 9007199254740992.0 < test_frac;
}

/* AUC of probabilities proba [n, k] against y [n] (binary: class 1's; else the macro one-vs-rest
   AUC, as codi_probe_metrics_of) with a 95% percentile bootstrap interval over questions: the
   questions (runs of equal qid [n]; a question's rows are adjacent) are drawn with replacement
   n_boot times, each with all its rows (n_boot 0: no interval). Resamples holding one class give no AUC and are left
   out; lo and hi are NaN when over half do (or with one question). *n_q: the questions. 0, or -1
   out of memory. */
static int probe_auc_boot(const float *proba, const int32_t *y, const int *qid, int n, int k, int n_boot, uint64_t seed,
                          double *auc, double *lo, double *hi, int *n_q) {
    int *start = (int *)malloc(sizeof(int) * (size_t)(n + 1)), nq = 0, i, b, m, cap = 2 * n + 1, n_ok = 0;
    float *bp = (float *)malloc(sizeof(float) * (size_t)cap * k);
    int32_t *by = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap);
    double *v = (double *)malloc(sizeof(double) * (size_t)(n_boot ? n_boot : 1));
    codi_probe_metrics met;
    codi_rng rng;
    char err[128];
    *auc = *lo = *hi = NAN; *n_q = 0;
    if (!start || !bp || !by || !v) { free(start); free(bp); free(by); free(v); return -1; }
    for (i = 0; i < n; i++) if (!i || qid[i] != qid[i - 1]) start[nq++] = i;
    start[nq] = n; *n_q = nq;
    if (n > 0 && !codi_probe_metrics_of(proba, y, n, k, &met, err, sizeof err)) *auc = met.auc;
    codi_rng_seed(&rng, seed);
    for (b = 0; b < n_boot && nq > 1; b++) {
        for (m = 0, i = 0; i < nq; i++) {
            int q = (int)(codi_rng_uniform(&rng) * nq), len = start[q + 1] - start[q];
            if (m + len > cap) {
                int nc = 2 * (m + len);
                float *np = (float *)realloc(bp, sizeof(float) * (size_t)nc * k);
                int32_t *ny = np ? (int32_t *)realloc(by, sizeof(int32_t) * (size_t)nc) : NULL;
                if (np) bp = np;
                if (!ny) { free(start); free(bp); free(by); free(v); return -1; }
                by = ny; cap = nc;
            }
            memcpy(bp + (size_t)m * k, proba + (size_t)start[q] * k, sizeof(float) * (size_t)len * k);
            memcpy(by + m, y + start[q], sizeof(int32_t) * (size_t)len);
            m += len;
        }
        if (!codi_probe_metrics_of(bp, by, m, k, &met, err, sizeof err) && met.auc == met.auc) v[n_ok++] = met.auc;
    }
    if (n_boot && n_ok >= n_boot / 2) {
        qsort(v, (size_t)n_ok, sizeof(double), cli_cmp_double);
        *lo = v[(int)floor(0.025 * (n_ok - 1))]; *hi = v[(int)ceil(0.975 * (n_ok - 1))];
    }
    free(start); free(bp); free(by); free(v);
    return 0;
}

/* File lines of the dataset's questions by index (line_of[index], 0 unknown): from questions
   (already checked against the dataset) or else the questions file the dataset records, when it is
   there with the recorded content hash. NULL (no lines known) otherwise. */
typedef struct { int *line_of, n; } probe_lines;
static int probe_line_cb(void *user, const cli_question *q) {
    probe_lines *pl = (probe_lines *)user;
    if (q->index < pl->n) pl->line_of[q->index] = q->line;
    return 0;
}
static int *probe_question_lines(const pca_acts *a, const char *questions) {
    const char *rec_hash = codi_safetensors_metadata(a->f, "questions_hash"), *rec_path = codi_safetensors_metadata(a->f, "questions");
    char hex[17];
    probe_lines pl;
    int q, n_bad, max_q = 0;
    if (!questions) {
        if (!rec_path || !*rec_path || !rec_hash || !*rec_hash || !cli_exists(rec_path) || cli_file_hash(rec_path, hex) || strcmp(hex, rec_hash)) return NULL;
        questions = rec_path;
    }
    for (q = 0; q < a->Q; q++) if (a->qindex[q] > max_q) max_q = a->qindex[q];
    pl.n = max_q + 1;
    if (!(pl.line_of = (int *)calloc((size_t)pl.n, sizeof(int)))) return NULL;
    if (cli_for_each_question(questions, pl.n, 0, 0, probe_line_cb, &pl, &n_bad) < 0) { free(pl.line_of); return NULL; }
    return pl.line_of;
}

/* One row of a rows CSV: probe,question_index,line,slot,slot_label,label,predicted,p_class0..,split
   (line and label empty when unknown). */
static void probe_row_csv(FILE *f, const char *name, const pca_acts *a, const int *line_of, int q, int slot, int label,
                          const float *pr, int k, const char *split) {
    int c, best = 0;
    for (c = 1; c < k; c++) if (pr[c] > pr[best]) best = c;
    fprintf(f, "%s,%d,", name, a->qindex[q]);
    if (line_of && line_of[a->qindex[q]] > 0) fprintf(f, "%d", line_of[a->qindex[q]]);
    fprintf(f, ",%d,%s,", slot, a->slot_label[slot]);
    if (label >= 0) fprintf(f, "%d", label);
    fprintf(f, ",%d", best);
    for (c = 0; c < k; c++) fprintf(f, ",%.9g", pr[c]);
    fprintf(f, ",%s\n", split);
}

static void probe_rows_header(FILE *f, int k) {
    int c;
    fprintf(f, "probe,question_index,line,slot,slot_label,label,predicted");
    for (c = 0; c < k; c++) fprintf(f, ",p_class%d", c);
    fprintf(f, ",split\n");
}

typedef struct {
    const char *acts, *tensor, *layers, *positions, *out, *label, *questions, *probes, *csv, *labels_file, *keys;
    int head, max_iter, seed, limit, allow_small, force, boot;
    double l2, test_frac;
    cli_model_args ma;
} probe_args;

/* Rows of cell (layer, slots) split into train / test: x [n, row], y [n]. */
static int probe_gather(const pca_acts *a, const probe_labels *pl, const probe_args *g, int layer, const int *slots,
                        int n_slots, int want_test, float *x, int32_t *y, int *row_q, int *row_slot) {
    int q, s, n = 0, used = 0;
    for (q = 0; q < a->Q; q++) {
        if (!a->done[q]) continue;
        if (g->limit && used++ >= g->limit) break;
        if (probe_is_test(a->qindex[q], g->seed, g->test_frac) != want_test) continue;
        for (s = 0; s < n_slots; s++) {
            int lab = pl->label[q * a->P + slots[s]];
            if (lab < 0 || !pca_acts_valid(a, q, slots[s])) continue;
            pca_acts_row(a, q, slots[s], layer, x + (size_t)n * a->row);
            if (row_q) { row_q[n] = q; row_slot[n] = slots[s]; }
            y[n++] = lab;
        }
    }
    return n;
}

static int probe_train_run(const cli_command *self, int argc, char **argv) {
    probe_args g;
    cli_opt opts[] = {
        { "--acts", CLI_STR, &g.acts, 0, 0, "FILE", "activation dataset written by codi record (required)" },
        { "--label", CLI_STR, &g.label, 0, 0, "RULE", "correct | parity | step | answer-token | field:NAME (this or --labels; see above)" },
        { "--labels", CLI_STR, &g.labels_file, 0, 0, "FILE", "per-row labels: lines question_index,position,label (position: latent3, bot, ..., or *)" },
        { "--out", CLI_STR, &g.out, 0, 0, "DIR", "output directory (required; created)" },
        { "--questions", CLI_STR, &g.questions, 0, 0, "FILE", "questions JSONL for --label field:NAME (the file the dataset was recorded from)" },
        { "--force", CLI_FLAG, &g.force, 0, 0, NULL, "use a --questions file other than the dataset's own (its labels must still be by question index)" },
        { "--allow-small", CLI_FLAG, &g.allow_small, 0, 0, NULL, "train cells where a class has fewer than 10 rows in the training or held-out split" },
        { "--tensor", CLI_STR, &g.tensor, 0, 0, "NAME", "resid (default), final, latent_inputs, key, key_pre_rope or value" },
        { "--keys", CLI_STR, &g.keys, 0, 0, "post|pre", "--tensor key: post-RoPE as cached (default) or pre-RoPE (the key_pre_rope tensor)" },
        { "--head", CLI_INT, &g.head, -1, 1024, "H", "key/value: one kv head (default -1: all heads concatenated)" },
        { "--layers", CLI_STR, &g.layers, 0, 0, "LIST", "layers, e.g. 0,8,16 or 4-16 (default all)" },
        { "--positions", CLI_STR, &g.positions, 0, 0, "LIST", "recorded slots (default all; parity/step: the latent slots)" },
        { "--test-frac", CLI_DOUBLE, &g.test_frac, 0.01, 0.99, "F", "held-out share of questions (default 0.2)" },
        { "--seed", CLI_INT, &g.seed, 0, 2147483647, "S", "seed of the held-out split (default 0)" },
        { "--l2", CLI_DOUBLE, &g.l2, 0, 1e6, "LAMBDA", "L2 strength: mean cross-entropy + LAMBDA/2 |W|^2 (default 0.01; sklearn C = 1/(LAMBDA n))" },
        { "--max-iter", CLI_INT, &g.max_iter, 1, 1000000, "N", "L-BFGS iterations at most (default 1000)" },
        { "--limit", CLI_INT, &g.limit, 0, 1e9, "N", "use the first N finished questions (default 0: all)" },
        { "--bootstrap", CLI_INT, &g.boot, 0, 1000000, "N", "resamples of whole questions for the AUC's 95% interval (default 2000; 0: none)" },
        CLI_MODEL_OPTS(&g.ma),
        CLI_END
    };
    pca_acts a;
    probe_labels pl;
    int layers[PCA_MAX_SLOTS], slots[PCA_MAX_SLOTS], n_layers, n_slots, rc = 1, prc, li, ci, n_cells, cols, i, j;
    float *xtr = NULL, *xte = NULL, *proba = NULL;
    int32_t *ytr = NULL, *yte = NULL;
    int *rq = NULL, *rs = NULL, *qid = NULL, *line_of = NULL;
    double *boot = NULL;                         /* [n_cells, 2] the AUC's bootstrap interval over questions */
    codi_probe **probes = NULL;
    codi_probe_metrics *met = NULL;
    char (*names)[128] = NULL, path[1024], err[512];
    FILE *csv = NULL, *rows_csv = NULL;
    cli_progress *prog = NULL;
    double t0 = cli_now();
    char rule_buf[1100], lim[16];
    memset(&g, 0, sizeof g);
    memset(&pl, 0, sizeof pl);
    g.tensor = "resid"; g.head = -1; g.test_frac = 0.2; g.l2 = 1e-2; g.max_iter = 1000; g.boot = 2000; g.ma = cli_model_defaults();
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.acts || !g.out || !g.label == !g.labels_file) {
        fprintf(stderr, "codi probe train: --acts, --out and one of --label or --labels are required (codi probe train --help)\n"); return 2;
    }
    if (g.labels_file) { snprintf(rule_buf, sizeof rule_buf, "labels:%s", g.labels_file); g.label = rule_buf; }
    if ((prc = cli_keys_option("probe", g.keys)) < 0) return 2;
    if (prc && strcmp(g.tensor, "key")) { fprintf(stderr, "codi probe: --keys applies to --tensor key, not %s\n", g.tensor); return 2; }
    if (prc) g.tensor = "key_pre_rope";
    {
        const char *in[] = { g.acts, g.questions, g.ma.model, g.labels_file };
        if (cli_out_check("probe train", g.out, CLI_OUT_DIR | CLI_OUT_RESUME, 0, in, CLI_N(in))) return 2;
    }
    cli_threads_checked(&g.ma);
    if (pca_acts_open(&a, "probe", g.acts, g.tensor, g.head)) return 1;
    if (!strncmp(g.label, "field:", 6) && g.questions && pca_check_questions(&a, "probe", g.questions, g.force)) { pca_acts_close(&a); return 1; }
    if (probe_make_labels(&pl, &a, g.label, g.questions, &g.ma, "probe")) { pca_acts_close(&a); return 1; }
    if ((n_layers = pca_parse_indices("probe", "--layers", g.layers, a.n_layers, layers)) < 0 ||
        (n_slots = pca_parse_indices("probe", "--positions", g.positions, a.P, slots)) < 0) { rc = 2; goto done; }
    if (pl.pooled) {                             /* parity / step: keep the latent slots */
        for (i = j = 0; i < n_slots; i++) if (pca_slot_step(&a, slots[i]) >= 0) slots[j++] = slots[i];
        n_slots = j;
        if (n_slots < 2) { fprintf(stderr, "codi probe: --label %s needs at least two latent slots among --positions\n", g.label); goto done; }
    } else {                                     /* one probe per slot: slots without labelled rows have none */
        int left_out = 0;
        for (i = j = 0; i < n_slots; i++) {
            int q, any = 0;
            for (q = 0; q < a.Q && !any; q++) any = pca_acts_valid(&a, q, slots[i]) && pl.label[q * a.P + slots[i]] >= 0;
            if (any) { slots[j++] = slots[i]; continue; }
            fprintf(stderr, "%s%s", left_out++ ? ", " : "codi probe: note: no labelled rows at (left out): ", a.slot_label[slots[i]]);
        }
        if (left_out) fprintf(stderr, "\n");
        if (!(n_slots = j)) { fprintf(stderr, "codi probe: label %s: no labelled rows at the chosen slots\n", g.label); goto done; }
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
        rq = (int *)malloc(rows * sizeof(int)); rs = (int *)malloc(rows * sizeof(int)); qid = (int *)malloc(rows * sizeof(int));
    }
    boot = (double *)malloc((size_t)n_cells * 2 * sizeof(double));
    line_of = probe_question_lines(&a, g.questions);
    probes = (codi_probe **)calloc((size_t)n_cells, sizeof *probes);
    met = (codi_probe_metrics *)calloc((size_t)n_cells, sizeof *met);
    names = (char (*)[128])calloc((size_t)n_cells, sizeof *names);
    if (!xtr || !xte || !ytr || !yte || !proba || !rq || !rs || !qid || !boot || !probes || !met || !names) { fprintf(stderr, "codi probe: out of memory\n"); goto done; }
    snprintf(path, sizeof path, "%s/cells.csv", g.out);
    if (!(csv = cli_out_open(path, "w"))) goto done;
    fprintf(csv, "name,tensor,layer,slot,slot_label,label,n_train,n_test,accuracy,acc_lo,acc_hi,auc,auc_lo,auc_hi,log_loss,iterations,converged,"
                 "n_test_questions,auc_ci_low,auc_ci_high,auc_ci_method\n");
    snprintf(path, sizeof path, "%s/rows.csv", g.out);
    if (!(rows_csv = cli_out_open(path, "w"))) goto done;
    probe_rows_header(rows_csv, pl.n_classes);
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
        ntr = probe_gather(&a, &pl, &g, layers[li], cs, ns, 0, xtr, ytr, NULL, NULL);
        nte = probe_gather(&a, &pl, &g, layers[li], cs, ns, 1, xte, yte, rq, rs);
        po.l2 = g.l2; po.max_iter = g.max_iter; po.n_threads = g.ma.threads;
        if (!nte) { fprintf(stderr, "\ncodi probe: %s: no held-out rows (raise --test-frac or use more questions)\n", names[cell]); goto done; }
        {   /* every class needs PROBE_MIN_ROWS rows on each side, or the accuracy and AUC mean little */
            int ctr[256] = {0}, cte[256] = {0}, c;
            for (i = 0; i < ntr; i++) ctr[ytr[i]]++;
            for (i = 0; i < nte; i++) cte[yte[i]]++;
            for (c = 0; c < pl.n_classes; c++) {
                if (ctr[c] >= PROBE_MIN_ROWS && cte[c] >= PROBE_MIN_ROWS) continue;
                fprintf(stderr, "\ncodi probe: %s%s: class '%s' has %d training and %d held-out rows (questions split whole: "
                        "--test-frac %g, --seed %d); a probe needs %d of each class on each side to be trusted%s\n",
                        g.allow_small ? "warning: " : "", names[cell], pl.class_name[c], ctr[c], cte[c], g.test_frac, g.seed, PROBE_MIN_ROWS,
                        g.allow_small ? " (--allow-small: training it anyway)" : "; --allow-small trains it anyway");
                if (!g.allow_small) goto done;
                break;
            }
        }
        if (!(probes[cell] = codi_probe_train(xtr, ytr, ntr, a.row, pl.n_classes, &po, err, sizeof err))) {
            fprintf(stderr, "\ncodi probe: %s: %s\n", names[cell], err); goto done;
        }
        codi_probe_predict_proba(probes[cell], xte, nte, proba);
        if (codi_probe_metrics_of(proba, yte, nte, pl.n_classes, &met[cell], err, sizeof err)) { fprintf(stderr, "codi probe: %s\n", err); goto done; }
        {   /* the held-out rows, and the AUC's interval over whole questions */
            double auc;
            int nq;
            for (i = 0; i < nte; i++) {
                qid[i] = a.qindex[rq[i]];
                probe_row_csv(rows_csv, names[cell], &a, line_of, rq[i], rs[i], yte[i], proba + (size_t)i * pl.n_classes, pl.n_classes, "held-out");
            }
            if (cli_out_flush(rows_csv, path) ||
                probe_auc_boot(proba, yte, qid, nte, pl.n_classes, g.boot, (uint64_t)g.seed + (uint64_t)cell, &auc, &boot[2 * cell], &boot[2 * cell + 1], &nq)) goto done;
            fprintf(csv, "%s,%s,%d,%s,%s,%s,%d,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%d,%d,%d,", names[cell], g.tensor, layers[li],
                    pl.pooled ? "pooled" : (snprintf(hbuf, sizeof hbuf, "%d", cs[0]), hbuf), pl.pooled ? "pooled" : a.slot_label[cs[0]], g.label,
                    ntr, nte, met[cell].accuracy, met[cell].acc_lo, met[cell].acc_hi, met[cell].auc, met[cell].auc_lo, met[cell].auc_hi,
                    met[cell].log_loss, probes[cell]->iterations, probes[cell]->converged, nq);
            if (boot[2 * cell] == boot[2 * cell]) fprintf(csv, "%.6f,%.6f", boot[2 * cell], boot[2 * cell + 1]); else fputc(',', csv);
            if (g.boot) fprintf(csv, ",bootstrap over questions (%d resamples)\n", g.boot); else fprintf(csv, ",none (--bootstrap 0)\n");
        }
        cli_progress_update(prog, cell + 1);
    }
    cli_progress_end(prog); prog = NULL;
    if (cli_out_close(csv)) { csv = NULL; goto done; }
    csv = NULL;
    if (cli_out_close(rows_csv)) { rows_csv = NULL; goto done; }
    rows_csv = NULL;

    printf("held-out %s [95%% CI: bootstrap over questions], label %s, %s\n", pl.n_classes == 2 ? "AUC" : "macro AUC", g.label, g.tensor);
    printf("%-8s", "layer");
    for (ci = 0; ci < cols; ci++) printf(" %-20s", pl.pooled ? "pooled" : a.slot_label[slots[ci]]);
    printf("\n");
    for (li = 0; li < n_layers; li++) {
        printf("%-8d", layers[li]);
        for (ci = 0; ci < cols; ci++) {
            const codi_probe_metrics *mm = &met[li * cols + ci];
            char cell[32];
            const double *bb = &boot[2 * (li * cols + ci)];
            if (bb[0] == bb[0]) snprintf(cell, sizeof cell, "%.3f [%.3f,%.3f]", mm->auc, bb[0], bb[1]);
            else snprintf(cell, sizeof cell, "%.3f [-]", mm->auc);
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
                               "test_frac", frac, "seed", sd, "limit", lim, "model", a.model, "codi_lens", CLI_VERSION, NULL };
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
        snprintf(lim, sizeof lim, "%d", g.limit);
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
    fprintf(stderr, "codi probe: wrote %s/probes.safetensors, cells.csv, rows.csv (held-out rows), heatmap.svg in %.1f s\n", g.out, cli_now() - t0);
    rc = 0;
done:
    if (prog) cli_progress_end(prog);
    cli_out_abort(csv); cli_out_abort(rows_csv);
    for (i = 0; probes && i < n_cells; i++) codi_probe_free(probes[i]);
    free(probes); free(met); free(names); free(xtr); free(xte); free(ytr); free(yte); free(proba);
    free(rq); free(rs); free(qid); free(line_of); free(boot);
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
        { "--questions", CLI_STR, &g.questions, 0, 0, "FILE", "questions JSONL when the probes' label is field:NAME (the dataset's own)" },
        { "--labels", CLI_STR, &g.labels_file, 0, 0, "FILE", "per-row labels (as probe train --labels) instead of the probes' own rule" },
        { "--force", CLI_FLAG, &g.force, 0, 0, NULL, "use a --questions file other than the one the dataset was recorded from" },
        { "--bootstrap", CLI_INT, &g.boot, 0, 1000000, "N", "resamples of whole questions for the AUC's 95% interval (default 2000; 0: none)" },
        CLI_MODEL_OPTS(&g.ma),
        CLI_END
    };
    char err[512];
    codi_safetensors_file *f;
    pca_acts a;
    probe_labels pl;
    const char *tensor, *label, *m_acts, *m_frac, *m_seed, *m_limit;
    static const char *const split_name[4] = { "train", "held-out", "unused", "new" };
    int n, i, rc = 1, prc, have_labels = 0, *split = NULL, *qb = NULL, *line_of = NULL, header = 0, pb_k = 0;
    FILE *csv = NULL;
    float *x = NULL, *pr = NULL, *pb = NULL;
    int32_t *yb = NULL;
    char rule_buf[1100];
    memset(&g, 0, sizeof g);
    g.ma = cli_model_defaults(); g.boot = 2000;
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.probes || !g.acts) { fprintf(stderr, "codi probe apply: --probes and --acts are required\n"); return 2; }
    {
        const char *in[] = { g.probes, g.acts, g.questions, g.ma.model };
        if (g.csv && cli_out_check("probe apply", g.csv, CLI_OUT_STREAM | CLI_OUT_RESUME, 0, in, CLI_N(in))) return 2;
    }
    if (!(f = codi_safetensors_open(g.probes, err, sizeof err))) { fprintf(stderr, "codi probe apply: %s\n", err); return 1; }
    tensor = codi_safetensors_metadata(f, "tensor"); label = codi_safetensors_metadata(f, "label");
    if (!tensor || !label) { fprintf(stderr, "codi probe apply: %s has no tensor/label metadata (not from codi probe train)\n", g.probes); codi_safetensors_close(f); return 1; }
    if (pca_acts_open(&a, "probe apply", g.acts, tensor, -1)) { codi_safetensors_close(f); return 1; }
    if (g.labels_file) { snprintf(rule_buf, sizeof rule_buf, "labels:%s", g.labels_file); label = rule_buf; }
    if (!strncmp(label, "field:", 6) && g.questions && pca_check_questions(&a, "probe apply", g.questions, g.force)) goto done;
    have_labels = !probe_make_labels(&pl, &a, label, g.questions, &g.ma, "probe apply");
    if (!have_labels) fprintf(stderr, "codi probe apply: no labels for '%s' here: probabilities only\n", label);
    if (!(split = (int *)malloc((size_t)a.Q * sizeof(int)))) { fprintf(stderr, "codi probe apply: out of memory\n"); goto done; }
    m_acts = codi_safetensors_metadata(f, "acts"); m_frac = codi_safetensors_metadata(f, "test_frac"); m_seed = codi_safetensors_metadata(f, "seed");
    m_limit = codi_safetensors_metadata(f, "limit");
    {   /* the dataset the probes were trained on: each question's side of the split again (probe_gather's order) */
        struct stat s1, s2;
        int same = m_acts && m_frac && m_seed && (!strcmp(m_acts, g.acts) || (!stat(m_acts, &s1) && !stat(g.acts, &s2) &&
                   s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino));
        int q, used = 0, limit = m_limit ? atoi(m_limit) : 0;
        for (q = 0; q < a.Q; q++) {
            if (!same) { split[q] = 3; continue; }
            if (!a.done[q]) { split[q] = 2; continue; }
            split[q] = limit && used++ >= limit ? 2 : probe_is_test(a.qindex[q], atoi(m_seed), atof(m_frac));
        }
        fprintf(stderr, "codi probe apply: %s\n", same ? "the probes' own dataset: training and held-out rows (the same split) reported apart"
                                                      : "another dataset than the probes were trained on: every row is new");
    }
    if (g.csv && !(csv = cli_out_open(g.csv, "w"))) goto done;
    x = (float *)malloc((size_t)a.row * sizeof(float));
    pr = (float *)malloc(256 * sizeof(float));
    yb = (int32_t *)malloc((size_t)4 * a.Q * a.P * sizeof(int32_t));   /* per split: the labelled rows' labels, questions, probabilities */
    qb = (int *)malloc((size_t)4 * a.Q * a.P * sizeof(int));
    if (!x || !pr || !yb || !qb) { fprintf(stderr, "codi probe apply: out of memory\n"); goto done; }
    line_of = probe_question_lines(&a, g.questions);
    printf("%-28s %-12s %-8s %6s %8s %-26s %s\n", "probe", "slot", "split", "rows", "mean p1", "accuracy [95% CI, Wilson]", "AUC [95% CI, bootstrap over questions]");
    for (n = codi_safetensors_count(f), i = 0; i < n; i++) {
        codi_safetensors_tensor t;
        char name[160], *dot;
        codi_probe *p;
        int layer = -1, slot = -1, s, q, s0, s1;
        if (codi_safetensors_tensor_at(f, i, &t) || strlen(t.name) >= sizeof name || !(dot = strrchr(strcpy(name, t.name), '.')) || strcmp(dot, ".weight")) continue;
        *dot = 0;
        if (strncmp(name, tensor, strlen(tensor)) || sscanf(name + strlen(tensor), ".layer%d.slot%d", &layer, &slot) < 1) continue;
        if (strstr(name, ".head")) { fprintf(stderr, "codi probe apply: %s: probes of one kv head are not applied here (skipped)\n", name); continue; }
        if (!(p = codi_probe_load(g.probes, name, err, sizeof err))) { fprintf(stderr, "codi probe apply: %s\n", err); goto done; }
        if (p->dim != a.row || layer < 0 || layer >= a.n_layers || slot >= a.P) {
            fprintf(stderr, "codi probe apply: probe %s (dimension %d) does not fit %s (%d layers, %d slots, dimension %d)\n",
                    name, p->dim, g.acts, a.n_layers, a.P, a.row);
            codi_probe_free(p); goto done;
        }
        if (p->n_classes > 256) { fprintf(stderr, "codi probe apply: %s has %d classes (at most 256)\n", name, p->n_classes); codi_probe_free(p); goto done; }
        if (csv && !header++) probe_rows_header(csv, p->n_classes);
        if (p->n_classes > pb_k) {
            float *nb = (float *)realloc(pb, (size_t)4 * a.Q * a.P * (size_t)p->n_classes * sizeof(float));
            if (!nb) { fprintf(stderr, "codi probe apply: out of memory\n"); codi_probe_free(p); goto done; }
            pb = nb; pb_k = p->n_classes;
        }
        s0 = slot >= 0 ? slot : 0; s1 = slot >= 0 ? slot + 1 : a.P;
        /* one line per split for each slot, and for a pooled probe one over all its slots (s = s1) */
        for (s = s0; s <= s1; s++) {
            int rows[4] = {0}, correct[4] = {0}, labelled[4] = {0}, k, K = p->n_classes, all = s == s1, sl;
            double sum[4] = {0}, lo, hi;
            if (all && (slot >= 0 || s1 - s0 < 2)) break;
            for (q = 0; q < a.Q; q++) for (sl = all ? s0 : s; sl < (all ? s1 : s + 1); sl++) {   /* a question's rows adjacent */
                int best = 0, c, lab = have_labels ? pl.label[q * a.P + sl] : -1, sp = split[q];
                if (!pca_acts_valid(&a, q, sl)) continue;
                pca_acts_row(&a, q, sl, layer, x);
                codi_probe_predict_proba(p, x, 1, pr);
                for (c = 1; c < K; c++) if (pr[c] > pr[best]) best = c;
                rows[sp]++; sum[sp] += pr[1];
                if (lab >= K) lab = -1;
                if (lab >= 0) {
                    int r = sp * a.Q * a.P + labelled[sp]++;
                    correct[sp] += best == lab;
                    memcpy(pb + (size_t)r * K, pr, sizeof(float) * (size_t)K); yb[r] = lab; qb[r] = a.qindex[q];
                }
                if (csv && !all) probe_row_csv(csv, name, &a, line_of, q, sl, lab, pr, K, split_name[sp]);
            }
            for (k = 0; k < 4; k++) {
                double auc, alo, ahi;
                int nq;
                char acc[40] = "-", aucs[40] = "-";
                if (!rows[k]) continue;
                if (labelled[k]) {
                    codi_wilson_interval(correct[k], labelled[k], 1.96, &lo, &hi);
                    snprintf(acc, sizeof acc, "%.4f [%.4f, %.4f]", (double)correct[k] / labelled[k], lo, hi);
                    if (probe_auc_boot(pb + (size_t)k * a.Q * a.P * K, yb + k * a.Q * a.P, qb + k * a.Q * a.P, labelled[k], K, g.boot, 0, &auc, &alo, &ahi, &nq)) {
                        fprintf(stderr, "codi probe apply: out of memory\n"); codi_probe_free(p); goto done;
                    }
                    if (alo == alo) snprintf(aucs, sizeof aucs, "%.4f [%.4f, %.4f]", auc, alo, ahi);
                    else if (auc == auc) snprintf(aucs, sizeof aucs, "%.4f [-]", auc);
                }
                printf("%-28s %-12s %-8s %6d %8.4f %-26s %s\n", name, all ? "all slots" : a.slot_label[s], split_name[k], rows[k], sum[k] / rows[k], acc, aucs);
            }
        }
        codi_probe_free(p);
    }
    rc = 0;
done:
    if (csv && rc) cli_out_abort(csv);
    else if (csv && cli_out_close(csv)) rc = 1;
    free(x); free(pr); free(split); free(pb); free(yb); free(qb); free(line_of);
    if (have_labels) probe_labels_free(&pl);
    pca_acts_close(&a); codi_safetensors_close(f);
    return rc;
}

static const cli_command cmd_probe_train = {
    "probe train", "", "codi probe train --acts FILE --label RULE --out DIR [options]",
    "Fits L2-regularised logistic-regression probes (full-batch L-BFGS, standardised inputs) on a\n"
    "`codi record` dataset and reports held-out accuracy (Wilson 95% interval) and AUC (one-vs-rest\n"
    "macro for more than two classes) with a 95% bootstrap interval over whole questions (cells.csv\n"
    "also keeps the Hanley-McNeil row interval, auc_lo/auc_hi). Questions are split into train and\n"
    "held-out sets by a fixed hash of their index (--test-frac, --seed), so every slot of a question\n"
    "lands on the same side. A cell where some class has fewer than 10 rows in either split is refused\n"
    "with the class and its counts (its accuracy and AUC would mean little); --allow-small trains it anyway.\n"
    "Label rules: correct (did CODI answer right: one probe per layer and slot), field:NAME (that\n"
    "field of each --questions line, distinct values as classes; NAME may be a dotted path such as steps.0.3;\n"
    "the --questions file must be the one the dataset was recorded from, checked by its content hash, else\n"
    "its path: --force to use another; one probe per layer and slot), --labels FILE (per-row labels: lines\n"
    "or CSV question_index,position,label with position a slot as codi record names it, latent3, bot,\n"
    "answer1, prompt0, 17 for an absolute position, or * for every slot; a header line is skipped; one\n"
    "probe per layer and slot, slots without labels left out),\n"
    "parity (odd vs even latent step) and step (which latent step; multinomial): one probe per layer\n"
    "over the latent slots among --positions; answer-token (needs --model): is the top token of\n"
    "lm_head(final) at that slot the number CODI finally answered (1) or another number, an intermediate\n"
    "result (0); slots whose top token is no number are left out; one probe per layer over the slots\n"
    "(Latent Reasoning Sprint #2; costs one lm_head per recorded slot).\n"
    "Writes DIR/probes.safetensors (codi_probe_load reads each by name, e.g. resid.layer8.slot3),\n"
    "cells.csv, heatmap.svg (AUC per layer and slot) and rows.csv: every held-out row scored\n"
    "(probe, question_index, line, slot, slot_label, label, predicted, p_class0.., split), from which\n"
    "accuracy and AUC can be recomputed.\n\n"
    "Examples:\n"
    "  codi probe train --acts acts.safetensors --label parity --positions 1-6 --out probe_parity\n"
    "  codi probe train --acts acts.safetensors --label correct --tensor final --out probe_correct\n"
    "  codi probe train --acts acts.safetensors --label field:kind --questions q.jsonl --layers 4-16 --out p\n"
    "  codi probe train --acts acts.safetensors --labels row_labels.csv --positions latent3 --out p_rows",
    probe_train_run
};

static const cli_command cmd_probe_apply = {
    "probe apply", "", "codi probe apply --probes FILE --acts FILE [--out ROWS.csv]",
    "Scores every row of a dataset with every probe of a probes file (a pooled probe on every slot)\n"
    "and prints per probe, slot and split the rows, the mean probability of class 1 and, when the dataset\n"
    "carries the probes' labels, the accuracy with its Wilson 95% interval and the AUC with a 95%\n"
    "bootstrap interval over whole questions (a pooled probe: also over all its slots). On the dataset the probes\n"
    "were trained on (the acts path in their metadata) the training rows, the held-out rows (the same\n"
    "split by question) and rows past training's --limit are reported apart: only held-out accuracy\n"
    "measures the probe; on any other dataset every row is new. --out writes one CSV line per row\n"
    "(probe, question_index, line, slot, slot_label, label, predicted, p_class0.., split).\n\n"
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
