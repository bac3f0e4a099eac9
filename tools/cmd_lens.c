/* codi lens: read the residual stream of a CODI run through the logit lens or a tuned lens,
   layer by layer at chosen positions (bot and the latents by default): a table, JSON, an SVG
   heatmap; over a question file, the Latent Reasoning Sprint's detection metrics with Wilson
   intervals, shuffled-answer chance rates and paired differences, from a resumable rows file. */
#include <stdarg.h>
#include "positions.h"
#include "svg.h"

#define LENS_KMAX 10     /* top-k kept per cell (metrics use k = 1..10) */

typedef struct {
    cli_model_args ma;
    cli_prompt_args pa;
    const char *tuned, *positions, *svg, *color, *questions, *out, *tokens, *target;
    int top_k, json, max_answer, limit, sprint_norm, sprint_index;
    const char *targets, *relations, *multi_token, *rows;   /* aggregate mode: target sets, approximations, rows file */
    double approx_pct;
    int chance_permutations, seed, batch;
    char rows_default[4096];
    int target_tokens;          /* how many tokens --target is (only the first counts) */
    int force;
} lens_args;

/* One run read through the lens: for each slot and residual index, the top-k, entropy. */
typedef struct {
    int P, L1, k;                /* slots, L + 1, k kept */
    int *pos;                    /* [P] absolute position or -1 */
    int32_t *top_ids;            /* [P, L1, k] */
    float *top_probs;            /* [P, L1, k] */
    double *entropy;             /* [P, L1] (NaN where the slot is absent) */
    const int32_t *tid; int ntid;/* target ids, or none */
    int *target_rank;            /* [P, L1] best rank over the whole vocabulary of a target id */
    float *target_prob;          /* [P, L1] probability of that id */
} lens_grid;

static void lens_grid_free(lens_grid *g) { free(g->pos); free(g->top_ids); free(g->top_probs); free(g->entropy); free(g->target_rank); free(g->target_prob); }

static int lens_grid_alloc(lens_grid *g, int P, int L1, int k) {
    g->P = P; g->L1 = L1; g->k = k;
    g->pos = (int *)malloc(sizeof(int) * (size_t)P);
    g->top_ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)P * L1 * k);
    g->top_probs = (float *)malloc(sizeof(float) * (size_t)P * L1 * k);
    g->entropy = (double *)malloc(sizeof(double) * (size_t)P * L1);
    g->target_rank = (int *)malloc(sizeof(int) * (size_t)P * L1);
    g->target_prob = (float *)malloc(sizeof(float) * (size_t)P * L1);
    g->tid = NULL; g->ntid = 0;
    return g->pos && g->top_ids && g->top_probs && g->entropy && g->target_rank && g->target_prob ? 0 : -1;
}

/* Lens logits at residual index l of h [D]: the tuned lens (or the logit lens) and, with
   sprint_norm, the Latent Reasoning Sprint's final norm applied once more at l = L (their code
   norms HF's last hidden state, which HF has already normed). */
static int lens_logits(const codi_model *m, const codi_tuned_lens *tl, int l, const float *h, int sprint_norm, float *logits, float *tmp) {
    char err[256];
    if (sprint_norm && l == m->config.n_layers) {
        const codi_config *c = &m->config;
        double ss = 0;
        float scale;
        int i;
        for (i = 0; i < c->dim; i++) ss += (double)h[i] * h[i];     /* first norm: the model's own */
        scale = 1.0f / sqrtf((float)(ss / c->dim) + c->norm_eps);
        for (i = 0; i < c->dim; i++) tmp[i] = m->w.final_norm[i] * (h[i] * scale);
        h = tmp;
    }
    if (codi_tuned_lens_logits(m, tl, l, h, logits, err, sizeof err)) { fprintf(stderr, "codi lens: %s\n", err); return -1; }
    return 0;
}

/* Fills g from a finished run in s. */
static int lens_read(const codi_model *m, codi_state *s, const codi_tuned_lens *tl, const pos_spec *ps, int T0, int n_answer,
                     int sprint_norm, lens_grid *g, float *logits, float *tmp) {
    int p, l, i;
    for (p = 0; p < g->P; p++) {
        g->pos[p] = pos_resolve(ps, p, T0, n_answer, s->n_pos);
        for (l = 0; l < g->L1; l++) {
            size_t cell = (size_t)p * g->L1 + l;
            if (g->pos[p] < 0) {
                g->entropy[cell] = NAN;
                memset(g->top_ids + cell * g->k, 0xff, sizeof(int32_t) * (size_t)g->k);
                memset(g->top_probs + cell * g->k, 0, sizeof(float) * (size_t)g->k);
                continue;
            }
            if (lens_logits(m, tl, l, codi_state_resid(s, l, g->pos[p]), sprint_norm, logits, tmp)) return -1;
            codi_top_k(logits, m->config.vocab, g->k, g->top_ids + cell * g->k, g->top_probs + cell * g->k);
            g->entropy[cell] = codi_entropy(logits, m->config.vocab);
            for (i = 0; i < g->ntid; i++) {
                float pr;
                int rk = codi_rank_of(logits, m->config.vocab, g->tid[i], &pr);
                if (!i || rk < g->target_rank[cell]) { g->target_rank[cell] = rk; g->target_prob[cell] = pr; }
            }
        }
    }
    return 0;
}

/* Rank (0-based) of the first of ids[0..n) found in a cell's top-k, or k when none is there. */
static int lens_rank_in(const lens_grid *g, int p, int l, const int32_t *ids, int n) {
    const int32_t *top = g->top_ids + ((size_t)p * g->L1 + l) * g->k;
    int r, i;
    for (r = 0; r < g->k; r++) for (i = 0; i < n; i++) if (top[r] == ids[i]) return r;
    return g->k;
}

/* Ids for a target: a number (its number tokens, codi_number_tokens) or a token text. *n_tokens gets
   how many tokens the whole target is; one of several tokens counts by its first token with a
   warning (skip_multi 0) or is refused (skip_multi 1: returns -2). Count, or -1 when it has no token. */
static int lens_target_ids(const codi_tokenizer *t, const char *target, int skip_multi, int32_t *ids, int *n_tokens) {
    char *end, digits[48], spaced[56];
    double v = strtod(target, &end);
    int32_t enc[64];
    int n, is_number = *target && !*end;
    if (is_number) {
        if ((n = codi_number_tokens(t, v, ids)) < 1) return -1;
        snprintf(digits, sizeof digits, "%.0f", v); snprintf(spaced, sizeof spaced, " %s", digits);
        *n_tokens = codi_token_id(t, digits, strlen(digits)) >= 0 || codi_token_id(t, spaced, strlen(spaced)) >= 0 ? 1 : codi_encode(t, digits, strlen(digits), 0, 0, enc, 64);
    } else if ((ids[0] = codi_token_id(t, target, strlen(target))) >= 0) { *n_tokens = 1; return 1; }
    else {
        if ((*n_tokens = codi_encode(t, target, strlen(target), 0, 0, enc, 64)) < 1) return -1;
        ids[0] = enc[0]; n = 1;
    }
    if (*n_tokens > 1) {
        if (skip_multi) { fprintf(stderr, "codi lens: target '%s' is %d tokens; --multi-token skip leaves it out\n", target, *n_tokens); return -2; }
        fprintf(stderr, "codi lens: warning: target '%s' is %d tokens in this tokenizer; only its first token is counted (--multi-token first)\n", target, *n_tokens);
    }
    return n;
}

static void lens_cell_token(const codi_tokenizer *t, int32_t id, char *buf, size_t cap, int max_chars) {
    char text[256];
    size_t i = 0;
    int chars = 0;
    if (id < 0) { snprintf(buf, cap, "-"); return; }
    if (!t || codi_token_text(t, id, text, sizeof text) < 0) { snprintf(buf, cap, "#%d", (int)id); return; }
    while (text[i] && chars < max_chars) { i++; while ((text[i] & 0xC0) == 0x80) i++; chars++; }
    snprintf(buf, cap, "%.*s%s", (int)i, text, text[i] ? "~" : "");
}

static void lens_print_table(const codi_tokenizer *t, const pos_spec *ps, const lens_grid *g, const int32_t *tid, int ntid, const char *what) {
    char lab[32], tok[64], cell[96];
    int p, l;
    printf("%s: top-1 token and probability at each residual index (rows) and position (columns)%s\n", what,
           ntid > 0 ? "; * = target in the top-k" : "");
    cli_print_padded("layer", 7);
    for (p = 0; p < g->P; p++) { pos_label(ps, p, lab, sizeof lab); cli_print_padded(lab, 17); }
    printf("\n");
    for (l = g->L1 - 1; l >= 0; l--) {
        snprintf(lab, sizeof lab, "%d", l);
        cli_print_padded(lab, 7);
        for (p = 0; p < g->P; p++) {
            size_t c = (size_t)p * g->L1 + l;
            if (g->pos[p] < 0) { cli_print_padded("-", 17); continue; }
            cli_token_cell(t, g->top_ids[c * g->k], tok, sizeof tok, 8);
            snprintf(cell, sizeof cell, "%s%s %.2f", ntid > 0 && lens_rank_in(g, p, l, tid, ntid) < g->k ? "*" : "", tok, g->top_probs[c * g->k]);
            cli_print_padded(cell, 17);
        }
        printf("\n");
    }
    printf("entropy (nats)\n");
    for (l = g->L1 - 1; l >= 0; l--) {
        snprintf(lab, sizeof lab, "%d", l);
        cli_print_padded(lab, 7);
        for (p = 0; p < g->P; p++) {
            snprintf(cell, sizeof cell, "%.2f", g->entropy[(size_t)p * g->L1 + l]);
            cli_print_padded(g->pos[p] < 0 ? "-" : cell, 17);
        }
        printf("\n");
    }
}

static void lens_print_json(const lens_args *a, const codi_tokenizer *t, const pos_spec *ps, const lens_grid *g,
                            const char *answer, const int32_t *tid, int ntid) {
    char lab[32], tok[256];
    int p, l, r;
    printf("{\"model\": "); cli_json_string(stdout, a->ma.model);
    printf(", \"lens\": \"%s\"", a->tuned ? "tuned" : "logit");
    if (a->tuned) { printf(", \"tuned\": "); cli_json_string(stdout, a->tuned); }
    if (answer) { printf(", \"answer\": "); cli_json_string(stdout, answer); }
    printf(", \"positions\": [");
    for (p = 0; p < g->P; p++) printf("%s%d", p ? ", " : "", g->pos[p]);
    printf("], \"labels\": [");
    for (p = 0; p < g->P; p++) { pos_label(ps, p, lab, sizeof lab); printf("%s", p ? ", " : ""); cli_json_string(stdout, lab); }
    printf("], \"layers\": [");
    for (l = 0; l < g->L1; l++) printf("%s%d", l ? ", " : "", l);
    printf("], \"k\": %d,\n \"top_ids\": [", g->k);
    for (p = 0; p < g->P; p++) {
        printf("%s[", p ? ", " : "");
        for (l = 0; l < g->L1; l++) {
            printf("%s[", l ? ", " : "");
            for (r = 0; r < g->k; r++) printf("%s%d", r ? ", " : "", (int)g->top_ids[((size_t)p * g->L1 + l) * g->k + r]);
            printf("]");
        }
        printf("]");
    }
    printf("],\n \"top_probs\": [");
    for (p = 0; p < g->P; p++) {
        printf("%s[", p ? ", " : "");
        for (l = 0; l < g->L1; l++) {
            printf("%s[", l ? ", " : "");
            for (r = 0; r < g->k; r++) printf("%s%.6g", r ? ", " : "", g->top_probs[((size_t)p * g->L1 + l) * g->k + r]);
            printf("]");
        }
        printf("]");
    }
    if (t) {
        printf("],\n \"top_tokens\": [");
        for (p = 0; p < g->P; p++) {
            printf("%s[", p ? ", " : "");
            for (l = 0; l < g->L1; l++) {
                printf("%s[", l ? ", " : "");
                for (r = 0; r < g->k; r++) {
                    int32_t id = g->top_ids[((size_t)p * g->L1 + l) * g->k + r];
                    if (id < 0 || codi_decode(t, &id, 1, 0, tok, sizeof tok) < 0) tok[0] = 0;
                    printf("%s", r ? ", " : ""); cli_json_string(stdout, tok);
                }
                printf("]");
            }
            printf("]");
        }
    }
    printf("],\n \"entropy\": [");
    for (p = 0; p < g->P; p++) {
        printf("%s[", p ? ", " : "");
        for (l = 0; l < g->L1; l++) {
            double e = g->entropy[(size_t)p * g->L1 + l];
            if (e == e) printf("%s%.6g", l ? ", " : "", e); else printf("%snull", l ? ", " : "");
        }
        printf("]");
    }
    printf("]");
    if (ntid > 0) {
        printf(",\n \"target\": {\"text\": "); cli_json_string(stdout, a->target);
        printf(", \"target_tokens\": %d, \"multi_token\": \"%s\", \"warning\": ", a->target_tokens, a->multi_token);
        if (a->target_tokens > 1) printf("\"the target is %d tokens; only its first token is counted\"", a->target_tokens); else printf("null");
        printf(", \"ids\": [");
        for (r = 0; r < ntid; r++) printf("%s%d", r ? ", " : "", (int)tid[r]);
        printf("], \"rank\": [");                        /* over the whole vocabulary, 0 = top-1 */
        for (p = 0; p < g->P; p++) {
            printf("%s[", p ? ", " : "");
            for (l = 0; l < g->L1; l++)
                if (g->pos[p] >= 0) printf("%s%d", l ? ", " : "", g->target_rank[(size_t)p * g->L1 + l]); else printf("%snull", l ? ", " : "");
            printf("]");
        }
        printf("], \"prob\": [");
        for (p = 0; p < g->P; p++) {
            printf("%s[", p ? ", " : "");
            for (l = 0; l < g->L1; l++)
                if (g->pos[p] >= 0) printf("%s%.6g", l ? ", " : "", g->target_prob[(size_t)p * g->L1 + l]); else printf("%snull", l ? ", " : "");
            printf("]");
        }
        printf("]}");
    }
    printf("}\n");
}

/* The table as a heatmap: layers bottom to top, positions left to right (the tuned-lens
   paper's prediction trajectory); colour = top-1 probability or entropy. */
