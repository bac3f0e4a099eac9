// The header compiles as C++ too (declarations and implementation), and loads a model.
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

int main() {
    char err[256];
    codi_load_opts o = codi_load_opts_default();
    o.head_dim = 32;
    codi_model *m = codi_load("tests/data/codi_tiny.bin", &o, err, sizeof err);
    int ok = m != NULL && m->config.n_layers == 4;
    printf("%s - C++ build loads codi_tiny.bin\n", ok ? "ok" : "not ok");
    codi_model_free(m);
    printf("%d passed, %d failed\n", ok, !ok);
    return ok ? 0 : 1;
}
