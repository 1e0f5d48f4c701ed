/* graft ops: the autocast mode (thread-local), the input casts of the wrapped front
 * ends and the cache of cast weights. See autocast.h for the policy lists. */
#include "ops/autocast.h"

#include <stdlib.h>

#include "autograd/autograd.h"

_Thread_local bool graft_autocast_flag;
static _Thread_local graft_autocast_mode ac_mode = {false, GRAFT_BF16, -1};

/* Cached casts of leaves that require grad: valid while the source's storage version
 * and the grad mode are those of the cast. Each entry holds a reference to both. */
typedef struct {
    graft_tensor *src, *cast;
    uint64_t version;
    graft_dtype dtype;
    bool grad;
} ac_entry;
static _Thread_local ac_entry *ac_cache;
static _Thread_local int ac_len, ac_cap;

graft_autocast_mode graft_autocast_get(void) { return ac_mode; }

graft_status graft_autocast_set(graft_autocast_mode m, graft_autocast_mode *prev) {
    if (prev) *prev = ac_mode;
    if (m.enabled && m.dtype != GRAFT_F16 && m.dtype != GRAFT_BF16)
        return graft_error(GRAFT_EINVAL, "autocast: dtype must be float16 or bfloat16, got %s", graft_dtype_name(m.dtype));
    ac_mode = m;
    graft_autocast_flag = m.enabled;
    return GRAFT_OK;
}

void graft_autocast_clear_cache(void) {
    for (int i = 0; i < ac_len; i++) {
        graft_tensor_release(ac_cache[i].src);
        graft_tensor_release(ac_cache[i].cast);
    }
    free(ac_cache);
    ac_cache = NULL;
    ac_len = ac_cap = 0;
}

/* +1: t as dtype d (recorded), through the cache when t is a leaf that requires grad. */
static graft_status ac_cast(graft_tensor **out, graft_tensor *t, graft_dtype d) {
    bool cacheable = graft_requires_grad(t) && graft_is_leaf(t);
    bool grad = graft_grad_enabled();
    if (cacheable) {
        for (int i = 0; i < ac_len; i++) {
            ac_entry *e = &ac_cache[i];
            if (e->src != t || e->dtype != d) continue;
            if (e->version == t->storage->version && e->grad == grad) {
                graft_tensor_retain(e->cast);
                *out = e->cast;
                return GRAFT_OK;
            }
            /* stale (the weight was updated in place): drop it */
            graft_tensor_release(e->src);
            graft_tensor_release(e->cast);
            *e = ac_cache[--ac_len];
            break;
        }
    }
    graft_status st = graft_ag_to_dtype(out, t, d);
    if (st || !cacheable) return st;
    if (ac_len == ac_cap) {
        int cap = ac_cap ? 2 * ac_cap : 16;
        ac_entry *c = realloc(ac_cache, sizeof *c * (size_t)cap);
        if (!c) return GRAFT_OK; /* no room to cache: the cast itself is fine */
        ac_cache = c;
        ac_cap = cap;
    }
    graft_tensor_retain(t);
    graft_tensor_retain(*out);
    ac_cache[ac_len++] = (ac_entry){t, *out, t->storage->version, d, grad};
    return GRAFT_OK;
}

/* Whether autocast covers t (its device, a floating dtype). */
static bool ac_covers(const graft_tensor *t) {
    if (!t || !graft_dtype_is_float(t->dtype)) return false;
    return ac_mode.device_type < 0 || graft_tensor_device(t).type == ac_mode.device_type;
}

bool graft_autocast_wants_fp32(const graft_tensor *t) {
    return ac_covers(t) && (t->dtype == GRAFT_F16 || t->dtype == GRAFT_BF16);
}

graft_status graft_autocast_begin(graft_autocast_scope *s, graft_tensor **ts, int n, graft_autocast_policy p) {
    s->n = 0;
    s->was_on = graft_autocast_flag;
    if (n > GRAFT_AUTOCAST_MAX_INPUTS)
        return graft_error(GRAFT_EINTERNAL, "autocast: %d inputs (at most %d)", n, GRAFT_AUTOCAST_MAX_INPUTS);
    graft_dtype widest = GRAFT_BF16;
    bool any = false;
    if (p == GRAFT_AUTOCAST_PROMOTE) {
        for (int i = 0; i < n; i++) {
            if (!ac_covers(ts[i])) continue;
            widest = any ? graft_dtype_promote(widest, ts[i]->dtype) : ts[i]->dtype;
            any = true;
        }
    }
    graft_status st = GRAFT_OK;
    for (int i = 0; i < n && !st; i++) {
        s->held[i] = NULL;
        s->n = i + 1;
        graft_tensor *t = ts[i];
        if (!ac_covers(t)) continue;
        graft_dtype to = t->dtype;
        if (p == GRAFT_AUTOCAST_LOWER && t->dtype != GRAFT_F64) to = ac_mode.dtype;
        else if (p == GRAFT_AUTOCAST_FP32 && (t->dtype == GRAFT_F16 || t->dtype == GRAFT_BF16)) to = GRAFT_F32;
        else if (p == GRAFT_AUTOCAST_PROMOTE) to = widest;
        if (to == t->dtype) continue;
        if (!(st = ac_cast(&s->held[i], t, to))) ts[i] = s->held[i];
    }
    if (st) {
        for (int i = 0; i < s->n; i++) graft_tensor_release(s->held[i]);
        s->n = 0;
        return st;
    }
    graft_autocast_flag = false;
    return GRAFT_OK;
}

void graft_autocast_end(graft_autocast_scope *s) {
    for (int i = 0; i < s->n; i++) graft_tensor_release(s->held[i]);
    s->n = 0;
    graft_autocast_flag = s->was_on;
}
