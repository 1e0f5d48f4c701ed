/* graft core: storages and tensor views, the dtype-converting strided copy, fill,
 * contiguous/clone, and shape helpers. */
#include "tensor.h"
#include "alloc.h"
#include "iter.h"
#include "cuda/cuda.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- storage ---- */

/* Owned storages are one block: the header, padded to 64 bytes, then the data. */
#define STORAGE_HEADER 64
_Static_assert(sizeof(graft_storage) <= STORAGE_HEADER, "storage header fits its padding");

/* Owned storages keep their block's real size in release_ctx. */
static void storage_free_owned(void *ctx, void *data, size_t nbytes) {
    (void)nbytes;
    graft_free((char *)data - STORAGE_HEADER, (size_t)(uintptr_t)ctx);
}

graft_status graft_storage_new(graft_storage **out, size_t nbytes, graft_device dev) {
    *out = NULL;
    if (dev.type == GRAFT_CUDA) return graft_cuda_storage_new(out, nbytes, dev);
    if (dev.type != GRAFT_CPU) return graft_error(GRAFT_EDEVICE, "unknown device type %d", dev.type);
    if (nbytes > ((size_t)1 << 46))
        return graft_error(GRAFT_ENOMEM, "out of memory: cannot allocate %zu bytes", nbytes);
    size_t actual = 0;
    char *blk = graft_alloc(STORAGE_HEADER + nbytes, &actual);
    if (!blk) return graft_error(GRAFT_ENOMEM, "out of memory: cannot allocate %zu bytes", nbytes);
    graft_storage *s = (graft_storage *)blk;
    s->refcount = 1;
    s->data = blk + STORAGE_HEADER;
    s->nbytes = nbytes;
    s->device = dev;
    s->kind = GRAFT_STORAGE_OWNED;
    s->version = 0;
    s->release_fn = storage_free_owned;
    s->release_ctx = (void *)(uintptr_t)actual;
    *out = s;
    return GRAFT_OK;
}

graft_status graft_storage_wrap(graft_storage **out, void *data, size_t nbytes, graft_device dev,
                                graft_storage_kind kind,
                                void (*release_fn)(void *, void *, size_t), void *ctx) {
    graft_storage *s = malloc(sizeof *s);
    *out = NULL;
    if (!s) return graft_error(GRAFT_ENOMEM, "out of memory");
    s->refcount = 1;
    s->data = data;
    s->nbytes = nbytes;
    s->device = dev;
    s->kind = kind;
    s->version = 0;
    s->release_fn = release_fn;
    s->release_ctx = ctx;
    *out = s;
    return GRAFT_OK;
}

