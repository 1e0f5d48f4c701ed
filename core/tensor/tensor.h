/* graft core: dtypes, devices, refcounted storage and tensor views.
 *
 * A tensor is a view (dtype, sizes, strides in elements, offset in elements) of a
 * storage. Storages are refcounted and come from one of three owners: the graft
 * allocator, a caller's buffer (released through its callback), or a file mapping.
 * Ownership follows three verbs: whatever creates hands out one reference,
 * `retain` adds one, `release` drops one and accepts NULL. Arguments are borrowed.
 *
 *     graft_tensor *t;
 *     int64_t shape[2] = {2, 3};
 *     if (graft_tensor_empty(&t, 2, shape, GRAFT_F32, graft_cpu) != GRAFT_OK)
 *         fprintf(stderr, "%s\n", graft_last_error());
 *     graft_tensor_release(t);
 *
 * This header never includes lua.h: the core builds and links alone.
 */
#ifndef GRAFT_TENSOR_H
#define GRAFT_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* ---- status codes and the thread-local error message ---- */
typedef enum {
    GRAFT_OK = 0,
    GRAFT_EINVAL,    /* a bad argument value */
    GRAFT_ESHAPE,    /* shapes that do not fit */
    GRAFT_ETYPE,     /* a dtype the op does not accept */
    GRAFT_EDEVICE,   /* inputs on different devices, or a device not built in */
    GRAFT_EINDEX,    /* an index out of range */
    GRAFT_ENOMEM,    /* allocation failed */
    GRAFT_EIO,       /* a file could not be read or written */
    GRAFT_EFORMAT,   /* a file's bytes break its format */
    GRAFT_EINTERNAL  /* a broken invariant */
} graft_status;

/* Sets the thread-local message (printf-style) and returns s, so callers write
 * `return graft_error(GRAFT_ESHAPE, "view: ...")`. */
