/* graft checkpoints: PyTorch's torch.save files (.pth/.pt), read without Python.
 *
 * Two layouts, told apart by their bytes, never by the file name:
 *   zip (torch >= 1.6): <archive>/data.pkl (the pickle), <archive>/data/<key> (one
 *     record per storage, raw little-endian elements), <archive>/version,
 *     <archive>/byteorder (when present). TorchScript archives (constants.pkl) are
 *     refused.
 *   legacy (_use_new_zipfile_serialization=False, torch < 1.6): concatenated pickles
 *     (magic number, protocol 1001, sys info, the object, the sorted storage keys), then
 *     per key an int64 element count and the raw elements.
 * The pickle goes through the restricted VM of pickle.h. Storages are mapped from the
 * file (one private, copy-on-write mapping shared by all of them and released with the
 * last) when stored and aligned for their dtype, copied when misaligned, inflated when
 * deflated, byte-swapped (copied) when the file is big-endian.
 *
 *     graft_pth *p;
 *     graft_pth_opts o = {.allow_unknown = false};
 *     if (graft_pth_load(&p, "model.pth", &o)) puts(graft_last_error());
 *     ... walk graft_pth_root(p); graft_pth_tensor(&t, p, v->u.tensor) per tensor ...
 *     graft_pth_free(p);   // tensors made from it stay valid
 */
#ifndef GRAFT_CKPT_PTH_H
#define GRAFT_CKPT_PTH_H

#include "checkpoint/pickle.h"

typedef struct {
    bool allow_unknown;   /* unknown globals become placeholders instead of errors */
} graft_pth_opts;

typedef struct graft_pth graft_pth;

/* Loads a file: the tree, with every storage resolved. Errors name the file. */
graft_status graft_pth_load(graft_pth **out, const char *path, const graft_pth_opts *o);
/* The same from bytes in memory (copied storages; for fuzzing and tests). `name` is
 * used in messages. */
graft_status graft_pth_load_buffer(graft_pth **out, const unsigned char *data, size_t size, const char *name,
                                   const graft_pth_opts *o);
void graft_pth_free(graft_pth *p);

/* The loaded value (owned by p). */
graft_pv *graft_pth_root(const graft_pth *p);
const char *graft_pth_name(const graft_pth *p);
/* "zip" or "legacy". */
const char *graft_pth_format(const graft_pth *p);
/* +1: a tensor over its (shared) storage; tensors of one storage share it. */
graft_status graft_pth_tensor(graft_tensor **out, const graft_pth *p, const graft_pickle_tensor *t);
/* +1: a 1-D tensor over a whole storage (a storage saved on its own). */
graft_status graft_pth_storage_tensor(graft_tensor **out, const graft_pth *p, const graft_pickle_storage *s);

#endif
