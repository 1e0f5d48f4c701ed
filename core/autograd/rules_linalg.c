/* graft autograd: recording and gradient rules of the matrix products. For C = A B the
 * gradients are dA = dC B^T and dB = A^T dC, each computed only when its input needs
 * it (a frozen weight costs no weight-gradient product). matmul's 1-D operands are
 * treated as a row (left) or a column (right) matrix and its broadcast batch dims are
 * summed away; a batched A times a 2-D B gets dB from one flattened product. */
#include "autograd/internal.h"

/* ia[0] product kind; saved: 0 a, 1 b */
static graft_status la_apply(ag_node *n, graft_tensor *g, graft_tensor **gin);

static const ag_kind k_mm = {"MmBackward0", la_apply};
static const ag_kind k_bmm = {"BmmBackward0", la_apply};
static const ag_kind k_mv = {"MvBackward0", la_apply};
static const ag_kind k_dot = {"DotBackward0", la_apply};
static const ag_kind k_outer = {"MulBackward0", la_apply}; /* PyTorch: a[:, None] * b */
static const ag_kind k_matmul = {"MatmulBackward0", la_apply};
static const ag_kind k_matmul_dot = {"DotBackward0", la_apply};
static const ag_kind k_matmul_mm = {"MmBackward0", la_apply};
static const ag_kind k_matmul_mv = {"MvBackward0", la_apply};

static bool la_col_major(const graft_tensor *m);

static graft_status la_forward(graft_tensor **out, graft_ag_product k, graft_tensor *a, graft_tensor *b) {
    switch (k) {
    case GRAFT_AG_MATMUL: return graft_linalg_matmul(out, a, b);
    case GRAFT_AG_MM: return graft_linalg_mm(out, a, b);
    case GRAFT_AG_BMM: return graft_linalg_bmm(out, a, b);
    case GRAFT_AG_MV: return graft_linalg_mv(out, a, b);
    case GRAFT_AG_DOT: return graft_linalg_dot(out, a, b);
    case GRAFT_AG_OUTER: return graft_linalg_outer(out, a, b);
    }
    return graft_error(GRAFT_EINTERNAL, "linalg: unknown product %d", (int)k);
}

static const ag_kind *la_kind(graft_ag_product k, const graft_tensor *a, const graft_tensor *b) {
    switch (k) {
    case GRAFT_AG_MM: return &k_mm;
    case GRAFT_AG_BMM: return &k_bmm;
    case GRAFT_AG_MV: return &k_mv;
    case GRAFT_AG_DOT: return &k_dot;
    case GRAFT_AG_OUTER: return &k_outer;
    case GRAFT_AG_MATMUL:
        if (a->ndim == 1 && b->ndim == 1) return &k_matmul_dot;
        if (a->ndim == 2 && b->ndim == 2) return &k_matmul_mm;
        if (a->ndim == 2 && b->ndim == 1) return &k_matmul_mv;
        return &k_matmul;
    }
    return NULL;
}

graft_status graft_ag_product2(graft_tensor **out, graft_ag_product kind, graft_tensor *a, graft_tensor *b) {
    graft_status st;
    AG_NOGRAD(st = la_forward(out, kind, a, b));
    graft_tensor *ins[2] = {a, b};
    if (st || !ag_should_record(*out, ins, 2)) return st;
    ag_node *n = ag_node_new(la_kind(kind, a, b), 2, ins);
    if (n) {
        n->ia[0] = kind;
        n->ia[1] = a->ndim == 2 && la_col_major(b);
        if (ag_needs(n, 1)) st = ag_save(n, 0, a, false);
        if (!st && ag_needs(n, 0)) st = ag_save(n, 1, b, false);
    }
    return ag_finish(st, n, out, NULL);
}

static graft_tensor *la_mT(graft_tensor *x) { return ag_transpose(x, -1, -2); }

/* Whether a 2-D operand is the transpose of a contiguous matrix (a linear layer's w^T). */
static bool la_col_major(const graft_tensor *m) {
    return m->ndim == 2 && m->shape[0] > 1 && m->shape[1] > 1 && m->stride[0] == 1 && m->stride[1] == m->shape[0];
}

/* m1^T g, in the layout of m2: when m2 was the transpose of a contiguous matrix (F.linear
 * passes w^T), (g^T m1)^T, so that the gradient that reaches w is contiguous and becomes
 * w.grad without a transposing copy (PyTorch's mm_mat2_backward does the same). */
static graft_tensor *la_grad_m2(ag_node *n, graft_tensor *ga) {
    graft_tensor *m1 = ag_saved_get(n, 0);
    if (n->ia[1]) return la_mT(ag_mm(la_mT(ga), m1));
    return ag_matmul(la_mT(m1), ga);
}

