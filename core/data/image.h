/* graft data: image files. PNG through libpng and JPEG through libjpeg(-turbo), both
 * from Debian, decoded into uint8 [H, W, C] tensors (C = 1 or 3), and PNG encoding for
 * writing image folders.
 *
 *     graft_tensor *img;
 *     if (graft_image_read(&img, "cat.jpg", 3))       // uint8 [H, W, 3]
 *         fprintf(stderr, "%s\n", graft_last_error());
 *     graft_png_write(img, "cat.png");
 *
 * The format comes from the bytes, never the name. Grayscale stays 1 channel, RGB 3;
 * palette images expand to RGB; alpha is dropped (as PIL's convert("RGB")); 16-bit
 * samples keep their high byte; CMYK JPEGs (Adobe's inverted form) become RGB.
 * `channels` = 1 or 3 converts (RGB to gray with PIL's ITU-R 601-2 luma, bit-exact;
 * gray to RGB by repetition); 0 keeps the file's.
 */
#ifndef GRAFT_DATA_IMAGE_H
#define GRAFT_DATA_IMAGE_H

#include <stddef.h>

#include "tensor/tensor.h"

/* Images above this many pixels are refused (PIL's decompression-bomb threshold). */
#define GRAFT_IMAGE_MAX_PIXELS INT64_C(89478485)

/* +1: uint8 [H, W, C] decoded from the n bytes at buf. `name` (a path, or NULL) is
 * named in errors: corrupt or truncated data, an unknown format, a size over the limit. */
graft_status graft_image_decode(graft_tensor **out, const void *buf, size_t n, int channels, const char *name);
/* +1: the image file at path, decoded as graft_image_decode. */
graft_status graft_image_read(graft_tensor **out, const char *path, int channels);

/* Writes t (uint8 [H, W, C] with C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, or [H, W]
 * gray; any layout) as a PNG file at path. A failed write removes the partial file. */
graft_status graft_png_write(graft_tensor *t, const char *path);

#endif