static int lens_write_svg(const lens_args *a, const codi_tokenizer *t, const pos_spec *ps, const lens_grid *g,
                          const int32_t *tid, int ntid, double max_entropy) {
    int P = g->P, L1 = g->L1, p, l, rc, by_entropy = a->color && !strcmp(a->color, "entropy");
    double *val = (double *)malloc(sizeof(double) * (size_t)P * L1);
    char **text = (char **)calloc((size_t)P * L1, sizeof(char *)), **rows = (char **)calloc((size_t)L1, sizeof(char *));
    char **cols = (char **)calloc((size_t)P, sizeof(char *)), title[512];
    unsigned char *mark = (unsigned char *)calloc((size_t)P * L1, 1);
    svg_heatmap_spec s;
    if (!val || !text || !rows || !cols || !mark) { rc = -1; goto done; }
    for (l = 0; l < L1; l++) {
        int row = L1 - 1 - l;
        rows[row] = (char *)malloc(24);
        if (rows[row]) snprintf(rows[row], 24, "%s %d", l == L1 - 1 ? "final" : "layer", l);
        for (p = 0; p < P; p++) {
            size_t c = (size_t)p * L1 + l, o = (size_t)row * P + p;
            char tok[64];
            if (g->pos[p] < 0) { val[o] = NAN; continue; }
            val[o] = by_entropy ? g->entropy[c] : g->top_probs[c * g->k];
            lens_cell_token(t, g->top_ids[c * g->k], tok, sizeof tok, 8);
            if ((text[o] = (char *)malloc(strlen(tok) + 1)) != NULL) strcpy(text[o], tok);
            mark[o] = ntid > 0 && lens_rank_in(g, p, l, tid, ntid) < g->k;
        }
    }
    for (p = 0; p < P; p++) if ((cols[p] = (char *)malloc(32)) != NULL) pos_label(ps, p, cols[p], 32);
    memset(&s, 0, sizeof s);
    s.rows = L1; s.cols = P; s.value = val;
    s.vmin = 0; s.vmax = by_entropy ? max_entropy : 1;
    s.colormap = by_entropy ? SVG_MAGMA : SVG_VIRIDIS;
    s.cell_text = (const char *const *)text; s.mark = ntid > 0 ? mark : NULL;
    s.row_labels = (const char *const *)rows; s.col_labels = (const char *const *)cols;
    snprintf(title, sizeof title, "%s lens: top-1 token%s", a->tuned ? "tuned" : "logit", ntid > 0 ? " (red: target in top-k)" : "");
    s.title = title; s.xlabel = "position"; s.ylabel = "residual index";
    s.colorbar_label = by_entropy ? "entropy (nats)" : "top-1 probability";
    s.cell_w = 72; s.cell_h = 22;
    rc = svg_heatmap(a->svg, &s);
done:
    for (p = 0; text && p < P * L1; p++) free(text[p]);
    for (l = 0; rows && l < L1; l++) free(rows[l]);
    for (p = 0; cols && p < P; p++) free(cols[p]);
    free(val); free(text); free(rows); free(cols); free(mark);
    if (rc) fprintf(stderr, "codi lens: cannot write %s\n", a->svg);
    return rc;
}

/* ---- aggregate mode: detection rates over a question file, with intervals and chance --------
   Per question, per lens (logit; tuned too with --tuned), per position slot and target set, the
   0-based rank over the whole vocabulary (codi_top_k's order) of the best of the target's token
   ids at every residual index, and the same for K shuffled-answer controls (the target of another
   question: K seeded permutations without fixed points of the questions that have the target).
   "In the top-k" = rank < k. Every row goes to the rows file as soon as its question is done; the
   summary is recomputed from that file at the end, so a killed run resumes and ends the same.
   Rows file: the settings line, then per question, lens and slot
     {"index": I, "line": N, "lens": "logit"|"tuned", "slot": P, "label": "latent 3", "entropy": [L+1]}
     {"index", "line", "lens", "slot", "label", "target": NAME, "ids": [...], "rank": [L+1], "prob": [L+1],
      "chance_from": [donor index per permutation], "chance_rank": [[L+1] per permutation]}
   and last {"index": I, "line": N, "done": true, "correct": B, "prediction": X|null, "gold": G|null}. */

#define LENS_MAX_NUMS 64
#define LENS_MAX_IDS 512
#define LENS_MAX_SETS 24
#define LENS_MAX_PERM 100
#define LENS_MAX_REL 32

enum { LT_ANSWER, LT_INTER, LT_APPROX, LT_FIELD, LT_FILE, LT_TOKEN };

typedef struct {
    char name[160];             /* answer, intermediates, approx, field:NAME, file:PATH, token:TEXT */
    int kind;                   /* LT_* */
    const char *arg;            /* NAME, PATH or TEXT (inside name) */
    int chance;                 /* a shuffled-answer control is made (all kinds but token) */
    long n_q, n_items, n_multi, n_unmatched, n_skipped;   /* questions with ids; items; multi-token items;
                                   items with no token; questions left without ids by --multi-token skip */
    codi_json **file_rows;     /* file:PATH: [n_file_rows] each question index's "targets" (NULL: none) */
    codi_json **file_roots;
    int n_file_rows;
} lens_tset;

typedef struct { int32_t *ids; int n; } lens_ids;

typedef struct {
    int line, index, has_gold;
    double gold;
    char *question;
    lens_ids *t;                /* [n_sets] */
} lens_q;

typedef struct { int32_t v[LENS_MAX_IDS]; int n; } lens_idbuf;

typedef struct {
    const lens_args *a;
    const codi_model *m;
    const codi_tokenizer *t;
    const codi_tuned_lens *tl;
    pos_spec ps;
    int P, L1, n_lens, K, skip_multi;
    lens_tset set[LENS_MAX_SETS]; int n_sets;
    double rel_k[LENS_MAX_REL]; char rel_op[LENS_MAX_REL]; int n_rel;   /* x*k, x/k, x+k, x-k */
    lens_q *q; int nq, cap_q;
    int *donor;                 /* [n_sets, K, nq] question whose ids stand in for question qi's in permutation j; -1 none */
    float *logits, *tmp;
    FILE *rows;
    int n_correct, failed;
} lens_agg;

/* Numbers of the form "<<expr=X>>" in text (GSM8K's calculator annotations). */
static int lens_cot_numbers(const char *text, double *out, int cap) {
    int n = 0;
    const char *p = text;
    while (n < cap && (p = strstr(p, "<<")) != NULL) {
        const char *end = strstr(p, ">>"), *eq;
        if (!end) break;
        for (eq = end; eq > p && *eq != '='; eq--) {}
        if (*eq == '=') {
            char buf[64], *e;
            size_t len = (size_t)(end - eq - 1), i, k = 0;
            for (i = 0; i < len && k + 1 < sizeof buf; i++) if (eq[1 + i] != ',') buf[k++] = eq[1 + i];
            buf[k] = 0;
            out[n] = strtod(buf, &e);
            if (e != buf && !*e) n++;
        }
        p = end + 2;
    }
    return n;
}

/* Intermediate results of a question: the cot field (or a GSM8K answer string), else the last
   element of each [a, op, b, result] in steps, else for codi gen-templates' questions ("op":
   "addition" | "subtraction", "x", "y"; answer (x +- y) (z + 1)) x + y or x - y; the final
   answer itself is left out. */
static int lens_intermediates(const cli_question *q, double *out, int cap) {
    const codi_json *cot = codi_json_get(q->obj, "cot"), *steps = codi_json_get(q->obj, "steps"), *st;
    const codi_json *op = codi_json_get(q->obj, "op"), *x = codi_json_get(q->obj, "x"), *y = codi_json_get(q->obj, "y");
    double v[LENS_MAX_NUMS];
    int n = 0, i, k = 0;
    if (!cot || cot->type != CODI_JSON_STR) cot = codi_json_get(q->obj, "answer");
    if (cot && cot->type == CODI_JSON_STR) n = lens_cot_numbers(cot->str, v, LENS_MAX_NUMS);
    else if (steps && steps->type == CODI_JSON_ARR)
        for (st = steps->child; st && n < LENS_MAX_NUMS; st = st->next) {
            const codi_json *e = st->type == CODI_JSON_ARR ? st->child : NULL;
            while (e && e->next) e = e->next;
            if (e && e->type == CODI_JSON_NUM) v[n++] = e->num;
        }
    else if (op && op->type == CODI_JSON_STR && x && x->type == CODI_JSON_NUM && y && y->type == CODI_JSON_NUM) {
        if (!strcmp(op->str, "addition")) v[n++] = x->num + y->num;
        else if (!strcmp(op->str, "subtraction")) v[n++] = x->num - y->num;
    }
    for (i = 0; i < n && k < cap; i++) if (!(q->has_gold && v[i] == q->gold)) out[k++] = v[i];
    return k;
}

static void lens_idbuf_add(lens_idbuf *b, int32_t id) {
    int i;
    for (i = 0; i < b->n; i++) if (b->v[i] == id) return;
    if (b->n < LENS_MAX_IDS) b->v[b->n++] = id;
}

/* A number item: its tokens as codi_number_tokens matches answers (the leading group of up to 3
   digits, with or without a space). Multi-token when its digits are not one token (with or without
   the space): then its first token counts (--multi-token first) or it is dropped (skip). */
static void lens_item_number(lens_agg *ag, lens_tset *ts, double v, lens_idbuf *b, int *skipped) {
    int32_t ids[2];
    char digits[48], spaced[56];
    int n, i;
    ts->n_items++;
    if ((n = codi_number_tokens(ag->t, v, ids)) < 1) { ts->n_unmatched++; return; }
    snprintf(digits, sizeof digits, "%.0f", v); snprintf(spaced, sizeof spaced, " %s", digits);
    if (codi_token_id(ag->t, digits, strlen(digits)) < 0 && codi_token_id(ag->t, spaced, strlen(spaced)) < 0) {
        ts->n_multi++;
        if (ag->skip_multi) { (*skipped)++; return; }
    }
    for (i = 0; i < n; i++) lens_idbuf_add(b, ids[i]);
}

/* A text item: its token, or the first token of its encoding (multi-token: counted as above). */
static void lens_item_text(lens_agg *ag, lens_tset *ts, const char *text, lens_idbuf *b, int *skipped) {
    int32_t ids[64];
    int id = codi_token_id(ag->t, text, strlen(text)), n;
    ts->n_items++;
    if (id >= 0) { lens_idbuf_add(b, id); return; }
    n = codi_encode(ag->t, text, strlen(text), 0, 0, ids, 64);
    if (n < 1) { ts->n_unmatched++; return; }
    if (n > 1) { ts->n_multi++; if (ag->skip_multi) { (*skipped)++; return; } }
    lens_idbuf_add(b, ids[0]);
}

/* Items of a JSON value: numbers, strings (a number or a token text) and arrays of them. */
static void lens_items_json(lens_agg *ag, lens_tset *ts, const codi_json *v, lens_idbuf *b, int *skipped, int depth) {
    const codi_json *c;
    if (!v || depth > 8) return;
    if (v->type == CODI_JSON_NUM) lens_item_number(ag, ts, v->num, b, skipped);
    else if (v->type == CODI_JSON_STR) {
        char *e;
        double x = strtod(v->str, &e);
        if (*v->str && !*e) lens_item_number(ag, ts, x, b, skipped); else lens_item_text(ag, ts, v->str, b, skipped);
    } else if (v->type == CODI_JSON_ARR) for (c = v->child; c; c = c->next) lens_items_json(ag, ts, c, b, skipped, depth + 1);
}

/* The approximations of gold: integers within +-pct% (gold itself left out) and the --relations. */
static void lens_items_approx(lens_agg *ag, lens_tset *ts, double gold, lens_idbuf *b, int *skipped) {
    double lo = gold - fabs(gold) * ag->a->approx_pct / 100, hi = gold + fabs(gold) * ag->a->approx_pct / 100, v, step;
    int i;
    step = hi - lo > 100000 ? (hi - lo) / 100000 : 1;           /* at most 100,001 numbers of a huge answer */
    for (v = ceil(lo); v <= hi; v = floor(v + step)) if (v != gold && v >= 0) lens_item_number(ag, ts, v, b, skipped);
    for (i = 0; i < ag->n_rel; i++) {
        double k = ag->rel_k[i];
        v = ag->rel_op[i] == '*' ? gold * k : ag->rel_op[i] == '/' ? gold / k : ag->rel_op[i] == '+' ? gold + k : gold - k;
        if (v >= 0 && v == floor(v) && v != gold && !(v >= lo && v <= hi)) lens_item_number(ag, ts, v, b, skipped);
    }
}

/* Pre-pass over the questions file: each question's ids per target set. */
static int lens_collect(void *user, const cli_question *cq) {
    lens_agg *ag = (lens_agg *)user;
    lens_q *q;
    lens_idbuf ans, b;
    int s, i, skipped;
    if (ag->nq == ag->cap_q) {
        lens_q *grown = (lens_q *)realloc(ag->q, sizeof *grown * (size_t)(ag->cap_q ? 2 * ag->cap_q : 256));
        if (!grown) { fprintf(stderr, "codi lens: out of memory\n"); return -1; }
        ag->q = grown; ag->cap_q = ag->cap_q ? 2 * ag->cap_q : 256;
    }
    q = &ag->q[ag->nq];
    memset(q, 0, sizeof *q);
    q->line = cq->line; q->index = cq->index; q->has_gold = cq->has_gold; q->gold = cq->gold;
    if (!(q->question = cli_strdup(cq->question)) || !(q->t = (lens_ids *)calloc((size_t)ag->n_sets, sizeof *q->t))) {
        free(q->question); free(q->t); fprintf(stderr, "codi lens: out of memory\n"); return -1;
    }
    ag->nq++;
    ans.n = 0;
    if (cq->has_gold) {   /* the answer's ids, also to leave out of intermediates and approximations */
        int32_t ids[2];
        int n = codi_number_tokens(ag->t, cq->gold, ids);
        for (i = 0; i < n; i++) lens_idbuf_add(&ans, ids[i]);
    }
    for (s = 0; s < ag->n_sets; s++) {
        lens_tset *ts = &ag->set[s];
        double v[LENS_MAX_NUMS];
        int n;
        b.n = 0; skipped = 0;
        switch (ts->kind) {
        case LT_ANSWER: if (cq->has_gold) lens_item_number(ag, ts, cq->gold, &b, &skipped); break;
        case LT_INTER:
            n = lens_intermediates(cq, v, LENS_MAX_NUMS);
            for (i = 0; i < n; i++) lens_item_number(ag, ts, v[i], &b, &skipped);
            break;
        case LT_APPROX: if (cq->has_gold) lens_items_approx(ag, ts, cq->gold, &b, &skipped); break;
        case LT_FIELD: lens_items_json(ag, ts, codi_json_get(cq->obj, ts->arg), &b, &skipped, 0); break;
        case LT_FILE: if (cq->index < ts->n_file_rows) lens_items_json(ag, ts, ts->file_rows[cq->index], &b, &skipped, 0); break;
        default: lens_item_text(ag, ts, ts->arg, &b, &skipped);
        }
        if (ts->kind == LT_INTER || ts->kind == LT_APPROX) {   /* a near miss or a step must not be the answer's token */
            int w = 0, j;
            for (i = 0; i < b.n; i++) {
                for (j = 0; j < ans.n && ans.v[j] != b.v[i]; j++) {}
                if (j == ans.n) b.v[w++] = b.v[i];
            }
            b.n = w;
        }
        if (!b.n) { ts->n_skipped += skipped > 0; continue; }
        if (!(q->t[s].ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)b.n))) { fprintf(stderr, "codi lens: out of memory\n"); return -1; }
        memcpy(q->t[s].ids, b.v, sizeof(int32_t) * (size_t)b.n);
        q->t[s].n = b.n;
        ts->n_q++;
    }
    return 0;
}

