/* graft checkpoints: safetensors reader and writer (see safetensors.h).
 *
 * Layout: 8 bytes N (u64, little-endian) | N bytes of UTF-8 JSON, one object | data.
 * The object maps each tensor name to {"dtype": "F32", "shape": [2, 3],
 * "data_offsets": [begin, end]} (offsets relative to the data area, end exclusive) and
 * may hold "__metadata__": {string: string}. Data are little-endian, row-major.
 *
 * Validation follows the reference implementation, in its order: file >= 8 bytes;
 * N <= 100 MB; 8 + N within the file; the header is UTF-8, starts with '{' and is
 * JSON of the expected shape (known dtypes, integer shapes and offsets, string
 * metadata, no duplicate names or fields); sorted by offsets, the tensors lie inside the
 * data area, start at 0 and follow each other with no hole or overlap; each holds
 * exactly shape x dtype-size bytes; the last one ends where the file ends.
 */
#define _GNU_SOURCE
#include "safetensors.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's byte order)"
#endif

/* Names are cut to this many bytes in messages (the error buffer holds 1 KiB). */
#define ST_NAME_MAX 160

/* ---- dtype strings ---- */

static const char *const st_dtype_strs[GRAFT_NDTYPES] = {
    [GRAFT_F32] = "F32", [GRAFT_F64] = "F64", [GRAFT_F16] = "F16", [GRAFT_BF16] = "BF16",
    [GRAFT_I64] = "I64", [GRAFT_I32] = "I32", [GRAFT_I16] = "I16", [GRAFT_I8] = "I8",
    [GRAFT_U8] = "U8",   [GRAFT_BOOL] = "BOOL",
};

/* Valid in the format (some in newer versions) but not graft dtypes. */
static const char *const st_dtype_unsupported[] = {
    "U16", "U32", "U64", "C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", NULL,
};

const char *graft_safetensors_dtype_str(graft_dtype d) {
    return (unsigned)d < GRAFT_NDTYPES ? st_dtype_strs[d] : "?";
}

/* ---- the index ---- */

void graft_safetensors_free(graft_safetensors *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n; i++) {
        graft_tensor_release(st->entries[i].tensor);
        free(st->entries[i].name);
    }
    for (int64_t i = 0; i < st->nmeta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->entries);
    free(st->meta);
    free(st);
}

/* ---- UTF-8 ---- */

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF); *bad gets the offset of the first bad byte. */
static bool st_utf8_ok(const unsigned char *s, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            *bad = i;
            return false;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) {
            *bad = i;
            return false;
        }
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) {
                *bad = i;
                return false;
            }
        i += len;
    }
    return true;
}

/* ---- a strict JSON reader for the header ----
 * Streaming (no document tree), so memory stays proportional to what the header
 * declares: the tensor entries and their strings. */

typedef struct {
    const unsigned char *start, *p, *end;
    const char *label;
    char *buf;        /* the last decoded string (NUL-terminated) */
    size_t len, cap;
    int depth;
} st_json;

static graft_status st_json_error(st_json *j, const char *what) {
    return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header is not valid JSON: %s at byte %zu of the header",
                       j->label, what, (size_t)(j->p - j->start));
}

