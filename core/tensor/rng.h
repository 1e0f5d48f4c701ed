/* graft core: the random number generator.
 *
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
 * a counter-based generator: the global state is a 64-bit seed (the key) and a 64-bit
 * counter of 128-bit blocks consumed. Every random op draws consecutive blocks, so a
 * result depends only on the seed and the ops run since graft_rng_manual_seed: the same
 * script gives the same numbers on every run, any thread count. CUDA tensors are
 * filled on the device (core/cuda/random.cu) from the same blocks, mapped to elements
 * the same way: a seed gives the same tensor on either device, and both devices draw
 * from one stream position.
 *
 * Streams: float32 uniforms use the top 24 bits of one 32-bit word ([0, 1) exactly
 * representable); float64 uniforms use 53 bits from two words; normals use Box-Muller
 * on two uniforms. The arithmetic is in philox.h, which rng.c, the CPU dropout and
 * core/cuda/random.cu share.
 */
#ifndef GRAFT_RNG_H
#define GRAFT_RNG_H

#include "tensor.h"

typedef struct { uint64_t seed, offset; } graft_rng_state;

void graft_rng_manual_seed(uint64_t seed);
uint64_t graft_rng_initial_seed(void);
void graft_rng_get_state(graft_rng_state *out);
void graft_rng_set_state(const graft_rng_state *st);

/* Reserves n 128-bit blocks and returns the counter of the first one. The words of a
 * block and the values made from them: philox.h (shared with the CUDA kernels). */
uint64_t graft_rng_reserve(uint64_t nblocks);

/* Fill t (any layout, either device) in place. Floating dtypes for uniform/normal. */
graft_status graft_rng_uniform_(graft_tensor *t, double low, double high);
graft_status graft_rng_normal_(graft_tensor *t, double mean, double std);
/* Integers uniform in [low, high). Any dtype. */
graft_status graft_rng_randint_(graft_tensor *t, int64_t low, int64_t high);
/* Fills a 1-d int64 contiguous tensor with a random permutation of 0..n-1 (drawn on
 * the host, copied to a CUDA tensor). */
graft_status graft_rng_randperm_(graft_tensor *t);
/* One uniform 64-bit integer (for host-side draws such as shuffles). */
uint64_t graft_rng_next_u64(void);

#endif
