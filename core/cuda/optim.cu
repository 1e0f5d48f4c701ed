/* graft CUDA kernels: SGD, Adam/AdamW, RMSprop and Adagrad over a list of parameters
 * in one launch (see cuda/optim.h). Each element formula is the CPU's (core/optim/
 * optim.c) written with explicitly rounded operations (__fmul_rn, __fadd_rn, ...):
 * nvcc would otherwise contract a multiply and an add that the CPU rounds apart, and
 * the results would drift from the CPU's (and PyTorch's) in the last bit. */
#include "kernel.cuh"
#include "cuda/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef GRAFT_CUDA_EMU_ACTIVE
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- one rounding per operation ---- */
#ifdef GRAFT_CUDA_EMU_ACTIVE
static inline float ok_mul(float a, float b) { return a * b; }
static inline double ok_mul(double a, double b) { return a * b; }
static inline float ok_add(float a, float b) { return a + b; }
static inline double ok_add(double a, double b) { return a + b; }
static inline float ok_sub(float a, float b) { return a - b; }
static inline double ok_sub(double a, double b) { return a - b; }
static inline float ok_div(float a, float b) { return a / b; }
static inline double ok_div(double a, double b) { return a / b; }
static inline float ok_sqrt(float a) { return sqrtf(a); }
static inline double ok_sqrt(double a) { return sqrt(a); }
static inline float ok_fma(float a, float b, float c) { return fmaf(a, b, c); }
static inline double ok_fma(double a, double b, double c) { return fma(a, b, c); }
#else
__device__ __forceinline__ float ok_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double ok_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float ok_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double ok_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float ok_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double ok_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float ok_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double ok_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float ok_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double ok_sqrt(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ float ok_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double ok_fma(double a, double b, double c) { return __fma_rn(a, b, c); }
#endif
/* torch.maximum: NaN wins from either side. */
template <typename T> __device__ __forceinline__ T ok_max(T a, T b) { return a != a ? a : (a > b ? a : b); }

/* ---- the element updates ----
 * Each functor holds the per-list constants, already rounded to T on the host exactly
 * as optim.c rounds them, and updates element i of one tensor: P the parameter, G its
 * gradient, S1..S3 the state (unused ones are never touched), k0/k1 the per-tensor
 * scalars (rounded to T), first SGD's "buffer not written yet". */

/* SGD: d = ±g (+ wd·p); buf = d (first) or fma(1 − dampening, d, buf·mu);
 * d = fma(mu, buf, d) (nesterov) or buf; p = fma(−lr, d, p). */
template <typename T> struct sgd_op {
    T wd, mu, omd, nlr;
    bool maximize, has_wd, has_mom, nesterov;
    __device__ void operator()(T *P, const T *G, T *B, T *, T *, int64_t i, T, T, int first) const {
        T p = P[i], d = G[i];
        if (maximize) d = -d;
        if (has_wd) d = ok_fma(wd, p, d);
        if (has_mom) {
            T b = d;
            if (!first) b = ok_fma(omd, d, ok_mul(B[i], mu));
            B[i] = b;
            d = nesterov ? ok_fma(mu, b, d) : b;
        }
        P[i] = ok_fma(nlr, d, p);
    }
};

/* Adam/AdamW: m by fma(1 − β1, g, β1·m) (1.13) or ATen's lerp (2.x); v = fma((1 − β2)·g,
 * g, β2·v); den = √v / √(1 − β2^t) + eps; p = p + (−step_size·m) / den.
 * k0 = −step_size, k1 = √(1 − β2^t). */
template <typename T> struct adam_op {
    T wd, b1, omb1, b2, omb2, eps, decay, lw;
    bool maximize, decoupled, decay_on, has_wd, lerp, lerp_small, amsgrad;
    __device__ void operator()(T *P, const T *G, T *M, T *V, T *VM, int64_t i, T nss, T bc2, int) const {
        T p = P[i], g = G[i], m = M[i], v = V[i];
        if (maximize) g = -g;
        if (decoupled) {
            if (decay_on) p = ok_mul(p, decay);
        } else if (has_wd) {
            g = ok_fma(wd, p, g);
        }
        if (!lerp) m = ok_fma(omb1, g, ok_mul(m, b1));
        else if (lerp_small) m = ok_fma(lw, ok_sub(g, m), m);
        else m = ok_fma(lw, ok_sub(g, m), g);
        v = ok_fma(ok_mul(omb2, g), g, ok_mul(v, b2));
        T vv = v;
        if (amsgrad) {
            vv = ok_max(VM[i], v);
            VM[i] = vv;
        }
        T den = ok_add(ok_div(ok_sqrt(vv), bc2), eps);
        P[i] = ok_add(p, ok_div(ok_mul(nss, m), den));
        M[i] = m;
        V[i] = v;
    }
};

/* RMSprop: s = fma((1 − α)·g, g, α·s); centered: a as Adam's m, avg = √(fma(−a, a, s)),
 * else √s; avg += eps; momentum: buf = buf·mu + g/avg, p = fma(−lr, buf, p); else
 * p = p + (−lr·g) / avg. State: S1 square_avg, S2 grad_avg, S3 momentum_buffer. */
template <typename T> struct rmsprop_op {
    T wd, al, oma, eps, mu, nlr, lw;
    bool maximize, has_wd, centered, has_mom, lerp, lerp_small;
    __device__ void operator()(T *P, const T *G, T *S, T *A, T *B, int64_t i, T, T, int) const {
        T p = P[i], g = G[i], s = S[i], avg;
        if (maximize) g = -g;
        if (has_wd) g = ok_fma(wd, p, g);
        s = ok_fma(ok_mul(oma, g), g, ok_mul(s, al));
        S[i] = s;
        if (centered) {
            T a = A[i];
            if (!lerp) a = ok_fma(oma, g, ok_mul(a, al));
            else if (lerp_small) a = ok_fma(lw, ok_sub(g, a), a);
            else a = ok_fma(lw, ok_sub(g, a), g);
            A[i] = a;
            avg = ok_sqrt(ok_fma(-a, a, s));
        } else {
            avg = ok_sqrt(s);
        }
        avg = ok_add(avg, eps);
        if (has_mom) {
            T b = ok_add(ok_mul(B[i], mu), ok_div(g, avg));
            B[i] = b;
            P[i] = ok_fma(nlr, b, p);
        } else {
            P[i] = ok_add(p, ok_div(ok_mul(nlr, g), avg));
        }
    }
};

/* Adagrad: sum = fma(g, g, sum); p = p + (−clr·g) / (√sum + eps). k0 = −clr. */
template <typename T> struct adagrad_op {
    T wd, eps;
    bool maximize, has_wd;
    __device__ void operator()(T *P, const T *G, T *S, T *, T *, int64_t i, T nclr, T, int) const {
        T p = P[i], g = G[i], s = S[i];
        if (maximize) g = -g;
        if (has_wd) g = ok_fma(wd, p, g);
        s = ok_fma(g, g, s);
        S[i] = s;
        P[i] = ok_add(p, ok_div(ok_mul(nclr, g), ok_add(ok_sqrt(s), eps)));
    }
};

/* ---- the list table, as uploaded ---- */
#define OPTK_CHUNK ((int64_t)16384)

typedef struct {
    char *ptr[5];      /* device pointers of the operands (NULL: unused) */
    int64_t numel;
    double k0, k1;     /* per-tensor scalars, already rounded to T (exact as doubles) */
    int32_t first;
    int32_t pad_;
} optk_entry;

typedef struct {
    int64_t start;     /* first element of the chunk */
    int64_t tensor;    /* row of the entry table */
} optk_chunk;

/* One block per chunk (grid-stride over chunks): the threads of a block stride
 * through the chunk, so consecutive threads touch consecutive elements. */
template <typename T, class OP>
__global__ void optk_list_kernel(const optk_entry *tab, const optk_chunk *chunks, int64_t nchunks, OP op) {
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const optk_chunk ch = chunks[c];
        const optk_entry *e = &tab[ch.tensor];
        T *p = (T *)e->ptr[0], *s1 = (T *)e->ptr[2], *s2 = (T *)e->ptr[3], *s3 = (T *)e->ptr[4];
        const T *g = (const T *)e->ptr[1];
        const T k0 = (T)e->k0, k1 = (T)e->k1;
        const int first = e->first;
        int64_t end = ch.start + OPTK_CHUNK < e->numel ? ch.start + OPTK_CHUNK : e->numel;
        for (int64_t i = ch.start + threadIdx.x; i < end; i += blockDim.x) op(p, g, s1, s2, s3, i, k0, k1, first);
    }
}

