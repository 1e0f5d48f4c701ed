/* graft checkpoints: a restricted pickle virtual machine that executes nothing.
 *
 * It reads the pickles torch.save writes (protocols 2-5) into a tree of tagged values
 * held in one arena, freed all at once. Globals resolve only against an allowlist
 * (OrderedDict, the tensor and parameter rebuild functions, storage classes, dtypes,
 * torch.Size, torch.device, _codecs.encode, set/frozenset, ...); the allowed "calls"
 * are interpreted here as data constructors. Other globals are refused, or, with
 * allow_unknown, become inert placeholders (class name, arguments, BUILD state).
 * Globals that can run code (os.system, builtins.eval, ...) are refused always.
 *
 *     graft_pickle *pk;
 *     graft_pickle_opts o = {.name = "x.pth"};
 *     if (graft_pickle_new(&pk, &o, budget)) return st;
 *     graft_pv *root; size_t used;
 *     st = graft_pickle_run(pk, bytes, len, &root, &used);  // one pickle, up to STOP
 *     ... walk root; the storages met are in pk->storages ...
 *     graft_pickle_free(pk);
 *
 * Tensors are not created here: a tensor value records its storage (key, dtype,
 * numel from the persistent id) and a geometry already checked to lie inside it; the
 * caller (pth.c) maps or reads the storages and builds graft tensors from them.
 */
#ifndef GRAFT_CKPT_PICKLE_H
#define GRAFT_CKPT_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "tensor/tensor.h"

typedef enum {
    GRAFT_PV_NONE, GRAFT_PV_BOOL, GRAFT_PV_INT, GRAFT_PV_FLOAT,
    GRAFT_PV_STR,        /* text (UTF-8 as written) */
    GRAFT_PV_BYTES,      /* bytes / bytearray */
    GRAFT_PV_LIST, GRAFT_PV_TUPLE,
    GRAFT_PV_SET,        /* set or frozenset: items in file order */
    GRAFT_PV_DICT,       /* plain dict (or Counter); items are key, value pairs */
    GRAFT_PV_ODICT,      /* collections.OrderedDict; `meta` is its _metadata or NULL */
    GRAFT_PV_TENSOR,     /* a tensor or Parameter */
    GRAFT_PV_STORAGE,    /* a storage from a persistent id (only inside tensors) */
    GRAFT_PV_DTYPE,      /* torch.float32 ...: `dtype` (or -1 for a dtype graft lacks) */
    GRAFT_PV_GLOBAL,     /* an allowlisted global not (yet) called: `global` */
    GRAFT_PV_PLACEHOLDER /* an unknown object (allow_unknown): `ph` */
} graft_pv_type;

typedef struct graft_pv graft_pv;

/* A storage named by a persistent id; one per key (tensors sharing it point to it). */
typedef struct graft_pickle_storage {
    const char *key;          /* record data/<key> (zip) or the legacy key */
    const char *location;     /* "cpu", "cuda:0", ... as saved */
    int dtype;                /* graft_dtype; -2 while untyped (v3 files) */
    int64_t numel;            /* elements of the whole storage (bytes while untyped) */
    /* legacy storage views: this storage is `numel` elements of `base` from `base_offset` */
    struct graft_pickle_storage *base;
    int64_t base_offset;
    size_t index;             /* position in graft_pickle.storages */
    graft_storage *resolved;  /* set by the caller (pth.c): one reference, or NULL */
} graft_pickle_storage;

typedef struct {
    graft_pickle_storage *storage;
    int64_t offset;           /* elements, checked: the view lies inside the storage */
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    int64_t stride[GRAFT_MAX_DIMS];
    bool requires_grad;
    bool parameter;           /* built by _rebuild_parameter / Parameter */
} graft_pickle_tensor;

/* Kinds of allowlisted globals. */
typedef enum {
    GRAFT_PG_ODICT, GRAFT_PG_COUNTER, GRAFT_PG_REBUILD_V2, GRAFT_PG_REBUILD_V1,
    GRAFT_PG_REBUILD_V3, GRAFT_PG_REBUILD_PARAM, GRAFT_PG_REBUILD_PARAM_STATE,
    GRAFT_PG_REBUILD_FROM_TYPE, GRAFT_PG_STORAGE_CLASS, GRAFT_PG_DTYPE, GRAFT_PG_SIZE,
    GRAFT_PG_DEVICE, GRAFT_PG_ENCODE, GRAFT_PG_SET, GRAFT_PG_FROZENSET, GRAFT_PG_BYTEARRAY,
    GRAFT_PG_TENSOR_CLASS, GRAFT_PG_PARAMETER_CLASS, GRAFT_PG_UNKNOWN
} graft_pickle_global_kind;

typedef struct {
    graft_pickle_global_kind kind;
    int dtype;                /* storage classes and dtypes: graft dtype, or -1 */
    const char *qualname;     /* "module.name" */
} graft_pickle_global;

typedef struct {
    const char *cls;          /* "module.QualName" */
    graft_pv *args;           /* a tuple, or NULL for a bare class reference */
    graft_pv *state;          /* BUILD state, or NULL */
} graft_pickle_placeholder;

struct graft_pv {
    uint8_t type;             /* graft_pv_type */
    uint8_t mark;             /* free for walkers (conversion in progress, ...) */
    union {
        bool b;
        int64_t i;
        double f;
        struct { const char *p; size_t len; } s;                    /* STR, BYTES (NUL-terminated) */
        struct { graft_pv **items; uint32_t n, cap; graft_pv *meta; } seq; /* LIST TUPLE SET DICT ODICT */
        graft_pickle_tensor *tensor;
        graft_pickle_storage *storage;
        int dtype;
        graft_pickle_global *global;
        graft_pickle_placeholder *ph;
    } u;
};

typedef struct {
    const char *name;         /* the file, for messages */
    bool allow_unknown;       /* unknown globals become placeholders */
    bool legacy;              /* persistent ids are the legacy 6-tuples */
} graft_pickle_opts;

typedef struct graft_pickle graft_pickle;

/* Limits. */
#define GRAFT_PICKLE_MAX_DEPTH 1000   /* nesting of containers (walkers enforce it) */

/* A VM with its arena. `budget` caps every byte it may allocate (values, strings,
 * stacks, memo); callers pass a multiple of the pickle size. */
graft_status graft_pickle_new(graft_pickle **out, const graft_pickle_opts *o, size_t budget);
void graft_pickle_free(graft_pickle *pk);

/* Runs one pickle from data[0..len) up to its STOP: *root is its value (owned by pk),
 * *used the bytes consumed. Runs may be repeated (legacy files hold several pickles);
 * storages accumulate across runs. Errors name the file, the offset and the problem. */
graft_status graft_pickle_run(graft_pickle *pk, const unsigned char *data, size_t len,
                              graft_pv **root, size_t *used);

/* The storages met so far, in order of first appearance. */
size_t graft_pickle_storage_count(const graft_pickle *pk);
graft_pickle_storage *graft_pickle_storage_at(const graft_pickle *pk, size_t i);
/* The storage with this key, or NULL. */
graft_pickle_storage *graft_pickle_find_storage(const graft_pickle *pk, const char *key);

/* Helpers for walkers. */
const char *graft_pv_type_name(int type);
bool graft_pv_is_seq(const graft_pv *v);   /* LIST TUPLE SET */
bool graft_pv_is_dict(const graft_pv *v);  /* DICT ODICT */

#endif
