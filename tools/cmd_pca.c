/* codi pca: principal components of recorded activations (a `codi record` dataset), per layer
   over a set of recorded positions, with explained variance, projections, scatter plots, the lens
   over each component and steering vectors along components. Also the dataset reader that
   tools/cmd_probe.c shares (pca_acts_*). Figures with tools/svg.h. */
#include "svg.h"

/* ---- reading an activation dataset (layout: codi_lens.h >>acts, format codi_lens.acts.v1) ---- */

#define PCA_MAX_SLOTS 4096       /* positions and layers of a dataset pca / probe take (their index lists) */

typedef struct {
    codi_safetensors_file *f;
    const char *path, *tensor;   /* tensor: resid, final, latent_inputs, key, key_pre_rope or value */
    codi_safetensors_tensor t;
    int dtype;                   /* CODI_F32, CODI_BF16 or CODI_F16 of t */
    int Q, P;                    /* questions, recorded slots of t */
    int n_layers;                /* layer indices of t: L+1 (resid), L (key, value), 1 (final, latent_inputs) */
    int row;                     /* floats per row: D, KVH*HD, or HD for one head */
    int head;                    /* key/value: kv head, -1 = all heads concatenated */
    size_t head_stride, layer_stride, slot_stride, q_stride;   /* in elements of t */
    unsigned char *done;         /* [Q] 1 = row recorded */
    int32_t *qindex;             /* [Q] question index in the questions file */
    unsigned char *correct;      /* [Q] */
    int32_t *pos;                /* [Q, P] absolute positions, -1 = padding; NULL: every slot is a row */
    int n_done;
    char (*slot_label)[32];      /* [P] "bot", "latent 1", ... (from the labels metadata) */
    const char *model;           /* metadata: the model it was recorded from (or "") */
} pca_acts;

static void pca_acts_close(pca_acts *a) {
    free(a->done); free(a->qindex); free(a->correct); free(a->slot_label); free(a->pos);
    codi_safetensors_close(a->f);
    memset(a, 0, sizeof *a);
}

/* A small integer tensor of the dataset (I32 or U8) as int32 [n]; NULL after a message. */
static int32_t *pca_acts_ints(pca_acts *a, const char *cmd, const char *name, int n) {
    codi_safetensors_tensor t;
    int32_t *v;
    int i;
    if (codi_safetensors_find(a->f, name, &t) || (int)t.numel != n || (strcmp(t.dtype, "I32") && strcmp(t.dtype, "U8"))) {
        fprintf(stderr, "codi %s: %s: tensor %s missing or not I32/U8 [%d]\n", cmd, a->path, name, n);
        return NULL;
    }
    if (!(v = (int32_t *)malloc((size_t)(n ? n : 1) * sizeof *v))) { fprintf(stderr, "codi %s: out of memory\n", cmd); return NULL; }
    for (i = 0; i < n; i++) {
        if (t.dtype[0] == 'U') v[i] = ((const unsigned char *)t.data)[i];
        else memcpy(&v[i], (const char *)t.data + 4 * (size_t)i, 4);
    }
    return v;
}

