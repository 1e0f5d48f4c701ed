/* graft checkpoints: the restricted pickle VM (see pickle.h). A value stack, a stack of
 * MARK positions and a memo, all bounded by a byte budget; opcodes read with bounds
 * checks; "calls" of allowlisted globals interpreted as data constructors. Nothing from
 * the file is ever executed or imported. */
#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena: bump allocation in blocks, everything freed at once ---- */

typedef struct pk_block {
    struct pk_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} pk_block;

#define PK_BLOCK 65536

typedef struct {
    const unsigned char *key;   /* storage key hash table: key string, index */
    graft_pickle_storage *st;
} pk_slot;

struct graft_pickle {
    graft_pickle_opts o;
    char *name;
    pk_block *blocks;
    size_t spent, budget;        /* every byte allocated (arena, stacks, memo) */
    graft_pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    graft_pv **memo;
    size_t memo_cap, memo_count;
    graft_pickle_storage **storages;
    size_t nstorages, stcap;
    pk_slot *slots;              /* open addressing on key, power-of-two size */
    size_t nslots;
    /* the run in progress */
    const unsigned char *p;
    size_t len, pos, op_pos;
    /* strict mode: the first unknown global, reported at the end (a whole model is
     * recognised from its module state before saying so) */
    const char *first_unknown;
    const char *model_class;
    const char *root_module;   /* the class of the last module BUILT: the outermost one */
    bool fatal;                  /* an error that the deferred refusal must not replace */
};

