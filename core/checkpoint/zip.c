/* graft checkpoints: zip reading (bounds-checked, lazy local headers, stored and
 * deflated entries) and streaming zip writing with 64-byte aligned data (see zip.h).
 *
 * Layout read: [local header 30 + name + extra][data] ... [central directory entries
 * 46 + name + extra + comment] [zip64 end record 56][zip64 locator 20][end record 22 +
 * comment]. All integers little-endian. */
#define _GNU_SOURCE
#include "zip.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define SIG_DESC 0x08074b50u
#define U32_MAX_FIELD 0xFFFFFFFFu

static uint16_t rd16(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }
static uint32_t rd32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t rd64(const unsigned char *b) { return (uint64_t)rd32(b) | (uint64_t)rd32(b + 4) << 32; }

static graft_status zip_bad(const char *name, const char *what) {
    return graft_error(GRAFT_EFORMAT, "cannot load \"%s\": damaged zip archive: %s", name, what);
}

void graft_zip_close(graft_zip *z) {
    free(z->entries);
    free(z->sorted);
    free(z->names);
    memset(z, 0, sizeof *z);
}

static int zip_cmp(const void *a, const void *b, void *ctx) {
    const graft_zip *z = ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(z->entries[i].name, z->entries[j].name);
    if (c) return c;
    return i < j ? -1 : i > j;
}

/* Finds the end record (scanning back over a comment of up to 64 KiB) and, when a
 * zip64 locator precedes it, the zip64 end record; returns the directory's place. */
static graft_status zip_find_dir(graft_zip *z, uint64_t *cd_off, uint64_t *cd_size, uint64_t *count) {
    const unsigned char *d = z->data;
    size_t size = z->size;
    char msg[160];
    if (size < 22) return zip_bad(z->name, "the file is too short to hold a zip end record");
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0, pos = size - 22 + 1;
    bool found = false;
    while (pos-- > lo) {
        if (rd32(d + pos) == SIG_END && pos + 22 + rd16(d + pos + 20) <= size) {
            found = true;
            break;
        }
    }
    if (!found) return zip_bad(z->name, "no end-of-central-directory record (truncated?)");
    const unsigned char *e = d + pos;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0) return zip_bad(z->name, "multi-disk archives are not supported");
    *count = rd16(e + 10);
    *cd_size = rd32(e + 12);
    *cd_off = rd32(e + 16);
    if (pos >= 20 && rd32(d + pos - 20) == SIG_LOC64) {
        const unsigned char *loc = d + pos - 20;
        uint64_t off64 = rd64(loc + 8);
        if (!graft_range_ok(off64, 56, pos - 20)) return zip_bad(z->name, "the zip64 locator points outside the file");
        const unsigned char *r = d + off64;
        if (rd32(r) != SIG_END64) return zip_bad(z->name, "the zip64 end record has a bad signature");
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0) return zip_bad(z->name, "multi-disk archives are not supported");
        *count = rd64(r + 32);
        *cd_size = rd64(r + 40);
        *cd_off = rd64(r + 48);
    } else if (*count == 0xFFFF || *cd_size == U32_MAX_FIELD || *cd_off == U32_MAX_FIELD) {
        return zip_bad(z->name, "zip64 values without a zip64 end record");
    }
    if (!graft_range_ok(*cd_off, *cd_size, pos)) {
        snprintf(msg, sizeof msg, "the central directory (%llu bytes at offset %llu) lies outside the file (%zu bytes)",
                 (unsigned long long)*cd_size, (unsigned long long)*cd_off, size);
        return zip_bad(z->name, msg);
    }
    if (*count > *cd_size / 46) {
        snprintf(msg, sizeof msg, "the directory claims %llu entries but its %llu bytes hold at most %llu",
                 (unsigned long long)*count, (unsigned long long)*cd_size, (unsigned long long)(*cd_size / 46));
        return zip_bad(z->name, msg);
    }
    return GRAFT_OK;
}

