/* graft checkpoints: the .pth reader (see pth.h): format detection, the zip and legacy
 * layouts, and storages mapped, copied, inflated or byte-swapped into graft storages. */
#define _GNU_SOURCE
#include "pth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <zlib.h>

#include "checkpoint/io.h"
#include "checkpoint/zip.h"

/* One private mapping of the whole file, shared by the storages mapped from it. */
typedef struct {
    int64_t refs;
    void *base;
    size_t size;
} pth_map;

struct graft_pth {
    graft_pickle *pk;
    graft_pv *root;
    char *name;
    bool legacy;
    pth_map *map;
};

static const unsigned char legacy_magic[15] = {0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46,
                                               0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E};

static void map_release(pth_map *m) {
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (m->base) munmap(m->base, m->size);
    free(m);
}

static void map_storage_release(void *ctx, void *data, size_t nbytes) {
    (void)data;
    (void)nbytes;
    map_release(ctx);
}

void graft_pth_free(graft_pth *p) {
    if (!p) return;
    graft_pickle_free(p->pk);
    map_release(p->map);
    free(p->name);
    free(p);
}

graft_pv *graft_pth_root(const graft_pth *p) { return p->root; }
const char *graft_pth_name(const graft_pth *p) { return p->name; }
const char *graft_pth_format(const graft_pth *p) { return p->legacy ? "legacy" : "zip"; }