static void st_json_ws(st_json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Skips white space, then consumes c or fails. */
static graft_status st_json_expect(st_json *j, char c) {
    st_json_ws(j);
    if (j->p >= j->end || *j->p != (unsigned char)c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return st_json_error(j, what);
    }
    j->p++;
    return GRAFT_OK;
}

static graft_status st_json_put(st_json *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 64;
        while (cap < j->len + n + 1) cap *= 2;
        char *b = realloc(j->buf, cap);
        if (!b) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the safetensors header", j->label);
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
    return GRAFT_OK;
}

static int st_hex4(const unsigned char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Reads a string (after white space) into j->buf / j->len, decoding escapes. The
 * bytes are already known to be UTF-8. */
static graft_status st_json_string(st_json *j) {
    st_json_ws(j);
    if (j->p >= j->end || *j->p != '"') return st_json_error(j, "expected a string");
    j->p++;
    j->len = 0;
    graft_status st = st_json_put(j, "", 0);
    if (st) return st;
    for (;;) {
        const unsigned char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && *j->p >= 0x20) j->p++;
        if ((st = st_json_put(j, (const char *)run, (size_t)(j->p - run)))) return st;
        if (j->p >= j->end) return st_json_error(j, "unterminated string");
        unsigned char c = *j->p;
        if (c == '"') {
            j->p++;
            return GRAFT_OK;
        }
        if (c < 0x20) return st_json_error(j, "control character in a string");
        /* an escape */
        if (j->end - j->p < 2) return st_json_error(j, "unterminated escape");
        char e = (char)j->p[1], out;
        j->p += 2;
        switch (e) {
        case '"': out = '"'; break;
        case '\\': out = '\\'; break;
        case '/': out = '/'; break;
        case 'b': out = '\b'; break;
        case 'f': out = '\f'; break;
        case 'n': out = '\n'; break;
        case 'r': out = '\r'; break;
        case 't': out = '\t'; break;
        case 'u': {
            if (j->end - j->p < 4) return st_json_error(j, "short \\u escape");
            int cp = st_hex4(j->p);
            if (cp < 0) return st_json_error(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return st_json_error(j, "lone low surrogate in a \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int lo = (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') ? st_hex4(j->p + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return st_json_error(j, "lone high surrogate in a \\u escape");
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char u[4];
            size_t n;
            if (cp < 0x80) {
                u[0] = (char)cp;
                n = 1;
            } else if (cp < 0x800) {
                u[0] = (char)(0xC0 | (cp >> 6));
                u[1] = (char)(0x80 | (cp & 0x3F));
                n = 2;
            } else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12));
                u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F));
                n = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18));
                u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[3] = (char)(0x80 | (cp & 0x3F));
                n = 4;
            }
            if ((st = st_json_put(j, u, n))) return st;
            continue;
        }
        default:
            j->p -= 2;
            return st_json_error(j, "bad escape");
        }
        if ((st = st_json_put(j, &out, 1))) return st;
    }
}

/* Reads a non-negative integer that fits int64 (shapes and offsets). `what` names it
 * in the error. */
static graft_status st_json_uint(st_json *j, int64_t *out, const char *what, const char *name) {
    st_json_ws(j);
    const unsigned char *p = j->p;
    char msg[96];
    if (p < j->end && *p == '-') {
        snprintf(msg, sizeof msg, "%s must be a non-negative integer", what);
        goto bad;
    }
    if (p >= j->end || *p < '0' || *p > '9') {
        snprintf(msg, sizeof msg, "%s must be an integer", what);
        goto bad;
    }
    uint64_t v = 0;
    if (*p == '0' && p + 1 < j->end && p[1] >= '0' && p[1] <= '9') {
        snprintf(msg, sizeof msg, "%s has a leading zero", what);
        goto bad;
    }
    while (p < j->end && *p >= '0' && *p <= '9') {
        if (v > ((uint64_t)INT64_MAX - (uint64_t)(*p - '0')) / 10) {
            snprintf(msg, sizeof msg, "%s is too large", what);
            goto bad;
        }
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p < j->end && (*p == '.' || *p == 'e' || *p == 'E')) {
        snprintf(msg, sizeof msg, "%s must be an integer", what);
        goto bad;
    }
    j->p = p;
    *out = (int64_t)v;
    return GRAFT_OK;
bad:
    return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\": %s (at byte %zu of the header)", j->label,
                       ST_NAME_MAX, name, msg, (size_t)(j->p - j->start));
}

