/* graft core: the CPU caching allocator.
 *
 * Small blocks come from malloc. Blocks of GRAFT_ALLOC_CACHE_MIN bytes or more are
 * whole pages carved from one arena of reserved address space (first fit by address,
 * free neighbours merged, huge pages advised): a freed block's pages stay resident and
 * serve the next large block of any size, so a fresh output of a large op lands on pages
 * that are already faulted in and the resident size follows the live peak. Resident
 * free bytes are capped (graft_alloc_set_cache_limit) and can be given back.
 */
#ifndef GRAFT_ALLOC_H
#define GRAFT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define GRAFT_ALLOC_CACHE_MIN (64 * 1024)

/* 64-byte aligned block of at least n bytes (n may be 0); NULL when out of memory. */
void *graft_alloc(size_t n, size_t *actual);
/* Returns a block from graft_alloc; `actual` is the size it reported. */
void graft_free(void *p, size_t actual);

typedef struct {
    size_t allocated;  /* bytes handed out and not yet freed (large blocks only) */
    size_t cached;     /* free bytes whose pages may still be resident */
    size_t peak;       /* the largest `allocated` seen */
    uint64_t hits, misses;
} graft_alloc_stats;

void graft_alloc_get_stats(graft_alloc_stats *out);
/* Bytes of every live block, small ones included (lock-free read, for GC pressure). */
size_t graft_alloc_live_bytes(void);
/* Adds delta to the live byte count (pools outside this allocator report here). */
void graft_alloc_account(int64_t delta);
/* Frees this thread's pooled tensor structs and small tensors (tensor.c). */
void graft_tensor_pool_flush(void);
/* Gives the pages of every cached (free) block back to the system. */
void graft_alloc_empty_cache(void);
/* Largest number of bytes kept cached (default 2 GiB). */
void graft_alloc_set_cache_limit(size_t bytes);

#endif