static graft_status bad(const graft_pth *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static graft_status bad(const graft_pth *p, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return graft_error(GRAFT_EFORMAT, "cannot load \"%s\": %s", p->name, msg);
}

/* Reverses each element's bytes (big-endian files). */
static void swap_elements(unsigned char *d, size_t nbytes, size_t esz) {
    if (esz == 1) return;
    for (size_t i = 0; i + esz <= nbytes; i += esz)
        for (size_t a = 0, b = esz - 1; a < b; a++, b--) {
            unsigned char t = d[i + a];
            d[i + a] = d[i + b];
            d[i + b] = t;
        }
}

/* A graft storage over nbytes at file offset `off`: mapped when the file is mapped, the
 * bytes are aligned for the dtype and need no swap; copied otherwise. */
static graft_status storage_from_bytes(graft_pth *p, graft_pickle_storage *st, const unsigned char *file,
                                       uint64_t off, size_t nbytes, bool swap) {
    size_t esz = graft_dtype_size((graft_dtype)st->dtype);
    if (p->map && !swap && off % esz == 0) {
        graft_status s = graft_storage_wrap(&st->resolved, (unsigned char *)p->map->base + off, nbytes, graft_cpu,
                                            GRAFT_STORAGE_MAPPED, map_storage_release, p->map);
        if (s) return s;
        __atomic_add_fetch(&p->map->refs, 1, __ATOMIC_RELAXED);
        return GRAFT_OK;
    }
    graft_status s = graft_storage_new(&st->resolved, nbytes, graft_cpu);
    if (s) return s;
    memcpy(st->resolved->data, file + off, nbytes);
    if (swap) swap_elements(st->resolved->data, nbytes, esz);
    return GRAFT_OK;
}

static graft_status check_record_size(graft_pth *p, graft_pickle_storage *st, uint64_t have) {
    if (st->dtype < 0) return bad(p, "storage %s is untyped and no tensor gives it a dtype", st->key);
    size_t esz = graft_dtype_size((graft_dtype)st->dtype);
    uint64_t want = (uint64_t)st->numel * esz;
    if (have != want)
        return bad(p, "storage %s claims %lld elements of %s (%llu bytes) but its data holds %llu bytes", st->key,
                   (long long)st->numel, graft_dtype_name((graft_dtype)st->dtype), (unsigned long long)want,
                   (unsigned long long)have);
    return GRAFT_OK;
}

/* The pickle may allocate a bounded multiple of its own size (a legacy file's pickles
 * share the file with the storages: the cap keeps a big file from granting a hostile
 * pickle gigabytes). Real pickles need about ten times their size. */
static size_t pickle_budget(size_t pickle_bytes) {
    const size_t cap = (size_t)2 << 30;
    if (pickle_bytes > cap / 64) return cap;
    return pickle_bytes * 64 + ((size_t)4 << 20);
}

/* ---- zip ---- */

/* A small text record (version, byteorder) as a string; "" when absent. */
static graft_status zip_small_record(graft_pth *p, const graft_zip *z, const char *name, char *buf, size_t cap,
                                     bool *present) {
    const graft_zip_entry *e = graft_zip_find(z, name);
    buf[0] = 0;
    *present = e != NULL;
    if (!e) return GRAFT_OK;
    if (e->usize >= cap) return bad(p, "record %s is %llu bytes, too long", name, (unsigned long long)e->usize);
    if (e->method == 8 && e->csize > 4096) return bad(p, "record %s is corrupt", name);
    graft_status s = graft_zip_extract(z, e, buf, true);
    if (s) return s;
    buf[e->usize] = 0;
    return GRAFT_OK;
}

static graft_status load_zip(graft_pth *p, const unsigned char *data, size_t size, const graft_pth_opts *o) {
    graft_zip z;
    graft_status s = graft_zip_open(&z, data, size, p->name);
    if (s) return s;
    unsigned char *pkl_owned = NULL;
    char rec[4200], buf[64];
    if (z.n == 0) {
        s = bad(p, "the zip archive is empty");
        goto done;
    }
    /* the archive's folder: the first entry in the directory, up to its first '/' */
    const char *first = z.entries[0].name, *slash = strchr(first, '/');
    if (!slash || slash == first || slash - first > 4000) {
        s = bad(p, "file in archive is not in a subdirectory: %.100s", first);
        goto done;
    }
    int alen = (int)(slash - first);
    snprintf(rec, sizeof rec, "%.*s/constants.pkl", alen, first);
    if (graft_zip_find(&z, rec)) {
        s = bad(p, "it is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: load it in PyTorch "
                   "and save model.state_dict() with torch.save");
        goto done;
    }
    bool present;
    snprintf(rec, sizeof rec, "%.*s/version", alen, first);
    if ((s = zip_small_record(p, &z, rec, buf, sizeof buf, &present))) goto done;
    if (present) {
        char *end;
        long v = strtol(buf, &end, 10);
        if (end == buf || (*end && *end != '\n') || v < 1 || v > 3) {
            s = bad(p, "archive version \"%.20s\" is not one graft reads (1 to 3)", buf);
            goto done;
        }
    }
    bool swap = false;
    snprintf(rec, sizeof rec, "%.*s/byteorder", alen, first);
    if ((s = zip_small_record(p, &z, rec, buf, sizeof buf, &present))) goto done;
    if (present) {
        if (strcmp(buf, "big") == 0) swap = true;
        else if (strcmp(buf, "little") != 0) {
            s = bad(p, "unknown byteorder \"%.20s\"", buf);
            goto done;
        }
    }

    snprintf(rec, sizeof rec, "%.*s/data.pkl", alen, first);
    const graft_zip_entry *pe = graft_zip_find(&z, rec);
    if (!pe) {
        s = bad(p, "the archive has no %s record (not a torch.save file)", rec);
        goto done;
    }
    const unsigned char *pkl;
    uint64_t off;
    if ((s = graft_zip_data_offset(&z, pe, &off))) goto done;
    if (pe->method == 0) {
        pkl = data + off;
        if (pe->crc && (uint32_t)crc32_z(0, pkl, pe->usize) != pe->crc) {
            s = bad(p, "record %s fails its CRC-32 check", rec);
            goto done;
        }
    } else {
        if (pe->usize > graft_zip_max_inflated(pe->csize)) {
            s = bad(p, "deflated record %s claims %llu bytes from %llu compressed", rec, (unsigned long long)pe->usize,
                    (unsigned long long)pe->csize);
            goto done;
        }
        pkl_owned = malloc(pe->usize ? pe->usize : 1);
        if (!pkl_owned) {
            s = graft_error(GRAFT_ENOMEM, "cannot load \"%s\": out of memory", p->name);
            goto done;
        }
        if ((s = graft_zip_extract(&z, pe, pkl_owned, true))) goto done;
        pkl = pkl_owned;
    }
    graft_pickle_opts po = {.name = p->name, .allow_unknown = o->allow_unknown, .legacy = false};
    if ((s = graft_pickle_new(&p->pk, &po, pickle_budget(pe->usize)))) goto done;
    size_t used;
    if ((s = graft_pickle_run(p->pk, pkl, pe->usize, &p->root, &used))) goto done;

    for (size_t i = 0; i < graft_pickle_storage_count(p->pk); i++) {
        graft_pickle_storage *st = graft_pickle_storage_at(p->pk, i);
        if (st->base) continue;
        snprintf(rec, sizeof rec, "%.*s/data/%s", alen, first, st->key);
        const graft_zip_entry *e = graft_zip_find(&z, rec);
        if (!e) {
            s = bad(p, "storage %s has no record %s in the archive", st->key, rec);
            goto done;
        }
        if ((s = check_record_size(p, st, e->usize))) goto done;
        size_t esz = graft_dtype_size((graft_dtype)st->dtype);
        if ((s = graft_zip_data_offset(&z, e, &off))) goto done;
        if (e->method == 0) {
            if ((s = storage_from_bytes(p, st, data, off, (size_t)e->usize, swap))) goto done;
        } else {
            if (e->usize > graft_zip_max_inflated(e->csize)) {
                s = bad(p, "deflated record %s claims %llu bytes from %llu compressed", rec, (unsigned long long)e->usize,
                        (unsigned long long)e->csize);
                goto done;
            }
            if ((s = graft_storage_new(&st->resolved, (size_t)e->usize, graft_cpu))) goto done;
            if ((s = graft_zip_extract(&z, e, st->resolved->data, true))) goto done;
            if (swap) swap_elements(st->resolved->data, (size_t)e->usize, esz);
        }
    }
done:
    free(pkl_owned);
    graft_zip_close(&z);
    return s;
}

/* ---- legacy ---- */

static graft_status legacy_run(graft_pth *p, const unsigned char *data, size_t size, size_t *pos, graft_pv **v,
                               const char *what) {
    size_t used;
    graft_status s = graft_pickle_run(p->pk, data + *pos, size - *pos, v, &used);
    if (s) {
        /* say which of the legacy pickles failed, keeping the VM's message */
        if (s == GRAFT_EFORMAT && strstr(graft_last_error(), "pickle offset")) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s", graft_last_error());
            return graft_error(s, "%s (in the %s)", msg, what);
        }
        return s;
    }
    *pos += used;
    return GRAFT_OK;
}