static graft_status pk_fail(graft_pickle *pk, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Errors name the file and the opcode's offset in the pickle. */
static graft_status pk_fail(graft_pickle *pk, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return graft_error(GRAFT_EFORMAT, "cannot load \"%s\": pickle offset %zu: %s", pk->name, pk->op_pos, msg);
}

static graft_status pk_nomem(graft_pickle *pk) {
    pk->fatal = true;
    return graft_error(GRAFT_ENOMEM,
                       "cannot load \"%s\": its pickle needs more memory than its size allows (%zu bytes); the "
                       "file is damaged or hostile",
                       pk->name, pk->budget);
}

static bool pk_charge(graft_pickle *pk, size_t n) {
    if (n > pk->budget - pk->spent) return false;
    pk->spent += n;
    return true;
}

static void *pk_alloc(graft_pickle *pk, size_t n) {
    n = (n + 15) & ~(size_t)15;
    pk_block *b = pk->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > PK_BLOCK / 4 ? n : PK_BLOCK;
        if (!pk_charge(pk, cap + sizeof(pk_block))) return NULL;
        b = malloc(sizeof(pk_block) + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        if (cap == n && pk->blocks) { /* a big one-off: keep the current block in front */
            b->next = pk->blocks->next;
            pk->blocks->next = b;
            b->used = n;
            return b->data;
        }
        b->next = pk->blocks;
        pk->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

/* Grows a malloc'd array to hold at least `need` elements, charging the budget. */
static bool pk_grow(graft_pickle *pk, void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 64;
    while (ncap < need) ncap *= 2;
    if (!pk_charge(pk, (ncap - *cap) * elem)) return false;
    void *q = realloc(*arr, ncap * elem);
    if (!q) return false;
    *arr = q;
    *cap = ncap;
    return true;
}

/* ---- values ---- */

static graft_pv *pv_new(graft_pickle *pk, int type) {
    graft_pv *v = pk_alloc(pk, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->type = (uint8_t)type;
    return v;
}

static char *pk_strdup(graft_pickle *pk, const char *s, size_t n) {
    char *d = pk_alloc(pk, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static graft_pv *pv_str(graft_pickle *pk, int type, const char *s, size_t n) {
    graft_pv *v = pv_new(pk, type);
    if (!v) return NULL;
    char *d = pk_strdup(pk, s, n);
    if (!d) return NULL;
    v->u.s.p = d;
    v->u.s.len = n;
    return v;
}

/* Appends one item to a LIST/SET/TUPLE/DICT item array (arena, doubling). */
static bool pv_push_item(graft_pickle *pk, graft_pv *c, graft_pv *item) {
    if (c->u.seq.n == c->u.seq.cap) {
        if (c->u.seq.cap >= (1u << 30)) return false;
        uint32_t ncap = c->u.seq.cap ? c->u.seq.cap * 2 : 4;
        graft_pv **items = pk_alloc(pk, ncap * sizeof *items);
        if (!items) return false;
        if (c->u.seq.n) memcpy(items, c->u.seq.items, c->u.seq.n * sizeof *items);
        c->u.seq.items = items;
        c->u.seq.cap = ncap;
    }
    c->u.seq.items[c->u.seq.n++] = item;
    return true;
}

const char *graft_pv_type_name(int type) {
    static const char *names[] = {"None", "bool", "int", "float", "str", "bytes", "list", "tuple", "set",
                                  "dict", "OrderedDict", "tensor", "storage", "dtype", "global", "object"};
    return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}

bool graft_pv_is_seq(const graft_pv *v) {
    return v->type == GRAFT_PV_LIST || v->type == GRAFT_PV_TUPLE || v->type == GRAFT_PV_SET;
}
bool graft_pv_is_dict(const graft_pv *v) { return v->type == GRAFT_PV_DICT || v->type == GRAFT_PV_ODICT; }

/* A short printable name for a value in messages (globals by name). */
static const char *pv_desc(const graft_pv *v) {
    if (v->type == GRAFT_PV_GLOBAL) return v->u.global->qualname;
    if (v->type == GRAFT_PV_PLACEHOLDER) return v->u.ph->cls;
    return graft_pv_type_name(v->type);
}

/* ---- VM lifetime ---- */

graft_status graft_pickle_new(graft_pickle **out, const graft_pickle_opts *o, size_t budget) {
    *out = NULL;
    graft_pickle *pk = calloc(1, sizeof *pk);
    if (!pk) return graft_error(GRAFT_ENOMEM, "out of memory");
    pk->o = *o;
    pk->name = strdup(o->name ? o->name : "?");
    if (!pk->name) {
        free(pk);
        return graft_error(GRAFT_ENOMEM, "out of memory");
    }
    pk->o.name = pk->name;
    pk->budget = budget;
    *out = pk;
    return GRAFT_OK;
}

void graft_pickle_free(graft_pickle *pk) {
    if (!pk) return;
    for (size_t i = 0; i < pk->nstorages; i++) graft_storage_release(pk->storages[i]->resolved);
    for (pk_block *b = pk->blocks; b;) {
        pk_block *n = b->next;
        free(b);
        b = n;
    }
    free(pk->stack);
    free(pk->marks);
    free(pk->memo);
    free(pk->storages);
    free(pk->slots);
    free(pk->name);
    free(pk);
}

size_t graft_pickle_storage_count(const graft_pickle *pk) { return pk->nstorages; }
graft_pickle_storage *graft_pickle_storage_at(const graft_pickle *pk, size_t i) { return pk->storages[i]; }

static uint64_t pk_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

graft_pickle_storage *graft_pickle_find_storage(const graft_pickle *pk, const char *key) {
    if (!pk->nslots) return NULL;
    size_t mask = pk->nslots - 1;
    for (size_t i = pk_hash(key) & mask;; i = (i + 1) & mask) {
        if (!pk->slots[i].st) return NULL;
        if (strcmp(pk->slots[i].st->key, key) == 0) return pk->slots[i].st;
    }
}

static bool pk_add_storage(graft_pickle *pk, graft_pickle_storage *st) {
    if (!pk_grow(pk, (void **)&pk->storages, &pk->stcap, pk->nstorages + 1, sizeof *pk->storages)) return false;
    if ((pk->nstorages + 1) * 2 > pk->nslots) {
        size_t n = pk->nslots ? pk->nslots * 2 : 64;
        if (!pk_charge(pk, n * sizeof(pk_slot))) return false;
        pk_slot *s = calloc(n, sizeof *s);
        if (!s) return false;
        for (size_t i = 0; i < pk->nstorages; i++) {
            size_t j = pk_hash(pk->storages[i]->key) & (n - 1);
            while (s[j].st) j = (j + 1) & (n - 1);
            s[j].st = pk->storages[i];
        }
        free(pk->slots);
        pk->slots = s;
        pk->nslots = n;
    }
    size_t j = pk_hash(st->key) & (pk->nslots - 1);
    while (pk->slots[j].st) j = (j + 1) & (pk->nslots - 1);
    pk->slots[j].st = st;
    st->index = pk->nstorages;
    pk->storages[pk->nstorages++] = st;
    return true;
}

/* ---- the stack ---- */

static graft_status pk_push(graft_pickle *pk, graft_pv *v) {
    if (!v) return pk_nomem(pk);
    if (!pk_grow(pk, (void **)&pk->stack, &pk->scap, pk->sp + 1, sizeof *pk->stack)) return pk_nomem(pk);
    pk->stack[pk->sp++] = v;
    return GRAFT_OK;
}

/* The bottom of the current frame: values below the last MARK are not reachable. */
static size_t pk_floor(const graft_pickle *pk) { return pk->nmarks ? pk->marks[pk->nmarks - 1] : 0; }

static graft_status pk_need(graft_pickle *pk, size_t n, const char *op) {
    if (pk->sp - pk_floor(pk) < n)
        return pk_fail(pk, "%s needs %zu value%s on the stack, found %zu (stack underflow)", op, n, n == 1 ? "" : "s",
                       pk->sp - pk_floor(pk));
    return GRAFT_OK;
}

static graft_pv *pk_pop(graft_pickle *pk) { return pk->stack[--pk->sp]; }

/* Pops back to the last MARK; the values above it are items[0..*n). */
static graft_status pk_pop_mark(graft_pickle *pk, const char *op, graft_pv ***items, size_t *n) {
    if (!pk->nmarks) return pk_fail(pk, "%s without a MARK", op);
    size_t m = pk->marks[--pk->nmarks];
    *items = pk->stack ? pk->stack + m : NULL;
    *n = pk->sp - m;
    pk->sp = m;
    return GRAFT_OK;
}

/* ---- reading the opcode stream ---- */

static graft_status rd(graft_pickle *pk, size_t n, const unsigned char **out, const char *op) {
    if (n > pk->len - pk->pos)
        return pk_fail(pk, "%s needs %zu bytes but the pickle ends %zu bytes later (truncated)", op, n,
                       pk->len - pk->pos);
    *out = pk->p + pk->pos;
    pk->pos += n;
    return GRAFT_OK;
}

static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t le64(const unsigned char *b) { return (uint64_t)le32(b) | (uint64_t)le32(b + 4) << 32; }

/* A newline-terminated line (GLOBAL's module and name), at most 256 bytes. */
static graft_status rd_line(graft_pickle *pk, const char **s, size_t *n) {
    size_t start = pk->pos, lim = pk->len - pk->pos < 257 ? pk->len - pk->pos : 257;
    const unsigned char *nl = memchr(pk->p + start, '\n', lim);
    if (!nl) return pk_fail(pk, "GLOBAL name is not a line of at most 256 bytes");
    *s = (const char *)pk->p + start;
    *n = (size_t)(nl - (pk->p + start));
    pk->pos = start + *n + 1;
    return GRAFT_OK;
}

/* ---- globals ---- */

/* Modules and callables that can run code: refused even with allow_unknown. */
static bool global_dangerous(const char *mod, const char *name) {
    static const char *mods[] = {"os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib",
                                 "runpy", "pty", "ctypes", "pickle", "_pickle", "marshal", "code", "codeop",
                                 "multiprocessing", "signal", "webbrowser", "pdb", "platform", "tempfile", "io",
                                 "_io", "pathlib", "_posixsubprocess", "commands", "popen2",
                                 "torch.serialization", "torch.jit", "torch._C", "torch.hub", "torch.ops",
                                 "dill", "cloudpickle", "types", "operator", "functools", "inspect", "asyncio",
                                 "threading", "_thread", "urllib", "http", "requests", "numpy.testing"};
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        size_t n = strlen(mods[i]);
        if (strncmp(mod, mods[i], n) == 0 && (mod[n] == 0 || mod[n] == '.')) return true;
    }
    if (strcmp(mod, "builtins") == 0) {
        static const char *names[] = {"eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__",
                                      "open", "globals", "locals", "vars", "input", "breakpoint", "exit", "quit",
                                      "help", "type", "__build_class__", "memoryview", "print", "super"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(name, names[i]) == 0) return true;
    }
    if (strcmp(mod, "torch.storage") == 0 && strcmp(name, "_load_from_bytes") == 0) return true;
    if (strcmp(mod, "torch") == 0 && (strcmp(name, "load") == 0 || strcmp(name, "save") == 0)) return true;
    return false;
}

static const struct { const char *name; int dtype; } storage_classes[] = {
    {"DoubleStorage", GRAFT_F64}, {"FloatStorage", GRAFT_F32}, {"HalfStorage", GRAFT_F16},
    {"BFloat16Storage", GRAFT_BF16}, {"LongStorage", GRAFT_I64}, {"IntStorage", GRAFT_I32},
    {"ShortStorage", GRAFT_I16}, {"CharStorage", GRAFT_I8}, {"ByteStorage", GRAFT_U8},
    {"BoolStorage", GRAFT_BOOL}, {"ComplexFloatStorage", -1}, {"ComplexDoubleStorage", -1},
    {"QInt8Storage", -1}, {"QUInt8Storage", -1}, {"QInt32Storage", -1}, {"QUInt4x2Storage", -1},
    {"QUInt2x4Storage", -1}, {"UntypedStorage", -2}, {"_UntypedStorage", -2},
};
#define DTYPE_UNTYPED (-2)

static const struct { const char *name; int dtype; } dtype_names[] = {
    {"float32", GRAFT_F32}, {"float", GRAFT_F32},    {"float64", GRAFT_F64}, {"double", GRAFT_F64},
    {"float16", GRAFT_F16}, {"half", GRAFT_F16},     {"bfloat16", GRAFT_BF16}, {"int64", GRAFT_I64},
    {"long", GRAFT_I64},    {"int32", GRAFT_I32},    {"int", GRAFT_I32},     {"int16", GRAFT_I16},
    {"short", GRAFT_I16},   {"int8", GRAFT_I8},      {"uint8", GRAFT_U8},    {"bool", GRAFT_BOOL},
    {"complex64", -1},      {"complex128", -1},      {"complex32", -1},      {"cfloat", -1},
    {"cdouble", -1},        {"qint8", -1},           {"quint8", -1},         {"qint32", -1},
    {"float8_e4m3fn", -1},  {"float8_e5m2", -1},     {"uint16", -1},         {"uint32", -1},
    {"uint64", -1},
};

static bool streq(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* Classifies module.name: an allowlisted kind, UNKNOWN, or an error for globals that
 * can run code. */
static graft_status resolve_global(graft_pickle *pk, const char *m, size_t mlen, const char *n, size_t nlen,
                                   graft_pv **out) {
    char mod[260], name[260];
    if (mlen == 0 || nlen == 0 || mlen > 256 || nlen > 256) return pk_fail(pk, "a global with an empty or overlong name");
    /* printable ASCII only: names come from the file and go into messages */
    for (size_t i = 0; i < mlen; i++) mod[i] = (m[i] > 32 && m[i] < 127) ? m[i] : '?';
    for (size_t i = 0; i < nlen; i++) name[i] = (n[i] > 32 && n[i] < 127) ? n[i] : '?';
    mod[mlen] = name[nlen] = 0;
    if (streq(mod, "__builtin__")) strcpy(mod, "builtins");

    graft_pickle_global *g = pk_alloc(pk, sizeof *g);
    graft_pv *v = pv_new(pk, GRAFT_PV_GLOBAL);
    if (!g || !v) return pk_nomem(pk);
    char qual[520];
    snprintf(qual, sizeof qual, "%s.%s", mod, name);
    g->qualname = pk_strdup(pk, qual, strlen(qual));
    if (!g->qualname) return pk_nomem(pk);
    g->dtype = -1;
    g->kind = GRAFT_PG_UNKNOWN;
    v->u.global = g;
    *out = v;

    if (streq(mod, "collections")) {
        if (streq(name, "OrderedDict")) g->kind = GRAFT_PG_ODICT;
        else if (streq(name, "Counter")) g->kind = GRAFT_PG_COUNTER;
    } else if (streq(mod, "torch._utils")) {
        if (streq(name, "_rebuild_tensor_v2")) g->kind = GRAFT_PG_REBUILD_V2;
        else if (streq(name, "_rebuild_tensor")) g->kind = GRAFT_PG_REBUILD_V1;
        else if (streq(name, "_rebuild_tensor_v3")) g->kind = GRAFT_PG_REBUILD_V3;
        else if (streq(name, "_rebuild_parameter")) g->kind = GRAFT_PG_REBUILD_PARAM;
        else if (streq(name, "_rebuild_parameter_with_state")) g->kind = GRAFT_PG_REBUILD_PARAM_STATE;
    } else if (streq(mod, "torch._tensor")) {
        if (streq(name, "_rebuild_from_type_v2")) g->kind = GRAFT_PG_REBUILD_FROM_TYPE;
        else if (streq(name, "Tensor")) g->kind = GRAFT_PG_TENSOR_CLASS;
    } else if (streq(mod, "torch") || streq(mod, "torch.cuda") || streq(mod, "torch.storage")) {
        for (size_t i = 0; i < sizeof storage_classes / sizeof storage_classes[0]; i++)
            if (streq(name, storage_classes[i].name)) {
                g->kind = GRAFT_PG_STORAGE_CLASS;
                g->dtype = storage_classes[i].dtype;
            }
        if (streq(mod, "torch")) {
            for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
                if (streq(name, dtype_names[i].name)) {
                    g->kind = GRAFT_PG_DTYPE;
                    g->dtype = dtype_names[i].dtype;
                }
            if (streq(name, "Size")) g->kind = GRAFT_PG_SIZE;
            else if (streq(name, "device")) g->kind = GRAFT_PG_DEVICE;
            else if (streq(name, "Tensor")) g->kind = GRAFT_PG_TENSOR_CLASS;
        }
    } else if (streq(mod, "torch.nn.parameter") || streq(mod, "torch.nn")) {
        if (streq(name, "Parameter")) g->kind = GRAFT_PG_PARAMETER_CLASS;
    } else if (streq(mod, "_codecs")) {
        if (streq(name, "encode")) g->kind = GRAFT_PG_ENCODE;
    } else if (streq(mod, "builtins")) {
        if (streq(name, "set")) g->kind = GRAFT_PG_SET;
        else if (streq(name, "frozenset")) g->kind = GRAFT_PG_FROZENSET;
        else if (streq(name, "bytearray")) g->kind = GRAFT_PG_BYTEARRAY;
    }
    if (g->kind != GRAFT_PG_UNKNOWN) return GRAFT_OK;
    if (global_dangerous(mod, name)) {
        pk->fatal = true;
        return graft_error(GRAFT_EFORMAT,
                           "refusing to load \"%s\": it calls %s, which is not a tensor or container (a global "
                           "that can run code: refused even with allow_unknown)",
                           pk->name, g->qualname);
    }
    if (!pk->first_unknown) pk->first_unknown = g->qualname;
    if (!pk->model_class && strncmp(mod, "torch.nn.", 9) == 0) pk->model_class = g->qualname;
    return GRAFT_OK;
}

/* ---- tensors ---- */

static bool pv_int(const graft_pv *v, int64_t *out) {
    if (v->type == GRAFT_PV_INT) {
        *out = v->u.i;
        return true;
    }
    if (v->type == GRAFT_PV_BOOL) {
        *out = v->u.b;
        return true;
    }
    return false;
}

/* A tuple (or list) of ints into dims; ndim <= GRAFT_MAX_DIMS. */
static graft_status pv_dims(graft_pickle *pk, const graft_pv *v, int64_t *dims, int *ndim, const char *what,
                            const char *fn) {
    if (v->type != GRAFT_PV_TUPLE && v->type != GRAFT_PV_LIST)
        return pk_fail(pk, "%s: %s is a %s, not a tuple of ints", fn, what, graft_pv_type_name(v->type));
    if (v->u.seq.n > GRAFT_MAX_DIMS)
        return pk_fail(pk, "%s: a tensor with %u dims (graft supports at most %d)", fn, v->u.seq.n, GRAFT_MAX_DIMS);
    for (uint32_t i = 0; i < v->u.seq.n; i++)
        if (!pv_int(v->u.seq.items[i], &dims[i]))
            return pk_fail(pk, "%s: %s holds a %s, not an int", fn, what, graft_pv_type_name(v->u.seq.items[i]->type));
    *ndim = (int)v->u.seq.n;
    return GRAFT_OK;
}

/* Builds a tensor value from (storage, offset, size, stride) and checks that the view
 * lies inside the storage with overflow-safe arithmetic. */
static graft_status make_tensor(graft_pickle *pk, graft_pv **args, const char *fn, int v3_dtype, graft_pv **out) {
    if (args[0]->type != GRAFT_PV_STORAGE)
        return pk_fail(pk, "%s: the first argument is a %s, not a storage", fn, pv_desc(args[0]));
    graft_pickle_storage *st = args[0]->u.storage;
    graft_pickle_tensor *t = pk_alloc(pk, sizeof *t);
    graft_pv *v = pv_new(pk, GRAFT_PV_TENSOR);
    if (!t || !v) return pk_nomem(pk);
    memset(t, 0, sizeof *t);
    t->storage = st;
    if (!pv_int(args[1], &t->offset)) return pk_fail(pk, "%s: the storage offset is not an int", fn);
    int nd2;
    graft_status s;
    if ((s = pv_dims(pk, args[2], t->shape, &t->ndim, "size", fn))) return s;
    if ((s = pv_dims(pk, args[3], t->stride, &nd2, "stride", fn))) return s;
    if (nd2 != t->ndim) return pk_fail(pk, "%s: size has %d dims but stride has %d", fn, t->ndim, nd2);

    if (v3_dtype != DTYPE_UNTYPED) { /* _rebuild_tensor_v3: the dtype types an untyped storage */
        if (v3_dtype < 0) return pk_fail(pk, "%s: a dtype graft does not support", fn);
        if (st->dtype == DTYPE_UNTYPED) {
            size_t esz = graft_dtype_size((graft_dtype)v3_dtype);
            if (st->numel % (int64_t)esz)
                return pk_fail(pk, "%s: storage %s holds %lld bytes, not a whole number of %s elements", fn, st->key,
                               (long long)st->numel, graft_dtype_name((graft_dtype)v3_dtype));
            st->dtype = v3_dtype;
            st->numel /= (int64_t)esz;
        } else if (st->dtype != v3_dtype) {
            return pk_fail(pk, "%s: storage %s is viewed as both %s and %s", fn, st->key,
                           graft_dtype_name((graft_dtype)st->dtype), graft_dtype_name((graft_dtype)v3_dtype));
        }
    } else if (st->dtype < 0) {
        return pk_fail(pk, "%s: storage %s is untyped and no dtype is given", fn, st->key);
    }

    if (t->offset < 0) return pk_fail(pk, "%s: negative storage offset %lld", fn, (long long)t->offset);
    int64_t numel = 1, hi = t->offset;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) return pk_fail(pk, "%s: negative size %lld in dim %d", fn, (long long)t->shape[i], i);
        if (t->stride[i] < 0)
            return pk_fail(pk, "%s: negative stride %lld in dim %d", fn, (long long)t->stride[i], i);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel) || numel > ((int64_t)1 << 46))
            return pk_fail(pk, "%s: a tensor with too many elements (huge dims)", fn);
    }
    if (numel > 0) {
        for (int i = 0; i < t->ndim; i++) {
            int64_t reach;
            if (__builtin_mul_overflow(t->shape[i] - 1, t->stride[i], &reach) || __builtin_add_overflow(hi, reach, &hi))
                return pk_fail(pk, "%s: tensor geometry overflows", fn);
        }
        if (hi >= st->numel) {
            char sb[GRAFT_MAX_DIMS * 24 + 3];
            return pk_fail(pk, "%s: a tensor of shape %s at offset %lld reaches element %lld of storage %s, which "
                               "holds %lld",
                           fn, graft_shape_str(t->ndim, t->shape, sb, sizeof sb), (long long)t->offset,
                           (long long)hi, st->key, (long long)st->numel);
        }
    }
    v->u.tensor = t;
    *out = v;
    return GRAFT_OK;
}

static bool pv_empty_or_none(const graft_pv *v) {
    if (v->type == GRAFT_PV_NONE) return true;
    if (graft_pv_is_dict(v)) return v->u.seq.n == 0;
    return false;
}

/* The persistent id of a storage: ('storage', class, key, location, numel[, view]). */
static graft_status persistent_load(graft_pickle *pk, graft_pv *pid, graft_pv **out) {
    if (pid->type != GRAFT_PV_TUPLE || pid->u.seq.n < 1)
        return pk_fail(pk, "BINPERSID: the persistent id is a %s, not a tuple", graft_pv_type_name(pid->type));
    graft_pv **it = pid->u.seq.items;
    uint32_t n = pid->u.seq.n;
    if ((it[0]->type != GRAFT_PV_STR && it[0]->type != GRAFT_PV_BYTES))
        return pk_fail(pk, "BINPERSID: the persistent id does not start with a name");
    const char *kind = it[0]->u.s.p;
    if (pk->o.legacy && streq(kind, "module")) {
        const char *cls = n > 1 ? pv_desc(it[1]) : "?";
        if (!pk->model_class) pk->model_class = pk_strdup(pk, cls, strlen(cls));
        if (!pk->first_unknown) pk->first_unknown = pk->model_class;
        if (!pk->model_class) return pk_nomem(pk);
        *out = n > 1 ? it[1] : pv_new(pk, GRAFT_PV_NONE);
        return *out ? GRAFT_OK : pk_nomem(pk);
    }
    if (!streq(kind, "storage")) return pk_fail(pk, "BINPERSID: unknown persistent id kind \"%.40s\"", kind);
    uint32_t want = pk->o.legacy ? 6 : 5;
    if (n != want)
        return pk_fail(pk, "BINPERSID: a storage id has %u fields, expected %u (%s format)", n, want,
                       pk->o.legacy ? "legacy" : "zip");
    graft_pv *cls = it[1], *key = it[2], *loc = it[3], *num = it[4];
    if (cls->type != GRAFT_PV_GLOBAL || cls->u.global->kind != GRAFT_PG_STORAGE_CLASS)
        return pk_fail(pk, "BINPERSID: the storage type is %s, not a storage class", pv_desc(cls));
    int dtype = cls->u.global->dtype;
    if (dtype == -1)
        return pk_fail(pk, "BINPERSID: %s tensors are not supported by graft", cls->u.global->qualname);
    char keybuf[32];
    const char *k;
    if (key->type == GRAFT_PV_STR || key->type == GRAFT_PV_BYTES) {
        k = key->u.s.p;
        if (key->u.s.len == 0 || key->u.s.len > 200 || strlen(k) != key->u.s.len || strchr(k, '/'))
            return pk_fail(pk, "BINPERSID: a storage key that is empty, overlong, or holds '/' or NUL");
    } else if (key->type == GRAFT_PV_INT) {
        snprintf(keybuf, sizeof keybuf, "%lld", (long long)key->u.i);
        k = keybuf;
    } else {
        return pk_fail(pk, "BINPERSID: the storage key is a %s", graft_pv_type_name(key->type));
    }
    if (loc->type != GRAFT_PV_STR) return pk_fail(pk, "BINPERSID: the storage location is not a string");
    int64_t numel;
    if (!pv_int(num, &numel) || numel < 0) return pk_fail(pk, "BINPERSID: the storage size is not a count");
    size_t esz = dtype == DTYPE_UNTYPED ? 1 : graft_dtype_size((graft_dtype)dtype);
    if (numel > (int64_t)(((uint64_t)1 << 62) / esz))
        return pk_fail(pk, "BINPERSID: storage %s claims %lld elements", k, (long long)numel);

    graft_pickle_storage *st = graft_pickle_find_storage(pk, k);
    if (st) {
        if (st->base) st = st->base;
        if ((st->dtype != dtype && !(dtype == DTYPE_UNTYPED)) || (dtype != DTYPE_UNTYPED && st->numel != numel))
            return pk_fail(pk, "BINPERSID: storage %s appears with different types or sizes", k);
    } else {
        st = pk_alloc(pk, sizeof *st);
        if (!st) return pk_nomem(pk);
        memset(st, 0, sizeof *st);
        st->key = pk_strdup(pk, k, strlen(k));
        st->location = pk_strdup(pk, loc->u.s.p, loc->u.s.len);
        if (!st->key || !st->location) return pk_nomem(pk);
        st->dtype = dtype;
        st->numel = numel;
        if (!pk_add_storage(pk, st)) return pk_nomem(pk);
    }
    if (pk->o.legacy && it[5]->type != GRAFT_PV_NONE) {
        /* (view_key, offset, view_numel): a slice of the root storage */
        graft_pv *vm = it[5];
        int64_t off, vn;
        if (vm->type != GRAFT_PV_TUPLE || vm->u.seq.n != 3 ||
            (vm->u.seq.items[0]->type != GRAFT_PV_STR && vm->u.seq.items[0]->type != GRAFT_PV_BYTES) ||
            !pv_int(vm->u.seq.items[1], &off) || !pv_int(vm->u.seq.items[2], &vn))
            return pk_fail(pk, "BINPERSID: a malformed storage view (view_key, offset, size)");
        const char *vk = vm->u.seq.items[0]->u.s.p;
        if (off < 0 || vn < 0 || off > st->numel || vn > st->numel - off)
            return pk_fail(pk, "BINPERSID: storage view %.40s [%lld, +%lld) lies outside storage %s of %lld elements",
                           vk, (long long)off, (long long)vn, st->key, (long long)st->numel);
        graft_pickle_storage *view = graft_pickle_find_storage(pk, vk);
        if (view) {
            if (view->base != st || view->base_offset != off || view->numel != vn)
                return pk_fail(pk, "BINPERSID: storage view %.40s is declared twice differently", vk);
        } else {
            view = pk_alloc(pk, sizeof *view);
            if (!view) return pk_nomem(pk);
            memset(view, 0, sizeof *view);
            view->key = pk_strdup(pk, vk, strlen(vk));
            if (!view->key) return pk_nomem(pk);
            view->location = st->location;
            view->dtype = st->dtype;
            view->numel = vn;
            view->base = st;
            view->base_offset = off;
            if (!pk_add_storage(pk, view)) return pk_nomem(pk);
        }
        st = view;
    }
    graft_pv *v = pv_new(pk, GRAFT_PV_STORAGE);
    if (!v) return pk_nomem(pk);
    v->u.storage = st;
    *out = v;
    return GRAFT_OK;
}

/* ---- REDUCE / NEWOBJ / BUILD: the allowlisted constructors ---- */

static graft_status args_n(graft_pickle *pk, graft_pv *args, const char *fn, uint32_t lo, uint32_t hi) {
    if (args->type != GRAFT_PV_TUPLE) return pk_fail(pk, "%s: arguments are a %s, not a tuple", fn, graft_pv_type_name(args->type));
    if (args->u.seq.n < lo || args->u.seq.n > hi) {
        if (lo == hi) return pk_fail(pk, "%s takes %u arguments, got %u", fn, lo, args->u.seq.n);
        return pk_fail(pk, "%s takes %u to %u arguments, got %u", fn, lo, hi, args->u.seq.n);
    }
    return GRAFT_OK;
}

/* Copies the items of a list/tuple/set into container c (which must be a sequence). */
static graft_status fill_items(graft_pickle *pk, graft_pv *c, const graft_pv *src, const char *fn) {
    if (!graft_pv_is_seq(src)) return pk_fail(pk, "%s: expected a list or tuple, got %s", fn, pv_desc(src));
    for (uint32_t i = 0; i < src->u.seq.n; i++)
        if (!pv_push_item(pk, c, src->u.seq.items[i])) return pk_nomem(pk);
    return GRAFT_OK;
}

/* Text to bytes as Python's str.encode(enc) for latin1 (code points < 256) and utf-8. */
static graft_status encode_text(graft_pickle *pk, const graft_pv *text, const graft_pv *enc, const char *fn,
                                graft_pv **out) {
    if (text->type != GRAFT_PV_STR) return pk_fail(pk, "%s: expected text, got %s", fn, pv_desc(text));
    const char *e = "utf-8";
    if (enc) {
        if (enc->type != GRAFT_PV_STR) return pk_fail(pk, "%s: the encoding is not a string", fn);
        e = enc->u.s.p;
    }
    if (streq(e, "utf-8") || streq(e, "utf8") || streq(e, "UTF-8")) {
        *out = pv_str(pk, GRAFT_PV_BYTES, text->u.s.p, text->u.s.len);
        return *out ? GRAFT_OK : pk_nomem(pk);
    }
    if (!(streq(e, "latin1") || streq(e, "latin-1") || streq(e, "iso-8859-1") || streq(e, "ISO-8859-1")))
        return pk_fail(pk, "%s: unsupported encoding \"%.20s\"", fn, e);
    const unsigned char *s = (const unsigned char *)text->u.s.p;
    size_t n = text->u.s.len, j = 0;
    char *d = pk_alloc(pk, n + 1);
    graft_pv *v = pv_new(pk, GRAFT_PV_BYTES);
    if (!d || !v) return pk_nomem(pk);
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            d[j++] = (char)s[i++];
        } else if ((s[i] & 0xE0) == 0xC0 && i + 1 < n && (s[i + 1] & 0xC0) == 0x80 && s[i] <= 0xC3) {
            d[j++] = (char)(((s[i] & 0x1F) << 6) | (s[i + 1] & 0x3F));
            i += 2;
        } else {
            return pk_fail(pk, "%s: text is not latin-1", fn);
        }
    }
    d[j] = 0;
    v->u.s.p = d;
    v->u.s.len = j;
    *out = v;
    return GRAFT_OK;
}

