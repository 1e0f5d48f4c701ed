/* graft core: the CUDA backend's C interface, for the op front ends and the bindings.
 *
 * Built in when the Makefile finds nvcc (or with CUDA=emu, where the kernels run on the
 * host emulator in core/cuda/emu). Without it every function below is an inline stub:
 * graft_cuda_device_count() is 0 and the rest return GRAFT_EDEVICE, so no front end
 * needs an #ifdef. This header names no CUDA type: core C files include it freely.
 *
 *     graft_device dev = {GRAFT_CUDA, 0};
 *     if (graft_cuda_device_count() == 0) ...;             // no driver, no GPU, or not built
 *     graft_tensor_empty(&t, 2, shape, GRAFT_F32, dev);     // device memory, cached
 *     graft_tensor_copy_(t, cpu_tensor);                    // host to device
 *
 * Front ends dispatch with one branch, after their checks and output allocation:
 *     if (dev.type == GRAFT_CUDA) return graft_cuda_<op>(...);
 * Each kernel area declares its launchers with GRAFT_CUDA_API in its own header
 * (core/cuda/<area>.h) so the stub comes with the declaration.
 */
#ifndef GRAFT_CUDA_H
#define GRAFT_CUDA_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef GRAFT_WITH_CUDA
#define GRAFT_CUDA_API(name, params) graft_status name params;
#define GRAFT_CUDA_BUILT 1
#else
static inline graft_status graft_cuda_absent(const char *fn) {
    (void)fn;
    return graft_error(GRAFT_EDEVICE, "CUDA is not available: this graft was built without CUDA "
                                      "(rebuild with make CUDA=1 where the CUDA toolkit is installed)");
}
#define GRAFT_CUDA_API(name, params) \
    static inline graft_status name params { return graft_cuda_absent(#name); }
#define GRAFT_CUDA_BUILT 0
#endif

/* ---- devices ---- */
#ifdef GRAFT_WITH_CUDA
/* "cuda" (real), "emulator" (CUDA=emu: kernels on the host), "none". */
const char *graft_cuda_backend(void);
/* GPUs usable now: 0 when there is no driver or no GPU (never an error). */
int graft_cuda_device_count(void);
int graft_cuda_current_device(void);
/* The device's name, or "" when unavailable. Borrowed. */
const char *graft_cuda_device_name(int index);
/* Compute capability major * 10 + minor (90 for Hopper), 0 when unavailable. */
int graft_cuda_capability(int index);
#else
static inline const char *graft_cuda_backend(void) { return "none"; }
static inline int graft_cuda_device_count(void) { return 0; }
static inline int graft_cuda_current_device(void) { return 0; }
static inline const char *graft_cuda_device_name(int index) { (void)index; return ""; }
static inline int graft_cuda_capability(int index) { (void)index; return 0; }
#endif
/* A usable device or GRAFT_EDEVICE naming op and the reason (for "cuda:3" requests). */
#ifdef GRAFT_WITH_CUDA
graft_status graft_cuda_check_device(graft_device dev, const char *op);
#else
static inline graft_status graft_cuda_check_device(graft_device dev, const char *op) {
    (void)dev;
    return graft_error(GRAFT_EDEVICE, "%s: CUDA is not available: this graft was built without CUDA "
                                      "(rebuild with make CUDA=1 where the CUDA toolkit is installed)", op);
}
#endif
GRAFT_CUDA_API(graft_cuda_set_device, (int index))
/* Waits for all work on the current device. */
GRAFT_CUDA_API(graft_cuda_synchronize, (void))

/* ---- memory: the caching allocator ---- */
typedef struct {
    size_t allocated;      /* bytes in blocks handed to tensors */
    size_t peak_allocated; /* since start or the last reset */
    size_t reserved;       /* allocated + cached */
    size_t peak_reserved;
    uint64_t allocs, cache_hits, frees, oom_retries;
} graft_cuda_memory_stats;

/* +1: a storage of nbytes on dev (GRAFT_CUDA), from the cache when a block of its size
 * bin is free. On cudaMalloc failure: empty the cache, run the out-of-memory hook
 * (the bindings collect Lua garbage), retry once; then GRAFT_ENOMEM naming the size. */
GRAFT_CUDA_API(graft_cuda_storage_new, (graft_storage **out, size_t nbytes, graft_device dev))
GRAFT_CUDA_API(graft_cuda_memory_get_stats, (int device, graft_cuda_memory_stats *out))
GRAFT_CUDA_API(graft_cuda_reset_peak, (int device))
/* Frees every cached (unused) block of every device. */
GRAFT_CUDA_API(graft_cuda_empty_cache, (void))
/* The hook run once before the retry of a failed allocation (NULL to clear). */
#ifdef GRAFT_WITH_CUDA
void graft_cuda_set_oom_hook(void (*fn)(void *ctx), void *ctx);
#else
static inline void graft_cuda_set_oom_hook(void (*fn)(void *ctx), void *ctx) { (void)fn; (void)ctx; }
#endif

/* ---- copies and fills (tensor.c dispatches here when a side is on CUDA) ---- */
/* dst <- src, broadcasting src, converting dtypes; any mix of CPU and CUDA sides. */
GRAFT_CUDA_API(graft_cuda_copy_, (graft_tensor *dst, graft_tensor *src))
/* dst <- the element whose bytes are `bytes` (already in dst's dtype). */
GRAFT_CUDA_API(graft_cuda_fill_bytes_, (graft_tensor *dst, const void *bytes))
/* Raw transfers: n bytes between a host pointer and a device pointer. Host-to-device
 * copies stream through pinned staging buffers (mapped checkpoint files included). */
GRAFT_CUDA_API(graft_cuda_memcpy_h2d, (void *dst, const void *src, size_t n))
GRAFT_CUDA_API(graft_cuda_memcpy_d2h, (void *dst, const void *src, size_t n))

#ifdef __cplusplus
}
#endif
#endif
