/* graft core: the CPU caching allocator (see alloc.h). Large blocks are carved from
 * one arena of reserved address space: address-ordered first fit, free neighbours
 * coalesced, pages kept resident for reuse. One mutex guards the arena: allocation
 * happens on the calling thread, never inside parallel kernels. */
#define _GNU_SOURCE
#include "alloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GRANULE ((size_t)4096)                /* block sizes and offsets: whole pages */
#define COMMIT_STEP ((size_t)2 * 1024 * 1024) /* the arena grows by huge pages */

/* A free range of the arena: [off, off + len); `dirty` bytes of it may be resident
 * (an estimate: 0 after empty_cache, the block's size after a free). */
typedef struct {
    size_t off, len, dirty;
} arena_range;

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static graft_alloc_stats stats;
static size_t cache_limit = (size_t)2 << 30;
static _Atomic size_t live_bytes;

static char *arena_base;       /* NULL until the first large block; (char *)-1 when unavailable */
static size_t arena_reserved;  /* bytes of address space reserved (PROT_NONE beyond `committed`) */
static size_t arena_committed; /* bytes readable and writable from arena_base */
static arena_range *ranges;    /* the free ranges below arena_committed, by address */
static size_t nranges, cap_ranges;

size_t graft_alloc_live_bytes(void) { return live_bytes; }
void graft_alloc_account(int64_t delta) {
    atomic_fetch_add_explicit(&live_bytes, (size_t)delta, memory_order_relaxed);
}

/* Why one arena instead of a free list per size: a training step frees and allocates
 * tensors of many sizes, and a cache of exact sizes holds the peak of every size at
 * once, while coalesced ranges serve any size from whatever was freed (measured: a
 * frozen resnet18 step at 4x3x224x224 took 75 MiB of new pages with size bins, 34 MiB
 * from the arena; the small CNN's 44 MiB became 36). Address space is reserved
 * once, PROT_NONE (not charged to memory); pages are committed as the arena grows (so
 * the system still refuses a request beyond its memory: a clean error, not the OOM
 * killer later), advised for huge pages, and stay resident when freed so that a fresh
 * output does not fault its pages in again. Tries 1 TiB, then less under an
 * address-space limit. */
static int arena_reserve(void) {
    for (size_t want = (size_t)1 << 40; want >= ((size_t)256 << 20); want >>= 1) {
        char *p = mmap(NULL, want + COMMIT_STEP, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) continue;
        /* align the base to a huge page so that 2 MiB pages line up with the arena */
        char *base = (char *)(((uintptr_t)p + COMMIT_STEP - 1) & ~(uintptr_t)(COMMIT_STEP - 1));
        if (base > p) munmap(p, (size_t)(base - p));
        munmap(base + want, (size_t)(p + want + COMMIT_STEP - (base + want)));
        arena_base = base;
        arena_reserved = want;
        return 1;
    }
    arena_base = (char *)-1;
    return 0;
}

static int arena_insert(size_t i, arena_range r) {
    if (nranges == cap_ranges) {
        size_t cap = cap_ranges ? 2 * cap_ranges : 64;
        arena_range *nr = realloc(ranges, cap * sizeof *nr);
        if (!nr) return 0;
        ranges = nr;
        cap_ranges = cap;
    }
    memmove(ranges + i + 1, ranges + i, (nranges - i) * sizeof *ranges);
    ranges[i] = r;
    nranges++;
    return 1;
}

static void arena_remove(size_t i) {
    memmove(ranges + i, ranges + i + 1, (nranges - i - 1) * sizeof *ranges);
    nranges--;
}

/* Commits at least `need` more bytes at the end of the arena (a free range there grows,
 * or a new one starts). 0 when the reservation is spent or the system refuses. */
static int arena_grow(size_t need) {
    size_t grow = (need + COMMIT_STEP - 1) & ~(COMMIT_STEP - 1);
    if (grow > arena_reserved - arena_committed) return 0;
    char *p = arena_base + arena_committed;
    if (mprotect(p, grow, PROT_READ | PROT_WRITE) != 0) return 0;
#ifdef MADV_HUGEPAGE
    madvise(p, grow, MADV_HUGEPAGE);
#endif
    if (nranges && ranges[nranges - 1].off + ranges[nranges - 1].len == arena_committed) {
        ranges[nranges - 1].len += grow;
    } else if (!arena_insert(nranges, (arena_range){arena_committed, grow, 0})) {
        mprotect(p, grow, PROT_NONE);
        return 0;
    }
    arena_committed += grow;
    return 1;
}