static graft_status load_legacy(graft_pth *p, const unsigned char *data, size_t size, const graft_pth_opts *o) {
    graft_pickle_opts po = {.name = p->name, .allow_unknown = o->allow_unknown, .legacy = true};
    graft_status s = graft_pickle_new(&p->pk, &po, pickle_budget(size));
    if (s) return s;
    size_t pos = sizeof legacy_magic; /* the magic number (an 80-bit int) was matched */
    graft_pv *v;
    if ((s = legacy_run(p, data, size, &pos, &v, "protocol version"))) return s;
    if (v->type != GRAFT_PV_INT || v->u.i != 1001)
        return bad(p, "Invalid protocol version: %s (expected 1001)", v->type == GRAFT_PV_INT ? "other" : "not an int");
    if ((s = legacy_run(p, data, size, &pos, &v, "system info"))) return s;
    bool swap = false;
    if (graft_pv_is_dict(v)) {
        for (uint32_t i = 0; i + 1 < v->u.seq.n; i += 2) {
            graft_pv *k = v->u.seq.items[i], *x = v->u.seq.items[i + 1];
            if (k->type == GRAFT_PV_STR && strcmp(k->u.s.p, "little_endian") == 0 && x->type == GRAFT_PV_BOOL)
                swap = !x->u.b;
        }
    }
    if ((s = legacy_run(p, data, size, &pos, &p->root, "main pickle"))) return s;
    graft_pv *keys;
    if ((s = legacy_run(p, data, size, &pos, &keys, "storage key list"))) return s;
    if (keys->type != GRAFT_PV_LIST) return bad(p, "the storage key list is a %s", graft_pv_type_name(keys->type));
    size_t nroots = 0;
    for (size_t i = 0; i < graft_pickle_storage_count(p->pk); i++)
        if (!graft_pickle_storage_at(p->pk, i)->base) nroots++;
    if (keys->u.seq.n != nroots)
        return bad(p, "the storage key list names %u storages but the pickle uses %zu", keys->u.seq.n, nroots);
    for (uint32_t i = 0; i < keys->u.seq.n; i++) {
        graft_pv *k = keys->u.seq.items[i];
        if (k->type != GRAFT_PV_STR && k->type != GRAFT_PV_BYTES) return bad(p, "a storage key is not a string");
        graft_pickle_storage *st = graft_pickle_find_storage(p->pk, k->u.s.p);
        if (!st || st->base) return bad(p, "storage key %.60s is not a storage of the pickle", k->u.s.p);
        if (st->resolved) return bad(p, "storage key %.60s is listed twice", k->u.s.p);
        if (size - pos < 8) return bad(p, "the data of storage %s is missing (truncated)", st->key);
        int64_t n;
        uint64_t u = 0;
        for (int b = 0; b < 8; b++) u |= (uint64_t)data[pos + b] << (8 * b);
        if (swap) u = __builtin_bswap64(u);
        memcpy(&n, &u, 8);
        pos += 8;
        if ((s = check_record_size(p, st, (uint64_t)st->numel * (st->dtype < 0 ? 1 : graft_dtype_size((graft_dtype)st->dtype))))) return s;
        if (n != st->numel)
            return bad(p, "storage %s holds %lld elements in the file but the pickle says %lld", st->key, (long long)n,
                       (long long)st->numel);
        uint64_t nbytes = (uint64_t)st->numel * graft_dtype_size((graft_dtype)st->dtype);
        if (!graft_range_ok(pos, nbytes, size))
            return bad(p, "storage %s (%llu bytes at offset %zu) runs past the end of the file (%zu bytes)", st->key,
                       (unsigned long long)nbytes, pos, size);
        if ((s = storage_from_bytes(p, st, data, pos, (size_t)nbytes, swap))) return s;
        pos += nbytes;
    }
    return GRAFT_OK;
}

