/* graft CUDA backend, host side: devices, the caching allocator, transfers and the
 * error plumbing every launcher uses. Plain C over the CUDA runtime API, linked with
 * libcudart_static (or the host emulator in the CUDA=emu build), so a machine without
 * a driver starts fine: the first query answers "no device" and nothing else runs.
 * All calls come from the thread that runs Lua; kernels use the legacy default stream. */
#include "cuda.h"
#include "internal.h"
#include "tensor/alloc.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEVICES 16

cudaStream_t graft_cuda_stream(void);
graft_status gk_check(cudaError_t e, const char *call);
graft_status gk_launched(const char *op);

const char *graft_cuda_backend(void) {
#ifdef GRAFT_CUDA_EMU
    return "emulator";
#else
    return "cuda";
#endif
}

cudaStream_t graft_cuda_stream(void) { return 0; }

graft_status gk_check(cudaError_t e, const char *call) {
    if (e == cudaSuccess) return GRAFT_OK;
    cudaGetLastError(); /* clear the non-sticky error so the next call starts clean */
    return graft_error(e == cudaErrorMemoryAllocation ? GRAFT_ENOMEM : GRAFT_EDEVICE, "%s: %s (%s)", call,
                       cudaGetErrorString(e), cudaGetErrorName(e));
}

graft_status gk_launched(const char *op) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return GRAFT_OK;
    return graft_error(GRAFT_EDEVICE, "%s: CUDA kernel launch failed: %s (%s)", op, cudaGetErrorString(e),
                       cudaGetErrorName(e));
}

/* ---- devices ---- */

static int dev_count = -1, cur_dev;
static char dev_names[MAX_DEVICES][256];
static int dev_caps[MAX_DEVICES];

/* Asks the runtime once. No driver, no GPU, a driver older than the runtime: all 0. */
int graft_cuda_device_count(void) {
    if (dev_count >= 0) return dev_count;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
    }
    if (n > MAX_DEVICES) n = MAX_DEVICES;
    for (int i = 0; i < n; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess) {
            snprintf(dev_names[i], sizeof dev_names[i], "%s", p.name);
            dev_caps[i] = p.major * 10 + p.minor;
        }
    }
    dev_count = n;
    return n;
}

int graft_cuda_current_device(void) { return cur_dev; }

const char *graft_cuda_device_name(int index) {
    if (index < 0 || index >= graft_cuda_device_count()) return "";
    return dev_names[index];
}

int graft_cuda_capability(int index) {
    if (index < 0 || index >= graft_cuda_device_count()) return 0;
    return dev_caps[index];
}

graft_status graft_cuda_check_device(graft_device dev, const char *op) {
    int n = graft_cuda_device_count();
    if (n == 0)
        return graft_error(GRAFT_EDEVICE, "%s: CUDA is not available (no NVIDIA driver or GPU found; graft.cuda.is_available() is false)", op);
    if (dev.index < 0 || dev.index >= n)
        return graft_error(GRAFT_EDEVICE, "%s: cuda:%d does not exist (%d device%s)", op, dev.index, n, n == 1 ? "" : "s");
    return GRAFT_OK;
}

/* Makes index the device the runtime works on (kernels, allocations). */
static int active_dev = -1;
graft_status gk_use_device(int index) {
    if (index == active_dev) return GRAFT_OK;
    graft_status st = gk_check(cudaSetDevice(index), "cudaSetDevice");
    if (!st) active_dev = index;
    return st;
}

graft_status graft_cuda_set_device(int index) {
    graft_device d = {GRAFT_CUDA, (int8_t)index};
    graft_status st = graft_cuda_check_device(d, "set_device");
    if (st) return st;
    if ((st = gk_use_device(index))) return st;
    cur_dev = index;
    return GRAFT_OK;
}