/* Opens path and checks the chosen tensor's shape against the dataset's. 0, or -1 after a message. */
static int pca_acts_open(pca_acts *a, const char *cmd, const char *path, const char *tensor, int head) {
    char err[256];
    const char *fmt, *labels;
    int32_t *tmp;
    int i, want_nd;
    memset(a, 0, sizeof *a);
    a->path = path; a->tensor = tensor; a->head = head;
    if (!(a->f = codi_safetensors_open(path, err, sizeof err))) { fprintf(stderr, "codi %s: %s\n", cmd, err); return -1; }
    fmt = codi_safetensors_metadata(a->f, "format");   /* codi record writes "codi_lens.acts.v1"; "pt" (torch's default) is read too, the layout checked below */
    if (!fmt || (strcmp(fmt, "codi_lens.acts.v1") && strcmp(fmt, "pt"))) {
        fprintf(stderr, "codi %s: %s is not an activation dataset (format %s; write one with codi record)\n", cmd, path, fmt ? fmt : "missing");
        goto fail;
    }
    if (codi_acts_check(a->f, NULL, err, sizeof err)) { fprintf(stderr, "codi %s: %s: %s\n", cmd, path, err); goto fail; }
    a->model = codi_safetensors_metadata(a->f, "model");
    if (!a->model) a->model = "";
    if (codi_safetensors_find(a->f, tensor, &a->t)) {
        fprintf(stderr, "codi %s: %s has no tensor '%s'%s\n", cmd, path, tensor,
                !strcmp(tensor, "key") || !strcmp(tensor, "value") ? " (record with --kv)" :
                !strcmp(tensor, "key_pre_rope") ? " (record with --kv; datasets recorded before it existed lack it)" : "");
        goto fail;
    }
    if (!strcmp(a->t.dtype, "F32")) a->dtype = CODI_F32;
    else if (!strcmp(a->t.dtype, "BF16")) a->dtype = CODI_BF16;
    else if (!strcmp(a->t.dtype, "F16")) a->dtype = CODI_F16;
    else { fprintf(stderr, "codi %s: %s: tensor %s has dtype %s (F32, BF16 or F16 expected)\n", cmd, path, tensor, a->t.dtype); goto fail; }
    want_nd = !strcmp(tensor, "resid") ? 4 : !strcmp(tensor, "key") || !strcmp(tensor, "key_pre_rope") || !strcmp(tensor, "value") ? 5 : 3;
    if (a->t.ndim != want_nd || a->t.numel == 0) {
        fprintf(stderr, "codi %s: %s: tensor %s has %d dimensions (%d expected) or no values\n", cmd, path, tensor, a->t.ndim, want_nd);
        goto fail;
    }
    a->Q = (int)a->t.shape[0]; a->P = (int)a->t.shape[1];
    a->n_layers = want_nd == 3 ? 1 : (int)a->t.shape[2];
    if (want_nd == 5) {
        int kvh = (int)a->t.shape[3], hd = (int)a->t.shape[4];
        if (head >= kvh) { fprintf(stderr, "codi %s: --head %d: the dataset has %d kv heads\n", cmd, head, kvh); goto fail; }
        a->head_stride = (size_t)hd;
        a->row = head < 0 ? kvh * hd : hd;
        a->layer_stride = (size_t)kvh * hd;
    } else {
        a->row = (int)a->t.shape[a->t.ndim - 1];
        a->layer_stride = (size_t)a->row;
    }
    if (a->P > PCA_MAX_SLOTS || a->n_layers > PCA_MAX_SLOTS) {
        fprintf(stderr, "codi %s: %s: %d positions x %d layers; at most %d of each\n", cmd, path, a->P, a->n_layers, PCA_MAX_SLOTS); goto fail;
    }
    a->slot_stride = a->layer_stride * (size_t)a->n_layers;
    a->q_stride = a->slot_stride * (size_t)a->P;
    if (!(a->done = (unsigned char *)malloc((size_t)a->Q)) || !(a->correct = (unsigned char *)malloc((size_t)a->Q))) goto oom;
    if (!(tmp = pca_acts_ints(a, cmd, "done", a->Q))) goto fail;
    for (i = 0; i < a->Q; i++) { a->done[i] = tmp[i] != 0; a->n_done += a->done[i]; }
    free(tmp);
    if (!(tmp = pca_acts_ints(a, cmd, "correct", a->Q))) goto fail;
    for (i = 0; i < a->Q; i++) a->correct[i] = tmp[i] != 0;
    free(tmp);
    if (!(a->qindex = pca_acts_ints(a, cmd, "question_index", a->Q))) goto fail;
    {   /* variable-length position sets pad with -1 */
        codi_safetensors_tensor pt;
        if (strcmp(tensor, "latent_inputs") && !codi_safetensors_find(a->f, "positions", &pt) && (long)pt.numel == (long)a->Q * a->P &&
            !(a->pos = pca_acts_ints(a, cmd, "positions", a->Q * a->P))) goto fail;
    }
    if (!(a->slot_label = (char (*)[32])calloc((size_t)a->P, 32))) goto oom;
    for (i = 0; i < a->P; i++) snprintf(a->slot_label[i], 32, !strcmp(tensor, "latent_inputs") ? "latent %d" : "slot %d", i + !strcmp(tensor, "latent_inputs"));
    labels = codi_safetensors_metadata(a->f, "labels");
    if (labels && strcmp(tensor, "latent_inputs")) {
        codi_json *j = codi_json_parse(labels, strlen(labels), err, sizeof err);
        if (j && j->type == CODI_JSON_ARR && j->count == a->P) {
            const codi_json *c;
            for (i = 0, c = j->child; c; c = c->next, i++)
                if (c->type == CODI_JSON_STR) snprintf(a->slot_label[i], 32, "%s", c->str);
        }
        codi_json_free(j);
    }
    if (!a->n_done) { fprintf(stderr, "codi %s: %s: no finished rows (done == 0 everywhere): nothing to fit\n", cmd, path); goto fail; }
    return 0;
oom:
    fprintf(stderr, "codi %s: out of memory\n", cmd);
fail:
    pca_acts_close(a);
    return -1;
}

/* Row (question q, slot, layer) of the chosen tensor as float [a->row]. */
static void pca_acts_row(const pca_acts *a, int q, int slot, int layer, float *out) {
    size_t base = (size_t)q * a->q_stride + (size_t)slot * a->slot_stride + (size_t)layer * a->layer_stride, i;
    if (a->head >= 0) base += (size_t)a->head * a->head_stride;
    for (i = 0; i < (size_t)a->row; i++) out[i] = codi_elem_f32(a->t.data, a->dtype, base + i);
}

/* 1 if (question q, slot) holds a recorded row. */
static int pca_acts_valid(const pca_acts *a, int q, int slot) {
    return a->done[q] && (!a->pos || a->pos[(size_t)q * a->P + slot] >= 0);
}

/* The latent step of a slot from its label ("latent 3" -> 3), or -1. */
static int pca_slot_step(const pca_acts *a, int slot) {
    int k;
    return sscanf(a->slot_label[slot], "latent %d", &k) == 1 ? k : -1;
}

/* "all" or a list like "0,2,5-8" of indices in [0, n) into out (ascending as given); the count,
   or -1 after a message. */
static int pca_parse_indices(const char *cmd, const char *opt, const char *s, int n, int *out) {
    int count = 0, a, b;
    char *end;
    if (!s || !strcmp(s, "all")) { for (a = 0; a < n; a++) out[a] = a; return n; }
    for (;;) {
        a = (int)strtol(s, &end, 10);
        if (end == s) break;
        b = a;
        if (*end == '-') { s = end + 1; b = (int)strtol(s, &end, 10); if (end == s) break; }
        if (a < 0 || b >= n || a > b) { fprintf(stderr, "codi %s: %s: %d-%d is outside 0..%d\n", cmd, opt, a, b, n - 1); return -1; }
        for (; a <= b; a++) { if (count == PCA_MAX_SLOTS) break; out[count++] = a; }
        if (!*end) return count;
        if (*end != ',') break;
        s = end + 1;
    }
    fprintf(stderr, "codi %s: %s needs 'all' or a list like 0,2,5-8 (indices 0..%d)\n", cmd, opt, n - 1);
    return -1;
}

