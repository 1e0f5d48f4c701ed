/* graft bindings: PyTorch .pth/.pt files. graft._pth_load(path [, opts]) turns the
 * restricted unpickler's value tree into Lua values (dicts as graft.OrderedDict, lists
 * and tuples as Lua lists, None as graft.None, tensors sharing storages as views of one
 * graft storage, unknown objects as inert placeholders); graft._pth_save(obj, path
 * [, opts]) walks Lua values into PyTorch's zip format. graft.load/graft.save
 * (lua/graft/checkpoint.lua) dispatch here. Devices: map_location "cuda[:N]" copies each
 * storage of the file to the device once (views keep sharing it); CUDA tensors are saved
 * from a host copy of each of their storages, recorded with location "cpu" so that
 * torch.load reads the file on any machine. */
#include "bind.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/pickle_write.h"
#include "checkpoint/pth.h"
#include "cuda/cuda.h"

#define PTH_GUARD_MT "graft.pth_guard"
#define PKW_GUARD_MT "graft.pkw_guard"

/* ---- guards: the C state of a call lives in a userdata, so a Lua error anywhere
 * (a conversion, an out-of-memory) frees it ---- */

static int pth_guard_gc(lua_State *L) {
    graft_pth **p = luaL_checkudata(L, 1, PTH_GUARD_MT);
    graft_pth_free(*p);
    *p = NULL;
    return 0;
}

static int pkw_guard_gc(lua_State *L) {
    graft_pkw **w = luaL_checkudata(L, 1, PKW_GUARD_MT);
    graft_pkw_free(*w);
    *w = NULL;
    return 0;
}

/* ---- loading ---- */

typedef struct {
    lua_State *L;
    graft_pth *p;
    bool allow_unknown;
    int cache;       /* pv pointer -> Lua value: shared objects stay shared */
    int none;        /* graft.None */
    int from_pairs;  /* graft.OrderedDict.from_pairs */
    int set_meta;    /* graft.OrderedDict.set_metadata */
    int ph_mt;       /* graft._Placeholder */
    graft_device dev; /* map_location */
    int moved;       /* CPU storage -> the first device tensor over its copy (map_location cuda) */
} pth_cv;

static void cv_value(pth_cv *c, graft_pv *v, int depth);

/* The dtype name of a torch dtype global (graft's name, or torch's for the others). */
static void cv_push_dtype(lua_State *L, const graft_pickle_global *g) {
    if (g->dtype >= 0) {
        lua_pushstring(L, graft_dtype_name((graft_dtype)g->dtype));
        return;
    }
    const char *dot = strrchr(g->qualname, '.');
    lua_pushstring(L, dot ? dot + 1 : g->qualname);
}

/* An OrderedDict's _metadata as {[path] = {version = n, ...}}: plain tables. */
static void cv_metadata(pth_cv *c, graft_pv *meta, int depth) {
    lua_State *L = c->L;
    lua_createtable(L, 0, (int)(meta->u.seq.n / 2));
    for (uint32_t i = 0; i + 1 < meta->u.seq.n; i += 2) {
        graft_pv *k = meta->u.seq.items[i], *v = meta->u.seq.items[i + 1];
        cv_value(c, k, depth + 1);
        if (graft_pv_is_dict(v)) {
            lua_createtable(L, 0, (int)(v->u.seq.n / 2));
            for (uint32_t j = 0; j + 1 < v->u.seq.n; j += 2) {
                cv_value(c, v->u.seq.items[j], depth + 2);
                cv_value(c, v->u.seq.items[j + 1], depth + 2);
                lua_rawset(L, -3);
            }
        } else {
            cv_value(c, v, depth + 1);
        }
        lua_rawset(L, -3);
    }
}

