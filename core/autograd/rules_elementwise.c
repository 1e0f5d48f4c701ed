/* graft autograd: recording and gradient rules of the elementwise ops (binary ops with
 * scalars and alpha, unary math, clamp, where), out of place and in place. The
 * formulas follow PyTorch 1.13's derivatives.yaml: ties of maximum/minimum split the
 * gradient evenly, clamp passes it inside the bounds (ends included), rounding ops and
 * sign give zeros, pow's exponent gradient is 0 where the base is 0. */
#include "autograd/internal.h"

#include <math.h>

/* ---- shared ---- */

/* A 0-dim tensor holding v (pooled): scalar operands inside rules. */
static graft_tensor *ew_full0(double v, graft_dtype d) {
    graft_tensor *r = NULL;
    int64_t none[1] = {0};
    graft_status st = graft_tensor_empty(&r, 0, none, d, ag_device);
    if (!st && (st = graft_tensor_fill_(r, v))) {
        graft_tensor_release(r);
        r = NULL;
    }
    if (st) return ag_fail(st);
    return ag_pool(r);
}

static double ew_scalar_value(const graft_scalar *s) { return s->dtype == GRAFT_F64 ? s->f : (double)s->i; }

/* ---- binary ---- */

/* ia[0] op; ia[1], ia[2]: a, b are tensors; fa[0] alpha; fa[1], fa[2]: scalar a, b.
 * saved: 0 a, 1 b, 2 the output. */
static graft_status ew_binary_apply(ag_node *n, graft_tensor *g, graft_tensor **gin);

#define EW_KIND(var, name) static const ag_kind var = {name, ew_binary_apply};
EW_KIND(k_add, "AddBackward0")
EW_KIND(k_sub, "SubBackward0")
EW_KIND(k_mul, "MulBackward0")
EW_KIND(k_div, "DivBackward0")
EW_KIND(k_div_mode, "DivBackward1")
EW_KIND(k_floor_divide, "FloorDivideBackward0")
EW_KIND(k_pow0, "PowBackward0")
EW_KIND(k_pow1, "PowBackward1")
EW_KIND(k_pow2, "PowBackward1") /* a scalar base: PyTorch wraps it in a tensor */
EW_KIND(k_maximum, "MaximumBackward0")
EW_KIND(k_minimum, "MinimumBackward0")
EW_KIND(k_remainder, "RemainderBackward0")
EW_KIND(k_fmod, "FmodBackward0")
#undef EW_KIND

static const ag_kind *ew_binary_kind(graft_binary_op op, bool at, bool bt) {
    switch (op) {
    case GRAFT_EW_ADD: return &k_add;
    case GRAFT_EW_SUB: return &k_sub;
    case GRAFT_EW_MUL: return &k_mul;
    case GRAFT_EW_DIV: return &k_div;
    case GRAFT_EW_DIV_TRUNC: return &k_div_mode;
    case GRAFT_EW_FLOOR_DIVIDE: return &k_floor_divide;
    case GRAFT_EW_POW: return at && bt ? &k_pow1 : at ? &k_pow0 : &k_pow2;
    case GRAFT_EW_MAXIMUM: return &k_maximum;
    case GRAFT_EW_MINIMUM: return &k_minimum;
    case GRAFT_EW_REMAINDER: return &k_remainder;
    case GRAFT_EW_FMOD: return &k_fmod;
    default: return NULL; /* comparisons and logic: boolean results, never recorded */
    }
}

/* Which input values a binary rule reads, given which inputs need a gradient. */
static void ew_binary_saves(graft_binary_op op, bool ga, bool gb, bool *sa, bool *sb, bool *so) {
    *sa = *sb = *so = false;
    switch (op) {
    case GRAFT_EW_MUL: *sa = gb; *sb = ga; break;
    case GRAFT_EW_DIV: *sa = gb; *sb = ga || gb; break;
    case GRAFT_EW_POW: *sa = *sb = true; *so = gb; break;
    case GRAFT_EW_MAXIMUM: case GRAFT_EW_MINIMUM: *sa = *sb = true; break;
    case GRAFT_EW_REMAINDER: case GRAFT_EW_FMOD: *sa = *sb = gb; break;
    default: break;
    }
}

/* Builds the node of `out = a op b` and saves its inputs (before an in-place op runs,
 * so an input aliasing self is saved with its old version). The edge of the first
 * input comes from a_edge (self's old history for in-place ops), its value from a_val
 * (a copy of self's old value when the rule needs it). The output, when the rule
 * needs it, is saved by ew_binary_save_output. */
