/* graft checkpoints: atomic file writes and bounds-checked reading helpers shared by
 * the format readers and writers.
 *
 * Writers never leave a half-written file under the real name: they write a temporary
 * file in the same folder, flush and fsync it, then rename it over the target (and
 * fsync the folder). A failed write removes the temporary and leaves any previous
 * file untouched.
 *
 *     graft_atomic_file f;
 *     if (graft_atomic_open(&f, "model.pth")) return st;      // sets the error
 *     ... graft_atomic_write(&f, buf, n) ...                  // buffered
 *     return graft_atomic_commit(&f);                         // or graft_atomic_abort(&f)
 */
#ifndef GRAFT_CKPT_IO_H
#define GRAFT_CKPT_IO_H

#include <stdio.h>

#include "tensor/tensor.h"

typedef struct {
    FILE *fp;
    char *path;      /* the target */
    char *tmp_path;  /* the temporary beside it */
    uint64_t written;
    graft_status failed; /* the first write error, kept until commit */
} graft_atomic_file;

graft_status graft_atomic_open(graft_atomic_file *f, const char *path);
/* Appends n bytes; errors are remembered and reported by commit. */
graft_status graft_atomic_write(graft_atomic_file *f, const void *data, size_t n);
/* Flushes, fsyncs, renames over the target, fsyncs the folder; frees f. On any failure
 * the temporary is removed and the error names the file. */
graft_status graft_atomic_commit(graft_atomic_file *f);
/* Removes the temporary; frees f. */
void graft_atomic_abort(graft_atomic_file *f);

/* A read-only view of a whole file, mapped (private) when possible. */
typedef struct {
    const unsigned char *data;
    size_t size;
    char *path;
    void *map;       /* munmap on close when not NULL */
    int fd;
} graft_mapped_file;

/* Maps path read-only; an empty file maps to size 0. Errors name the file. */
graft_status graft_mapped_open(graft_mapped_file *m, const char *path);
void graft_mapped_close(graft_mapped_file *m);

/* Overflow-safe "does [off, off + len) lie inside size?" */
static inline bool graft_range_ok(uint64_t off, uint64_t len, uint64_t size) {
    return off <= size && len <= size - off;
}

#endif
