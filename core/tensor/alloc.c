/* graft core: the CPU caching allocator (see alloc.h). One mutex guards the bins:
 * allocation happens on the calling thread, never inside parallel kernels. */
#define _GNU_SOURCE
#include "alloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define NBINS 256
#define HUGE_ALIGN (2u * 1024 * 1024)

typedef struct block { struct block *next; } block;

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static block *bins[NBINS];
static graft_alloc_stats stats;
static size_t cache_limit = (size_t)2 << 30;
static _Atomic size_t live_bytes;

size_t graft_alloc_live_bytes(void) { return live_bytes; }
void graft_alloc_account(int64_t delta) {
    atomic_fetch_add_explicit(&live_bytes, (size_t)delta, memory_order_relaxed);
}

/* Bin index and rounded size: four bins per power of two (sizes within 25%). */
static int alloc_bin(size_t n, size_t *rounded) {
    int p = 63 - __builtin_clzll((unsigned long long)n); /* floor(log2 n) */
    size_t base = (size_t)1 << p, step = base >> 2;
    size_t k = (n - base + step - 1) / step;              /* 0..4 */
    size_t r = base + k * step;
    if (k == 4) { p++; k = 0; r = (size_t)1 << p; }
    *rounded = r;
    return p * 4 + (int)k;
}

static void *alloc_system(size_t n) {
    void *p = NULL;
    size_t align = n >= HUGE_ALIGN ? HUGE_ALIGN : 64;
    if (posix_memalign(&p, align, n) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (n >= HUGE_ALIGN) madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

void *graft_alloc(size_t n, size_t *actual) {
    if (n < GRAFT_ALLOC_CACHE_MIN) {
        size_t r = (n + 63) & ~(size_t)63;
        if (r == 0) r = 64;
        *actual = r;
        void *p = NULL;
        if (posix_memalign(&p, 64, r) != 0) return NULL;
        live_bytes += r;
        return p;
    }
    size_t r;
    int b = alloc_bin(n, &r);
    if (b >= NBINS) return NULL;
    pthread_mutex_lock(&alloc_lock);
    block *blk = bins[b];
    if (blk) {
        bins[b] = blk->next;
        stats.cached -= r;
        stats.hits++;
    } else {
        stats.misses++;
    }
    stats.allocated += r;
    if (stats.allocated > stats.peak) stats.peak = stats.allocated;
    pthread_mutex_unlock(&alloc_lock);
    if (!blk) {
        blk = alloc_system(r);
        if (!blk) {
            /* Out of memory: give the cache back and try once more. */
            graft_alloc_empty_cache();
            blk = alloc_system(r);
        }
        if (!blk) {
            pthread_mutex_lock(&alloc_lock);
            stats.allocated -= r;
            pthread_mutex_unlock(&alloc_lock);
            return NULL;
        }
    }
    *actual = r;
    live_bytes += r;
    return blk;
}

void graft_free(void *p, size_t actual) {
    if (!p) return;
    live_bytes -= actual;
    if (actual < GRAFT_ALLOC_CACHE_MIN) { free(p); return; }
    size_t r;
    int b = alloc_bin(actual, &r);
    pthread_mutex_lock(&alloc_lock);
    stats.allocated -= actual;
    if (stats.cached + actual <= cache_limit) {
        block *blk = p;
        blk->next = bins[b];
        bins[b] = blk;
        stats.cached += actual;
        p = NULL;
    }
    pthread_mutex_unlock(&alloc_lock);
    free(p);
}

void graft_alloc_get_stats(graft_alloc_stats *out) {
    pthread_mutex_lock(&alloc_lock);
    *out = stats;
    pthread_mutex_unlock(&alloc_lock);
}

void graft_alloc_empty_cache(void) {
    block *all[NBINS];
    graft_tensor_pool_flush();
    pthread_mutex_lock(&alloc_lock);
    memcpy(all, bins, sizeof bins);
    memset(bins, 0, sizeof bins);
    stats.cached = 0;
    pthread_mutex_unlock(&alloc_lock);
    for (int b = 0; b < NBINS; b++) {
        for (block *blk = all[b]; blk;) {
            block *next = blk->next;
            free(blk);
            blk = next;
        }
    }
}

void graft_alloc_set_cache_limit(size_t bytes) {
    pthread_mutex_lock(&alloc_lock);
    cache_limit = bytes;
    pthread_mutex_unlock(&alloc_lock);
    if (stats.cached > bytes) graft_alloc_empty_cache();
}
