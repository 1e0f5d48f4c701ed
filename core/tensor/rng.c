/* graft core: the random stream and the fills built on it (see rng.h). Fills generate
 * in element order over a contiguous scratch buffer and then copy into t, so the values
 * do not depend on t's strides or on the thread count. CUDA tensors are filled on the
 * device (core/cuda/random.cu) from the same words with the same arithmetic (philox.h,
 * shared): a seed gives the same values on either device. */
#include "rng.h"

#include "cuda/random.h"
#include "philox.h"

#include <stdlib.h>
#include <string.h>

static graft_rng_state rng_global = {67280421310721ull, 0};

void graft_rng_manual_seed(uint64_t seed) { rng_global.seed = seed; rng_global.offset = 0; }
uint64_t graft_rng_initial_seed(void) { return rng_global.seed; }
void graft_rng_get_state(graft_rng_state *out) { *out = rng_global; }
void graft_rng_set_state(const graft_rng_state *st) { rng_global = *st; }

uint64_t graft_rng_reserve(uint64_t nblocks) {
    uint64_t c = rng_global.offset;
    rng_global.offset += nblocks;
    return c;
}

uint64_t graft_rng_next_u64(void) {
    uint32_t w[4];
    graft_philox(rng_global.seed, graft_rng_reserve(1), w);
    return ((uint64_t)w[0] << 32) | w[1];
}

/* Writes n words of the stream starting at block `base` into words[]. */
static void rng_words(uint64_t seed, uint64_t base, uint32_t *words, int64_t n) {
    #pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t b = 0; b < (n + 3) / 4; b++) {
        uint32_t w[4];
        graft_philox(seed, base + (uint64_t)b, w);
        for (int k = 0; k < 4 && b * 4 + k < n; k++) words[b * 4 + k] = w[k];
    }
}

/* A CUDA tensor: generated in place when contiguous (and int64 for randint), else into
 * a contiguous device buffer copied into t, as the CPU does. */
static graft_status rng_fill_cuda(graft_tensor *t, int kind, double a, double b, int64_t ia, int64_t ib,
                                  uint64_t nblocks) {
    graft_tensor *tmp = NULL, *dst = t;
    graft_status st = GRAFT_OK;
    bool direct = graft_tensor_is_contiguous(t) && (kind != GRAFT_RNG_RANDINT || t->dtype == GRAFT_I64);
    if (!direct) {
        st = graft_tensor_empty(&tmp, t->ndim, t->shape, kind == GRAFT_RNG_RANDINT ? GRAFT_I64 : t->dtype,
                                graft_tensor_device(t));
        if (st) return st;
        dst = tmp;
    }
    st = graft_cuda_rng_fill(dst, kind, a, b, ia, ib, rng_global.seed, graft_rng_reserve(nblocks));
    if (!st && tmp) st = graft_tensor_copy_(t, tmp); /* copy_ marks t written */
    else if (!st) graft_tensor_bump(t);
    graft_tensor_release(tmp);
    return st;
}

/* The values: uniform  a + (b - a) u, normal  a + b z (Box-Muller), randint
 * ia + r mod (ib - ia), by philox.h's functions, which the device runs too. */