graft_status graft_zip_open(graft_zip *z, const unsigned char *data, size_t size, const char *name) {
    memset(z, 0, sizeof *z);
    z->data = data;
    z->size = size;
    z->name = name;
    uint64_t cd_off = 0, cd_size = 0, count = 0;
    graft_status st = zip_find_dir(z, &cd_off, &cd_size, &count);
    if (st) return st;
    char msg[200];
    /* every allocation below is bounded by the directory's size, itself inside the file */
    z->entries = calloc(count ? count : 1, sizeof *z->entries);
    z->sorted = malloc((count ? count : 1) * sizeof *z->sorted);
    z->names = malloc(cd_size + 1);
    if (!z->entries || !z->sorted || !z->names) {
        graft_zip_close(z);
        return graft_error(GRAFT_ENOMEM, "cannot load \"%s\": out of memory", name);
    }
    const unsigned char *cd = data + cd_off;
    uint64_t at = 0, names_used = 0;
    for (uint64_t i = 0; i < count; i++) {
        graft_zip_entry *e = &z->entries[i];
        if (cd_size - at < 46 || rd32(cd + at) != SIG_CENTRAL) {
            snprintf(msg, sizeof msg, "central directory entry %llu is missing or has a bad signature",
                     (unsigned long long)i);
            goto bad;
        }
        const unsigned char *c = cd + at;
        size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
        if (cd_size - at - 46 < nlen + xlen + clen) {
            snprintf(msg, sizeof msg, "central directory entry %llu runs past the directory", (unsigned long long)i);
            goto bad;
        }
        e->flags = rd16(c + 8);
        e->method = rd16(c + 10);
        e->crc = rd32(c + 16);
        e->csize = rd32(c + 20);
        e->usize = rd32(c + 24);
        e->header_offset = rd32(c + 42);
        const unsigned char *nm = c + 46, *x = c + 46 + nlen, *xend = x + xlen;
        if (nlen == 0 || memchr(nm, 0, nlen)) {
            snprintf(msg, sizeof msg, "central directory entry %llu has an empty name or a NUL in it",
                     (unsigned long long)i);
            goto bad;
        }
        /* zip64 extra field: the 64-bit values of the fields set to all ones, in order */
        while (xend - x >= 4) {
            uint16_t id = rd16(x), len = rd16(x + 2);
            if ((size_t)(xend - x - 4) < len) break;
            if (id == 1) {
                const unsigned char *f = x + 4, *fend = f + len;
                uint64_t *vals[3] = {&e->usize, &e->csize, &e->header_offset};
                for (int k = 0; k < 3; k++) {
                    if (*vals[k] != U32_MAX_FIELD) continue;
                    if (fend - f < 8) {
                        snprintf(msg, sizeof msg, "entry %llu has a short zip64 field", (unsigned long long)i);
                        goto bad;
                    }
                    *vals[k] = rd64(f);
                    f += 8;
                }
            }
            x += 4 + len;
        }
        if (e->header_offset >= size || e->csize > size) {
            snprintf(msg, sizeof msg, "entry %llu points outside the file (offset %llu, %llu bytes, file %zu bytes)",
                     (unsigned long long)i, (unsigned long long)e->header_offset, (unsigned long long)e->csize, size);
            goto bad;
        }
        memcpy(z->names + names_used, nm, nlen);
        z->names[names_used + nlen] = 0;
        e->name = (const char *)(uintptr_t)names_used; /* an offset until the block stops moving */
        names_used += nlen + 1;
        if (names_used > cd_size + 1) {
            snprintf(msg, sizeof msg, "names overflow the directory");
            goto bad;
        }
        at += 46 + nlen + xlen + clen;
        z->sorted[i] = i;
    }
    z->n = count;
    for (size_t i = 0; i < z->n; i++) z->entries[i].name = z->names + (uintptr_t)z->entries[i].name;
    qsort_r(z->sorted, z->n, sizeof *z->sorted, zip_cmp, z);
    return GRAFT_OK;
bad:
    graft_zip_close(z);
    return zip_bad(name, msg);
}

