/* graft checkpoints: the protocol-2 pickle emitter and the .pth zip writer (see
 * pickle_write.h). The pickle is built in memory (it is small: no tensor bytes), the
 * storages are streamed from their graft storages into stored zip records. */
#include "pickle_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/io.h"
#include "checkpoint/pickle.h"
#include "checkpoint/zip.h"

typedef struct {
    graft_storage *s;   /* one reference */
    graft_dtype dtype;
} pkw_storage;

typedef struct {
    char close_op;      /* 'e' APPENDS or 'u' SETITEMS */
    int batch;          /* items since the last MARK */
} pkw_frame;

struct graft_pkw {
    unsigned char *buf;
    size_t len, cap;
    pkw_frame frames[GRAFT_PICKLE_MAX_DEPTH + 1];
    int depth;
    pkw_storage *st;
    size_t nst, stcap;
    size_t *slots;      /* open addressing: storage pointer -> index + 1 */
    size_t nslots;
    graft_status failed;
};

graft_status graft_pkw_new(graft_pkw **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return graft_error(GRAFT_ENOMEM, "save: out of memory");
    unsigned char proto[2] = {0x80, 2};
    (*out)->buf = malloc(4096);
    if (!(*out)->buf) {
        free(*out);
        *out = NULL;
        return graft_error(GRAFT_ENOMEM, "save: out of memory");
    }
    (*out)->cap = 4096;
    memcpy((*out)->buf, proto, 2);
    (*out)->len = 2;
    return GRAFT_OK;
}

void graft_pkw_free(graft_pkw *w) {
    if (!w) return;
    for (size_t i = 0; i < w->nst; i++) graft_storage_release(w->st[i].s);
    free(w->st);
    free(w->slots);
    free(w->buf);
    free(w);
}