graft_status graft_error(graft_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The last message set on this thread ("" when none). Borrowed. */
const char *graft_last_error(void);

/* ---- dtypes ---- */
typedef enum {
    GRAFT_F32 = 0, GRAFT_F64, GRAFT_F16, GRAFT_BF16,
    GRAFT_I64, GRAFT_I32, GRAFT_I16, GRAFT_I8, GRAFT_U8, GRAFT_BOOL,
    GRAFT_NDTYPES
} graft_dtype;

size_t graft_dtype_size(graft_dtype d);
const char *graft_dtype_name(graft_dtype d);        /* "float32", ... */
/* Accepts PyTorch's names and aliases ("float", "half", "long", "int", ...); -1 if unknown. */
int graft_dtype_from_name(const char *name);
bool graft_dtype_is_float(graft_dtype d);           /* f32 f64 f16 bf16 */
bool graft_dtype_is_int(graft_dtype d);             /* i64 i32 i16 i8 u8 (not bool) */
/* PyTorch's promotion of two tensor dtypes (same category order: bool < int < float). */
graft_dtype graft_dtype_promote(graft_dtype a, graft_dtype b);

/* Exact conversions (round to nearest even), as PyTorch. */
uint16_t graft_f32_to_f16(float f);
float graft_f16_to_f32(uint16_t h);
uint16_t graft_f32_to_bf16(float f);
float graft_bf16_to_f32(uint16_t h);

/* Read / write one element of dtype d at p as double or int64 (slow paths, printing). */
double graft_load_f64(const void *p, graft_dtype d);
int64_t graft_load_i64(const void *p, graft_dtype d);
void graft_store_f64(void *p, graft_dtype d, double v);
void graft_store_i64(void *p, graft_dtype d, int64_t v);

/* ---- devices ---- */
typedef enum { GRAFT_CPU = 0, GRAFT_CUDA = 1 } graft_device_type;
typedef struct { int8_t type; int8_t index; } graft_device;
static const graft_device graft_cpu = {GRAFT_CPU, 0};
static inline bool graft_device_eq(graft_device a, graft_device b) {
    return a.type == b.type && a.index == b.index;
}
/* Parses "cpu", "cuda", "cuda:N". */
graft_status graft_device_parse(graft_device *out, const char *s);
/* Writes "cpu" or "cuda:N" into buf (at least 16 bytes); returns buf. */
const char *graft_device_str(graft_device d, char *buf);

/* ---- storage ---- */
typedef enum { GRAFT_STORAGE_OWNED, GRAFT_STORAGE_BORROWED, GRAFT_STORAGE_MAPPED } graft_storage_kind;

typedef struct graft_storage {
    int64_t refcount;
    void *data;
    size_t nbytes;
    graft_device device;
    graft_storage_kind kind;
    uint64_t version;               /* bumped by in-place writes (autograd checks it) */
    void (*release_fn)(void *ctx, void *data, size_t nbytes); /* borrowed and mapped */
    void *release_ctx;
} graft_storage;

/* +1 reference: nbytes from the caching allocator, 64-byte aligned, uninitialised. */
graft_status graft_storage_new(graft_storage **out, size_t nbytes, graft_device dev);
/* +1 reference: wraps a caller's buffer; release_fn(ctx, data, nbytes) runs when the
 * last reference goes (release_fn may be NULL). kind is BORROWED or MAPPED. */
graft_status graft_storage_wrap(graft_storage **out, void *data, size_t nbytes, graft_device dev,
                                graft_storage_kind kind,
                                void (*release_fn)(void *, void *, size_t), void *ctx);
void graft_storage_retain(graft_storage *s);
void graft_storage_release(graft_storage *s);

/* ---- tensors ---- */
#define GRAFT_MAX_DIMS 16
/* The tensor struct lives inside its storage's block (small tensors): never freed alone. */
#define GRAFT_TENSOR_EMBEDDED 1u

typedef struct graft_tensor {
    int64_t refcount;
    graft_storage *storage;
    int64_t offset;                  /* in elements */
    int ndim;
    graft_dtype dtype;
    uint32_t flags;                  /* GRAFT_TENSOR_* (internal) */
    int64_t shape[GRAFT_MAX_DIMS];
    int64_t stride[GRAFT_MAX_DIMS];  /* in elements */
    void *autograd;                  /* slot for the autograd issue (NULL = none) */
    void (*autograd_free)(void *);   /* frees the slot when the tensor dies */
} graft_tensor;

static inline int64_t graft_tensor_numel(const graft_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
static inline void *graft_tensor_data(const graft_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)graft_dtype_size(t->dtype);
}
static inline graft_device graft_tensor_device(const graft_tensor *t) { return t->storage->device; }

/* Live tensor count (for specs proving that an error leaked nothing). */
int64_t graft_tensor_live(void);

/* +1: uninitialised contiguous tensor. */
graft_status graft_tensor_empty(graft_tensor **out, int ndim, const int64_t *shape,
                                graft_dtype dtype, graft_device dev);
/* +1: a view of storage s (retained) with the given geometry; checks it fits. */
graft_status graft_tensor_from_storage(graft_tensor **out, graft_storage *s, graft_dtype dtype,
                                       int ndim, const int64_t *shape, const int64_t *stride,
                                       int64_t offset);
/* +1: a view sharing t's storage with new geometry (no checks beyond ndim). */
graft_status graft_tensor_view_of(graft_tensor **out, const graft_tensor *t, int ndim,
                                  const int64_t *shape, const int64_t *stride, int64_t offset);
void graft_tensor_retain(graft_tensor *t);
void graft_tensor_release(graft_tensor *t);

bool graft_tensor_is_contiguous(const graft_tensor *t);
/* +1: t itself (retained) if contiguous, else a contiguous copy. */
graft_status graft_tensor_contiguous(graft_tensor **out, graft_tensor *t);
/* +1: a contiguous copy (same dtype unless dtype >= 0). */
graft_status graft_tensor_clone(graft_tensor **out, graft_tensor *t);
/* +1: t converted to dtype (t itself retained when already that dtype). */
graft_status graft_tensor_to_dtype(graft_tensor **out, graft_tensor *t, graft_dtype dtype);
/* dst <- src with broadcasting of src to dst's shape and any dtypes and layouts. */
graft_status graft_tensor_copy_(graft_tensor *dst, graft_tensor *src);
/* dst <- v (converted to dst's dtype). */
graft_status graft_tensor_fill_(graft_tensor *dst, double v);
graft_status graft_tensor_fill_int_(graft_tensor *dst, int64_t v);

/* +1: the view of t at `index` along `dim` (both 0-based), that dim removed. */
graft_status graft_tensor_select(graft_tensor **out, const graft_tensor *t, int dim, int64_t index);

/* Marks an in-place write (autograd's version counter). */
static inline void graft_tensor_bump(graft_tensor *t) { t->storage->version++; }

/* ---- shapes ---- */
/* Broadcast two shapes (PyTorch's rules) into out (GRAFT_MAX_DIMS). `op` names the
 * caller for the error: "add: shapes [2, 3] and [4] cannot broadcast". */
graft_status graft_broadcast_shapes(int *ondim, int64_t *oshape, int an, const int64_t *as,
                                    int bn, const int64_t *bs, const char *op);
/* Writes "[2, 3]" into buf (at least 24*ndim+3 bytes); returns buf. */
const char *graft_shape_str(int ndim, const int64_t *shape, char *buf, size_t bufsize);
/* Normalises dim in [-ndim, ndim) to [0, ndim) (0-based; bindings convert from 1-based). */
graft_status graft_wrap_dim(int *out, int dim, int ndim, const char *op);

#endif
