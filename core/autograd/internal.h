/* graft autograd internals: the node and metadata structs, recording helpers shared by
 * the rule files, and a scratch pool that lets rules be written as expressions of
 * forward ops (each helper returns a pool-owned tensor or NULL after an error; NULL
 * inputs propagate, and the pool is released after the rule). Not a public header. */
#ifndef GRAFT_AUTOGRAD_INTERNAL_H
#define GRAFT_AUTOGRAD_INTERNAL_H

#include "autograd/autograd.h"
#include "autograd/record.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/join.h"
#include "ops/linalg.h"
#include "ops/reduce.h"
#include "ops/view.h"

typedef struct graft_node ag_node;

/* A rule: g is the gradient of the node's output (never NULL); gin[i] receives +1
 * reference to the gradient of input i, left NULL when input i needs none
 * (ag_needs(n, i) false) or gets none. Shapes may be broadcast forms of the input's
 * and dtypes may differ: the engine reduces and converts. */
typedef graft_status (*ag_apply_fn)(ag_node *n, graft_tensor *g, graft_tensor **gin);

typedef struct {
    const char *name;
    ag_apply_fn apply;
} ag_kind;

typedef struct {
    ag_node *next;                   /* strong; NULL when this input needs no grad */
    int ndim;
    graft_dtype dtype;
    graft_device device;
    int64_t shape[GRAFT_MAX_DIMS];
} ag_input;

#define AG_MAX_SAVED 4
typedef struct {
    graft_tensor *t;                 /* strong: an alias without metadata; NULL if unused */
    uint64_t version;
    const char *producer;            /* grad_fn name of the saved tensor, or NULL */
    bool is_output;
} ag_saved;

/* A gradient hook: shared by its owner's list and the handles (refcounted). */
struct graft_hook {
    int64_t refcount;
    uint64_t id;                     /* registration order, over all tensors */
    graft_hook_fn fn;
    void *ctx;
    void (*free_ctx)(void *);
    bool removed;
};

/* The hooks of a leaf (in its metadata) or of a computed tensor (in its grad_fn); empty
 * (n == 0, v NULL) costs one test per node in backward. */
typedef struct {
    graft_hook **v;                  /* strong */
    int n, cap;
} ag_hook_list;

typedef struct ag_meta {
    ag_node *grad_fn;                /* strong; NULL for leaves */
    ag_node *acc;                    /* weak: a leaf's AccumulateGrad node */
    graft_tensor *grad;              /* strong, without metadata */
    graft_tensor *base;              /* strong: what a recorded view views (its base) */
    bool requires_grad;              /* leaves */
    bool retains_grad;
    ag_hook_list hooks;              /* a leaf's hooks */
} ag_meta;

struct graft_node {
    int64_t refcount;
    const ag_kind *kind;
    int n_in;
    ag_input *in;
    ag_saved saved[AG_MAX_SAVED];
    bool released;                   /* saved tensors freed by a backward */
    /* op arguments */
    int64_t ia[2 * GRAFT_MAX_DIMS + 4];
    double fa[4];
    void *extra;
    void (*extra_free)(void *);
    graft_tensor *leaf;              /* AccumulateGrad: the leaf (strong) */
    ag_meta *retain;                 /* retain_grad: the output's metadata (weak) */
    uint64_t retain_before;          /* hooks with a smaller id run before retain_grad's */
    ag_hook_list hooks;              /* the output's hooks (registered while it had this grad_fn) */
    ag_node *inner;                  /* CopySlices: the in-place op's node (strong) */
    /* engine scratch */
    uint64_t epoch;
    int64_t deps;
    graft_tensor *buf;
    ag_node *free_next;
};

/* ---- metadata ---- */
static inline ag_meta *ag_meta_of(const graft_tensor *t) { return t ? (ag_meta *)t->autograd : NULL; }
/* The tensor's metadata, created when missing; NULL on allocation failure. */
ag_meta *ag_meta_ensure(graft_tensor *t);
bool ag_requires(const graft_tensor *t);

/* ---- nodes ---- */
/* +1: a node of kind k over n_in inputs (NULL entries are scalars or non-tensors):
 * edges to the inputs that require grad, their shapes and dtypes. NULL on failure. */
ag_node *ag_node_new(const ag_kind *k, int n_in, graft_tensor *const *inputs);
static inline bool ag_needs(const ag_node *n, int i) { return n->in[i].next != NULL; }
/* Saves t (an input) or, with is_output, the node's output, in slot i. */
graft_status ag_save(ag_node *n, int i, graft_tensor *t, bool is_output);
/* The saved tensor of slot i after the version check; NULL (and an error) otherwise. */
graft_tensor *ag_saved_get(ag_node *n, int i);
/* Makes n the grad_fn of out (taking over the caller's reference to n). With view_of,
 * out is recorded as a view of that tensor (for in-place checks and CopySlices). On
 * failure n is released and out left as it was. */
graft_status ag_set_output(ag_node *n, graft_tensor *out, graft_tensor *view_of);
/* Finishes a recording: on st != OK or a NULL node releases out (*out = NULL) and
 * returns the error; else attaches n to *out. */
graft_status ag_finish(graft_status st, ag_node *n, graft_tensor **out, graft_tensor *view_of);
/* Whether the output of an op with these inputs gets a node: grad mode is on at the
 * caller (the wrappers are only entered then), one input requires grad, and the
 * output is floating point and not one of the inputs. */
bool ag_should_record(graft_tensor *out, graft_tensor *const *ins, int n);