graft_status graft_cuda_synchronize(void) {
    if (graft_cuda_device_count() == 0) return graft_cuda_check_device((graft_device){GRAFT_CUDA, 0}, "synchronize");
    /* launchers leave the runtime on the last tensor's device: wait on the current one */
    graft_status st = gk_use_device(cur_dev);
    if (st) return st;
    return gk_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

/* ---- the caching allocator ----
 * Sizes round up to a bin: 512-byte steps below 1 MiB, four bins per power of two
 * above (at most 19% slack). A freed block goes on its bin's list and serves the next
 * request of that bin on the same device and stream, so a training step's tensors land
 * on the blocks of the previous step and cudaMalloc (which synchronises) is not called
 * in steady state. The storage header lives in the block record. */
typedef struct cuda_block {
    graft_storage s;           /* first: the storage handed out */
    void *ptr;
    size_t size;               /* the bin size */
    int device;
    cudaStream_t stream;
    struct cuda_block *next;   /* free list link */
} cuda_block;

#define NBINS 320
typedef struct {
    cuda_block *bins[NBINS];
    graft_cuda_memory_stats st;
} cuda_pool;
static cuda_pool pools[MAX_DEVICES];
static void (*oom_hook)(void *);
static void *oom_ctx;

void graft_cuda_set_oom_hook(void (*fn)(void *ctx), void *ctx) {
    oom_hook = fn;
    oom_ctx = ctx;
}

static size_t bin_size(size_t n, int *bin) {
    if (n <= ((size_t)32 << 10)) {             /* 512-byte steps: bins 0..63 */
        size_t r = n < 512 ? 512 : (n + 511) & ~(size_t)511;
        *bin = (int)(r / 512) - 1;
        return r;
    }
    if (n <= ((size_t)1 << 20)) {              /* 16 KiB steps: bins 64..126 */
        size_t r = (n + 16383) & ~(size_t)16383;
        *bin = 64 + (int)((r - ((size_t)32 << 10)) >> 14);
        return r;
    }
    int k = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n <= 2^(k+1) */
    size_t step = (size_t)1 << (k - 2);        /* four bins per power of two */
    size_t r = (n + step - 1) & ~(step - 1);
    *bin = 128 + 4 * (k - 20) + (int)((r >> (k - 2)) & 3);
    if (*bin >= NBINS) *bin = -1; /* enormous: never cached */
    return r;
}

static void stats_alloc(cuda_pool *p, size_t size, int fresh) {
    p->st.allocated += size;
    if (p->st.allocated > p->st.peak_allocated) p->st.peak_allocated = p->st.allocated;
    if (fresh) {
        p->st.reserved += size;
        if (p->st.reserved > p->st.peak_reserved) p->st.peak_reserved = p->st.reserved;
    }
    p->st.allocs++;
}

static void block_release(void *ctx, void *data, size_t nbytes) {
    (void)data;
    (void)nbytes;
    cuda_block *b = ctx;
    cuda_pool *p = &pools[b->device];
    int bin;
    bin_size(b->size, &bin);
    p->st.allocated -= b->size;
    p->st.frees++;
    graft_alloc_account(-(int64_t)b->size);
    if (bin < 0) {
        gk_use_device(b->device);
        cudaFree(b->ptr);
        p->st.reserved -= b->size;
        free(b);
        return;
    }
    b->next = p->bins[bin];
    p->bins[bin] = b;
}

static void pool_empty(int device) {
    cuda_pool *p = &pools[device];
    int synced = 0;
    for (int i = 0; i < NBINS; i++) {
        while (p->bins[i]) {
            cuda_block *b = p->bins[i];
            p->bins[i] = b->next;
            if (!synced) {
                gk_use_device(device);
                synced = 1;
            }
            cudaFree(b->ptr);
            p->st.reserved -= b->size;
            free(b);
        }
    }
}

graft_status graft_cuda_empty_cache(void) {
    int n = graft_cuda_device_count();
    for (int d = 0; d < n; d++) pool_empty(d);
    if (n) gk_use_device(cur_dev);
    return GRAFT_OK;
}

/* A cached block of the bin, or NULL. */
static cuda_block *take_cached(cuda_pool *p, int bin, size_t size) {
    if (bin < 0 || !p->bins[bin]) return NULL;
    cuda_block *b = p->bins[bin];
    p->bins[bin] = b->next;
    p->st.cache_hits++;
    stats_alloc(p, size, 0);
    return b;
}

static const char *human(size_t n, char *buf) {
    if (n >= ((size_t)1 << 40)) snprintf(buf, 32, "%.2f TiB", (double)n / ((size_t)1 << 40));
    else if (n >= ((size_t)1 << 30)) snprintf(buf, 32, "%.2f GiB", (double)n / (1 << 30));
    else if (n >= ((size_t)1 << 20)) snprintf(buf, 32, "%.2f MiB", (double)n / (1 << 20));
    else if (n >= 1024) snprintf(buf, 32, "%.2f KiB", (double)n / 1024);
    else snprintf(buf, 32, "%zu bytes", n);
    return buf;
}

graft_status graft_cuda_storage_new(graft_storage **out, size_t nbytes, graft_device dev) {
    *out = NULL;
    graft_status st = graft_cuda_check_device(dev, "empty");
    if (st) return st;
    int bin;
    size_t size = bin_size(nbytes, &bin);
    if (bin < 0) size = (nbytes + 511) & ~(size_t)511;
    cuda_pool *p = &pools[dev.index];
    /* the op that asked runs on this device: select it (cheap when already selected) */
    if ((st = gk_use_device(dev.index))) return st;
    cuda_block *b = take_cached(p, bin, size);
    if (!b) {
        void *ptr = NULL;
        cudaError_t e = cudaMalloc(&ptr, size);
        if (e == cudaErrorMemoryAllocation) {
            /* Out of memory: let Lua free dead tensors first (their blocks return to the
             * cache, where one may fit), else give back what is cached; retry once. */
            cudaGetLastError();
            p->st.oom_retries++;
            if (oom_hook) oom_hook(oom_ctx);
            gk_use_device(dev.index);
            if ((b = take_cached(p, bin, size))) {
                e = cudaSuccess;
            } else {
                pool_empty(dev.index);
                e = cudaMalloc(&ptr, size);
            }
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            char a[32], b1[32], c[32], d[32];
            size_t fr = 0, tot = 0;
            cudaMemGetInfo(&fr, &tot);
            cudaGetLastError();
            return graft_error(GRAFT_ENOMEM,
                               "CUDA out of memory: tried to allocate %s (%zu bytes) on cuda:%d "
                               "(%s allocated by graft, %s free of %s; %s)",
                               human(nbytes, a), nbytes, dev.index, human(p->st.allocated, b1), human(fr, c),
                               human(tot, d), cudaGetErrorString(e));
        }
        if (!b) {
            if (!(b = malloc(sizeof *b))) {
                cudaFree(ptr);
                return graft_error(GRAFT_ENOMEM, "out of memory");
            }
            b->ptr = ptr;
            b->size = size;
            b->device = dev.index;
            b->stream = graft_cuda_stream();
            stats_alloc(p, size, 1);
        }
    }
    graft_alloc_account((int64_t)size);
    graft_storage *s = &b->s;
    s->refcount = 1;
    s->data = b->ptr;
    s->nbytes = nbytes;
    s->device = dev;
    s->kind = GRAFT_STORAGE_OWNED;
    s->version = 0;
    s->release_fn = block_release;
    s->release_ctx = b;
    *out = s;
    return GRAFT_OK;
}

graft_status graft_cuda_memory_get_stats(int device, graft_cuda_memory_stats *out) {
    memset(out, 0, sizeof *out);
    if (device < 0 || device >= MAX_DEVICES) return graft_error(GRAFT_EINVAL, "memory stats: no device %d", device);
    *out = pools[device].st;
    return GRAFT_OK;
}

graft_status graft_cuda_reset_peak(int device) {
    if (device < 0 || device >= MAX_DEVICES) return graft_error(GRAFT_EINVAL, "reset_peak_memory_stats: no device %d", device);
    pools[device].st.peak_allocated = pools[device].st.allocated;
    pools[device].st.peak_reserved = pools[device].st.reserved;
    return GRAFT_OK;
}

/* ---- transfers ---- */

#define STAGE_BYTES ((size_t)8 << 20)
static void *stage[2];                      /* pinned: portable to every device (UVA) */
static cudaEvent_t stage_ev[MAX_DEVICES][2]; /* events belong to a device */

/* Pageable memory (a mapped checkpoint, a malloc'ed tensor) is copied through two
 * pinned buffers in turn, so the memcpy into one overlaps the DMA out of the other. */
graft_status graft_cuda_memcpy_h2d(void *dst, const void *src, size_t n) {
    graft_status st;
    if (n < ((size_t)1 << 20))
        return gk_check(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), "cudaMemcpy (host to device)");
    /* the caller selected dst's device (graft_cuda_copy_) */
    int d = active_dev < 0 ? 0 : active_dev;
    for (int k = 0; k < 2; k++) {
        if (!stage[k] && (st = gk_check(cudaMallocHost(&stage[k], STAGE_BYTES), "cudaMallocHost"))) return st;
        if (!stage_ev[d][k] &&
            (st = gk_check(cudaEventCreateWithFlags(&stage_ev[d][k], cudaEventDisableTiming), "cudaEventCreate")))
            return st;
    }
    cudaEvent_t *ev = stage_ev[d];
    size_t done = 0;
    int k = 0, used[2] = {0, 0};
    while (done < n) {
        size_t c = n - done < STAGE_BYTES ? n - done : STAGE_BYTES;
        if (used[k] && (st = gk_check(cudaEventSynchronize(ev[k]), "cudaEventSynchronize"))) return st;
        memcpy(stage[k], (const char *)src + done, c);
        if ((st = gk_check(cudaMemcpyAsync((char *)dst + done, stage[k], c, cudaMemcpyHostToDevice, graft_cuda_stream()),
                           "cudaMemcpyAsync (host to device)")))
            return st;
        if ((st = gk_check(cudaEventRecord(ev[k], graft_cuda_stream()), "cudaEventRecord"))) return st;
        used[k] = 1;
        done += c;
        k ^= 1;
    }
    for (k = 0; k < 2; k++)
        if (used[k] && (st = gk_check(cudaEventSynchronize(ev[k]), "cudaEventSynchronize"))) return st;
    return GRAFT_OK;
}