/* ---- entry points ---- */

static graft_status pth_load(graft_pth *p, const unsigned char *data, size_t size, const graft_pth_opts *o) {
    if (size == 0) return bad(p, "the file is empty");
    if (size >= 4 && memcmp(data, "PK\3\4", 4) == 0) return load_zip(p, data, size, o);
    if (size >= 4 && memcmp(data, "PK\5\6", 4) == 0) return bad(p, "it is an empty zip archive");
    if (size >= sizeof legacy_magic && memcmp(data, legacy_magic, sizeof legacy_magic) == 0) {
        p->legacy = true;
        return load_legacy(p, data, size, o);
    }
    if (size >= 262 && memcmp(data + 257, "ustar", 5) == 0)
        return bad(p, "it is a tar archive (torch.save before 0.4), which graft does not read");
    if (size >= 8 && memcmp(data, "PYTORCH1", 8) == 0)
        return bad(p, "it is a preview-era PyTorch archive (PYTORCH1), which graft does not read");
    if (data[0] == 0x80) return bad(p, "Invalid magic number; corrupt file? (a pickle, but not one torch.save wrote)");
    if (size >= 9 && data[8] == '{')
        return bad(p, "it is not a PyTorch checkpoint (it looks like a safetensors file)");
    return bad(p, "it is not a PyTorch checkpoint (no zip signature or torch.save magic number)");
}

static graft_status pth_new(graft_pth **out, const char *name) {
    *out = calloc(1, sizeof **out);
    if (!*out) return graft_error(GRAFT_ENOMEM, "out of memory");
    (*out)->name = strdup(name ? name : "?");
    if (!(*out)->name) {
        free(*out);
        *out = NULL;
        return graft_error(GRAFT_ENOMEM, "out of memory");
    }
    return GRAFT_OK;
}

graft_status graft_pth_load_buffer(graft_pth **out, const unsigned char *data, size_t size, const char *name,
                                   const graft_pth_opts *o) {
    graft_pth *p;
    graft_status s = pth_new(&p, name);
    *out = NULL;
    if (s) return s;
    if ((s = pth_load(p, data, size, o))) {
        graft_pth_free(p);
        return s;
    }
    *out = p;
    return GRAFT_OK;
}

graft_status graft_pth_load(graft_pth **out, const char *path, const graft_pth_opts *o) {
    *out = NULL;
    graft_pth *p;
    graft_status s = pth_new(&p, path);
    if (s) return s;
    graft_mapped_file mf;
    if ((s = graft_mapped_open(&mf, path))) {
        graft_pth_free(p);
        return graft_error(s, "cannot load \"%s\": %s", path, graft_last_error());
    }
    if (mf.size > 0) {
        /* a private mapping may be made writable whatever the file's mode: writes to a
         * loaded tensor copy the page and never reach the file */
        p->map = calloc(1, sizeof *p->map);
        if (!p->map || mprotect(mf.map, mf.size, PROT_READ | PROT_WRITE) != 0) {
            free(p->map);
            p->map = NULL;
            graft_mapped_close(&mf);
            graft_pth_free(p);
            return graft_error(GRAFT_EIO, "cannot load \"%s\": cannot map the file", path);
        }
        p->map->refs = 1;
        p->map->base = mf.map;
        p->map->size = mf.size;
        mf.map = NULL; /* the shared mapping owns it now */
    }
    const unsigned char *data = p->map ? p->map->base : NULL;
    size_t size = mf.size;
    graft_mapped_close(&mf);
    if ((s = pth_load(p, data, size, o))) {
        graft_pth_free(p);
        return s;
    }
    *out = p;
    return GRAFT_OK;
}

graft_status graft_pth_tensor(graft_tensor **out, const graft_pth *p, const graft_pickle_tensor *t) {
    const graft_pickle_storage *st = t->storage;
    int64_t off = t->offset;
    while (st->base) {
        off += st->base_offset;
        st = st->base;
    }
    *out = NULL;
    if (!st->resolved) return bad(p, "storage %s has no data", st->key);
    graft_status s = graft_tensor_from_storage(out, st->resolved, (graft_dtype)st->dtype, t->ndim, t->shape, t->stride, off);
    if (s) return bad(p, "tensor of storage %s: %s", st->key, graft_last_error());
    return GRAFT_OK;
}

graft_status graft_pth_storage_tensor(graft_tensor **out, const graft_pth *p, const graft_pickle_storage *st) {
    graft_pickle_tensor t;
    memset(&t, 0, sizeof t);
    t.storage = (graft_pickle_storage *)st;
    t.ndim = 1;
    t.shape[0] = st->numel;
    t.stride[0] = 1;
    return graft_pth_tensor(out, p, &t);
}