static ag_node *ew_binary_node(graft_binary_op op, graft_tensor *a_edge, graft_tensor *a_val, const graft_operand *a,
                               const graft_operand *b, const graft_scalar *alpha) {
    const ag_kind *k = ew_binary_kind(op, a->t != NULL, b->t != NULL);
    if (!k) return NULL;
    graft_tensor *ins[2] = {a_edge, b->t};
    ag_node *n = ag_node_new(k, 2, ins);
    if (!n) return NULL;
    n->ia[0] = op;
    n->ia[1] = a->t != NULL;
    n->ia[2] = b->t != NULL;
    n->fa[0] = alpha ? ew_scalar_value(alpha) : 1.0;
    n->fa[1] = a->t ? 0 : ew_scalar_value(&a->s);
    n->fa[2] = b->t ? 0 : ew_scalar_value(&b->s);
    bool sa, sb, so;
    ew_binary_saves(op, ag_needs(n, 0), ag_needs(n, 1), &sa, &sb, &so);
    graft_status st = GRAFT_OK;
    if (sa && a_val) st = ag_save(n, 0, a_val, false);
    if (!st && sb && b->t) st = ag_save(n, 1, b->t, false);
    if (st) {
        graft_node_release(n);
        return NULL;
    }
    return n;
}

static graft_status ew_binary_save_output(ag_node *n, graft_tensor *out) {
    bool sa, sb, so;
    ew_binary_saves((graft_binary_op)n->ia[0], ag_needs(n, 0), ag_needs(n, 1), &sa, &sb, &so);
    return so ? ag_save(n, 2, out, true) : GRAFT_OK;
}

/* The value of operand k (0 a, 1 b): the saved tensor or the scalar as a 0-dim tensor. */
static graft_tensor *ew_operand_value(ag_node *n, int k, graft_dtype d) {
    return n->ia[1 + k] ? ag_saved_get(n, k) : ew_full0(n->fa[1 + k], d);
}

static graft_status ew_binary_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_binary_op op = (graft_binary_op)n->ia[0];
    bool ga = ag_needs(n, 0), gb = ag_needs(n, 1);
    graft_dtype d = g->dtype;
    graft_tensor *a, *b, *half, *eq;
    switch (op) {
    case GRAFT_EW_ADD:
    case GRAFT_EW_SUB: {
        double alpha = op == GRAFT_EW_SUB ? -n->fa[0] : n->fa[0];
        if (ga) gin[0] = ag_keep(g);
        if (gb) gin[1] = alpha == 1.0 ? ag_keep(g) : ag_keep(alpha == -1.0 ? ag_neg(g) : ag_muls(g, alpha));
        break;
    }
    case GRAFT_EW_MUL:
        if (ga) gin[0] = ag_keep(ag_mul(g, ew_operand_value(n, 1, d)));
        if (gb) gin[1] = ag_keep(ag_mul(g, ew_operand_value(n, 0, d)));
        break;
    case GRAFT_EW_DIV:
        b = ew_operand_value(n, 1, d);
        if (ga) gin[0] = ag_keep(ag_div(g, b));
        if (gb) gin[1] = ag_keep(ag_neg(ag_div(ag_mul(g, ew_operand_value(n, 0, d)), ag_mul(b, b))));
        break;
    case GRAFT_EW_DIV_TRUNC:
    case GRAFT_EW_FLOOR_DIVIDE:
        if (ga) gin[0] = ag_keep(ag_zeros(g->ndim, g->shape, d));
        if (gb) gin[1] = ag_keep(ag_zeros(g->ndim, g->shape, d));
        break;
    case GRAFT_EW_POW:
        a = ew_operand_value(n, 0, d);
        if (ga) {
            b = ew_operand_value(n, 1, d);
            /* g * b * a^(b-1), 0 where b == 0 */
            graft_tensor *t = ag_mul(g, ag_mul(b, ag_bin(GRAFT_EW_POW, a, ag_bins(GRAFT_EW_SUB, b, 1.0))));
            gin[0] = ag_keep(ag_where0_not(ag_bins(GRAFT_EW_EQ, b, 0.0), t));
        }
        if (gb) {
            /* g * out * log(a), 0 where a == 0 and b >= 0 (b needs a grad: a tensor) */
            graft_tensor *t = ag_mul(g, ag_mul(ag_saved_get(n, 2), ag_un(GRAFT_EW_LOG, a)));
            graft_tensor *zero_base = ag_bin(GRAFT_EW_LOGICAL_AND, ag_bins(GRAFT_EW_EQ, a, 0.0),
                                             ag_bins(GRAFT_EW_GE, ew_operand_value(n, 1, d), 0.0));
            gin[1] = ag_keep(ag_where0_not(zero_base, t));
        }
        break;
    case GRAFT_EW_MAXIMUM:
    case GRAFT_EW_MINIMUM: {
        a = ew_operand_value(n, 0, d);
        b = ew_operand_value(n, 1, d);
        half = ag_muls(g, 0.5);
        eq = ag_where(ag_bin(GRAFT_EW_EQ, a, b), half, g);
        graft_tensor *a_lt = ag_bin(GRAFT_EW_LT, a, b), *a_gt = ag_bin(GRAFT_EW_GT, a, b);
        bool mx = op == GRAFT_EW_MAXIMUM;
        if (ga) gin[0] = ag_keep(ag_where0_not(mx ? a_lt : a_gt, eq));
        if (gb) gin[1] = ag_keep(ag_where0_not(mx ? a_gt : a_lt, eq));
        break;
    }
    case GRAFT_EW_REMAINDER:
    case GRAFT_EW_FMOD:
        if (ga) gin[0] = ag_keep(g);
        if (gb) {
            a = ew_operand_value(n, 0, d);
            b = ew_operand_value(n, 1, d);
            graft_unary_op round = op == GRAFT_EW_REMAINDER ? GRAFT_EW_FLOOR : GRAFT_EW_TRUNC;
            gin[1] = ag_keep(ag_neg(ag_mul(g, ag_un(round, ag_div(a, b)))));
        }
        break;
    default:
        return graft_error(GRAFT_EINTERNAL, "autograd: no rule for %s", graft_binary_name(op));
    }
    return GRAFT_OK;
}