static graft_status mark_param(graft_pickle *pk, graft_pv *t, graft_pv *grad, const char *fn) {
    if (t->type != GRAFT_PV_TENSOR) return pk_fail(pk, "%s: expected a tensor, got %s", fn, pv_desc(t));
    int64_t g = 0;
    if (grad && !pv_int(grad, &g)) return pk_fail(pk, "%s: requires_grad is not a bool", fn);
    /* the tensor value may be shared (memo): copy it before flagging */
    graft_pickle_tensor *c = pk_alloc(pk, sizeof *c);
    graft_pv *v = pv_new(pk, GRAFT_PV_TENSOR);
    if (!c || !v) return pk_nomem(pk);
    *c = *t->u.tensor;
    c->parameter = true;
    c->requires_grad = grad ? g != 0 : true;
    v->u.tensor = c;
    return pk_push(pk, v);
}

static graft_status make_placeholder(graft_pickle *pk, graft_pv *cls, graft_pv *args) {
    graft_pickle_placeholder *ph = pk_alloc(pk, sizeof *ph);
    graft_pv *v = pv_new(pk, GRAFT_PV_PLACEHOLDER);
    if (!ph || !v) return pk_nomem(pk);
    ph->cls = cls->u.global->qualname;
    ph->args = args;
    ph->state = NULL;
    v->u.ph = ph;
    return pk_push(pk, v);
}

