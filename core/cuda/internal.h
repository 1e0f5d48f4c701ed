/* graft CUDA backend: declarations shared between the host-side runtime (runtime.c)
 * and the kernel files (*.cu). Not for the op front ends (they use cuda.h). */
#ifndef GRAFT_CUDA_INTERNAL_H
#define GRAFT_CUDA_INTERNAL_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* runtime.c: makes `index` the device kernels and allocations go to (cached: cheap
 * when it already is). Launchers of multi-device work call it with their tensors' index. */
graft_status gk_use_device(int index);

/* runtime.c: dlopen the first of names (NULL-terminated) found on the loader's path,
 * then in $CUDA_HOME/lib64 (/usr/local/cuda without it), then in each folder (or file)
 * of the colon-separated environment variable env. NULL when none loads, with the
 * first dlerror()s in why. Handles are never closed. */
void *gk_dlopen(const char *const *names, const char *env, char *why, size_t whysize);

/* copy.cu: dst <- src, both on the same CUDA device (strides, broadcast, dtypes). */
graft_status gk_copy_device(graft_tensor *dst, graft_tensor *src);
/* copy.cu: every element of dst <- the esz bytes at `bytes`. */
graft_status gk_fill_device(graft_tensor *dst, const void *bytes, size_t esz);

#ifdef __cplusplus
}
#endif
#endif