/* Skips any JSON value (unknown fields of a tensor entry), depth-limited. */
static graft_status st_json_skip(st_json *j) {
    graft_status st;
    st_json_ws(j);
    if (j->p >= j->end) return st_json_error(j, "expected a value");
    unsigned char c = *j->p;
    if (c == '"') return st_json_string(j);
    if (c == '{' || c == '[') {
        if (++j->depth > GRAFT_ST_MAX_DEPTH) return st_json_error(j, "nesting too deep");
        char close = c == '{' ? '}' : ']';
        j->p++;
        st_json_ws(j);
        if (j->p < j->end && *j->p == (unsigned char)close) {
            j->p++;
            j->depth--;
            return GRAFT_OK;
        }
        for (;;) {
            if (c == '{') {
                if ((st = st_json_string(j)) || (st = st_json_expect(j, ':'))) return st;
            }
            if ((st = st_json_skip(j))) return st;
            st_json_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if ((st = st_json_expect(j, close))) return st;
            j->depth--;
            return GRAFT_OK;
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(j->end - j->p) >= n && memcmp(j->p, words[i], n) == 0) {
            j->p += n;
            return GRAFT_OK;
        }
    }
    /* a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    const unsigned char *p = j->p;
    if (p < j->end && *p == '-') p++;
    if (p >= j->end || *p < '0' || *p > '9') return st_json_error(j, "expected a value");
    if (*p == '0') p++;
    else
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    if (p < j->end && *p == '.') {
        p++;
        if (p >= j->end || *p < '0' || *p > '9') return st_json_error(j, "bad number");
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-')) p++;
        if (p >= j->end || *p < '0' || *p > '9') return st_json_error(j, "bad number");
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    }
    j->p = p;
    return GRAFT_OK;
}

/* After '[' or '{' and white space: consumes the closing bracket if it is next. */
static bool st_json_close(st_json *j, char close) {
    st_json_ws(j);
    if (j->p < j->end && *j->p == (unsigned char)close) {
        j->p++;
        return true;
    }
    return false;
}

/* After a member or element: ',' (true, more follow) or the closing bracket (false). */
static graft_status st_json_next(st_json *j, char close, bool *more) {
    st_json_ws(j);
    if (j->p < j->end && *j->p == ',') {
        j->p++;
        *more = true;
        return GRAFT_OK;
    }
    *more = false;
    return st_json_expect(j, close);
}

static char *st_dup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* "__metadata__": null or {string: string}. */
static graft_status st_parse_metadata(st_json *j, graft_safetensors *st) {
    graft_status s;
    st_json_ws(j);
    if ((size_t)(j->end - j->p) >= 4 && memcmp(j->p, "null", 4) == 0) {
        j->p += 4;
        return GRAFT_OK;
    }
    if (j->p >= j->end || *j->p != '{')
        return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors __metadata__ must be an object of strings", j->label);
    j->p++;
    if (st_json_close(j, '}')) return GRAFT_OK;
    int64_t cap = 0;
    for (bool more = true; more;) {
        if ((s = st_json_string(j))) return s;
        if (st->nmeta == cap) {
            cap = cap ? cap * 2 : 8;
            graft_st_meta *m = realloc(st->meta, (size_t)cap * sizeof *m);
            if (!m) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the header", j->label);
            st->meta = m;
        }
        graft_st_meta *m = &st->meta[st->nmeta];
        memset(m, 0, sizeof *m);
        m->key_len = j->len;
        if (!(m->key = st_dup(j->buf, j->len)))
            return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the header", j->label);
        st->nmeta++;
        if ((s = st_json_expect(j, ':'))) return s;
        st_json_ws(j);
        if (j->p >= j->end || *j->p != '"')
            return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors __metadata__ value of \"%.*s\" is not a string",
                               j->label, ST_NAME_MAX, m->key);
        if ((s = st_json_string(j))) return s;
        m->value_len = j->len;
        if (!(m->value = st_dup(j->buf, j->len)))
            return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the header", j->label);
        if ((s = st_json_next(j, '}', &more))) return s;
    }
    return GRAFT_OK;
}

/* Maps a dtype string to e->dtype, refusing the format's other dtypes clearly. */
static graft_status st_parse_dtype(st_json *j, graft_st_entry *e) {
    for (int d = 0; d < GRAFT_NDTYPES; d++)
        if (strcmp(j->buf, st_dtype_strs[d]) == 0 && j->len == strlen(st_dtype_strs[d])) {
            e->dtype = (graft_dtype)d;
            return GRAFT_OK;
        }
    for (int i = 0; st_dtype_unsupported[i]; i++)
        if (strcmp(j->buf, st_dtype_unsupported[i]) == 0)
            return graft_error(GRAFT_ETYPE,
                               "\"%s\": tensor \"%.*s\" has dtype %s, which graft does not support "
                               "(supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
                               j->label, ST_NAME_MAX, e->name, j->buf);
    return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has an unknown dtype \"%.32s\"", j->label,
                       ST_NAME_MAX, e->name, j->buf);
}