/* The callable kinds that build tensors, applied to an argument tuple. */
static graft_status rebuild(graft_pickle *pk, graft_pickle_global_kind kind, const char *fn, graft_pv *args) {
    graft_status s;
    graft_pv **a = args->u.seq.items, *t;
    switch (kind) {
    case GRAFT_PG_REBUILD_V2:
        if ((s = args_n(pk, args, fn, 6, 7))) return s;
        if (!pv_empty_or_none(a[5])) return pk_fail(pk, "%s: a tensor with backward hooks cannot be restored", fn);
        if ((s = make_tensor(pk, a, fn, DTYPE_UNTYPED, &t))) return s;
        if (a[4]->type != GRAFT_PV_BOOL) return pk_fail(pk, "%s: requires_grad is not a bool", fn);
        t->u.tensor->requires_grad = a[4]->u.b;
        return pk_push(pk, t);
    case GRAFT_PG_REBUILD_V1:
        if ((s = args_n(pk, args, fn, 4, 4))) return s;
        if ((s = make_tensor(pk, a, fn, DTYPE_UNTYPED, &t))) return s;
        return pk_push(pk, t);
    case GRAFT_PG_REBUILD_V3: {
        if ((s = args_n(pk, args, fn, 7, 8))) return s;
        if (!pv_empty_or_none(a[5])) return pk_fail(pk, "%s: a tensor with backward hooks cannot be restored", fn);
        int d;
        if (a[6]->type == GRAFT_PV_GLOBAL && a[6]->u.global->kind == GRAFT_PG_DTYPE) d = a[6]->u.global->dtype;
        else if (a[6]->type == GRAFT_PV_DTYPE) d = a[6]->u.dtype;
        else return pk_fail(pk, "%s: the dtype argument is a %s", fn, pv_desc(a[6]));
        if (d < 0) return pk_fail(pk, "%s: %s tensors are not supported by graft", fn, pv_desc(a[6]));
        if ((s = make_tensor(pk, a, fn, d, &t))) return s;
        if (a[4]->type != GRAFT_PV_BOOL) return pk_fail(pk, "%s: requires_grad is not a bool", fn);
        t->u.tensor->requires_grad = a[4]->u.b;
        return pk_push(pk, t);
    }
    case GRAFT_PG_REBUILD_PARAM:
        if ((s = args_n(pk, args, fn, 3, 3))) return s;
        if (!pv_empty_or_none(a[2])) return pk_fail(pk, "%s: a parameter with backward hooks cannot be restored", fn);
        return mark_param(pk, a[0], a[1], fn);
    case GRAFT_PG_REBUILD_PARAM_STATE:
        if ((s = args_n(pk, args, fn, 4, 4))) return s;
        if (!pv_empty_or_none(a[2])) return pk_fail(pk, "%s: a parameter with backward hooks cannot be restored", fn);
        if (!pv_empty_or_none(a[3])) return pk_fail(pk, "%s: a parameter with extra attributes is not supported", fn);
        return mark_param(pk, a[0], a[1], fn);
    default:
        return pk_fail(pk, "%s cannot be called here", fn);
    }
}

