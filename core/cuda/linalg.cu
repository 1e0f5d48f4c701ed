/* graft CUDA kernels for the matrix products: the little that cuBLAS does not do (the
 * products themselves go through graft_cuda_gemm in blas.c). */
#include "kernel.cuh"
#include "cuda/linalg.h"

/* c[i] = beta * c[i]; beta == 0 writes zeros without reading c (NaN-safe, as BLAS). */
template <int D>
__global__ void scale_kernel(int64_t n, typename gk_type<D>::S *c, float beta_f, double beta_d, bool zero) {
    typedef gk_type<D> T;
    GK_FOR(i, n) {
        if (zero) c[i] = T::st(0);
        else if (D == GRAFT_F64) c[i] = T::st((typename T::C)(beta_d * (double)T::ld(c[i])));
        else c[i] = T::st((typename T::C)(beta_f * (float)T::ld(c[i])));
    }
}

extern "C" graft_status graft_cuda_scale_(void *c, graft_dtype d, int64_t n, double beta) {
    if (n == 0 || beta == 1.0) return GRAFT_OK;
    GK_ON_DEVICE_OF(c);
    GK_DISPATCH_FLOAT(d, {
        typedef typename gk_type<D>::S S;
        GK_LAUNCH_FLAT(scale_kernel<D>, gk_blocks(n, GK_THREADS), GK_THREADS, 0, n, (S *)c, (float)beta, beta,
                       beta == 0.0);
        return gk_launched("scale_");
    })
    return graft_error(GRAFT_ETYPE, "scale_: not implemented for %s on CUDA", graft_dtype_name(d));
}
