/* graft checkpoints: a zip reader over bytes in memory and a streaming zip writer, as
 * PyTorch's archives need them.
 *
 * Reading trusts nothing: the end record (classic or zip64) and every central
 * directory entry are checked against the buffer's size before use; sizes come from
 * the central directory (torch writes zeros in local headers); an entry's data offset
 * is computed from its local header only when asked, so opening a 1 GB archive
 * touches its directory and nothing else. Stored (method 0) and deflated (method 8)
 * entries are accepted.
 *
 *     graft_zip z;
 *     if (graft_zip_open(&z, bytes, size, "x.pth")) return st;
 *     const graft_zip_entry *e = graft_zip_find(&z, "x/data.pkl");
 *     uint64_t off; graft_zip_data_offset(&z, e, &off);   // stored: bytes + off
 *     graft_zip_close(&z);
 *
 * Writing streams entries through a graft_atomic_file: a local header whose extra field
 * pads the data to a 64-byte boundary (as torch.save, so the data can be mapped), the
 * data with its CRC-32 computed on the way, a data descriptor, then the central
 * directory, a zip64 end record and locator, and the classic end record. Entries and
 * offsets past 4 GiB get zip64 fields.
 */
#ifndef GRAFT_CKPT_ZIP_H
#define GRAFT_CKPT_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "checkpoint/io.h"
#include "tensor/tensor.h"

typedef struct {
    const char *name;        /* NUL-terminated copy */
    uint16_t method;         /* 0 stored, 8 deflated */
    uint16_t flags;
    uint32_t crc;
    uint64_t csize, usize;   /* compressed and uncompressed sizes */
    uint64_t header_offset;  /* of the local header */
} graft_zip_entry;

typedef struct {
    const unsigned char *data;
    size_t size;
    const char *name;        /* the file, for messages (borrowed) */
    graft_zip_entry *entries;
    size_t n;
    size_t *sorted;          /* entry indices sorted by name (then index) */
    char *names;             /* all names, one block */
} graft_zip;

/* Parses the directory of the archive in data[0..size). Errors name the file. */
graft_status graft_zip_open(graft_zip *z, const unsigned char *data, size_t size, const char *name);
void graft_zip_close(graft_zip *z);
/* The first entry with this exact name, or NULL. */
const graft_zip_entry *graft_zip_find(const graft_zip *z, const char *name);
/* The file offset of the entry's data, from its local header; checks that csize
 * bytes from there lie inside the file. */
graft_status graft_zip_data_offset(const graft_zip *z, const graft_zip_entry *e, uint64_t *off);
/* Writes the entry's usize uncompressed bytes into dst (inflating when deflated) and
 * checks the CRC when check_crc (a stored CRC of 0 means "not computed"). */
graft_status graft_zip_extract(const graft_zip *z, const graft_zip_entry *e, void *dst, bool check_crc);
/* The largest usize a deflated entry of csize bytes can honestly claim. */
uint64_t graft_zip_max_inflated(uint64_t csize);

/* ---- writing ---- */
typedef struct {
    char *name;
    uint32_t crc;
    uint64_t size, offset;
} graft_zip_wentry;

typedef struct {
    graft_atomic_file *f;
    graft_zip_wentry *entries;
    size_t n, cap;
    uint64_t pos;            /* bytes written so far */
    bool force_zip64;        /* zip64 fields on every entry (tests) */
    /* the entry in progress */
    uint32_t crc;
    uint64_t remaining;
    bool entry_zip64;
} graft_zip_writer;

void graft_zip_writer_init(graft_zip_writer *w, graft_atomic_file *f);
/* Starts an entry of exactly `size` stored bytes (data aligned to 64 in the file). */
graft_status graft_zip_writer_begin(graft_zip_writer *w, const char *name, uint64_t size);
/* Appends data to the entry in progress (CRC computed on the way). */
graft_status graft_zip_writer_data(graft_zip_writer *w, const void *data, size_t n);
graft_status graft_zip_writer_end(graft_zip_writer *w);
/* A whole entry at once. */
graft_status graft_zip_writer_entry(graft_zip_writer *w, const char *name, const void *data, uint64_t size);
/* Writes the central directory and end records (the caller commits the file). */
graft_status graft_zip_writer_finish(graft_zip_writer *w);
void graft_zip_writer_free(graft_zip_writer *w);

#endif