/* First fit by address: the lowest free range that holds n bytes, so that blocks pack
 * towards the start and the resident top of the arena stays low (first fit kept the
 * footprint of the training benchmark's steps at or below best fit's). Lock held. */
static void *arena_alloc(size_t n) {
    if (!arena_base && !arena_reserve()) return NULL;
    if (arena_base == (char *)-1) return NULL;
    size_t i = 0;
    while (i < nranges && ranges[i].len < n) i++;
    if (i == nranges) {
        size_t tail = 0;
        if (nranges && ranges[nranges - 1].off + ranges[nranges - 1].len == arena_committed)
            tail = ranges[nranges - 1].len;
        if (!arena_grow(n - tail)) return NULL;
        i = nranges - 1;
    }
    arena_range *r = &ranges[i];
    size_t off = r->off, warm = r->dirty < n ? r->dirty : n;
    if (warm == n) stats.hits++; else stats.misses++;
    stats.cached -= warm;
    r->off += n;
    r->len -= n;
    r->dirty -= warm;
    if (r->len == 0) arena_remove(i);
    return arena_base + off;
}

/* Returns [off, off + n) to the free ranges, merged with free neighbours. A range that
 * cannot be recorded (no memory for the list) is lost to reuse, not to correctness. */
static void arena_free(size_t off, size_t n) {
    size_t lo = 0, hi = nranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ranges[mid].off < off) lo = mid + 1; else hi = mid;
    }
    stats.cached += n;
    int left = lo > 0 && ranges[lo - 1].off + ranges[lo - 1].len == off;
    int right = lo < nranges && off + n == ranges[lo].off;
    if (left && right) {
        ranges[lo - 1].len += n + ranges[lo].len;
        ranges[lo - 1].dirty += n + ranges[lo].dirty;
        arena_remove(lo);
    } else if (left) {
        ranges[lo - 1].len += n;
        ranges[lo - 1].dirty += n;
    } else if (right) {
        ranges[lo].off = off;
        ranges[lo].len += n;
        ranges[lo].dirty += n;
    } else if (!arena_insert(lo, (arena_range){off, n, n})) {
        stats.cached -= n;
    }
}

/* Gives the pages of every free range back to the system (they stay reserved and
 * committed: reuse faults them in again). Lock held. */
static void arena_release_pages(void) {
    for (size_t i = 0; i < nranges; i++) {
        if (!ranges[i].dirty) continue;
        madvise(arena_base + ranges[i].off, ranges[i].len, MADV_DONTNEED);
        ranges[i].dirty = 0;
    }
    stats.cached = 0;
}

static int arena_ready(void) { return arena_base && arena_base != (char *)-1; }

static int arena_owns(const void *p) {
    return arena_ready() && (const char *)p >= arena_base && (const char *)p < arena_base + arena_reserved;
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
    if (n > ((size_t)1 << 62)) return NULL;
    size_t r = (n + GRANULE - 1) & ~(GRANULE - 1);
    pthread_mutex_lock(&alloc_lock);
    void *blk = arena_alloc(r);
    if (!blk) {
        /* no arena, or it is spent: a block of the system's, freed when released */
        stats.misses++;
        if (posix_memalign(&blk, GRANULE, r) != 0) blk = NULL;
    }
    if (blk) {
        stats.allocated += r;
        if (stats.allocated > stats.peak) stats.peak = stats.allocated;
    }
    pthread_mutex_unlock(&alloc_lock);
    if (!blk) return NULL;
    *actual = r;
    live_bytes += r;
    return blk;
}

void graft_free(void *p, size_t actual) {
    if (!p) return;
    live_bytes -= actual;
    if (actual < GRAFT_ALLOC_CACHE_MIN) { free(p); return; }
    pthread_mutex_lock(&alloc_lock);
    stats.allocated -= actual;
    if (arena_owns(p)) {
        arena_free((size_t)((char *)p - arena_base), actual);
        if (stats.cached > cache_limit) arena_release_pages();
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
    graft_tensor_pool_flush();
    pthread_mutex_lock(&alloc_lock);
    if (arena_ready()) arena_release_pages();
    pthread_mutex_unlock(&alloc_lock);
}

void graft_alloc_set_cache_limit(size_t bytes) {
    pthread_mutex_lock(&alloc_lock);
    cache_limit = bytes;
    if (stats.cached > bytes && arena_ready()) arena_release_pages();
    pthread_mutex_unlock(&alloc_lock);
}