void graft_storage_retain(graft_storage *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void graft_storage_release(graft_storage *s) {
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (s->kind == GRAFT_STORAGE_OWNED) {
        s->release_fn(s->release_ctx, s->data, s->nbytes); /* frees the header with the data */
        return;
    }
    if (s->release_fn) s->release_fn(s->release_ctx, s->data, s->nbytes);
    free(s);
}

/* ---- tensors ---- */

static atomic_llong tensor_live_count;
static void tensor_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

int64_t graft_tensor_live(void) { return atomic_load(&tensor_live_count); }

/* ---- pools for small objects ----
 * A tensor op called from a script loop creates and drops a tensor per call, and Lua's
 * collector frees them in large batches: glibc malloc then spends most of the time
 * consolidating. Tensor structs, and small tensors as one block (struct, storage header
 * and data together), are kept on per-thread free lists instead. */
#define POOL_CAP 65536
#define SMALL_DATA_MAX 256

typedef struct small_block {
    graft_tensor t;
    graft_storage s;
    _Alignas(64) unsigned char data[SMALL_DATA_MAX];
} small_block;

typedef struct pool_node { struct pool_node *next; } pool_node;
static _Thread_local pool_node *tensor_pool, *small_pool;
static _Thread_local int tensor_pool_n, small_pool_n;

static void *pool_get(pool_node **head, int *n, size_t size, size_t align) {
    pool_node *p = *head;
    if (p) {
        *head = p->next;
        (*n)--;
        return p;
    }
    void *q = NULL;
    return posix_memalign(&q, align, size) == 0 ? q : NULL;
}

static void pool_put(pool_node **head, int *n, void *p) {
    if (*n >= POOL_CAP) {
        free(p);
        return;
    }
    pool_node *node = p;
    node->next = *head;
    *head = node;
    (*n)++;
}

/* Frees this thread's pooled objects (graft_alloc_empty_cache's companion). */
void graft_tensor_pool_flush(void) {
    for (pool_node **head = &tensor_pool; *head;) {
        pool_node *p = *head;
        *head = p->next;
        free(p);
    }
    for (pool_node **head = &small_pool; *head;) {
        pool_node *p = *head;
        *head = p->next;
        free(p);
    }
    tensor_pool_n = small_pool_n = 0;
}

static void small_block_release(void *ctx, void *data, size_t nbytes) {
    (void)data;
    (void)nbytes;
    graft_alloc_account(-(int64_t)sizeof(small_block));
    pool_put(&small_pool, &small_pool_n, ctx);
}

static graft_tensor *tensor_alloc(void) {
    graft_tensor *t = pool_get(&tensor_pool, &tensor_pool_n, sizeof *t, 16);
    if (!t) return NULL;
    t->flags = 0;
    t->refcount = 1;
    t->storage = NULL;
    t->offset = 0;
    t->ndim = 0;
    t->dtype = GRAFT_F32;
    t->autograd = NULL;
    t->autograd_free = NULL;
    atomic_fetch_add(&tensor_live_count, 1);
    return t;
}

static void tensor_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

graft_status graft_tensor_empty(graft_tensor **out, int ndim, const int64_t *shape,
                                graft_dtype dtype, graft_device dev) {
    *out = NULL;
    if (ndim < 0 || ndim > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_EINVAL, "tensors have at most %d dims, got %d", GRAFT_MAX_DIMS, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return graft_error(GRAFT_EINVAL, "negative dimension %lld in shape", (long long)shape[i]);
        if (shape[i] && numel > INT64_MAX / shape[i])
            return graft_error(GRAFT_ENOMEM, "shape too large");
        numel *= shape[i];
    }
    /* the strides multiply the non-zero sizes, even when a zero size empties the tensor */
    int64_t span = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] > 1 && span > INT64_MAX / shape[i])
            return graft_error(GRAFT_ENOMEM, "shape too large");
        if (shape[i] > 1) span *= shape[i];
    }
    size_t esz = graft_dtype_size(dtype);
    if (numel > (int64_t)(((size_t)1 << 46) / esz))
        return graft_error(GRAFT_ENOMEM, "out of memory: cannot allocate %lld elements of %s",
                           (long long)numel, graft_dtype_name(dtype));
    if (dev.type == GRAFT_CPU && (size_t)numel * esz <= SMALL_DATA_MAX) {
        small_block *b = pool_get(&small_pool, &small_pool_n, sizeof *b, 64);
        if (!b) return graft_error(GRAFT_ENOMEM, "out of memory");
        graft_alloc_account((int64_t)sizeof *b);
        graft_storage *bs = &b->s;
        bs->refcount = 1;
        bs->data = b->data;
        bs->nbytes = (size_t)numel * esz;
        bs->device = dev;
        bs->kind = GRAFT_STORAGE_OWNED;
        bs->version = 0;
        bs->release_fn = small_block_release;
        bs->release_ctx = b;
        graft_tensor *bt = &b->t;
        bt->refcount = 1;
        bt->storage = bs;
        bt->offset = 0;
        bt->ndim = ndim;
        bt->dtype = dtype;
        bt->flags = GRAFT_TENSOR_EMBEDDED;
        bt->autograd = NULL;
        bt->autograd_free = NULL;
        if (ndim) memcpy(bt->shape, shape, sizeof(int64_t) * (size_t)ndim);
        tensor_contiguous_strides(ndim, shape, bt->stride);
        atomic_fetch_add(&tensor_live_count, 1);
        *out = bt;
        return GRAFT_OK;
    }
    graft_storage *s;
    graft_status st = graft_storage_new(&s, (size_t)numel * esz, dev);
    if (st) return st;
    graft_tensor *t = tensor_alloc();
    if (!t) {
        graft_storage_release(s);
        return graft_error(GRAFT_ENOMEM, "out of memory");
    }
    t->storage = s;
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    tensor_contiguous_strides(ndim, shape, t->stride);
    *out = t;
    return GRAFT_OK;
}

