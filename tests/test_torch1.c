/* torch 1.x archives: tests/data/codi_tiny_torch1.bin is codi_tiny.bin rewritten the way torch
   1.6 .. 1.13 wrote it (tools/make_torch1_archive.py: no byteorder / .format_version /
   .storage_alignment / .data/serialization_id, prefix = the file's stem, version last). Both
   must give bit-identical CODI answers, in exact and bf16 mode. A copy whose data entries start
   at odd offsets (written here, into build/) must too: the loader may not do unaligned typed
   reads (this test runs under UBSan). Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

#define DATA "tests/data/"
#define UNALIGNED "build/codi_tiny_unaligned.bin"
#define N_ANS 16

static const int32_t question[] = { 1, 63, 213, 200, 453, 184, 442, 3, 293, 81, 367, 143, 82, 325, 269, 203, 222, 216,
                                    92, 506, 31, 119, 125, 513 };

typedef struct { int ok, V, D, n_ans; int32_t answer[N_ANS]; float *answer_logits, *latents; } outcome;

/* Loads path and runs the question: 6 latents, 16 answer tokens (no early stop). */
static outcome run_question(const char *path, int exact, codi_model **keep) {
    outcome r;
    codi_model *m = t_load(path, exact);
    memset(&r, 0, sizeof r);
    if (keep) *keep = NULL;
    if (m) {
        codi_state *s = codi_state_new(m, 64, 1);
        codi_run_opts ro = codi_run_opts_default(m);
        codi_run_result rr;
        int k;
        r.V = m->config.vocab; r.D = m->config.dim;
        r.answer_logits = (float *)malloc(sizeof(float) * N_ANS * r.V);
        r.latents = (float *)malloc(sizeof(float) * 7 * r.D);
        ro.max_answer = N_ANS; ro.stop_at_eos = 0; ro.answer_logits = r.answer_logits; ro.latents = r.latents;
        if (s && r.answer_logits && r.latents && codi_run(m, s, question, (int)(sizeof question / sizeof *question), &ro, &rr) == 0) {
            r.ok = 1; r.n_ans = rr.n_answer;
            for (k = 0; k < rr.n_answer && k < N_ANS; k++) r.answer[k] = rr.answer[k];
        } else printf("# run %s: %s\n", path, s ? s->error : "out of memory");
        codi_state_free(s);
        if (keep) *keep = m; else codi_model_free(m);
    }
    return r;
}

static void outcome_free(outcome *o) { free(o->answer_logits); free(o->latents); }

static void compare(const char *name, const outcome *got, const outcome *ref) {
    int same = got->ok && ref->ok && got->V == ref->V && got->n_ans == ref->n_ans &&
               !memcmp(got->answer, ref->answer, sizeof(int32_t) * (size_t)ref->n_ans) &&
               !memcmp(got->answer_logits, ref->answer_logits, sizeof(float) * N_ANS * (size_t)ref->V) &&
               !memcmp(got->latents, ref->latents, sizeof(float) * 7 * (size_t)ref->D);
    t_result(same, name, "%d answer tokens, first %d", ref->n_ans, ref->n_ans ? ref->answer[0] : -1);
}

/* --- a zip writer for the unaligned copy (stored entries, crc32, plain end record) --- */

static uint32_t crc32_of(const unsigned char *p, uint64_t n) {
    uint32_t c = 0xFFFFFFFFu; uint64_t i; int k;
    for (i = 0; i < n; i++) { c ^= p[i]; for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u))); }
    return ~c;
}

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xFFFFu); put16(p + 2, v >> 16); }

/* Copies every entry of src into dst, each entry's data at an offset = 1 (mod 8), so that no
   f32 or bf16 tensor in it is aligned. Returns 0, or -1. */
