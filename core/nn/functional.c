/* graft nn: the composite functional ops (linear, bilinear and attention are made of
 * matmul, views, softmax and masks, so they record through those ops), embedding with
 * its fused backward, one_hot, and the helpers the other core/nn files share. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/record_nn.h"
#include "cuda/nn_loss.h"
#include "nn/kernels.h"
#include "ops/autocast.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/view.h"
#include "tensor/iter.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHAPE_BUF GRAFT_NN_SHAPE_BUF

graft_status graft_nn_check_float(const graft_tensor *t, const char *op, const char *what) {
    if (t->dtype == GRAFT_F32 || t->dtype == GRAFT_F64) return GRAFT_OK;
    return graft_error(GRAFT_ETYPE, "%s: expected a float32 or float64 %s, got %s", op, what, graft_dtype_name(t->dtype));
}

graft_status graft_nn_half_up(graft_tensor **ts, int n, graft_tensor **held) {
    for (int i = 0; i < n; i++) {
        if (!graft_nn_is_half(ts[i])) continue;
        graft_status st = graft_ag_to_dtype(&held[i], ts[i], GRAFT_F32);
        if (st) {
            graft_nn_half_release(held, n);
            return st;
        }
        ts[i] = held[i];
    }
    return GRAFT_OK;
}

void graft_nn_half_release(graft_tensor **held, int n) {
    for (int i = 0; i < n; i++) {
        graft_tensor_release(held[i]);
        held[i] = NULL;
    }
}

graft_status graft_nn_half_back(graft_tensor **out, graft_tensor *r, graft_dtype d) {
    graft_status st = graft_ag_to_dtype(out, r, d);
    graft_tensor_release(r);
    return st;
}

graft_status graft_nn_contig_as(graft_tensor **out, graft_tensor *t, graft_dtype d) {
    *out = NULL;
    if (!t) return GRAFT_OK;
    graft_tensor *c;
    graft_status st = graft_tensor_to_dtype(&c, t, d);
    if (st) return st;
    st = graft_tensor_contiguous(out, c);
    graft_tensor_release(c);
    return st;
}

/* ======================================================================== */
/* linear, bilinear                                                          */
/* ======================================================================== */

/* y = x w^T + b as one addmm over x flattened to [rows, in] (a view when x allows it);
 * 2-D inputs record AddmmBackward0 as in PyTorch. On CUDA the addmm is one cuBLAS call
 * reading w^T in place (the bias is copied into the output first, beta = 1). Under
 * autocast x, w and b are cast here, so w's cast (a leaf's) comes from the cache. */
graft_status graft_nn_linear(graft_tensor **out, graft_tensor *x, graft_tensor *w, graft_tensor *b) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF];
    *out = NULL;
    if (GRAFT_AUTOCAST_ACTIVE()) {
        graft_autocast_scope sc;
        graft_tensor *ts[3] = {x, w, b};
        graft_status st = graft_autocast_begin(&sc, ts, 3, GRAFT_AUTOCAST_LOWER);
        if (st) return st;
        st = graft_nn_linear(out, ts[0], ts[1], ts[2]);
        graft_autocast_end(&sc);
        return st;
    }
    graft_tensor *devs[3] = {x, w, b};
    graft_status dst = graft_nn_same_device("linear", 3, devs);
    if (dst) return dst;
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return graft_error(GRAFT_ESHAPE, "linear: input %s does not match weight %s (expected an input of shape [*, %lld])",
                           graft_shape_str(x->ndim, x->shape, s1, sizeof s1), graft_shape_str(w->ndim, w->shape, s2, sizeof s2),
                           (long long)(w->ndim == 2 ? w->shape[1] : -1));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return graft_error(GRAFT_ESHAPE, "linear: bias %s does not match weight %s (expected [%lld])",
                           graft_shape_str(b->ndim, b->shape, s1, sizeof s1), graft_shape_str(w->ndim, w->shape, s2, sizeof s2),
                           (long long)w->shape[0]);
    if (x->dtype != w->dtype || (b && b->dtype != x->dtype))
        return graft_error(GRAFT_ETYPE, "linear: input is %s, weight %s%s%s (they must match)", graft_dtype_name(x->dtype),
                           graft_dtype_name(w->dtype), b ? ", bias " : "", b ? graft_dtype_name(b->dtype) : "");
    graft_tensor *wt = NULL, *x2 = NULL, *y2 = NULL;
    graft_status st = graft_transpose(&wt, w, 0, 1);
    if (st) return st;
    int64_t in = w->shape[1], nout = w->shape[0];
    if (x->ndim == 2) {
        x2 = x;
        graft_tensor_retain(x2);
    } else {
        int64_t rows = in ? graft_tensor_numel(x) / in : 0;
        int64_t sh[2] = {x->ndim == 1 ? 1 : rows, in};
        if ((st = graft_reshape(&x2, x, 2, sh))) goto done;
    }
    st = b ? graft_linalg_addmm(&y2, b, x2, wt, 1.0, 1.0) : graft_linalg_mm(&y2, x2, wt);
    if (st) goto done;
    if (x->ndim == 2) {
        *out = y2;
        y2 = NULL;
    } else {
        int64_t sh[GRAFT_MAX_DIMS];
        int nd = x->ndim;
        memcpy(sh, x->shape, sizeof(int64_t) * (size_t)nd);
        sh[nd - 1] = nout;
        st = graft_reshape(out, y2, nd, sh);
    }