graft_status graft_tensor_from_storage(graft_tensor **out, graft_storage *s, graft_dtype dtype,
                                       int ndim, const int64_t *shape, const int64_t *stride,
                                       int64_t offset) {
    *out = NULL;
    if (ndim < 0 || ndim > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_EINVAL, "tensors have at most %d dims, got %d", GRAFT_MAX_DIMS, ndim);
    if (offset < 0) return graft_error(GRAFT_EINVAL, "negative storage offset %lld", (long long)offset);
    /* The largest element reached must lie inside the storage. */
    int64_t hi = offset, numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return graft_error(GRAFT_EINVAL, "negative dimension %lld", (long long)shape[i]);
        if (stride[i] < 0) return graft_error(GRAFT_EINVAL, "negative stride %lld", (long long)stride[i]);
        numel *= shape[i];
        if (shape[i] > 0) {
            if (stride[i] && shape[i] - 1 > (INT64_MAX - hi) / stride[i])
                return graft_error(GRAFT_EINVAL, "tensor geometry overflows");
            hi += (shape[i] - 1) * stride[i];
        }
    }
    size_t esz = graft_dtype_size(dtype);
    if (numel > 0 && ((uint64_t)hi + 1 > (uint64_t)(s->nbytes / esz)))
        return graft_error(GRAFT_EINVAL, "tensor of shape needs %lld elements of %s but its storage holds %zu bytes",
                           (long long)(hi + 1), graft_dtype_name(dtype), s->nbytes);
    graft_tensor *t = tensor_alloc();
    if (!t) return graft_error(GRAFT_ENOMEM, "out of memory");
    graft_storage_retain(s);
    t->storage = s;
    t->dtype = dtype;
    t->ndim = ndim;
    t->offset = offset;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    if (ndim) memcpy(t->stride, stride, sizeof(int64_t) * (size_t)ndim);
    *out = t;
    return GRAFT_OK;
}

graft_status graft_tensor_view_of(graft_tensor **out, const graft_tensor *src, int ndim,
                                  const int64_t *shape, const int64_t *stride, int64_t offset) {
    *out = NULL;
    if (ndim < 0 || ndim > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_EINVAL, "tensors have at most %d dims, got %d", GRAFT_MAX_DIMS, ndim);
    graft_tensor *t = tensor_alloc();
    if (!t) return graft_error(GRAFT_ENOMEM, "out of memory");
    graft_storage_retain(src->storage);
    t->storage = src->storage;
    t->dtype = src->dtype;
    t->ndim = ndim;
    t->offset = offset;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    if (ndim) memcpy(t->stride, stride, sizeof(int64_t) * (size_t)ndim);
    *out = t;
    return GRAFT_OK;
}