/* One tensor with a non-contiguous operand: byte offsets from the coalesced geometry.
 * Unused operands hold the parameter's pointer and are never touched. */
template <typename T, class OP>
__global__ void optk_strided_kernel(gk_geom<5> g, char *b0, const char *b1, char *b2, char *b3, char *b4, T k0, T k1,
                                    int first, OP op) {
    int64_t off[5];
    GK_FOR(i, g.numel) {
        gk_offsets<5>(g, i, off);
        op((T *)(b0 + off[0]), (const T *)(b1 + off[1]), (T *)(b2 + off[2]), (T *)(b3 + off[3]), (T *)(b4 + off[4]), 0,
           k0, k1, first);
    }
}

/* ---- uploading the table ----
 * A small ring of pinned host buffers: the table is written into one and copied with
 * cudaMemcpyAsync, so the host never waits for the GPU (a pageable cudaMemcpy would
 * wait for every kernel queued before it). A buffer is reused only after its copy's
 * event has completed (the copy of an earlier list, long done in practice). One ring
 * per device: an event records only on a stream of the device it was created on. */
#define OPTK_RING 4
#define OPTK_DEVICES 16
static struct {
    void *host;
    size_t cap;
    cudaEvent_t ev;
    bool used;
} optk_ring[OPTK_DEVICES][OPTK_RING];
static int optk_next[OPTK_DEVICES];

