/* graft data: PNG and JPEG decoding into uint8 [H, W, C] tensors, PNG encoding (see
 * image.h). Both libraries report errors by longjmp; each setjmp is confined to the one
 * function that calls the library, which frees everything it holds when it lands there,
 * so no jump ever crosses a graft or Lua frame.
 */
#include "image.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "checkpoint/io.h"

/* Deflate expands at most ~1032:1: a PNG of n bytes cannot hold more raw scanline bytes
 * than this (plus slack for tiny files and interlacing). */
#define IMG_DEFLATE_RATIO 1032u

static const char *img_name(const char *name) { return name ? name : "<memory>"; }

/* ---- PNG ---- */

typedef struct {
    const unsigned char *p;
    size_t n, pos;
    char msg[200];
} img_png_ctx;

static void img_png_error(png_structp png, png_const_charp msg) {
    img_png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void img_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void img_png_read(png_structp png, png_bytep out, size_t len) {
    img_png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos) png_error(png, "truncated: the data ends early");
    memcpy(out, c->p + c->pos, len);
    c->pos += len;
}

/* Why a pre-check on the sizes: a 100-byte PNG may declare 2^31 x 2^31 pixels; the
 * tensor is allocated only when the pixel count is under the limit and the compressed
 * bytes could hold that many scanlines. On success *out holds the file's own channels
 * (1 gray or 3 RGB: palettes expanded, alpha stripped, 16 bits cut to 8). */
static graft_status img_png_decode(graft_tensor **out, const unsigned char *buf, size_t n, const char *name) {
    img_png_ctx ctx = {.p = buf, .n = n};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, img_png_error, img_png_warning);
    if (!png) return graft_error(GRAFT_ENOMEM, "read_image: %s: out of memory (libpng)", img_name(name));
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return graft_error(GRAFT_ENOMEM, "read_image: %s: out of memory (libpng)", img_name(name));
    }
    graft_tensor *volatile t = NULL;
    png_bytep *volatile rows = NULL;
    graft_status st = GRAFT_OK;
    if (setjmp(png_jmpbuf(png))) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: corrupt PNG (%s)", img_name(name), ctx.msg);
        goto done;
    }
    png_set_read_fn(png, &ctx, img_png_read);
    png_set_user_limits(png, 1u << 24, 1u << 24);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
    uint64_t in_row = ((uint64_t)w * png_get_channels(png, info) * (uint64_t)depth + 7) / 8;
    if ((uint64_t)w * h > (uint64_t)GRAFT_IMAGE_MAX_PIXELS) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: PNG of %u x %u pixels is over the limit of %lld pixels",
                         img_name(name), (unsigned)w, (unsigned)h, (long long)GRAFT_IMAGE_MAX_PIXELS);
        goto done;
    }
    if ((uint64_t)h * (in_row + 1) > (uint64_t)IMG_DEFLATE_RATIO * n + 65536 + 8 * (uint64_t)h) {
        st = graft_error(GRAFT_EFORMAT,
                         "read_image: %s: corrupt PNG: %u x %u pixels need more data than its %zu bytes can hold",
                         img_name(name), (unsigned)w, (unsigned)h, n);
        goto done;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    if ((c != 1 && c != 3) || png_get_rowbytes(png, info) != (size_t)w * (size_t)c) {
        st = graft_error(GRAFT_EINTERNAL, "read_image: %s: unexpected PNG layout after transforms (%d channels)",
                         img_name(name), c);
        goto done;
    }
    int64_t shape[3] = {h, w, c};
    graft_tensor *tmp;
    if ((st = graft_tensor_empty(&tmp, 3, shape, GRAFT_U8, graft_cpu))) goto done;
    t = tmp;
    rows = malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!rows) {
        st = graft_error(GRAFT_ENOMEM, "read_image: %s: out of memory", img_name(name));
        goto done;
    }
    unsigned char *base = graft_tensor_data(t);
    for (png_uint_32 y = 0; y < h; y++) rows[y] = base + (size_t)y * w * (size_t)c;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    *out = t;
    t = NULL;
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    graft_tensor_release(t);
    return st;
}

/* ---- JPEG ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int eof;     /* libjpeg met the end of data early (and padded the image) */
} img_jpeg_err;

