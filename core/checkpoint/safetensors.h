/* graft checkpoints: the safetensors format, read (validated, tensors mapped from the
 * file) and written (atomically). Layout and rules: see the top of safetensors.c.
 *
 *     graft_safetensors *st;
 *     if (graft_safetensors_load(&st, "model.safetensors")) puts(graft_last_error());
 *     for (int64_t i = 0; i < st->n; i++) use(st->entries[i].name, st->entries[i].tensor);
 *     graft_safetensors_free(st);   // releases the tensors still held by st
 *
 * Entries keep the order in which their names appear in the header (the JSON object's
 * order), which is the state dict's order for files graft writes.
 */
#ifndef GRAFT_CKPT_SAFETENSORS_H
#define GRAFT_CKPT_SAFETENSORS_H

#include "tensor/tensor.h"

/* The header may not exceed this many bytes (the reference implementation's cap). */
#define GRAFT_ST_MAX_HEADER 100000000ull
/* Nesting depth allowed in the header's JSON (unknown fields are skipped up to it). */
#define GRAFT_ST_MAX_DEPTH 64

typedef struct {
    char *name;            /* decoded, NUL-terminated; name_len bytes (may hold NUL) */
    size_t name_len;
    graft_dtype dtype;
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    uint64_t begin, end;   /* data_offsets, relative to the data area */
    graft_tensor *tensor;  /* owned by the entry until taken (set to NULL); NULL after parse */
} graft_st_entry;

typedef struct {
    char *key, *value;     /* decoded, NUL-terminated */
    size_t key_len, value_len;
} graft_st_meta;

typedef struct {
    int64_t n;                 /* tensors, in header order */
    graft_st_entry *entries;
    int64_t nmeta;             /* __metadata__ entries, in header order */
    graft_st_meta *meta;
    uint64_t header_len;       /* N: the JSON header's length */
    uint64_t data_offset;      /* 8 + N: where the data area starts in the file */
    int64_t mapped;            /* tensors that point into the file mapping */
} graft_safetensors;

/* ---- reading ---- */

/* Validates the whole file image (data, size) and fills the index, tensors left NULL.
 * `label` names the file in errors. Nothing is allocated before the header length is
 * checked against size; afterwards only in proportion to the header. +1: free with
 * graft_safetensors_free. */
graft_status graft_safetensors_parse(graft_safetensors **out, const unsigned char *data, size_t size,
                                     const char *label);
/* Parses path and creates every tensor: mapped from the file (a private, copy-on-write
 * mapping shared by all of them and released with the last one) when its bytes are
 * aligned for its dtype, copied otherwise. */
graft_status graft_safetensors_load(graft_safetensors **out, const char *path);
/* As load, from bytes in memory; every tensor is a copy (data may be freed after). */
graft_status graft_safetensors_load_buffer(graft_safetensors **out, const unsigned char *data, size_t size,
                                           const char *label);
/* Releases the index and the tensors still held by its entries. Accepts NULL. */
void graft_safetensors_free(graft_safetensors *st);

/* "F32", ... for a graft dtype. */
const char *graft_safetensors_dtype_str(graft_dtype d);

/* ---- writing ---- */

/* Writes n tensors (borrowed) under names (NUL-terminated UTF-8, unique, not
 * "__metadata__") with nmeta string pairs of metadata (omitted from the file when
 * nmeta is 0). The header lists __metadata__ then the names in the given order; the
 * data are laid out by dtype size, largest first (the given order within a size), so
 * every tensor starts aligned for its dtype. Tensors are written contiguous, each as
 * its own bytes: views that share a storage are each written in full (the format has
 * no sharing). Atomic: a failure leaves any previous file untouched. */
graft_status graft_safetensors_save(const char *path, int64_t n, const char *const *names,
                                    graft_tensor *const *tensors, int64_t nmeta,
                                    const char *const *meta_keys, const char *const *meta_values);

#endif
