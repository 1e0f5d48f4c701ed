/* graft data: the IDX reader (see idx.h).
 *
 * Layout (all big-endian): 2 zero bytes | 1 byte dtype code (0x08 u8, 0x09 i8, 0x0B i16,
 * 0x0C i32, 0x0D f32, 0x0E f64) | 1 byte ndim | ndim x u32 dims | the elements,
 * row-major, big-endian. The file may be gzip-compressed (zlib's gz* reads both).
 */
#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Deflate expands at most ~1032:1; a gzip file of n bytes cannot hold more than this. */
#define IDX_GZIP_RATIO 1032u
#define IDX_GZIP_SLACK (1u << 16)

static int idx_dtype(unsigned code, graft_dtype *d) {
    switch (code) {
    case 0x08: *d = GRAFT_U8; return 1;
    case 0x09: *d = GRAFT_I8; return 1;
    case 0x0B: *d = GRAFT_I16; return 1;
    case 0x0C: *d = GRAFT_I32; return 1;
    case 0x0D: *d = GRAFT_F32; return 1;
    case 0x0E: *d = GRAFT_F64; return 1;
    default: return 0;
    }
}

/* Reads up to n bytes (any size: gzread takes an unsigned count). Returns the bytes
 * read, or -1 on a zlib error. */
static int64_t idx_gzread_all(gzFile gz, void *buf, uint64_t n) {
    uint64_t done = 0;
    while (done < n) {
        uint64_t want = n - done;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(gz, (char *)buf + done, (unsigned)want);
        if (got < 0) return -1;
        if (got == 0) break;
        done += (uint64_t)got;
    }
    return (int64_t)done;
}

/* Big-endian elements to host order, in place. */
static void idx_swap(void *data, int64_t n, size_t size) {
    unsigned char *p = data;
    if (size == 2) {
        for (int64_t i = 0; i < n; i++, p += 2) { unsigned char t = p[0]; p[0] = p[1]; p[1] = t; }
    } else if (size == 4) {
        uint32_t *q = data;
        for (int64_t i = 0; i < n; i++) q[i] = __builtin_bswap32(q[i]);
    } else if (size == 8) {
        uint64_t *q = data;
        for (int64_t i = 0; i < n; i++) q[i] = __builtin_bswap64(q[i]);
    }
}