/* One tensor entry: {"dtype": ..., "shape": [...], "data_offsets": [b, e], other: any}. */
static graft_status st_parse_entry(st_json *j, graft_st_entry *e) {
    graft_status s;
    bool have[3] = {false, false, false};
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    st_json_ws(j);
    if (j->p >= j->end || *j->p != '{')
        return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors entry \"%.*s\" is not an object (at byte %zu of the header)",
                           j->label, ST_NAME_MAX, e->name, (size_t)(j->p - j->start));
    j->p++;
    bool more = !st_json_close(j, '}');
    while (more) {
        if ((s = st_json_string(j)) || (s = st_json_expect(j, ':'))) return s;
        int f = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(j->buf, fields[i]) == 0 && j->len == strlen(fields[i])) f = i;
        if (f >= 0 && have[f])
            return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has the field \"%s\" twice", j->label,
                               ST_NAME_MAX, e->name, fields[f]);
        if (f >= 0) have[f] = true;
        if (f == 0) {
            st_json_ws(j);
            if (j->p >= j->end || *j->p != '"')
                return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\": dtype must be a string", j->label,
                                   ST_NAME_MAX, e->name);
            if ((s = st_json_string(j)) || (s = st_parse_dtype(j, e))) return s;
        } else if (f == 1) {
            if ((s = st_json_expect(j, '['))) return s;
            e->ndim = 0;
            bool dims = !st_json_close(j, ']');
            while (dims) {
                if (e->ndim == GRAFT_MAX_DIMS)
                    return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has more than %d dims", j->label,
                                       ST_NAME_MAX, e->name, GRAFT_MAX_DIMS);
                if ((s = st_json_uint(j, &e->shape[e->ndim], "a shape entry", e->name))) return s;
                e->ndim++;
                if ((s = st_json_next(j, ']', &dims))) return s;
            }
        } else if (f == 2) {
            int64_t b, en;
            bool two;
            if ((s = st_json_expect(j, '[')) || (s = st_json_uint(j, &b, "data_offsets[0]", e->name)) ||
                (s = st_json_expect(j, ',')) || (s = st_json_uint(j, &en, "data_offsets[1]", e->name)) ||
                (s = st_json_next(j, ']', &two)))
                return s;
            if (two)
                return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\": data_offsets must hold exactly 2 integers",
                                   j->label, ST_NAME_MAX, e->name);
            e->begin = (uint64_t)b;
            e->end = (uint64_t)en;
        } else {
            j->depth = 2;
            if ((s = st_json_skip(j))) return s;
        }
        if ((s = st_json_next(j, '}', &more))) return s;
    }
    for (int i = 0; i < 3; i++)
        if (!have[i])
            return graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has no \"%s\"", j->label, ST_NAME_MAX, e->name,
                               fields[i]);
    return GRAFT_OK;
}

/* The header object: tensor entries (kept in order) and __metadata__. */
static graft_status st_parse_header(st_json *j, graft_safetensors *st) {
    graft_status s;
    bool seen_meta = false;
    int64_t cap = 0;
    if ((s = st_json_expect(j, '{'))) return s;
    bool more = !st_json_close(j, '}');
    while (more) {
        if ((s = st_json_string(j)) || (s = st_json_expect(j, ':'))) return s;
        if (j->len == 12 && memcmp(j->buf, "__metadata__", 12) == 0) {
            if (seen_meta)
                return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header has \"__metadata__\" twice", j->label);
            seen_meta = true;
            if ((s = st_parse_metadata(j, st))) return s;
        } else {
            if (st->n == cap) {
                cap = cap ? cap * 2 : 16;
                graft_st_entry *e = realloc(st->entries, (size_t)cap * sizeof *e);
                if (!e) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the header", j->label);
                st->entries = e;
            }
            graft_st_entry *e = &st->entries[st->n];
            memset(e, 0, sizeof *e);
            e->name_len = j->len;
            if (!(e->name = st_dup(j->buf, j->len)))
                return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory reading the header", j->label);
            st->n++;
            if ((s = st_parse_entry(j, e))) return s;
        }
        if ((s = st_json_next(j, '}', &more))) return s;
    }
    st_json_ws(j);
    if (j->p != j->end) return st_json_error(j, "unexpected text after the header object");
    return GRAFT_OK;
}

/* ---- validation of the index ---- */

static _Thread_local const graft_safetensors *st_sort_ctx;