static graft_status op_reduce(graft_pickle *pk) {
    graft_status s;
    if ((s = pk_need(pk, 2, "REDUCE"))) return s;
    graft_pv *args = pk_pop(pk), *fnv = pk_pop(pk);
    if (fnv->type != GRAFT_PV_GLOBAL)
        return pk_fail(pk, "REDUCE of a %s, which is not a callable global", pv_desc(fnv));
    graft_pickle_global *g = fnv->u.global;
    const char *fn = g->qualname;
    if (args->type != GRAFT_PV_TUPLE)
        return pk_fail(pk, "REDUCE of %s with arguments that are a %s, not a tuple", fn, graft_pv_type_name(args->type));
    graft_pv **a = args->u.seq.items;
    uint32_t n = args->u.seq.n;
    graft_pv *v;
    switch (g->kind) {
    case GRAFT_PG_ODICT:
    case GRAFT_PG_COUNTER:
        if ((s = args_n(pk, args, fn, 0, 1))) return s;
        v = pv_new(pk, g->kind == GRAFT_PG_ODICT ? GRAFT_PV_ODICT : GRAFT_PV_DICT);
        if (!v) return pk_nomem(pk);
        if (n == 1) {
            if (graft_pv_is_dict(a[0])) {
                for (uint32_t i = 0; i < a[0]->u.seq.n; i++)
                    if (!pv_push_item(pk, v, a[0]->u.seq.items[i])) return pk_nomem(pk);
            } else if (a[0]->type == GRAFT_PV_LIST || a[0]->type == GRAFT_PV_TUPLE) {
                for (uint32_t i = 0; i < a[0]->u.seq.n; i++) {
                    graft_pv *pair = a[0]->u.seq.items[i];
                    if ((pair->type != GRAFT_PV_TUPLE && pair->type != GRAFT_PV_LIST) || pair->u.seq.n != 2)
                        return pk_fail(pk, "%s: items are not (key, value) pairs", fn);
                    if (!pv_push_item(pk, v, pair->u.seq.items[0]) || !pv_push_item(pk, v, pair->u.seq.items[1]))
                        return pk_nomem(pk);
                }
            } else if (a[0]->type != GRAFT_PV_NONE) {
                return pk_fail(pk, "%s of a %s", fn, pv_desc(a[0]));
            }
        }
        return pk_push(pk, v);
    case GRAFT_PG_SET:
    case GRAFT_PG_FROZENSET:
        if ((s = args_n(pk, args, fn, 0, 1))) return s;
        v = pv_new(pk, GRAFT_PV_SET);
        if (!v) return pk_nomem(pk);
        if (n == 1 && (s = fill_items(pk, v, a[0], fn))) return s;
        return pk_push(pk, v);
    case GRAFT_PG_BYTEARRAY:
        if ((s = args_n(pk, args, fn, 0, 2))) return s;
        if (n == 0) return pk_push(pk, pv_str(pk, GRAFT_PV_BYTES, "", 0));
        if (n == 1 && a[0]->type == GRAFT_PV_BYTES) return pk_push(pk, pv_str(pk, GRAFT_PV_BYTES, a[0]->u.s.p, a[0]->u.s.len));
        if ((s = encode_text(pk, a[0], n > 1 ? a[1] : NULL, fn, &v))) return s;
        return pk_push(pk, v);
    case GRAFT_PG_ENCODE:
        if ((s = args_n(pk, args, fn, 1, 2))) return s;
        if ((s = encode_text(pk, a[0], n > 1 ? a[1] : NULL, fn, &v))) return s;
        return pk_push(pk, v);
    case GRAFT_PG_SIZE: {
        if ((s = args_n(pk, args, fn, 0, 1))) return s;
        v = pv_new(pk, GRAFT_PV_TUPLE);
        if (!v) return pk_nomem(pk);
        if (n == 1) {
            int64_t dims[GRAFT_MAX_DIMS];
            int nd;
            if ((s = pv_dims(pk, a[0], dims, &nd, "the size", fn))) return s;
            if ((s = fill_items(pk, v, a[0], fn))) return s;
        }
        return pk_push(pk, v);
    }
    case GRAFT_PG_DEVICE: {
        if ((s = args_n(pk, args, fn, 1, 2))) return s;
        if (a[0]->type != GRAFT_PV_STR) return pk_fail(pk, "%s: the device type is not a string", fn);
        char buf[96];
        int64_t idx = -1;
        if (n == 2 && a[1]->type != GRAFT_PV_NONE && !pv_int(a[1], &idx))
            return pk_fail(pk, "%s: the device index is not an int", fn);
        if (idx >= 0) snprintf(buf, sizeof buf, "%.40s:%lld", a[0]->u.s.p, (long long)idx);
        else snprintf(buf, sizeof buf, "%.40s", a[0]->u.s.p);
        return pk_push(pk, pv_str(pk, GRAFT_PV_STR, buf, strlen(buf)));
    }
    case GRAFT_PG_REBUILD_V2:
    case GRAFT_PG_REBUILD_V1:
    case GRAFT_PG_REBUILD_V3:
    case GRAFT_PG_REBUILD_PARAM:
    case GRAFT_PG_REBUILD_PARAM_STATE:
        return rebuild(pk, g->kind, fn, args);
    case GRAFT_PG_REBUILD_FROM_TYPE: {
        /* (func, type, args, state): a tensor subclass; only Tensor and Parameter */
        if ((s = args_n(pk, args, fn, 4, 4))) return s;
        graft_pv *f = a[0], *type = a[1], *fargs = a[2];
        if (type->type != GRAFT_PV_GLOBAL ||
            (type->u.global->kind != GRAFT_PG_TENSOR_CLASS && type->u.global->kind != GRAFT_PG_PARAMETER_CLASS))
            return pk_fail(pk, "%s: tensors of class %s are not supported", fn, pv_desc(type));
        if (!pv_empty_or_none(a[3])) return pk_fail(pk, "%s: a tensor with extra attributes is not supported", fn);
        if (f->type != GRAFT_PV_GLOBAL || fargs->type != GRAFT_PV_TUPLE)
            return pk_fail(pk, "%s: the rebuild function is a %s", fn, pv_desc(f));
        if ((s = rebuild(pk, f->u.global->kind, f->u.global->qualname, fargs))) return s;
        if (type->u.global->kind == GRAFT_PG_PARAMETER_CLASS) {
            graft_pv *t = pk_pop(pk);
            return mark_param(pk, t, NULL, fn);
        }
        return GRAFT_OK;
    }
    case GRAFT_PG_UNKNOWN:
        return make_placeholder(pk, fnv, args);
    default:
        return pk_fail(pk, "REDUCE of %s, which is not a constructor graft allows", fn);
    }
}