/* Reads a targets file: {"index": I, "targets": [...]} per line (or the targets of question
   index = line order when "index" is absent). 0, or -1 after a message. */
static int lens_read_targets_file(lens_tset *ts) {
    size_t len;
    char *text = codi_read_text(ts->arg, &len), *p, err[256];
    int line = 0, order = 0;
    if (!text) { fprintf(stderr, "codi lens: cannot read the targets file %s\n", ts->arg); return -1; }
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        if (!e) e = text + len;
        line++;
        if (e > p && !(e == p + 1 && *p == '\r')) {
            const codi_json *ix, *tg;
            int index;
            if (!(j = codi_json_parse(p, (size_t)(e - p), err, sizeof err))) { fprintf(stderr, "codi lens: %s:%d: %s\n", ts->arg, line, err); free(text); return -1; }
            ix = codi_json_get(j, "index"); tg = codi_json_get(j, "targets");
            index = ix && ix->type == CODI_JSON_NUM ? (int)ix->num : order;
            if (!tg || (ix && (ix->type != CODI_JSON_NUM || ix->num != floor(ix->num) || ix->num < 0 || ix->num > 1e8))) {
                fprintf(stderr, "codi lens: %s:%d: needs \"targets\" (a list of numbers or token texts) and an optional whole \"index\" >= 0\n", ts->arg, line);
                codi_json_free(j); free(text); return -1;
            }
            if (index >= ts->n_file_rows) {
                int n = index + 1 > 2 * ts->n_file_rows ? index + 1 : 2 * ts->n_file_rows;
                codi_json **r = (codi_json **)realloc(ts->file_rows, sizeof *r * (size_t)n), **o = (codi_json **)realloc(ts->file_roots, sizeof *o * (size_t)n);
                if (r) ts->file_rows = r;
                if (o) ts->file_roots = o;
                if (!r || !o) { codi_json_free(j); free(text); fprintf(stderr, "codi lens: out of memory\n"); return -1; }
                memset(r + ts->n_file_rows, 0, sizeof *r * (size_t)(n - ts->n_file_rows));
                memset(o + ts->n_file_rows, 0, sizeof *o * (size_t)(n - ts->n_file_rows));
                ts->n_file_rows = n;
            }
            if (ts->file_roots[index]) { fprintf(stderr, "codi lens: %s:%d: question index %d given twice\n", ts->arg, line, index); codi_json_free(j); free(text); return -1; }
            ts->file_roots[index] = j; ts->file_rows[index] = (codi_json *)tg;
            order++;
        }
        p = e + 1;
    }
    free(text);
    return 0;
}

/* --targets answer,intermediates,approx,field:NAME,file:PATH and --tokens T1,T2 (token:TEXT sets);
   --relations 2x,x/2,10x,x/10,x+1. 0, or -1 after a message. */
static int lens_parse_sets(lens_agg *ag) {
    const char *s;
    for (s = ag->a->targets; s && *s;) {
        size_t len = strcspn(s, ",");
        lens_tset *ts = &ag->set[ag->n_sets];
        if (ag->n_sets == LENS_MAX_SETS) { fprintf(stderr, "codi lens: at most %d target sets\n", LENS_MAX_SETS); return -1; }
        memset(ts, 0, sizeof *ts);
        snprintf(ts->name, sizeof ts->name, "%.*s", (int)(len < sizeof ts->name - 1 ? len : sizeof ts->name - 1), s);
        ts->chance = 1;
        if (!strcmp(ts->name, "answer")) ts->kind = LT_ANSWER;
        else if (!strcmp(ts->name, "intermediates")) ts->kind = LT_INTER;
        else if (!strcmp(ts->name, "approx")) ts->kind = LT_APPROX;
        else if (!strncmp(ts->name, "field:", 6) && ts->name[6]) { ts->kind = LT_FIELD; ts->arg = ts->name + 6; }
        else if (!strncmp(ts->name, "file:", 5) && ts->name[5]) { ts->kind = LT_FILE; ts->arg = ts->name + 5; if (lens_read_targets_file(ts)) return -1; }
        else { fprintf(stderr, "codi lens: --targets item '%s' is not answer, intermediates, approx, field:NAME or file:TARGETS.jsonl\n", ts->name); return -1; }
        ag->n_sets++;
        s += len + (s[len] == ',');
    }
    for (s = ag->a->tokens; s && *s;) {
        size_t len = strcspn(s, ",");
        lens_tset *ts = &ag->set[ag->n_sets];
        if (ag->n_sets == LENS_MAX_SETS) { fprintf(stderr, "codi lens: at most %d target sets\n", LENS_MAX_SETS); return -1; }
        memset(ts, 0, sizeof *ts);
        snprintf(ts->name, sizeof ts->name, "token:%.*s", (int)(len < 120 ? len : 120), s);
        ts->kind = LT_TOKEN; ts->arg = ts->name + 6;
        ag->n_sets++;
        s += len + (s[len] == ',');
    }
    for (s = ag->a->relations; s && *s;) {
        size_t len = strcspn(s, ",");
        char item[40], *e;
        double k = 0;
        char op = 0;
        snprintf(item, sizeof item, "%.*s", (int)(len < 39 ? len : 39), s);
        s += len + (s[len] == ',');
        if (!*item) continue;
        if (item[0] == 'x' && item[1] && strchr("*/+-", item[1])) { op = item[1]; k = strtod(item + 2, &e); if (e == item + 2 || *e) op = 0; }
        else { k = strtod(item, &e); if (e != item && (!strcmp(e, "x") || !strcmp(e, "*x"))) op = '*'; }
        if (!op || !(k > 0) || !isfinite(k) || ag->n_rel == LENS_MAX_REL) {
            fprintf(stderr, "codi lens: --relations item '%s' is not Kx, x*K, x/K, x+K or x-K with K > 0 (at most %d)\n", item, LENS_MAX_REL); return -1;
        }
        ag->rel_k[ag->n_rel] = k; ag->rel_op[ag->n_rel++] = op;
    }
    return 0;
}

/* Permutation j of the questions holding set s's ids, without fixed points (Sattolo's algorithm:
   one cycle), seeded from --seed, s and j. */
static int lens_make_donors(lens_agg *ag) {
    int s, j, i, m, *have = (int *)malloc(sizeof(int) * (size_t)(ag->nq ? ag->nq : 1)), *idx = (int *)malloc(sizeof(int) * (size_t)(ag->nq ? ag->nq : 1));
    if (!(ag->donor = (int *)malloc(sizeof(int) * (size_t)ag->n_sets * (size_t)(ag->K ? ag->K : 1) * (size_t)(ag->nq ? ag->nq : 1))) || !have || !idx) {
        free(have); free(idx); fprintf(stderr, "codi lens: out of memory\n"); return -1;
    }
    for (s = 0; s < ag->n_sets; s++) {
        for (m = 0, i = 0; i < ag->nq; i++) if (ag->q[i].t[s].n) have[m++] = i;
        for (j = 0; j < ag->K; j++) {
            int *d = ag->donor + ((size_t)s * ag->K + j) * ag->nq;
            codi_rng rng;
            for (i = 0; i < ag->nq; i++) d[i] = -1;
            if (!ag->set[s].chance || m < 2) continue;
            {
                uint64_t x = (uint64_t)ag->a->seed, y;
                y = codi_splitmix64(&x) ^ (uint64_t)s; y = codi_splitmix64(&y) ^ (uint64_t)j;
                codi_rng_seed(&rng, codi_splitmix64(&y));
            }
            for (i = 0; i < m; i++) idx[i] = i;
            for (i = m - 1; i > 0; i--) { int k = (int)(codi_rng_uniform(&rng) * i), t = idx[i]; idx[i] = idx[k]; idx[k] = t; }
            for (i = 0; i < m; i++) d[have[i]] = have[idx[i]];
        }
    }
    free(have); free(idx);
    return 0;
}

/* A growing text buffer (one question's rows, written at once). */
typedef struct { char *p; size_t n, cap; int bad; } lens_sb;

static void lens_sb_printf(lens_sb *b, const char *fmt, ...) {
    va_list ap;
    int k;
    if (b->bad) return;
    for (;;) {
        va_start(ap, fmt);
        k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->bad = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        {
            size_t cap = (b->cap + (size_t)k + 1) * 2;
            char *g = (char *)realloc(b->p, cap);
            if (!g) { b->bad = 1; return; }
            b->p = g; b->cap = cap;
        }
    }
}

static void lens_sb_string(lens_sb *b, const char *s) {
    lens_sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') lens_sb_printf(b, "\\%c", ch);
        else if (ch < 0x20) lens_sb_printf(b, "\\u%04x", ch);
        else lens_sb_printf(b, "%c", ch);
    }
    lens_sb_printf(b, "\"");
}

/* Rank (0-based, codi_top_k's order) of the best of ids [n] in logits [V], its probability in *prob. */
static int lens_best_rank(const float *logits, int V, const int32_t *ids, int n, double lse, double *prob) {
    int i, best = -1;
    for (i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V && (best < 0 || logits[ids[i]] > logits[best] || (logits[ids[i]] == logits[best] && ids[i] < best))) best = ids[i];
    if (best < 0) return -1;
    *prob = exp(logits[best] - lse);
    return codi_rank_of(logits, V, best, NULL);
}

/* The rows file's settings line: what must match for a resume. */
static void lens_rows_header(const lens_agg *ag, lens_sb *b) {
    const lens_args *a = ag->a;
    int s;
    lens_sb_printf(b, "{\"codi_lens_rows\": 1, \"model\": "); lens_sb_string(b, a->ma.model);
    lens_sb_printf(b, ", \"questions\": "); lens_sb_string(b, a->questions);
    lens_sb_printf(b, ", \"limit\": %d, \"latents\": %d, \"recipe\": %d, \"max_answer\": %d, \"positions\": ", a->limit, a->pa.latents, a->pa.recipe, a->max_answer);
    lens_sb_string(b, a->positions);
    lens_sb_printf(b, ", \"lenses\": [\"logit\"%s], \"tuned\": ", ag->n_lens > 1 ? ", \"tuned\"" : "");
    if (a->tuned) lens_sb_string(b, a->tuned); else lens_sb_printf(b, "null");
    lens_sb_printf(b, ", \"sprint_norm\": %d, \"sprint_index\": %d, \"targets\": [", a->sprint_norm, a->sprint_index);
    for (s = 0; s < ag->n_sets; s++) { lens_sb_printf(b, "%s", s ? ", " : ""); lens_sb_string(b, ag->set[s].name); }
    lens_sb_printf(b, "], \"approx_pct\": %.17g, \"relations\": ", a->approx_pct);
    lens_sb_string(b, a->relations ? a->relations : "");
    lens_sb_printf(b, ", \"chance_permutations\": %d, \"seed\": %d, \"multi_token\": \"%s\"}\n", ag->K, a->seed, ag->skip_multi ? "skip" : "first");
}

/* Appends the rows of question qi, run into state st (result rr), to b: per lens and slot an entropy
   row and a row per target set it has, then the question's "done" line. 0, or -1 after a message. */
static int lens_question_rows(lens_agg *ag, int qi, codi_state *st, const codi_run_result *rr, int *rank, double *prob, int *crank, double *ent, lens_sb *b) {
    const codi_model *m = ag->m;
    const lens_q *q = &ag->q[qi];
    char text[4096], lab[32];
    double pred;
    int L, p, l, s, j, k, V = m->config.vocab, L1 = ag->L1, K = ag->K, has_pred, correct;
    for (L = 0; L < ag->n_lens; L++)
        for (p = 0; p < ag->P; p++) {
            int pos = pos_resolve(&ag->ps, p, rr->prompt_len, rr->n_answer, st->n_pos);
            if (pos < 0) continue;
            for (l = 0; l < L1; l++) {
                double lse;
                if (lens_logits(m, L ? ag->tl : NULL, l, codi_state_resid(st, l, pos), ag->a->sprint_norm, ag->logits, ag->tmp)) return -1;
                lse = codi_log_softmax(ag->logits, V, NULL);
                ent[l] = codi_entropy(ag->logits, V);
                for (s = 0; s < ag->n_sets; s++) {
                    if (!q->t[s].n) continue;
                    rank[s * L1 + l] = lens_best_rank(ag->logits, V, q->t[s].ids, q->t[s].n, lse, &prob[s * L1 + l]);
                    for (j = 0; j < K; j++) {
                        int d = ag->donor[((size_t)s * K + j) * ag->nq + qi];
                        double unused;
                        crank[((size_t)s * K + j) * L1 + l] = d >= 0 ? lens_best_rank(ag->logits, V, ag->q[d].t[s].ids, ag->q[d].t[s].n, lse, &unused) : -1;
                    }
                }
            }
            pos_label(&ag->ps, p, lab, sizeof lab);
            lens_sb_printf(b, "{\"index\": %d, \"line\": %d, \"lens\": \"%s\", \"slot\": %d, \"label\": \"%s\", \"entropy\": [", q->index, q->line, L ? "tuned" : "logit", p, lab);
            for (l = 0; l < L1; l++) lens_sb_printf(b, "%s%.9g", l ? ", " : "", ent[l]);
            lens_sb_printf(b, "]}\n");
            for (s = 0; s < ag->n_sets; s++) {
                if (!q->t[s].n) continue;
                lens_sb_printf(b, "{\"index\": %d, \"line\": %d, \"lens\": \"%s\", \"slot\": %d, \"label\": \"%s\", \"target\": ", q->index, q->line, L ? "tuned" : "logit", p, lab);
                lens_sb_string(b, ag->set[s].name);
                lens_sb_printf(b, ", \"ids\": [");
                for (k = 0; k < q->t[s].n; k++) lens_sb_printf(b, "%s%d", k ? ", " : "", (int)q->t[s].ids[k]);
                lens_sb_printf(b, "], \"rank\": [");
                for (l = 0; l < L1; l++) lens_sb_printf(b, "%s%d", l ? ", " : "", rank[s * L1 + l]);
                lens_sb_printf(b, "], \"prob\": [");
                for (l = 0; l < L1; l++) lens_sb_printf(b, "%s%.6g", l ? ", " : "", prob[s * L1 + l]);
                lens_sb_printf(b, "], \"chance_from\": [");
                for (j = 0, k = 0; j < K; j++) {
                    int d = ag->donor[((size_t)s * K + j) * ag->nq + qi];
                    if (d >= 0) lens_sb_printf(b, "%s%d", k++ ? ", " : "", ag->q[d].index);
                }
                lens_sb_printf(b, "], \"chance_rank\": [");
                for (j = 0, k = 0; j < K; j++) {
                    if (ag->donor[((size_t)s * K + j) * ag->nq + qi] < 0) continue;
                    lens_sb_printf(b, "%s[", k++ ? ", " : "");
                    for (l = 0; l < L1; l++) lens_sb_printf(b, "%s%d", l ? ", " : "", crank[((size_t)s * K + j) * L1 + l]);
                    lens_sb_printf(b, "]");
                }
                lens_sb_printf(b, "]}\n");
            }
        }
    codi_decode(ag->t, rr->answer, rr->n_answer, 1, text, sizeof text);
    has_pred = codi_extract_answer(text, &pred);
    correct = q->has_gold && has_pred && fabs(pred - q->gold) < 1e-6;
    lens_sb_printf(b, "{\"index\": %d, \"line\": %d, \"done\": true, \"correct\": %s, \"prediction\": ", q->index, q->line, correct ? "true" : "false");
    if (has_pred && isfinite(pred)) lens_sb_printf(b, "%.17g", pred); else lens_sb_printf(b, "null");
    lens_sb_printf(b, ", \"gold\": ");
    if (q->has_gold) lens_sb_printf(b, "%.17g}\n", q->gold); else lens_sb_printf(b, "null}\n");
    return b->bad ? -1 : 0;
}