graft_status graft_cuda_memcpy_d2h(void *dst, const void *src, size_t n) {
    return gk_check(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
}

static bool dense_same(const graft_tensor *a, const graft_tensor *b) {
    return a->dtype == b->dtype && graft_tensor_numel(a) == graft_tensor_numel(b) && graft_tensor_is_contiguous(a) &&
           graft_tensor_is_contiguous(b);
}

graft_status graft_cuda_copy_(graft_tensor *dst, graft_tensor *src) {
    graft_device dd = graft_tensor_device(dst), sd = graft_tensor_device(src);
    graft_status st = GRAFT_OK;
    graft_tensor *a = NULL, *b = NULL;
    int64_t n = graft_tensor_numel(dst);
    if (n == 0) return GRAFT_OK;
    if (dd.type == GRAFT_CUDA && sd.type == GRAFT_CUDA && dd.index == sd.index) {
        if ((st = gk_use_device(dd.index))) return st;
        st = gk_copy_device(dst, src);
    } else if (dd.type == GRAFT_CUDA && sd.type == GRAFT_CUDA) {
        /* between two GPUs: through the host */
        if (!(st = graft_tensor_empty(&a, src->ndim, src->shape, src->dtype, graft_cpu)) &&
            !(st = graft_cuda_copy_(a, src)))
            st = graft_cuda_copy_(dst, a);
    } else if (dd.type == GRAFT_CUDA) {
        if ((st = gk_use_device(dd.index))) return st;
        if (dense_same(dst, src)) {
            st = graft_cuda_memcpy_h2d(graft_tensor_data(dst), graft_tensor_data(src),
                                       (size_t)n * graft_dtype_size(dst->dtype));
        } else if (!(st = graft_tensor_contiguous(&a, src)) &&
                   !(st = graft_tensor_empty(&b, a->ndim, a->shape, a->dtype, dd)) &&
                   !(st = graft_cuda_memcpy_h2d(graft_tensor_data(b), graft_tensor_data(a),
                                                (size_t)graft_tensor_numel(a) * graft_dtype_size(a->dtype)))) {
            st = gk_copy_device(dst, b);
        }
    } else {
        if ((st = gk_use_device(sd.index))) return st;
        if (dense_same(dst, src)) {
            st = graft_cuda_memcpy_d2h(graft_tensor_data(dst), graft_tensor_data(src),
                                       (size_t)n * graft_dtype_size(dst->dtype));
        } else {
            if (graft_tensor_is_contiguous(src)) {
                graft_tensor_retain(src);
                a = src;
            } else if (!(st = graft_tensor_empty(&a, src->ndim, src->shape, src->dtype, sd))) {
                st = gk_copy_device(a, src);
            }
            if (!st && !(st = graft_tensor_empty(&b, a->ndim, a->shape, a->dtype, graft_cpu)) &&
                !(st = graft_cuda_memcpy_d2h(graft_tensor_data(b), graft_tensor_data(a),
                                             (size_t)graft_tensor_numel(a) * graft_dtype_size(a->dtype))))
                st = graft_tensor_copy_(dst, b);
        }
    }
    graft_tensor_release(a);
    graft_tensor_release(b);
    return st;
}

graft_status graft_cuda_fill_bytes_(graft_tensor *dst, const void *bytes) {
    graft_status st = gk_use_device(graft_tensor_device(dst).index);
    if (st) return st;
    return gk_fill_device(dst, bytes, graft_dtype_size(dst->dtype));
}

/* ---- libraries opened at run time (cuBLAS, cuDNN) ---- */

/* dlopen of one candidate; on failure appends its dlerror() to why (first two only). */
static void *lib_try(const char *path, int *tries, char *why, size_t whysize) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h) return h;
    if ((*tries)++ < 2) {
        const char *e = dlerror();
        size_t len = strlen(why);
        snprintf(why + len, whysize - len, "%s%s", len ? "; " : "", e ? e : path);
    }
    return NULL;
}

