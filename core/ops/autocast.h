/* graft ops: autocast (automatic mixed precision), PyTorch's torch.autocast.
 *
 * A thread-local mode: while it is on, the ops of PyTorch's "lower precision" list
 * (matmul, mm, bmm, mv, addmm, baddbmm, linear, conv, scaled_dot_product_attention)
 * cast their floating inputs (not float64) to the autocast dtype, float16 or bfloat16,
 * and return results in it; the ops of the "float32" list cast 16-bit inputs up to
 * float32; "promote" ops (dot, bilinear) cast to the widest input dtype. Casts are
 * recorded (ToCopyBackward0), so gradients reach the float32 leaves in float32. The
 * cast of a leaf that requires grad (a weight) is cached until the outermost autocast
 * region ends, as PyTorch does, so a weight used twice is converted once.
 *
 * A front end wraps itself with one branch before its autograd branch:
 *
 *     if (GRAFT_AUTOCAST_ACTIVE()) {
 *         graft_autocast_scope sc;
 *         graft_tensor *ts[2] = {a, b};
 *         graft_status st = graft_autocast_begin(&sc, ts, 2, GRAFT_AUTOCAST_LOWER);
 *         if (st) return st;
 *         st = graft_linalg_mm(out, ts[0], ts[1]);   // autocast is suspended inside
 *         graft_autocast_end(&sc);
 *         return st;
 *     }
 */
#ifndef GRAFT_AUTOCAST_H
#define GRAFT_AUTOCAST_H

#include "tensor/tensor.h"

typedef struct {
    bool enabled;
    graft_dtype dtype;      /* GRAFT_F16 or GRAFT_BF16 */
    int device_type;        /* GRAFT_CPU or GRAFT_CUDA: tensors on that device only; -1: every device */
} graft_autocast_mode;

/* True while a mode is enabled and not suspended (read by GRAFT_AUTOCAST_ACTIVE). */
extern _Thread_local bool graft_autocast_flag;
#define GRAFT_AUTOCAST_ACTIVE() __builtin_expect(graft_autocast_flag, 0)

graft_autocast_mode graft_autocast_get(void);
/* Sets the mode and returns the previous one (callers restore it). An enabled mode
 * needs dtype float16 or bfloat16 (GRAFT_EINVAL naming "autocast" otherwise; nothing
 * changes then). */
graft_status graft_autocast_set(graft_autocast_mode m, graft_autocast_mode *prev);
/* Drops the cached casts of leaves (the bindings call it when the outermost region ends). */
void graft_autocast_clear_cache(void);

typedef enum {
    GRAFT_AUTOCAST_LOWER,     /* float32 (and the other 16-bit type) -> the autocast dtype */
    GRAFT_AUTOCAST_FP32,      /* float16 / bfloat16 -> float32 */
    GRAFT_AUTOCAST_PROMOTE    /* every floating input -> the widest of them */
} graft_autocast_policy;

#define GRAFT_AUTOCAST_MAX_INPUTS 6
typedef struct {
    graft_tensor *held[GRAFT_AUTOCAST_MAX_INPUTS];
    int n;
    bool was_on;
} graft_autocast_scope;

/* Casts ts[0..n) by policy in place of the caller's borrowed pointers (NULL entries
 * and non-floating tensors are left alone; the scope holds the casts), then suspends
 * autocast so the op runs once, as given. graft_autocast_end releases and resumes. On
 * error nothing is held and the mode is unchanged. n <= GRAFT_AUTOCAST_MAX_INPUTS. */
graft_status graft_autocast_begin(graft_autocast_scope *s, graft_tensor **ts, int n, graft_autocast_policy p);
void graft_autocast_end(graft_autocast_scope *s);

/* One line for a front end of the float32 list, first in its body: when autocast is on
 * and x (a parameter of the function) is a 16-bit tensor autocast covers, returns
 * `call` (the same function re-entered) run with x cast to float32:
 *
 *     graft_status graft_nn_layer_norm(graft_tensor **out, graft_tensor *x, ...) {
 *         GRAFT_AUTOCAST_FP32(x, graft_nn_layer_norm(out, x, ...));
 *
 * GRAFT_AUTOCAST_FP32_2 does the same for two tensors (a loss's input and target). */
bool graft_autocast_wants_fp32(const graft_tensor *t);
#define GRAFT_AUTOCAST_FP32(x, call)                                                            \
    do {                                                                                        \
        if (GRAFT_AUTOCAST_ACTIVE() && graft_autocast_wants_fp32(x)) {                          \
            graft_autocast_scope ac_sc_;                                                        \
            graft_tensor *ac_ts_[1] = {(x)};                                                    \
            graft_status ac_st_ = graft_autocast_begin(&ac_sc_, ac_ts_, 1, GRAFT_AUTOCAST_FP32); \
            if (ac_st_) return ac_st_;                                                          \
            (x) = ac_ts_[0];                                                                    \
            ac_st_ = (call);                                                                    \
            graft_autocast_end(&ac_sc_);                                                        \
            return ac_st_;                                                                      \
        }                                                                                       \
    } while (0)
#define GRAFT_AUTOCAST_FP32_2(x, y, call)                                                       \
    do {                                                                                        \
        if (GRAFT_AUTOCAST_ACTIVE() && (graft_autocast_wants_fp32(x) || graft_autocast_wants_fp32(y))) { \
            graft_autocast_scope ac_sc_;                                                        \
            graft_tensor *ac_ts_[2] = {(x), (y)};                                               \
            graft_status ac_st_ = graft_autocast_begin(&ac_sc_, ac_ts_, 2, GRAFT_AUTOCAST_FP32); \
            if (ac_st_) return ac_st_;                                                          \
            (x) = ac_ts_[0];                                                                    \
            (y) = ac_ts_[1];                                                                    \
            ac_st_ = (call);                                                                    \
            graft_autocast_end(&ac_sc_);                                                        \
            return ac_st_;                                                                      \
        }                                                                                       \
    } while (0)

#endif