static void cv_dict(pth_cv *c, graft_pv *v, int depth) {
    lua_State *L = c->L;
    uint32_t n = v->u.seq.n / 2;
    lua_pushvalue(L, c->from_pairs);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 0; i < n; i++) {
        graft_pv *k = v->u.seq.items[2 * i];
        if (k->type == GRAFT_PV_FLOAT && isnan(k->u.f))
            lg_errorf(L, "cannot load \"%s\": a dict key is NaN, which Lua tables cannot hold", graft_pth_name(c->p));
        cv_value(c, k, depth + 1);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        cv_value(c, v->u.seq.items[2 * i + 1], depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_call(L, 2, 1);
    if (v->type == GRAFT_PV_ODICT && v->u.seq.meta) {
        lua_pushvalue(L, c->set_meta);
        lua_pushvalue(L, -2);
        cv_metadata(c, v->u.seq.meta, depth + 1);
        lua_call(L, 2, 0);
    }
}

static void cv_placeholder(pth_cv *c, const char *cls, graft_pv *args, graft_pv *state, int depth) {
    lua_State *L = c->L;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, cls);
    lua_setfield(L, -2, "__class");
    if (args) {
        cv_value(c, args, depth + 1);
        lua_setfield(L, -2, "__args");
    }
    if (state) {
        cv_value(c, state, depth + 1);
        lua_setfield(L, -2, "__state");
    }
    lua_pushvalue(L, c->ph_mt);
    lua_setmetatable(L, -2);
}

/* The tensor in the shell at the top of the stack (CPU, fresh from the file) replaced by
 * the same view on c->dev. Each storage of the file is copied to the device once
 * (graft_tensor_copy_: pinned staging straight from the file mapping), so tensors that
 * shared a storage in the file share one on the device. */
static void cv_to_device(pth_cv *c, graft_tensor **slot) {
    lua_State *L = c->L;
    graft_tensor *t = *slot, *dt = NULL;
    graft_storage *key = t->storage;
    if (lua_rawgetp(L, c->moved, key) != LUA_TNIL) {
        dt = lg_check(L, -1);
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        int64_t nb = (int64_t)key->nbytes, one = 1;
        graft_tensor **src = lg_shell(L), **dst = lg_shell(L);
        if (graft_tensor_from_storage(src, key, GRAFT_U8, 1, &nb, &one, 0) ||
            graft_tensor_empty(dst, 1, &nb, GRAFT_U8, c->dev) || graft_tensor_copy_(*dst, *src))
            lg_raise(L);
        dt = *dst;
        lua_rawsetp(L, c->moved, key); /* the device bytes, kept for the other views */
        lua_pop(L, 1);                 /* the host view of the storage */
    }
    graft_tensor *v = NULL;
    if (graft_tensor_from_storage(&v, dt->storage, t->dtype, t->ndim, t->shape, t->stride, t->offset)) lg_raise(L);
    *slot = v;
    graft_tensor_release(t); /* the file's reference keeps key alive until the walk ends */
}

/* Pushes the Lua value of v. Containers, tensors and placeholders are converted once
 * (the pickle's memo can share them, even in cycles, which are refused). */