static graft_status op_newobj(graft_pickle *pk) {
    graft_status s;
    if ((s = pk_need(pk, 2, "NEWOBJ"))) return s;
    graft_pv *args = pk_pop(pk), *cls = pk_pop(pk);
    if (args->type != GRAFT_PV_TUPLE) return pk_fail(pk, "NEWOBJ with arguments that are not a tuple");
    if (cls->type != GRAFT_PV_GLOBAL) return pk_fail(pk, "NEWOBJ of a %s", pv_desc(cls));
    graft_pickle_global *g = cls->u.global;
    if (g->kind == GRAFT_PG_PARAMETER_CLASS) {
        if ((s = args_n(pk, args, g->qualname, 1, 2))) return s;
        return mark_param(pk, args->u.seq.items[0], args->u.seq.n > 1 ? args->u.seq.items[1] : NULL, g->qualname);
    }
    if (g->kind == GRAFT_PG_ODICT || g->kind == GRAFT_PG_COUNTER || g->kind == GRAFT_PG_SET ||
        g->kind == GRAFT_PG_FROZENSET) {
        /* cls.__new__(cls): an empty container, filled by the following opcodes */
        graft_pv *v = pv_new(pk, g->kind == GRAFT_PG_ODICT ? GRAFT_PV_ODICT
                                 : g->kind == GRAFT_PG_COUNTER ? GRAFT_PV_DICT : GRAFT_PV_SET);
        return pk_push(pk, v);
    }
    if (g->kind == GRAFT_PG_UNKNOWN) return make_placeholder(pk, cls, args);
    return pk_fail(pk, "NEWOBJ of %s, which is not a class graft allows", g->qualname);
}

/* Does a module's __dict__ (a BUILD state) look like an nn.Module's? */
static bool state_is_module(const graft_pv *st) {
    if (!graft_pv_is_dict(st)) return false;
    for (uint32_t i = 0; i + 1 < st->u.seq.n; i += 2) {
        const graft_pv *k = st->u.seq.items[i];
        if (k->type == GRAFT_PV_STR && (streq(k->u.s.p, "_modules") || streq(k->u.s.p, "_parameters"))) return true;
    }
    return false;
}

static graft_status op_build(graft_pickle *pk) {
    graft_status s;
    if ((s = pk_need(pk, 2, "BUILD"))) return s;
    graft_pv *state = pk_pop(pk), *obj = pk->stack[pk->sp - 1];
    switch (obj->type) {
    case GRAFT_PV_ODICT:
        /* OrderedDict.__dict__.update(state): keep _metadata, ignore other attributes */
        if (state->type == GRAFT_PV_TUPLE && state->u.seq.n == 2) state = state->u.seq.items[0];
        if (state->type == GRAFT_PV_NONE) return GRAFT_OK;
        if (!graft_pv_is_dict(state)) return pk_fail(pk, "BUILD of an OrderedDict with a %s", pv_desc(state));
        for (uint32_t i = 0; i + 1 < state->u.seq.n; i += 2) {
            graft_pv *k = state->u.seq.items[i];
            if (k->type == GRAFT_PV_STR && streq(k->u.s.p, "_metadata") && graft_pv_is_dict(state->u.seq.items[i + 1]))
                obj->u.seq.meta = state->u.seq.items[i + 1];
        }
        return GRAFT_OK;
    case GRAFT_PV_TENSOR:
        if (!pv_empty_or_none(state)) return pk_fail(pk, "BUILD of a tensor with attributes is not supported");
        return GRAFT_OK;
    case GRAFT_PV_PLACEHOLDER:
        obj->u.ph->state = state;
        if (state_is_module(state)) {
            /* children are built inside their parent's state, so the last is the root */
            pk->root_module = obj->u.ph->cls;
            if (!pk->model_class) pk->model_class = obj->u.ph->cls;
        }
        return GRAFT_OK;
    default:
        return pk_fail(pk, "BUILD of a %s", pv_desc(obj));
    }
}