static graft_status rng_fill(graft_tensor *t, int kind, double a, double b, int64_t ia, int64_t ib) {
    int64_t n = graft_tensor_numel(t);
    if (n == 0) return GRAFT_OK;
    bool f64 = t->dtype == GRAFT_F64;
    /* words per element: uniform f32 1, f64 2; normal f32 2 (Box-Muller pairs use 2 each
     * but yield 2 values), keep it simple: 2 words per element for normals and ints. */
    int64_t wpe = (kind == GRAFT_RNG_UNIFORM && !f64) ? 1 : 2;
    if (kind == GRAFT_RNG_NORMAL && f64) wpe = 4;
    if (graft_tensor_device(t).type == GRAFT_CUDA) return rng_fill_cuda(t, kind, a, b, ia, ib, (uint64_t)(n * wpe + 3) / 4);
    uint32_t *words = malloc(sizeof(uint32_t) * (size_t)(n * wpe + 4));
    graft_tensor *tmp = NULL;
    if (!words) return graft_error(GRAFT_ENOMEM, "random: out of memory");
    graft_dtype work = (kind == GRAFT_RNG_RANDINT) ? GRAFT_I64 : (f64 ? GRAFT_F64 : GRAFT_F32);
    graft_status st = graft_tensor_empty(&tmp, t->ndim, t->shape, work, graft_cpu);
    if (st) { free(words); return st; }
    uint64_t nblocks = (uint64_t)(n * wpe + 3) / 4;
    rng_words(rng_global.seed, graft_rng_reserve(nblocks), words, n * wpe);
    void *out = tmp->storage->data;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *w = words + i * wpe;
        if (kind == GRAFT_RNG_UNIFORM) {
            if (f64) ((double *)out)[i] = graft_philox_uniform(graft_philox_u53(w[0], w[1]), a, b);
            else ((float *)out)[i] = (float)graft_philox_uniform(graft_philox_u24(w[0]), a, b);
        } else if (kind == GRAFT_RNG_NORMAL) {
            if (f64)
                ((double *)out)[i] =
                    graft_philox_normal(graft_philox_u53(w[0], w[1]), graft_philox_u53(w[2], w[3]), a, b);
            else
                ((float *)out)[i] = (float)graft_philox_normal(graft_philox_u24(w[0]), graft_philox_u24(w[1]), a, b);
        } else {
            ((int64_t *)out)[i] = graft_philox_int(w[0], w[1], ia, (uint64_t)(ib - ia));
        }
    }
    free(words);
    st = graft_tensor_copy_(t, tmp);
    graft_tensor_release(tmp);
    return st;
}

graft_status graft_rng_uniform_(graft_tensor *t, double low, double high) {
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "uniform_: expected a floating dtype, got %s", graft_dtype_name(t->dtype));
    if (!(low <= high)) return graft_error(GRAFT_EINVAL, "uniform_: expected from <= to, got %g > %g", low, high);
    return rng_fill(t, GRAFT_RNG_UNIFORM, low, high, 0, 0);
}

graft_status graft_rng_normal_(graft_tensor *t, double mean, double std) {
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "normal_: expected a floating dtype, got %s", graft_dtype_name(t->dtype));
    if (!(std >= 0)) return graft_error(GRAFT_EINVAL, "normal_: expected std >= 0, got %g", std);
    return rng_fill(t, GRAFT_RNG_NORMAL, mean, std, 0, 0);
}

graft_status graft_rng_randint_(graft_tensor *t, int64_t low, int64_t high) {
    if (!(low < high))
        return graft_error(GRAFT_EINVAL, "randint: expected low < high, got low=%lld, high=%lld",
                           (long long)low, (long long)high);
    return rng_fill(t, GRAFT_RNG_RANDINT, 0, 0, low, high);
}

/* Fisher-Yates on the host (sequential by nature); a CUDA tensor gets a copy. */
graft_status graft_rng_randperm_(graft_tensor *t) {
    if (t->dtype != GRAFT_I64 || t->ndim != 1 || !graft_tensor_is_contiguous(t))
        return graft_error(GRAFT_EINTERNAL, "randperm: expects a contiguous 1-d int64 tensor");
    if (graft_tensor_device(t).type == GRAFT_CUDA) {
        graft_tensor *tmp;
        graft_status st = graft_tensor_empty(&tmp, 1, t->shape, GRAFT_I64, graft_cpu);
        if (st) return st;
        if (!(st = graft_rng_randperm_(tmp))) st = graft_tensor_copy_(t, tmp);
        graft_tensor_release(tmp);
        return st;
    }
    int64_t n = t->shape[0], *p = graft_tensor_data(t);
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(graft_rng_next_u64() % (uint64_t)(i + 1));
        int64_t x = p[i]; p[i] = p[j]; p[j] = x;
    }
    graft_tensor_bump(t);
    return GRAFT_OK;
}