static void cv_value(pth_cv *c, graft_pv *v, int depth) {
    lua_State *L = c->L;
    if (depth > GRAFT_PICKLE_MAX_DEPTH)
        lg_errorf(L, "cannot load \"%s\": values nested deeper than %d levels", graft_pth_name(c->p),
                  GRAFT_PICKLE_MAX_DEPTH);
    luaL_checkstack(L, 10, "loading a checkpoint");
    switch (v->type) {
    case GRAFT_PV_NONE: lua_pushvalue(L, c->none); return;
    case GRAFT_PV_BOOL: lua_pushboolean(L, v->u.b); return;
    case GRAFT_PV_INT: lua_pushinteger(L, (lua_Integer)v->u.i); return;
    case GRAFT_PV_FLOAT: lua_pushnumber(L, v->u.f); return;
    case GRAFT_PV_STR:
    case GRAFT_PV_BYTES: lua_pushlstring(L, v->u.s.p, v->u.s.len); return;
    default: break;
    }
    if (lua_rawgetp(L, c->cache, v) != LUA_TNIL) return;
    lua_pop(L, 1);
    if (v->mark)
        lg_errorf(L, "cannot load \"%s\": the pickle holds a %s that contains itself", graft_pth_name(c->p),
                  graft_pv_type_name(v->type));
    v->mark = 1;
    switch (v->type) {
    case GRAFT_PV_LIST:
    case GRAFT_PV_TUPLE:
    case GRAFT_PV_SET:
        lua_createtable(L, (int)v->u.seq.n, 0);
        for (uint32_t i = 0; i < v->u.seq.n; i++) {
            cv_value(c, v->u.seq.items[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case GRAFT_PV_DICT:
    case GRAFT_PV_ODICT:
        cv_dict(c, v, depth);
        break;
    case GRAFT_PV_TENSOR: {
        graft_tensor **out = lg_shell(L);
        if (graft_pth_tensor(out, c->p, v->u.tensor)) lg_raise(L);
        if (c->dev.type != GRAFT_CPU) cv_to_device(c, out);
        break;
    }
    case GRAFT_PV_STORAGE: { /* a storage saved on its own: a 1-D tensor over it */
        graft_tensor **out = lg_shell(L);
        if (graft_pth_storage_tensor(out, c->p, v->u.storage)) lg_raise(L);
        if (c->dev.type != GRAFT_CPU) cv_to_device(c, out);
        break;
    }
    case GRAFT_PV_DTYPE:
        lua_pushstring(L, v->u.dtype >= 0 ? graft_dtype_name((graft_dtype)v->u.dtype) : "?");
        break;
    case GRAFT_PV_GLOBAL:
        if (v->u.global->kind == GRAFT_PG_DTYPE) {
            cv_push_dtype(L, v->u.global);
        } else if (c->allow_unknown) {
            cv_placeholder(c, v->u.global->qualname, NULL, NULL, depth);
        } else {
            lg_errorf(L, "refusing to load \"%s\": it holds the class or function %s as a value (load with "
                         "{allow_unknown = true} to get an inert placeholder for it)",
                      graft_pth_name(c->p), v->u.global->qualname);
        }
        break;
    case GRAFT_PV_PLACEHOLDER:
        cv_placeholder(c, v->u.ph->cls, v->u.ph->args, v->u.ph->state, depth);
        break;
    default:
        lg_errorf(L, "cannot load \"%s\": unexpected value", graft_pth_name(c->p));
    }
    v->mark = 0;
    lua_pushvalue(L, -1);
    lua_rawsetp(L, c->cache, v);
}

/* Pushes graft.OrderedDict[field] (a function), or raises. */
static int push_odict_fn(lua_State *L, const char *field) {
    if (lua_getfield(L, lua_upvalueindex(1), "OrderedDict") != LUA_TTABLE)
        return luaL_error(L, "graft.OrderedDict is missing (graft._init did not run)");
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return lua_gettop(L);
}

/* graft._pth_load(path [, {allow_unknown = bool, map_location = "cpu" | "cuda" | "cuda:N"}])
 * -> value */
static int l_pth_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int opts = lg_opts_index(L, 2);
    graft_pth_opts o = {.allow_unknown = lg_opt_bool(L, opts, "allow_unknown", 0) != 0};
    graft_device dev = graft_cpu;
    if (opts) {
        int t = lua_getfield(L, opts, "map_location");
        if (t == LUA_TSTRING) {
            const char *loc = lua_tostring(L, -1);
            if (graft_device_parse(&dev, loc))
                return luaL_error(L, "load: unknown map_location \"%s\" (use \"cpu\", \"cuda\" or \"cuda:N\")", loc);
            if (dev.type == GRAFT_CUDA && graft_cuda_check_device(dev, "load"))
            return lg_errorf(L, "load: map_location \"%s\": graft has no CUDA device to load to (%s)", loc,
                             graft_last_error());
        } else if (t != LUA_TNIL) {
            return luaL_error(L, "load: map_location must be a device name such as \"cpu\", got a %s", luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    graft_pth **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, PTH_GUARD_MT);
    int guard = lua_gettop(L);
    if (graft_pth_load(slot, path, &o)) return lg_raise(L);

    pth_cv c = {.L = L, .p = *slot, .allow_unknown = o.allow_unknown, .dev = dev};
    lua_newtable(L);
    c.cache = lua_gettop(L);
    lua_newtable(L);
    c.moved = lua_gettop(L);
    lua_getfield(L, lua_upvalueindex(1), "None");
    c.none = lua_gettop(L);
    c.from_pairs = push_odict_fn(L, "from_pairs");
    c.set_meta = push_odict_fn(L, "set_metadata");
    lua_getfield(L, lua_upvalueindex(1), "_Placeholder");
    c.ph_mt = lua_gettop(L);
    if (lua_isnil(L, c.none) || !lua_isfunction(L, c.from_pairs) || !lua_istable(L, c.ph_mt))
        return luaL_error(L, "load: graft's Lua library is not initialised");
    cv_value(&c, graft_pth_root(*slot), 0);
    /* the tensors hold their storages: the tree and the file's own reference can go */
    graft_pth_free(*slot);
    *slot = NULL;
    lua_replace(L, guard);
    lua_settop(L, guard);
    return 1;
}

/* ---- saving ---- */

typedef struct {
    lua_State *L;
    graft_pkw *w;
    int none, ph_mt, odict_is, odict_keys, odict_get, odict_meta;
    int moved;         /* device storage -> a host copy of its bytes */
    char where[256];   /* the key path, for messages */
} pth_sv;

static void sv_value(pth_sv *s, int idx, int depth);

static int sv_fail(pth_sv *s, const char *what) {
    return lg_errorf(s->L, "save: %s at %s", what, s->where[0] ? s->where : "the top level");
}

static void sv_check(pth_sv *s, graft_status st) {
    if (st) lg_raise(s->L);
}

/* Appends ".key" or "[i]" to the key path (never converting the key in place);
 * returns the old length to restore. */
static size_t sv_enter(pth_sv *s, int key_idx) {
    size_t n = strlen(s->where), room = sizeof s->where - n;
    lua_State *L = s->L;
    if (room < 4) return n;
    if (lua_type(L, key_idx) == LUA_TSTRING)
        snprintf(s->where + n, room, "%s%s", n ? "." : "", lua_tostring(L, key_idx));
    else if (lua_isinteger(L, key_idx))
        snprintf(s->where + n, room, "[%lld]", (long long)lua_tointeger(L, key_idx));
    else if (lua_type(L, key_idx) == LUA_TNUMBER)
        snprintf(s->where + n, room, "[%g]", (double)lua_tonumber(L, key_idx));
    else
        snprintf(s->where + n, room, "[%s]", luaL_typename(L, key_idx));
    return n;
}

typedef struct {
    int kind;        /* 0 integer, 1 float, 2 string */
    lua_Integer i;
    lua_Number f;
    const char *str;
    size_t len;
} sv_key;

static int sv_key_cmp(const void *a, const void *b) {
    const sv_key *x = a, *y = b;
    if ((x->kind == 2) != (y->kind == 2)) return x->kind == 2 ? 1 : -1; /* numbers first */
    if (x->kind == 2) {
        size_t n = x->len < y->len ? x->len : y->len;
        int c = memcmp(x->str, y->str, n);
        return c ? c : (x->len > y->len) - (x->len < y->len);
    }
    double u = x->kind == 0 ? (double)x->i : x->f, v = y->kind == 0 ? (double)y->i : y->f;
    return (u > v) - (u < v);
}

static void sv_key_write(pth_sv *s, const sv_key *k) {
    if (k->kind == 0) sv_check(s, graft_pkw_int(s->w, (int64_t)k->i));
    else if (k->kind == 1) sv_check(s, graft_pkw_float(s->w, k->f));
    else sv_check(s, graft_pkw_str(s->w, k->str, k->len));
}

/* A plain table: a sequence becomes a list (the empty table too), anything else a dict
 * with its keys sorted (numbers, then strings) for a stable file. */
static void sv_table(pth_sv *s, int idx, int depth, bool ordered) {
    lua_State *L = s->L;
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
    }
    if (count == n && !ordered) {
        sv_check(s, graft_pkw_list_begin(s->w));
        for (lua_Integer i = 1; i <= n; i++) {
            sv_check(s, graft_pkw_item(s->w));
            lua_pushinteger(L, i);
            size_t back = sv_enter(s, lua_gettop(L));
            lua_pop(L, 1);
            lua_rawgeti(L, idx, i);
            sv_value(s, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            s->where[back] = 0;
        }
        sv_check(s, graft_pkw_end(s->w));
        return;
    }
    /* the key array lives in a userdata: a Lua error below frees it */
    sv_key *keys = lua_newuserdatauv(L, (size_t)(count ? count : 1) * sizeof *keys, 0);
    size_t nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        sv_key *k = &keys[nk++];
        if (lua_type(L, -1) == LUA_TSTRING) {
            k->kind = 2;
            k->str = lua_tolstring(L, -1, &k->len); /* anchored by the table */
        } else if (lua_isinteger(L, -1)) {
            k->kind = 0;
            k->i = lua_tointeger(L, -1);
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            k->kind = 1;
            k->f = lua_tonumber(L, -1);
        } else {
            size_t back = sv_enter(s, lua_gettop(L));
            (void)back;
            sv_fail(s, "a dict key must be a string or a number");
        }
    }
    qsort(keys, nk, sizeof *keys, sv_key_cmp);
    sv_check(s, graft_pkw_dict_begin(s->w, ordered));
    for (size_t i = 0; i < nk; i++) {
        sv_check(s, graft_pkw_item(s->w));
        sv_key_write(s, &keys[i]);
        if (keys[i].kind == 0) lua_pushinteger(L, keys[i].i);
        else if (keys[i].kind == 1) lua_pushnumber(L, keys[i].f);
        else lua_pushlstring(L, keys[i].str, keys[i].len);
        size_t back = sv_enter(s, lua_gettop(L));
        lua_rawget(L, idx);
        sv_value(s, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        s->where[back] = 0;
    }
    sv_check(s, graft_pkw_end(s->w));
    lua_pop(L, 1); /* the key array */
}

/* graft.OrderedDict: its own order; its _metadata written back for PyTorch. */
static void sv_odict(pth_sv *s, int idx, int depth) {
    lua_State *L = s->L;
    lua_pushvalue(L, s->odict_keys);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    int keys = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, keys);
    sv_check(s, graft_pkw_dict_begin(s->w, true));
    for (lua_Integer i = 1; i <= n; i++) {
        sv_check(s, graft_pkw_item(s->w));
        lua_rawgeti(L, keys, i);
        int k = lua_gettop(L);
        size_t back = sv_enter(s, k);
        if (lua_type(L, k) != LUA_TSTRING && lua_type(L, k) != LUA_TNUMBER && lua_type(L, k) != LUA_TBOOLEAN &&
            !lua_rawequal(L, k, s->none))
            sv_fail(s, "a dict key must be a string, a number, a boolean or graft.None");
        sv_value(s, k, depth + 1);
        lua_pushvalue(L, s->odict_get);
        lua_pushvalue(L, idx);
        lua_pushvalue(L, k);
        lua_call(L, 2, 1);
        sv_value(s, lua_gettop(L), depth + 1);
        lua_pop(L, 2);
        s->where[back] = 0;
    }
    sv_check(s, graft_pkw_end(s->w));
    lua_pop(L, 1);
    lua_pushvalue(L, s->odict_meta);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) == LUA_TTABLE) {
        size_t n0 = strlen(s->where);
        snprintf(s->where + n0, sizeof s->where - n0, "%s", "(_metadata)");
        sv_check(s, graft_pkw_metadata_begin(s->w));
        sv_table(s, lua_gettop(L), depth + 1, true);
        sv_check(s, graft_pkw_metadata_end(s->w));
        s->where[n0] = 0;
    } else if (!lua_isnil(L, -1)) {
        sv_fail(s, "an OrderedDict's metadata must be a table");
    }
    lua_pop(L, 1);
}

/* A CPU view with t's geometry over a host copy of t's device storage (pushed): each
 * device storage is copied once, so views that share one on the device share one record
 * in the file, as torch.save writes them. */
static graft_tensor *sv_on_host(pth_sv *s, graft_tensor *t) {
    lua_State *L = s->L;
    graft_storage *hs;
    if (lua_rawgetp(L, s->moved, t->storage) != LUA_TNIL) {
        hs = lg_check(L, -1)->storage;
    } else {
        lua_pop(L, 1);
        int64_t nb = (int64_t)t->storage->nbytes, one = 1;
        graft_tensor **src = lg_shell(L), **dst = lg_shell(L);
        if (graft_tensor_from_storage(src, t->storage, GRAFT_U8, 1, &nb, &one, 0) ||
            graft_tensor_empty(dst, 1, &nb, GRAFT_U8, graft_cpu) || graft_tensor_copy_(*dst, *src))
            lg_raise(L);
        hs = (*dst)->storage;
        lua_pushvalue(L, -1);
        lua_rawsetp(L, s->moved, t->storage);
    }
    graft_tensor **view = lg_shell(L);
    if (graft_tensor_from_storage(view, hs, t->dtype, t->ndim, t->shape, t->stride, t->offset)) lg_raise(L);
    return *view;
}

static void sv_value(pth_sv *s, int idx, int depth) {
    lua_State *L = s->L;
    if (depth > GRAFT_PICKLE_MAX_DEPTH) {
        char msg[80];
        snprintf(msg, sizeof msg, "nesting deeper than %d levels (a table that contains itself?)", GRAFT_PICKLE_MAX_DEPTH);
        sv_fail(s, msg);
    }
    luaL_checkstack(L, 12, "saving a checkpoint");
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: sv_check(s, graft_pkw_bool(s->w, lua_toboolean(L, idx))); return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) sv_check(s, graft_pkw_int(s->w, (int64_t)lua_tointeger(L, idx)));
        else sv_check(s, graft_pkw_float(s->w, lua_tonumber(L, idx)));
        return;
    case LUA_TSTRING: {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        sv_check(s, graft_pkw_str(s->w, p, n));
        return;
    }
    case LUA_TUSERDATA: {
        graft_tensor *t = lg_test(L, idx);
        if (!t) sv_fail(s, "cannot save a userdata that is not a tensor");
        int top = lua_gettop(L);
        if (graft_tensor_device(t).type != GRAFT_CPU) t = sv_on_host(s, t);
        graft_status st = graft_pkw_tensor(s->w, t); /* the writer holds the storage from here */
        lua_settop(L, top);
        sv_check(s, st);
        return;
    }
    case LUA_TTABLE:
        break;
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "cannot save a %s", luaL_typename(L, idx));
        sv_fail(s, msg);
        return;
    }
    }
    if (lua_rawequal(L, idx, s->none)) {
        sv_check(s, graft_pkw_none(s->w));
        return;
    }
    if (!lua_getmetatable(L, idx)) {
        sv_table(s, idx, depth, false);
        return;
    }
    if (lua_rawequal(L, -1, s->ph_mt)) {
        lua_pop(L, 1);
        lua_getfield(L, idx, "__class");
        char msg[300];
        snprintf(msg, sizeof msg, "cannot save a placeholder of %s (an object loaded with allow_unknown)",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        sv_fail(s, msg);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, s->odict_is);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    bool is_odict = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (is_odict) {
        sv_odict(s, idx, depth);
        return;
    }
    const char *tn = luaL_getmetafield(L, idx, "__name") == LUA_TSTRING ? lua_tostring(L, -1) : "table with a metatable";
    char msg[256];
    snprintf(msg, sizeof msg, "cannot save a %.100s (save plain tables, graft.OrderedDict, numbers, strings, "
                              "booleans, graft.None and tensors)", tn);
    sv_fail(s, msg);
}