/* In a folder: each of names; or the library file named directly (a path with ".so"). */
static void *lib_try_dir(const char *dir, size_t n, const char *const *names, int *tries, char *why, size_t whysize) {
    char path[4096];
    if (n == 0 || n >= sizeof path - 64) return NULL;
    const char *so = strstr(dir, ".so");
    if (n > 3 && so && (size_t)(so - dir) < n && memchr(dir, '/', n)) {
        snprintf(path, sizeof path, "%.*s", (int)n, dir);
        return lib_try(path, tries, why, whysize);
    }
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof path, "%.*s/%s", (int)n, dir, names[i]);
        void *h = lib_try(path, tries, why, whysize);
        if (h) return h;
    }
    return NULL;
}

void *gk_dlopen(const char *const *names, const char *env, char *why, size_t whysize) {
    int tries = 0;
    void *h = NULL;
    why[0] = '\0';
    for (int i = 0; !h && names[i]; i++) h = lib_try(names[i], &tries, why, whysize);
    if (!h) {
        const char *home = getenv("CUDA_HOME");
        char dir[2048];
        snprintf(dir, sizeof dir, "%s/lib64", home && *home ? home : "/usr/local/cuda");
        h = lib_try_dir(dir, strlen(dir), names, &tries, why, whysize);
    }
    const char *extra = getenv(env);
    while (!h && extra && *extra) {
        const char *colon = strchr(extra, ':');
        size_t n = colon ? (size_t)(colon - extra) : strlen(extra);
        h = lib_try_dir(extra, n, names, &tries, why, whysize);
        extra = colon ? colon + 1 : NULL;
    }
    return h;
}