/* ---- the main loop ---- */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2', OP_BINFLOAT = 'G',
    OP_BININT = 'J', OP_BININT1 = 'K', OP_BININT2 = 'M', OP_NONE = 'N', OP_BINPERSID = 'Q', OP_REDUCE = 'R',
    OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_APPENDS = 'e', OP_BINGET = 'h', OP_LONG_BINGET = 'j', OP_EMPTY_LIST = ']',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't', OP_EMPTY_TUPLE = ')',
    OP_SETITEMS = 'u', OP_EMPTY_DICT = '}', OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b, OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
};

static graft_status memo_put(graft_pickle *pk, uint64_t idx) {
    if (pk->sp == pk_floor(pk)) return pk_fail(pk, "memo PUT with an empty stack");
    /* torch numbers memo entries 0, 1, 2...: an index far beyond the file is hostile */
    if (idx > pk->len + 256) return pk_fail(pk, "memo index %llu is out of range", (unsigned long long)idx);
    if (idx >= pk->memo_cap) {
        size_t old = pk->memo_cap;
        if (!pk_grow(pk, (void **)&pk->memo, &pk->memo_cap, (size_t)idx + 1, sizeof *pk->memo)) return pk_nomem(pk);
        memset(pk->memo + old, 0, (pk->memo_cap - old) * sizeof *pk->memo);
    }
    if (!pk->memo[idx]) pk->memo_count++;
    pk->memo[idx] = pk->stack[pk->sp - 1];
    return GRAFT_OK;
}

static graft_status memo_get(graft_pickle *pk, uint64_t idx) {
    if (idx >= pk->memo_cap || !pk->memo[idx])
        return pk_fail(pk, "memo index %llu is read before it is set", (unsigned long long)idx);
    return pk_push(pk, pk->memo[idx]);
}

static graft_status push_string(graft_pickle *pk, int type, size_t n, const char *op) {
    const unsigned char *b = NULL;
    graft_status s;
    if (n > ((size_t)1 << 31)) return pk_fail(pk, "%s of %zu bytes is too long", op, n);
    if ((s = rd(pk, n, &b, op))) return s;
    return pk_push(pk, pv_str(pk, type, (const char *)b, n));
}

static graft_status push_tuple(graft_pickle *pk, graft_pv **items, size_t n) {
    graft_pv *v = pv_new(pk, GRAFT_PV_TUPLE);
    if (!v) return pk_nomem(pk);
    if (n) {
        v->u.seq.items = pk_alloc(pk, n * sizeof *items);
        if (!v->u.seq.items) return pk_nomem(pk);
        memcpy(v->u.seq.items, items, n * sizeof *items);
    }
    v->u.seq.n = v->u.seq.cap = (uint32_t)n;
    return pk_push(pk, v);
}

static graft_status set_items(graft_pickle *pk, graft_pv *d, graft_pv **kv, size_t n, const char *op) {
    if (!graft_pv_is_dict(d)) return pk_fail(pk, "%s onto a %s, not a dict", op, pv_desc(d));
    if (n % 2) return pk_fail(pk, "%s with an odd number of values", op);
    for (size_t i = 0; i < n; i += 2) {
        graft_pv *k = kv[i];
        if (k->type != GRAFT_PV_STR && k->type != GRAFT_PV_INT && k->type != GRAFT_PV_BOOL &&
            k->type != GRAFT_PV_FLOAT && k->type != GRAFT_PV_NONE && k->type != GRAFT_PV_TUPLE &&
            k->type != GRAFT_PV_BYTES)
            return pk_fail(pk, "%s with a %s key", op, pv_desc(k));
        if (!pv_push_item(pk, d, k) || !pv_push_item(pk, d, kv[i + 1])) return pk_nomem(pk);
    }
    return GRAFT_OK;
}