done:
    graft_tensor_release(wt);
    graft_tensor_release(x2);
    graft_tensor_release(y2);
    return st;
}

/* y[n, o] = sum_ij x1[n, i] W[o, i, j] x2[n, j] + b[o], as
 * t = x1 @ W.permute(1, 0, 2).reshape(in1, out * in2), then (t.view(n, out, in2) * x2[:, None, :]).sum(-1). */
graft_status graft_nn_bilinear(graft_tensor **out, graft_tensor *x1, graft_tensor *x2, graft_tensor *w,
                               graft_tensor *b) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF], s3[SHAPE_BUF];
    *out = NULL;
    if (GRAFT_AUTOCAST_ACTIVE()) { /* PyTorch's "promote" list: the widest input dtype */
        graft_autocast_scope sc;
        graft_tensor *ts[4] = {x1, x2, w, b};
        graft_status st = graft_autocast_begin(&sc, ts, 4, GRAFT_AUTOCAST_PROMOTE);
        if (st) return st;
        st = graft_nn_bilinear(out, ts[0], ts[1], ts[2], ts[3]);
        graft_autocast_end(&sc);
        return st;
    }
    graft_tensor *devs[4] = {x1, x2, w, b};
    graft_status dst = graft_nn_same_device("bilinear", 4, devs);
    if (dst) return dst;
    bool ok = w->ndim == 3 && x1->ndim >= 1 && x1->ndim == x2->ndim && x1->shape[x1->ndim - 1] == w->shape[1] &&
              x2->shape[x2->ndim - 1] == w->shape[2];
    for (int d = 0; ok && d < x1->ndim - 1; d++) ok = x1->shape[d] == x2->shape[d];
    if (!ok)
        return graft_error(GRAFT_ESHAPE, "bilinear: input1 %s and input2 %s do not match weight %s (expected [*, in1], "
                           "[*, in2] and [out, in1, in2])",
                           graft_shape_str(x1->ndim, x1->shape, s1, sizeof s1),
                           graft_shape_str(x2->ndim, x2->shape, s2, sizeof s2),
                           graft_shape_str(w->ndim, w->shape, s3, sizeof s3));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return graft_error(GRAFT_ESHAPE, "bilinear: bias %s does not match weight %s (expected [%lld])",
                           graft_shape_str(b->ndim, b->shape, s1, sizeof s1), graft_shape_str(w->ndim, w->shape, s2, sizeof s2),
                           (long long)w->shape[0]);
    int64_t O = w->shape[0], I1 = w->shape[1], I2 = w->shape[2];
    int64_t rows = I1 ? graft_tensor_numel(x1) / I1 : 0;
    graft_tensor *a = NULL, *c = NULL, *wp = NULL, *wr = NULL, *t = NULL, *t3 = NULL, *prod = NULL,
                 *s = NULL, *sb = NULL;
    int perm[3] = {1, 0, 2}, last = 2;
    int64_t sa[2] = {rows, I1}, sc[3] = {rows, 1, I2}, swr[2] = {I1, O * I2}, st3[3] = {rows, O, I2};
    graft_status st;
    if ((st = graft_reshape(&a, x1, 2, sa)) || (st = graft_reshape(&c, x2, 3, sc)) ||
        (st = graft_permute(&wp, w, perm, 3)) || (st = graft_reshape(&wr, wp, 2, swr)) ||
        (st = graft_linalg_mm(&t, a, wr)) || (st = graft_reshape(&t3, t, 3, st3)) || (st = graft_mul(&prod, t3, c)) ||
        (st = graft_reduce_sum(&s, prod, &last, 1, false, -1)))
        goto done;
    if (b && (st = graft_add(&sb, s, b))) goto done;
    int64_t sh[GRAFT_MAX_DIMS];
    memcpy(sh, x1->shape, sizeof(int64_t) * (size_t)x1->ndim);
    sh[x1->ndim - 1] = O;
    st = graft_reshape(out, sb ? sb : s, x1->ndim, sh);
