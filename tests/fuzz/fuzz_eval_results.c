/* libFuzzer harness for the `codi eval` results reader (tools/eval_line.h, used by --merge and
   resume): the input is a results file; each line goes through eval_parse_line with the bounds
   both callers use, and every line it accepts must hold an index inside the bound, a condition
   that fits its buffer and a boolean. Seeds: tests/fuzz/eval_seeds/.
     make build/fuzz_eval_results && build/fuzz_eval_results -max_total_time=60 build/eval_corpus tests/fuzz/eval_seeds */
#define CODI_LENS_IMPLEMENTATION
#include "../../codi_lens.h"
#include "../../tools/eval_line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *end = p + size;
    static const long bounds[3] = { 1, 500, 64L * 4096 + 1 };
    while (p < end) {
        const char *e = (const char *)memchr(p, '\n', (size_t)(end - p));
        int b;
        if (!e) e = end;
        for (b = 0; b < 3; b++) {
            char cond[160], why[256];
            long index = -7;
            int correct = -7, r = eval_parse_line(p, (size_t)(e - p), bounds[b], cond, sizeof cond, &index, &correct, why, sizeof why);
            if (r > 0 && (index < 0 || index >= bounds[b] || (correct != 0 && correct != 1) || strlen(cond) >= sizeof cond)) abort();
            if (r <= 0 && !why[0]) abort();                   /* a refusal always says why */
        }
        p = e + 1;
    }
    return 0;
}