/* ---- in-place recording ---- */
/* Runs before an in-place op on self that has inputs ins (self first): refuses leaves
 * and views of leaves. *rec says whether to record. */
graft_status ag_inplace_begin(graft_tensor *self, graft_tensor *const *ins, int n, const char *op, bool *rec);
/* After the op: n (made over the same inputs, self first, and holding its saves) is
 * recorded as self's new history; for a view of a tensor with history, as CopySlices
 * on its base. Takes over n. */
graft_status ag_inplace_end(ag_node *n, graft_tensor *self);

/* Runs fn-style code with grad mode off: `AG_NOGRAD(st = graft_add(...));` */
#define AG_NOGRAD(stmt)                                  \
    do {                                                 \
        bool ag_prev_ = graft_set_grad_enabled(false);   \
        stmt;                                            \
        graft_set_grad_enabled(ag_prev_);                \
    } while (0)

/* ---- the scratch pool (rules) ---- */
int ag_pool_mark(void);
/* Releases what was pooled since mark; returns the first error a helper met. */
graft_status ag_pool_unwind(int mark);
/* Pools t (taking the reference); returns t. NULL in, NULL out. */
graft_tensor *ag_pool(graft_tensor *t);
/* Records a failed status (the message is already set); returns NULL. */
graft_tensor *ag_fail(graft_status st);
/* +1 reference to a pooled t, for a rule's gin (NULL stays NULL). */
graft_tensor *ag_keep(graft_tensor *t);
/* Whether a helper failed since the last unwind to 0. */
bool ag_pool_failed(void);

/* Pool-owned results (NULL after an error or for a NULL argument). */
graft_tensor *ag_bin(graft_binary_op op, graft_tensor *a, graft_tensor *b);
graft_tensor *ag_bins(graft_binary_op op, graft_tensor *a, double s);   /* a op s */
graft_tensor *ag_sbin(graft_binary_op op, double s, graft_tensor *b);   /* s op b */
graft_tensor *ag_un(graft_unary_op op, graft_tensor *a);
#define ag_add(a, b) ag_bin(GRAFT_EW_ADD, a, b)
#define ag_sub(a, b) ag_bin(GRAFT_EW_SUB, a, b)
#define ag_mul(a, b) ag_bin(GRAFT_EW_MUL, a, b)
#define ag_div(a, b) ag_bin(GRAFT_EW_DIV, a, b)
#define ag_muls(a, s) ag_bins(GRAFT_EW_MUL, a, s)
graft_tensor *ag_neg(graft_tensor *a);
/* cond ? a : b, and with a scalar 0 for the other side. */
graft_tensor *ag_where(graft_tensor *cond, graft_tensor *a, graft_tensor *b);
graft_tensor *ag_where0(graft_tensor *cond, graft_tensor *a);       /* cond ? a : 0 */
graft_tensor *ag_where0_not(graft_tensor *cond, graft_tensor *a);   /* cond ? 0 : a */
/* The device of the gradient the running rule was given: rules allocate there. */
extern _Thread_local graft_device ag_device;
/* Zeros on ag_device (ag_zeros) or on dev (ag_zeros_on). */
graft_tensor *ag_zeros(int ndim, const int64_t *shape, graft_dtype dtype);
graft_tensor *ag_zeros_on(int ndim, const int64_t *shape, graft_dtype dtype, graft_device dev);
/* a itself when on dev, else a pooled copy there (for rules with a host-side loop). */
graft_tensor *ag_to_dev(graft_tensor *a, graft_device dev);
/* zeros of input i's shape in dtype d */
graft_tensor *ag_zeros_in(ag_node *n, int i, graft_dtype d);
graft_tensor *ag_sum(graft_tensor *a, const int *dims, int ndims, bool keepdim);
graft_tensor *ag_reshape(graft_tensor *a, int ndim, const int64_t *shape);
graft_tensor *ag_reshape_in(graft_tensor *a, ag_node *n, int i);    /* to input i's shape */
graft_tensor *ag_expand(graft_tensor *a, int ndim, const int64_t *shape);
graft_tensor *ag_transpose(graft_tensor *a, int d0, int d1);        /* negative dims allowed */
graft_tensor *ag_unsqueeze(graft_tensor *a, int dim);
graft_tensor *ag_squeeze(graft_tensor *a, int dim);
graft_tensor *ag_narrow(graft_tensor *a, int dim, int64_t start, int64_t len);
graft_tensor *ag_contig(graft_tensor *a);
graft_tensor *ag_clone(graft_tensor *a);
graft_tensor *ag_to(graft_tensor *a, graft_dtype d);
graft_tensor *ag_mm(graft_tensor *a, graft_tensor *b);
graft_tensor *ag_matmul(graft_tensor *a, graft_tensor *b);
/* dst (returned) after dst <- src */
graft_tensor *ag_copy_into(graft_tensor *dst, graft_tensor *src);
/* g (the output gradient of a reduction over mask, keepdim as given) reshaped to
 * keepdim form and expanded to input i's shape. */
graft_tensor *ag_expand_back(graft_tensor *g, ag_node *n, int i, uint32_t mask, bool keepdim);
/* g summed over broadcast dims down to (ndim, shape); NULL if not reducible. */
graft_tensor *ag_sum_to(graft_tensor *g, int ndim, const int64_t *shape);

/* Reduction dims (0-based, negative allowed; ndims 0 = all) as a bit mask over ndim
 * dims; a 0-dim tensor reduces to mask 0. */
uint32_t ag_dims_mask(const int *dims, int ndims, int ndim);

#endif