done:
    graft_tensor_release(a);
    graft_tensor_release(c);
    graft_tensor_release(wp);
    graft_tensor_release(wr);
    graft_tensor_release(t);
    graft_tensor_release(t3);
    graft_tensor_release(prod);
    graft_tensor_release(s);
    graft_tensor_release(sb);
    return st;
}

/* ======================================================================== */
/* embedding                                                                 */
/* ======================================================================== */

static graft_status em_check(graft_tensor *index, graft_tensor *weight, int64_t padding_idx) {
    char s[SHAPE_BUF];
    if (weight->ndim != 2)
        return graft_error(GRAFT_ESHAPE, "embedding: weight must be 2-D [num_embeddings, embedding_dim], got %s",
                           graft_shape_str(weight->ndim, weight->shape, s, sizeof s));
    if (!graft_dtype_is_int(index->dtype))
        return graft_error(GRAFT_ETYPE, "embedding: expected an integer index tensor, got %s", graft_dtype_name(index->dtype));
    if (index->ndim + 1 > GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "embedding: index has too many dims");
    if (padding_idx < -1 || padding_idx >= weight->shape[0])
        return graft_error(GRAFT_EINDEX, "embedding: padding_idx %lld is out of range for %lld embeddings",
                           (long long)padding_idx, (long long)weight->shape[0]);
    return GRAFT_OK;
}

static graft_status em_forward(graft_tensor **out, graft_tensor *index, graft_tensor *weight, int64_t padding_idx) {
    *out = NULL;
    graft_status st = em_check(index, weight, padding_idx);
    if (st) return st;
    graft_tensor *idx = NULL, *wc = NULL;
    int64_t num = weight->shape[0], D = weight->shape[1], n = graft_tensor_numel(index);
    int64_t sh[GRAFT_MAX_DIMS];
    memcpy(sh, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    sh[index->ndim] = D;
    graft_tensor *ts[2] = {weight, index};
    graft_device dev = graft_tensor_device(weight);
    if ((st = graft_nn_same_device("embedding", 2, ts)) || (st = graft_nn_contig_as(&idx, index, GRAFT_I64)) ||
        (st = graft_tensor_contiguous(&wc, weight)))
        goto done;
    if (dev.type == GRAFT_CUDA) {
        int64_t bad = INT64_MIN;
        if ((st = graft_tensor_empty(out, index->ndim + 1, sh, weight->dtype, dev)) ||
            (st = graft_cuda_nn_embedding_forward(*out, &bad, wc, idx)))
            goto done;
        if (bad != INT64_MIN)
            st = graft_error(GRAFT_EINDEX, "embedding: index %lld is out of range for %lld embeddings", (long long)bad,
                             (long long)num);
        goto done;
    }
    const int64_t *ip = graft_tensor_data(idx);
    for (int64_t i = 0; i < n; i++)
        if (ip[i] < 0 || ip[i] >= num) {
            st = graft_error(GRAFT_EINDEX, "embedding: index %lld is out of range for %lld embeddings", (long long)ip[i],
                             (long long)num);
            goto done;
        }
    if ((st = graft_tensor_empty(out, index->ndim + 1, sh, weight->dtype, graft_cpu))) goto done;
    size_t row = (size_t)D * graft_dtype_size(weight->dtype);
    char *o = graft_tensor_data(*out);
    const char *w = graft_tensor_data(wc);
    #pragma omp parallel for if (graft_should_parallelize(n * D)) schedule(static)
    for (int64_t i = 0; i < n; i++) memcpy(o + (size_t)i * row, w + (size_t)ip[i] * row, row);
done:
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(idx);
    graft_tensor_release(wc);
    return st;
}

/* dW[index[i]] += g[i] for every i whose index is not padding_idx; threads own bands of
 * columns, so no two write one element. */
#define EM_BACKWARD(T, SUF)                                                                          \
    static void em_backward_##SUF(T *dw, const T *g, const int64_t *ip, int64_t n, int64_t D, int64_t pad) { \
        int nt = 1;                                                                                  \
        if (graft_should_parallelize(n * D) && D >= 64) nt = graft_get_num_threads();                \
        _Pragma("omp parallel num_threads(nt) if (nt > 1)")                                         \
        {                                                                                            \
            int t = 0, T_ = 1;                                                                       \
            EM_THREAD(t, T_);                                                                        \
            int64_t c0 = D * t / T_, c1 = D * (t + 1) / T_;                                          \
            for (int64_t i = 0; i < n; i++) {                                                        \
                if (ip[i] == pad) continue;                                                          \
                T *dr = dw + ip[i] * D;                                                              \
                const T *gr = g + i * D;                                                             \
                _Pragma("omp simd") for (int64_t c = c0; c < c1; c++) dr[c] += gr[c];                \
            }                                                                                        \
        }                                                                                            \
    }