/* What the rows file holds, for the summary: [lens, set, slot, layer, question] ranks (-1: no row),
   chance ranks [..., permutation], entropies [lens, slot, layer, question] (NaN: no row). */
typedef struct {
    int n_lens, n_sets, P, L1, nq, K;
    int *rank, *crank;
    double *ent;
    unsigned char *done, *correct;
    int n_done, n_correct;
} lens_sum;

static size_t lens_cell(const lens_sum *S, int L, int s, int p, int l) { return (((size_t)L * S->n_sets + s) * S->P + p) * S->L1 + l; }

static void lens_sum_free(lens_sum *S) { free(S->rank); free(S->crank); free(S->ent); free(S->done); free(S->correct); }

/* Reads the rows file. With only_scan, marks the questions done and returns in *good_len where the
   last done question's lines end (later lines belong to a question cut short); else fills S.
   header: the settings line it must start with. 0, 1 when the file is absent or empty, -1 on
   another command's file or a bad line. */
static int lens_rows_read(const lens_agg *ag, const char *path, const char *header, lens_sum *S, long *good_len) {
    size_t len, i;
    char *text = codi_read_text(path, &len), *p, err[256];
    int line = 0;
    *good_len = 0;
    if (!text || !len) { free(text); return 1; }
    for (p = text; p < text + len; ) {
        char *e = memchr(p, '\n', (size_t)(text + len - p));
        codi_json *j;
        if (!e) break;                                       /* an unfinished last line */
        line++;
        if (line == 1) {
            if (strlen(header) != (size_t)(e - p + 1) || strncmp(header, p, (size_t)(e - p))) {
                fprintf(stderr, "codi lens: %s holds the rows of another command; give another --rows / --out or delete it.\n  file:    %.*s\n  command: %s",
                        path, (int)(e - p), p, header);
                free(text); return -1;
            }
            *good_len = (long)(e + 1 - text);
        } else if ((j = codi_json_parse(p, (size_t)(e - p), err, sizeof err)) != NULL) {
            const codi_json *qv = codi_json_get(j, "index"), *done = codi_json_get(j, "done"), *lens = codi_json_get(j, "lens");
            const codi_json *slot = codi_json_get(j, "slot"), *tg = codi_json_get(j, "target"), *rk = codi_json_get(j, "rank");
            const codi_json *ent = codi_json_get(j, "entropy"), *cr = codi_json_get(j, "chance_rank"), *x, *y;
            int qi = qv && qv->type == CODI_JSON_NUM ? (int)qv->num : -1, L = lens && lens->type == CODI_JSON_STR && !strcmp(lens->str, "tuned");
            int p_ = slot && slot->type == CODI_JSON_NUM ? (int)slot->num : -1, s = -1, l, k;
            if (qi < 0 || qi >= S->nq || (!done && (p_ < 0 || p_ >= S->P || L >= S->n_lens))) {
                fprintf(stderr, "codi lens: %s:%d: not a row of this run (question %d, slot %d)\n", path, line, qi, p_); codi_json_free(j); free(text); return -1;
            }
            if (done) {
                const codi_json *c = codi_json_get(j, "correct");
                S->done[qi] = 1; S->correct[qi] = c && c->type == CODI_JSON_TRUE;
                *good_len = (long)(e + 1 - text);
            } else if (ent && ent->type == CODI_JSON_ARR) {
                for (x = ent->child, l = 0; x && l < S->L1; x = x->next, l++) S->ent[((size_t)L * S->P + p_) * S->L1 * S->nq + (size_t)l * S->nq + qi] = x->num;
            } else if (tg && tg->type == CODI_JSON_STR && rk && rk->type == CODI_JSON_ARR) {
                for (k = 0; k < ag->n_sets; k++) if (!strcmp(ag->set[k].name, tg->str)) s = k;
                if (s >= 0) {
                    for (x = rk->child, l = 0; x && l < S->L1; x = x->next, l++) S->rank[lens_cell(S, L, s, p_, l) * S->nq + qi] = (int)x->num;
                    for (y = cr && cr->type == CODI_JSON_ARR ? cr->child : NULL, k = 0; y && k < S->K; y = y->next, k++)
                        for (x = y->child, l = 0; x && l < S->L1; x = x->next, l++) S->crank[(lens_cell(S, L, s, p_, l) * S->nq + qi) * S->K + k] = (int)x->num;
                }
            }
            codi_json_free(j);
        } else { fprintf(stderr, "codi lens: %s:%d: %s\n", path, line, err); free(text); return -1; }
        p = e + 1;
    }
    free(text);
    for (i = 0; i < (size_t)S->nq; i++) { S->n_done += S->done[i]; S->n_correct += S->correct[i]; }
    return 0;
}

static int lens_sum_alloc(lens_sum *S, const lens_agg *ag) {
    size_t cells = (size_t)ag->n_lens * ag->n_sets * ag->P * ag->L1 * (size_t)(ag->nq ? ag->nq : 1), i;
    memset(S, 0, sizeof *S);
    S->n_lens = ag->n_lens; S->n_sets = ag->n_sets; S->P = ag->P; S->L1 = ag->L1; S->nq = ag->nq; S->K = ag->K;
    S->rank = (int *)malloc(sizeof(int) * (cells ? cells : 1));
    S->crank = (int *)malloc(sizeof(int) * (cells ? cells : 1) * (size_t)(ag->K ? ag->K : 1));
    S->ent = (double *)malloc(sizeof(double) * (size_t)ag->n_lens * ag->P * ag->L1 * (size_t)(ag->nq ? ag->nq : 1));
    S->done = (unsigned char *)calloc((size_t)(ag->nq ? ag->nq : 1), 1);
    S->correct = (unsigned char *)calloc((size_t)(ag->nq ? ag->nq : 1), 1);
    if (!S->rank || !S->crank || !S->ent || !S->done || !S->correct) return -1;
    for (i = 0; i < cells; i++) S->rank[i] = -1;
    for (i = 0; i < cells * (size_t)ag->K; i++) S->crank[i] = -1;
    for (i = 0; i < (size_t)ag->n_lens * ag->P * ag->L1 * (size_t)ag->nq; i++) S->ent[i] = NAN;
    return 0;
}

/* A detection rate at one (lens, set, slot, residual index, k) with its Wilson 95% interval; the
   chance rate (per question: the mean over the permutations of "the other question's target is in
   the top-k") with a Wilson 95% interval counted once per question (k = the questions' chances
   summed and rounded, n = the questions: as wide as one draw per question, never narrower); the
   paired difference rate - chance (the mean of the per-question differences) with Newcombe's MOVER
   interval from those two Wilson intervals and the observed correlation of hit and chance over the
   questions (Newcombe 1998, method 10; Zou and Donner 2008). Unlike a t interval on the
   differences it keeps its width where the hits are all 0 or all 1. */
typedef struct { long n, hits, n_chance, above, below; double rate, lo, hi, chance, clo, chi, diff, dlo, dhi, p; } lens_rate;

static void lens_rate_of(const lens_sum *S, int L, int s, int p, int l, int k, double *cbuf, double *hbuf, lens_rate *r) {
    const double z = 1.959963984540054;
    size_t c = lens_cell(S, L, s, p, l);
    int qi, j;
    memset(r, 0, sizeof *r);
    for (qi = 0; qi < S->nq; qi++) {
        int rk = S->rank[c * S->nq + qi], hit, m = 0, h = 0;
        if (rk < 0 || !S->done[qi]) continue;
        hit = rk < k;
        r->n++; r->hits += hit;
        for (j = 0; j < S->K; j++) { int cr = S->crank[(c * S->nq + qi) * S->K + j]; if (cr >= 0) { m++; h += cr < k; } }
        if (m) { cbuf[r->n_chance] = (double)h / m; hbuf[r->n_chance] = hit; r->n_chance++; }
    }
    r->rate = r->n ? (double)r->hits / r->n : NAN;
    codi_wilson_interval((int)r->hits, (int)r->n, z, &r->lo, &r->hi);
    if (!r->n) r->lo = r->hi = NAN;
    r->chance = r->clo = r->chi = r->diff = r->dlo = r->dhi = r->p = NAN;
    if (r->n_chance) {
        long i;
        for (i = 0; i < r->n_chance; i++) { r->above += hbuf[i] > cbuf[i]; r->below += hbuf[i] < cbuf[i]; }
        r->p = codi_mcnemar_exact(r->below, r->above);   /* sign test of hit - chance per question (ties left out) */
    }
    if (r->n_chance) {
        double sh = 0, sc = 0, shh = 0, scc = 0, shc = 0, n = (double)r->n_chance, p1, p2, l1, u1, l2, u2, vh, vc, phi = 0;
        long i;
        for (i = 0; i < r->n_chance; i++) { sh += hbuf[i]; sc += cbuf[i]; shh += hbuf[i] * hbuf[i]; scc += cbuf[i] * cbuf[i]; shc += hbuf[i] * cbuf[i]; }
        p1 = sh / n; p2 = sc / n;
        vh = shh / n - p1 * p1; vc = scc / n - p2 * p2;
        if (vh > 0 && vc > 0) phi = fmax(-1, fmin(1, (shc / n - p1 * p2) / sqrt(vh * vc)));
        codi_wilson_interval((int)(sh + 0.5), (int)r->n_chance, z, &l1, &u1);
        codi_wilson_interval((int)floor(sc + 0.5), (int)r->n_chance, z, &l2, &u2);
        r->chance = p2; r->clo = fmin(l2, p2); r->chi = fmax(u2, p2);
        r->diff = p1 - p2;
        r->dlo = fmax(-1, r->diff - sqrt(fmax(0, (p1 - l1) * (p1 - l1) - 2 * phi * (p1 - l1) * (r->chi - p2) + (r->chi - p2) * (r->chi - p2))));
        r->dhi = fmin(1, r->diff + sqrt(fmax(0, (u1 - p1) * (u1 - p1) - 2 * phi * (u1 - p1) * (p2 - r->clo) + (p2 - r->clo) * (p2 - r->clo))));
    }
}

static void lens_json_num(FILE *f, double v) { if (isfinite(v)) fprintf(f, "%.6g", v); else fputs("null", f); }
static void lens_csv_num(FILE *f, double v) { if (isfinite(v)) fprintf(f, "%.6g", v); }

static int lens_set_index(const lens_agg *ag, const char *name) {
    int s;
    for (s = 0; s < ag->n_sets; s++) if (!strcmp(ag->set[s].name, name)) return s;
    return -1;
}

/* Mean entropy at (lens, slot, layer) over the questions, with a t 95% interval. */
static void lens_entropy_of(const lens_sum *S, int L, int p, int l, double *buf, codi_mean_ci *ci) {
    const double *e = S->ent + (((size_t)L * S->P + p) * S->L1 + l) * S->nq;
    long n = 0;
    int qi;
    for (qi = 0; qi < S->nq; qi++) if (S->done[qi] && e[qi] == e[qi]) buf[n++] = e[qi];
    codi_mean_interval(buf, n, ci);
}

/* Average over the last three residual indices (L-2..L) of per-cell rates (the sprint's summary). */
static double lens_last3(const lens_sum *S, int L, int s, int p, int k, double *cb, double *db) {
    double sum = 0;
    int l, n = 0;
    for (l = S->L1 - 3 < 0 ? 0 : S->L1 - 3; l < S->L1; l++) {
        lens_rate r;
        if (s < 0) { codi_mean_ci ci; lens_entropy_of(S, L, p, l, cb, &ci); if (ci.mean == ci.mean) { sum += ci.mean; n++; } continue; }
        lens_rate_of(S, L, s, p, l, k, cb, db, &r);
        if (r.rate == r.rate) { sum += r.rate; n++; }
    }
    return n ? sum / n : NAN;
}

static const char *lens_name(int L) { return L ? "tuned" : "logit"; }

/* The family of rate-vs-chance tests: every rate of the JSON's "rates" (lens, target set, slot,
   residual index, k in ks) whose target set has a chance control, but the tuned lens's final
   residual index (the logit lens's: no translator there), counted once; p[i] the sign test of the
   per-question hit - chance (NaN: no test), Holm and BH adjusted over the tests made. Index:
   ((((L * n_sets + s) * P + p) * L1 + l) * n_ks + kk). Returns the number of tests, -1 out of memory. */
