/* graft data: the IDX reader (the MNIST / Fashion-MNIST format), gzip-compressed or
 * plain, read through zlib.
 *
 *     graft_tensor *images;
 *     if (graft_idx_read(&images, "train-images-idx3-ubyte.gz"))   // uint8 [60000, 28, 28]
 *         fprintf(stderr, "%s\n", graft_last_error());
 *
 * The tensor holds what the file holds (dtype and shape from the header); conversion
 * (to float, to int64 labels) is the caller's.
 */
#ifndef GRAFT_DATA_IDX_H
#define GRAFT_DATA_IDX_H

#include "tensor/tensor.h"

/* +1: a fresh contiguous tensor with the file's dtype (uint8, int8, int16, int32,
 * float32, float64) and dims. Errors name the file and the rule broken: wrong magic,
 * unknown dtype code, no dims, dims larger than the file can hold, truncated or
 * trailing data, corrupt gzip data. Nothing is allocated from the header's dims before
 * they are checked against the file's size. */
graft_status graft_idx_read(graft_tensor **out, const char *path);

#endif