static int st_cmp_name(const void *a, const void *b) {
    const graft_st_entry *x = &st_sort_ctx->entries[*(const int64_t *)a];
    const graft_st_entry *y = &st_sort_ctx->entries[*(const int64_t *)b];
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int st_cmp_offsets(const void *a, const void *b) {
    int64_t ia = *(const int64_t *)a, ib = *(const int64_t *)b;
    const graft_st_entry *x = &st_sort_ctx->entries[ia], *y = &st_sort_ctx->entries[ib];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (ia > ib) - (ia < ib); /* stable */
}

static int st_cmp_meta(const void *a, const void *b) {
    const graft_st_meta *x = &st_sort_ctx->meta[*(const int64_t *)a];
    const graft_st_meta *y = &st_sort_ctx->meta[*(const int64_t *)b];
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Metadata keys must be unique (sorted, then neighbours compared: no quadratic scan). */
static graft_status st_validate_meta(graft_safetensors *st, const char *label) {
    if (st->nmeta < 2) return GRAFT_OK;
    int64_t *idx = malloc((size_t)st->nmeta * sizeof *idx);
    if (!idx) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory validating the header", label);
    for (int64_t i = 0; i < st->nmeta; i++) idx[i] = i;
    st_sort_ctx = st;
    qsort(idx, (size_t)st->nmeta, sizeof *idx, st_cmp_meta);
    graft_status s = GRAFT_OK;
    for (int64_t i = 1; i < st->nmeta && !s; i++)
        if (st_cmp_meta(&idx[i - 1], &idx[i]) == 0)
            s = graft_error(GRAFT_EFORMAT, "\"%s\": safetensors __metadata__ has the key \"%.*s\" twice", label,
                            ST_NAME_MAX, st->meta[idx[i]].key);
    st_sort_ctx = NULL;
    free(idx);
    return s;
}

/* Rules 6-9: names unique, offsets inside the data area, contiguous from 0 with no
 * hole or overlap, sizes that match shape x dtype, no trailing bytes. qsort is not
 * reentrant with a context: the comparators read st_sort_ctx (thread-local). */
static graft_status st_validate(graft_safetensors *st, uint64_t data_size, const char *label) {
    graft_status s = st_validate_meta(st, label);
    if (s) return s;
    if (st->n == 0) {
        if (data_size != 0)
            return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors file has no tensors but %llu bytes of data",
                               label, (unsigned long long)data_size);
        return GRAFT_OK;
    }
    int64_t *idx = malloc((size_t)st->n * sizeof *idx);
    if (!idx) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory validating the header", label);
    for (int64_t i = 0; i < st->n; i++) idx[i] = i;
    st_sort_ctx = st;

    qsort(idx, (size_t)st->n, sizeof *idx, st_cmp_name);
    for (int64_t i = 1; i < st->n; i++)
        if (st_cmp_name(&idx[i - 1], &idx[i]) == 0) {
            const graft_st_entry *e = &st->entries[idx[i]];
            s = graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header names the tensor \"%.*s\" twice", label,
                            ST_NAME_MAX, e->name);
            goto done;
        }

    for (int64_t i = 0; i < st->n; i++) idx[i] = i;
    qsort(idx, (size_t)st->n, sizeof *idx, st_cmp_offsets);
    uint64_t expected = 0;
    const graft_st_entry *prev = NULL;
    for (int64_t i = 0; i < st->n; i++) {
        const graft_st_entry *e = &st->entries[idx[i]];
        if (e->end < e->begin) {
            s = graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has data_offsets [%llu, %llu] that end before they begin",
                            label, ST_NAME_MAX, e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
            goto done;
        }
        if (e->end > data_size) {
            s = graft_error(GRAFT_EFORMAT,
                            "\"%s\": tensor \"%.*s\" has data_offsets [%llu, %llu] beyond the end of the data (%llu bytes)",
                            label, ST_NAME_MAX, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)data_size);
            goto done;
        }
        if (e->begin > expected) {
            if (prev)
                s = graft_error(GRAFT_EFORMAT,
                                "\"%s\": tensor \"%.*s\" starts at byte %llu of the data but the tensor before it ends at "
                                "byte %llu (a hole: the tensors must be contiguous)",
                                label, ST_NAME_MAX, e->name, (unsigned long long)e->begin, (unsigned long long)expected);
            else
                s = graft_error(GRAFT_EFORMAT,
                                "\"%s\": the first tensor, \"%.*s\", starts at byte %llu of the data, not 0 (a hole: the "
                                "tensors must be contiguous)",
                                label, ST_NAME_MAX, e->name, (unsigned long long)e->begin);
            goto done;
        }
        if (e->begin < expected) {
            s = graft_error(GRAFT_EFORMAT,
                            "\"%s\": tensor \"%.*s\" (data_offsets [%llu, %llu]) overlaps tensor \"%.*s\", which ends at byte %llu",
                            label, ST_NAME_MAX, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            ST_NAME_MAX, prev->name, (unsigned long long)expected);
            goto done;
        }
        expected = e->end;
        prev = e;
    }

    for (int64_t i = 0; i < st->n; i++) {
        const graft_st_entry *e = &st->entries[i];
        uint64_t numel = 1, esz = graft_dtype_size(e->dtype), bytes;
        bool overflow = false;
        for (int d = 0; d < e->ndim; d++) {
            uint64_t v = (uint64_t)e->shape[d];
            if (v && numel > UINT64_MAX / v) overflow = true;
            else numel *= v;
        }
        if (!overflow && numel > UINT64_MAX / esz) overflow = true;
        char shape[GRAFT_MAX_DIMS * 24 + 4];
        graft_shape_str(e->ndim, e->shape, shape, sizeof shape);
        if (overflow || numel > (uint64_t)INT64_MAX) {
            s = graft_error(GRAFT_EFORMAT, "\"%s\": tensor \"%.*s\" has shape %s, whose size overflows", label,
                            ST_NAME_MAX, e->name, shape);
            goto done;
        }
        bytes = numel * esz;
        if (bytes != e->end - e->begin) {
            s = graft_error(GRAFT_EFORMAT,
                            "\"%s\": tensor \"%.*s\" has data_offsets [%llu, %llu] but shape %s of %s needs %llu bytes",
                            label, ST_NAME_MAX, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            shape, st_dtype_strs[e->dtype], (unsigned long long)bytes);
            goto done;
        }
    }

    if (expected != data_size)
        s = graft_error(GRAFT_EFORMAT,
                        "\"%s\": the tensors end at byte %llu of the data but the file holds %llu bytes of data "
                        "(%llu bytes left over after the last tensor)",
                        label, (unsigned long long)expected, (unsigned long long)data_size,
                        (unsigned long long)(data_size - expected));
