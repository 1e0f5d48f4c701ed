/* graft autograd: reverse-mode differentiation of the core ops.
 *
 * A tensor that requires grad carries metadata in its `autograd` slot: a leaf has the
 * requires_grad flag (and its .grad); a computed tensor has a grad_fn, the graph node
 * that made it. Each op front end (core/ops) starts with one branch: when an input
 * carries metadata and grad mode is on, it hands over to its graft_ag_* wrapper (see
 * record.h), which runs the op with grad mode off and records a node. A tensor without
 * metadata costs nothing more than that branch.
 *
 *     graft_set_requires_grad(w, true);
 *     graft_linalg_mm(&y, x, w);               // y's grad_fn is MmBackward0
 *     graft_reduce_sum(&loss, y, NULL, 0, false, -1);
 *     graft_backward(loss, NULL, false);       // w's .grad is x^T @ ones
 *     graft_tensor *g = graft_grad(w);         // borrowed
 *
 * Nodes: refcounted, one output each, named as PyTorch's grad_fn (AddBackward0, ...).
 * A node holds an edge (a reference) to the node of each input that requires grad (a
 * leaf's is its AccumulateGrad node, which holds the leaf), the input's shape and dtype,
 * and the tensors its rule needs, saved as metadata-free aliases with the storage
 * version they had: a node never holds a tensor that holds a node, so no reference
 * cycle can form, and an in-place write to a saved tensor is reported at backward.
 * An input that needs no grad has no edge: its rule skips that gradient entirely.
 *
 * The engine is iterative: a walk from the root counts each node's dependencies, then
 * nodes run from a ready stack when their last gradient has arrived. Gradients are
 * summed per node; each is then summed over broadcast dims down to its input's shape
 * and converted to its input's dtype. Rules are written with the forward ops (grad
 * mode is off while they run). Without retain_graph the saved tensors of each node are
 * released once it has run; a later backward that needs them is an error (nodes that
 * saved nothing, such as AddBackward0, run again, as in PyTorch).
 *
 * In-place ops: on a leaf that requires grad, or on a view of one, they are errors (as
 * PyTorch) unless grad mode is off. On other tensors they are recorded: the tensor's
 * history is rebased onto the node of the in-place op (the old value is saved as a
 * copy when the rule needs it). An in-place op on a view of a tensor that requires grad
 * (a view made by a recorded view op) is recorded on the base as PyTorch's CopySlices.
 * Views made while nothing required grad are not tracked: writing a tensor that
 * requires grad into one that does not span its storage (narrow, select...) is refused,
 * and t[{...}] = value records on t itself (IndexPutBackward0).
 *
 * Grad mode is thread-local; so are the engine and the counters.
 */
#ifndef GRAFT_AUTOGRAD_H
#define GRAFT_AUTOGRAD_H

#include "tensor/tensor.h"

typedef struct graft_node graft_node;

/* ---- grad mode (thread-local, on by default) ---- */
bool graft_grad_enabled(void);
/* Sets the mode; returns the previous one (so callers restore it). */
bool graft_set_grad_enabled(bool on);

/* ---- per-tensor state ---- */
/* A leaf flagged requires_grad, or a tensor with a grad_fn. */
bool graft_requires_grad(const graft_tensor *t);
/* No grad_fn (every tensor that does not require grad is a leaf, as PyTorch). */
bool graft_is_leaf(const graft_tensor *t);
/* Leaves only (a non-leaf accepts `true`, which it already is); floating dtypes only. */
graft_status graft_set_requires_grad(graft_tensor *t, bool on);
/* The accumulated gradient, or NULL. Borrowed. */
graft_tensor *graft_grad(const graft_tensor *t);
/* Replaces .grad (NULL clears it); g must have t's shape and dtype. A g with history
 * is stored detached. */
graft_status graft_set_grad(graft_tensor *t, graft_tensor *g);
/* Non-leaves keep their .grad from the next backward on (a no-op on leaves). */
graft_status graft_retain_grad(graft_tensor *t);
bool graft_retains_grad(const graft_tensor *t);
/* The node that made t, or NULL for leaves. Borrowed. */
graft_node *graft_grad_fn(const graft_tensor *t);

/* ---- nodes ---- */
const char *graft_node_name(const graft_node *n);   /* "MulBackward0"; static */
int graft_node_num_inputs(const graft_node *n);
/* The node input i's gradient flows to, or NULL when that input needs none. Borrowed. */
graft_node *graft_node_next(const graft_node *n, int i);
void graft_node_retain(graft_node *n);
void graft_node_release(graft_node *n);             /* accepts NULL */

/* ---- backward ---- */
/* Accumulates d(t)/d(leaf) . grad into the .grad of every leaf that requires grad. grad
 * may be NULL when t has one element (ones). Without retain_graph the saved tensors of
 * the nodes run are released. */