const graft_zip_entry *graft_zip_find(const graft_zip *z, const char *name) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) { /* first index whose name is >= name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(z->entries[z->sorted[mid]].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < z->n && strcmp(z->entries[z->sorted[lo]].name, name) == 0) return &z->entries[z->sorted[lo]];
    return NULL;
}

graft_status graft_zip_data_offset(const graft_zip *z, const graft_zip_entry *e, uint64_t *off) {
    char msg[200];
    if (e->flags & 1) {
        snprintf(msg, sizeof msg, "entry %.100s is encrypted", e->name);
        return zip_bad(z->name, msg);
    }
    if (e->method != 0 && e->method != 8) {
        snprintf(msg, sizeof msg, "entry %.100s uses compression method %u (only stored and deflated are read)",
                 e->name, e->method);
        return zip_bad(z->name, msg);
    }
    if (e->method == 0 && e->csize != e->usize) {
        snprintf(msg, sizeof msg, "stored entry %.100s has sizes %llu and %llu", e->name,
                 (unsigned long long)e->csize, (unsigned long long)e->usize);
        return zip_bad(z->name, msg);
    }
    if (!graft_range_ok(e->header_offset, 30, z->size) || rd32(z->data + e->header_offset) != SIG_LOCAL) {
        snprintf(msg, sizeof msg, "the local header of %.100s is missing or outside the file", e->name);
        return zip_bad(z->name, msg);
    }
    const unsigned char *h = z->data + e->header_offset;
    uint64_t o = e->header_offset + 30 + rd16(h + 26) + rd16(h + 28);
    if (!graft_range_ok(o, e->csize, z->size)) {
        snprintf(msg, sizeof msg, "the data of %.100s (%llu bytes at offset %llu) runs past the end of the file",
                 e->name, (unsigned long long)e->csize, (unsigned long long)o);
        return zip_bad(z->name, msg);
    }
    *off = o;
    return GRAFT_OK;
}

uint64_t graft_zip_max_inflated(uint64_t csize) { return csize * 1032 + 1024; }

graft_status graft_zip_extract(const graft_zip *z, const graft_zip_entry *e, void *dst, bool check_crc) {
    uint64_t off;
    graft_status st = graft_zip_data_offset(z, e, &off);
    if (st) return st;
    char msg[200];
    const unsigned char *src = z->data + off;
    if (e->method == 0) {
        memcpy(dst, src, e->usize);
    } else {
        if (e->usize > graft_zip_max_inflated(e->csize)) {
            snprintf(msg, sizeof msg, "deflated entry %.100s claims %llu bytes from %llu compressed", e->name,
                     (unsigned long long)e->usize, (unsigned long long)e->csize);
            return zip_bad(z->name, msg);
        }
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) return graft_error(GRAFT_ENOMEM, "cannot load \"%s\": zlib failed", z->name);
        uint64_t in_left = e->csize, out_left = e->usize;
        zs.next_in = (Bytef *)src;
        zs.next_out = dst;
        int ret;
        do { /* zlib counts in 32-bit chunks: refill before each call */
            if (zs.avail_in == 0 && in_left) {
                zs.avail_in = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
                in_left -= zs.avail_in;
            }
            if (zs.avail_out == 0 && out_left) {
                zs.avail_out = out_left > (1u << 30) ? (1u << 30) : (uInt)out_left;
                out_left -= zs.avail_out;
            }
            ret = inflate(&zs, Z_NO_FLUSH);
        } while (ret == Z_OK);
        uint64_t produced = e->usize - out_left - zs.avail_out;
        inflateEnd(&zs);
        if (ret != Z_STREAM_END || produced != e->usize) {
            snprintf(msg, sizeof msg, "deflated entry %.100s is corrupt or does not hold its %llu bytes", e->name,
                     (unsigned long long)e->usize);
            return zip_bad(z->name, msg);
        }
    }
    if (check_crc && e->crc != 0) {
        uint32_t c = (uint32_t)crc32_z(0, dst, e->usize);
        if (c != e->crc) {
            snprintf(msg, sizeof msg, "entry %.100s fails its CRC-32 check", e->name);
            return zip_bad(z->name, msg);
        }
    }
    return GRAFT_OK;
}

/* ---- writing ---- */