static long lens_family(const lens_agg *ag, const lens_sum *S, const int *ks, int n_ks, double *cb, double *db, double *p, double *holm, double *bh) {
    long i = 0, n = 0;
    int L, s, q, l, kk;
    lens_rate r;
    for (L = 0; L < S->n_lens; L++)
        for (s = 0; s < ag->n_sets; s++)
            for (q = 0; q < S->P; q++)
                for (l = 0; l < S->L1; l++)
                    for (kk = 0; kk < n_ks; kk++, i++) {
                        p[i] = NAN;
                        if (!ag->set[s].chance || (L > 0 && l == S->L1 - 1)) continue;
                        lens_rate_of(S, L, s, q, l, ks[kk], cb, db, &r);
                        p[i] = r.p;
                        n += r.p == r.p;
                    }
    if (i > 2147483647L || codi_holm(p, (int)i, holm) || codi_bh(p, (int)i, bh)) return -1;
    return n;
}

/* The summary files: PREFIX.csv (per slot and residual index, the primary lens: the tuned one when
   given), PREFIX_rates.csv (every rate, long form), PREFIX.json, the SVG figures; a table on stdout. */
static int lens_agg_write(const lens_agg *ag, const lens_sum *S) {
    const char *prefix = ag->a->out;
    char path[4096], lab[32];
    FILE *f;
    int P = S->P, L1 = S->L1, p, l, k, s, L, PL = S->n_lens - 1, K = ag->a->top_k, ks[4], n_ks = 0;
    int s_ans = lens_set_index(ag, "answer"), s_int = lens_set_index(ag, "intermediates");
    double *cb = (double *)malloc(sizeof(double) * (size_t)(S->nq + 1)), *db = (double *)malloc(sizeof(double) * (size_t)(S->nq + 1));
    lens_rate r;
    codi_mean_ci ci;
    size_t n_fam = (size_t)S->n_lens * ag->n_sets * P * L1 * 4;
    double *fp = (double *)malloc(sizeof(double) * (n_fam ? n_fam : 1)), *fholm = (double *)malloc(sizeof(double) * (n_fam ? n_fam : 1));
    double *fbh = (double *)malloc(sizeof(double) * (n_fam ? n_fam : 1));
    long n_tests, n_holm = 0, n_bh = 0, fi;
    if (!cb || !db || !fp || !fholm || !fbh) { free(cb); free(db); free(fp); free(fholm); free(fbh); fprintf(stderr, "codi lens: out of memory\n"); return -1; }
    ks[n_ks++] = 1; ks[n_ks++] = 5; ks[n_ks++] = 10;          /* the k of the rates in the JSON: 1, 5, 10 and --top-k */
    if (K != 1 && K != 5 && K != 10) ks[n_ks++] = K;
    for (k = 1; k < n_ks; k++) { int v = ks[k], j = k; while (j > 0 && ks[j - 1] > v) { ks[j] = ks[j - 1]; j--; } ks[j] = v; }
    if ((n_tests = lens_family(ag, S, ks, n_ks, cb, db, fp, fholm, fbh)) < 0) { free(cb); free(db); free(fp); free(fholm); free(fbh); fprintf(stderr, "codi lens: out of memory\n"); return -1; }
    for (fi = 0; fi < (long)S->n_lens * ag->n_sets * P * L1 * n_ks; fi++) { n_holm += fholm[fi] < 0.05; n_bh += fbh[fi] < 0.05; }
    /* CSV: one row per (position, layer), the primary lens, as before */
    snprintf(path, sizeof path, "%s.csv", prefix);
    if (!(f = cli_out_open(path, "w"))) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    fprintf(f, "slot,label,layer,questions,entropy_mean");
    for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",answer_top%d", k);
    for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",intermediate_top%d", k);
    for (s = 0, l = 0; s < ag->n_sets; s++) if (ag->set[s].kind == LT_TOKEN) { l++; for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",token%d_top%d", l, k); }
    fprintf(f, "\n");
    for (p = 0; p < P; p++)
        for (l = 0; l < L1; l++) {
            pos_label(&ag->ps, p, lab, sizeof lab);
            lens_entropy_of(S, PL, p, l, cb, &ci);
            fprintf(f, "%d,%s,%d,%ld,", p, lab, l, ci.n); lens_csv_num(f, ci.mean);
            for (s = -2; s < ag->n_sets; s++) {
                int set = s == -2 ? s_ans : s == -1 ? s_int : s;
                if (s >= 0 && ag->set[s].kind != LT_TOKEN) continue;
                for (k = 1; k <= LENS_KMAX; k++) {
                    fprintf(f, ",");
                    if (set >= 0) { lens_rate_of(S, PL, set, p, l, k, cb, db, &r); lens_csv_num(f, r.rate); }
                }
            }
            fprintf(f, "\n");
        }
    if (cli_out_close(f)) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    /* rates CSV, long form */
    snprintf(path, sizeof path, "%s_rates.csv", prefix);
    if (!(f = cli_out_open(path, "w"))) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    fprintf(f, "lens,target,slot,label,layer,k,n,hits,rate,ci_low,ci_high,chance_n,chance_rate,chance_ci_low,chance_ci_high,diff,diff_ci_low,diff_ci_high,"
               "p_chance,p_holm,q_bh\n");
    for (L = 0; L < S->n_lens; L++)
        for (s = 0; s < ag->n_sets; s++)
            for (p = 0; p < P; p++)
                for (l = 0; l < L1; l++)
                    for (k = 1; k <= LENS_KMAX; k++) {
                        double v[9];
                        int i;
                        lens_rate_of(S, L, s, p, l, k, cb, db, &r);
                        pos_label(&ag->ps, p, lab, sizeof lab);
                        fprintf(f, "%s,\"%s\",%d,%s,%d,%d,%ld,%ld", lens_name(L), ag->set[s].name, p, lab, l, k, r.n, r.hits);
                        v[0] = r.rate; v[1] = r.lo; v[2] = r.hi; v[3] = r.chance; v[4] = r.clo; v[5] = r.chi; v[6] = r.diff; v[7] = r.dlo; v[8] = r.dhi;
                        for (i = 0; i < 9; i++) { fprintf(f, ","); if (i == 3) fprintf(f, "%ld,", r.n_chance); lens_csv_num(f, v[i]); }
                        fprintf(f, ","); lens_csv_num(f, r.p);
                        for (i = 0; i < n_ks && ks[i] != k; i++) {}            /* corrected only within the family (k in the JSON's) */
                        fi = ((((long)L * ag->n_sets + s) * P + p) * L1 + l) * n_ks + i;
                        fprintf(f, ","); if (i < n_ks) lens_csv_num(f, fholm[fi]);
                        fprintf(f, ","); if (i < n_ks) lens_csv_num(f, fbh[fi]);
                        fprintf(f, "\n");
                    }
    if (cli_out_close(f)) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    /* JSON */
    snprintf(path, sizeof path, "%s.json", prefix);
    if (!(f = cli_out_open(path, "w"))) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    fprintf(f, "{\"model\": "); cli_json_string(f, ag->a->ma.model);
    fprintf(f, ", \"questions_file\": "); cli_json_string(f, ag->a->questions);
    fprintf(f, ", \"questions\": %d, \"correct\": %d, \"lens\": \"%s\", \"lenses\": [\"logit\"%s], \"labels\": [", S->n_done, S->n_correct, lens_name(PL),
            S->n_lens > 1 ? ", \"tuned\"" : "");
    for (p = 0; p < P; p++) { pos_label(&ag->ps, p, lab, sizeof lab); fprintf(f, "%s", p ? ", " : ""); cli_json_string(f, lab); }
    fprintf(f, "], \"layers\": %d, \"k\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], \"rows_file\": ", L1);
    cli_json_string(f, ag->a->rows);
    fprintf(f, ", \"chance_permutations\": %d, \"seed\": %d, \"multi_token\": \"%s\", \"approx_pct\": %.6g, \"relations\": ", ag->K, ag->a->seed,
            ag->skip_multi ? "skip" : "first", ag->a->approx_pct);
    cli_json_string(f, ag->a->relations ? ag->a->relations : "");
    fprintf(f, ",\n \"intervals\": {\"rate\": \"Wilson 95%%\", \"chance\": \"Wilson 95%% with one draw per question (k = sum of the per-question chances, rounded)\", "
               "\"diff\": \"Newcombe MOVER 95%% from the two Wilson intervals and the hit-chance correlation over questions\", \"entropy\": \"t 95%% over questions\"}");
    fprintf(f, ",\n \"family\": {\"tests\": %ld, \"members\": \"every rate of rates with a chance control (lens x target x slot x residual index x k; "
               "the tuned lens's final index, the logit lens's, once)\", "
               "\"test\": \"exact two-sided sign test of the per-question difference hit - chance (ties left out): p_chance\", "
               "\"corrections\": \"p_holm: Holm (family-wise error), q_bh: Benjamini-Hochberg (false discovery rate), over the family\", "
               "\"alpha\": 0.05, \"holm_survivors\": %ld, \"bh_survivors\": %ld}", n_tests, n_holm, n_bh);
    fprintf(f, ",\n \"targets\": [");
    for (s = 0; s < ag->n_sets; s++) {
        const lens_tset *ts = &ag->set[s];
        fprintf(f, "%s{\"name\": ", s ? ",\n  " : ""); cli_json_string(f, ts->name);
        fprintf(f, ", \"questions_with_target\": %ld, \"items\": %ld, \"multi_token_items\": %ld, \"unmatched_items\": %ld, \"questions_skipped\": %ld, "
                   "\"chance\": %s, \"warning\": ", ts->n_q, ts->n_items, ts->n_multi, ts->n_unmatched, ts->n_skipped, ts->chance ? "true" : "false");
        if (ts->n_multi) {
            char w[256];
            snprintf(w, sizeof w, "%ld of %ld items are several tokens: %s", ts->n_multi, ts->n_items,
                     ag->skip_multi ? "left out (--multi-token skip)" : "counted by their first token (--multi-token first)");
            cli_json_string(f, w);
        } else fprintf(f, "null");
        fprintf(f, "}");
    }
    fprintf(f, "]");
    for (s = -3; s < ag->n_sets; s++) {     /* the older grids [slot][layer][k = 1..10], primary lens */
        int set = s == -3 ? s_ans : s == -2 ? s_int : s;
        if (s >= 0 && ag->set[s].kind != LT_TOKEN) continue;
        if (s == -1) fprintf(f, ",\n \"entropy_mean\": [");
        else if (set < 0) continue;
        else if (s < 0) fprintf(f, ",\n \"%s\": [", s == -3 ? "answer_in_top_k" : "intermediate_in_top_k");
        else {
            int nt = 0, t2;
            for (t2 = 0; t2 <= s; t2++) nt += ag->set[t2].kind == LT_TOKEN;
            fprintf(f, ",\n \"token%d_in_top_k\": [", nt);
        }
        for (p = 0; p < P; p++) {
            fprintf(f, "%s[", p ? ", " : "");
            for (l = 0; l < L1; l++) {
                fprintf(f, "%s", l ? ", " : "");
                if (s == -1) { lens_entropy_of(S, PL, p, l, cb, &ci); lens_json_num(f, ci.mean); continue; }
                fprintf(f, "[");
                for (k = 1; k <= LENS_KMAX; k++) { lens_rate_of(S, PL, set, p, l, k, cb, db, &r); fprintf(f, "%s", k > 1 ? ", " : ""); lens_json_num(f, r.rate); }
                fprintf(f, "]");
            }
            fprintf(f, "]");
        }
        fprintf(f, "]");
    }
    fprintf(f, ",\n \"tokens\": [");
    for (s = 0, k = 0; s < ag->n_sets; s++) if (ag->set[s].kind == LT_TOKEN) { fprintf(f, "%s", k++ ? ", " : ""); cli_json_string(f, ag->set[s].arg); }
    fprintf(f, "],\n \"summary_last3\": [");
    for (p = 0; p < P; p++) {
        pos_label(&ag->ps, p, lab, sizeof lab);
        fprintf(f, "%s{\"label\": \"%s\"", p ? ",\n  " : "", lab);
        for (s = 0; s < 2; s++) {
            int set = s ? s_int : s_ans;
            if (set < 0) continue;
            fprintf(f, ", \"%s\": [", s ? "intermediate_in_top_k" : "answer_in_top_k");
            for (k = 1; k <= LENS_KMAX; k++) { fprintf(f, "%s", k > 1 ? ", " : ""); lens_json_num(f, lens_last3(S, PL, set, p, k, cb, db)); }
            fprintf(f, "]");
        }
        fprintf(f, ", \"entropy_mean\": ");
        lens_json_num(f, lens_last3(S, PL, -1, p, 0, cb, db));
        fprintf(f, "}");
    }
    fprintf(f, "],\n \"rates\": [");
    for (L = 0, k = 0; L < S->n_lens; L++)
        for (s = 0; s < ag->n_sets; s++)
            for (p = 0; p < P; p++)
                for (l = 0; l < L1; l++) {
                    int kk;
                    for (kk = 0; kk < n_ks; kk++) {
                        lens_rate_of(S, L, s, p, l, ks[kk], cb, db, &r);
                        pos_label(&ag->ps, p, lab, sizeof lab);
                        fprintf(f, "%s{\"lens\": \"%s\", \"target\": ", k++ ? ",\n  " : "\n  ", lens_name(L)); cli_json_string(f, ag->set[s].name);
                        fprintf(f, ", \"slot\": %d, \"label\": \"%s\", \"layer\": %d, \"k\": %d, \"n\": %ld, \"hits\": %ld, \"rate\": ", p, lab, l, ks[kk], r.n, r.hits);
                        lens_json_num(f, r.rate); fprintf(f, ", \"ci_low\": "); lens_json_num(f, r.lo); fprintf(f, ", \"ci_high\": "); lens_json_num(f, r.hi);
                        fprintf(f, ", \"chance_n\": %ld, \"chance_rate\": ", r.n_chance); lens_json_num(f, r.chance);
                        fprintf(f, ", \"chance_ci_low\": "); lens_json_num(f, r.clo); fprintf(f, ", \"chance_ci_high\": "); lens_json_num(f, r.chi);
                        fprintf(f, ", \"diff\": "); lens_json_num(f, r.diff); fprintf(f, ", \"diff_ci_low\": "); lens_json_num(f, r.dlo);
                        fprintf(f, ", \"diff_ci_high\": "); lens_json_num(f, r.dhi);
                        fi = ((((long)L * ag->n_sets + s) * P + p) * L1 + l) * n_ks + kk;
                        fprintf(f, ", \"p_chance\": "); lens_json_num(f, r.p); fprintf(f, ", \"p_holm\": "); lens_json_num(f, fholm[fi]);
                        fprintf(f, ", \"q_bh\": "); lens_json_num(f, fbh[fi]); fprintf(f, "}");
                    }
                }
    fprintf(f, "],\n \"entropy\": [");
    for (L = 0, k = 0; L < S->n_lens; L++)
        for (p = 0; p < P; p++)
            for (l = 0; l < L1; l++) {
                lens_entropy_of(S, L, p, l, cb, &ci);
                pos_label(&ag->ps, p, lab, sizeof lab);
                fprintf(f, "%s{\"lens\": \"%s\", \"slot\": %d, \"label\": \"%s\", \"layer\": %d, \"n\": %ld, \"mean\": ", k++ ? ",\n  " : "\n  ", lens_name(L), p, lab, l, ci.n);
                lens_json_num(f, ci.mean); fprintf(f, ", \"se\": "); lens_json_num(f, ci.se);
                fprintf(f, ", \"ci_low\": "); lens_json_num(f, ci.lo); fprintf(f, ", \"ci_high\": "); lens_json_num(f, ci.hi); fprintf(f, "}");
            }
    fprintf(f, "]");
    if (S->n_lens > 1) {   /* logit vs tuned on the same questions: McNemar exact and the flips */
        fprintf(f, ",\n \"lens_comparison\": [");
        for (s = 0, k = 0; s < ag->n_sets; s++)
            for (p = 0; p < P; p++)
                for (l = 0; l < L1; l++) {
                    int kk;
                    for (kk = 0; kk < n_ks; kk++) {
                        size_t c0 = lens_cell(S, 0, s, p, l), c1 = lens_cell(S, 1, s, p, l);
                        long n = 0, h0 = 0, h1 = 0, b = 0, c = 0;
                        int qi;
                        for (qi = 0; qi < S->nq; qi++) {
                            int r0 = S->rank[c0 * S->nq + qi], r1 = S->rank[c1 * S->nq + qi];
                            if (!S->done[qi] || r0 < 0 || r1 < 0) continue;
                            n++; h0 += r0 < ks[kk]; h1 += r1 < ks[kk]; b += r0 < ks[kk] && !(r1 < ks[kk]); c += r1 < ks[kk] && !(r0 < ks[kk]);
                        }
                        pos_label(&ag->ps, p, lab, sizeof lab);
                        fprintf(f, "%s{\"target\": ", k++ ? ",\n  " : "\n  "); cli_json_string(f, ag->set[s].name);
                        fprintf(f, ", \"slot\": %d, \"label\": \"%s\", \"layer\": %d, \"k\": %d, \"n\": %ld, \"logit_hits\": %ld, \"tuned_hits\": %ld, "
                                   "\"logit_only\": %ld, \"tuned_only\": %ld, \"p_mcnemar\": %.6g}", p, lab, l, ks[kk], n, h0, h1, b, c, codi_mcnemar_exact(b, c));
                    }
                }
        fprintf(f, "]");
    }
    fprintf(f, "}\n");
    if (cli_out_close(f)) { free(cb); free(db); free(fp); free(fholm); free(fbh); return -1; }
    /* the table: each lens and target set at the final residual index, top-1 and top-K */
    for (L = 0; L < S->n_lens; L++)
        for (s = 0; s < ag->n_sets; s++) {
            int kk;
            for (kk = 0; kk < 2; kk++) {
                int kv = kk ? K : 1;
                if (kk && K == 1) continue;
                printf("\n%s lens, target %s in the top-%d at residual index %d (final); chance: another question's target (%d permutations)\n",
                       lens_name(L), ag->set[s].name, kv, L1 - 1, ag->K);
                printf("%-10s %5s %8s %17s %8s %17s %8s %19s %9s %9s\n", "position", "n", "rate", "95% CI (Wilson)", "chance", "95% CI (Wilson)", "diff", "95% CI (MOVER)",
                       "p_holm", "q_bh");
                for (p = 0; p < P; p++) {
                    char c1[32], c2[32], c3[48];
                    lens_rate_of(S, L, s, p, L1 - 1, kv, cb, db, &r);
                    pos_label(&ag->ps, p, lab, sizeof lab);
                    if (r.n) snprintf(c1, sizeof c1, "%5.1f%% - %5.1f%%", 100 * r.lo, 100 * r.hi); else snprintf(c1, sizeof c1, "-");
                    if (r.chance == r.chance) snprintf(c2, sizeof c2, "%5.1f%% - %5.1f%%", 100 * r.clo, 100 * r.chi); else snprintf(c2, sizeof c2, "-");
                    if (r.diff == r.diff) snprintf(c3, sizeof c3, "%+5.1f%% - %+5.1f%%%s", 100 * r.dlo, 100 * r.dhi, r.dlo > 0 ? " >" : r.dhi < 0 ? " <" : "");
                    else snprintf(c3, sizeof c3, "-");
                    {
                        int i;
                        char ph[24] = "-", qb[24] = "-";
                        for (i = 0; i < n_ks && ks[i] != kv; i++) {}
                        fi = ((((long)L * ag->n_sets + s) * P + p) * L1 + (L1 - 1)) * n_ks + i;
                        if (i < n_ks && fholm[fi] == fholm[fi]) snprintf(ph, sizeof ph, "%.2g%s", fholm[fi], fholm[fi] < 0.05 ? " *" : "");
                        if (i < n_ks && fbh[fi] == fbh[fi]) snprintf(qb, sizeof qb, "%.2g%s", fbh[fi], fbh[fi] < 0.05 ? " +" : "");
                        printf("%-10s %5ld %7.1f%% %17s %7.1f%% %17s %+7.1f%% %19s %9s %9s\n", lab, r.n, r.n ? 100 * r.rate : 0.0, c1,
                               r.chance == r.chance ? 100 * r.chance : 0.0, c2, r.diff == r.diff ? 100 * r.diff : 0.0, c3, ph, qb);
                    }
                }
            }
        }
    printf("(> / <: the paired difference's 95%% interval lies above / below 0)\n");
    printf("rate vs chance, corrected over the family of %ld tests (every rate in %s.json with a chance control: lens x target x position x residual\n"
           "index x k in {", n_tests, prefix);
    for (k = 0; k < n_ks; k++) printf("%s%d", k ? "," : "", ks[k]);
    printf("}; exact sign test of hit - chance per question): %ld survive Holm at 5%% (* above), %ld survive Benjamini-Hochberg at q < 0.05 (+)\n", n_holm, n_bh);
    if (n_holm) {                                /* the Holm survivors, strongest first (at most 20) */
        int shown = 0;
        printf("Holm survivors (at most 20):\n%-6s %-24s %-10s %5s %4s %8s %8s %9s\n", "lens", "target", "position", "layer", "k", "rate", "chance", "p_holm");
        while (shown < 20) {
            long best = -1;
            for (fi = 0; fi < (long)S->n_lens * ag->n_sets * P * L1 * n_ks; fi++)
                if (fholm[fi] < 0.05 && (best < 0 || fholm[fi] < fholm[best])) best = fi;
            if (best < 0) break;
            {
                int kk = (int)(best % n_ks), ll = (int)(best / n_ks % L1), pp = (int)(best / n_ks / L1 % P);
                int ss = (int)(best / n_ks / L1 / P % ag->n_sets), LL = (int)(best / n_ks / L1 / P / ag->n_sets);
                lens_rate_of(S, LL, ss, pp, ll, ks[kk], cb, db, &r);
                pos_label(&ag->ps, pp, lab, sizeof lab);
                printf("%-6s %-24.24s %-10s %5d %4d %7.1f%% %7.1f%% %9.2g\n", lens_name(LL), ag->set[ss].name, lab, ll, ks[kk], 100 * r.rate, 100 * r.chance, fholm[best]);
            }
            fholm[best] = NAN; shown++;            /* shown; the table above is already printed */
        }
    }
    for (s = 0; s < ag->n_sets && S->n_lens > 1; s++) {     /* logit vs tuned, per question (the final index is the same lens) */
        int cells = 0, sig = 0, tuned_better = 0;
        for (p = 0; p < P; p++)
            for (l = 0; l < L1 - 1; l++) {
                size_t c0 = lens_cell(S, 0, s, p, l), c1 = lens_cell(S, 1, s, p, l);
                long b = 0, c = 0, n = 0;
                int qi;
                for (qi = 0; qi < S->nq; qi++) {
                    int r0 = S->rank[c0 * S->nq + qi], r1 = S->rank[c1 * S->nq + qi];
                    if (!S->done[qi] || r0 < 0 || r1 < 0) continue;
                    n++; b += r0 < K && !(r1 < K); c += r1 < K && !(r0 < K);
                }
                if (!n) continue;
                cells++;
                if (codi_mcnemar_exact(b, c) < 0.05) { sig++; tuned_better += c > b; }
            }
        printf("logit vs tuned lens, target %s in the top-%d (McNemar exact per cell, uncorrected): %d of %d (position, residual index < %d) cells differ "
               "at p < 0.05, the tuned lens ahead in %d (lens_comparison in %s.json)\n", ag->set[s].name, K, sig, cells, L1 - 1, tuned_better, prefix);
    }
    free(cb); free(db); free(fp); free(fholm); free(fbh);
    return 0;
}

