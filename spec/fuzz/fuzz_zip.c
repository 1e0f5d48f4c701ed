/* libFuzzer target for the zip reader and the whole .pth loader: parses the input as a
 * zip directory, extracts every small entry, then loads it as a checkpoint
 * (graft_pth_load_buffer: copied storages), builds every tensor and touches its
 * storage's bytes; a checkpoint that loads is written back with graft's writer and
 * must read back. Seed corpus: spec/fuzz/corpus/zip (`make fuzz`). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/pickle_write.h"
#include "checkpoint/pth.h"
#include "checkpoint/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned touch_sum;

/* Re-emits a loaded value with the writer (a cycle or too deep: written as None). */
static void emit(graft_pkw *w, const graft_pth *p, graft_pv *v, int depth) {
    if (depth > 200 || v->mark) {
        graft_pkw_none(w);
        return;
    }
    switch (v->type) {
    case GRAFT_PV_BOOL: graft_pkw_bool(w, v->u.b); return;
    case GRAFT_PV_INT: graft_pkw_int(w, v->u.i); return;
    case GRAFT_PV_FLOAT: graft_pkw_float(w, v->u.f); return;
    case GRAFT_PV_STR: graft_pkw_str(w, v->u.s.p, v->u.s.len); return;
    case GRAFT_PV_BYTES: graft_pkw_bytes(w, v->u.s.p, v->u.s.len); return;
    case GRAFT_PV_TENSOR: {
        graft_tensor *t;
        if (graft_pth_tensor(&t, p, v->u.tensor)) abort(); /* checked at parse time */
        const unsigned char *d = t->storage->data;
        for (size_t k = 0; k < t->storage->nbytes; k++) touch_sum += d[k];
        graft_pkw_tensor(w, t);
        graft_tensor_release(t);
        return;
    }
    default: break;
    }
    v->mark = 1;
    if (graft_pv_is_seq(v)) {
        graft_pkw_list_begin(w);
        for (uint32_t i = 0; i < v->u.seq.n; i++) {
            graft_pkw_item(w);
            emit(w, p, v->u.seq.items[i], depth + 1);
        }
        graft_pkw_end(w);
    } else if (graft_pv_is_dict(v)) {
        graft_pkw_dict_begin(w, v->type == GRAFT_PV_ODICT);
        for (uint32_t i = 0; i + 1 < v->u.seq.n; i += 2) {
            graft_pkw_item(w);
            graft_pv *k = v->u.seq.items[i];
            if (k->type == GRAFT_PV_STR || k->type == GRAFT_PV_INT || k->type == GRAFT_PV_FLOAT || k->type == GRAFT_PV_BOOL)
                emit(w, p, k, depth + 1);
            else
                graft_pkw_none(w);
            emit(w, p, v->u.seq.items[i + 1], depth + 1);
        }
        graft_pkw_end(w);
    } else {
        graft_pkw_none(w);
    }
    v->mark = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    graft_zip z;
    if (graft_zip_open(&z, data, size, "fuzz") == GRAFT_OK) {
        for (size_t i = 0; i < z.n; i++) {
            const graft_zip_entry *e = &z.entries[i];
            if (graft_zip_find(&z, e->name) == NULL) abort(); /* every name is found */
            if (e->usize > (1u << 20)) continue;
            unsigned char *buf = malloc(e->usize ? e->usize : 1);
            if (!buf) continue;
            graft_zip_extract(&z, e, buf, true);
            free(buf);
        }
        graft_zip_close(&z);
    } else if (!graft_last_error()[0]) {
        abort();
    }

    graft_pth *p;
    graft_pth_opts o = {.allow_unknown = size > 0 && (data[size - 1] & 1)};
    if (graft_pth_load_buffer(&p, data, size, "fuzz", &o)) {
        if (!graft_last_error()[0]) abort(); /* every failure says why */
        return 0;
    }
    graft_pkw *w;
    if (graft_pkw_new(&w)) abort();
    emit(w, p, graft_pth_root(p), 0);
    char path[] = "/tmp/graft-fuzz-pth-XXXXXX.pth";
    int fd = mkstemps(path, 4);
    if (fd >= 0) {
        close(fd);
        if (graft_pth_save(w, path, NULL)) abort(); /* a loaded tree always writes */
        graft_pth *back;
        graft_pth_opts strict = {.allow_unknown = false};
        if (graft_pth_load(&back, path, &strict)) {
            fprintf(stderr, "graft's own file does not read back: %s\n", graft_last_error());
            abort();
        }
        graft_pth_free(back);
        unlink(path);
    }
    graft_pkw_free(w);
    graft_pth_free(p);
    return 0;
}