/* The slot of a recorded position by name, as codi record's --positions spells it or as the labels
   metadata does ("latent3" or "latent 3", "bot", "answer1", "prompt0", "17" or "pos 17"), or a slot
   index "#K"; -1 when the dataset has no such slot. */
static int pca_slot_by_name(const pca_acts *a, const char *name) {
    char want[40], have[40];
    int i, j, k;
    if (name[0] == '#') { char *end; long v = strtol(name + 1, &end, 10); return *end || end == name + 1 || v < 0 || v >= a->P ? -1 : (int)v; }
    for (i = j = 0; name[i] && j < 38; i++) if (name[i] != ' ') want[j++] = name[i];
    want[j] = 0;
    if (want[0] >= '0' && want[0] <= '9') { memmove(want + 3, want, strlen(want) + 1); memcpy(want, "pos", 3); }
    for (k = 0; k < a->P; k++) {
        for (i = j = 0; a->slot_label[k][i] && j < 38; i++) if (a->slot_label[k][i] != ' ') have[j++] = a->slot_label[k][i];
        have[j] = 0;
        if (!strcmp(want, have)) return k;
    }
    return -1;
}

/* Is `questions` the file dataset a was recorded from? Compares the content hash codi record
   stores (questions_hash), else the recorded path. 0 when it is (or the dataset records neither:
   a note), -1 after a message when it is not and force is 0 (with force: a warning). */
static int pca_check_questions(const pca_acts *a, const char *cmd, const char *questions, int force) {
    const char *rec_hash = codi_safetensors_metadata(a->f, "questions_hash"), *rec_path = codi_safetensors_metadata(a->f, "questions");
    char hex[17];
    int same;
    if (rec_hash && *rec_hash) {
        if (cli_file_hash(questions, hex)) { fprintf(stderr, "codi %s: cannot read %s\n", cmd, questions); return -1; }
        same = !strcmp(hex, rec_hash);
    } else if (rec_path && *rec_path) {
        struct stat s1, s2;                      /* the same file under another path counts */
        same = !strcmp(rec_path, questions) || (!stat(rec_path, &s1) && !stat(questions, &s2) && s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino);
    } else {
        fprintf(stderr, "codi %s: note: %s does not record its questions file; cannot check that %s is it\n", cmd, a->path, questions);
        return 0;
    }
    if (same) return 0;
    if (rec_hash && *rec_hash)
        fprintf(stderr, "codi %s: %s%s is not the questions file %s was recorded from (%s): content hash %s, recorded %s; labels would "
                "belong to other questions%s\n", cmd, force ? "warning: " : "", questions, a->path, rec_path ? rec_path : "?", hex, rec_hash,
                force ? " (--force: going on)" : " (--force uses it anyway)");
    else
        fprintf(stderr, "codi %s: %s%s is not the questions file %s was recorded from (%s; the dataset records no content hash, so "
                "paths are compared)%s\n", cmd, force ? "warning: " : "", questions, a->path, rec_path,
                force ? " (--force: going on)" : " (--force uses it anyway)");
    return force ? 0 : -1;
}

static int pca_mkdir(const char *cmd, const char *dir) {
    if (mkdir(dir, 0777) && errno != EEXIST) { fprintf(stderr, "codi %s: cannot create %s: %s\n", cmd, dir, strerror(errno)); return -1; }
    return 0;
}

/* ---- codi pca ------------------------------------------------------------------------------- */

/* Indices of the n largest values of v [V], largest first (ties: lower id). */
static void pca_top(const float *v, int V, int n, int32_t *ids) {
    int i, k, c = 0;
    for (i = 0; i < V; i++) {
        if (c == n && !(v[i] > v[ids[n - 1]])) continue;
        for (k = c < n ? c++ : n - 1; k > 0 && v[i] > v[ids[k - 1]]; k--) ids[k] = ids[k - 1];
        ids[k] = i;
    }
}

typedef struct {
    const char *acts, *tensor, *layers, *positions, *out, *color, *steer_sd, *keys;
    int components, head, top, steer_components, steer_step, limit;
    double lens_sd;
    cli_model_args ma;
} pca_args;

/* The lens over each kept component of pc (rows read at `layer` of args->tensor): top tokens of
   lens(mean + t sd v) - lens(mean) for t = +lens_sd and -lens_sd, on stdout and into csv. */
static void pca_lens(const pca_args *g, const codi_model *m, const codi_tokenizer *tok, const codi_pca *pc,
                     const char *name, int n_show, FILE *csv) {
    int V = m->config.vocab, c, s, r, normed = strcmp(g->tensor, "final") == 0;
    float *delta = (float *)malloc((size_t)V * sizeof(float));
    int32_t ids[64];
    char cell[96];
    if (!delta) return;
    for (c = 0; c < pc->n_components && c < n_show; c++) {
        double sd = sqrt(pc->variance[c]);
        for (s = 1; s >= -1; s -= 2) {
            float t = (float)(s * g->lens_sd * sd);
            if (codi_lens_direction(m, pc->mean, pc->components + (size_t)c * pc->dim, t, normed, delta)) break;
            pca_top(delta, V, g->top, ids);
            printf("%s PC%d %c%.1fsd:", name, c + 1, s > 0 ? '+' : '-', g->lens_sd);
            for (r = 0; r < g->top; r++) {
                cli_token_cell(tok, ids[r], cell, sizeof cell, 12);
                printf(" %s", cell);
                fprintf(csv, "%s,%d,%+.3g,%d,%d,", name, c + 1, s * g->lens_sd, r + 1, ids[r]);
                cli_token_cell(tok, ids[r], cell, sizeof cell, 40);
                cli_json_string(csv, cell);
                fprintf(csv, ",%.6g\n", delta[ids[r]]);
            }
            printf("\n");
        }
    }
    free(delta);
}

