/* >>json: a small DOM JSON reader (RFC 8259) for config.json, safetensors headers,
   index files and tokenizer.json. One arena per document; strings are decoded to
   NUL-terminated UTF-8 (escapes and surrogate pairs resolved). */

enum { CODI__J_NULL, CODI__J_FALSE, CODI__J_TRUE, CODI__J_NUM, CODI__J_STR, CODI__J_ARR, CODI__J_OBJ };

typedef struct codi__json {
    int type;                      /* CODI__J_* */
    int count;                     /* number of children (arrays, objects) */
    double num;                    /* CODI__J_NUM */
    const char *str; size_t len;   /* CODI__J_STR: decoded bytes, NUL-terminated */
    const char *key; size_t keylen;/* member name when the parent is an object */
    struct codi__json *child;      /* first element or member */
    struct codi__json *next;       /* next sibling */
} codi__json;

typedef struct {
    const char *p, *end;
    codi__json *nodes; size_t nnodes, cap_nodes;
    char *strs; size_t nstrs, cap_strs;
    const char *err;
    int depth;
} codi__jparser;

/* Upper bounds for the arena, from one cheap scan: every value starts a node
   at most once per byte that can begin a value, strings never grow when decoded. */
static void codi__json_count(const char *s, size_t n, size_t *nodes, size_t *bytes) {
    size_t i, c = 1;
    for (i = 0; i < n; i++) if (s[i] == ',' || s[i] == '[' || s[i] == '{' || s[i] == ':') c++;
    *nodes = c; *bytes = n + 1;
}

static void codi__json_ws(codi__jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int codi__json_hex4(const char *p, unsigned *out) {
    unsigned v = 0; int i;
    for (i = 0; i < 4; i++) {
        char c = p[i]; v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v; return 1;
}

static size_t codi__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) { o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63)); return 3; }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* Parses a string literal at j->p (which points at the opening quote). */
static int codi__json_string(codi__jparser *j, const char **out, size_t *outlen) {
    char *o = j->strs + j->nstrs, *start = o;
    j->p++;
    for (;;) {
        char c;
        if (j->p >= j->end) { j->err = "unterminated string"; return 0; }
        c = *j->p++;
        if (c == '"') break;
        if ((unsigned char)c < 0x20) { j->err = "control character in string"; return 0; }
        if (c != '\\') { *o++ = c; continue; }
        if (j->p >= j->end) { j->err = "unterminated escape"; return 0; }
        c = *j->p++;
        switch (c) {
        case '"': *o++ = '"'; break;   case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;   case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;  case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;  case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j->end - j->p < 4 || !codi__json_hex4(j->p, &cp)) { j->err = "bad \\u escape"; return 0; }
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
                codi__json_hex4(j->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->p += 6;
            }
            /* a 6-byte escape decodes to at most 4 bytes (a lone surrogate to 3) */
            o += codi__utf8_put(o, cp);
            break;
        }
        default: j->err = "bad escape"; return 0;
        }
    }
    *o++ = 0;
    *out = start; *outlen = (size_t)(o - start - 1);
    j->nstrs = (size_t)(o - j->strs);
    return 1;
}

static codi__json *codi__json_value(codi__jparser *j);

static codi__json *codi__json_node(codi__jparser *j, int type) {
    codi__json *n;
    if (j->nnodes >= j->cap_nodes) { j->err = "too many values"; return NULL; }
    n = &j->nodes[j->nnodes++];
    memset(n, 0, sizeof *n);
    n->type = type;
    return n;
}

static codi__json *codi__json_container(codi__jparser *j, int is_obj) {
    codi__json *n = codi__json_node(j, is_obj ? CODI__J_OBJ : CODI__J_ARR), *last = NULL;
    char close = is_obj ? '}' : ']';
    if (!n) return NULL;
    if (++j->depth > 256) { j->err = "nesting too deep"; return NULL; }
    j->p++;
    codi__json_ws(j);
    if (j->p < j->end && *j->p == close) { j->p++; j->depth--; return n; }
    for (;;) {
        codi__json *v;
        const char *key = NULL; size_t keylen = 0;
        if (is_obj) {
            codi__json_ws(j);
            if (j->p >= j->end || *j->p != '"') { j->err = "expected member name"; return NULL; }
            if (!codi__json_string(j, &key, &keylen)) return NULL;
            codi__json_ws(j);
            if (j->p >= j->end || *j->p != ':') { j->err = "expected ':'"; return NULL; }
            j->p++;
        }
        v = codi__json_value(j);
        if (!v) return NULL;
        v->key = key; v->keylen = keylen;
        if (last) last->next = v; else n->child = v;
        last = v; n->count++;
        codi__json_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == close) { j->p++; break; }
        j->err = is_obj ? "expected ',' or '}'" : "expected ',' or ']'";
        return NULL;
    }
    j->depth--;
    return n;
}

