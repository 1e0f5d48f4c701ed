/* graft core: the arithmetic of graft's random stream, in one place for C and CUDA.
 *
 * Philox4x32-10 (Salmon et al., SC'11) turns (seed, counter) into four 32-bit words;
 * the uniform and normal values are built from those words. The CPU fills
 * (core/tensor/rng.c), the CPU dropout (core/nn/activation.c, via nn_math.h) and the
 * device kernels (core/cuda/random.cu) all include this header, so a seed gives the
 * same bits on either device. GRAFT_HD marks the functions __host__ __device__ under
 * nvcc (and over the emulator, where the attributes are empty); plain C sees inline
 * functions.
 *
 *     uint32_t w0, w1, w2, w3;
 *     graft_philox_block(seed, counter, &w0, &w1, &w2, &w3);
 *     double u = graft_philox_u24(w0);        // float32 stream, in [0, 1)
 */
#ifndef GRAFT_PHILOX_H
#define GRAFT_PHILOX_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__) || defined(GRAFT_CUDA_EMU_ACTIVE)
#define GRAFT_HD __host__ __device__
#else
#define GRAFT_HD
#endif

/* The four words of block `counter` under `seed`: ten rounds of the Philox 4x32
 * bijection with the seed as key. Four separate outputs, so that a loop over
 * consecutive counters vectorises (32x32 -> 64-bit multiplies). */
GRAFT_HD static inline void graft_philox_block(uint64_t seed, uint64_t counter, uint32_t *w0, uint32_t *w1,
                                               uint32_t *w2, uint32_t *w3) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    *w0 = c0; *w1 = c1; *w2 = c2; *w3 = c3;
}

/* The same block as an array w[4]. */
GRAFT_HD static inline void graft_philox(uint64_t seed, uint64_t counter, uint32_t w[4]) {
    graft_philox_block(seed, counter, &w[0], &w[1], &w[2], &w[3]);
}

/* A uniform in [0, 1) from the top 24 bits of one word (the float32 streams; exact as
 * a float). */
GRAFT_HD static inline double graft_philox_u24(uint32_t w) { return (double)((float)(w >> 8) * 0x1.0p-24f); }

/* A uniform in [0, 1) from 53 bits of two words (the float64 streams). */
GRAFT_HD static inline double graft_philox_u53(uint32_t hi, uint32_t lo) {
    return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1.0p-53;
}

/* The stream's values from uniforms u (and u1, u2): uniform a + (b - a) u and normal
 * mean + std z by Box-Muller, z = sqrt(-2 ln(1 - u1)) cos(2 pi u2); each final add is
 * fused (fma), so that every device rounds alike. */
GRAFT_HD static inline double graft_philox_uniform(double u, double a, double b) { return fma(b - a, u, a); }
GRAFT_HD static inline double graft_philox_normal(double u1, double u2, double mean, double std) {
    double z = sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * 3.14159265358979323846 * u2);
    return fma(std, z, mean);
}

/* An integer in [lo, lo + range) from two words as one 64-bit draw. */
GRAFT_HD static inline int64_t graft_philox_int(uint32_t hi, uint32_t lo, int64_t low, uint64_t range) {
    return low + (int64_t)((((uint64_t)hi << 32) | lo) % range);
}

#endif