/* n bytes from src to dst, on device (already selected). */
static graft_status optk_upload(void *dst, const void *src, size_t n, int device) {
    graft_status st;
    if (device < 0 || device >= OPTK_DEVICES) return graft_error(GRAFT_EDEVICE, "optimizer: no CUDA device %d", device);
    int k = optk_next[device];
    optk_next[device] = (k + 1) % OPTK_RING;
    auto &r = optk_ring[device][k];
    if (!r.ev && (st = gk_check(cudaEventCreateWithFlags(&r.ev, cudaEventDisableTiming), "cudaEventCreateWithFlags")))
        return st;
    if (r.used && (st = gk_check(cudaEventSynchronize(r.ev), "cudaEventSynchronize"))) return st;
    r.used = false;
    if (r.cap < n) {
        if (r.host) cudaFreeHost(r.host);
        r.host = NULL;
        r.cap = 0;
        size_t cap = n < 4096 ? 4096 : n + n / 2;
        if ((st = gk_check(cudaMallocHost(&r.host, cap), "cudaMallocHost"))) return st;
        r.cap = cap;
    }
    memcpy(r.host, src, n);
    if ((st = gk_check(cudaMemcpyAsync(dst, r.host, n, cudaMemcpyHostToDevice, graft_cuda_stream()),
                       "cudaMemcpyAsync (optimizer table)")))
        return st;
    if ((st = gk_check(cudaEventRecord(r.ev, graft_cuda_stream()), "cudaEventRecord"))) return st;
    r.used = true;
    return GRAFT_OK;
}

static bool optk_dense(const graft_cuda_optim_lists *l, int i) {
    for (int k = 0; k < 5; k++)
        if (l->op[k] && !graft_tensor_is_contiguous(l->op[k][i])) return false;
    return true;
}

/* Runs op over every tensor of the lists: the contiguous ones in one launch over the
 * uploaded table, the others one strided launch each. */