#ifdef _OPENMP
#define EM_THREAD(t, T_) (t = omp_get_thread_num(), T_ = omp_get_num_threads())
#else
#define EM_THREAD(t, T_) ((void)0)
#endif
EM_BACKWARD(float, f32)
EM_BACKWARD(double, f64)

graft_status graft_nn_embedding_backward(graft_tensor **dw, graft_tensor *g, graft_tensor *index, int64_t num,
                                         int64_t padding_idx) {
    graft_tensor *gc = NULL, *idx = NULL;
    graft_tensor *ts[2] = {g, index};
    graft_device dev = graft_tensor_device(g);
    *dw = NULL;
    int64_t D = g->shape[g->ndim - 1], n = graft_tensor_numel(index);
    int64_t sh[2] = {num, D};
    graft_status st;
    if (g->dtype != GRAFT_F32 && g->dtype != GRAFT_F64)
        return graft_error(GRAFT_ETYPE, "embedding backward: expected a float32 or float64 gradient, got %s",
                           graft_dtype_name(g->dtype));
    if ((st = graft_nn_same_device("embedding backward", 2, ts)) || (st = graft_tensor_contiguous(&gc, g)) ||
        (st = graft_nn_contig_as(&idx, index, GRAFT_I64)) || (st = graft_tensor_empty(dw, 2, sh, g->dtype, dev)) ||
        (st = graft_tensor_fill_int_(*dw, 0)))
        goto done;
    if (dev.type == GRAFT_CUDA) st = graft_cuda_nn_embedding_backward(*dw, gc, idx, padding_idx);
    else if (g->dtype == GRAFT_F64) em_backward_f64(graft_tensor_data(*dw), graft_tensor_data(gc), graft_tensor_data(idx), n, D, padding_idx);
    else em_backward_f32(graft_tensor_data(*dw), graft_tensor_data(gc), graft_tensor_data(idx), n, D, padding_idx);
done:
    if (st) {
        graft_tensor_release(*dw);
        *dw = NULL;
    }
    graft_tensor_release(gc);
    graft_tensor_release(idx);
    return st;
}

graft_status graft_nn_embedding(graft_tensor **out, graft_tensor *index, graft_tensor *weight, int64_t padding_idx) {
    if (GRAFT_AG_ACTIVE(weight->autograd)) return graft_ag_nn_embedding(out, index, weight, padding_idx);
    return em_forward(out, index, weight, padding_idx);
}

graft_status graft_nn_embedding_forward(graft_tensor **out, graft_tensor *index, graft_tensor *weight,
                                        int64_t padding_idx) {
    return em_forward(out, index, weight, padding_idx);
}

/* ======================================================================== */
/* one_hot                                                                   */
/* ======================================================================== */