/* graft._pth_save(obj, path [, opts]) */
static int l_pth_save(lua_State *L) {
    luaL_checkany(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int opts = lua_istable(L, 3) ? 3 : 0;
    graft_pth_save_opts o = {.force_zip64 = lg_opt_bool(L, opts, "_zip64", 0) != 0};
    if (lua_isnil(L, 1)) return luaL_error(L, "save: nothing to save (nil)");
    lua_settop(L, 2);
    graft_pkw **slot = lua_newuserdatauv(L, sizeof *slot, 0);
    *slot = NULL;
    luaL_setmetatable(L, PKW_GUARD_MT);
    if (graft_pkw_new(slot)) return lg_raise(L);

    pth_sv s = {.L = L, .w = *slot};
    s.where[0] = 0;
    lua_getfield(L, lua_upvalueindex(1), "None");
    s.none = lua_gettop(L);
    lua_getfield(L, lua_upvalueindex(1), "_Placeholder");
    s.ph_mt = lua_gettop(L);
    s.odict_is = push_odict_fn(L, "is");
    s.odict_keys = push_odict_fn(L, "keys");
    s.odict_get = push_odict_fn(L, "get");
    s.odict_meta = push_odict_fn(L, "metadata");
    lua_newtable(L);
    s.moved = lua_gettop(L);
    if (!lua_isfunction(L, s.odict_is) || !lua_isfunction(L, s.odict_keys) || !lua_isfunction(L, s.odict_get) ||
        !lua_isfunction(L, s.odict_meta))
        return luaL_error(L, "save: graft's Lua library is not initialised");
    sv_value(&s, 1, 0);
    if (graft_pth_save(*slot, path, &o)) return lg_raise(L);
    graft_pkw_free(*slot);
    *slot = NULL;
    return 0;
}

static const luaL_Reg pth_functions[] = {
    {"_pth_load", l_pth_load},
    {"_pth_save", l_pth_save},
    {NULL, NULL},
};

void graft_bind_pth(lua_State *L) {
    int module = lua_gettop(L);
    luaL_newmetatable(L, PTH_GUARD_MT);
    lua_pushcfunction(L, pth_guard_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, PKW_GUARD_MT);
    lua_pushcfunction(L, pkw_guard_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushvalue(L, module); /* the module table as upvalue: graft.OrderedDict, graft.None */
    luaL_setfuncs(L, pth_functions, 1);
    lua_settop(L, module);
}