graft_status graft_ag_binary(graft_tensor **out, graft_binary_op op, graft_operand a, graft_operand b,
                             const graft_scalar *alpha) {
    graft_status st;
    AG_NOGRAD(st = graft_binary(out, op, a, b, alpha));
    graft_tensor *ins[2] = {a.t, b.t};
    if (st || !ag_should_record(*out, ins, 2) || !ew_binary_kind(op, a.t, b.t)) return st;
    ag_node *n = ew_binary_node(op, a.t, a.t, &a, &b, alpha);
    if (n) st = ew_binary_save_output(n, *out);
    return ag_finish(st, n, out, NULL);
}

graft_status graft_ag_binary_(graft_tensor *self, graft_binary_op op, graft_operand b, const graft_scalar *alpha) {
    graft_tensor *ins[2] = {self, b.t};
    bool rec;
    graft_status st = ag_inplace_begin(self, ins, 2, graft_binary_name(op), &rec);
    if (st) return st;
    graft_operand a = graft_operand_tensor(self);
    rec = rec && ew_binary_kind(op, true, b.t != NULL);
    /* the rule needs self's old value: keep a copy */
    graft_tensor *old = NULL;
    if (rec) {
        bool sa, sb, so;
        ew_binary_saves(op, true, ag_requires(b.t), &sa, &sb, &so);
        if (sa && (st = graft_tensor_clone(&old, self))) return st;
    }
    ag_node *n = NULL;
    if (rec && !(n = ew_binary_node(op, self, old, &a, &b, alpha))) st = GRAFT_ENOMEM;
    if (!st) AG_NOGRAD(st = graft_binary_(self, op, b, alpha));
    if (!st && n && !(st = ew_binary_save_output(n, self))) {
        st = ag_inplace_end(n, self);
        n = NULL;
    }
    graft_node_release(n);
    graft_tensor_release(old);
    return st;
}

/* ---- unary ---- */

static graft_status ew_unary_apply(ag_node *n, graft_tensor *g, graft_tensor **gin);

/* saved: 0 the input (for rules of x), 2 the output (for rules of the result) */
typedef struct {
    const char *name;
    int uses;            /* 0 nothing, 1 the input, 2 the output, 3 zero gradient */
} ew_unary_info;

