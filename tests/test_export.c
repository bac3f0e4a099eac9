/* codi_save_merged: codi_tiny saved merged (bf16, and f32 when loaded exact), loaded back with no
   options, gives bit-identical CODI runs (latents, every answer logit) and the same config; the
   bf16 file also stays within the golden bf16merged tolerance. Files we write have every tensor
   whose size is a multiple of 64 bytes at a 64-byte offset, and no gaps; the same file with its
   data moved 16 bytes off that alignment still loads and runs identically (codi_weights_misaligned
   counts its weights; weights merged at load are aligned). Run from the repository root. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

typedef struct { float latents[7 * 256], answer_logits[16 * 515]; int32_t answer[16]; int n; } run_out;

static int run(const codi_model *m, const int32_t *ids, int T, run_out *o) {
    codi_state *s = codi_state_new(m, 64, 1);
    codi_run_opts ro = codi_run_opts_default(m);
    codi_run_result rr;
    int rc;
    ro.max_answer = 16; ro.stop_at_eos = 0; ro.latents = o->latents; ro.answer_logits = o->answer_logits;
    rc = s ? codi_run(m, s, ids, T, &ro, &rr) : -1;
    if (rc) printf("# run: %s\n", s ? s->error : "out of memory");
    else { o->n = rr.n_answer; memcpy(o->answer, rr.answer, sizeof o->answer); }
    codi_state_free(s);
    return rc;
}


/* Checks path's layout: the data start at a multiple of 64, every tensor of a multiple of 64 bytes
   starts at one (mapped: page-aligned, so its address shows its offset), the tensors cover the
   data exactly (safetensors readers refuse gaps). */
static void check_aligned(const char *label, const char *path) {
    char err[256];
    codi_safetensors_file *f = codi_safetensors_open(path, err, sizeof err);
    FILE *fp = fopen(path, "rb");
    unsigned char l8[8];
    uint64_t hlen = 0;
    long fsize = -1;
    size_t covered = 0;
    int i, n = f ? codi_safetensors_count(f) : 0, bad = 0, aligned = 0;
    if (fp && fread(l8, 1, 8, fp) == 8 && fseek(fp, 0, SEEK_END) == 0) fsize = ftell(fp);
    if (fp) fclose(fp);
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | l8[i];
    for (i = 0; i < n; i++) {
        codi_safetensors_tensor t;
        size_t bytes;
        codi_safetensors_tensor_at(f, i, &t);
        bytes = t.numel * (size_t)(!strcmp(t.dtype, "BF16") || !strcmp(t.dtype, "F16") ? 2 : !strcmp(t.dtype, "U8") ? 1 : 4);
        covered += bytes;
        if (bytes % 64 == 0) { aligned++; if ((uintptr_t)t.data % 64) { bad++; printf("# %s: %s at %p\n", label, t.name, t.data); } }
    }
    t_result(f && (8 + hlen) % 64 == 0 && bad == 0 && aligned > 0 && (long)(8 + hlen + covered) == fsize, "every tensor 64-byte aligned",
             "%s: data start %llu, %d of %d tensors of 64-byte multiples misaligned, %zu of %ld bytes covered", label,
             (unsigned long long)(8 + hlen), bad, aligned, (size_t)(8 + hlen + covered), fsize);
    codi_safetensors_close(f);
}

/* A copy of src whose header is 16 spaces longer: every tensor 16 bytes off 64-byte alignment. */
static int write_misaligned(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    unsigned char l8[8], buf[65536];
    uint64_t hlen = 0;
    size_t k;
    int i, ok = in && out && fread(l8, 1, 8, in) == 8;
    for (i = 7; ok && i >= 0; i--) hlen = (hlen << 8) | l8[i];
    hlen += 16;
    for (i = 0; i < 8; i++) l8[i] = (unsigned char)(hlen >> (8 * i));
    ok = ok && fwrite(l8, 1, 8, out) == 8;
    for (hlen -= 16; ok && hlen > 0; hlen -= k) {
        k = hlen < sizeof buf ? (size_t)hlen : sizeof buf;
        ok = fread(buf, 1, k, in) == k && fwrite(buf, 1, k, out) == k;
    }
    ok = ok && fwrite("                ", 1, 16, out) == 16;
    while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, k, out) == k;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok ? 0 : -1;
}

