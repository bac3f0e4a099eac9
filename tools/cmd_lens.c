/* codi lens: read the residual stream of a CODI run through the logit lens or a tuned lens,
   layer by layer at chosen positions (bot and the latents by default): a table, JSON, an SVG
   heatmap; over a question file, the Latent Reasoning Sprint's detection metrics. */
#include "positions.h"
#include "svg.h"

#define LENS_KMAX 10     /* top-k kept per cell (metrics use k = 1..10) */

typedef struct {
    cli_model_args ma;
    cli_prompt_args pa;
    const char *tuned, *positions, *svg, *color, *questions, *out, *tokens, *target;
    int top_k, json, max_answer, limit, sprint_norm, sprint_index;
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

/* Ids for a target: a number (its number tokens) or a token text; count or -1. */
static int lens_target_ids(const codi_tokenizer *t, const char *target, int32_t *ids) {
    char *end;
    double v = strtod(target, &end);
    if (*target && !*end) return codi_number_tokens(t, v, ids);
    if ((ids[0] = codi_token_id(t, target, strlen(target))) >= 0) return 1;
    return codi_encode(t, target, strlen(target), 0, 0, ids, 1) >= 1 ? 1 : -1;
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

/* ---- aggregate mode: the sprint's metrics over a question file ---- */

#define LENS_MAX_NUMS 64
#define LENS_MAX_TOKS 16

typedef struct {
    const lens_args *a;
    const codi_model *m;
    const codi_tokenizer *t;
    const codi_tuned_lens *tl;
    codi_state *s;
    pos_spec ps;
    lens_grid g;
    float *logits, *tmp;
    int n_tok; int32_t tok_ids[LENS_MAX_TOKS]; char tok_text[LENS_MAX_TOKS][64];
    /* sums over questions, per (slot, layer): */
    double *ans_hit;       /* [P, L1, 10]: answer in top-(k+1) */
    double *inter_hit;     /* [P, L1, 10]: any intermediate result in top-(k+1) */
    double *tok_hit;       /* [n_tok, P, L1, 10] */
    double *ent_sum;       /* [P, L1] */
    double *n_cell;        /* [P, L1] questions with that slot */
    double *n_inter_cell;  /* [P, L1] questions with intermediates and that slot */
    double *n_ans_cell;    /* [P, L1] questions with a gold answer and that slot */
    int n_questions, n_correct, failed;
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
   element of each [a, op, b, result] in steps; the final answer itself is left out. */
static int lens_intermediates(const cli_question *q, double *out, int cap) {
    const codi__json *cot = codi__json_get(q->obj, "cot"), *steps = codi__json_get(q->obj, "steps"), *st;
    double v[LENS_MAX_NUMS];
    int n = 0, i, k = 0;
    if (!cot || cot->type != CODI__J_STR) cot = codi__json_get(q->obj, "answer");
    if (cot && cot->type == CODI__J_STR) n = lens_cot_numbers(cot->str, v, LENS_MAX_NUMS);
    else if (steps && steps->type == CODI__J_ARR)
        for (st = steps->child; st && n < LENS_MAX_NUMS; st = st->next) {
            const codi__json *x = st->type == CODI__J_ARR ? st->child : NULL;
            while (x && x->next) x = x->next;
            if (x && x->type == CODI__J_NUM) v[n++] = x->num;
        }
    for (i = 0; i < n && k < cap; i++) if (!(q->has_gold && v[i] == q->gold)) out[k++] = v[i];
    return k;
}

static int lens_agg_question(void *user, const cli_question *q) {
    lens_agg *ag = (lens_agg *)user;
    const codi_model *m = ag->m;
    int32_t ids[4096], ans_ids[2], inter_ids[2 * LENS_MAX_NUMS];
    double inter[LENS_MAX_NUMS], pred;
    char text[4096];
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    cli_prompt_args pa = ag->a->pa;
    int n, n_ans = 0, n_inter = 0, n_iv, i, p, l, k, T0;
    if (!q->question) { fprintf(stderr, "codi lens: %s line %d has no \"question\"; skipped\n", ag->a->questions, q->line); return 0; }
    pa.question = q->question; pa.ids = NULL;
    if ((n = cli_prompt_ids(&pa, m, ag->t, ids, 4096)) < 0) return 0;
    ro.n_latent = ag->ps.n_latent; ro.max_answer = ag->a->max_answer;
    if (!ag->s || ag->s->max_pos < n + ro.n_latent + ro.max_answer + 1) {   /* as long as the longest question so far */
        codi_state_free(ag->s);
        if (!(ag->s = codi_state_alloc(m, n + ro.n_latent + ro.max_answer + 64, ag->a->ma.threads))) { fprintf(stderr, "codi lens: out of memory\n"); ag->failed = 1; return 1; }
    }
    if (codi_run(m, ag->s, ids, n, &ro, &rr)) { fprintf(stderr, "codi lens: %s\n", ag->s->error); ag->failed = 1; return 1; }
    T0 = rr.prompt_len;
    if (lens_read(m, ag->s, ag->tl, &ag->ps, T0, rr.n_answer, ag->a->sprint_norm, &ag->g, ag->logits, ag->tmp)) { ag->failed = 1; return 1; }
    if (q->has_gold && (n_ans = codi_number_tokens(ag->t, q->gold, ans_ids)) < 0) n_ans = 0;
    n_iv = lens_intermediates(q, inter, LENS_MAX_NUMS);
    for (i = 0; i < n_iv; i++) {
        int c = codi_number_tokens(ag->t, inter[i], inter_ids + n_inter);
        if (c > 0) n_inter += c;
    }
    codi_decode(ag->t, rr.answer, rr.n_answer, 1, text, sizeof text);
    if (q->has_gold && codi_extract_answer(text, &pred) && fabs(pred - q->gold) < 1e-6) ag->n_correct++;
    for (p = 0; p < ag->g.P; p++)
        for (l = 0; l < ag->g.L1; l++) {
            size_t c = (size_t)p * ag->g.L1 + l;
            int ra, ri, j;
            if (ag->g.pos[p] < 0) continue;
            ag->n_cell[c] += 1;
            ag->ent_sum[c] += ag->g.entropy[c];
            ra = n_ans ? lens_rank_in(&ag->g, p, l, ans_ids, n_ans) : LENS_KMAX;
            ri = n_inter ? lens_rank_in(&ag->g, p, l, inter_ids, n_inter) : LENS_KMAX;
            if (n_inter) ag->n_inter_cell[c] += 1;
            if (n_ans) ag->n_ans_cell[c] += 1;
            for (k = 0; k < LENS_KMAX; k++) {
                ag->ans_hit[c * LENS_KMAX + k] += ra <= k;
                ag->inter_hit[c * LENS_KMAX + k] += ri <= k;
            }
            for (j = 0; j < ag->n_tok; j++) {
                int rt = lens_rank_in(&ag->g, p, l, &ag->tok_ids[j], 1);
                for (k = 0; k < LENS_KMAX; k++) ag->tok_hit[((size_t)j * ag->g.P * ag->g.L1 + c) * LENS_KMAX + k] += rt <= k;
            }
        }
    ag->n_questions++;
    return 0;
}

/* frac = hits / count, NaN when count is 0. */
static double lens_frac(double hits, double count) { return count > 0 ? hits / count : NAN; }

/* Average over the last three residual indices (L-2..L) of per-cell fractions. */
static double lens_last3(const lens_agg *ag, const double *hits, const double *count, int p, int k, size_t stride_k) {
    double s = 0;
    int l, n = 0;
    for (l = ag->g.L1 - 3 < 0 ? 0 : ag->g.L1 - 3; l < ag->g.L1; l++) {
        size_t c = (size_t)p * ag->g.L1 + l;
        double f = lens_frac(stride_k ? hits[c * stride_k + k] : hits[c], count[c]);
        if (f == f) { s += f; n++; }
    }
    return n ? s / n : NAN;
}

static void lens_json_num(FILE *f, double v) { if (v == v) fprintf(f, "%.6g", v); else fputs("null", f); }

static int lens_agg_write(lens_agg *ag) {
    const char *prefix = ag->a->out;
    char path[4096], lab[32];
    FILE *f;
    int P = ag->g.P, L1 = ag->g.L1, p, l, k, j, K = ag->a->top_k;
    size_t TPL = (size_t)P * L1;
    /* CSV: one row per (position, layer) */
    snprintf(path, sizeof path, "%s.csv", prefix);
    if (!(f = fopen(path, "w"))) { fprintf(stderr, "codi lens: cannot write %s\n", path); return -1; }
    fprintf(f, "slot,label,layer,questions,entropy_mean");
    for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",answer_top%d", k);
    for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",intermediate_top%d", k);
    for (j = 0; j < ag->n_tok; j++) for (k = 1; k <= LENS_KMAX; k++) fprintf(f, ",token%d_top%d", j + 1, k);
    fprintf(f, "\n");
    for (p = 0; p < P; p++)
        for (l = 0; l < L1; l++) {
            size_t c = (size_t)p * L1 + l;
            pos_label(&ag->ps, p, lab, sizeof lab);
            fprintf(f, "%d,%s,%d,%.0f,%.6g", p, lab, l, ag->n_cell[c], lens_frac(ag->ent_sum[c], ag->n_cell[c]));
            for (k = 0; k < LENS_KMAX; k++) fprintf(f, ",%.6g", lens_frac(ag->ans_hit[c * LENS_KMAX + k], ag->n_ans_cell[c]));
            for (k = 0; k < LENS_KMAX; k++) fprintf(f, ",%.6g", lens_frac(ag->inter_hit[c * LENS_KMAX + k], ag->n_inter_cell[c]));
            for (j = 0; j < ag->n_tok; j++)
                for (k = 0; k < LENS_KMAX; k++) fprintf(f, ",%.6g", lens_frac(ag->tok_hit[((size_t)j * TPL + c) * LENS_KMAX + k], ag->n_cell[c]));
            fprintf(f, "\n");
        }
    if (fclose(f)) return -1;
    /* JSON: grids [P][L1][10] and per-position summaries over the last 3 residual indices */
    snprintf(path, sizeof path, "%s.json", prefix);
    if (!(f = fopen(path, "w"))) { fprintf(stderr, "codi lens: cannot write %s\n", path); return -1; }
    fprintf(f, "{\"model\": "); cli_json_string(f, ag->a->ma.model);
    fprintf(f, ", \"questions_file\": "); cli_json_string(f, ag->a->questions);
    fprintf(f, ", \"questions\": %d, \"correct\": %d, \"lens\": \"%s\", \"labels\": [", ag->n_questions, ag->n_correct, ag->a->tuned ? "tuned" : "logit");
    for (p = 0; p < P; p++) { pos_label(&ag->ps, p, lab, sizeof lab); fprintf(f, "%s", p ? ", " : ""); cli_json_string(f, lab); }
    fprintf(f, "], \"layers\": %d, \"k\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], \"tokens\": [", L1);
    for (j = 0; j < ag->n_tok; j++) { fprintf(f, "%s", j ? ", " : ""); cli_json_string(f, ag->tok_text[j]); }
    fprintf(f, "]");
    for (j = -3; j < ag->n_tok; j++) {
        const char *name = j == -3 ? "answer_in_top_k" : j == -2 ? "intermediate_in_top_k" : j == -1 ? "entropy_mean" : NULL;
        const double *hits = j == -3 ? ag->ans_hit : j == -2 ? ag->inter_hit : j == -1 ? ag->ent_sum : ag->tok_hit + (size_t)j * TPL * LENS_KMAX;
        const double *cnt = j == -3 ? ag->n_ans_cell : j == -2 ? ag->n_inter_cell : ag->n_cell;
        if (name) fprintf(f, ",\n \"%s\": [", name); else fprintf(f, ",\n \"token%d_in_top_k\": [", j + 1);
        for (p = 0; p < P; p++) {
            fprintf(f, "%s[", p ? ", " : "");
            for (l = 0; l < L1; l++) {
                size_t c = (size_t)p * L1 + l;
                fprintf(f, "%s", l ? ", " : "");
                if (j == -1) { lens_json_num(f, lens_frac(hits[c], cnt[c])); continue; }
                fprintf(f, "[");
                for (k = 0; k < LENS_KMAX; k++) { fprintf(f, "%s", k ? ", " : ""); lens_json_num(f, lens_frac(hits[c * LENS_KMAX + k], cnt[c])); }
                fprintf(f, "]");
            }
            fprintf(f, "]");
        }
        fprintf(f, "]");
    }
    fprintf(f, ",\n \"summary_last3\": [");
    for (p = 0; p < P; p++) {
        pos_label(&ag->ps, p, lab, sizeof lab);
        fprintf(f, "%s{\"label\": \"%s\", \"answer_in_top_k\": [", p ? ",\n  " : "", lab);
        for (k = 0; k < LENS_KMAX; k++) { fprintf(f, "%s", k ? ", " : ""); lens_json_num(f, lens_last3(ag, ag->ans_hit, ag->n_ans_cell, p, k, LENS_KMAX)); }
        fprintf(f, "], \"intermediate_in_top_k\": [");
        for (k = 0; k < LENS_KMAX; k++) { fprintf(f, "%s", k ? ", " : ""); lens_json_num(f, lens_last3(ag, ag->inter_hit, ag->n_inter_cell, p, k, LENS_KMAX)); }
        fprintf(f, "], \"entropy_mean\": ");
        lens_json_num(f, lens_last3(ag, ag->ent_sum, ag->n_cell, p, 0, 0));
        fprintf(f, "}");
    }
    fprintf(f, "]}\n");
    if (fclose(f)) return -1;
    /* SVG: heat maps of answer / intermediate in top-K, lines of the last-3 summaries */
    {
        double *val = (double *)malloc(sizeof(double) * TPL), *x = (double *)malloc(sizeof(double) * (size_t)P);
        double *y = (double *)malloc(sizeof(double) * (size_t)P * 5);
        char **cols = (char **)calloc((size_t)P, sizeof(char *)), **rows = (char **)calloc((size_t)L1, sizeof(char *)), **txt = (char **)calloc(TPL, sizeof(char *));
        char title[256], n1[64], n2[64], n3[64], n4[64];
        const char *names[4];
        int h, rc = 0;
        if (!val || !x || !y || !cols || !rows || !txt) rc = -1;
        for (p = 0; !rc && p < P; p++) { cols[p] = (char *)malloc(32); if (cols[p]) pos_label(&ag->ps, p, cols[p], 32); }
        for (l = 0; !rc && l < L1; l++) { rows[L1 - 1 - l] = (char *)malloc(24); if (rows[L1 - 1 - l]) snprintf(rows[L1 - 1 - l], 24, "%s %d", l == L1 - 1 ? "final" : "layer", l); }
        for (h = 0; h < 2 && !rc; h++) {
            svg_heatmap_spec s;
            const double *hits = h ? ag->inter_hit : ag->ans_hit, *cnt = h ? ag->n_inter_cell : ag->n_ans_cell;
            for (l = 0; l < L1; l++)
                for (p = 0; p < P; p++) {
                    size_t c = (size_t)p * L1 + l, o = (size_t)(L1 - 1 - l) * P + p;
                    val[o] = lens_frac(hits[c * LENS_KMAX + K - 1], cnt[c]);
                    free(txt[o]);
                    if ((txt[o] = (char *)malloc(16)) != NULL) { if (val[o] == val[o]) snprintf(txt[o], 16, "%.0f%%", 100 * val[o]); else txt[o][0] = 0; }
                }
            memset(&s, 0, sizeof s);
            s.rows = L1; s.cols = P; s.value = val; s.vmin = 0; s.vmax = 1; s.colormap = SVG_VIRIDIS;
            s.cell_text = (const char *const *)txt; s.row_labels = (const char *const *)rows; s.col_labels = (const char *const *)cols;
            snprintf(title, sizeof title, "%s in the %s lens top-%d (%d questions)", h ? "any intermediate result" : "final answer",
                     ag->a->tuned ? "tuned" : "logit", K, ag->n_questions);
            s.title = title; s.xlabel = "position"; s.ylabel = "residual index"; s.colorbar_label = "fraction of questions";
            s.cell_w = 72; s.cell_h = 22;
            snprintf(path, sizeof path, "%s_%s_heat.svg", prefix, h ? "intermediate" : "answer");
            rc = svg_heatmap(path, &s);
        }
        if (!rc) {
            svg_lines_spec s;
            for (p = 0; p < P; p++) {
                x[p] = p;
                y[p] = lens_last3(ag, ag->ans_hit, ag->n_ans_cell, p, 0, LENS_KMAX);
                y[P + p] = lens_last3(ag, ag->ans_hit, ag->n_ans_cell, p, K - 1, LENS_KMAX);
                y[2 * P + p] = lens_last3(ag, ag->inter_hit, ag->n_inter_cell, p, 0, LENS_KMAX);
                y[3 * P + p] = lens_last3(ag, ag->inter_hit, ag->n_inter_cell, p, K - 1, LENS_KMAX);
            }
            snprintf(n1, sizeof n1, "answer top-1"); snprintf(n2, sizeof n2, "answer top-%d", K);
            snprintf(n3, sizeof n3, "intermediate top-1"); snprintf(n4, sizeof n4, "intermediate top-%d", K);
            names[0] = n1; names[1] = n2; names[2] = n3; names[3] = n4;
            memset(&s, 0, sizeof s);
            s.n_series = 4; s.n_points = P; s.x = x; s.y = y; s.names = names; s.ymin = 0; s.ymax = 1;
            s.x_labels = (const char *const *)cols;
            snprintf(title, sizeof title, "detection by position (mean of the last 3 residual indices)");
            s.title = title; s.xlabel = "position"; s.ylabel = "fraction of questions";
            snprintf(path, sizeof path, "%s_lines.svg", prefix);
            rc = svg_lines(path, &s);
            for (p = 0; p < P; p++) y[p] = lens_last3(ag, ag->ent_sum, ag->n_cell, p, 0, 0);
            names[0] = "entropy (nats)";
            s.n_series = 1; s.ymin = s.ymax = 0; s.ylabel = "mean entropy (nats)";
            snprintf(title, sizeof title, "lens entropy by position (mean of the last 3 residual indices)");
            snprintf(path, sizeof path, "%s_entropy.svg", prefix);
            if (!rc) rc = svg_lines(path, &s);
        }
        for (p = 0; cols && p < P; p++) free(cols[p]);
        for (l = 0; rows && l < L1; l++) free(rows[l]);
        for (p = 0; txt && p < (int)TPL; p++) free(txt[p]);
        free(val); free(x); free(y); free(cols); free(rows); free(txt);
        if (rc) { fprintf(stderr, "codi lens: cannot write the SVG files at %s\n", prefix); return -1; }
    }
    return 0;
}

static int lens_aggregate(const lens_args *a, const codi_model *m, const codi_tokenizer *t, const codi_tuned_lens *tl, pos_spec *ps) {
    lens_agg ag;
    int n_bad = 0, rc = 1;
    size_t cells;
    const char *s;
    memset(&ag, 0, sizeof ag);
    ag.a = a; ag.m = m; ag.t = t; ag.tl = tl; ag.ps = *ps;
    pos_size(&ag.ps, 0, a->max_answer);
    if (ag.ps.mode == POS_PROMPT || ag.ps.mode == POS_ALL) { fprintf(stderr, "codi lens: aggregate mode takes --positions latents, answer or a list\n"); return 2; }
    for (s = a->tokens; s && *s && ag.n_tok < LENS_MAX_TOKS;) {         /* --tokens "Therefore, so" */
        size_t len = strcspn(s, ",");
        snprintf(ag.tok_text[ag.n_tok], sizeof ag.tok_text[0], "%.*s", (int)(len < 63 ? len : 63), s);
        if (lens_target_ids(t, ag.tok_text[ag.n_tok], &ag.tok_ids[ag.n_tok]) < 1) { fprintf(stderr, "codi lens: token '%s' is not in the vocabulary\n", ag.tok_text[ag.n_tok]); return 2; }
        ag.n_tok++;
        s += len + (s[len] == ',');
    }
    cells = (size_t)ag.ps.n * (m->config.n_layers + 1);
    ag.logits = (float *)malloc(sizeof(float) * (size_t)m->config.vocab);
    ag.tmp = (float *)malloc(sizeof(float) * (size_t)m->config.dim);
    ag.ans_hit = (double *)calloc(cells * LENS_KMAX, sizeof(double));
    ag.inter_hit = (double *)calloc(cells * LENS_KMAX, sizeof(double));
    ag.tok_hit = (double *)calloc(cells * LENS_KMAX * (size_t)(ag.n_tok ? ag.n_tok : 1), sizeof(double));
    ag.ent_sum = (double *)calloc(cells, sizeof(double));
    ag.n_cell = (double *)calloc(cells, sizeof(double));
    ag.n_inter_cell = (double *)calloc(cells, sizeof(double));
    ag.n_ans_cell = (double *)calloc(cells, sizeof(double));
    if (!ag.logits || !ag.tmp || !ag.ans_hit || !ag.inter_hit || !ag.tok_hit || !ag.ent_sum || !ag.n_cell || !ag.n_inter_cell || !ag.n_ans_cell ||
        lens_grid_alloc(&ag.g, ag.ps.n, m->config.n_layers + 1, LENS_KMAX)) { fprintf(stderr, "codi lens: out of memory\n"); goto done; }
    if (cli_for_each_question(a->questions, a->limit, 0, 1, lens_agg_question, &ag, &n_bad) < 0 || ag.failed) goto done;
    if (!ag.n_questions) { fprintf(stderr, "codi lens: no questions read from %s\n", a->questions); goto done; }
    if (lens_agg_write(&ag)) goto done;
    printf("%d questions (%d correct): %s.csv, %s.json, %s_answer_heat.svg, %s_intermediate_heat.svg, %s_lines.svg, %s_entropy.svg\n",
           ag.n_questions, ag.n_correct, a->out, a->out, a->out, a->out, a->out, a->out);
    rc = 0;
done:
    codi_state_free(ag.s); lens_grid_free(&ag.g);
    free(ag.logits); free(ag.tmp); free(ag.ans_hit); free(ag.inter_hit); free(ag.tok_hit); free(ag.ent_sum); free(ag.n_cell); free(ag.n_inter_cell); free(ag.n_ans_cell);
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
        { "--max-answer", CLI_INT, &a.max_answer, 0, 1024, "N", "answer tokens generated (default 32)" },
        { "--questions", CLI_STR, &a.questions, 0, 0, "FILE.jsonl", "aggregate mode: detection metrics over every question (question, answer, cot or steps fields)" },
        { "--limit", CLI_INT, &a.limit, 0, 1e9, "N", "aggregate mode: first N questions only (default all)" },
        { "--out", CLI_STR, &a.out, 0, 0, "PREFIX", "aggregate mode: write PREFIX.csv, .json and SVG plots (default lens_metrics)" },
        { "--tokens", CLI_STR, &a.tokens, 0, 0, "T1,T2", "aggregate mode: also count these tokens in the top-k (e.g. Therefore)" },
        { "--sprint-norm", CLI_FLAG, &a.sprint_norm, 0, 0, NULL, "reproduce the Latent Reasoning Sprint's code: final norm applied twice at the last residual index" },
        { "--sprint-index", CLI_FLAG, &a.sprint_index, 0, 0, NULL, "read latentK in --positions 0-based, as the sprint's code does (latent0 = our latent 1)" },
        CLI_END };
    memset(&a, 0, sizeof a);
    a.ma = cli_model_defaults(); a.pa = cli_prompt_defaults();
    a.positions = "latents"; a.top_k = 0; a.max_answer = 32; a.out = "lens_metrics";
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &a.ma, &a.pa)) return 2;
    if (!a.questions && !a.pa.question && !a.pa.ids) { fprintf(stderr, "codi lens: give --question TEXT, --ids 1,2,3 or --questions FILE.jsonl\n"); return 2; }
    if (!a.top_k) a.top_k = a.questions ? 10 : 5;
    if (a.color && strcmp(a.color, "prob") && strcmp(a.color, "entropy")) { fprintf(stderr, "codi lens: --color is prob or entropy\n"); return 2; }
    if (pos_parse("lens", a.positions, a.pa.latents, &ps) || (a.sprint_index && lens_sprint_index("lens", &ps))) return 2;
    if (!(m = cli_load_model(&a.ma))) return 1;
    rc = 1;
    t = cli_load_tokenizer(&a.ma, m, !a.pa.question && !a.questions && !a.target);
    if ((a.pa.question || a.questions || a.target) && !t) goto done;
    if (a.tuned && !(tl = codi_tuned_lens_load(m, a.tuned, err, sizeof err))) { fprintf(stderr, "codi lens: %s\n", err); goto done; }
    if (a.questions) { rc = lens_aggregate(&a, m, t, tl, &ps); goto done; }
    if (a.target && (ntid = lens_target_ids(t, a.target, tid)) < 1) { fprintf(stderr, "codi lens: --target %s has no token\n", a.target); rc = 2; goto done; }
    if ((n = cli_prompt_ids(&a.pa, m, t, ids, 4096)) < 0) { rc = 2; goto done; }
    {
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        int L1 = m->config.n_layers + 1;
        ro.n_latent = a.pa.latents; ro.max_answer = a.max_answer;
        pos_size(&ps, n, a.max_answer);
        if (!(s = codi_state_alloc(m, n + a.pa.latents + a.max_answer + 2, a.ma.threads)) ||
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
    "probabilities and tokens, --svg a heatmap. With --questions, aggregates the Latent Reasoning\n"
    "Sprint's metrics per (position, residual index): the fraction of questions whose final answer\n"
    "or any intermediate result (cot <<a*b=c>> annotations or steps) is in the top-k for k = 1..10,\n"
    "the mean entropy, the fraction with --tokens in the top-k, and per-position means over the last\n"
    "3 residual indices (CSV, JSON, SVG). A number counts by its first token (codi_number_tokens).\n"
    "Examples:\n"
    "  codi lens --model models/codi-nano/codi_nano.bin --question \"Tom has 3 bags with 4 apples each. How many apples?\" --target 12\n"
    "  codi lens --model M --question Q --tuned lens_dir --json\n"
    "  codi lens --model M --question Q --svg lens.svg --color entropy\n"
    "  codi lens --model M --questions data/gsm8k/test.jsonl --limit 200 --tokens Therefore --out gsm8k_lens",
    lens_run };