static const ew_unary_info ew_unary_table[GRAFT_EW_NUNARY] = {
    [GRAFT_EW_NEG] = {"NegBackward0", 0},        [GRAFT_EW_ABS] = {"AbsBackward0", 1},
    [GRAFT_EW_SIGN] = {"SignBackward0", 3},      [GRAFT_EW_EXP] = {"ExpBackward0", 2},
    [GRAFT_EW_LOG] = {"LogBackward0", 1},        [GRAFT_EW_LOG1P] = {"Log1PBackward0", 1},
    [GRAFT_EW_SQRT] = {"SqrtBackward0", 2},      [GRAFT_EW_RSQRT] = {"RsqrtBackward0", 2},
    [GRAFT_EW_SIN] = {"SinBackward0", 1},        [GRAFT_EW_COS] = {"CosBackward0", 1},
    [GRAFT_EW_TANH] = {"TanhBackward0", 2},      [GRAFT_EW_SIGMOID] = {"SigmoidBackward0", 2},
    [GRAFT_EW_RECIPROCAL] = {"ReciprocalBackward0", 2}, [GRAFT_EW_SQUARE] = {"PowBackward0", 1},
    [GRAFT_EW_FLOOR] = {"FloorBackward0", 3},    [GRAFT_EW_CEIL] = {"CeilBackward0", 3},
    [GRAFT_EW_ROUND] = {"RoundBackward0", 3},    [GRAFT_EW_TRUNC] = {"TruncBackward0", 3},
    [GRAFT_EW_EXPM1] = {"Expm1Backward0", 2},    [GRAFT_EW_LOG2] = {"Log2Backward0", 1},
    [GRAFT_EW_LOG10] = {"Log10Backward0", 1},    [GRAFT_EW_RELU] = {"ReluBackward0", 2},
    [GRAFT_EW_ERF] = {"ErfBackward0", 1},        [GRAFT_EW_ERFC] = {"ErfcBackward0", 1},
};

#define EW_UKIND(E, name) {NULL, ew_unary_apply},
static ag_kind ew_unary_kinds[GRAFT_EW_NUNARY] = {GRAFT_UNARY_OPS(EW_UKIND)};
#undef EW_UKIND

static const ag_kind *ew_unary_kind(graft_unary_op op) {
    if ((unsigned)op >= GRAFT_EW_NUNARY || !ew_unary_table[op].name) return NULL;
    ag_kind *k = &ew_unary_kinds[op];
    k->name = ew_unary_table[op].name;
    return k;
}

static graft_status ew_unary_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_unary_op op = (graft_unary_op)n->ia[0];
    int uses = ew_unary_table[op].uses;
    graft_tensor *x = uses == 1 ? ag_saved_get(n, 0) : NULL, *y = uses == 2 ? ag_saved_get(n, 2) : NULL, *r = NULL;
    switch (op) {
    case GRAFT_EW_NEG: r = ag_neg(g); break;
    case GRAFT_EW_ABS: r = ag_mul(g, ag_un(GRAFT_EW_SIGN, x)); break;
    case GRAFT_EW_SIGN: case GRAFT_EW_FLOOR: case GRAFT_EW_CEIL: case GRAFT_EW_ROUND: case GRAFT_EW_TRUNC:
        r = ag_zeros(g->ndim, g->shape, g->dtype);
        break;
    case GRAFT_EW_EXP: r = ag_mul(g, y); break;
    case GRAFT_EW_LOG: r = ag_div(g, x); break;
    case GRAFT_EW_LOG1P: r = ag_div(g, ag_bins(GRAFT_EW_ADD, x, 1.0)); break;
    case GRAFT_EW_SQRT: r = ag_div(g, ag_muls(y, 2.0)); break;
    case GRAFT_EW_RSQRT: r = ag_mul(ag_muls(g, -0.5), ag_bins(GRAFT_EW_POW, y, 3.0)); break;
    case GRAFT_EW_SIN: r = ag_mul(g, ag_un(GRAFT_EW_COS, x)); break;
    case GRAFT_EW_COS: r = ag_neg(ag_mul(g, ag_un(GRAFT_EW_SIN, x))); break;
    case GRAFT_EW_TANH: r = ag_mul(g, ag_sbin(GRAFT_EW_SUB, 1.0, ag_mul(y, y))); break;
    case GRAFT_EW_SIGMOID: r = ag_mul(g, ag_mul(y, ag_sbin(GRAFT_EW_SUB, 1.0, y))); break;
    case GRAFT_EW_RECIPROCAL: r = ag_neg(ag_mul(g, ag_mul(y, y))); break;
    case GRAFT_EW_SQUARE: r = ag_mul(g, ag_muls(x, 2.0)); break;
    case GRAFT_EW_EXPM1: r = ag_mul(g, ag_bins(GRAFT_EW_ADD, y, 1.0)); break;
    case GRAFT_EW_LOG2: r = ag_div(g, ag_muls(x, M_LN2)); break;
    case GRAFT_EW_LOG10: r = ag_div(g, ag_muls(x, M_LN10)); break;
    case GRAFT_EW_RELU: r = ag_where0_not(ag_bins(GRAFT_EW_LE, y, 0.0), g); break;
    /* d/dx erf(x) = 2/sqrt(pi) e^(-x^2); erfc's is its negative */
    case GRAFT_EW_ERF: case GRAFT_EW_ERFC: {
        double c = (op == GRAFT_EW_ERF ? 2.0 : -2.0) / sqrt(M_PI);
        r = ag_mul(g, ag_muls(ag_un(GRAFT_EW_EXP, ag_neg(ag_mul(x, x))), c));
        break;
    }
    default: return graft_error(GRAFT_EINTERNAL, "autograd: no rule for %s", graft_unary_name(op));
    }
    gin[0] = ag_keep(r);
    return GRAFT_OK;
}

