/* graft checkpoints: atomic writes (temp file, fsync, rename) and read-only file
 * mappings (see io.h). */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

graft_status graft_atomic_open(graft_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    f->path = strdup(path);
    f->tmp_path = malloc(n + 32);
    if (!f->path || !f->tmp_path) {
        free(f->path);
        free(f->tmp_path);
        return graft_error(GRAFT_ENOMEM, "save: out of memory");
    }
    snprintf(f->tmp_path, n + 32, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        graft_status st = graft_error(GRAFT_EIO, "save: cannot create a temporary file beside \"%s\": %s", path,
                                      strerror(errno));
        free(f->path);
        free(f->tmp_path);
        return st;
    }
    fchmod(fd, 0644);
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        unlink(f->tmp_path);
        free(f->path);
        free(f->tmp_path);
        return graft_error(GRAFT_EIO, "save: cannot open \"%s\"", path);
    }
    setvbuf(f->fp, NULL, _IOFBF, 1 << 20);
    return GRAFT_OK;
}

graft_status graft_atomic_write(graft_atomic_file *f, const void *data, size_t n) {
    if (f->failed) return f->failed;
    if (n && fwrite(data, 1, n, f->fp) != n)
        f->failed = graft_error(GRAFT_EIO, "save: writing \"%s\" failed: %s", f->path, strerror(errno));
    f->written += n;
    return f->failed;
}

static void atomic_free(graft_atomic_file *f) {
    free(f->path);
    free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    f->fp = NULL;
}

void graft_atomic_abort(graft_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    atomic_free(f);
}

graft_status graft_atomic_commit(graft_atomic_file *f) {
    graft_status st = f->failed;
    if (!st && (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0))
        st = graft_error(GRAFT_EIO, "save: writing \"%s\" failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && !st)
        st = graft_error(GRAFT_EIO, "save: closing \"%s\" failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (!st && rename(f->tmp_path, f->path) != 0)
        st = graft_error(GRAFT_EIO, "save: cannot rename the temporary over \"%s\": %s", f->path, strerror(errno));
    if (st) {
        unlink(f->tmp_path);
        atomic_free(f);
        return st;
    }
    /* make the rename itself durable */
    char *dir = strdup(f->path);
    if (dir) {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    atomic_free(f);
    return GRAFT_OK;
}

graft_status graft_mapped_open(graft_mapped_file *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return graft_error(GRAFT_EIO, "cannot open \"%s\": %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return graft_error(GRAFT_EIO, "cannot read \"%s\": not a regular file", path);
    }
    m->path = strdup(path);
    m->size = (size_t)sb.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            free(m->path);
            return graft_error(GRAFT_EIO, "cannot map \"%s\": %s", path, strerror(errno));
        }
        m->map = p;
        m->data = p;
    }
    m->fd = fd;
    return GRAFT_OK;
}

void graft_mapped_close(graft_mapped_file *m) {
    if (m->map) munmap(m->map, m->size);
    if (m->fd >= 0) close(m->fd);
    free(m->path);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}