graft_status graft_backward(graft_tensor *t, graft_tensor *grad, bool retain_graph);

/* ---- gradient hooks ----
 * A hook is called with the gradient w.r.t. a tensor when backward computes it, and may
 * replace it (PyTorch's Tensor.register_hook): on a leaf, before the gradient is added to
 * its .grad; on a computed tensor, before it flows into the tensor's grad_fn (a hook stays
 * with the grad_fn the tensor had when it was registered, as PyTorch 1.13: after an
 * in-place op it sees the gradient w.r.t. the old value). A tensor's hooks run in
 * registration order, each on the previous one's result; retain_grad's .grad is stored at
 * its own place in that order (hooks registered before retain_grad change it, later ones
 * do not). Hooks only run for a gradient that arrives (never with zeros made up).
 *
 *     static graft_status halve(void *ctx, graft_tensor *g, graft_tensor **out) {
 *         return graft_mul_scalar(out, g, 0.5);   // *out NULL: g goes on unchanged
 *     }
 *     graft_hook *h;
 *     graft_register_hook(&h, y, halve, NULL, NULL);
 *     ...
 *     graft_hook_remove(h);                      // idempotent
 *     graft_hook_release(h);
 */
typedef struct graft_hook graft_hook;
/* grad is borrowed (never write into it); *out receives +1 reference to a replacement of
 * grad's shape, dtype and device, or stays NULL. A failure aborts the backward: every
 * gradient in flight is freed and the status is returned by graft_backward. */
typedef graft_status (*graft_hook_fn)(void *ctx, graft_tensor *grad, graft_tensor **out);
/* +1 on *out (a handle; the tensor holds its own reference to the hook). The hook owns
 * ctx from then on: free_ctx(ctx) (when not NULL) runs once, when the hook is removed or
 * when the tensor's metadata (a leaf) or grad_fn (a computed tensor) dies. On failure
 * ctx stays the caller's. t must require grad. */
graft_status graft_register_hook(graft_hook **out, graft_tensor *t, graft_hook_fn fn, void *ctx,
                                 void (*free_ctx)(void *));
/* The hook is not called any more and its ctx is freed now; a second call does nothing. */
void graft_hook_remove(graft_hook *h);
bool graft_hook_removed(const graft_hook *h);
void graft_hook_release(graft_hook *h);    /* accepts NULL; does not remove the hook */

/* ---- detaching ---- */
/* +1: a tensor sharing t's storage (and version counter) with no history. */
graft_status graft_detach(graft_tensor **out, graft_tensor *t);
/* Makes t a leaf that does not require grad (not for views of tensors with history). */
graft_status graft_detach_(graft_tensor *t);

/* ---- differentiable versions of the core/tensor functions ---- */
/* The core/tensor functions never record; the bindings call these. Same contracts. */
graft_status graft_ag_clone(graft_tensor **out, graft_tensor *t);
graft_status graft_ag_contiguous(graft_tensor **out, graft_tensor *t);
graft_status graft_ag_to_dtype(graft_tensor **out, graft_tensor *t, graft_dtype dtype);
/* +1: a copy of t on dev as dtype (t.to(device)); the gradient returns to t's device. */
graft_status graft_ag_to_device(graft_tensor **out, graft_tensor *t, graft_device dev, graft_dtype dtype);
graft_status graft_ag_copy_(graft_tensor *dst, graft_tensor *src);
graft_status graft_ag_select(graft_tensor **out, graft_tensor *t, int dim, int64_t index);
/* +1: t() (at most 2 dims): the transpose, or t itself viewed again (TBackward0). */
graft_status graft_ag_t(graft_tensor **out, graft_tensor *t);
/* Fills (fill_, zero_, uniform_, ...) are done by the caller: `begin` refuses leaves
 * that require grad; `end` gives a tensor with history a zero-gradient node. */
graft_status graft_ag_fill_begin(graft_tensor *t, const char *op);
graft_status graft_ag_fill_end(graft_tensor *t, const char *node_name);
/* Refuses an in-place write into t when t is a leaf that requires grad, or a view of
 * one (grad mode on). `op` names the caller. */
graft_status graft_ag_check_inplace(graft_tensor *t, const char *op);

/* ---- counters, for specs and profiling (thread-local) ---- */
typedef struct {
    int64_t nodes_run;       /* rule applications */
    int64_t grads_computed;  /* input gradients a rule produced for an input that needs one */
    int64_t grads_unused;    /* produced for an input that needs none (wasted work: 0) */
    int64_t nodes_live;      /* nodes allocated and not yet freed (all threads) */
} graft_ag_counters;
void graft_ag_get_counters(graft_ag_counters *c);
void graft_ag_reset_counters(void);

#endif