static ag_node *ew_unary_node(graft_unary_op op, graft_tensor *edge, graft_tensor *val, graft_tensor *out) {
    ag_node *n = ag_node_new(ew_unary_kind(op), 1, &edge);
    if (!n) return NULL;
    n->ia[0] = op;
    int uses = ew_unary_table[op].uses;
    graft_status st = GRAFT_OK;
    if (uses == 1) st = ag_save(n, 0, val, false);
    else if (uses == 2) st = ag_save(n, 2, out, true);
    if (st) {
        graft_node_release(n);
        return NULL;
    }
    return n;
}

graft_status graft_ag_unary(graft_tensor **out, graft_unary_op op, graft_tensor *a) {
    graft_status st;
    AG_NOGRAD(st = graft_unary(out, op, a));
    if (st || !ag_should_record(*out, &a, 1) || !ew_unary_kind(op)) return st;
    return ag_finish(GRAFT_OK, ew_unary_node(op, a, a, *out), out, NULL);
}

graft_status graft_ag_unary_(graft_tensor *self, graft_unary_op op) {
    bool rec;
    graft_status st = ag_inplace_begin(self, &self, 1, graft_unary_name(op), &rec);
    if (st) return st;
    rec = rec && ew_unary_kind(op);
    graft_tensor *old = NULL;
    if (rec && ew_unary_table[op].uses == 1 && (st = graft_tensor_clone(&old, self))) return st;
    AG_NOGRAD(st = graft_unary_(self, op));
    if (!st && rec) {
        ag_node *n = ew_unary_node(op, self, old, self);
        st = n ? ag_inplace_end(n, self) : GRAFT_ENOMEM;
    }
    graft_tensor_release(old);
    return st;
}

/* ---- clamp ---- */

/* inputs: a, lo, hi (tensors or NULL); ia[1], ia[2]: lo, hi given; fa[0], fa[1]: scalar
 * bounds; saved: 0 a, 1 lo, 2 hi. */
static graft_status ew_clamp_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_dtype d = g->dtype;
    graft_tensor *x = ag_saved_get(n, 0);
    bool has_lo = n->ia[1], has_hi = n->ia[2];
    graft_tensor *lo = !has_lo ? NULL : n->ia[3] ? ag_saved_get(n, 1) : ew_full0(n->fa[0], d);
    graft_tensor *hi = !has_hi ? NULL : n->ia[4] ? ag_saved_get(n, 2) : ew_full0(n->fa[1], d);
    if (ag_needs(n, 0)) {
        graft_tensor *mask = NULL;
        if (has_lo) mask = ag_bin(GRAFT_EW_GE, x, lo);
        if (has_hi) {
            graft_tensor *m2 = ag_bin(GRAFT_EW_LE, x, hi);
            mask = has_lo ? ag_bin(GRAFT_EW_LOGICAL_AND, mask, m2) : m2;
        }
        gin[0] = ag_keep(ag_where0(mask, g));
    }
    if (has_lo && ag_needs(n, 1)) {
        graft_tensor *mask = ag_bin(GRAFT_EW_LT, x, lo);
        if (has_hi) mask = ag_bin(GRAFT_EW_LOGICAL_AND, mask, ag_bin(GRAFT_EW_LT, lo, hi));
        gin[1] = ag_keep(ag_where0(mask, g));
    }
    if (has_hi && ag_needs(n, 2)) {
        graft_tensor *mask = ag_bin(GRAFT_EW_GT, x, hi);
        if (has_lo) mask = ag_bin(GRAFT_EW_LOGICAL_OR, mask, ag_bin(GRAFT_EW_LT, hi, lo));
        gin[2] = ag_keep(ag_where0(mask, g));
    }
    return GRAFT_OK;
}