done:
    st_sort_ctx = NULL;
    free(idx);
    return s;
}

graft_status graft_safetensors_parse(graft_safetensors **out, const unsigned char *data, size_t size,
                                     const char *label) {
    *out = NULL;
    if (size < 8)
        return graft_error(GRAFT_EFORMAT, "\"%s\": file is %zu bytes, too small for a safetensors header (8 bytes of length)",
                           label, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i];
    if (n > GRAFT_ST_MAX_HEADER)
        return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header length %llu is larger than the limit of %llu bytes",
                           label, (unsigned long long)n, GRAFT_ST_MAX_HEADER);
    if (!graft_range_ok(8, n, size))
        return graft_error(GRAFT_EFORMAT,
                           "\"%s\": safetensors header length %llu runs past the end of the file (%zu bytes): truncated?",
                           label, (unsigned long long)n, size);
    const unsigned char *h = data + 8;
    size_t bad;
    if (!st_utf8_ok(h, (size_t)n, &bad))
        return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header is not valid UTF-8 (byte %zu of the header)",
                           label, bad);
    if (n == 0 || h[0] != '{')
        return graft_error(GRAFT_EFORMAT, "\"%s\": safetensors header does not start with '{'", label);

    graft_safetensors *st = calloc(1, sizeof *st);
    if (!st) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory", label);
    st->header_len = n;
    st->data_offset = 8 + n;
    st_json j = {.start = h, .p = h, .end = h + n, .label = label};
    graft_status s = st_parse_header(&j, st);
    free(j.buf);
    if (!s) s = st_validate(st, (uint64_t)size - 8 - n, label);
    if (s) {
        graft_safetensors_free(st);
        return s;
    }
    *out = st;
    return GRAFT_OK;
}

/* ---- creating the tensors ---- */

/* The file mapping shared by the tensors that point into it. */
typedef struct {
    graft_mapped_file m;
    atomic_llong refs;
} st_map;

static void st_map_unref(st_map *sm) {
    if (sm && atomic_fetch_sub(&sm->refs, 1) == 1) {
        graft_mapped_close(&sm->m);
        free(sm);
    }
}

static void st_map_release(void *ctx, void *data, size_t nbytes) {
    (void)data;
    (void)nbytes;
    st_map_unref(ctx);
}

/* Creates entry e's tensor from its bytes at p: a view of the mapping sm when sm is
 * given and p is aligned for the dtype, else a copy. */
static graft_status st_make_tensor(graft_st_entry *e, const unsigned char *p, st_map *sm, int64_t *mapped) {
    size_t nbytes = (size_t)(e->end - e->begin), esz = graft_dtype_size(e->dtype);
    if (sm && nbytes > 0 && (uintptr_t)p % esz == 0) {
        graft_storage *s;
        atomic_fetch_add(&sm->refs, 1);
        if (graft_storage_wrap(&s, (void *)p, nbytes, graft_cpu, GRAFT_STORAGE_MAPPED, st_map_release, sm)) {
            st_map_unref(sm);
            return GRAFT_ENOMEM;
        }
        int64_t stride[GRAFT_MAX_DIMS], acc = 1;
        for (int d = e->ndim - 1; d >= 0; d--) {
            stride[d] = acc;
            acc *= e->shape[d] > 0 ? e->shape[d] : 1;
        }
        graft_status st = graft_tensor_from_storage(&e->tensor, s, e->dtype, e->ndim, e->shape, stride, 0);
        graft_storage_release(s);
        if (!st) (*mapped)++;
        return st;
    }
    graft_status st = graft_tensor_empty(&e->tensor, e->ndim, e->shape, e->dtype, graft_cpu);
    if (st) return st;
    if (nbytes) memcpy(graft_tensor_data(e->tensor), p, nbytes);
    return GRAFT_OK;
}