graft_status graft_nn_one_hot(graft_tensor **out, graft_tensor *index, int64_t num_classes) {
    *out = NULL;
    if (index->dtype != GRAFT_I64)
        return graft_error(GRAFT_ETYPE, "one_hot: expected an int64 index tensor, got %s", graft_dtype_name(index->dtype));
    if (index->ndim + 1 > GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "one_hot: index has too many dims");
    graft_tensor *idx = NULL;
    graft_device dev = graft_tensor_device(index);
    graft_status st = graft_tensor_contiguous(&idx, index);
    if (st) return st;
    int64_t n = graft_tensor_numel(idx), mx = -1;
    const int64_t *ip = dev.type == GRAFT_CUDA ? NULL : graft_tensor_data(idx);
    if (dev.type == GRAFT_CUDA) {
        /* the smallest and largest class come back from the device (one small copy) */
        int64_t mn = 0;
        if ((st = graft_cuda_nn_index_range(&mn, &mx, idx))) goto done;
        if (mn < 0) {
            st = graft_error(GRAFT_EINDEX, "one_hot: class values must be non-negative, got %lld", (long long)mn);
            goto done;
        }
    }
    for (int64_t i = 0; ip && i < n; i++) {
        if (ip[i] < 0) {
            st = graft_error(GRAFT_EINDEX, "one_hot: class values must be non-negative, got %lld", (long long)ip[i]);
            goto done;
        }
        if (ip[i] > mx) mx = ip[i];
    }
    if (num_classes == -1) {
        if (n == 0) {
            st = graft_error(GRAFT_EINVAL, "one_hot: can not infer the total number of classes from an empty tensor");
            goto done;
        }
        num_classes = mx + 1;
    } else if (num_classes < 0) {
        st = graft_error(GRAFT_EINVAL, "one_hot: num_classes must be positive or -1, got %lld", (long long)num_classes);
        goto done;
    } else if (mx >= num_classes) {
        st = graft_error(GRAFT_EINDEX, "one_hot: class values must be smaller than num_classes (got %lld for %lld classes)",
                         (long long)mx, (long long)num_classes);
        goto done;
    }
    int64_t sh[GRAFT_MAX_DIMS];
    memcpy(sh, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    sh[index->ndim] = num_classes;
    if ((st = graft_tensor_empty(out, index->ndim + 1, sh, GRAFT_I64, dev)) || (st = graft_tensor_fill_int_(*out, 0)))
        goto done;
    if (dev.type == GRAFT_CUDA) {
        st = graft_cuda_nn_one_hot(*out, idx, num_classes);
        goto done;
    }
    int64_t *o = graft_tensor_data(*out);
    for (int64_t i = 0; i < n; i++) o[i * num_classes + ip[i]] = 1;
done:
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(idx);
    return st;
}

/* ======================================================================== */
/* scaled_dot_product_attention                                              */
/* ======================================================================== */

/* +1: bool [L, S] on dev, true where j > i (the positions a causal mask removes); made
 * on the host and copied. */
static graft_status sdpa_causal(graft_tensor **out, int64_t L, int64_t S, graft_device dev) {
    int64_t sh[2] = {L, S};
    graft_tensor *h = NULL;
    graft_status st = graft_tensor_empty(&h, 2, sh, GRAFT_BOOL, graft_cpu);
    if (st) return st;
    uint8_t *m = graft_tensor_data(h);
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < S; j++) m[i * S + j] = j > i;
    if (dev.type == GRAFT_CPU) {
        *out = h;
        return GRAFT_OK;
    }
    if (!(st = graft_tensor_empty(out, 2, sh, GRAFT_BOOL, dev)) && (st = graft_tensor_copy_(*out, h))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(h);
    return st;
}

static graft_status sdpa_check_float(const graft_tensor *t, const char *op, const char *what) {
    if (graft_dtype_is_float(t->dtype)) return GRAFT_OK;
    return graft_error(GRAFT_ETYPE, "%s: expected a floating point %s, got %s", op, what, graft_dtype_name(t->dtype));
}

graft_status graft_nn_scaled_dot_product_attention(graft_tensor **out, graft_tensor *q, graft_tensor *k,
                                                   graft_tensor *v, graft_tensor *mask, double dropout_p,
                                                   bool is_causal) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF], s3[SHAPE_BUF];
    const char *op = "scaled_dot_product_attention";
    *out = NULL;
    graft_status st;
    if (GRAFT_AUTOCAST_ACTIVE()) {
        graft_autocast_scope sc;
        graft_tensor *ts[4] = {q, k, v, mask};
        if ((st = graft_autocast_begin(&sc, ts, 4, GRAFT_AUTOCAST_LOWER))) return st;
        st = graft_nn_scaled_dot_product_attention(out, ts[0], ts[1], ts[2], ts[3], dropout_p, is_causal);
        graft_autocast_end(&sc);
        return st;
    }
    graft_tensor *devs[4] = {q, k, v, mask};
    if ((st = graft_nn_same_device(op, 4, devs))) return st;
    if ((st = sdpa_check_float(q, op, "query")) || (st = sdpa_check_float(k, op, "key")) ||
        (st = sdpa_check_float(v, op, "value")))
        return st;
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2 || q->shape[q->ndim - 1] != k->shape[k->ndim - 1] ||
        k->shape[k->ndim - 2] != v->shape[v->ndim - 2])
        return graft_error(GRAFT_ESHAPE, "%s: query %s, key %s and value %s do not fit (expected [*, L, E], [*, S, E] "
                           "and [*, S, Ev])", op, graft_shape_str(q->ndim, q->shape, s1, sizeof s1),
                           graft_shape_str(k->ndim, k->shape, s2, sizeof s2), graft_shape_str(v->ndim, v->shape, s3, sizeof s3));
    if (is_causal && mask)
        return graft_error(GRAFT_EINVAL, "%s: attn_mask must not be given together with is_causal = true", op);
    if (mask && mask->dtype != GRAFT_BOOL && !graft_dtype_is_float(mask->dtype))
        return graft_error(GRAFT_ETYPE, "%s: attn_mask must be bool or floating point, got %s", op,
                           graft_dtype_name(mask->dtype));
    if (!(dropout_p >= 0 && dropout_p <= 1))
        return graft_error(GRAFT_EINVAL, "%s: dropout_p must be between 0 and 1, got %g", op, dropout_p);
    int64_t L = q->shape[q->ndim - 2], S = k->shape[k->ndim - 2], E = q->shape[q->ndim - 1];
    graft_tensor *kt = NULL, *sc = NULL, *scaled = NULL, *masked = NULL, *m = NULL, *p = NULL, *pd = NULL, *p32 = NULL;
    if ((st = graft_transpose(&kt, k, k->ndim - 2, k->ndim - 1)) || (st = graft_linalg_matmul(&sc, q, kt)) ||
        (st = graft_mul_scalar(&scaled, sc, 1.0 / sqrt((double)E))))
        goto done;
    graft_tensor *cur = scaled;
    graft_ix_value ninf = {false, 0, -INFINITY};
    if (is_causal) {
        if ((st = sdpa_causal(&m, L, S, graft_tensor_device(q))) || (st = graft_masked_fill(&masked, cur, m, ninf)))
            goto done;
        cur = masked;
    } else if (mask && mask->dtype == GRAFT_BOOL) {
        if ((st = graft_unary(&m, GRAFT_EW_LOGICAL_NOT, mask)) || (st = graft_masked_fill(&masked, cur, m, ninf))) goto done;
        cur = masked;
    } else if (mask) {
        if ((st = graft_add(&masked, cur, mask))) goto done;
        cur = masked;
    }
    if (cur->dtype == GRAFT_F16 || cur->dtype == GRAFT_BF16) {
        /* 16-bit scores: the softmax in float32, rounded once (recorded conversions) */
        if ((st = graft_nn_softmax(&p32, cur, cur->ndim - 1, GRAFT_F32)) ||
            (st = graft_ag_to_dtype(&p, p32, cur->dtype)))
            goto done;
    } else if ((st = graft_nn_softmax(&p, cur, cur->ndim - 1, -1))) {
        goto done;
    }
    cur = p;
    if (dropout_p > 0) {
        if ((st = graft_nn_dropout(&pd, p, dropout_p, true))) goto done;
        cur = pd;
    }
    st = graft_linalg_matmul(out, cur, v);
done:
    graft_tensor_release(kt);
    graft_tensor_release(sc);
    graft_tensor_release(scaled);
    graft_tensor_release(masked);
    graft_tensor_release(m);
    graft_tensor_release(p);
    graft_tensor_release(pd);
    graft_tensor_release(p32);
    return st;
}