static graft_status pk_step(graft_pickle *pk, bool *stop) {
    const unsigned char *b = NULL;
    graft_status s;
    pk->op_pos = pk->pos;
    if ((s = rd(pk, 1, &b, "an opcode"))) return s;
    int op = b[0];
    switch (op) {
    case OP_PROTO:
        if ((s = rd(pk, 1, &b, "PROTO"))) return s;
        if (b[0] < 2 || b[0] > 5) return pk_fail(pk, "pickle protocol %d is not supported (2 to 5 are)", b[0]);
        return GRAFT_OK;
    case OP_FRAME:
        if ((s = rd(pk, 8, &b, "FRAME"))) return s;
        if (le64(b) > pk->len - pk->pos) return pk_fail(pk, "FRAME of %llu bytes runs past the end", (unsigned long long)le64(b));
        return GRAFT_OK;
    case OP_STOP:
        if (pk->sp != 1 || pk->nmarks) return pk_fail(pk, "STOP with %zu values and %zu marks on the stack (expected 1 and 0)", pk->sp, pk->nmarks);
        *stop = true;
        return GRAFT_OK;
    case OP_MARK:
        if (!pk_grow(pk, (void **)&pk->marks, &pk->mcap, pk->nmarks + 1, sizeof *pk->marks)) return pk_nomem(pk);
        pk->marks[pk->nmarks++] = pk->sp;
        return GRAFT_OK;
    case OP_POP:
        if (pk->sp > pk_floor(pk)) {
            pk->sp--;
            return GRAFT_OK;
        }
        if (!pk->nmarks) return pk_fail(pk, "POP of an empty stack (stack underflow)");
        pk->nmarks--; /* POP of a mark, as Python does */
        return GRAFT_OK;
    case OP_POP_MARK: {
        graft_pv **items = NULL;
        size_t n = 0;
        return pk_pop_mark(pk, "POP_MARK", &items, &n);
    }
    case OP_DUP:
        if ((s = pk_need(pk, 1, "DUP"))) return s;
        return pk_push(pk, pk->stack[pk->sp - 1]);
    case OP_NONE:
        return pk_push(pk, pv_new(pk, GRAFT_PV_NONE));
    case OP_NEWTRUE:
    case OP_NEWFALSE: {
        graft_pv *v = pv_new(pk, GRAFT_PV_BOOL);
        if (v) v->u.b = op == OP_NEWTRUE;
        return pk_push(pk, v);
    }
    case OP_BININT:
    case OP_BININT1:
    case OP_BININT2: {
        size_t n = op == OP_BININT ? 4 : op == OP_BININT1 ? 1 : 2;
        if ((s = rd(pk, n, &b, "BININT"))) return s;
        graft_pv *v = pv_new(pk, GRAFT_PV_INT);
        if (v) v->u.i = op == OP_BININT ? (int64_t)(int32_t)le32(b) : op == OP_BININT1 ? b[0] : (b[0] | b[1] << 8);
        return pk_push(pk, v);
    }
    case OP_LONG1:
    case OP_LONG4: {
        size_t n;
        if (op == OP_LONG1) {
            if ((s = rd(pk, 1, &b, "LONG1"))) return s;
            n = b[0];
        } else {
            if ((s = rd(pk, 4, &b, "LONG4"))) return s;
            n = le32(b);
        }
        if (n > 8) return pk_fail(pk, "an integer of %zu bytes does not fit in 64 bits", n);
        if ((s = rd(pk, n, &b, "LONG1"))) return s;
        uint64_t u = 0;
        for (size_t i = 0; i < n; i++) u |= (uint64_t)b[i] << (8 * i);
        if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        graft_pv *v = pv_new(pk, GRAFT_PV_INT);
        if (v) memcpy(&v->u.i, &u, 8);
        return pk_push(pk, v);
    }
    case OP_BINFLOAT: {
        if ((s = rd(pk, 8, &b, "BINFLOAT"))) return s;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = u << 8 | b[i]; /* big-endian */
        graft_pv *v = pv_new(pk, GRAFT_PV_FLOAT);
        if (v) memcpy(&v->u.f, &u, 8);
        return pk_push(pk, v);
    }
    case OP_BINUNICODE:
    case OP_BINSTRING:
    case OP_BINBYTES:
        if ((s = rd(pk, 4, &b, "a string length"))) return s;
        return push_string(pk, op == OP_BINBYTES ? GRAFT_PV_BYTES : GRAFT_PV_STR, le32(b), "a string");
    case OP_SHORT_BINUNICODE:
    case OP_SHORT_BINSTRING:
    case OP_SHORT_BINBYTES:
        if ((s = rd(pk, 1, &b, "a string length"))) return s;
        return push_string(pk, op == OP_SHORT_BINBYTES ? GRAFT_PV_BYTES : GRAFT_PV_STR, b[0], "a string");
    case OP_BINUNICODE8:
    case OP_BINBYTES8: {
        if ((s = rd(pk, 8, &b, "a string length"))) return s;
        uint64_t n = le64(b);
        if (n > pk->len) return pk_fail(pk, "a string of %llu bytes is longer than the pickle", (unsigned long long)n);
        return push_string(pk, op == OP_BINBYTES8 ? GRAFT_PV_BYTES : GRAFT_PV_STR, (size_t)n, "a string");
    }
    case OP_EMPTY_LIST:
        return pk_push(pk, pv_new(pk, GRAFT_PV_LIST));
    case OP_EMPTY_DICT:
        return pk_push(pk, pv_new(pk, GRAFT_PV_DICT));
    case OP_EMPTY_SET:
        return pk_push(pk, pv_new(pk, GRAFT_PV_SET));
    case OP_EMPTY_TUPLE:
        return push_tuple(pk, NULL, 0);
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3: {
        size_t n = (size_t)(op - OP_TUPLE1 + 1);
        if ((s = pk_need(pk, n, "TUPLE"))) return s;
        pk->sp -= n;
        return push_tuple(pk, pk->stack + pk->sp, n);
    }
    case OP_TUPLE:
    case OP_FROZENSET: {
        graft_pv **items = NULL;
        size_t n = 0;
        if ((s = pk_pop_mark(pk, op == OP_TUPLE ? "TUPLE" : "FROZENSET", &items, &n))) return s;
        if (op == OP_TUPLE) return push_tuple(pk, items, n);
        graft_pv *v = pv_new(pk, GRAFT_PV_SET);
        if (!v) return pk_nomem(pk);
        for (size_t i = 0; i < n; i++)
            if (!pv_push_item(pk, v, items[i])) return pk_nomem(pk);
        return pk_push(pk, v);
    }
    case OP_APPEND: {
        if ((s = pk_need(pk, 2, "APPEND"))) return s;
        graft_pv *item = pk_pop(pk), *list = pk->stack[pk->sp - 1];
        if (list->type != GRAFT_PV_LIST) return pk_fail(pk, "APPEND onto a %s, not a list", pv_desc(list));
        return pv_push_item(pk, list, item) ? GRAFT_OK : pk_nomem(pk);
    }
    case OP_APPENDS:
    case OP_ADDITEMS: {
        graft_pv **items = NULL;
        size_t n = 0;
        const char *nm = op == OP_APPENDS ? "APPENDS" : "ADDITEMS";
        if ((s = pk_pop_mark(pk, nm, &items, &n))) return s;
        if ((s = pk_need(pk, 1, nm))) return s;
        graft_pv *c = pk->stack[pk->sp - 1];
        if (c->type != (op == OP_APPENDS ? GRAFT_PV_LIST : GRAFT_PV_SET))
            return pk_fail(pk, "%s onto a %s", nm, pv_desc(c));
        for (size_t i = 0; i < n; i++)
            if (!pv_push_item(pk, c, items[i])) return pk_nomem(pk);
        return GRAFT_OK;
    }
    case OP_SETITEM: {
        if ((s = pk_need(pk, 3, "SETITEM"))) return s;
        pk->sp -= 2;
        return set_items(pk, pk->stack[pk->sp - 1], pk->stack + pk->sp, 2, "SETITEM");
    }
    case OP_SETITEMS: {
        graft_pv **items = NULL;
        size_t n = 0;
        if ((s = pk_pop_mark(pk, "SETITEMS", &items, &n))) return s;
        if ((s = pk_need(pk, 1, "SETITEMS"))) return s;
        return set_items(pk, pk->stack[pk->sp - 1], items, n, "SETITEMS");
    }
    case OP_BINPUT:
        if ((s = rd(pk, 1, &b, "BINPUT"))) return s;
        return memo_put(pk, b[0]);
    case OP_LONG_BINPUT:
        if ((s = rd(pk, 4, &b, "LONG_BINPUT"))) return s;
        return memo_put(pk, le32(b));
    case OP_MEMOIZE:
        return memo_put(pk, pk->memo_count);
    case OP_BINGET:
        if ((s = rd(pk, 1, &b, "BINGET"))) return s;
        return memo_get(pk, b[0]);
    case OP_LONG_BINGET:
        if ((s = rd(pk, 4, &b, "LONG_BINGET"))) return s;
        return memo_get(pk, le32(b));
    case OP_GLOBAL: {
        const char *m, *n;
        size_t ml, nl;
        graft_pv *v;
        if ((s = rd_line(pk, &m, &ml)) || (s = rd_line(pk, &n, &nl))) return s;
        if ((s = resolve_global(pk, m, ml, n, nl, &v))) return s;
        return pk_push(pk, v);
    }
    case OP_STACK_GLOBAL: {
        if ((s = pk_need(pk, 2, "STACK_GLOBAL"))) return s;
        graft_pv *n = pk_pop(pk), *m = pk_pop(pk), *v;
        if (m->type != GRAFT_PV_STR || n->type != GRAFT_PV_STR) return pk_fail(pk, "STACK_GLOBAL of non-strings");
        if ((s = resolve_global(pk, m->u.s.p, m->u.s.len, n->u.s.p, n->u.s.len, &v))) return s;
        return pk_push(pk, v);
    }
    case OP_REDUCE:
        return op_reduce(pk);
    case OP_NEWOBJ:
        return op_newobj(pk);
    case OP_BUILD:
        return op_build(pk);
    case OP_BINPERSID: {
        if ((s = pk_need(pk, 1, "BINPERSID"))) return s;
        graft_pv *v;
        if ((s = persistent_load(pk, pk_pop(pk), &v))) return s;
        return pk_push(pk, v);
    }
    default:
        if (op >= 0x20 && op < 0x7f)
            return pk_fail(pk, "opcode '%c' (0x%02x) is not allowed in a checkpoint", op, op);
        return pk_fail(pk, "opcode 0x%02x is not allowed in a checkpoint", op);
    }
}

graft_status graft_pickle_run(graft_pickle *pk, const unsigned char *data, size_t len, graft_pv **root, size_t *used) {
    *root = NULL;
    *used = 0;
    pk->p = data;
    pk->len = len;
    pk->pos = pk->op_pos = 0;
    pk->sp = pk->nmarks = 0;
    /* the memo is per pickle */
    if (pk->memo) memset(pk->memo, 0, pk->memo_cap * sizeof *pk->memo);
    pk->memo_count = 0;
    bool stop = false;
    graft_status s = GRAFT_OK;
    while (!stop && !s) s = pk_step(pk, &stop);
    if (!pk->o.allow_unknown && pk->first_unknown && !pk->fatal) {
        /* strict mode: refuse, saying what the file is */
        if (pk->model_class)
            return graft_error(GRAFT_EFORMAT,
                               "refusing to load \"%s\": it is a whole model saved with torch.save(model) (class %s), "
                               "not a state dict. In PyTorch, save model.state_dict() instead; or load it with "
                               "{allow_unknown = true} and take its weights with graft.state.extract(obj)",
                               pk->name, pk->root_module ? pk->root_module : pk->model_class);
        return graft_error(GRAFT_EFORMAT,
                           "refusing to load \"%s\": it calls %s, which is not a tensor or container (load with "
                           "{allow_unknown = true} to get an inert placeholder for it)",
                           pk->name, pk->first_unknown);
    }
    if (s) return s;
    *root = pk->stack[0];
    *used = pk->pos;
    return GRAFT_OK;
}