/* matmul's gradients in its general form. */
static void la_matmul_grads(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const ag_input *ia = &n->in[0], *ib = &n->in[1];
    bool a1 = ia->ndim == 1, b1 = ib->ndim == 1;
    graft_tensor *a = ag_needs(n, 1) ? ag_saved_get(n, 0) : NULL, *b = ag_needs(n, 0) ? ag_saved_get(n, 1) : NULL;
    graft_tensor *G = g;
    if (a1) G = ag_unsqueeze(G, -2);
    if (b1) G = ag_unsqueeze(G, -1);
    if (ag_needs(n, 0)) {
        graft_tensor *B = b1 ? ag_unsqueeze(b, -1) : b;
        graft_tensor *GA = ag_matmul(G, la_mT(B));
        if (GA) {
            int an = a1 ? 2 : ia->ndim;
            int64_t ashape[GRAFT_MAX_DIMS];
            if (a1) { ashape[0] = 1; ashape[1] = ia->shape[0]; }
            else for (int d = 0; d < an; d++) ashape[d] = ia->shape[d];
            gin[0] = ag_keep(ag_reshape_in(ag_sum_to(GA, an, ashape), n, 0));
        }
    }
    if (ag_needs(n, 1)) {
        graft_tensor *A = a1 ? ag_unsqueeze(a, 0) : a;
        graft_tensor *GB = NULL;
        if (A && G && !b1 && ib->ndim == 2 && A->ndim > 2) {
            /* one product: A flattened to [*, m], G to [*, p] */
            int64_t am[2] = {-1, A->shape[A->ndim - 1]}, gp[2] = {-1, G->shape[G->ndim - 1]};
            GB = ag_mm(la_mT(ag_reshape(A, 2, am)), ag_reshape(G, 2, gp));
        } else {
            GB = ag_matmul(la_mT(A), G);
        }
        if (GB) {
            int bn = b1 ? 2 : ib->ndim;
            int64_t bshape[GRAFT_MAX_DIMS];
            if (b1) { bshape[0] = ib->shape[0]; bshape[1] = 1; }
            else for (int d = 0; d < bn; d++) bshape[d] = ib->shape[d];
            gin[1] = ag_keep(ag_reshape_in(ag_sum_to(GB, bn, bshape), n, 1));
        }
    }
}

static graft_tensor *la_outer(graft_tensor *x, graft_tensor *y) {
    if (!x || !y) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_linalg_outer(&r, x, y);
    if (st) return ag_fail(st);
    return ag_pool(r);
}

static graft_tensor *la_mv(graft_tensor *m, graft_tensor *v) {
    if (!m || !v) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_linalg_mv(&r, m, v);
    if (st) return ag_fail(st);
    return ag_pool(r);
}

static graft_status la_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_ag_product kind = (graft_ag_product)n->ia[0];
    bool ga = ag_needs(n, 0), gb = ag_needs(n, 1);
    graft_tensor *a = gb ? ag_saved_get(n, 0) : NULL, *b = ga ? ag_saved_get(n, 1) : NULL;
    switch (kind) {
    case GRAFT_AG_MATMUL:
        if (n->in[0].ndim == 1 && n->in[1].ndim == 1) {
            if (ga) gin[0] = ag_keep(ag_mul(g, b));
            if (gb) gin[1] = ag_keep(ag_mul(g, a));
        } else if (n->ia[1]) { /* 2-D times a column-major 2-D */
            if (ga) gin[0] = ag_keep(ag_matmul(g, la_mT(b)));
            if (gb) gin[1] = ag_keep(la_grad_m2(n, g));
        } else {
            la_matmul_grads(n, g, gin);
        }
        break;
    case GRAFT_AG_MM:
    case GRAFT_AG_BMM:
        if (ga) gin[0] = ag_keep(ag_matmul(g, la_mT(b)));
        if (gb) gin[1] = ag_keep(la_grad_m2(n, g));
        break;
    case GRAFT_AG_MV:
        if (ga) gin[0] = ag_keep(la_outer(g, b));
        if (gb) gin[1] = ag_keep(la_mv(la_mT(a), g));
        break;
    case GRAFT_AG_DOT:
        if (ga) gin[0] = ag_keep(ag_mul(g, b));
        if (gb) gin[1] = ag_keep(ag_mul(g, a));
        break;
    case GRAFT_AG_OUTER:
        if (ga) gin[0] = ag_keep(la_mv(g, b));
        if (gb) gin[1] = ag_keep(la_mv(la_mT(g), a));
        break;
    }
    return GRAFT_OK;
}

/* ---- addmm / baddbmm ---- */

/* ia[0] batched, ia[1] m2 column-major (2-D only); fa[0] beta, fa[1] alpha; saved: 0 m1, 1 m2 */
static graft_status la_add_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    double beta = n->fa[0], alpha = n->fa[1];
    if (ag_needs(n, 0)) gin[0] = ag_keep(beta == 1.0 ? g : ag_muls(g, beta));
    graft_tensor *ga = alpha == 1.0 ? g : ag_muls(g, alpha);
    if (ag_needs(n, 1)) gin[1] = ag_keep(ag_matmul(ga, la_mT(ag_saved_get(n, 1))));
    if (ag_needs(n, 2)) gin[2] = ag_keep(la_grad_m2(n, ga));
    return GRAFT_OK;
}

static const ag_kind k_addmm = {"AddmmBackward0", la_add_apply};
static const ag_kind k_baddbmm = {"BaddbmmBackward0", la_add_apply};

graft_status graft_ag_addprod(graft_tensor **out, bool batched, graft_tensor *input, graft_tensor *m1,
                              graft_tensor *m2, double beta, double alpha) {
    graft_status st;
    AG_NOGRAD(st = (batched ? graft_linalg_baddbmm : graft_linalg_addmm)(out, input, m1, m2, beta, alpha));
    graft_tensor *ins[3] = {input, m1, m2};
    if (st || !ag_should_record(*out, ins, 3)) return st;
    ag_node *n = ag_node_new(batched ? &k_baddbmm : &k_addmm, 3, ins);
    if (n) {
        n->ia[0] = batched;
        n->ia[1] = !batched && la_col_major(m2);
        n->fa[0] = beta;
        n->fa[1] = alpha;
        if (ag_needs(n, 2)) st = ag_save(n, 0, m1, false);
        if (!st && ag_needs(n, 1)) st = ag_save(n, 1, m2, false);
    }
    return ag_finish(st, n, out, NULL);
}