/* The figures: heat maps of the answer / intermediates in the top-K (primary lens), rates by
   position at the final residual index with 95% intervals beside their chance rates (each lens),
   and the mean entropy by position with 95% intervals. */
static int lens_agg_svg(const lens_agg *ag, const lens_sum *S) {
    const char *prefix = ag->a->out, *qfile = strrchr(ag->a->questions, '/') ? strrchr(ag->a->questions, '/') + 1 : ag->a->questions;
    int P = S->P, L1 = S->L1, PL = S->n_lens - 1, K = ag->a->top_k, p, l, s, h, L, rc = 0, n_series;
    size_t TPL = (size_t)P * L1;
    double *val = (double *)malloc(sizeof(double) * TPL), *y = (double *)malloc(sizeof(double) * (size_t)P * 2 * (ag->n_sets + 2) * 3);
    double *cb = (double *)malloc(sizeof(double) * (size_t)(S->nq + 1)), *db = (double *)malloc(sizeof(double) * (size_t)(S->nq + 1));
    char **cols = (char **)calloc((size_t)P, sizeof(char *)), **rows = (char **)calloc((size_t)L1, sizeof(char *)), **txt = (char **)calloc(TPL, sizeof(char *));
    char title[512], sub[512], path[4096], (*names)[160] = (char (*)[160])calloc((size_t)2 * (ag->n_sets + 2), 160);
    const char **np = (const char **)calloc((size_t)2 * (ag->n_sets + 2), sizeof(char *));
    int *colour = (int *)calloc((size_t)2 * (ag->n_sets + 2), sizeof(int)), *style = (int *)calloc((size_t)2 * (ag->n_sets + 2), sizeof(int));
    lens_rate r;
    if (!val || !y || !cb || !db || !cols || !rows || !txt || !names || !np || !colour || !style) rc = -1;
    for (p = 0; !rc && p < P; p++) { cols[p] = (char *)malloc(32); if (cols[p]) pos_label(&ag->ps, p, cols[p], 32); else rc = -1; }
    for (l = 0; !rc && l < L1; l++) {
        rows[L1 - 1 - l] = (char *)malloc(24);
        if (rows[L1 - 1 - l]) snprintf(rows[L1 - 1 - l], 24, "%s %d", l == L1 - 1 ? "final" : "layer", l); else rc = -1;
    }
    for (h = 0; h < 2 && !rc; h++) {
        svg_heatmap_spec hs;
        int set = lens_set_index(ag, h ? "intermediates" : "answer");
        long n = 0;
        if (set < 0) continue;
        for (l = 0; l < L1; l++)
            for (p = 0; p < P; p++) {
                size_t o = (size_t)(L1 - 1 - l) * P + p;
                lens_rate_of(S, PL, set, p, l, K, cb, db, &r);
                val[o] = r.rate;
                if (r.n > n) n = r.n;
                free(txt[o]);
                if ((txt[o] = (char *)malloc(32)) != NULL) {
                    if (r.rate != r.rate) txt[o][0] = 0;
                    else if (r.chance == r.chance) snprintf(txt[o], 32, "%.0f%% | %.0f%%", 100 * r.rate, 100 * r.chance);
                    else snprintf(txt[o], 32, "%.0f%%", 100 * r.rate);
                }
            }
        memset(&hs, 0, sizeof hs);
        hs.rows = L1; hs.cols = P; hs.value = val; hs.vmin = 0; hs.vmax = 1; hs.colormap = SVG_VIRIDIS;
        hs.cell_text = (const char *const *)txt; hs.row_labels = (const char *const *)rows; hs.col_labels = (const char *const *)cols;
        snprintf(title, sizeof title, "%s in the %s lens top-%d (n = %ld questions of %s; cells: rate | chance)", h ? "an intermediate result" : "the final answer",
                 lens_name(PL), K, n, qfile);
        hs.title = title; hs.xlabel = "position"; hs.ylabel = "residual index"; hs.colorbar_label = "fraction of questions";
        hs.cell_w = 84; hs.cell_h = 22;
        snprintf(path, sizeof path, "%s_%s_heat.svg", prefix, h ? "intermediate" : "answer");
        rc = svg_heatmap(path, &hs);
    }
    for (L = 0; L < S->n_lens && !rc; L++) {     /* rates with intervals and chance: PREFIX_lines.svg (primary), PREFIX_logit_lines.svg */
        svg_interval_spec is;
        long n_min = -1, n_max = 0;
        double *lo, *hi;
        n_series = 0;
        for (s = 0; s < ag->n_sets; s++) {
            int c;
            for (c = 0; c < 1 + ag->set[s].chance; c++) {
                double *yy = y + (size_t)n_series * P, *ll = y + (size_t)(2 * (ag->n_sets + 2) + n_series) * P, *hh = y + (size_t)(4 * (ag->n_sets + 2) + n_series) * P;
                for (p = 0; p < P; p++) {
                    lens_rate_of(S, L, s, p, L1 - 1, K, cb, db, &r);
                    yy[p] = c ? r.chance : r.rate; ll[p] = c ? r.clo : r.lo; hh[p] = c ? r.chi : r.hi;
                    if (!c && r.n) { if (n_min < 0 || r.n < n_min) n_min = r.n; if (r.n > n_max) n_max = r.n; }
                }
                snprintf(names[n_series], 160, "%.120s%s%s", ag->set[s].name, ag->set[s].n_multi && !ag->skip_multi ? " (first tokens)" : "", c ? " (chance)" : "");
                np[n_series] = names[n_series]; colour[n_series] = s; style[n_series] = c;
                n_series++;
            }
        }
        lo = y + (size_t)(2 * (ag->n_sets + 2)) * P; hi = y + (size_t)(4 * (ag->n_sets + 2)) * P;
        memset(&is, 0, sizeof is);
        is.n_series = n_series; is.n_points = P; is.y = y; is.lo = lo; is.hi = hi; is.colour = colour; is.style = style; is.names = np;
        is.x_labels = (const char *const *)cols; is.zero_based = 1; is.percent = 1; is.ymax_cap = 1;
        snprintf(title, sizeof title, "%s lens: target in the top-%d at the final residual index", lens_name(L), K);
        if (n_min == n_max) snprintf(sub, sizeof sub, "n = %ld questions of %s; dashed: chance (another question's target, %d permutations); 95%% intervals", n_max, qfile, ag->K);
        else snprintf(sub, sizeof sub, "n = %ld..%ld questions of %s (per target); dashed: chance (another question's target, %d permutations); 95%% intervals", n_min, n_max, qfile, ag->K);
        is.title = title; is.subtitle = sub; is.xlabel = "position"; is.ylabel = "questions with the target in the top-k";
        snprintf(path, sizeof path, L == PL ? "%s_lines.svg" : "%s_logit_lines.svg", prefix);
        rc = svg_intervals(path, &is);
    }
    if (!rc) {                                  /* entropy by position, final residual index */
        svg_interval_spec is;
        long n = 0;
        double *lo = y + (size_t)2 * P, *hi = y + (size_t)4 * P;
        for (L = 0; L < S->n_lens; L++) {
            for (p = 0; p < P; p++) {
                codi_mean_ci ci;
                lens_entropy_of(S, L, p, L1 - 1, cb, &ci);
                y[(size_t)L * P + p] = ci.mean; lo[(size_t)L * P + p] = ci.lo; hi[(size_t)L * P + p] = ci.hi;
                if (ci.n > n) n = ci.n;
            }
            snprintf(names[L], 160, "%s lens", lens_name(L)); np[L] = names[L]; colour[L] = L; style[L] = 0;
        }
        memset(&is, 0, sizeof is);
        is.n_series = S->n_lens; is.n_points = P; is.y = y; is.lo = lo; is.hi = hi; is.colour = colour; is.style = style; is.names = np;
        is.x_labels = (const char *const *)cols; is.zero_based = 1;
        snprintf(title, sizeof title, "lens entropy at the final residual index by position");
        snprintf(sub, sizeof sub, "n = %ld questions of %s; mean with a t 95%% interval", n, qfile);
        is.title = title; is.subtitle = sub; is.xlabel = "position"; is.ylabel = "mean entropy (nats)";
        snprintf(path, sizeof path, "%s_entropy.svg", prefix);
        rc = svg_intervals(path, &is);
    }
    for (p = 0; cols && p < P; p++) free(cols[p]);
    for (l = 0; rows && l < L1; l++) free(rows[l]);
    for (p = 0; txt && p < (int)TPL; p++) free(txt[p]);
    free(val); free(y); free(cb); free(db); free(cols); free(rows); free(txt); free(names); free(np); free(colour); free(style);
    if (rc) fprintf(stderr, "codi lens: cannot write the SVG files at %s\n", prefix);
    return rc;
}

