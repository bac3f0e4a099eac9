/* check_trace TRACE GOLDEN PREFIX: compares every tensor of a `codi trace` file with the golden
   tensor PREFIX.name (logits: max |diff| <= 1e-3, others: relative L2 <= 1e-4, ids: equal). */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "test_util.h"

int main(int argc, char **argv) {
    t_golden tr, g;
    int i;
    if (argc != 4 || t_golden_open(&tr, argv[1]) || t_golden_open(&g, argv[2])) { printf("usage: check_trace TRACE GOLDEN PREFIX\n"); return 2; }
    t_result(tr.ts.n == 12, "trace holds the 11 golden tensors and answer_length", "%d", tr.ts.n);
    {
        char err[256];
        codi_safetensors_file *f = codi_safetensors_open(argv[1], err, sizeof err);
        const char *model = f ? codi_safetensors_metadata(f, "model") : NULL, *version = f ? codi_safetensors_metadata(f, "codi_lens") : NULL;
        t_result(model && version && codi_safetensors_metadata(f, "recipe") && codi_safetensors_metadata(f, "command"),
                 "trace metadata names the model, recipe, command and library version", "%s", f ? (model ? model : "no model") : err);
        codi_safetensors_close(f);
    }
    for (i = 0; i < tr.ts.n; i++) {
        const codi__tensor *t = &tr.ts.t[i], *r;
        char name[160];
        size_t n = (size_t)codi__numel(t->ndim, t->shape);
        snprintf(name, sizeof name, "%s.%s", argv[3], t->name);
        if (!strcmp(t->name, "answer_length")) {   /* tokens up to the first eos (id 2 in codi_tiny) */
            const codi__tensor *at = codi__tensors_find(&tr.ts, "answer_tokens");
            int32_t len, k = 0, na = at ? (int32_t)codi__numel(at->ndim, at->shape) : 0;
            const int32_t *tok = at ? (const int32_t *)at->data : NULL;
            memcpy(&len, t->data, 4);
            while (k < na && tok[k] != 2) k++;
            t_result(len == (k < na ? k + 1 : na), "answer_length marks the first eos", "%d (tokens %d)", len, na);
            continue;
        }
        if (!(r = codi__tensors_find(&g.ts, name)) && !(r = codi__tensors_find(&g.ts, t->name))) { t_result(0, t->name, "not in the golden file"); continue; }
        if (codi__numel(r->ndim, r->shape) != (int64_t)n) { t_result(0, t->name, "shape differs"); continue; }
        snprintf(name, sizeof name, "trace %s", t->name);
        if (!strcmp(t->dtype_name, "I32")) t_result(!memcmp(t->data, r->data, n * 4), name, "");
        else if (strstr(t->name, "logits")) t_check_abs(name, (const float *)t->data, (const float *)r->data, n, 1e-3);
        else t_check_rel(name, (const float *)t->data, (const float *)r->data, n, 1e-4);
    }
    t_golden_close(&tr); t_golden_close(&g);
    return t_summary();
}