static int write_unaligned_copy(const char *src, const char *dst) {
    char err[256];
    codi__file *f = codi__file_open(src, err, sizeof err);
    codi__zip_entry *es = NULL;
    unsigned char *cd = NULL, h[46], pad[16];
    uint32_t *offs = NULL, *crcs = NULL, pos = 0, cdsize = 0;
    int n, i, rc = -1;
    FILE *fp = NULL;
    if (!f) { printf("# %s\n", err); return -1; }
    if ((n = codi__zip_entries(f, &es, err, sizeof err)) < 0) { printf("# %s\n", err); goto done; }
    offs = (uint32_t *)malloc(sizeof *offs * (size_t)n); crcs = (uint32_t *)malloc(sizeof *crcs * (size_t)n);
    cd = (unsigned char *)malloc((size_t)n * (46 + 256));
    if (!offs || !crcs || !cd || !(fp = fopen(dst, "wb"))) goto done;
    memset(pad, 'Z', sizeof pad); pad[0] = 'F'; pad[1] = 'B';
    for (i = 0; i < n; i++) {
        uint32_t nl = (uint32_t)es[i].name_len, start = pos + 30 + nl + 4, xl = 4 + (1u + 8u - start % 8u) % 8u;
        crcs[i] = crc32_of(es[i].data, es[i].size);
        offs[i] = pos;
        memset(h, 0, 30);
        put32(h, 0x04034b50u); put16(h + 4, 20); put16(h + 6, 0x800); put32(h + 14, crcs[i]);
        put32(h + 18, (uint32_t)es[i].size); put32(h + 22, (uint32_t)es[i].size); put16(h + 26, nl); put16(h + 28, xl);
        put16(pad + 2, xl - 4);
        fwrite(h, 1, 30, fp); fwrite(es[i].name, 1, nl, fp); fwrite(pad, 1, xl, fp);
        if ((pos + 30 + nl + xl) % 8 != 1) { printf("# misalignment arithmetic\n"); goto done; }
        fwrite(es[i].data, 1, (size_t)es[i].size, fp);
        pos += 30 + nl + xl + (uint32_t)es[i].size;
        memset(h, 0, 46);                                     /* central directory entry */
        put32(h, 0x02014b50u); put16(h + 4, 20); put16(h + 6, 20); put16(h + 8, 0x800); put32(h + 16, crcs[i]);
        put32(h + 20, (uint32_t)es[i].size); put32(h + 24, (uint32_t)es[i].size); put16(h + 28, nl); put32(h + 42, offs[i]);
        memcpy(cd + cdsize, h, 46); memcpy(cd + cdsize + 46, es[i].name, nl); cdsize += 46 + nl;
    }
    fwrite(cd, 1, cdsize, fp);
    memset(h, 0, 22);                                         /* end of central directory */
    put32(h, 0x06054b50u); put16(h + 8, (uint32_t)n); put16(h + 10, (uint32_t)n); put32(h + 12, cdsize); put32(h + 16, pos);
    fwrite(h, 1, 22, fp);
    rc = ferror(fp) ? -1 : 0;
done:
    if (fp && fclose(fp) != 0) rc = -1;
    free(offs); free(crcs); free(cd); CODI_FREE(es);
    codi__file_close(f);
    return rc;
}

/* Every tensor of the loaded table starts at an odd address (so the test means what it says). */
static int all_tensors_odd(const codi_model *m) {
    const codi__model_internal *in = (const codi__model_internal *)m->internal;
    int i, odd = 0;
    for (i = 0; i < in->ts.n; i++) odd += ((uintptr_t)in->ts.t[i].data & 1u) != 0;
    return in->ts.n > 0 && odd == in->ts.n;
}

int main(void) {
    int exact;
    {   /* the torch 1.x fixture has the torch 1.x layout */
        char err[256];
        codi__file *f = codi__file_open(DATA "codi_tiny_torch1.bin", err, sizeof err);
        codi__zip_entry *es = NULL;
        int n = f ? codi__zip_entries(f, &es, err, sizeof err) : -1, i, aligned = 0, v1 = 0, v2 = 0;
        for (i = 0; i < n; i++) {
            aligned += ((uintptr_t)(es[i].data - f->data) % 64) == 0;
            v1 += es[i].name_len == 24 && !memcmp(es[i].name, "codi_tiny_torch1/version", 24);
            v2 += memchr(es[i].name, '.', es[i].name_len) != NULL || (es[i].name_len >= 9 && !memcmp(es[i].name + es[i].name_len - 9, "byteorder", 9));
        }
        t_result(n == 102 && aligned == n && v1 == 1 && v2 == 1, "codi_tiny_torch1.bin: torch 1.x layout",
                 "%d entries, %d 64-byte aligned, prefix codi_tiny_torch1/, only data.pkl has a dot", n, aligned);
        CODI_FREE(es); codi__file_close(f);
    }
    t_result(write_unaligned_copy(DATA "codi_tiny_torch1.bin", UNALIGNED) == 0, "write " UNALIGNED, "data at offsets 1 mod 8");
    for (exact = 1; exact >= 0; exact--) {
        codi_model *mu = NULL;
        char name[128];
        outcome r2 = run_question(DATA "codi_tiny.bin", exact, NULL);
        outcome r1 = run_question(DATA "codi_tiny_torch1.bin", exact, NULL);
        outcome ru = run_question(UNALIGNED, exact, &mu);
        snprintf(name, sizeof name, "%s: torch 2.x archive runs", exact ? "exact" : "bf16");
        t_result(r2.ok && r2.n_ans == N_ANS, name, "");
        snprintf(name, sizeof name, "%s: torch 1.x archive == torch 2.x archive (tokens, logits, latents)", exact ? "exact" : "bf16");
        compare(name, &r1, &r2);
        snprintf(name, sizeof name, "%s: unaligned archive == torch 2.x archive", exact ? "exact" : "bf16");
        compare(name, &ru, &r2);
        snprintf(name, sizeof name, "%s: the unaligned archive's tensors are all at odd addresses", exact ? "exact" : "bf16");
        t_result(mu && all_tensors_odd(mu), name, "");
        codi_model_free(mu);
        outcome_free(&r2); outcome_free(&r1); outcome_free(&ru);
    }
    return t_summary();
}
