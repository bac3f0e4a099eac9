/* libFuzzer harness for the steering-spec parser (codi_steer_parse): the input is a spec's JSON,
   parsed against a model shape (no weights are needed to parse); an accepted spec must hold edits
   whose vectors have a size the hooks index safely, and random_like of it must keep every edit.
   Vector files (FILE:TENSOR) resolve under tests/fuzz/steer_seeds/ (a small safetensors file).
   Seeds: the JSON files of tests/fuzz/steer_seeds and tests/data/steer.
     make build/fuzz_steer_spec && build/fuzz_steer_spec -dict=tests/fuzz/steer.dict -max_total_time=60 build/steer_corpus tests/fuzz/steer_seeds */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static codi_model m;
    char err[512];
    codi_steer *st, *r;
    int i;
    if (!m.config.dim) { m.config.dim = 256; m.config.n_layers = 6; m.config.n_kv_heads = 2; m.config.head_dim = 32; m.config.n_heads = 8; }
    st = codi_steer_parse(&m, (const char *)data, size, "tests/fuzz/steer_seeds", err, sizeof err);
    if (!st) { if (!err[0]) abort(); return 0; }
    for (i = 0; i < st->n_edits; i++) {
        const codi_edit *e = &st->edits[i];
        long L1 = (long)m.config.n_layers + 1, KVD = (long)m.config.n_kv_heads * m.config.head_dim;
        if (e->vector && e->vector_len != m.config.dim && e->vector_len != L1 * m.config.dim && e->vector_len != m.config.n_layers * KVD &&
            e->vector_len != (long)m.config.n_layers * m.config.dim) abort();
        if (e->vector && !codi__all_finite(e->vector, (int)e->vector_len)) abort();
    }
    if ((r = codi_steer_random_like(st, 3)) != NULL) { if (r->n_edits != st->n_edits) abort(); codi_steer_free(r); }
    codi_steer_free(st);
    return 0;
}