/* The zlib error message for gz (without the "path: " zlib puts in front), or fallback. */
static const char *idx_gzerr(gzFile gz, const char *path, const char *fallback) {
    int code = 0;
    const char *m = gzerror(gz, &code);
    if (code == Z_OK || !m || !*m) return fallback;
    size_t n = strlen(path);
    if (strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ') m += n + 2;
    return m;
}

/* Why the size checks: a 16-byte hostile header can claim 2^96 bytes; the tensor is
 * allocated only once the claimed size fits the file (exactly, for a plain file; under
 * deflate's maximum ratio, for a gzip file, whose true length is known only at the end). */
graft_status graft_idx_read(graft_tensor **out, const char *path) {
    *out = NULL;
    graft_status st = GRAFT_OK;
    graft_tensor *t = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return graft_error(GRAFT_EIO, "idx: cannot open \"%s\": %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return graft_error(GRAFT_EIO, "idx: cannot read \"%s\": not a regular file", path);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return graft_error(GRAFT_EIO, "idx: cannot open \"%s\": %s", path, errno ? strerror(errno) : "zlib error");
    gzbuffer(gz, 1u << 17);

    unsigned char head[4];
    int64_t got = idx_gzread_all(gz, head, 4);
    if (got < 0) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": corrupt gzip data (%s)", path, idx_gzerr(gz, path, "read error"));
        goto done;
    }
    bool plain = gzdirect(gz) != 0;
    if (got < 4) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": truncated: %lld bytes, too short for an IDX header", path,
                         (long long)got);
        goto done;
    }
    if (head[0] != 0 || head[1] != 0) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": wrong magic %02x %02x %02x %02x (an IDX file starts with 00 00)",
                         path, head[0], head[1], head[2], head[3]);
        goto done;
    }
    graft_dtype dtype;
    if (!idx_dtype(head[2], &dtype)) {
        st = graft_error(GRAFT_EFORMAT,
                         "idx: \"%s\": unknown dtype code 0x%02x (expected 0x08 uint8, 0x09 int8, 0x0B int16, "
                         "0x0C int32, 0x0D float32 or 0x0E float64)", path, head[2]);
        goto done;
    }
    int ndim = head[3];
    if (ndim < 1 || ndim > GRAFT_MAX_DIMS) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": %d dims (expected 1 to %d)", path, ndim, GRAFT_MAX_DIMS);
        goto done;
    }
    unsigned char dimbuf[4 * GRAFT_MAX_DIMS];
    got = idx_gzread_all(gz, dimbuf, 4 * (uint64_t)ndim);
    if (got < 0) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": corrupt gzip data (%s)", path, idx_gzerr(gz, path, "read error"));
        goto done;
    }
    if (got < 4 * ndim) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": truncated: the header declares %d dims but ends after %lld bytes",
                         path, ndim, (long long)(4 + got));
        goto done;
    }
    int64_t shape[GRAFT_MAX_DIMS];
    size_t esize = graft_dtype_size(dtype);
    /* The product of the nonzero dims must stay under 2^62 bytes even when another dim
     * is 0 (strides are computed from it); overflow is checked at each step. */
    uint64_t nbytes = esize;
    bool too_big = false, empty = false;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = dimbuf + 4 * i;
        shape[i] = (int64_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
        if (shape[i] == 0) empty = true;
        else if (!too_big && nbytes > (UINT64_C(1) << 62) / (uint64_t)shape[i]) too_big = true;
        else if (!too_big) nbytes *= (uint64_t)shape[i];
    }
    if (empty && !too_big) nbytes = 0;
    char sbuf[24 * GRAFT_MAX_DIMS + 3];
    graft_shape_str(ndim, shape, sbuf, sizeof sbuf);
    uint64_t header = 4 + 4 * (uint64_t)ndim;
    uint64_t fsize = (uint64_t)sb.st_size;
    if (plain) {
        uint64_t avail = fsize - header;
        if (too_big) {
            st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": corrupt header: dims %s of %s need over 2^62 bytes, the file "
                             "has %llu after the header", path, sbuf, graft_dtype_name(dtype), (unsigned long long)avail);
            goto done;
        }
        if (nbytes > avail) {
            st = graft_error(GRAFT_EFORMAT,
                             "idx: \"%s\": truncated or corrupt: dims %s of %s need %llu bytes of data, the file "
                             "has %llu after the header", path, sbuf, graft_dtype_name(dtype),
                             (unsigned long long)nbytes, (unsigned long long)avail);
            goto done;
        }
        if (nbytes < avail) {
            st = graft_error(GRAFT_EFORMAT,
                             "idx: \"%s\": %llu bytes of trailing data after the %llu bytes that dims %s of %s need",
                             path, (unsigned long long)(avail - nbytes), (unsigned long long)nbytes, sbuf,
                             graft_dtype_name(dtype));
            goto done;
        }
    } else if (too_big || nbytes > (uint64_t)IDX_GZIP_RATIO * fsize + IDX_GZIP_SLACK) {
        char need[32];
        if (too_big) snprintf(need, sizeof need, "over 2^62");
        else snprintf(need, sizeof need, "%llu", (unsigned long long)nbytes);
        st = graft_error(GRAFT_EFORMAT,
                         "idx: \"%s\": corrupt header: dims %s of %s need %s bytes, more than a gzip file of %llu "
                         "bytes can hold", path, sbuf, graft_dtype_name(dtype), need, (unsigned long long)fsize);
        goto done;
    }

    if ((st = graft_tensor_empty(&t, ndim, shape, dtype, graft_cpu))) goto done;
    got = idx_gzread_all(gz, graft_tensor_data(t), nbytes);
    if (got < 0) {
        st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": corrupt gzip data (%s)", path, idx_gzerr(gz, path, "read error"));
        goto done;
    }
    if ((uint64_t)got < nbytes) {
        const char *zmsg = idx_gzerr(gz, path, NULL);
        st = graft_error(GRAFT_EFORMAT,
                         "idx: \"%s\": truncated: dims %s of %s need %llu bytes of data, the file holds %lld%s%s%s",
                         path, sbuf, graft_dtype_name(dtype), (unsigned long long)nbytes, (long long)got,
                         zmsg ? " (" : "", zmsg ? zmsg : "", zmsg ? ")" : "");
        goto done;
    }
    if (!plain) {
        unsigned char extra;
        got = idx_gzread_all(gz, &extra, 1);
        if (got < 0) {
            st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": corrupt gzip data (%s)", path, idx_gzerr(gz, path, "read error"));
            goto done;
        }
        if (got > 0) {
            st = graft_error(GRAFT_EFORMAT, "idx: \"%s\": trailing data after the %llu bytes that dims %s of %s need",
                             path, (unsigned long long)nbytes, sbuf, graft_dtype_name(dtype));
            goto done;
        }
    }
    idx_swap(graft_tensor_data(t), graft_tensor_numel(t), esize);
    *out = t;
    t = NULL;
done:
    graft_tensor_release(t);
    gzclose(gz);
    return st;
}