void graft_tensor_retain(graft_tensor *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void graft_tensor_release(graft_tensor *t) {
    if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (t->autograd && t->autograd_free) t->autograd_free(t->autograd);
    graft_storage *s = t->storage;
    atomic_fetch_sub(&tensor_live_count, 1);
    /* An embedded struct goes with its block, when the storage's last reference goes. */
    if (!(t->flags & GRAFT_TENSOR_EMBEDDED)) pool_put(&tensor_pool, &tensor_pool_n, t);
    graft_storage_release(s);
}

bool graft_tensor_is_contiguous(const graft_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->shape[i] == 0) return true;
        if (t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

graft_status graft_tensor_clone(graft_tensor **out, graft_tensor *t) {
    graft_status st = graft_tensor_empty(out, t->ndim, t->shape, t->dtype, graft_tensor_device(t));
    if (st) return st;
    st = graft_tensor_copy_(*out, t);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_tensor_contiguous(graft_tensor **out, graft_tensor *t) {
    if (graft_tensor_is_contiguous(t)) {
        graft_tensor_retain(t);
        *out = t;
        return GRAFT_OK;
    }
    return graft_tensor_clone(out, t);
}

graft_status graft_tensor_to_dtype(graft_tensor **out, graft_tensor *t, graft_dtype dtype) {
    if (t->dtype == dtype) {
        graft_tensor_retain(t);
        *out = t;
        return GRAFT_OK;
    }
    graft_status st = graft_tensor_empty(out, t->ndim, t->shape, dtype, graft_tensor_device(t));
    if (st) return st;
    st = graft_tensor_copy_(*out, t);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* ---- conversion loops: one per (dst, src) dtype pair ---- */

static inline int64_t conv_f2i(double v) {
    if (!(v == v) || v >= 9223372036854775808.0 || v < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}
static inline int64_t conv_i2i(int64_t v) { return v; }
#define CONV_TO_I64(v) _Generic((v), float: conv_f2i, double: conv_f2i, default: conv_i2i)(v)

#define LD_F32(p) (*(const float *)(p))
#define LD_F64(p) (*(const double *)(p))
#define LD_F16(p) graft_f16_to_f32(*(const uint16_t *)(p))
#define LD_BF16(p) graft_bf16_to_f32(*(const uint16_t *)(p))
#define LD_I64(p) (*(const int64_t *)(p))
#define LD_I32(p) (*(const int32_t *)(p))
#define LD_I16(p) (*(const int16_t *)(p))
#define LD_I8(p) (*(const int8_t *)(p))
#define LD_U8(p) (*(const uint8_t *)(p))
#define LD_BOOL(p) (*(const uint8_t *)(p))

#define ST_F32(p, v) (*(float *)(p) = (float)(v))
#define ST_F64(p, v) (*(double *)(p) = (double)(v))
#define ST_F16(p, v) (*(uint16_t *)(p) = graft_f32_to_f16((float)(v)))
#define ST_BF16(p, v) (*(uint16_t *)(p) = graft_f32_to_bf16((float)(v)))
#define ST_I64(p, v) (*(int64_t *)(p) = CONV_TO_I64(v))
#define ST_I32(p, v) (*(int32_t *)(p) = (int32_t)(uint32_t)(uint64_t)CONV_TO_I64(v))
#define ST_I16(p, v) (*(int16_t *)(p) = (int16_t)(uint16_t)(uint64_t)CONV_TO_I64(v))
#define ST_I8(p, v) (*(int8_t *)(p) = (int8_t)(uint8_t)(uint64_t)CONV_TO_I64(v))
#define ST_U8(p, v) (*(uint8_t *)(p) = (uint8_t)(uint64_t)CONV_TO_I64(v))
#define ST_BOOL(p, v) (*(uint8_t *)(p) = (v) != 0)

#define DTYPES_A(X, ...) X(F32, float, __VA_ARGS__) X(F64, double, __VA_ARGS__) \
    X(F16, uint16_t, __VA_ARGS__) X(BF16, uint16_t, __VA_ARGS__) X(I64, int64_t, __VA_ARGS__) \
    X(I32, int32_t, __VA_ARGS__) X(I16, int16_t, __VA_ARGS__) X(I8, int8_t, __VA_ARGS__) \
    X(U8, uint8_t, __VA_ARGS__) X(BOOL, uint8_t, __VA_ARGS__)
#define DTYPES_B(X) X(F32, float) X(F64, double) X(F16, uint16_t) X(BF16, uint16_t) \
    X(I64, int64_t) X(I32, int32_t) X(I16, int16_t) X(I8, int8_t) X(U8, uint8_t) X(BOOL, uint8_t)

#define CONV_LOOP(SN, ST, DN, DT)                                                         \
    static void conv_##DN##_##SN(char **d, const int64_t *s, int64_t n, void *ctx) {     \
        (void)ctx;                                                                        \
        char *o = d[0];                                                                   \
        const char *in = d[1];                                                            \
        if (s[0] == (int64_t)sizeof(DT) && s[1] == (int64_t)sizeof(ST)) {                 \
            DT *op = (DT *)o;                                                             \
            const ST *ip = (const ST *)in;                                                \
            for (int64_t k = 0; k < n; k++) ST_##DN(op + k, LD_##SN(ip + k));             \
        } else {                                                                          \
            for (int64_t k = 0; k < n; k++) ST_##DN(o + k * s[0], LD_##SN(in + k * s[1])); \
        }                                                                                 \
    }
#define CONV_ROW(DN, DT) DTYPES_A(CONV_LOOP, DN, DT)
DTYPES_B(CONV_ROW)

#define CONV_ENTRY(SN, ST, DN, DT) [GRAFT_##SN] = conv_##DN##_##SN,
#define CONV_TABLE_ROW(DN, DT) [GRAFT_##DN] = {DTYPES_A(CONV_ENTRY, DN, DT)},
static const graft_loop_fn conv_table[GRAFT_NDTYPES][GRAFT_NDTYPES] = {DTYPES_B(CONV_TABLE_ROW)};

/* Same-dtype copy: memcpy when both sides are dense, else an element-size move. */
static void copy_same_loop(char **d, const int64_t *s, int64_t n, void *ctx) {
    size_t esz = (size_t)(uintptr_t)ctx;
    if (s[0] == (int64_t)esz && s[1] == (int64_t)esz) {
        memcpy(d[0], d[1], (size_t)n * esz);
        return;
    }
    switch (esz) {
    case 1: for (int64_t k = 0; k < n; k++) d[0][k * s[0]] = d[1][k * s[1]]; break;
    case 2: for (int64_t k = 0; k < n; k++) *(uint16_t *)(d[0] + k * s[0]) = *(const uint16_t *)(d[1] + k * s[1]); break;
    case 4: for (int64_t k = 0; k < n; k++) *(uint32_t *)(d[0] + k * s[0]) = *(const uint32_t *)(d[1] + k * s[1]); break;
    default: for (int64_t k = 0; k < n; k++) *(uint64_t *)(d[0] + k * s[0]) = *(const uint64_t *)(d[1] + k * s[1]); break;
    }
}

graft_status graft_tensor_copy_(graft_tensor *dst, graft_tensor *src) {
    char a[GRAFT_MAX_DIMS * 24 + 3], b[GRAFT_MAX_DIMS * 24 + 3];
    bool on_cuda = graft_tensor_device(dst).type == GRAFT_CUDA || graft_tensor_device(src).type == GRAFT_CUDA;
    if (!on_cuda && !graft_device_eq(graft_tensor_device(dst), graft_tensor_device(src)))
        return graft_error(GRAFT_EDEVICE, "copy_: tensors are on different devices");
    /* src must broadcast to dst's shape */
    if (src->ndim > dst->ndim)
        goto bad;
    for (int i = 0; i < src->ndim; i++) {
        int64_t ss = src->shape[src->ndim - 1 - i], ds = dst->shape[dst->ndim - 1 - i];
        if (ss != ds && ss != 1) goto bad;
    }
    if (on_cuda) { /* any mix of host and device sides: core/cuda/runtime.c */
        graft_status cs = graft_cuda_copy_(dst, src);
        if (!cs) graft_tensor_bump(dst);
        return cs;
    }
    graft_iter it;
    graft_tensor *ops[2] = {dst, src};
    graft_status st = graft_iter_init(&it, 2, ops, dst->ndim, dst->shape);
    if (st) return st;
    if (dst->dtype == src->dtype)
        graft_iter_run(&it, copy_same_loop, (void *)(uintptr_t)graft_dtype_size(dst->dtype));
    else
        graft_iter_run(&it, conv_table[dst->dtype][src->dtype], NULL);
    graft_tensor_bump(dst);
    return GRAFT_OK;
bad:
    return graft_error(GRAFT_ESHAPE, "copy_: source of shape %s cannot be broadcast to %s",
                       graft_shape_str(src->ndim, src->shape, a, sizeof a),
                       graft_shape_str(dst->ndim, dst->shape, b, sizeof b));
}

typedef struct { size_t esz; unsigned char bytes[8]; } fill_ctx;

static void fill_loop(char **d, const int64_t *s, int64_t n, void *vctx) {
    const fill_ctx *c = vctx;
    switch (c->esz) {
    case 1: { uint8_t v = c->bytes[0]; for (int64_t k = 0; k < n; k++) *(uint8_t *)(d[0] + k * s[0]) = v; break; }
    case 2: { uint16_t v; memcpy(&v, c->bytes, 2); for (int64_t k = 0; k < n; k++) *(uint16_t *)(d[0] + k * s[0]) = v; break; }
    case 4: { uint32_t v; memcpy(&v, c->bytes, 4);
        if (s[0] == 4) { uint32_t *p = (uint32_t *)d[0]; for (int64_t k = 0; k < n; k++) p[k] = v; }
        else for (int64_t k = 0; k < n; k++) *(uint32_t *)(d[0] + k * s[0]) = v;
        break; }
    default: { uint64_t v; memcpy(&v, c->bytes, 8);
        if (s[0] == 8) { uint64_t *p = (uint64_t *)d[0]; for (int64_t k = 0; k < n; k++) p[k] = v; }
        else for (int64_t k = 0; k < n; k++) *(uint64_t *)(d[0] + k * s[0]) = v;
        break; }
    }
}

static graft_status tensor_fill_bytes(graft_tensor *dst, fill_ctx *c) {
    if (graft_tensor_device(dst).type == GRAFT_CUDA) {
        graft_status cs = graft_cuda_fill_bytes_(dst, c->bytes);
        if (!cs) graft_tensor_bump(dst);
        return cs;
    }
    graft_iter it;
    graft_tensor *ops[1] = {dst};
    graft_status st = graft_iter_init(&it, 1, ops, dst->ndim, dst->shape);
    if (st) return st;
    graft_iter_run(&it, fill_loop, c);
    graft_tensor_bump(dst);
    return GRAFT_OK;
}

graft_status graft_tensor_fill_(graft_tensor *dst, double v) {
    fill_ctx c = {graft_dtype_size(dst->dtype), {0}};
    graft_store_f64(c.bytes, dst->dtype, v);
    return tensor_fill_bytes(dst, &c);
}

graft_status graft_tensor_fill_int_(graft_tensor *dst, int64_t v) {
    fill_ctx c = {graft_dtype_size(dst->dtype), {0}};
    graft_store_i64(c.bytes, dst->dtype, v);
    return tensor_fill_bytes(dst, &c);
}

graft_status graft_tensor_select(graft_tensor **out, const graft_tensor *t, int dim, int64_t index) {
    *out = NULL;
    if (dim < 0 || dim >= t->ndim)
        return graft_error(GRAFT_EINDEX, "select: dim %d is out of range for a tensor with %d dims", dim + 1, t->ndim);
    if (index < 0 || index >= t->shape[dim])
        return graft_error(GRAFT_EINDEX, "select: index %lld is out of range for dim %d of size %lld",
                           (long long)(index + 1), dim + 1, (long long)t->shape[dim]);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == dim) continue;
        shape[n] = t->shape[i];
        stride[n++] = t->stride[i];
    }
    return graft_tensor_view_of(out, t, n, shape, stride, t->offset + index * t->stride[dim]);
}

/* ---- shapes ---- */

const char *graft_shape_str(int ndim, const int64_t *shape, char *buf, size_t bufsize) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, bufsize - n, "[");
    for (int i = 0; i < ndim && n < bufsize; i++)
        n += (size_t)snprintf(buf + n, bufsize - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < bufsize) snprintf(buf + n, bufsize - n, "]");
    return buf;
}

