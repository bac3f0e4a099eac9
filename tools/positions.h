/* tools/positions.h - which positions of a CODI run a command looks at (codi lens, record,
   tune-lens). A spec is "latents" (bot and latent 1..N: the default), "prompt" (every prompt
   position, bot last), "answer" (answer k = the position whose logits give answer token k: eot
   for k = 1), "all" (every processed position), or a comma list of "bot", "latentK", "answerK",
   "promptK" (prompt position K, 0-based) and plain absolute positions. prompt / answer / all have
   as many slots as the longest question needs; slots a question lacks resolve to -1. */
#ifndef CODI_POSITIONS_H
#define CODI_POSITIONS_H
#if defined(__GNUC__)
#define POS_FN static __attribute__((unused))   /* a command may use only some */
#else
#define POS_FN static
#endif

enum { POS_LATENTS, POS_PROMPT, POS_ANSWER, POS_ALL, POS_LIST };
enum { POS_BOT, POS_LATENT, POS_ANS, POS_PROMPT_K, POS_ABS };
#define POS_MAX_LIST 256

typedef struct { int kind, k; } pos_slot;
typedef struct {
    int mode;                    /* POS_* */
    int n_latent;                /* N */
    int n;                       /* slots (POS_LIST, POS_LATENTS); for the others set by pos_size */
    pos_slot slot[POS_MAX_LIST];
} pos_spec;

/* Parses spec; 0, or -1 with a message on stderr naming cmd. */
POS_FN int pos_parse(const char *cmd, const char *spec, int n_latent, pos_spec *ps) {
    const char *s = spec;
    memset(ps, 0, sizeof *ps);
    ps->n_latent = n_latent;
    if (!strcmp(spec, "latents")) { ps->mode = POS_LATENTS; ps->n = n_latent + 1; return 0; }
    if (!strcmp(spec, "prompt")) { ps->mode = POS_PROMPT; return 0; }
    if (!strcmp(spec, "answer")) { ps->mode = POS_ANSWER; return 0; }
    if (!strcmp(spec, "all")) { ps->mode = POS_ALL; return 0; }
    ps->mode = POS_LIST;
    while (*s) {
        char item[32], *end;
        size_t len = strcspn(s, ",");
        pos_slot sl;
        long k = 0;
        snprintf(item, sizeof item, "%.*s", (int)(len < 31 ? len : 31), s);
        s += len + (s[len] == ',');
        if (!strcmp(item, "bot")) { sl.kind = POS_BOT; }
        else if (!strncmp(item, "latent", 6)) { sl.kind = POS_LATENT; k = strtol(item + 6, &end, 10); if (*end || k < 1 || k > n_latent) goto bad; }
        else if (!strncmp(item, "answer", 6)) { sl.kind = POS_ANS; k = strtol(item + 6, &end, 10); if (*end || k < 1 || k > 100000) goto bad; }
        else if (!strncmp(item, "prompt", 6)) { sl.kind = POS_PROMPT_K; k = strtol(item + 6, &end, 10); if (*end || k < 0 || k > 100000) goto bad; }
        else { sl.kind = POS_ABS; k = strtol(item, &end, 10); if (!*item || *end || k < 0 || k > 1000000) goto bad; }
        sl.k = (int)k;
        if (ps->n == POS_MAX_LIST) { fprintf(stderr, "codi %s: --positions lists at most %d positions\n", cmd, POS_MAX_LIST); return -1; }
        ps->slot[ps->n++] = sl;
        continue;
    bad:
        fprintf(stderr, "codi %s: --positions item '%s' is not bot, latentK (1..%d), answerK (K >= 1), promptK or a position\n", cmd, item, n_latent);
        return -1;
    }
    if (!ps->n) { fprintf(stderr, "codi %s: --positions is empty\n", cmd); return -1; }
    return 0;
}

/* Slots of the variable-length modes, from the longest prompt and answer. */
POS_FN void pos_size(pos_spec *ps, int max_prompt, int max_answer) {
    if (ps->mode == POS_PROMPT) ps->n = max_prompt;
    else if (ps->mode == POS_ANSWER) ps->n = max_answer;
    else if (ps->mode == POS_ALL) ps->n = max_prompt + ps->n_latent + max_answer;
}