static void lens_agg_free(lens_agg *ag) {
    int i, s;
    for (i = 0; i < ag->nq; i++) {
        for (s = 0; s < ag->n_sets && ag->q[i].t; s++) free(ag->q[i].t[s].ids);
        free(ag->q[i].t); free(ag->q[i].question);
    }
    for (s = 0; s < ag->n_sets; s++) {
        for (i = 0; i < ag->set[s].n_file_rows; i++) codi_json_free(ag->set[s].file_roots[i]);
        free(ag->set[s].file_rows); free(ag->set[s].file_roots);
    }
    free(ag->q); free(ag->donor); free(ag->logits); free(ag->tmp);
}

/* The question loop: the questions not yet in the rows file run through the batched runner; each
   run's rows are made from its final state as it ends and go to the file in question order (rows
   of a question that ends before an earlier one wait in its buffer), flushed per question. */
typedef struct {
    lens_agg *ag;
    const unsigned char *done;  /* [nq] already in the rows file */
    lens_sb *qb;                /* [nq] rows waiting for an earlier question */
    unsigned char *ready;       /* [nq] qb holds the question's rows */
    int next;                   /* the next question to write */
    int *rank, *crank;
    double *prob, *ent;
    cli_progress *pr;
    long written;
} lens_loop;

/* Writes the waiting rows from question lp->next on, in order; 0, or -1 after a message. */
static int lens_loop_write(lens_loop *lp) {
    lens_agg *ag = lp->ag;
    for (; lp->next < ag->nq && (lp->done[lp->next] || lp->ready[lp->next]); lp->next++) {
        lens_sb *b = &lp->qb[lp->next];
        if (lp->done[lp->next]) continue;
        if (fwrite(b->p, 1, b->n, ag->rows) != b->n || fflush(ag->rows)) { fprintf(stderr, "codi lens: cannot write %s\n", ag->a->rows); return -1; }
        free(b->p); memset(b, 0, sizeof *b);
        cli_progress_update(lp->pr, ++lp->written);
    }
    return 0;
}

/* A run ended: its rows into its question's buffer, then every row that is due to the file. */
static int lens_loop_done(void *user, const codi_batch_result *r) {
    lens_loop *lp = (lens_loop *)user;
    lens_agg *ag = lp->ag;
    int qi = (int)(intptr_t)r->user;
    if (r->status) { fprintf(stderr, "codi lens: %s:%d: %s\n", ag->a->questions, ag->q[qi].line, r->error); ag->failed = 1; return 1; }
    if (lens_question_rows(ag, qi, r->state, r->result, lp->rank, lp->prob, lp->crank, lp->ent, &lp->qb[qi])) {
        if (lp->qb[qi].bad) fprintf(stderr, "codi lens: out of memory\n");
        ag->failed = 1; return 1;
    }
    lp->ready[qi] = 1;
    if (lens_loop_write(lp)) { ag->failed = 1; return 1; }
    return 0;
}

/* Runs every question not in done, batch at a time; 0, or -1 after a message (ag->failed set). */
static int lens_loop_run(lens_loop *lp, int batch) {
    lens_agg *ag = lp->ag;
    const codi_model *m = ag->m;
    int32_t **ids = (int32_t **)calloc((size_t)ag->nq, sizeof *ids);
    int *n = (int *)calloc((size_t)ag->nq, sizeof *n), qi, max_n = 0, todo = 0, rc = -1;
    codi_batch *b = NULL;
    lp->qb = (lens_sb *)calloc((size_t)ag->nq, sizeof *lp->qb);
    lp->ready = (unsigned char *)calloc((size_t)ag->nq, 1);
    if (!ids || !n || !lp->qb || !lp->ready) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
    for (qi = 0; qi < ag->nq; qi++) {          /* the prompts first: the runs' length is the longest */
        cli_prompt_args pa = ag->a->pa;
        int32_t buf[4096];
        if (lp->done[qi]) continue;
        pa.question = ag->q[qi].question; pa.ids = NULL;
        if ((n[qi] = cli_prompt_ids(&pa, m, ag->t, buf, 4096)) < 0) { fprintf(stderr, "codi lens: %s:%d: cannot make the prompt\n", ag->a->questions, ag->q[qi].line); goto done; }
        if (!(ids[qi] = (int32_t *)malloc(sizeof(int32_t) * (size_t)n[qi]))) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
        memcpy(ids[qi], buf, sizeof(int32_t) * (size_t)n[qi]);
        if (n[qi] > max_n) max_n = n[qi];
        todo++;
    }
    fprintf(stderr, "codi lens: %d questions to run on %d threads, batch %d\n", todo, ag->a->ma.threads, batch);
    if (!todo) { rc = 0; goto done; }
    if (!(b = codi_batch_new(m, todo < batch ? todo : batch, max_n + ag->ps.n_latent + ag->a->max_answer + 2, ag->a->ma.threads))) {
        fprintf(stderr, "codi lens: out of memory\n"); goto done;
    }
    for (qi = 0;;) {
        while (qi < ag->nq && codi_batch_pending(b) < 2 * batch) {    /* keep a batch's worth queued */
            codi_batch_request rq;
            if (lp->done[qi]) { qi++; continue; }
            memset(&rq, 0, sizeof rq);
            rq.ids = ids[qi]; rq.n_ids = n[qi];
            rq.opts = codi_run_opts_default(m);
            rq.opts.n_latent = ag->ps.n_latent; rq.opts.max_answer = ag->a->max_answer;
            rq.user = (void *)(intptr_t)qi;
            if (codi_batch_submit(b, &rq)) { fprintf(stderr, "codi lens: %s:%d: %s\n", ag->a->questions, ag->q[qi].line, codi_batch_error(b)); goto done; }
            free(ids[qi]); ids[qi] = NULL;   /* copied */
            qi++;
        }
        if (!codi_batch_pending(b)) break;
        if (codi_batch_step(b, lens_loop_done, lp) < 0) {
            if (!ag->failed) fprintf(stderr, "codi lens: %s\n", codi_batch_error(b));
            goto done;
        }
    }
    rc = 0;
done:
    if (rc) ag->failed = 1;
    for (qi = 0; qi < ag->nq; qi++) { if (ids) free(ids[qi]); if (lp->qb) free(lp->qb[qi].p); }
    free(ids); free(n); free(lp->qb); free(lp->ready); lp->qb = NULL; lp->ready = NULL;
    codi_batch_free(b);
    return rc;
}

static int lens_aggregate(const lens_args *a, const codi_model *m, const codi_tokenizer *t, const codi_tuned_lens *tl, pos_spec *ps) {
    lens_agg ag;
    lens_sum S;
    lens_sb hb;
    int n_bad = 0, rc = 1, qi, s, *rank = NULL, *crank = NULL;
    double *prob = NULL, *ent = NULL;
    long good = 0, before = 0;
    memset(&ag, 0, sizeof ag); memset(&S, 0, sizeof S); memset(&hb, 0, sizeof hb);
    ag.a = a; ag.m = m; ag.t = t; ag.tl = tl; ag.ps = *ps;
    ag.K = a->chance_permutations; ag.skip_multi = !strcmp(a->multi_token, "skip");
    ag.n_lens = tl ? 2 : 1; ag.L1 = m->config.n_layers + 1;
    pos_size(&ag.ps, 0, a->max_answer);
    ag.P = ag.ps.n;
    if (ag.ps.mode == POS_PROMPT || ag.ps.mode == POS_ALL) { fprintf(stderr, "codi lens: aggregate mode takes --positions latents, answer or a list\n"); return 2; }
    if (lens_parse_sets(&ag)) { lens_agg_free(&ag); return 2; }
    if (!ag.n_sets) { fprintf(stderr, "codi lens: no target sets (--targets / --tokens)\n"); return 2; }
    if (cli_for_each_question(a->questions, a->limit, 0, 1, lens_collect, &ag, &n_bad)) goto done;
    if (!ag.nq) { fprintf(stderr, "codi lens: no questions read from %s\n", a->questions); goto done; }
    for (s = 0; s < ag.n_sets; s++) {
        const lens_tset *ts = &ag.set[s];
        if (ts->n_multi)
            fprintf(stderr, "codi lens: warning: target %s: %ld of %ld items are several tokens in this tokenizer: %s (%ld questions left without the target)\n",
                    ts->name, ts->n_multi, ts->n_items, ag.skip_multi ? "left out (--multi-token skip)" : "counted by their first token (--multi-token first)", ts->n_skipped);
        if (!ts->n_q) fprintf(stderr, "codi lens: note: target %s: no question has it; its rates are null\n", ts->name);
    }
    if (lens_make_donors(&ag)) goto done;
    ag.logits = (float *)malloc(sizeof(float) * (size_t)m->config.vocab);
    ag.tmp = (float *)malloc(sizeof(float) * (size_t)m->config.dim);
    rank = (int *)malloc(sizeof(int) * (size_t)ag.n_sets * ag.L1);
    prob = (double *)malloc(sizeof(double) * (size_t)ag.n_sets * ag.L1);
    crank = (int *)malloc(sizeof(int) * (size_t)ag.n_sets * ag.L1 * (size_t)(ag.K ? ag.K : 1));
    ent = (double *)malloc(sizeof(double) * (size_t)ag.L1);
    if (!ag.logits || !ag.tmp || !rank || !prob || !crank || !ent || lens_sum_alloc(&S, &ag)) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
    /* the rows file: resume it when its settings match; drop the lines of a question cut short */
    lens_rows_header(&ag, &hb);
    if (hb.bad) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
    {
        int r = lens_rows_read(&ag, a->rows, hb.p, &S, &good);
        if (r < 0) goto done;
        for (qi = 0; qi < ag.nq; qi++) before += S.done[qi];
        if (r == 0 && truncate(a->rows, good) != 0) { fprintf(stderr, "codi lens: cannot truncate %s\n", a->rows); goto done; }
        if (!(ag.rows = fopen(a->rows, "a"))) { fprintf(stderr, "codi lens: cannot write %s\n", a->rows); goto done; }
        if ((r == 1 || !good) && (fputs(hb.p, ag.rows) < 0 || cli_out_flush(ag.rows, a->rows))) goto done;
        if (before) fprintf(stderr, "codi lens: resuming %s: %ld of %d questions already there\n", a->rows, before, ag.nq);
    }
    {
        lens_loop lp;
        memset(&lp, 0, sizeof lp);
        lp.ag = &ag; lp.done = S.done; lp.rank = rank; lp.prob = prob; lp.crank = crank; lp.ent = ent; lp.written = before;
        lp.pr = cli_progress_start("lens", ag.nq, before);
        lens_loop_run(&lp, a->batch);
        cli_progress_end(lp.pr);
    }
    if (fclose(ag.rows)) { fprintf(stderr, "codi lens: error writing %s: %s\n", a->rows, strerror(errno)); ag.failed = 1; }
    ag.rows = NULL;
    if (ag.failed) goto done;
    /* the summary, from the rows file alone */
    lens_sum_free(&S);
    if (lens_sum_alloc(&S, &ag) || lens_rows_read(&ag, a->rows, hb.p, &S, &good) != 0) goto done;
    if (lens_agg_write(&ag, &S) || lens_agg_svg(&ag, &S)) goto done;
    printf("%d questions (%d correct, %d malformed lines skipped): %s (rows), %s.csv, %s_rates.csv, %s.json, %s_answer_heat.svg, %s_intermediate_heat.svg, %s_lines.svg%s, %s_entropy.svg\n",
           S.n_done, S.n_correct, n_bad, a->rows, a->out, a->out, a->out, a->out, a->out, a->out, tl ? " (+ _logit_lines.svg)" : "", a->out);
    rc = 0;
done:
    if (ag.rows) fclose(ag.rows);
    lens_sum_free(&S); lens_agg_free(&ag);
    free(hb.p); free(rank); free(prob); free(crank); free(ent);
    return rc;
}

