/* graft ops: elementwise arithmetic, comparisons, logical ops, unary math, clamp and
 * where, with PyTorch 1.13's broadcasting and type promotion (torch.result_type).
 *
 * An operand is a tensor or a scalar (a Lua number or boolean): scalars take part in
 * promotion with the lowest priority, as PyTorch's "wrapped numbers" do.
 *
 *     graft_tensor *c;
 *     graft_operand two = graft_operand_int(2);
 *     if (graft_binary(&c, GRAFT_EW_MUL, graft_operand_tensor(a), two, NULL) != GRAFT_OK)
 *         fprintf(stderr, "%s\n", graft_last_error());   // "mul: ..."
 *
 * Out-of-place functions hand out +1 reference to a fresh contiguous tensor; the `_`
 * variants write into self (any layout), which must already have the broadcast shape
 * and a dtype the result type can be cast to. Arguments are borrowed.
 */
#ifndef GRAFT_OPS_ELEMENTWISE_H
#define GRAFT_OPS_ELEMENTWISE_H

#include "tensor/tensor.h"

/* ---- the op lists: one row per op, X(ENUM, "name") ---- */
#define GRAFT_BINARY_OPS(X)                                                               \
    X(ADD, "add") X(SUB, "sub") X(MUL, "mul") X(DIV, "div") X(DIV_TRUNC, "div")           \
    X(FLOOR_DIVIDE, "floor_divide") X(POW, "pow") X(MAXIMUM, "maximum")                    \
    X(MINIMUM, "minimum") X(REMAINDER, "remainder") X(FMOD, "fmod") X(EQ, "eq") X(NE, "ne") \
    X(LT, "lt") X(LE, "le") X(GT, "gt") X(GE, "ge") X(LOGICAL_AND, "logical_and")          \
    X(LOGICAL_OR, "logical_or") X(LOGICAL_XOR, "logical_xor")

#define GRAFT_UNARY_OPS(X)                                                                \
    X(NEG, "neg") X(ABS, "abs") X(SIGN, "sign") X(EXP, "exp") X(LOG, "log")                \
    X(LOG1P, "log1p") X(SQRT, "sqrt") X(RSQRT, "rsqrt") X(SIN, "sin") X(COS, "cos")        \
    X(TANH, "tanh") X(SIGMOID, "sigmoid") X(RECIPROCAL, "reciprocal") X(SQUARE, "square")  \
    X(FLOOR, "floor") X(CEIL, "ceil") X(ROUND, "round") X(TRUNC, "trunc") X(EXPM1, "expm1") \
    X(LOG2, "log2") X(LOG10, "log10") X(RELU, "relu") X(ISNAN, "isnan") X(ISINF, "isinf")  \
    X(ISFINITE, "isfinite") X(LOGICAL_NOT, "logical_not") X(ERF, "erf") X(ERFC, "erfc")

#define GRAFT_EW_ENUM(E, name) GRAFT_EW_##E,
typedef enum { GRAFT_BINARY_OPS(GRAFT_EW_ENUM) GRAFT_EW_NBINARY } graft_binary_op;
typedef enum { GRAFT_UNARY_OPS(GRAFT_EW_ENUM) GRAFT_EW_NUNARY } graft_unary_op;
#undef GRAFT_EW_ENUM

const char *graft_binary_name(graft_binary_op op);   /* "add"; static string */
const char *graft_unary_name(graft_unary_op op);     /* "exp"; static string */

/* ---- operands ---- */
/* A scalar: dtype is GRAFT_BOOL, GRAFT_I64 (value in i) or GRAFT_F64 (value in f). */
typedef struct {
    graft_dtype dtype;
    int64_t i;
    double f;
} graft_scalar;

/* A tensor (t != NULL, borrowed) or, when t is NULL, the scalar s. */
typedef struct {
    graft_tensor *t;
    graft_scalar s;
} graft_operand;

static inline graft_scalar graft_scalar_int(int64_t v) { graft_scalar s = {GRAFT_I64, v, (double)v}; return s; }
static inline graft_scalar graft_scalar_float(double v) { graft_scalar s = {GRAFT_F64, 0, v}; return s; }
static inline graft_scalar graft_scalar_bool(bool v) { graft_scalar s = {GRAFT_BOOL, (int64_t)v, (double)v}; return s; }
static inline graft_operand graft_operand_tensor(graft_tensor *t) {
    graft_operand o = {t, {GRAFT_I64, 0, 0}};
    return o;
}
static inline graft_operand graft_operand_int(int64_t v) { graft_operand o = {NULL, graft_scalar_int(v)}; return o; }
static inline graft_operand graft_operand_float(double v) { graft_operand o = {NULL, graft_scalar_float(v)}; return o; }
static inline graft_operand graft_operand_bool(bool v) { graft_operand o = {NULL, graft_scalar_bool(v)}; return o; }