static codi__json *codi__json_value(codi__jparser *j) {
    codi__json *n;
    codi__json_ws(j);
    if (j->p >= j->end) { j->err = "unexpected end of input"; return NULL; }
    switch (*j->p) {
    case '{': return codi__json_container(j, 1);
    case '[': return codi__json_container(j, 0);
    case '"':
        n = codi__json_node(j, CODI__J_STR);
        if (!n || !codi__json_string(j, &n->str, &n->len)) return NULL;
        return n;
    case 't': case 'f': case 'n': {
        static const char *words[3] = { "true", "false", "null" };
        static const int types[3] = { CODI__J_TRUE, CODI__J_FALSE, CODI__J_NULL };
        int w;
        for (w = 0; w < 3; w++) {
            size_t wl = strlen(words[w]);
            if ((size_t)(j->end - j->p) >= wl && memcmp(j->p, words[w], wl) == 0) {
                j->p += wl;
                return codi__json_node(j, types[w]);
            }
        }
        j->err = "bad literal"; return NULL;
    }
    default: {
        char buf[64]; size_t k = 0; char *endp;
        while (j->p + k < j->end && k < sizeof buf - 1 && strchr("+-0123456789.eE", j->p[k])) { buf[k] = j->p[k]; k++; }
        buf[k] = 0;
        if (k == 0) { j->err = "unexpected character"; return NULL; }
        n = codi__json_node(j, CODI__J_NUM);
        if (!n) return NULL;
        n->num = strtod(buf, &endp);
        if (*endp) { j->err = "bad number"; return NULL; }
        j->p += k;
        return n;
    }
    }
}

/* Parses text[0..len). Returns the root (free with codi__json_free) or NULL with
   a message in err. */
static codi__json *codi__json_parse(const char *text, size_t len, char *err, size_t errsz) {
    codi__jparser j;
    codi__json *root;
    memset(&j, 0, sizeof j);
    j.p = text; j.end = text + len;
    codi__json_count(text, len, &j.cap_nodes, &j.cap_strs);
    /* node 0 is a hidden header owning the string arena: see codi__json_free */
    j.nodes = (codi__json *)CODI_MALLOC((j.cap_nodes + 1) * sizeof(codi__json));
    j.strs = (char *)CODI_MALLOC(j.cap_strs + 4);
    if (!j.nodes || !j.strs) {
        CODI_FREE(j.nodes); CODI_FREE(j.strs);
        snprintf(err, errsz, "out of memory parsing JSON"); return NULL;
    }
    memset(&j.nodes[0], 0, sizeof(codi__json));
    j.nodes[0].str = j.strs;
    j.nodes++;
    root = codi__json_value(&j);
    if (root) {
        codi__json_ws(&j);
        if (j.p != j.end) { root = NULL; j.err = "trailing characters"; }
    }
    if (!root) {
        snprintf(err, errsz, "JSON error at byte %lu: %s", (unsigned long)(j.p - text), j.err ? j.err : "?");
        CODI_FREE(j.nodes - 1); CODI_FREE(j.strs);
        return NULL;
    }
    return root;
}

static void codi__json_free(codi__json *root) {
    if (!root) return;
    CODI_FREE((void *)root[-1].str);
    CODI_FREE(root - 1);
}

/* Member `key` of object `o`, or NULL. */
static const codi__json *codi__json_get(const codi__json *o, const char *key) {
    const codi__json *c;
    size_t kl = strlen(key);
    if (!o || o->type != CODI__J_OBJ) return NULL;
    for (c = o->child; c; c = c->next)
        if (c->keylen == kl && memcmp(c->key, key, kl) == 0) return c;
    return NULL;
}

/* Number member `key` of `o` into *out; returns 1 if present and numeric. */
static int codi__json_num(const codi__json *o, const char *key, double *out) {
    const codi__json *v = codi__json_get(o, key);
    if (!v || v->type != CODI__J_NUM) return 0;
    *out = v->num; return 1;
}