/* With --sprint-index, latentK in a list means the sprint's 0-based latent K (our latent K+1). */
static int lens_sprint_index(const char *cmd, pos_spec *ps) {
    int i;
    for (i = 0; ps->mode == POS_LIST && i < ps->n; i++)
        if (ps->slot[i].kind == POS_LATENT && ++ps->slot[i].k > ps->n_latent) {
            fprintf(stderr, "codi %s: 0-based latent %d does not exist with %d latents\n", cmd, ps->slot[i].k - 1, ps->n_latent);
            return -1;
        }
    return 0;
}

static int lens_run(const cli_command *self, int argc, char **argv) {
    lens_args a;
    codi_model *m = NULL;
    codi_tokenizer *t = NULL;
    codi_tuned_lens *tl = NULL;
    codi_state *s = NULL;
    pos_spec ps;
    lens_grid g;
    float *logits = NULL, *tmp = NULL;
    int32_t ids[4096], tid[2];
    char err[512], answer[4096];
    int rc, n, ntid = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&a.ma), CLI_PROMPT_OPTS(&a.pa),
        { "--tuned", CLI_STR, &a.tuned, 0, 0, "DIR|FILE", "tuned lens: a tuned-lens directory (params.pt + config.json), a params.pt or our .safetensors (default: the logit lens)" },
        { "--positions", CLI_STR, &a.positions, 0, 0, "SPEC", "latents (bot + latent 1..N, default), answer, prompt, all, or a list: bot,latent3,answer1,prompt0,17" },
        { "--top-k", CLI_INT, &a.top_k, 1, LENS_KMAX, "K", "top-k kept per cell and used for target marks (default 5; aggregate mode: the k of its pictures, default 10)" },
        { "--target", CLI_STR, &a.target, 0, 0, "N|TOKEN", "mark cells whose top-k holds this number (its number tokens) or token; --json adds its rank and probability per cell" },
        { "--json", CLI_FLAG, &a.json, 0, 0, NULL, "print one JSON object instead of the table" },
        { "--svg", CLI_STR, &a.svg, 0, 0, "FILE", "also draw the table as an SVG heatmap" },
        { "--color", CLI_STR, &a.color, 0, 0, "prob|entropy", "what the SVG colours encode (default prob: the top-1 probability)" },
        CLI_MAX_ANSWER_OPT(&a.max_answer, 0, 32),
        { "--questions", CLI_STR, &a.questions, 0, 0, "FILE.jsonl", "aggregate mode: detection metrics over every question (question, answer, cot or steps fields)" },
        { "--limit", CLI_INT, &a.limit, 0, 1e9, "N", "aggregate mode: first N questions only (default all)" },
        { "--out", CLI_STR, &a.out, 0, 0, "PREFIX", "aggregate mode: write PREFIX.csv, .json and SVG plots (default lens_metrics)" },
        { "--tokens", CLI_STR, &a.tokens, 0, 0, "T1,T2", "aggregate mode: also count these token texts in the top-k (target sets token:T; no chance control)" },
        { "--targets", CLI_STR, &a.targets, 0, 0, "LIST", "aggregate mode: target sets answer,intermediates,approx,field:NAME,file:T.jsonl (default answer,intermediates,approx)" },
        { "--approx-pct", CLI_DOUBLE, &a.approx_pct, 0, 1000, "X", "aggregate mode: approx = integers within +-X% of the answer (default 10) and the --relations" },
        { "--relations", CLI_STR, &a.relations, 0, 0, "LIST", "aggregate mode: approx also holds these of the answer x: Kx, x*K, x/K, x+K, x-K (default 2x,x/2,10x,x/10)" },
        { "--chance-permutations", CLI_INT, &a.chance_permutations, 0, LENS_MAX_PERM, "K", "aggregate mode: shuffled-answer controls, permutations without fixed points (default 5)" },
        { "--seed", CLI_INT, &a.seed, 0, 2147483647, "S", "aggregate mode: seed of the permutations (default 1)" },
        { "--multi-token", CLI_STR, &a.multi_token, 0, 0, "first|skip", "a target of several tokens: count its first token with a warning (default) or leave it out" },
        { "--rows", CLI_STR, &a.rows, 0, 0, "FILE.jsonl", "aggregate mode: per-question rows, flushed per question, resumed (default PREFIX_rows.jsonl)" },
        { "--batch", CLI_INT, &a.batch, 1, 1024, "N", "aggregate mode: runs advanced together through one pass over the weights (codi_batch_*) on --threads; "
          "1: codi_run's results bit for bit; default " CLI_QUOTE(CLI_BATCH_DEFAULT) },
        { "--sprint-norm", CLI_FLAG, &a.sprint_norm, 0, 0, NULL, "reproduce the Latent Reasoning Sprint's code: final norm applied twice at the last residual index" },
        { "--sprint-index", CLI_FLAG, &a.sprint_index, 0, 0, NULL, "read latentK in --positions 0-based, as the sprint's code does (latent0 = our latent 1)" },
        CLI_FORCE_OPT(&a.force),
        CLI_END };
    memset(&a, 0, sizeof a);
    a.ma = cli_model_defaults(); a.pa = cli_prompt_defaults();
    a.positions = "latents"; a.top_k = 0; a.max_answer = 32; a.out = "lens_metrics";
    a.targets = "answer,intermediates,approx"; a.relations = "2x,x/2,10x,x/10"; a.multi_token = "first";
    a.approx_pct = 10; a.chance_permutations = 5; a.seed = 1; a.batch = CLI_BATCH_DEFAULT;
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (strcmp(a.multi_token, "first") && strcmp(a.multi_token, "skip")) { fprintf(stderr, "codi lens: --multi-token is first or skip, not '%s'\n", a.multi_token); return 2; }
    if (!a.rows) { snprintf(a.rows_default, sizeof a.rows_default, "%s_rows.jsonl", a.out); a.rows = a.rows_default; }
    if (cli_check_args(self, &a.ma, &a.pa)) return 2;
    if (!a.questions && !a.pa.question && !a.pa.ids) { fprintf(stderr, "codi lens: give --question TEXT, --ids 1,2,3 or --questions FILE.jsonl\n"); return 2; }
    if (!a.top_k) a.top_k = a.questions ? 10 : 5;
    if (a.color && strcmp(a.color, "prob") && strcmp(a.color, "entropy")) { fprintf(stderr, "codi lens: --color is prob or entropy\n"); return 2; }
    if (pos_parse("lens", a.positions, a.pa.latents, &ps) || (a.sprint_index && lens_sprint_index("lens", &ps))
        || pos_check("lens", &ps, -1, a.max_answer)) return 2;
    {
        const char *in[] = { a.ma.model, a.ma.base, a.ma.tokenizer, a.tuned, a.questions };
        char path[4200];
        const char *sfx[] = { ".csv", "_rates.csv", ".json" };
        int i;
        if (a.svg && cli_out_check("lens", a.svg, CLI_OUT_STREAM, a.force, in, CLI_N(in))) return 2;
        if (a.questions && cli_out_check("lens", a.rows, CLI_OUT_RESUME, a.force, in, CLI_N(in))) return 2;
        for (i = 0; a.questions && i < CLI_N(sfx); i++) {   /* the summary is rewritten from the resumed rows */
            snprintf(path, sizeof path, "%s%s", a.out, sfx[i]);
            if (cli_out_check("lens", path, CLI_OUT_RESUME | CLI_OUT_STREAM, a.force, in, CLI_N(in))) return 2;
        }
    }
    if (!(m = cli_load_model(&a.ma))) return 1;
    rc = 1;
    t = cli_load_tokenizer(&a.ma, m, !a.pa.question && !a.questions && !a.target);
    if ((a.pa.question || a.questions || a.target) && !t) goto done;
    if (a.tuned && !(tl = codi_tuned_lens_load(m, a.tuned, err, sizeof err))) { fprintf(stderr, "codi lens: %s\n", err); goto done; }
    if (a.questions) { rc = lens_aggregate(&a, m, t, tl, &ps); goto done; }
    if (a.target && (ntid = lens_target_ids(t, a.target, !strcmp(a.multi_token, "skip"), tid, &a.target_tokens)) < 1) {
        if (ntid == -1) fprintf(stderr, "codi lens: --target %s has no token\n", a.target);
        rc = 2; goto done;
    }
    if ((n = cli_prompt_ids(&a.pa, m, t, ids, 4096)) < 0) { rc = 2; goto done; }
    {
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        int L1 = m->config.n_layers + 1;
        ro.n_latent = a.pa.latents; ro.max_answer = a.max_answer;
        if (pos_check("lens", &ps, n, a.max_answer)) { rc = 2; goto done; }
        pos_size(&ps, n, a.max_answer);
        if (!(s = codi_state_new(m, n + a.pa.latents + a.max_answer + 2, a.ma.threads)) ||
            !(logits = (float *)malloc(sizeof(float) * (size_t)m->config.vocab)) || !(tmp = (float *)malloc(sizeof(float) * (size_t)m->config.dim)) ||
            lens_grid_alloc(&g, ps.n, L1, a.top_k)) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
        g.tid = tid; g.ntid = ntid;
        if (codi_run(m, s, ids, n, &ro, &rr)) { fprintf(stderr, "codi lens: %s\n", s->error); lens_grid_free(&g); goto done; }
        answer[0] = 0;
        if (t) codi_decode(t, rr.answer, rr.n_answer, 1, answer, sizeof answer);
        if (lens_read(m, s, tl, &ps, rr.prompt_len, rr.n_answer, a.sprint_norm, &g, logits, tmp)) { lens_grid_free(&g); goto done; }
        if (a.json) lens_print_json(&a, t, &ps, &g, t ? answer : NULL, tid, ntid);
        else {
            if (t) printf("answer: %s\n", answer);
            lens_print_table(t, &ps, &g, tid, ntid, tl ? "tuned lens" : "logit lens");
        }
        rc = 0;
        if (a.svg) rc = lens_write_svg(&a, t, &ps, &g, tid, ntid, log((double)m->config.vocab)) ? 1 : 0;
        lens_grid_free(&g);
    }
done:
    free(logits); free(tmp);
    codi_state_free(s); codi_tuned_lens_free(tl); codi_tokenizer_free(t); codi_model_free(m);
    return rc;
}

static const cli_command cmd_lens = {
    "lens", "read the latent chain through the logit lens or a tuned lens (table, JSON, SVG; metrics over a question file)",
    "codi lens --model PATH (--question TEXT | --ids 1,2,3 | --questions FILE.jsonl) [options]",
    "Runs a CODI question and reads the residual stream entering every layer (0..L; L = the last\n"
    "layer's output, what the model itself decodes) at bot and each latent (or --positions)\n"
    "through lm_head(final_norm(h)) (the logit lens) or lm_head(final_norm(h + W h + b)) (--tuned).\n"
    "Prints the top-1 token and probability per cell and the entropy; --json gives the top-k ids,\n"
    "probabilities and tokens, --svg a heatmap. A --target of several tokens is warned about and counted\n"
    "by its first token (--multi-token first) or refused (skip).\n"
    "With --questions, per (position, residual index) the fraction of questions whose target is in the\n"
    "top-k (k = 1..10) with its Wilson 95% interval and n, beside a chance rate: each question's target\n"
    "replaced by another question's (--chance-permutations K seeded permutations without fixed points;\n"
    "Wilson interval, one draw per question) and the paired difference rate - chance (mean of the\n"
    "per-question differences; Newcombe's MOVER 95% interval). Each rate with a chance control is\n"
    "tested against it (exact sign test of the per-question hit - chance: p_chance) and corrected over\n"
    "the family of all such rates in the JSON (lens x target x position x residual index x k in\n"
    "{1,5,10,--top-k}): p_holm (Holm), q_bh (Benjamini-Hochberg); the summary gives the number of tests\n"
    "and the survivors (the JSON's family; * and + in the tables). Target sets (--targets): answer;\n"
    "intermediates (cot <<a*b=c>> results, steps, or x + y / x - y of codi gen-templates' questions);\n"
    "approx (integers within --approx-pct % of the answer and the --relations, e.g. 720 and\n"
    "180 for 360; the answer's tokens left out); field:NAME (numbers or token texts of a field);\n"
    "file:T.jsonl ({\"index\": I, \"targets\": [...]} per question); --tokens adds token:TEXT sets (no\n"
    "chance). A number counts by its first token (codi_number_tokens); multi-token targets are counted\n"
    "and warned about (stderr, JSON) and follow --multi-token. Mean entropies have t 95% intervals. With\n"
    "--tuned, both lenses run and are compared per question (McNemar exact, flips). Every (question,\n"
    "lens, position, target set) is one line of --rows (ranks over the vocabulary at every residual\n"
    "index, probabilities, chance ranks and donors), written as each question ends; a killed run\n"
    "resumes and the summary is recomputed from the rows: PREFIX.json (rates, entropy, targets,\n"
    "lens_comparison, the older grids), PREFIX_rates.csv, PREFIX.csv, and SVG figures (rates with\n"
    "error bars beside chance bands, entropies, heat maps of rate | chance). Prints the rates at the\n"
    "final residual index for k = 1 and --top-k.\n"
    "The questions go through the batched runner: --batch N runs advance together, one pass over the\n"
    "weights per step, on --threads; rows still go to --rows in question order. --batch 1 gives\n"
    "codi_run's rows bit for bit; batched products sum in another order, so entropies and probabilities\n"
    "agree within ~1e-5, and ranks (so rates) can change only at near ties (tests/test_batch_runners.sh).\n"
    "Examples:\n"
    "  codi lens --model models/codi-nano/codi_nano.bin --question \"Tom has 3 bags with 4 apples each. How many apples?\" --target 12\n"
    "  codi lens --model M --question Q --tuned lens_dir --json\n"
    "  codi lens --model M --question Q --svg lens.svg --color entropy\n"
    "  codi lens --model M --questions data/gsm8k/test.jsonl --limit 200 --tokens Therefore --out gsm8k_lens\n"
    "  codi lens --model M --questions Q.jsonl --targets answer,approx,field:x --approx-pct 5 --relations 2x,x/2 --out q",
    lens_run };