/* ---- type promotion ---- */
/* torch.result_type over n operands: categories bool < integer < floating; dimensioned
 * tensors outrank 0-dim tensors, which outrank scalars; a higher category found only in
 * a lower-priority operand promotes (scalars to that category's default: int64, float32). */
graft_dtype graft_result_type(int n, const graft_operand *ops);
/* PyTorch's canCast: no float -> integer, no non-bool -> bool. */
bool graft_can_cast(graft_dtype from, graft_dtype to);
/* PyTorch's C++ names ("Float", "Long"), used in casting errors. */
const char *graft_dtype_torch_name(graft_dtype d);

/* ---- binary ops ---- */
/* +1: a op b, broadcast. alpha (add, sub only; NULL = 1) scales b: a + alpha * b.
 * DIV is true division (integers give float32); DIV_TRUNC and FLOOR_DIVIDE round. */
graft_status graft_binary(graft_tensor **out, graft_binary_op op, graft_operand a, graft_operand b,
                          const graft_scalar *alpha);
/* self <- self op b, b broadcast to self's shape. */
graft_status graft_binary_(graft_tensor *self, graft_binary_op op, graft_operand b, const graft_scalar *alpha);

/* Shorthands for C callers (tensor op tensor, +1 reference). */
static inline graft_status graft_add(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    return graft_binary(out, GRAFT_EW_ADD, graft_operand_tensor(a), graft_operand_tensor(b), NULL);
}
static inline graft_status graft_sub(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    return graft_binary(out, GRAFT_EW_SUB, graft_operand_tensor(a), graft_operand_tensor(b), NULL);
}
static inline graft_status graft_mul(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    return graft_binary(out, GRAFT_EW_MUL, graft_operand_tensor(a), graft_operand_tensor(b), NULL);
}
static inline graft_status graft_div(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    return graft_binary(out, GRAFT_EW_DIV, graft_operand_tensor(a), graft_operand_tensor(b), NULL);
}
/* a * s and a + s with a float scalar (float32 for integer a, as PyTorch). */
static inline graft_status graft_mul_scalar(graft_tensor **out, graft_tensor *a, double s) {
    return graft_binary(out, GRAFT_EW_MUL, graft_operand_tensor(a), graft_operand_float(s), NULL);
}
static inline graft_status graft_add_scalar(graft_tensor **out, graft_tensor *a, double s) {
    return graft_binary(out, GRAFT_EW_ADD, graft_operand_tensor(a), graft_operand_float(s), NULL);
}
/* self += alpha * b (the optimizer and gradient-accumulation workhorse). */
static inline graft_status graft_add_scaled_(graft_tensor *self, graft_tensor *b, double alpha) {
    graft_scalar al = graft_scalar_float(alpha);
    return graft_binary_(self, GRAFT_EW_ADD, graft_operand_tensor(b), &al);
}

/* ---- unary ops ---- */
/* +1: op(a). Float ops (exp, log, sqrt, sigmoid, ...) give float32 for integer and bool
 * inputs; SQUARE of bool gives int64; ISNAN/ISINF/ISFINITE/LOGICAL_NOT give bool. */
graft_status graft_unary(graft_tensor **out, graft_unary_op op, graft_tensor *a);
graft_status graft_unary_(graft_tensor *self, graft_unary_op op);

/* ---- clamp and where ---- */
/* +1: min(max(a, lo), hi); lo or hi may be NULL (not both). NaN propagates. The result
 * type promotes a with the bounds, as PyTorch 1.13 (clamp(int_tensor, 0.5) is float32). */
graft_status graft_clamp(graft_tensor **out, graft_tensor *a, const graft_operand *lo, const graft_operand *hi);
graft_status graft_clamp_(graft_tensor *self, const graft_operand *lo, const graft_operand *hi);
/* +1: cond ? a : b, broadcast over the three; cond is bool (or uint8); the dtype is
 * result_type(a, b). */
graft_status graft_where(graft_tensor **out, graft_tensor *cond, graft_operand a, graft_operand b);

#endif