static graft_status emit(graft_pkw *w, const void *p, size_t n) {
    if (w->failed) return w->failed;
    if (w->len + n > w->cap) {
        size_t cap = w->cap * 2;
        while (cap < w->len + n) cap *= 2;
        unsigned char *b = realloc(w->buf, cap);
        if (!b) return w->failed = graft_error(GRAFT_ENOMEM, "save: out of memory");
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return GRAFT_OK;
}

static graft_status op(graft_pkw *w, unsigned char c) { return emit(w, &c, 1); }

static graft_status op_u32(graft_pkw *w, unsigned char c, uint32_t v) {
    unsigned char b[5] = {c, (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    return emit(w, b, 5);
}

static graft_status global(graft_pkw *w, const char *module, const char *name) {
    graft_status s = op(w, 'c');
    if (!s) s = emit(w, module, strlen(module));
    if (!s) s = op(w, '\n');
    if (!s) s = emit(w, name, strlen(name));
    if (!s) s = op(w, '\n');
    return s;
}

graft_status graft_pkw_none(graft_pkw *w) { return op(w, 'N'); }
graft_status graft_pkw_bool(graft_pkw *w, bool v) { return op(w, v ? 0x88 : 0x89); }

/* As Python's pickler: BININT1, BININT2, BININT, else LONG1 (two's complement). */
graft_status graft_pkw_int(graft_pkw *w, int64_t v) {
    if (v >= 0 && v <= 0xFF) {
        unsigned char b[2] = {'K', (unsigned char)v};
        return emit(w, b, 2);
    }
    if (v >= 0 && v <= 0xFFFF) {
        unsigned char b[3] = {'M', (unsigned char)v, (unsigned char)(v >> 8)};
        return emit(w, b, 3);
    }
    if (v >= INT32_MIN && v <= INT32_MAX) return op_u32(w, 'J', (uint32_t)(int32_t)v);
    unsigned char b[10];
    uint64_t u;
    memcpy(&u, &v, 8);
    int n = 8; /* shortest two's complement */
    while (n > 1) {
        unsigned char top = (unsigned char)(u >> (8 * (n - 1))), next = (unsigned char)(u >> (8 * (n - 2)));
        if ((top == 0 && !(next & 0x80)) || (top == 0xFF && (next & 0x80))) n--;
        else break;
    }
    b[0] = 0x8a;
    b[1] = (unsigned char)n;
    for (int i = 0; i < n; i++) b[2 + i] = (unsigned char)(u >> (8 * i));
    return emit(w, b, (size_t)n + 2);
}

graft_status graft_pkw_float(graft_pkw *w, double v) {
    unsigned char b[9];
    uint64_t u;
    memcpy(&u, &v, 8);
    b[0] = 'G';
    for (int i = 0; i < 8; i++) b[1 + i] = (unsigned char)(u >> (8 * (7 - i))); /* big-endian */
    return emit(w, b, 9);
}

static bool utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static graft_status unicode(graft_pkw *w, const char *s, size_t n) {
    if (n > UINT32_MAX) return w->failed = graft_error(GRAFT_EINVAL, "save: a string of %zu bytes is too long", n);
    graft_status st = op_u32(w, 'X', (uint32_t)n);
    return st ? st : emit(w, s, n);
}

graft_status graft_pkw_str(graft_pkw *w, const char *s, size_t n) {
    if (!utf8_valid((const unsigned char *)s, n)) return graft_pkw_bytes(w, s, n);
    return unicode(w, s, n);
}

/* bytes as protocol 2 spells them: _codecs.encode(latin-1 text, 'latin1'). */
graft_status graft_pkw_bytes(graft_pkw *w, const char *s, size_t n) {
    if (n > UINT32_MAX / 2) return w->failed = graft_error(GRAFT_EINVAL, "save: bytes of %zu bytes are too long", n);
    unsigned char *t = malloc(2 * n + 1);
    if (!t) return w->failed = graft_error(GRAFT_ENOMEM, "save: out of memory");
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            t[j++] = c;
        } else {
            t[j++] = (unsigned char)(0xC0 | (c >> 6));
            t[j++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    graft_status st = global(w, "_codecs", "encode");
    if (!st) st = unicode(w, (const char *)t, j);
    free(t);
    if (!st) st = unicode(w, "latin1", 6);
    if (!st) st = op(w, 0x86); /* TUPLE2 */
    if (!st) st = op(w, 'R');
    return st;
}

static graft_status push_frame(graft_pkw *w, char close_op) {
    if (w->depth >= GRAFT_PICKLE_MAX_DEPTH)
        return w->failed = graft_error(GRAFT_EINVAL, "save: nesting deeper than %d levels (a table that contains itself?)",
                                       GRAFT_PICKLE_MAX_DEPTH);
    w->frames[w->depth].close_op = close_op;
    w->frames[w->depth].batch = 0;
    w->depth++;
    return GRAFT_OK;
}

graft_status graft_pkw_list_begin(graft_pkw *w) {
    graft_status s = op(w, ']');
    return s ? s : push_frame(w, 'e');
}

graft_status graft_pkw_dict_begin(graft_pkw *w, bool ordered) {
    graft_status s = ordered ? global(w, "collections", "OrderedDict") : op(w, '}');
    if (!s && ordered) s = op(w, ')');
    if (!s && ordered) s = op(w, 'R');
    return s ? s : push_frame(w, 'u');
}

/* Items go in batches of 1000 between MARK and APPENDS/SETITEMS, as Python's pickler. */
graft_status graft_pkw_item(graft_pkw *w) {
    if (!w->depth) return graft_error(GRAFT_EINTERNAL, "save: item outside a container");
    pkw_frame *f = &w->frames[w->depth - 1];
    graft_status s = GRAFT_OK;
    if (f->batch == 1000) {
        s = op(w, (unsigned char)f->close_op);
        f->batch = 0;
    }
    if (!s && f->batch == 0) s = op(w, '(');
    f->batch++;
    return s;
}

graft_status graft_pkw_end(graft_pkw *w) {
    if (!w->depth) return graft_error(GRAFT_EINTERNAL, "save: end outside a container");
    pkw_frame *f = &w->frames[--w->depth];
    return f->batch ? op(w, (unsigned char)f->close_op) : GRAFT_OK;
}

graft_status graft_pkw_metadata_begin(graft_pkw *w) {
    graft_status s = op(w, '}');
    return s ? s : unicode(w, "_metadata", 9);
}

graft_status graft_pkw_metadata_end(graft_pkw *w) {
    graft_status s = op(w, 's'); /* SETITEM into the state dict */
    return s ? s : op(w, 'b');  /* BUILD: sets the OrderedDict's attribute */
}

static const char *storage_class(graft_dtype d) {
    switch (d) {
    case GRAFT_F32: return "FloatStorage";
    case GRAFT_F64: return "DoubleStorage";
    case GRAFT_F16: return "HalfStorage";
    case GRAFT_BF16: return "BFloat16Storage";
    case GRAFT_I64: return "LongStorage";
    case GRAFT_I32: return "IntStorage";
    case GRAFT_I16: return "ShortStorage";
    case GRAFT_I8: return "CharStorage";
    case GRAFT_U8: return "ByteStorage";
    case GRAFT_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

static size_t ptr_hash(const void *p) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

/* The record index of storage s (added on first sight). */
static graft_status storage_key(graft_pkw *w, graft_tensor *t, size_t *key) {
    graft_storage *s = t->storage;
    if (w->nslots) {
        size_t mask = w->nslots - 1;
        for (size_t i = ptr_hash(s) & mask; w->slots[i]; i = (i + 1) & mask) {
            pkw_storage *e = &w->st[w->slots[i] - 1];
            if (e->s != s) continue;
            if (e->dtype != t->dtype)
                return w->failed = graft_error(GRAFT_ETYPE,
                                               "save: two tensors view the same storage as %s and %s: PyTorch cannot "
                                               "save multiple tensors or storages that view the same data as "
                                               "different types (clone one of them)",
                                               graft_dtype_name(e->dtype), graft_dtype_name(t->dtype));
            *key = w->slots[i] - 1;
            return GRAFT_OK;
        }
    }
    if (w->nst == w->stcap) {
        size_t cap = w->stcap ? w->stcap * 2 : 64;
        pkw_storage *n = realloc(w->st, cap * sizeof *n);
        if (!n) return w->failed = graft_error(GRAFT_ENOMEM, "save: out of memory");
        w->st = n;
        w->stcap = cap;
    }
    if ((w->nst + 1) * 2 > w->nslots) {
        size_t ns = w->nslots ? w->nslots * 2 : 128;
        size_t *sl = calloc(ns, sizeof *sl);
        if (!sl) return w->failed = graft_error(GRAFT_ENOMEM, "save: out of memory");
        for (size_t i = 0; i < w->nst; i++) {
            size_t j = ptr_hash(w->st[i].s) & (ns - 1);
            while (sl[j]) j = (j + 1) & (ns - 1);
            sl[j] = i + 1;
        }
        free(w->slots);
        w->slots = sl;
        w->nslots = ns;
    }
    graft_storage_retain(s);
    w->st[w->nst].s = s;
    w->st[w->nst].dtype = t->dtype;
    size_t j = ptr_hash(s) & (w->nslots - 1);
    while (w->slots[j]) j = (j + 1) & (w->nslots - 1);
    w->slots[j] = w->nst + 1;
    *key = w->nst++;
    return GRAFT_OK;
}

static graft_status int_tuple(graft_pkw *w, int n, const int64_t *v) {
    graft_status s = GRAFT_OK;
    if (n == 0) return op(w, ')');
    if (n > 3) s = op(w, '(');
    for (int i = 0; i < n && !s; i++) s = graft_pkw_int(w, v[i]);
    if (!s) s = op(w, n == 1 ? 0x85 : n == 2 ? 0x86 : n == 3 ? 0x87 : 't');
    return s;
}

graft_status graft_pkw_tensor(graft_pkw *w, graft_tensor *t) {
    if (w->failed) return w->failed;
    if (t->storage->device.type != GRAFT_CPU)
        return w->failed = graft_error(GRAFT_EDEVICE, "save: tensors must be on the CPU");
    const char *cls = storage_class(t->dtype);
    if (!cls) return w->failed = graft_error(GRAFT_ETYPE, "save: dtype %s has no PyTorch storage class", graft_dtype_name(t->dtype));
    size_t key = 0;
    graft_status s = storage_key(w, t, &key);
    if (s) return s;
    char keytxt[24];
    int klen = snprintf(keytxt, sizeof keytxt, "%zu", key);
    int64_t numel = (int64_t)(t->storage->nbytes / graft_dtype_size(t->dtype));
    /* _rebuild_tensor_v2(('storage', Class, key, 'cpu', numel), offset, size, stride,
     * False, OrderedDict()) */
    s = global(w, "torch._utils", "_rebuild_tensor_v2");
    if (!s) s = op(w, '(');
    if (!s) s = op(w, '(');
    if (!s) s = unicode(w, "storage", 7);
    if (!s) s = global(w, "torch", cls);
    if (!s) s = unicode(w, keytxt, (size_t)klen);
    if (!s) s = unicode(w, "cpu", 3);
    if (!s) s = graft_pkw_int(w, numel);
    if (!s) s = op(w, 't');
    if (!s) s = op(w, 'Q');
    if (!s) s = graft_pkw_int(w, t->offset);
    if (!s) s = int_tuple(w, t->ndim, t->shape);
    if (!s) s = int_tuple(w, t->ndim, t->stride);
    if (!s) s = op(w, 0x89);
    if (!s) s = global(w, "collections", "OrderedDict");
    if (!s) s = op(w, ')');
    if (!s) s = op(w, 'R');
    if (!s) s = op(w, 't');
    if (!s) s = op(w, 'R');
    return s;
}

/* torch.save's archive name: the base name without its last extension. */
static char *archive_name(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n == 0) return strdup("archive");
    char *a = malloc(n + 1);
    if (!a) return NULL;
    memcpy(a, base, n);
    a[n] = 0;
    return a;
}

graft_status graft_pth_save(graft_pkw *w, const char *path, const graft_pth_save_opts *o) {
    if (w->failed) return w->failed;
    if (w->depth) return graft_error(GRAFT_EINTERNAL, "save: unbalanced containers");
    graft_status s = op(w, '.');
    if (s) return s;
    char *arch = archive_name(path);
    if (!arch) return graft_error(GRAFT_ENOMEM, "save: out of memory");
    size_t rlen = strlen(arch) + 64;
    char *rec = malloc(rlen);
    if (!rec) {
        free(arch);
        return graft_error(GRAFT_ENOMEM, "save: out of memory");
    }
    graft_atomic_file f;
    if ((s = graft_atomic_open(&f, path))) {
        free(arch);
        free(rec);
        return s;
    }
    graft_zip_writer z;
    graft_zip_writer_init(&z, &f);
    z.force_zip64 = o && o->force_zip64;
    snprintf(rec, rlen, "%s/data.pkl", arch);
    s = graft_zip_writer_entry(&z, rec, w->buf, w->len);
    snprintf(rec, rlen, "%s/byteorder", arch);
    if (!s) s = graft_zip_writer_entry(&z, rec, "little", 6);
    for (size_t i = 0; i < w->nst && !s; i++) {
        graft_storage *st = w->st[i].s;
        size_t esz = graft_dtype_size(w->st[i].dtype);
        size_t nbytes = st->nbytes / esz * esz;
        snprintf(rec, rlen, "%s/data/%zu", arch, i);
        s = graft_zip_writer_entry(&z, rec, st->data, nbytes);
    }
    snprintf(rec, rlen, "%s/version", arch);
    if (!s) s = graft_zip_writer_entry(&z, rec, "3\n", 2);
    if (!s) s = graft_zip_writer_finish(&z);
    graft_zip_writer_free(&z);
    free(arch);
    free(rec);
    if (s) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", graft_last_error());
        graft_atomic_abort(&f);
        return graft_error(s, "%s", msg);
    }
    return graft_atomic_commit(&f);
}
