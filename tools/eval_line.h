/* One line of a `codi eval` results file, parsed and checked before any use (tools/cmd_eval.c;
   tests/fuzz/fuzz_eval_results.c). Needs codi_lens.h's implementation (its JSON reader). */

/* A result line {"condition": NAME, "index": I, "correct": B, ...}: 1 with *cond (cap bytes),
   *index and *correct set; 0 when the line is not a result (why says what is wrong); -1 when its
   index is not an integer in [0, index_bound) (why says so; the file is not to be trusted). */
static int eval_parse_line(const char *line, size_t n, long index_bound, char *cond, size_t cap, long *index, int *correct,
                           char *why, size_t whysz) {
    codi_json *j = codi_json_parse(line, n, why, whysz);
    const codi_json *c, *ix, *ok;
    int rc = 0;
    if (!j) return 0;
    c = codi_json_get(j, "condition"); ix = codi_json_get(j, "index"); ok = codi_json_get(j, "correct");
    if (!c || c->type != CODI_JSON_STR || !ix || ix->type != CODI_JSON_NUM || !ok || (ok->type != CODI_JSON_TRUE && ok->type != CODI_JSON_FALSE))
        snprintf(why, whysz, "not a result line");
    else if (!(ix->num >= 0 && ix->num < (double)index_bound && ix->num == floor(ix->num))) {
        snprintf(why, whysz, "\"index\" %.17g is not a question index (0..%ld)", ix->num, index_bound - 1);
        rc = -1;
    } else if (strlen(c->str) >= cap) snprintf(why, whysz, "condition name longer than %d bytes", (int)cap - 1);
    else {
        memcpy(cond, c->str, strlen(c->str) + 1);
        *index = (long)ix->num; *correct = ok->type == CODI_JSON_TRUE;
        rc = 1;
    }
    codi_json_free(j);
    return rc;
}