static const ag_kind k_clamp_t = {"ClampBackward0", ew_clamp_apply};
static const ag_kind k_clamp_s = {"ClampBackward1", ew_clamp_apply};

static ag_node *ew_clamp_node(graft_tensor *edge, graft_tensor *val, const graft_operand *lo, const graft_operand *hi) {
    bool tensors = (lo && lo->t) || (hi && hi->t);
    graft_tensor *ins[3] = {edge, lo ? lo->t : NULL, hi ? hi->t : NULL};
    ag_node *n = ag_node_new(tensors ? &k_clamp_t : &k_clamp_s, 3, ins);
    if (!n) return NULL;
    n->ia[1] = lo != NULL;
    n->ia[2] = hi != NULL;
    n->ia[3] = lo && lo->t;
    n->ia[4] = hi && hi->t;
    n->fa[0] = lo && !lo->t ? ew_scalar_value(&lo->s) : 0;
    n->fa[1] = hi && !hi->t ? ew_scalar_value(&hi->s) : 0;
    graft_status st = ag_save(n, 0, val, false);
    if (!st && lo && lo->t) st = ag_save(n, 1, lo->t, false);
    if (!st && hi && hi->t) st = ag_save(n, 2, hi->t, false);
    if (st) {
        graft_node_release(n);
        return NULL;
    }
    return n;
}

graft_status graft_ag_clamp(graft_tensor **out, graft_tensor *a, const graft_operand *lo, const graft_operand *hi) {
    graft_status st;
    AG_NOGRAD(st = graft_clamp(out, a, lo, hi));
    graft_tensor *ins[3] = {a, lo ? lo->t : NULL, hi ? hi->t : NULL};
    if (st || !ag_should_record(*out, ins, 3)) return st;
    return ag_finish(GRAFT_OK, ew_clamp_node(a, a, lo, hi), out, NULL);
}

graft_status graft_ag_clamp_(graft_tensor *self, const graft_operand *lo, const graft_operand *hi) {
    graft_tensor *ins[3] = {self, lo ? lo->t : NULL, hi ? hi->t : NULL};
    bool rec;
    graft_status st = ag_inplace_begin(self, ins, 3, "clamp_", &rec);
    if (st) return st;
    graft_tensor *old = NULL;
    if (rec && (st = graft_tensor_clone(&old, self))) return st;
    ag_node *n = NULL;
    if (rec && !(n = ew_clamp_node(self, old, lo, hi))) st = GRAFT_ENOMEM;
    if (!st) AG_NOGRAD(st = graft_clamp_(self, lo, hi));
    if (!st && n) {
        st = ag_inplace_end(n, self);
        n = NULL;
    }
    graft_node_release(n);
    graft_tensor_release(old);
    return st;
}

/* ---- where ---- */

/* inputs: a, b; saved: 0 cond */
static graft_status ew_where_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *cond = ag_saved_get(n, 0);
    if (ag_needs(n, 0)) gin[0] = ag_keep(ag_where0(cond, g));
    if (ag_needs(n, 1)) gin[1] = ag_keep(ag_where0_not(cond, g));
    return GRAFT_OK;
}

static const ag_kind k_where = {"WhereBackward0", ew_where_apply};

graft_status graft_ag_where(graft_tensor **out, graft_tensor *cond, graft_operand a, graft_operand b) {
    graft_status st;
    AG_NOGRAD(st = graft_where(out, cond, a, b));
    graft_tensor *ins[2] = {a.t, b.t};
    if (st || !ag_should_record(*out, ins, 2)) return st;
    ag_node *n = ag_node_new(&k_where, 2, ins);
    if (n && (st = ag_save(n, 0, cond, false))) {
        graft_node_release(n);
        n = NULL;
    }
    return ag_finish(st, n, out, NULL);
}
