/* libFuzzer target for the restricted pickle VM: runs the input as a pickle (strict and
 * with allow_unknown), walks the value tree it built (bounded depth, cycles marked),
 * then loads the input as a whole .pth (which covers the legacy format's sequence of
 * pickles when the input starts with torch's magic number). Seed corpus:
 * spec/fuzz/corpus/pickle (`make fuzz`). */
#include <stdint.h>
#include <stdlib.h>

#include "checkpoint/pickle.h"
#include "checkpoint/pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const graft_pv *v, int depth) {
    if (depth > GRAFT_PICKLE_MAX_DEPTH || v->mark) return 1;
    size_t n = 1;
    switch (v->type) {
    case GRAFT_PV_STR:
    case GRAFT_PV_BYTES:
        for (size_t i = 0; i < v->u.s.len; i++) n += (unsigned char)v->u.s.p[i];
        if (v->u.s.p[v->u.s.len] != 0) abort(); /* NUL-terminated */
        return n;
    case GRAFT_PV_LIST:
    case GRAFT_PV_TUPLE:
    case GRAFT_PV_SET:
    case GRAFT_PV_DICT:
    case GRAFT_PV_ODICT:
        ((graft_pv *)v)->mark = 1;
        for (uint32_t i = 0; i < v->u.seq.n; i++) n += walk(v->u.seq.items[i], depth + 1);
        if (v->type == GRAFT_PV_ODICT && v->u.seq.meta) n += walk(v->u.seq.meta, depth + 1);
        ((graft_pv *)v)->mark = 0;
        return n;
    case GRAFT_PV_TENSOR: {
        const graft_pickle_tensor *t = v->u.tensor;
        if (t->ndim < 0 || t->ndim > GRAFT_MAX_DIMS || t->offset < 0) abort();
        return n + (size_t)t->storage->numel;
    }
    case GRAFT_PV_PLACEHOLDER:
        if (v->u.ph->args) n += walk(v->u.ph->args, depth + 1);
        if (v->u.ph->state) n += walk(v->u.ph->state, depth + 1);
        return n;
    default:
        return n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int mode = 0; mode < 2; mode++) {
        graft_pickle *pk;
        graft_pickle_opts o = {.name = "fuzz", .allow_unknown = mode == 1, .legacy = size > 0 && (data[0] & 1)};
        if (graft_pickle_new(&pk, &o, size * 64 + (1u << 20))) abort();
        graft_pv *root;
        size_t used;
        if (graft_pickle_run(pk, data, size, &root, &used) == GRAFT_OK) {
            if (used > size) abort();
            volatile size_t n = walk(root, 0);
            (void)n;
        } else if (!graft_last_error()[0]) {
            abort();
        }
        graft_pickle_free(pk);
    }
    graft_pth *p;
    graft_pth_opts po = {.allow_unknown = true};
    if (graft_pth_load_buffer(&p, data, size, "fuzz", &po) == GRAFT_OK) graft_pth_free(p);
    return 0;
}
