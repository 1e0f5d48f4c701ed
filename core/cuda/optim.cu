/* graft CUDA kernels: SGD, Adam/AdamW, RMSprop and Adagrad over a list of parameters
 * in one launch (see cuda/optim.h). Each element formula is the CPU's (core/optim/
 * optim.c) written with explicitly rounded operations (__fmul_rn, __fadd_rn, ...):
 * nvcc would otherwise contract a multiply and an add that the CPU rounds apart, and
 * the results would drift from the CPU's (and PyTorch's) in the last bit. float16 and
 * bfloat16 parameters get the CPU's 16-bit op sequence (optim.c, "16-bit parameters"):
 * float arithmetic rounded to 16 bits after every op, with the same choice between
 * PyTorch's vector-body and scalar-tail forms of add_ for each element. */
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
    static constexpr bool split = false;
    __device__ void operator()(T *P, const T *G, T *B, T *, T *, int64_t i, T, T, int first, bool) const {
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
    static constexpr bool split = false;
    __device__ void operator()(T *P, const T *G, T *M, T *V, T *VM, int64_t i, T nss, T bc2, int, bool) const {
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
    static constexpr bool split = false;
    __device__ void operator()(T *P, const T *G, T *S, T *A, T *B, int64_t i, T, T, int, bool) const {
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
    static constexpr bool split = false;
    __device__ void operator()(T *P, const T *G, T *S, T *, T *, int64_t i, T nclr, T, int, bool) const {
        T p = P[i], g = G[i], s = S[i];
        if (maximize) g = -g;
        if (has_wd) g = ok_fma(wd, p, g);
        s = ok_fma(g, g, s);
        S[i] = s;
        P[i] = ok_add(p, ok_div(ok_mul(nclr, g), ok_add(ok_sqrt(s), eps)));
    }
};

/* ---- 16-bit parameters: the CPU's op sequence (optim.c) ----
 * Storage is uint16_t bits, arithmetic in float, R = rounding to the 16-bit dtype (BF:
 * bfloat16, else float16) after every op; scalars arrive rounded as optim.c rounds them
 * (16-bit for add_'s alphas and mul_/div_/add_'s scalars, float for addcmul/addcdiv
 * values and lerp weights). vec: the element lies in PyTorch's bfloat16 vector body
 * (add_ as one fma), else its scalar tail (alpha·y rounded first). */
template <bool BF> __device__ __forceinline__ float h_rnd(float x) {
    return BF ? gk_bf2f(gk_f2bf(x)) : gk_h2f(gk_f2h(x));
}
template <bool BF> __device__ __forceinline__ float h_ld(const uint16_t *p) { return BF ? gk_bf2f(*p) : gk_h2f(*p); }
template <bool BF> __device__ __forceinline__ void h_st(uint16_t *p, float x) { *p = BF ? gk_f2bf(x) : gk_f2h(x); }
/* x.add_(y, alpha=a) */
template <bool BF> __device__ __forceinline__ float h_add(float x, float y, float a, bool vec) {
    return vec ? h_rnd<BF>(ok_fma(a, y, x)) : h_rnd<BF>(ok_add(h_rnd<BF>(ok_mul(a, y)), x));
}
/* x.mul_(s) */
template <bool BF> __device__ __forceinline__ float h_mul(float x, float s) { return h_rnd<BF>(ok_mul(x, s)); }
/* x.addcmul_(t1, t2, value=c) */
template <bool BF> __device__ __forceinline__ float h_addcmul(float x, float t1, float t2, float c) {
    return h_rnd<BF>(ok_fma(ok_mul(c, t1), t2, x));
}
/* x.addcdiv_(t1, t2, value=c) */
template <bool BF> __device__ __forceinline__ float h_addcdiv(float x, float t1, float t2, float c) {
    return h_rnd<BF>(ok_add(x, ok_div(ok_mul(c, t1), t2)));
}
/* m.lerp_(g, w): lw = w when small, else w − 1 */
template <bool BF> __device__ __forceinline__ float h_lerp(float m, float g, float lw, bool small) {
    return h_rnd<BF>(ok_fma(lw, ok_sub(g, m), small ? m : g));
}

template <bool BF> struct sgd16_op {
    float wd, mu, omd, nlr; /* 16-bit */
    bool maximize, has_wd, has_mom, nesterov;
    static constexpr bool split = BF;
    __device__ void operator()(uint16_t *P, const uint16_t *G, uint16_t *B, uint16_t *, uint16_t *, int64_t i, float,
                               float, int first, bool vec) const {
        float p = h_ld<BF>(P + i), d = h_ld<BF>(G + i);
        if (maximize) d = -d;
        if (has_wd) d = h_add<BF>(d, p, wd, vec);
        if (has_mom) {
            float b = d;
            if (!first) b = h_add<BF>(h_mul<BF>(h_ld<BF>(B + i), mu), d, omd, vec);
            h_st<BF>(B + i, b);
            d = nesterov ? h_add<BF>(d, b, mu, vec) : b;
        }
        h_st<BF>(P + i, h_add<BF>(p, d, nlr, vec));
    }
};

/* k0 = −step_size (float), k1 = √(1 − β2^t) (rounded to 16 bits here, as optim.c). */
template <bool BF> struct adam16_op {
    float wd, b1, omb1, b2, eps, decay; /* 16-bit */
    float omb2, lw;                     /* float */
    bool maximize, decoupled, decay_on, has_wd, lerp, lerp_small, amsgrad;
    static constexpr bool split = BF;
    __device__ void operator()(uint16_t *P, const uint16_t *G, uint16_t *M, uint16_t *V, uint16_t *VM, int64_t i,
                               float nss, float k1, int, bool vec) const {
        float p = h_ld<BF>(P + i), g = h_ld<BF>(G + i), m = h_ld<BF>(M + i), v = h_ld<BF>(V + i);
        const float bc2 = h_rnd<BF>(k1);
        if (maximize) g = -g;
        if (decoupled) {
            if (decay_on) p = h_mul<BF>(p, decay);
        } else if (has_wd) {
            g = h_add<BF>(g, p, wd, vec);
        }
        if (lerp) m = h_lerp<BF>(m, g, lw, lerp_small);
        else m = h_add<BF>(h_mul<BF>(m, b1), g, omb1, vec);
        v = h_addcmul<BF>(h_mul<BF>(v, b2), g, g, omb2);
        float vv = v;
        if (amsgrad) {
            vv = ok_max(h_ld<BF>(VM + i), v);
            h_st<BF>(VM + i, vv);
        }
        float den = h_rnd<BF>(ok_add(h_rnd<BF>(ok_div(h_rnd<BF>(ok_sqrt(vv)), bc2)), eps));
        h_st<BF>(P + i, h_addcdiv<BF>(p, m, den, nss));
        h_st<BF>(M + i, m);
        h_st<BF>(V + i, v);
    }
};

template <bool BF> struct rmsprop16_op {
    float wd, al, oma16, eps, mu, nlr16; /* 16-bit */
    float oma, nlr, lw;                  /* float */
    bool maximize, has_wd, centered, has_mom, lerp, lerp_small;
    static constexpr bool split = BF;
    __device__ void operator()(uint16_t *P, const uint16_t *G, uint16_t *S, uint16_t *A, uint16_t *B, int64_t i, float,
                               float, int, bool vec) const {
        float p = h_ld<BF>(P + i), g = h_ld<BF>(G + i), s = h_ld<BF>(S + i), avg;
        if (maximize) g = -g;
        if (has_wd) g = h_add<BF>(g, p, wd, vec);
        s = h_addcmul<BF>(h_mul<BF>(s, al), g, g, oma);
        h_st<BF>(S + i, s);
        if (centered) {
            float a = h_ld<BF>(A + i);
            if (lerp) a = h_lerp<BF>(a, g, lw, lerp_small);
            else a = h_add<BF>(h_mul<BF>(a, al), g, oma16, vec);
            h_st<BF>(A + i, a);
            avg = h_rnd<BF>(ok_sqrt(h_addcmul<BF>(s, a, a, -1.0f)));
        } else {
            avg = h_rnd<BF>(ok_sqrt(s));
        }
        avg = h_rnd<BF>(ok_add(avg, eps));
        if (has_mom) {
            float b = h_addcdiv<BF>(h_mul<BF>(h_ld<BF>(B + i), mu), g, avg, 1.0f);
            h_st<BF>(B + i, b);
            h_st<BF>(P + i, h_add<BF>(p, b, nlr16, vec));
        } else {
            h_st<BF>(P + i, h_addcdiv<BF>(p, g, avg, nlr));
        }
    }
};

/* k0 = −clr (float). */
template <bool BF> struct adagrad16_op {
    float wd, eps; /* 16-bit */
    bool maximize, has_wd;
    static constexpr bool split = BF;
    __device__ void operator()(uint16_t *P, const uint16_t *G, uint16_t *S, uint16_t *, uint16_t *, int64_t i,
                               float nclr, float, int, bool vec) const {
        float p = h_ld<BF>(P + i), g = h_ld<BF>(G + i), s = h_ld<BF>(S + i);
        if (maximize) g = -g;
        if (has_wd) g = h_add<BF>(g, p, wd, vec);
        s = h_addcmul<BF>(s, g, g, 1.0f);
        h_st<BF>(S + i, s);
        float sd = h_rnd<BF>(ok_add(h_rnd<BF>(ok_sqrt(s)), eps));
        h_st<BF>(P + i, h_addcdiv<BF>(p, g, sd, nclr));
    }
};

/* ---- the list table, as uploaded ---- */
#define OPTK_CHUNK ((int64_t)16384)

typedef struct {
    char *ptr[5];      /* device pointers of the operands (NULL: unused) */
    int64_t numel;
    int64_t body;      /* elements [0, body) are in PyTorch's bfloat16 vector body (else 0) */
    double k0, k1;     /* per-tensor scalars, already rounded to the compute type (exact as doubles) */
    int32_t first;
    int32_t pad_;
} optk_entry;

typedef struct {
    int64_t start;     /* first element of the chunk */
    int64_t tensor;    /* row of the entry table */
} optk_chunk;

/* One block per chunk (grid-stride over chunks): the threads of a block stride
 * through the chunk, so consecutive threads touch consecutive elements. */
template <typename S, typename C, class OP>
__global__ void optk_list_kernel(const optk_entry *tab, const optk_chunk *chunks, int64_t nchunks, OP op) {
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const optk_chunk ch = chunks[c];
        const optk_entry *e = &tab[ch.tensor];
        S *p = (S *)e->ptr[0], *s1 = (S *)e->ptr[2], *s2 = (S *)e->ptr[3], *s3 = (S *)e->ptr[4];
        const S *g = (const S *)e->ptr[1];
        const C k0 = (C)e->k0, k1 = (C)e->k1;
        const int first = e->first;
        const int64_t body = e->body;
        int64_t end = ch.start + OPTK_CHUNK < e->numel ? ch.start + OPTK_CHUNK : e->numel;
        for (int64_t i = ch.start + threadIdx.x; i < end; i += blockDim.x)
            op(p, g, s1, s2, s3, i, k0, k1, first, i < body);
    }
}

/* One tensor with a non-contiguous operand: byte offsets from the coalesced geometry.
 * Unused operands hold the parameter's pointer and are never touched. body: the vector
 * body of each innermost row (0: none). */
template <typename S, typename C, class OP>
__global__ void optk_strided_kernel(gk_geom<5> g, char *b0, const char *b1, char *b2, char *b3, char *b4, C k0, C k1,
                                    int first, int64_t body, OP op) {
    int64_t off[5];
    GK_FOR(i, g.numel) {
        gk_offsets<5>(g, i, off);
        bool vec = body > 0 && i % g.shape[0] < body;
        op((S *)(b0 + off[0]), (const S *)(b1 + off[1]), (S *)(b2 + off[2]), (S *)(b3 + off[3]), (S *)(b4 + off[4]), 0,
           k0, k1, first, vec);
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

/* The bfloat16 vector body of each innermost row of a coalesced iteration, as optim.c
 * computes it: whole blocks of GRAFT_OPTIM_BF16_BLOCK when the row is contiguous for
 * every operand, else none. */
static int64_t optk_body(const graft_iter *it) {
    for (int k = 0; k < it->nops; k++)
        if (it->strides[0][k] != 2) return 0;
    return it->shape[0] - it->shape[0] % GRAFT_OPTIM_BF16_BLOCK;
}

/* Runs op over every tensor of the lists: the contiguous ones in one launch over the
 * uploaded table, the others one strided launch each. S: the storage type, C: the
 * compute type of the per-tensor scalars. */
template <typename S, typename C, class OP>
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
            row->body = OP::split ? n - n % GRAFT_OPTIM_BF16_BLOCK : 0;
            row->k0 = l->k0 ? (double)(C)l->k0[i] : 0;
            row->k1 = l->k1 ? (double)(C)l->k1[i] : 0;
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
            GK_LAUNCH_FLAT((optk_list_kernel<S, C, OP>), blocks, GK_THREADS, 0, dt, dc, nchunks, op);
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
        C k0 = l->k0 ? (C)l->k0[i] : (C)0, k1 = l->k1 ? (C)l->k1[i] : (C)0;
        int first = l->first ? l->first[i] : 0;
        int64_t body = OP::split ? optk_body(&it) : 0;
        GK_LAUNCH_FLAT((optk_strided_kernel<S, C, OP>), gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it.data[0],
                       (const char *)it.data[1], it.data[2], it.data[3], it.data[4], k0, k1, first, body, op);
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
    return optk_run<T, T>("sgd", l, op);
}

/* A Python float scalar as PyTorch hands it to a 16-bit kernel: double to float to 16 bits. */
template <bool BF> static float h_scalar(double v) {
    float f = (float)v;
    return BF ? graft_bf16_to_f32(graft_f32_to_bf16(f)) : graft_f16_to_f32(graft_f32_to_f16(f));
}

template <bool BF> static graft_status sgd16_as(const graft_cuda_optim_lists *l, const graft_optim_sgd_args *a) {
    sgd16_op<BF> op;
    op.wd = h_scalar<BF>(a->weight_decay);
    op.mu = h_scalar<BF>(a->momentum);
    op.omd = h_scalar<BF>(1.0 - a->dampening);
    op.nlr = h_scalar<BF>(-a->lr);
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    op.has_mom = a->momentum != 0;
    op.nesterov = a->nesterov;
    return optk_run<uint16_t, float>("sgd", l, op);
}

/* The launcher for the lists' dtype: NAME_as<T> for float32/float64, NAME16_as<BF> for
 * bfloat16 (true) and float16 (false); an empty list launches nothing. */
#define OPTK_BY_DTYPE(NAME, ...)                                     \
    do {                                                             \
        if (l->n == 0) return GRAFT_OK;                              \
        GK_ON_DEVICE(l->op[0][0]);                                   \
        switch (l->op[0][0]->dtype) {                                \
        case GRAFT_F32: return NAME##_as<float>(__VA_ARGS__);        \
        case GRAFT_F64: return NAME##_as<double>(__VA_ARGS__);       \
        case GRAFT_BF16: return NAME##16_as<true>(__VA_ARGS__);      \
        default: return NAME##16_as<false>(__VA_ARGS__);             \
        }                                                            \
    } while (0)

extern "C" graft_status graft_cuda_optim_sgd(const graft_cuda_optim_lists *l, const graft_optim_sgd_args *a) {
    OPTK_BY_DTYPE(sgd, l, a);
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
    return optk_run<T, T>(a->decoupled ? "adamw" : "adam", l, op);
}

template <bool BF>
static graft_status adam16_as(const graft_cuda_optim_lists *l, const graft_optim_adam_args *a, bool lerp_small) {
    adam16_op<BF> op;
    const float lw = (float)(1.0 - a->beta1);
    op.wd = h_scalar<BF>(a->weight_decay);
    op.b1 = h_scalar<BF>(a->beta1);
    op.omb1 = h_scalar<BF>(1.0 - a->beta1);
    op.b2 = h_scalar<BF>(a->beta2);
    op.eps = h_scalar<BF>(a->eps);
    volatile double lrwd = a->lr * a->weight_decay; /* rounded before the subtraction, as optim.c */
    op.decay = h_scalar<BF>(1.0 - lrwd);
    op.omb2 = (float)(1.0 - a->beta2);
    op.lw = lerp_small ? lw : lw - 1.0f;
    op.maximize = a->maximize;
    op.decoupled = a->decoupled;
    op.decay_on = 1.0 - lrwd != 1.0;
    op.has_wd = a->weight_decay != 0;
    op.lerp = a->lerp;
    op.lerp_small = lerp_small;
    op.amsgrad = a->amsgrad;
    return optk_run<uint16_t, float>(a->decoupled ? "adamw" : "adam", l, op);
}

extern "C" graft_status graft_cuda_optim_adam(const graft_cuda_optim_lists *l, const graft_optim_adam_args *a,
                                             bool lerp_small) {
    OPTK_BY_DTYPE(adam, l, a, lerp_small);
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
    return optk_run<T, T>("rmsprop", l, op);
}

template <bool BF>
static graft_status rmsprop16_as(const graft_cuda_optim_lists *l, const graft_optim_rmsprop_args *a, bool lerp_small) {
    rmsprop16_op<BF> op;
    const float lw = (float)(1.0 - a->alpha);
    op.wd = h_scalar<BF>(a->weight_decay);
    op.al = h_scalar<BF>(a->alpha);
    op.oma16 = h_scalar<BF>(1.0 - a->alpha);
    op.eps = h_scalar<BF>(a->eps);
    op.mu = h_scalar<BF>(a->momentum);
    op.nlr16 = h_scalar<BF>(-a->lr);
    op.oma = lw;
    op.nlr = (float)(-a->lr);
    op.lw = lerp_small ? lw : lw - 1.0f;
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    op.centered = a->centered;
    op.has_mom = a->momentum > 0;
    op.lerp = a->lerp;
    op.lerp_small = lerp_small;
    return optk_run<uint16_t, float>("rmsprop", l, op);
}

extern "C" graft_status graft_cuda_optim_rmsprop(const graft_cuda_optim_lists *l, const graft_optim_rmsprop_args *a,
                                                bool lerp_small) {
    OPTK_BY_DTYPE(rmsprop, l, a, lerp_small);
}

template <typename T>
static graft_status adagrad_as(const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a) {
    adagrad_op<T> op;
    op.wd = (T)a->weight_decay;
    op.eps = (T)a->eps;
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    return optk_run<T, T>("adagrad", l, op);
}

template <bool BF>
static graft_status adagrad16_as(const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a) {
    adagrad16_op<BF> op;
    op.wd = h_scalar<BF>(a->weight_decay);
    op.eps = h_scalar<BF>(a->eps);
    op.maximize = a->maximize;
    op.has_wd = a->weight_decay != 0;
    return optk_run<uint16_t, float>("adagrad", l, op);
}

extern "C" graft_status graft_cuda_optim_adagrad(const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a) {
    OPTK_BY_DTYPE(adagrad, l, a);
}