static void img_jpeg_exit(j_common_ptr cinfo) {
    img_jpeg_err *e = (img_jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are silent, except the premature end of data: PIL calls that a truncated
 * image, and so do we (libjpeg would hand back a half-gray picture). */
static void img_jpeg_emit(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    img_jpeg_err *e = (img_jpeg_err *)cinfo->err;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) e->eof = 1;
    cinfo->err->num_warnings++;
}

static void img_jpeg_output(j_common_ptr cinfo) { (void)cinfo; }

/* On success *out holds 1 (gray), 3 (RGB) or 4 (CMYK as stored) channels; *inverted
 * says whether CMYK values are Adobe's inverted ones. */
static graft_status img_jpeg_decode(graft_tensor **out, const unsigned char *buf, size_t n, const char *name,
                                    int *inverted) {
    struct jpeg_decompress_struct cinfo;
    img_jpeg_err err;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = img_jpeg_exit;
    err.pub.emit_message = img_jpeg_emit;
    err.pub.output_message = img_jpeg_output;
    graft_tensor *volatile t = NULL;
    graft_status st = GRAFT_OK;
    if (setjmp(err.jb)) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: corrupt JPEG (%s)", img_name(name), err.msg);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    uint64_t w = cinfo.image_width, h = cinfo.image_height;
    if (w * h > (uint64_t)GRAFT_IMAGE_MAX_PIXELS) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: JPEG of %llu x %llu pixels is over the limit of %lld pixels",
                         img_name(name), (unsigned long long)w, (unsigned long long)h, (long long)GRAFT_IMAGE_MAX_PIXELS);
        goto done;
    }
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) cinfo.out_color_space = JCS_GRAYSCALE;
    else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) cinfo.out_color_space = JCS_CMYK;
    else cinfo.out_color_space = JCS_RGB;
    *inverted = cinfo.saw_Adobe_marker;
    jpeg_start_decompress(&cinfo);
    int c = cinfo.output_components;
    if ((c != 1 && c != 3 && c != 4) || cinfo.output_width != w || cinfo.output_height != h) {
        st = graft_error(GRAFT_EINTERNAL, "read_image: %s: unexpected JPEG output (%d components)", img_name(name), c);
        goto done;
    }
    int64_t shape[3] = {(int64_t)h, (int64_t)w, c};
    graft_tensor *tmp;
    if ((st = graft_tensor_empty(&tmp, 3, shape, GRAFT_U8, graft_cpu))) goto done;
    t = tmp;
    unsigned char *base = graft_tensor_data(t);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = base + (size_t)cinfo.output_scanline * w * (size_t)c;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
    }
    if (err.eof || cinfo.output_scanline < cinfo.output_height) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: truncated JPEG (the data ends before the image does)",
                         img_name(name));
        goto done;
    }
    jpeg_finish_decompress(&cinfo);
    if (err.eof) {
        st = graft_error(GRAFT_EFORMAT, "read_image: %s: truncated JPEG (the data ends before the image does)",
                         img_name(name));
        goto done;
    }
    *out = t;
    t = NULL;
done:
    jpeg_destroy_decompress(&cinfo);
    graft_tensor_release(t);
    return st;
}

/* ---- channel conversion ---- */

/* PIL's MULDIV255: round(a * b / 255) with integers. */
static inline unsigned img_muldiv255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (t + (t >> 8)) >> 8;
}

/* +1: src (uint8 [H, W, cin], contiguous; cin = 1, 3 or 4 CMYK) as `want` channels
 * (1 or 3). RGB to gray is PIL's L = (19595 R + 38470 G + 7471 B + 2^15) >> 16;
 * CMYK to RGB is PIL's (R = (255 - C)(255 - K) / 255 on uninverted values). */