graft_status graft_broadcast_shapes(int *ondim, int64_t *oshape, int an, const int64_t *as,
                                    int bn, const int64_t *bs, const char *op) {
    int n = an > bn ? an : bn;
    for (int i = 0; i < n; i++) {
        int64_t x = i < an ? as[an - 1 - i] : 1;
        int64_t y = i < bn ? bs[bn - 1 - i] : 1;
        if (x != y && x != 1 && y != 1) {
            char a[GRAFT_MAX_DIMS * 24 + 3], b[GRAFT_MAX_DIMS * 24 + 3];
            return graft_error(GRAFT_ESHAPE, "%s: shapes %s and %s cannot broadcast", op,
                               graft_shape_str(an, as, a, sizeof a), graft_shape_str(bn, bs, b, sizeof b));
        }
        oshape[n - 1 - i] = x == 1 ? y : x;
    }
    *ondim = n;
    return GRAFT_OK;
}

graft_status graft_wrap_dim(int *out, int dim, int ndim, const char *op) {
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        return graft_error(GRAFT_EINDEX, "%s: dim %d is out of range for a tensor with %d dims (expected %d..%d, or -%d..-1)",
                           op, dim >= 0 ? dim + 1 : dim, ndim, 1, n, n);
    *out = dim < 0 ? dim + n : dim;
    return GRAFT_OK;
}