template <typename T, class OP>
static graft_status optk_run(const char *name, const graft_cuda_optim_lists *l, const OP &op) {
    graft_status st = GRAFT_OK;
    optk_entry *tab = NULL;
    graft_tensor *dev_tab = NULL;
    int64_t nent = 0, nchunks = 0;
    for (int i = 0; i < l->n; i++) {
        int64_t n = graft_tensor_numel(l->op[0][i]);
        if (n > 0 && optk_dense(l, i)) {
            nent++;
            nchunks += (n + OPTK_CHUNK - 1) / OPTK_CHUNK;
        }
    }
    if (nent > 0) {
        size_t bytes = (size_t)nent * sizeof(optk_entry) + (size_t)nchunks * sizeof(optk_chunk);
        tab = (optk_entry *)malloc(bytes);
        if (!tab) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the parameter table", name);
        optk_chunk *chunks = (optk_chunk *)(tab + nent);
        int64_t e = 0, c = 0;
        for (int i = 0; i < l->n; i++) {
            int64_t n = graft_tensor_numel(l->op[0][i]);
            if (n == 0 || !optk_dense(l, i)) continue;
            optk_entry *row = &tab[e];
            memset(row, 0, sizeof *row);
            for (int k = 0; k < 5; k++) row->ptr[k] = l->op[k] ? (char *)graft_tensor_data(l->op[k][i]) : NULL;
            row->numel = n;
            row->k0 = l->k0 ? (double)(T)l->k0[i] : 0;
            row->k1 = l->k1 ? (double)(T)l->k1[i] : 0;
            row->first = l->first ? l->first[i] : 0;
            for (int64_t s = 0; s < n; s += OPTK_CHUNK) {
                chunks[c].start = s;
                chunks[c].tensor = e;
                c++;
            }
            e++;
        }
        int64_t nb = (int64_t)bytes;
        graft_device dev = graft_tensor_device(l->op[0][0]);
        if (!(st = graft_tensor_empty(&dev_tab, 1, &nb, GRAFT_U8, dev)) &&
            !(st = optk_upload(graft_tensor_data(dev_tab), tab, bytes, dev.index))) {
            const optk_entry *dt = (const optk_entry *)graft_tensor_data(dev_tab);
            const optk_chunk *dc = (const optk_chunk *)(dt + nent);
            unsigned blocks = nchunks < (1 << 20) ? (unsigned)nchunks : (1u << 20);
            GK_LAUNCH_FLAT((optk_list_kernel<T, OP>), blocks, GK_THREADS, 0, dt, dc, nchunks, op);
            st = gk_launched(name);
        }
        /* the caching allocator hands the table's block out again only to work queued
         * after this launch on the same stream */
        graft_tensor_release(dev_tab);
        free(tab);
        if (st) return st;
    }
    for (int i = 0; i < l->n; i++) {
        graft_tensor *p = l->op[0][i];
        if (graft_tensor_numel(p) == 0 || optk_dense(l, i)) continue;
        graft_tensor *ops[5];
        for (int k = 0; k < 5; k++) ops[k] = l->op[k] ? l->op[k][i] : p;
        graft_iter it;
        if ((st = graft_iter_init(&it, 5, ops, p->ndim, p->shape))) return st;
        gk_geom<5> g = gk_geom_of<5>(&it);
        T k0 = l->k0 ? (T)l->k0[i] : (T)0, k1 = l->k1 ? (T)l->k1[i] : (T)0;
        int first = l->first ? l->first[i] : 0;
        GK_LAUNCH_FLAT((optk_strided_kernel<T, OP>), gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it.data[0],
                       (const char *)it.data[1], it.data[2], it.data[3], it.data[4], k0, k1, first, op);
        if ((st = gk_launched(name))) return st;
    }
    return GRAFT_OK;
}

/* ---- launchers: the per-list constants, rounded as optim.c rounds them ---- */