static graft_status img_convert(graft_tensor **out, graft_tensor *src, int want, int inverted) {
    int cin = (int)src->shape[2];
    int64_t shape[3] = {src->shape[0], src->shape[1], want};
    graft_status st = graft_tensor_empty(out, 3, shape, GRAFT_U8, graft_cpu);
    if (st) return st;
    int64_t npix = src->shape[0] * src->shape[1];
    const unsigned char *s = graft_tensor_data(src);
    unsigned char *d = graft_tensor_data(*out);
    if (cin == 4) { /* CMYK -> RGB (then maybe gray) */
        for (int64_t i = 0; i < npix; i++, s += 4) {
            unsigned k = inverted ? s[3] : 255u - s[3];
            unsigned rgb[3];
            for (int j = 0; j < 3; j++) rgb[j] = img_muldiv255(inverted ? s[j] : 255u - s[j], k);
            if (want == 3) {
                d[0] = (unsigned char)rgb[0]; d[1] = (unsigned char)rgb[1]; d[2] = (unsigned char)rgb[2];
                d += 3;
            } else {
                *d++ = (unsigned char)((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
            }
        }
    } else if (cin == 3 && want == 1) {
        for (int64_t i = 0; i < npix; i++, s += 3)
            d[i] = (unsigned char)((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
    } else if (cin == 1 && want == 3) {
        for (int64_t i = 0; i < npix; i++, d += 3) d[0] = d[1] = d[2] = s[i];
    } else {
        memcpy(d, s, (size_t)npix * (size_t)cin);
    }
    return GRAFT_OK;
}

/* ---- the entry points ---- */

graft_status graft_image_decode(graft_tensor **out, const void *buf, size_t n, int channels, const char *name) {
    *out = NULL;
    if (channels != 0 && channels != 1 && channels != 3)
        return graft_error(GRAFT_EINVAL, "read_image: channels must be 1, 3 or 0 (as in the file), got %d", channels);
    const unsigned char *p = buf;
    graft_tensor *raw = NULL;
    graft_status st;
    int inverted = 0;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 8 && memcmp(p, png_sig, 8) == 0) {
        st = img_png_decode(&raw, p, n, name);
    } else if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) {
        st = img_jpeg_decode(&raw, p, n, name, &inverted);
    } else if (n == 0) {
        return graft_error(GRAFT_EFORMAT, "read_image: %s: empty file", img_name(name));
    } else {
        return graft_error(GRAFT_EFORMAT, "read_image: %s: not a PNG or JPEG image (it starts with %02x %02x %02x %02x)",
                           img_name(name), p[0], n > 1 ? p[1] : 0, n > 2 ? p[2] : 0, n > 3 ? p[3] : 0);
    }
    if (st) return st;
    int have = (int)raw->shape[2];
    if (have == 4 || (channels != 0 && channels != have)) {
        st = img_convert(out, raw, channels ? channels : 3, inverted);
        graft_tensor_release(raw);
        return st;
    }
    *out = raw;
    return GRAFT_OK;
}

graft_status graft_image_read(graft_tensor **out, const char *path, int channels) {
    *out = NULL;
    graft_mapped_file m;
    if (graft_mapped_open(&m, path)) {
        char why[512];
        snprintf(why, sizeof why, "%s", graft_last_error());
        return graft_error(GRAFT_EIO, "read_image: %s", why);
    }
    char name[1100];
    snprintf(name, sizeof name, "\"%s\"", path);
    graft_status st = graft_image_decode(out, m.data, m.size, channels, name);
    graft_mapped_close(&m);
    return st;
}

/* A failed write (a full disk, a libpng error) removes the partial file. */
graft_status graft_png_write(graft_tensor *t, const char *path) {
    if (t->dtype != GRAFT_U8)
        return graft_error(GRAFT_ETYPE, "save_png: expected a uint8 tensor, got %s", graft_dtype_name(t->dtype));
    if (t->ndim != 2 && t->ndim != 3)
        return graft_error(GRAFT_ESHAPE, "save_png: expected [H, W] or [H, W, C], got %d dims", t->ndim);
    int64_t h = t->shape[0], w = t->shape[1], c = t->ndim == 3 ? t->shape[2] : 1;
    if (c < 1 || c > 4)
        return graft_error(GRAFT_ESHAPE, "save_png: expected 1, 2, 3 or 4 channels (the last dim), got %lld", (long long)c);
    if (h < 1 || w < 1 || h > (1 << 24) || w > (1 << 24))
        return graft_error(GRAFT_ESHAPE, "save_png: image of %lld x %lld pixels cannot be written", (long long)w,
                           (long long)h);
    graft_tensor *ct = NULL;
    graft_status st = graft_tensor_contiguous(&ct, t);
    if (st) return st;
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!rows) {
        graft_tensor_release(ct);
        return graft_error(GRAFT_ENOMEM, "save_png: out of memory");
    }
    unsigned char *base = graft_tensor_data(ct);
    for (int64_t y = 0; y < h; y++) rows[y] = base + (size_t)y * (size_t)w * (size_t)c;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        st = graft_error(GRAFT_EIO, "save_png: cannot open \"%s\" for writing: %s", path, strerror(errno));
        free(rows);
        graft_tensor_release(ct);
        return st;
    }
    img_png_ctx ctx = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, img_png_error, img_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    volatile bool written = false;
    if (!info) {
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory");
    } else if (setjmp(png_jmpbuf(png)) == 0) {
        static const int ctypes[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                      PNG_COLOR_TYPE_RGB_ALPHA};
        png_init_io(png, fp);
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, ctypes[c], PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        png_write_image(png, rows);
        png_write_end(png, NULL);
        written = true;
    }
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    free(rows);
    graft_tensor_release(ct);
    int closed = fclose(fp);
    if (!written || closed != 0) {
        int e = errno;
        remove(path);
        return graft_error(GRAFT_EIO, "save_png: cannot write \"%s\": %s", path, written ? strerror(e) : ctx.msg);
    }
    return GRAFT_OK;
}