static void roundtrip(const char *label, int exact, t_golden *g, const int32_t *ids, int T) {
    char err[256], path[128], shifted[128];
    codi_load_opts lo = codi_load_opts_default();
    codi_model *m = t_load("tests/data/codi_tiny.bin", exact), *r;
    static run_out a, b;
    snprintf(path, sizeof path, "build/test_export_%s.safetensors", label);
    snprintf(shifted, sizeof shifted, "build/test_export_%s_misaligned.safetensors", label);
    if (!m) { t_result(0, label, "load failed"); return; }
    t_result(codi_save_merged(m, path, err, sizeof err) == 0, "save merged", "%s %s", label, err);
    check_aligned(label, path);
    {
        int n_mat = 0, bad = codi_weights_misaligned(m, &n_mat);
        t_result(n_mat > 0 && bad == 0, "weights merged at load are 64-byte aligned", "%s: %d of %d misaligned", label, bad, n_mat);
    }
    lo.exact = exact;                                 /* no head_dim: the saved config carries it */
    r = codi_load(path, &lo, err, sizeof err);
    t_result(r != NULL, "load the merged file with default options", "%s %s", label, r ? "" : err);
    if (r) {
        const codi_config *c = &m->config, *d = &r->config;
        t_result(d->head_dim == c->head_dim && d->rope_llama3 == c->rope_llama3 && d->rope_factor == c->rope_factor &&
                 d->rope_theta == c->rope_theta && d->bos_id == c->bos_id && d->n_eos == c->n_eos && d->eos_ids[0] == c->eos_ids[0] &&
                 d->bot_id == c->bot_id && d->eot_id == c->eot_id && d->prj_dim == c->prj_dim && d->vocab == c->vocab &&
                 d->norm_eps == c->norm_eps, "config preserved", "%s: head_dim %d, bot %d, eot %d", label, d->head_dim, d->bot_id, d->eot_id);
        if (run(m, ids, T, &a) == 0 && run(r, ids, T, &b) == 0) {
            t_result(a.n == b.n && !memcmp(a.answer, b.answer, sizeof a.answer) && !memcmp(a.latents, b.latents, sizeof a.latents) &&
                     !memcmp(a.answer_logits, b.answer_logits, sizeof a.answer_logits), "merged file gives bit-identical runs", "%s", label);
            if (!exact) {
                const float *ref = t_gf(g, "bf16merged.answer_logits", NULL);
                double e = 0, x;
                int i;
                for (i = 0; i < 16; i++) if ((x = t_max_abs(b.answer_logits + i * 515, ref + i * 514, 514)) > e) e = x;
                t_result(e <= 5e-3, "merged bf16 file within the golden tolerance", "answer_logits max |diff| %.3g (tol 5e-3)", e);
            }
            if (write_misaligned(path, shifted) == 0) {
                codi_model *s = codi_load(shifted, &lo, err, sizeof err);
                static run_out moved;
                int n_mat = 0, bad = s ? codi_weights_misaligned(s, &n_mat) : -1, bad_r = codi_weights_misaligned(r, NULL);
                t_result(bad == n_mat && n_mat > 0 && bad_r == 0, "codi_weights_misaligned sees the moved file's weights, not the aligned one's",
                         "%s: %d of %d moved, %d aligned file", label, bad, n_mat, bad_r);
                t_result(s && run(s, ids, T, &moved) == 0 && moved.n == b.n && !memcmp(moved.latents, b.latents, sizeof moved.latents) &&
                         !memcmp(moved.answer_logits, b.answer_logits, sizeof moved.answer_logits),
                         "a misaligned file loads and runs identically", "%s %s", label, s ? "" : err);
                codi_model_free(s);
            } else t_result(0, "write a misaligned copy", "%s", shifted);
            remove(shifted);
        } else t_result(0, "runs", "%s", label);
        codi_model_free(r);
    }
    codi_model_free(m);
    remove(path);
}

/* codi_json_quote, the one JSON escaper: what it writes parses back to the same bytes; cut output
   stays NUL-terminated and the returned length is the whole literal's. */
static void json_quote(void) {
    const char *s = "a\"b\\c\nd\te\001f \xc3\xa9 </script>";
    char out[128], small[6];
    size_t n = codi_json_quote(out, sizeof out, s), m = codi_json_quote(small, sizeof small, s);
    codi_json *j = codi_json_parse(out, n, NULL, 0);
    t_result(j && j->type == CODI_JSON_STR && !strcmp(j->str, s) && n == strlen(out), "codi_json_quote: the literal parses back to the same bytes",
             "%s", out);
    t_result(m == n && strlen(small) == sizeof small - 1 && !strncmp(small, out, sizeof small - 1) && codi_json_quote(NULL, 0, s) == n,
             "codi_json_quote: cut output is NUL-terminated; the length returned is the whole literal's", "%zu", m);
    codi_json_free(j);
}

/* The old names of one release ago still compile and name the same functions. */
static void old_names(const codi_model *m) {
    char err[256];
    codi_state *s = codi_state_alloc(m, 8, 1);
    codi_st_file *f = codi_st_open("tests/data/golden_tiny.safetensors", err, sizeof err);
    t_result(s && f && codi_st_count(f) == codi_safetensors_count(f) && codi_st_count(f) > 0,
             "old names (codi_state_alloc, codi_st_*, codi_batch_alloc) are aliases of the new ones", "");
    codi_safetensors_close(f); codi_state_free(s);
}

int main(void) {
    t_golden g;
    size_t T;
    const int32_t *ids;
    char err[256];
    codi_model *m;
    json_quote();
    if (t_golden_open(&g, "tests/data/golden_tiny.safetensors")) return 2;
    ids = t_gi(&g, "prompt_ids", &T);
    roundtrip("bf16", 0, &g, ids, (int)T);
    roundtrip("f32", 1, &g, ids, (int)T);
    m = t_load("tests/data/codi_tiny.bin", 0);
    if (m) old_names(m);
    t_result(m && codi_save_merged(m, "build/no-such-dir/x.safetensors", err, sizeof err) == -1 && err[0],
             "an unwritable path is an error", "%s", err);
    codi_model_free(m);
    t_golden_close(&g);
    return t_summary();
}