/* Where a steering spec (codi_lens.h >>steer) edits what tensor recorded at layer: during latent
   step `step` (0: every latent step). */
static void pca_spec_site(const char *tensor, int layer, int step, char *buf, size_t cap) {
    char when[32];
    if (step > 0) snprintf(when, sizeof when, "\"step\": %d", step);
    else snprintf(when, sizeof when, "\"phase\": \"latent\"");
    if (!strcmp(tensor, "resid")) snprintf(buf, cap, "\"at\": \"resid\", \"layer\": %d, %s", layer, when);
    else if (!strcmp(tensor, "final")) snprintf(buf, cap, "\"at\": \"final\", %s", when);
    else if (step > 0) snprintf(buf, cap, "\"at\": \"latent_input\", %s", when);
    else snprintf(buf, cap, "\"at\": \"latent_input\"");   /* no step: every latent input (its phase is the latent one) */
}

/* One spec file DIR/steer_NAME.pcC.TAG.json: a single edit along a component or a random control. */
static int pca_write_spec(const char *dir, const char *vname, const char *tag, const char *site, double alpha,
                          int seed, const char *what) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/steer_%s.%s.json", dir, vname, tag);
    if (!(f = cli_out_open(path, "w"))) return -1;
    fprintf(f, "{\"name\": \"%s %s\",\n \"description\": \"%s\",\n \"edits\": [{%s, \"op\": \"add\", \"alpha\": %.9g, ",
            vname, tag, what, site, alpha);
    if (seed) fprintf(f, "\"random\": {\"seed\": %d, \"norm_of\": \"steer_vectors.safetensors:%s\"}}]}\n", seed, vname);
    else fprintf(f, "\"vector\": \"steer_vectors.safetensors:%s\"}]}\n", vname);
    return cli_out_close(f) ? -1 : 0;
}