static void wr16(unsigned char *b, uint16_t v) {
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}
static void wr32(unsigned char *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

void graft_zip_writer_init(graft_zip_writer *w, graft_atomic_file *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
}

void graft_zip_writer_free(graft_zip_writer *w) {
    for (size_t i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    w->entries = NULL;
    w->n = w->cap = 0;
}

static graft_status zw_write(graft_zip_writer *w, const void *p, size_t n) {
    graft_status st = graft_atomic_write(w->f, p, n);
    w->pos += n;
    return st;
}

graft_status graft_zip_writer_begin(graft_zip_writer *w, const char *name, uint64_t size) {
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 4096) return graft_error(GRAFT_EINVAL, "save: zip entry name \"%.100s\" is empty or too long", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        graft_zip_wentry *e = realloc(w->entries, cap * sizeof *e);
        if (!e) return graft_error(GRAFT_ENOMEM, "save: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    graft_zip_wentry *e = &w->entries[w->n];
    e->name = strdup(name);
    if (!e->name) return graft_error(GRAFT_ENOMEM, "save: out of memory");
    e->size = size;
    e->offset = w->pos;
    e->crc = 0;
    w->n++;
    w->entry_zip64 = w->force_zip64 || size >= U32_MAX_FIELD;
    w->crc = (uint32_t)crc32_z(0, NULL, 0);
    w->remaining = size;

    unsigned char h[30 + 20 + 4 + 64];
    size_t z64 = w->entry_zip64 ? 20 : 0;
    uint64_t before_pad = w->pos + 30 + nlen + z64 + 4;
    size_t pad = (size_t)((64 - before_pad % 64) % 64);
    wr32(h, SIG_LOCAL);
    wr16(h + 4, w->entry_zip64 ? 45 : 20);
    wr16(h + 6, 0x0808);
    wr16(h + 8, 0);
    wr16(h + 10, 0);
    wr16(h + 12, 0);
    wr32(h + 14, 0);
    wr32(h + 18, w->entry_zip64 ? U32_MAX_FIELD : 0);
    wr32(h + 22, w->entry_zip64 ? U32_MAX_FIELD : 0);
    wr16(h + 26, (uint16_t)nlen);
    wr16(h + 28, (uint16_t)(z64 + 4 + pad));
    graft_status st = zw_write(w, h, 30);
    if (!st) st = zw_write(w, name, nlen);
    size_t x = 0;
    if (w->entry_zip64) { /* sizes follow in the data descriptor: zeros here */
        wr16(h + x, 1);
        wr16(h + x + 2, 16);
        wr64(h + x + 4, 0);
        wr64(h + x + 12, 0);
        x += 20;
    }
    wr16(h + x, 0x4246); /* "FB": padding to a 64-byte boundary, as torch.save */
    wr16(h + x + 2, (uint16_t)pad);
    memset(h + x + 4, 'Z', pad);
    x += 4 + pad;
    if (!st) st = zw_write(w, h, x);
    return st;
}

graft_status graft_zip_writer_data(graft_zip_writer *w, const void *data, size_t n) {
    if (n > w->remaining) return graft_error(GRAFT_EINTERNAL, "save: zip entry overrun");
    w->remaining -= n;
    const unsigned char *p = data;
    graft_status st = GRAFT_OK;
    /* big records: one thread computes the CRC of a chunk while another writes it (the
     * CRC costs ~0.28 s per GB on one core, about as much as copying into the page
     * cache); errors set on the writing thread are carried back to this one */
    const size_t big = (size_t)8 << 20;
    if (n >= 2 * big && omp_get_max_threads() > 1) {
        char msg[1024];
        while (n && !st) {
            size_t k = n < big ? n : big;
            uint32_t c = w->crc;
            graft_status ws = GRAFT_OK;
#pragma omp parallel sections num_threads(2)
            {
#pragma omp section
                c = (uint32_t)crc32_z(c, p, k);
#pragma omp section
                {
                    ws = zw_write(w, p, k);
                    if (ws) snprintf(msg, sizeof msg, "%s", graft_last_error());
                }
            }
            w->crc = c;
            if (ws) st = graft_error(ws, "%s", msg);
            p += k;
            n -= k;
        }
        return st;
    }
    /* CRC and write in chunks so each chunk is still in cache when written */
    const size_t chunk = (size_t)1 << 20;
    while (n && !st) {
        size_t k = n < chunk ? n : chunk;
        w->crc = (uint32_t)crc32_z(w->crc, p, k);
        st = zw_write(w, p, k);
        p += k;
        n -= k;
    }
    return st;
}

graft_status graft_zip_writer_end(graft_zip_writer *w) {
    if (w->remaining) return graft_error(GRAFT_EINTERNAL, "save: zip entry underrun");
    graft_zip_wentry *e = &w->entries[w->n - 1];
    e->crc = w->crc;
    unsigned char d[24];
    wr32(d, SIG_DESC);
    wr32(d + 4, e->crc);
    if (w->entry_zip64) {
        wr64(d + 8, e->size);
        wr64(d + 16, e->size);
        return zw_write(w, d, 24);
    }
    wr32(d + 8, (uint32_t)e->size);
    wr32(d + 12, (uint32_t)e->size);
    return zw_write(w, d, 16);
}

graft_status graft_zip_writer_entry(graft_zip_writer *w, const char *name, const void *data, uint64_t size) {
    graft_status st = graft_zip_writer_begin(w, name, size);
    if (!st) st = graft_zip_writer_data(w, data, (size_t)size);
    if (!st) st = graft_zip_writer_end(w);
    return st;
}

graft_status graft_zip_writer_finish(graft_zip_writer *w) {
    uint64_t cd_start = w->pos;
    graft_status st = GRAFT_OK;
    for (size_t i = 0; i < w->n && !st; i++) {
        graft_zip_wentry *e = &w->entries[i];
        bool big_size = w->force_zip64 || e->size >= U32_MAX_FIELD;
        bool big_off = w->force_zip64 || e->offset >= U32_MAX_FIELD;
        size_t nlen = strlen(e->name);
        unsigned char c[46 + 28];
        size_t xlen = (big_size || big_off) ? 4 + (big_size ? 16 : 0) + (big_off ? 8 : 0) : 0;
        wr32(c, SIG_CENTRAL);
        wr16(c + 4, 45);
        wr16(c + 6, xlen ? 45 : 20);
        wr16(c + 8, 0x0808);
        wr16(c + 10, 0);
        wr16(c + 12, 0);
        wr16(c + 14, 0);
        wr32(c + 16, e->crc);
        wr32(c + 20, big_size ? U32_MAX_FIELD : (uint32_t)e->size);
        wr32(c + 24, big_size ? U32_MAX_FIELD : (uint32_t)e->size);
        wr16(c + 28, (uint16_t)nlen);
        wr16(c + 30, (uint16_t)xlen);
        wr16(c + 32, 0);
        wr16(c + 34, 0);
        wr16(c + 36, 0);
        wr32(c + 38, 0);
        wr32(c + 42, big_off ? U32_MAX_FIELD : (uint32_t)e->offset);
        st = zw_write(w, c, 46);
        if (!st) st = zw_write(w, e->name, nlen);
        if (xlen && !st) {
            unsigned char *x = c + 46, *q = x + 4;
            wr16(x, 1);
            wr16(x + 2, (uint16_t)(xlen - 4));
            if (big_size) {
                wr64(q, e->size);
                wr64(q + 8, e->size);
                q += 16;
            }
            if (big_off) wr64(q, e->offset);
            st = zw_write(w, x, xlen);
        }
    }
    if (st) return st;
    uint64_t cd_size = w->pos - cd_start, end64 = w->pos;
    unsigned char r[56 + 20 + 22];
    wr32(r, SIG_END64);
    wr64(r + 4, 44);
    wr16(r + 12, 45);
    wr16(r + 14, 45);
    wr32(r + 16, 0);
    wr32(r + 20, 0);
    wr64(r + 24, w->n);
    wr64(r + 32, w->n);
    wr64(r + 40, cd_size);
    wr64(r + 48, cd_start);
    unsigned char *l = r + 56;
    wr32(l, SIG_LOC64);
    wr32(l + 4, 0);
    wr64(l + 8, end64);
    wr32(l + 16, 1);
    unsigned char *e = l + 20;
    wr32(e, SIG_END);
    wr16(e + 4, 0);
    wr16(e + 6, 0);
    wr16(e + 8, w->n >= 0xFFFF ? 0xFFFF : (uint16_t)w->n);
    wr16(e + 10, w->n >= 0xFFFF ? 0xFFFF : (uint16_t)w->n);
    wr32(e + 12, cd_size >= U32_MAX_FIELD ? U32_MAX_FIELD : (uint32_t)cd_size);
    wr32(e + 16, cd_start >= U32_MAX_FIELD ? U32_MAX_FIELD : (uint32_t)cd_start);
    wr16(e + 20, 0);
    return zw_write(w, r, sizeof r);
}