template <typename T> static graft_status sgd_as(const graft_cuda_optim_lists *l, const graft_optim_sgd_args *a) {
    sgd_op<T> op;
    op.wd = (T)a->weight_decay;
    op.mu = (T)a->momentum;
    op.omd = (T)(1.0 - a->dampening);
    op.nlr = (T)(-a->lr);
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    op.has_mom = a->momentum != 0;
    op.nesterov = a->nesterov;
    return optk_run<T>("sgd", l, op);
}

extern "C" graft_status graft_cuda_optim_sgd(const graft_cuda_optim_lists *l, const graft_optim_sgd_args *a) {
    if (l->n == 0) return GRAFT_OK;
    GK_ON_DEVICE(l->op[0][0]);
    return l->op[0][0]->dtype == GRAFT_F32 ? sgd_as<float>(l, a) : sgd_as<double>(l, a);
}

template <typename T>
static graft_status adam_as(const graft_cuda_optim_lists *l, const graft_optim_adam_args *a, bool lerp_small) {
    adam_op<T> op;
    const T lw = (T)(1.0 - a->beta1);
    op.wd = (T)a->weight_decay;
    op.b1 = (T)a->beta1;
    op.omb1 = lw;
    op.b2 = (T)a->beta2;
    op.omb2 = (T)(1.0 - a->beta2);
    op.eps = (T)a->eps;
    volatile double lrwd = a->lr * a->weight_decay; /* rounded before the subtraction, as optim.c */
    op.decay = (T)(1.0 - lrwd);
    op.lw = lerp_small ? lw : (T)(lw - (T)1);
    op.maximize = a->maximize;
    op.decoupled = a->decoupled;
    op.decay_on = 1.0 - lrwd != 1.0;
    op.has_wd = a->weight_decay != 0;
    op.lerp = a->lerp;
    op.lerp_small = lerp_small;
    op.amsgrad = a->amsgrad;
    return optk_run<T>(a->decoupled ? "adamw" : "adam", l, op);
}

extern "C" graft_status graft_cuda_optim_adam(const graft_cuda_optim_lists *l, const graft_optim_adam_args *a,
                                             bool lerp_small) {
    if (l->n == 0) return GRAFT_OK;
    GK_ON_DEVICE(l->op[0][0]);
    return l->op[0][0]->dtype == GRAFT_F32 ? adam_as<float>(l, a, lerp_small) : adam_as<double>(l, a, lerp_small);
}

template <typename T>
static graft_status rmsprop_as(const graft_cuda_optim_lists *l, const graft_optim_rmsprop_args *a, bool lerp_small) {
    rmsprop_op<T> op;
    const T lw = (T)(1.0 - a->alpha);
    op.wd = (T)a->weight_decay;
    op.al = (T)a->alpha;
    op.oma = lw;
    op.eps = (T)a->eps;
    op.mu = (T)a->momentum;
    op.nlr = (T)(-a->lr);
    op.lw = lerp_small ? lw : (T)(lw - (T)1);
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    op.centered = a->centered;
    op.has_mom = a->momentum > 0;
    op.lerp = a->lerp;
    op.lerp_small = lerp_small;
    return optk_run<T>("rmsprop", l, op);
}

extern "C" graft_status graft_cuda_optim_rmsprop(const graft_cuda_optim_lists *l, const graft_optim_rmsprop_args *a,
                                                bool lerp_small) {
    if (l->n == 0) return GRAFT_OK;
    GK_ON_DEVICE(l->op[0][0]);
    return l->op[0][0]->dtype == GRAFT_F32 ? rmsprop_as<float>(l, a, lerp_small) : rmsprop_as<double>(l, a, lerp_small);
}

template <typename T>
static graft_status adagrad_as(const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a) {
    adagrad_op<T> op;
    op.wd = (T)a->weight_decay;
    op.eps = (T)a->eps;
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    return optk_run<T>("adagrad", l, op);
}

extern "C" graft_status graft_cuda_optim_adagrad(const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a) {
    if (l->n == 0) return GRAFT_OK;
    GK_ON_DEVICE(l->op[0][0]);
    return l->op[0][0]->dtype == GRAFT_F32 ? adagrad_as<float>(l, a) : adagrad_as<double>(l, a);
}
