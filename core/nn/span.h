/* graft nn internals: the inner loops of the normalisation kernels, over one contiguous
 * span of float32 or float64 elements (a row, a channel plane, a group). Statistics
 * accumulate in double; element math stays in the span's type so the loops vectorise.
 * Each table entry is stamped out once per dtype by NN_SPAN_DEFINE in norm.c. */
#ifndef GRAFT_NN_SPAN_H
#define GRAFT_NN_SPAN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t esz;
    /* sum(p) */
    double (*sum)(const void *p, int64_t n);
    /* sum((p - mean)^2) */
    double (*sqdev)(const void *p, int64_t n, double mean);
    /* y = x * scale + shift */
    void (*affine)(void *y, const void *x, int64_t n, double scale, double shift);
    /* y = (x - mean) * rstd * w + b, w and b per element (either may be NULL) */
    void (*affine_w)(void *y, const void *x, const void *w, const void *b, int64_t n, double mean, double rstd);
    /* sg = sum(g w), sgx = sum(g w x); w per element or NULL (1) */
    void (*dot)(const void *g, const void *x, const void *w, int64_t n, double *sg, double *sgx);
    /* dx = s w g + b x + c; w per element or NULL (1) */
    void (*dx)(void *dx, const void *g, const void *x, const void *w, int64_t n, double s, double b, double c);
    /* dw += g (x - mean) rstd, db += g, per element (either may be NULL) */
    void (*accum)(double *dw, double *db, const void *g, const void *x, int64_t n, double mean, double rstd);
    /* columns of a row of n channels: acc[c] += p[c] */
    void (*col_sum)(double *acc, const void *p, int64_t n);
    /* acc[c] += (p[c] - mean[c])^2 */
    void (*col_sqdev)(double *acc, const void *p, const double *mean, int64_t n);
    /* y[c] = x[c] * scale[c] + shift[c] (scale and shift in the span's type) */
    void (*col_affine)(void *y, const void *x, const void *scale, const void *shift, int64_t n);
    /* sg[c] += g[c], sgx[c] += g[c] x[c] */
    void (*col_dot)(double *sg, double *sgx, const void *g, const void *x, int64_t n);
    /* dx[c] = s[c] g[c] + b[c] x[c] + c[c] (coefficients in the span's type) */
    void (*col_dx)(void *dx, const void *g, const void *x, const void *s, const void *b, const void *c, int64_t n);
} nn_span_ops;

extern const nn_span_ops nn_span_f32, nn_span_f64;

#endif