static int pca_run(const cli_command *self, int argc, char **argv) {
    pca_args g;
    cli_opt opts[] = {
        { "--acts", CLI_STR, &g.acts, 0, 0, "FILE", "activation dataset written by codi record (required)" },
        { "--tensor", CLI_STR, &g.tensor, 0, 0, "NAME", "resid (default), final, latent_inputs, key, key_pre_rope or value" },
        { "--keys", CLI_STR, &g.keys, 0, 0, "post|pre", "--tensor key: post-RoPE as cached (default) or pre-RoPE (the key_pre_rope tensor)" },
        { "--head", CLI_INT, &g.head, -1, 1024, "H", "key/value: one kv head (default -1: all heads concatenated)" },
        { "--layers", CLI_STR, &g.layers, 0, 0, "LIST", "layers to analyse, e.g. 0,8,16 or 4-16 (default all)" },
        { "--positions", CLI_STR, &g.positions, 0, 0, "LIST", "recorded slots pooled into one PCA per layer (default all)" },
        { "--limit", CLI_INT, &g.limit, 0, 1e9, "N", "use the first N finished questions (default 0: all)" },
        { "--components", CLI_INT, &g.components, 1, 4096, "K", "components kept (default 10)" },
        { "--out", CLI_STR, &g.out, 0, 0, "DIR", "output directory (required; created)" },
        { "--color", CLI_STR, &g.color, 0, 0, "BY", "scatter colours: step (default), parity or correct" },
        { "--lens-sd", CLI_DOUBLE, &g.lens_sd, 0.01, 1e4, "T", "lens over components reads mean +/- T sd along each (default 3)" },
        { "--top", CLI_INT, &g.top, 1, 64, "N", "tokens per lens row (default 8)" },
        { "--steer-components", CLI_INT, &g.steer_components, 0, 4096, "N", "write steering vectors and specs for the first N components (default 0)" },
        { "--steer-sd", CLI_STR, &g.steer_sd, 0, 0, "LIST", "alphas of the specs, in component standard deviations (default 1,2,-1,-2)" },
        { "--steer-step", CLI_INT, &g.steer_step, 0, 1000, "K", "specs edit latent step K only (default 0: every latent step)" },
        CLI_MODEL_OPTS(&g.ma),
        CLI_END
    };
    pca_acts a;
    codi_model *m = NULL;
    codi_tokenizer *tok = NULL;
    int layers[PCA_MAX_SLOTS], slots[PCA_MAX_SLOTS], n_layers, n_slots, li, rc = 1, prc, q, si, *row_ds = NULL, *row_si = NULL, n_q = 0, k, c;
    float *buf = NULL;
    int32_t *row_q = NULL, *row_slot = NULL;
    long n_rows, done_work = 0, r;
    char path[1024], err[512], site[160];
    FILE *ev = NULL, *pcsv = NULL, *lcsv = NULL;
    codi_pca **pcs = NULL;
    char (*names)[128] = NULL;
    float **projs = NULL;
    cli_progress *prog = NULL;
    double t0 = cli_now();
    memset(&g, 0, sizeof g);
    g.tensor = "resid"; g.head = -1; g.components = 10; g.color = "step"; g.lens_sd = 3; g.top = 8; g.ma = cli_model_defaults();
    g.steer_sd = "1,2,-1,-2";
    if ((prc = cli_parse(self, opts, argc, argv))) return prc == CLI_HELP ? 0 : 2;
    if (!g.acts || !g.out) { fprintf(stderr, "codi pca: --acts and --out are required (codi pca --help)\n"); return 2; }
    {
        const char *in[] = { g.acts, g.ma.model };
        if (cli_out_check("pca", g.out, CLI_OUT_DIR | CLI_OUT_RESUME, 0, in, CLI_N(in))) return 2;
    }
    if (strcmp(g.color, "step") && strcmp(g.color, "parity") && strcmp(g.color, "correct")) {
        fprintf(stderr, "codi pca: --color is step, parity or correct, not '%s'\n", g.color); return 2;
    }
    if (strcmp(g.tensor, "resid") && strcmp(g.tensor, "final") && strcmp(g.tensor, "latent_inputs") && strcmp(g.tensor, "key") &&
        strcmp(g.tensor, "key_pre_rope") && strcmp(g.tensor, "value")) {
        fprintf(stderr, "codi pca: --tensor is resid, final, latent_inputs, key, key_pre_rope or value, not '%s'\n", g.tensor); return 2;
    }
    if ((prc = cli_keys_option("pca", g.keys)) < 0) return 2;
    if (prc && strcmp(g.tensor, "key")) { fprintf(stderr, "codi pca: --keys applies to --tensor key, not %s\n", g.tensor); return 2; }
    if (prc) g.tensor = "key_pre_rope";
    if (g.ma.model && (!strcmp(g.tensor, "key") || !strcmp(g.tensor, "key_pre_rope") || !strcmp(g.tensor, "value") || !strcmp(g.tensor, "latent_inputs"))) {
        fprintf(stderr, "codi pca: the lens over components needs --tensor resid or final (%s is not in the residual stream)\n", g.tensor); return 2;
    }
    if (g.steer_components && (!strcmp(g.tensor, "key") || !strcmp(g.tensor, "key_pre_rope") || !strcmp(g.tensor, "value"))) {
        fprintf(stderr, "codi pca: --steer-components supports resid, final and latent_inputs (K/V specs: build key_vector/value_vector edits by hand)\n"); return 2;
    }
    cli_threads_checked(&g.ma);
    if (pca_acts_open(&a, "pca", g.acts, g.tensor, g.head)) return 1;
    if ((n_layers = pca_parse_indices("pca", "--layers", g.layers, a.n_layers, layers)) < 0 ||
        (n_slots = pca_parse_indices("pca", "--positions", g.positions, a.P, slots)) < 0) { pca_acts_close(&a); return 2; }
    if (g.components > a.row) { fprintf(stderr, "codi pca: --components %d exceeds the row size %d\n", g.components, a.row); pca_acts_close(&a); return 2; }
    if (g.ma.model) {
        if (!(m = cli_load_model(&g.ma))) goto done;
        if (m->config.dim != a.row) { fprintf(stderr, "codi pca: the model has dimension %d, the dataset %d\n", m->config.dim, a.row); goto done; }
        tok = cli_load_tokenizer(&g.ma, m, 1);
    }
    if (pca_mkdir("pca", g.out)) goto done;
    row_ds = (int *)malloc((size_t)a.Q * n_slots * sizeof(int));   /* per row: dataset question, slot-list index */
    row_si = (int *)malloc((size_t)a.Q * n_slots * sizeof(int));
    buf = (float *)malloc((size_t)a.row * 256 * sizeof(float));
    if (!row_ds || !row_si || !buf) goto oom;
    n_rows = 0;
    for (q = 0; q < a.Q && (!g.limit || n_q < g.limit); q++) {
        if (!a.done[q]) continue;
        n_q++;
        for (si = 0; si < n_slots; si++)
            if (pca_acts_valid(&a, q, slots[si])) { row_ds[n_rows] = q; row_si[n_rows] = si; n_rows++; }
    }
    if (n_rows < 2 || n_rows > INT_MAX) { fprintf(stderr, "codi pca: %ld rows selected; PCA needs 2..%d\n", n_rows, INT_MAX); goto done; }
    k = g.components;
    pcs = (codi_pca **)calloc((size_t)n_layers, sizeof *pcs);
    names = (char (*)[128])calloc((size_t)n_layers, sizeof *names);
    projs = (float **)calloc((size_t)n_layers, sizeof *projs);
    row_q = (int32_t *)malloc((size_t)n_rows * sizeof(int32_t));
    row_slot = (int32_t *)malloc((size_t)n_rows * sizeof(int32_t));
    if (!pcs || !names || !projs || !row_q || !row_slot) goto oom;
    for (r = 0; r < n_rows; r++) { row_q[r] = a.qindex[row_ds[r]]; row_slot[r] = slots[row_si[r]]; }
    fprintf(stderr, "codi pca: %s [%s%s], %d layer(s) x %ld rows (%d questions x %d slots) of dimension %d\n", g.acts, g.tensor,
            a.head >= 0 ? ", one head" : "", n_layers, n_rows, n_q, n_slots, a.row);
    snprintf(path, sizeof path, "%s/explained.csv", g.out);
    if (!(ev = cli_out_open(path, "w"))) goto cant_write;
    fprintf(ev, "tensor,layer,component,variance,explained,cumulative\n");
    prog = cli_progress_start("pca rows", 2 * n_rows * n_layers, 0);
    for (li = 0; li < n_layers; li++) {
        codi_pca_acc *acc = codi_pca_acc_new(a.row, g.ma.threads, err, sizeof err);
        double cum = 0;
        int l = layers[li], nb = 0;
        if (!acc) { fprintf(stderr, "codi pca: %s\n", err); goto done; }
        for (r = 0; r < n_rows; r++) {           /* covariance, 256 rows at a time */
            pca_acts_row(&a, row_ds[r], row_slot[r], l, buf + (size_t)nb * a.row);
            if (++nb == 256 || r + 1 == n_rows) {
                if (codi_pca_acc_add(acc, buf, nb, err, sizeof err)) { fprintf(stderr, "codi pca: %s: %s\n", g.acts, err); codi_pca_acc_free(acc); goto done; }
                nb = 0;
                cli_progress_update(prog, done_work += 256 < r + 1 ? 256 : r + 1);
            }
        }
        pcs[li] = codi_pca_fit(acc, k, err, sizeof err);
        codi_pca_acc_free(acc);
        if (!pcs[li]) { fprintf(stderr, "codi pca: layer %d: %s\n", l, err); goto done; }
        if (a.head >= 0) snprintf(names[li], 128, "%s.layer%d.head%d", g.tensor, l, a.head);
        else snprintf(names[li], 128, "%s.layer%d", g.tensor, l);
        for (c = 0; c < k; c++) {
            cum += pcs[li]->explained[c];
            fprintf(ev, "%s,%d,%d,%.9g,%.9g,%.9g\n", g.tensor, l, c + 1, pcs[li]->variance[c], pcs[li]->explained[c], cum);
        }
        if (!(projs[li] = (float *)malloc((size_t)n_rows * k * sizeof(float)))) goto oom;
        for (r = 0; r < n_rows; r++) {           /* projections of every row */
            pca_acts_row(&a, row_ds[r], row_slot[r], l, buf);
            codi_pca_project(pcs[li], buf, 1, projs[li] + (size_t)r * k);
            if (r % 256 == 255) cli_progress_update(prog, done_work += 256);
        }
        done_work = 2 * n_rows * (li + 1);
        cli_progress_update(prog, done_work);
    }
    cli_progress_end(prog); prog = NULL;
    if (cli_out_close(ev)) { ev = NULL; goto cant_write; }
    ev = NULL;

    {   /* pca.safetensors, projections.safetensors */
        const char *meta[] = { "acts", g.acts, "tensor", g.tensor, "positions", g.positions ? g.positions : "all",
                               "model", a.model, "codi_lens", CLI_VERSION, NULL };
        const char **nm = (const char **)malloc((size_t)n_layers * sizeof *nm);
        codi_safetensors_entry *e = (codi_safetensors_entry *)calloc((size_t)n_layers + 2, sizeof *e);
        char (*pn)[140] = (char (*)[140])calloc((size_t)n_layers, sizeof *pn);
        if (!nm || !e || !pn) { free(nm); free(e); free(pn); goto oom; }
        for (li = 0; li < n_layers; li++) {
            nm[li] = names[li];
            snprintf(pn[li], 140, "%s.proj", names[li]);
            e[li].name = pn[li]; e[li].dtype = CODI_F32; e[li].data = projs[li]; e[li].ndim = 2;
            e[li].shape[0] = n_rows; e[li].shape[1] = k;
        }
        e[n_layers].name = "question_index"; e[n_layers].dtype = CODI_I32; e[n_layers].data = row_q;
        e[n_layers].ndim = 1; e[n_layers].shape[0] = n_rows;
        e[n_layers + 1] = e[n_layers]; e[n_layers + 1].name = "slot"; e[n_layers + 1].data = row_slot;
        snprintf(path, sizeof path, "%s/pca.safetensors", g.out);
        prc = codi_pca_save(path, (const codi_pca *const *)pcs, nm, n_layers, meta, err, sizeof err);
        if (prc) fprintf(stderr, "codi pca: %s\n", err);
        snprintf(path, sizeof path, "%s/projections.safetensors", g.out);
        if (!prc) prc = cli_out_safetensors(path, e, n_layers + 2, meta);
        free(nm); free(e); free(pn);
        if (prc) goto done;
    }

    snprintf(path, sizeof path, "%s/projections.csv", g.out);   /* first components of every row */
    if (!(pcsv = cli_out_open(path, "w"))) goto cant_write;
    fprintf(pcsv, "layer,question_index,slot,slot_label,correct");
    for (c = 0; c < k && c < 3; c++) fprintf(pcsv, ",pc%d", c + 1);
    fprintf(pcsv, "\n");
    for (li = 0; li < n_layers; li++) {
        for (r = 0; r < n_rows; r++) {
            fprintf(pcsv, "%d,%d,%d,%s,%d", layers[li], row_q[r], row_slot[r], a.slot_label[row_slot[r]], a.correct[row_ds[r]]);
            for (c = 0; c < k && c < 3; c++) fprintf(pcsv, ",%.6g", projs[li][(size_t)r * k + c]);
            fprintf(pcsv, "\n");
        }
    }
    if (cli_out_close(pcsv)) { pcsv = NULL; goto cant_write; }
    pcsv = NULL;

    {   /* scatter plots: PC1 vs PC2 per layer */
        double *x = (double *)malloc((size_t)n_rows * sizeof(double)), *y = (double *)malloc((size_t)n_rows * sizeof(double));
        int *grp = (int *)malloc((size_t)n_rows * sizeof(int)), n_groups = 0;
        const char **gn = (const char **)malloc(((size_t)a.P + 2) * sizeof *gn);
        static const char *const parity[3] = { "even step", "odd step", "not a latent" }, *const corr[2] = { "wrong", "correct" };
        char title[256], xl[64], yl[64];
        if (!x || !y || !grp || !gn) { free(x); free(y); free(grp); free(gn); goto oom; }
        for (r = 0; r < n_rows; r++) {
            int slot = row_slot[r], step = pca_slot_step(&a, slot);
            grp[r] = !strcmp(g.color, "step") ? row_si[r] : !strcmp(g.color, "parity") ? (step < 0 ? 2 : step % 2)
                   : a.correct[row_ds[r]];
        }
        if (!strcmp(g.color, "step")) { for (si = 0; si < n_slots; si++) gn[si] = a.slot_label[slots[si]]; n_groups = n_slots; }
        else if (!strcmp(g.color, "parity")) { for (si = 0; si < 3; si++) gn[si] = parity[si]; n_groups = 3; }
        else { gn[0] = corr[0]; gn[1] = corr[1]; n_groups = 2; }
        {   /* the legend lists the groups that occur: renumber them 0..n-1 */
            int map[4096 + 3], n_present = 0;
            for (si = 0; si < n_groups; si++) map[si] = -1;
            for (r = 0; r < n_rows; r++) if (map[grp[r]] < 0) map[grp[r]] = 0;
            for (si = 0; si < n_groups; si++) if (!map[si]) { gn[n_present] = gn[si]; map[si] = n_present++; }
            for (r = 0; r < n_rows; r++) grp[r] = map[grp[r]];
            n_groups = n_present;
        }
        for (li = 0; li < n_layers && k >= 2; li++) {
            svg_scatter_spec sp;
            for (r = 0; r < n_rows; r++) { x[r] = projs[li][(size_t)r * k]; y[r] = projs[li][(size_t)r * k + 1]; }
            snprintf(title, sizeof title, "PCA of %s, layer %d (%ld rows)", g.tensor, layers[li], n_rows);
            snprintf(xl, sizeof xl, "PC1 (%.1f%% of variance)", 100 * pcs[li]->explained[0]);
            snprintf(yl, sizeof yl, "PC2 (%.1f%% of variance)", 100 * pcs[li]->explained[1]);
            snprintf(path, sizeof path, "%s/scatter_%s.svg", g.out, names[li]);
            memset(&sp, 0, sizeof sp);
            sp.n = (int)n_rows; sp.x = x; sp.y = y; sp.group = grp; sp.group_names = gn; sp.n_groups = n_groups;
            sp.title = title; sp.xlabel = xl; sp.ylabel = yl;
            if (svg_scatter(path, &sp)) { free(x); free(y); free(grp); free(gn); goto cant_write; }
        }
        free(x); free(y); free(grp); free(gn);
    }

    printf("%-18s %8s", "explained", "rows");
    for (c = 0; c < k && c < 6; c++) printf("    PC%-2d", c + 1);
    printf("\n");
    for (li = 0; li < n_layers; li++) {
        printf("%-18s %8ld", names[li], n_rows);
        for (c = 0; c < k && c < 6; c++) printf("  %6.2f%%", 100 * pcs[li]->explained[c]);
        printf("\n");
    }

    if (m) {                                     /* the lens over components */
        snprintf(path, sizeof path, "%s/lens.csv", g.out);
        if (!(lcsv = cli_out_open(path, "w"))) goto cant_write;
        fprintf(lcsv, "name,component,sd,rank,token_id,token,delta_logit\n");
        printf("\nlens over components: top tokens of lens(mean + t sd v) - lens(mean)\n");
        for (li = 0; li < n_layers; li++) pca_lens(&g, m, tok, pcs[li], names[li], k < 3 ? k : 3, lcsv);
        if (cli_out_close(lcsv)) { lcsv = NULL; goto cant_write; }
        lcsv = NULL;
    }

    if (g.steer_components) {                    /* vectors sd * v and specs scaled in sd units */
        int nv = 0, n_alpha = 0, j;
        double alphas[32];
        const char *s = g.steer_sd;
        char *end, (*vn)[160];
        codi_safetensors_entry *e;
        float *vec;
        int nc = g.steer_components < k ? g.steer_components : k;
        while (n_alpha < 32) {
            alphas[n_alpha] = strtod(s, &end);
            if (end == s || !isfinite(alphas[n_alpha])) { fprintf(stderr, "codi pca: --steer-sd needs numbers like 1,2,-1\n"); rc = 2; goto done; }
            n_alpha++;
            if (!*end) break;
            if (*end != ',') { fprintf(stderr, "codi pca: --steer-sd needs numbers like 1,2,-1\n"); rc = 2; goto done; }
            s = end + 1;
        }
        e = (codi_safetensors_entry *)calloc((size_t)n_layers * nc, sizeof *e);
        vn = (char (*)[160])calloc((size_t)n_layers * nc, sizeof *vn);
        vec = (float *)malloc((size_t)n_layers * nc * a.row * sizeof(float));
        if (!e || !vn || !vec) { free(e); free(vn); free(vec); goto oom; }
        for (li = 0; li < n_layers; li++) for (c = 0; c < nc; c++, nv++) {
            double sd = sqrt(pcs[li]->variance[c]);
            for (j = 0; j < a.row; j++) vec[(size_t)nv * a.row + j] = (float)(sd * pcs[li]->components[(size_t)c * a.row + j]);
            snprintf(vn[nv], 160, "%s.pc%d", names[li], c + 1);
            e[nv].name = vn[nv]; e[nv].dtype = CODI_F32; e[nv].data = vec + (size_t)nv * a.row; e[nv].ndim = 1; e[nv].shape[0] = a.row;
        }
        {
            const char *meta[] = { "acts", g.acts, "tensor", g.tensor, "positions", g.positions ? g.positions : "all",
                                   "unit", "one standard deviation of the component over the rows (vector = sd * unit component)",
                                   "sign", "the component's largest-|x| entry is positive", "model", a.model, NULL };
            snprintf(path, sizeof path, "%s/steer_vectors.safetensors", g.out);
            if ((prc = cli_out_safetensors(path, e, nv, meta)) != 0) snprintf(err, sizeof err, "steer_vectors.safetensors was not written");
        }
        for (nv = 0, li = 0; li < n_layers && !prc; li++) for (c = 0; c < nc && !prc; c++, nv++) {
            int ai;
            char tag[48], what[512];
            pca_spec_site(g.tensor, layers[li], g.steer_step, site, sizeof site);
            for (ai = 0; ai < 2 * n_alpha && !prc; ai++) {   /* the specs, then a control per distinct |alpha| */
                double al = ai < n_alpha ? alphas[ai] : fabs(alphas[ai - n_alpha]);
                int seen = 0, bi;
                for (bi = n_alpha; bi < ai; bi++) seen |= fabs(alphas[bi - n_alpha]) == al;
                if (ai >= n_alpha && (seen || al == 0)) continue;
                if (ai < n_alpha) {
                    snprintf(tag, sizeof tag, "%+gsd", al);
                    snprintf(what, sizeof what, "adds %g standard deviations (sd %.6g) of PC%d of %s", al, sqrt(pcs[li]->variance[c]), c + 1, names[li]);
                } else {
                    snprintf(tag, sizeof tag, "random%+gsd", al);
                    snprintf(what, sizeof what, "control of the +-%g sd specs: a seeded random direction with the norm of %g sd of PC%d of %s (the same direction for every alpha)",
                             al, al, c + 1, names[li]);
                }
                prc = pca_write_spec(g.out, vn[nv], tag, site, al, ai < n_alpha ? 0 : 1000 + nv, what);
                if (prc) snprintf(err, sizeof err, "cannot write a spec file in %s", g.out);
            }
        }
        free(e); free(vn); free(vec);
        if (prc) { fprintf(stderr, "codi pca: %s\n", err); goto done; }
    }
    fprintf(stderr, "codi pca: wrote %s/{pca,projections}.safetensors, explained.csv, projections.csv, scatter_*.svg%s%s in %.1f s\n",
            g.out, m ? ", lens.csv" : "", g.steer_components ? ", steer_vectors.safetensors, steer_*.json" : "", cli_now() - t0);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "codi pca: out of memory\n");
    goto done;