static graft_status st_make_tensors(graft_safetensors *st, const unsigned char *data, st_map *sm) {
    const unsigned char *base = data + st->data_offset;
    for (int64_t i = 0; i < st->n; i++) {
        graft_status s = st_make_tensor(&st->entries[i], base + st->entries[i].begin, sm, &st->mapped);
        if (s) return s;
    }
    return GRAFT_OK;
}

graft_status graft_safetensors_load_buffer(graft_safetensors **out, const unsigned char *data, size_t size,
                                           const char *label) {
    graft_status s = graft_safetensors_parse(out, data, size, label);
    if (s) return s;
    if ((s = st_make_tensors(*out, data, NULL))) {
        graft_safetensors_free(*out);
        *out = NULL;
    }
    return s;
}

graft_status graft_safetensors_load(graft_safetensors **out, const char *path) {
    *out = NULL;
    st_map *sm = calloc(1, sizeof *sm);
    if (!sm) return graft_error(GRAFT_ENOMEM, "\"%s\": out of memory", path);
    graft_status s = graft_mapped_open(&sm->m, path);
    if (s) {
        free(sm);
        return s;
    }
    atomic_init(&sm->refs, 1); /* this function's reference */
    /* Private and writable: a loaded tensor can be changed in place (copy-on-write),
     * which never reaches the file. */
    if (sm->m.map && mprotect(sm->m.map, sm->m.size, PROT_READ | PROT_WRITE) != 0) {
        s = graft_error(GRAFT_EIO, "\"%s\": cannot map the file writable (copy-on-write)", path);
        goto done;
    }
    if ((s = graft_safetensors_parse(out, sm->m.data, sm->m.size, path))) goto done;
    if ((s = st_make_tensors(*out, sm->m.data, sm))) {
        graft_safetensors_free(*out);
        *out = NULL;
    }
done:
    st_map_unref(sm);
    return s;
}

/* ---- writing ---- */

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} st_buf;