/* A list's slots that no run can have: promptK beyond the longest prompt (max_prompt tokens; < 0:
   not known yet), answerK beyond max_answer, a position beyond both. 0, or -1 with a message. */
POS_FN int pos_check(const char *cmd, const pos_spec *ps, int max_prompt, int max_answer) {
    int i;
    for (i = 0; ps->mode == POS_LIST && i < ps->n; i++) {
        const pos_slot *sl = &ps->slot[i];
        if (sl->kind == POS_ANS && sl->k > max_answer) {
            fprintf(stderr, "codi %s: --positions answer%d is beyond the %d answer tokens generated (--max-answer)\n", cmd, sl->k, max_answer); return -1;
        }
        if (max_prompt >= 0 && sl->kind == POS_PROMPT_K && sl->k >= max_prompt) {
            fprintf(stderr, "codi %s: --positions prompt%d is beyond the longest prompt (%d tokens: prompt0..prompt%d)\n", cmd, sl->k, max_prompt, max_prompt - 1); return -1;
        }
        if (max_prompt >= 0 && sl->kind == POS_ABS && sl->k >= max_prompt + ps->n_latent + max_answer) {
            fprintf(stderr, "codi %s: --positions %d is beyond the last position of every run (%d)\n", cmd, sl->k, max_prompt + ps->n_latent + max_answer - 1); return -1;
        }
    }
    return 0;
}

/* Absolute position of slot i for a run with prompt length T0 (bot included), N latents, n_answer
   answer tokens and n_pos processed positions; -1 when this run lacks it. */
POS_FN int pos_resolve(const pos_spec *ps, int i, int T0, int n_answer, int n_pos) {
    int N = ps->n_latent, p = -1;
    pos_slot sl;
    if (ps->mode == POS_LATENTS) { sl.kind = i ? POS_LATENT : POS_BOT; sl.k = i; }
    else if (ps->mode == POS_PROMPT) { sl.kind = POS_PROMPT_K; sl.k = i; }
    else if (ps->mode == POS_ANSWER) { sl.kind = POS_ANS; sl.k = i + 1; }
    else if (ps->mode == POS_ALL) { sl.kind = POS_ABS; sl.k = i; }
    else sl = ps->slot[i];
    switch (sl.kind) {
    case POS_BOT: p = T0 - 1; break;
    case POS_LATENT: p = T0 - 1 + sl.k; break;
    case POS_ANS: p = sl.k <= n_answer ? T0 + N + sl.k - 1 : -1; break;
    case POS_PROMPT_K: p = sl.k < T0 ? sl.k : -1; break;
    default: p = sl.k;
    }
    return p >= 0 && p < n_pos ? p : -1;
}

POS_FN void pos_label(const pos_spec *ps, int i, char *buf, size_t cap) {
    pos_slot sl;
    if (ps->mode == POS_LATENTS) { if (i) snprintf(buf, cap, "latent %d", i); else snprintf(buf, cap, "bot"); return; }
    if (ps->mode == POS_PROMPT) { snprintf(buf, cap, "prompt %d", i); return; }
    if (ps->mode == POS_ANSWER) { snprintf(buf, cap, "answer %d", i + 1); return; }
    if (ps->mode == POS_ALL) { snprintf(buf, cap, "pos %d", i); return; }
    sl = ps->slot[i];
    switch (sl.kind) {
    case POS_BOT: snprintf(buf, cap, "bot"); break;
    case POS_LATENT: snprintf(buf, cap, "latent %d", sl.k); break;
    case POS_ANS: snprintf(buf, cap, "answer %d", sl.k); break;
    case POS_PROMPT_K: snprintf(buf, cap, "prompt %d", sl.k); break;
    default: snprintf(buf, cap, "pos %d", sl.k);
    }
}

/* The labels as a JSON list, into a malloc'd string. */
POS_FN char *pos_labels_json(const pos_spec *ps) {
    size_t cap = (size_t)ps->n * 24 + 8, len = 0;
    char *s = (char *)malloc(cap), lab[32];
    int i;
    if (!s) return NULL;
    s[len++] = '[';
    for (i = 0; i < ps->n; i++) {
        pos_label(ps, i, lab, sizeof lab);
        len += (size_t)snprintf(s + len, cap - len, "%s\"%s\"", i ? "," : "", lab);
    }
    snprintf(s + len, cap - len, "]");
    return s;
}

#endif