cant_write:
    fprintf(stderr, "codi pca: cannot write %s\n", path);
done:
    if (prog) cli_progress_end(prog);
    cli_out_abort(ev);
    cli_out_abort(pcsv);
    cli_out_abort(lcsv);
    for (li = 0; pcs && li < n_layers; li++) codi_pca_free(pcs[li]);
    for (li = 0; projs && li < n_layers; li++) free(projs[li]);
    free(pcs); free(projs); free(names); free(row_ds); free(row_si); free(buf); free(row_q); free(row_slot);
    codi_tokenizer_free(tok); codi_model_free(m);
    pca_acts_close(&a);
    return rc;
}

static const cli_command cmd_pca = {
    "pca", "principal components of recorded activations: variance, projections, lens over components, steering vectors",
    "codi pca --acts FILE --out DIR [--tensor resid|final|latent_inputs|key|value [--keys post|pre]] [--layers LIST] [--positions LIST] [options]",
    "For each chosen layer, pools the chosen recorded slots of every finished question of a `codi record`\n"
    "dataset and fits a PCA (covariance accumulated in double, Householder + implicit QL eigensolver; each\n"
    "component's largest-|x| entry positive). Writes DIR/pca.safetensors (mean, components, variances per\n"
    "layer; codi_pca_load reads it), explained.csv, projections.safetensors ([rows, K] per layer plus\n"
    "question_index and slot per row), projections.csv (PC1-3) and scatter_NAME.svg (PC1 vs PC2 coloured\n"
    "by latent step, step parity or correctness). With --model: the lens over each of the first three\n"
    "components, lm_head(final_norm(mean + t sd v)) - lm_head(final_norm(mean)) for t = +/- --lens-sd\n"
    "(final_norm ignores the scale of a bare direction, so the move is read from the mean), on stdout and\n"
    "in lens.csv. With --steer-components N: steer_vectors.safetensors (sd * component, so a spec's alpha\n"
    "counts standard deviations), one steering-spec file (codi_lens.h >>steer; `--steer FILE`) per component\n"
    "and --steer-sd alpha, and per component and distinct |alpha| a control spec (steer_NAME.random+Asd.json):\n"
    "a seeded random direction of the same norm (codi eval also draws its own controls, --random-controls).\n"
    "Keys: --tensor key reads the post-RoPE keys as cached (default), --keys pre the pre-RoPE ones\n"
    "(key_pre_rope: without the position's rotation, so slots at different positions compare); outputs are\n"
    "named after the tensor read (key.layer3 / key_pre_rope.layer3).\n\n"
    "Examples:\n"
    "  codi pca --acts acts.safetensors --tensor final --positions 1-6 --color parity --out pca_final\n"
    "  codi pca --acts acts.safetensors --layers 8,16 --model models/codi-nano/codi_nano.bin --out pca_resid\n"
    "  codi pca --acts acts.safetensors --tensor key --head 0 --layers 15 --out pca_k\n"
    "  codi pca --acts acts.safetensors --tensor key --keys pre --head 0 --layers 15 --out pca_k_pre\n"
    "  codi pca --acts acts.safetensors --tensor latent_inputs --steer-components 2 --out pca_z",
    pca_run
};
