/* graft checkpoints: writing PyTorch's zip format (.pth/.pt) that torch.load reads.
 *
 * A caller emits the object as a stream of pickle values (protocol 2, the opcodes
 * torch.save uses), then graft_pth_save writes the archive atomically:
 *   <stem>/data.pkl, <stem>/byteorder ("little"), <stem>/data/<key> per storage (stored,
 *   64-byte aligned), <stem>/version ("3\n")
 * where <stem> is the file's base name without its last extension, as torch.save.
 *
 *     graft_pkw *w; graft_pkw_new(&w);
 *     graft_pkw_dict_begin(w, true);                 // an OrderedDict
 *     graft_pkw_item(w); graft_pkw_str(w, "fc.weight", 9); graft_pkw_tensor(w, t);
 *     graft_pkw_dict_end(w);
 *     graft_pth_save(w, "model.pth", NULL); graft_pkw_free(w);
 *
 * Tensors become torch._utils._rebuild_tensor_v2(persistent id, offset, size, stride,
 * False, OrderedDict()); tensors sharing a graft storage share one record, and every
 * tensor keeps its offset and strides (the whole storage is written, as torch.save
 * does). Two tensors viewing one storage as different dtypes are refused, as PyTorch.
 */
#ifndef GRAFT_CKPT_PICKLE_WRITE_H
#define GRAFT_CKPT_PICKLE_WRITE_H

#include "tensor/tensor.h"

typedef struct graft_pkw graft_pkw;

graft_status graft_pkw_new(graft_pkw **out);
/* Frees the writer and drops its storage references. Accepts NULL. */
void graft_pkw_free(graft_pkw *w);

/* Scalars. Text that is not valid UTF-8 is written as bytes. */
graft_status graft_pkw_none(graft_pkw *w);
graft_status graft_pkw_bool(graft_pkw *w, bool v);
graft_status graft_pkw_int(graft_pkw *w, int64_t v);
graft_status graft_pkw_float(graft_pkw *w, double v);
graft_status graft_pkw_str(graft_pkw *w, const char *s, size_t n);
graft_status graft_pkw_bytes(graft_pkw *w, const char *s, size_t n);

/* Containers: begin, then graft_pkw_item before each list item or each dict key
 * (the key's value follows it), then end. Nesting is capped at
 * GRAFT_PICKLE_MAX_DEPTH. */
graft_status graft_pkw_list_begin(graft_pkw *w);
graft_status graft_pkw_dict_begin(graft_pkw *w, bool ordered);
graft_status graft_pkw_item(graft_pkw *w);
graft_status graft_pkw_end(graft_pkw *w);
/* After an ordered dict's end: its `_metadata` attribute. Emit the value (a dict)
 * between begin and end. */
graft_status graft_pkw_metadata_begin(graft_pkw *w);
graft_status graft_pkw_metadata_end(graft_pkw *w);

/* A tensor (CPU); its storage is recorded once. */
graft_status graft_pkw_tensor(graft_pkw *w, graft_tensor *t);

typedef struct {
    bool force_zip64;   /* zip64 fields on every entry (tests of the >4 GiB path) */
} graft_pth_save_opts;

/* Writes the archive for the one complete value emitted (temp file, fsync, rename). */
graft_status graft_pth_save(graft_pkw *w, const char *path, const graft_pth_save_opts *o);

#endif