static void st_buf_put(st_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void st_buf_str(st_buf *b, const char *s) { st_buf_put(b, s, strlen(s)); }

/* A JSON string: quotes, \" \\ and control characters escaped; UTF-8 kept as is. */
static void st_buf_json_string(st_buf *b, const char *s) {
    st_buf_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        st_buf_put(b, run, (size_t)(s - run));
        char esc[8];
        switch (c) {
        case '"': st_buf_str(b, "\\\""); break;
        case '\\': st_buf_str(b, "\\\\"); break;
        case '\n': st_buf_str(b, "\\n"); break;
        case '\r': st_buf_str(b, "\\r"); break;
        case '\t': st_buf_str(b, "\\t"); break;
        case '\b': st_buf_str(b, "\\b"); break;
        case '\f': st_buf_str(b, "\\f"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            st_buf_str(b, esc);
        }
        run = s + 1;
    }
    st_buf_put(b, run, (size_t)(s - run));
    st_buf_put(b, "\"", 1);
}

static int st_cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks names and metadata before anything is written. */
static graft_status st_check_save(const char *path, int64_t n, const char *const *names, graft_tensor *const *tensors,
                                  int64_t nmeta, const char *const *mk, const char *const *mv) {
    size_t bad;
    for (int64_t i = 0; i < n; i++) {
        if (!names[i] || !tensors[i]) return graft_error(GRAFT_EINVAL, "save: \"%s\": entry %lld has no name or tensor", path, (long long)i + 1);
        if (strcmp(names[i], "__metadata__") == 0)
            return graft_error(GRAFT_EINVAL, "save: \"%s\": a tensor cannot be named \"__metadata__\" in safetensors", path);
        if (!st_utf8_ok((const unsigned char *)names[i], strlen(names[i]), &bad))
            return graft_error(GRAFT_EINVAL, "save: \"%s\": tensor name \"%.*s\" is not valid UTF-8", path, ST_NAME_MAX, names[i]);
        if (graft_tensor_device(tensors[i]).type != GRAFT_CPU)
            return graft_error(GRAFT_EDEVICE, "save: \"%s\": tensor \"%.*s\" is not on the CPU", path, ST_NAME_MAX, names[i]);
    }
    for (int64_t i = 0; i < nmeta; i++) {
        if (!st_utf8_ok((const unsigned char *)mk[i], strlen(mk[i]), &bad) ||
            !st_utf8_ok((const unsigned char *)mv[i], strlen(mv[i]), &bad))
            return graft_error(GRAFT_EINVAL, "save: \"%s\": metadata \"%.*s\" is not valid UTF-8", path, ST_NAME_MAX, mk[i]);
    }
    if (n > 1) {
        const char **sorted = malloc((size_t)n * sizeof *sorted);
        if (!sorted) return graft_error(GRAFT_ENOMEM, "save: out of memory");
        memcpy(sorted, names, (size_t)n * sizeof *sorted);
        qsort(sorted, (size_t)n, sizeof *sorted, st_cmp_cstr);
        for (int64_t i = 1; i < n; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0) {
                graft_status s = graft_error(GRAFT_EINVAL, "save: \"%s\": the name \"%.*s\" is given twice", path,
                                             ST_NAME_MAX, sorted[i]);
                free(sorted);
                return s;
            }
        free(sorted);
    }
    return GRAFT_OK;
}

/* Writes tensor t's elements in row-major order. */
static graft_status st_write_tensor(graft_atomic_file *f, graft_tensor *t) {
    size_t nbytes = (size_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype);
    if (nbytes == 0) return GRAFT_OK;
    if (graft_tensor_is_contiguous(t)) return graft_atomic_write(f, graft_tensor_data(t), nbytes);
    graft_tensor *c;
    graft_status s = graft_tensor_contiguous(&c, t);
    if (s) return s;
    s = graft_atomic_write(f, graft_tensor_data(c), nbytes);
    graft_tensor_release(c);
    return s;
}

graft_status graft_safetensors_save(const char *path, int64_t n, const char *const *names,
                                    graft_tensor *const *tensors, int64_t nmeta,
                                    const char *const *meta_keys, const char *const *meta_values) {
    graft_status s = st_check_save(path, n, names, tensors, nmeta, meta_keys, meta_values);
    if (s) return s;
    int64_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    uint64_t *begin = malloc((size_t)(n > 0 ? n : 1) * sizeof *begin);
    st_buf h = {0};
    if (!order || !begin) {
        s = graft_error(GRAFT_ENOMEM, "save: out of memory");
        goto done;
    }
    /* data layout: by dtype size, largest first, stable, so every tensor is aligned */
    int64_t k = 0;
    uint64_t off = 0;
    for (size_t size = 8; size >= 1; size /= 2)
        for (int64_t i = 0; i < n; i++)
            if (graft_dtype_size(tensors[i]->dtype) == size) {
                order[k++] = i;
                begin[i] = off;
                off += (uint64_t)graft_tensor_numel(tensors[i]) * size;
            }

    st_buf_put(&h, "{", 1);
    if (nmeta > 0) {
        st_buf_str(&h, "\"__metadata__\":{");
        for (int64_t i = 0; i < nmeta; i++) {
            if (i) st_buf_put(&h, ",", 1);
            st_buf_json_string(&h, meta_keys[i]);
            st_buf_put(&h, ":", 1);
            st_buf_json_string(&h, meta_values[i]);
        }
        st_buf_put(&h, "}", 1);
    }
    for (int64_t i = 0; i < n; i++) {
        graft_tensor *t = tensors[i];
        char num[48];
        if (i || nmeta > 0) st_buf_put(&h, ",", 1);
        st_buf_json_string(&h, names[i]);
        st_buf_str(&h, ":{\"dtype\":\"");
        st_buf_str(&h, st_dtype_strs[t->dtype]);
        st_buf_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            st_buf_str(&h, num);
        }
        uint64_t b = begin[i], e = b + (uint64_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)b, (unsigned long long)e);
        st_buf_str(&h, num);
    }
    st_buf_put(&h, "}", 1);
    while (!h.failed && h.len % 8) st_buf_put(&h, " ", 1);
    if (h.failed) {
        s = graft_error(GRAFT_ENOMEM, "save: out of memory");
        goto done;
    }

    graft_atomic_file f;
    if ((s = graft_atomic_open(&f, path))) goto done;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(((uint64_t)h.len >> (8 * i)) & 0xFF);
    graft_atomic_write(&f, len8, 8);
    graft_atomic_write(&f, h.p, h.len);
    for (int64_t i = 0; i < n && !s; i++) {
        s = st_write_tensor(&f, tensors[order[i]]);
        if (s && s != f.failed) { /* not a write error: a copy failed */
            graft_atomic_abort(&f);
            goto done;
        }
    }
    s = graft_atomic_commit(&f);
done:
    free(order);
    free(begin);
    free(h.p);
    return s;
}
