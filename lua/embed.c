/* graft runtime: the embedding API of graft.h on one lua_State.
 *
 * Every Lua operation runs under lua_pcall, so nothing raises into the host: a failure
 * becomes a status plus a message kept on the runtime. Pending arguments and the results
 * of the last run or call live at the bottom of the state's stack, never both at once.
 */
#include "graft.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bind/bind.h"
#include "tensor/alloc.h"
#include "tensor/tensor.h"

/* graft.h mirrors graft_dtype so that hosts need no core header. */
#define RT_SAME_DTYPE(a, b) _Static_assert((int)(a) == (int)(b), #a " must equal " #b)
RT_SAME_DTYPE(GRAFT_DTYPE_F32, GRAFT_F32);
RT_SAME_DTYPE(GRAFT_DTYPE_F64, GRAFT_F64);
RT_SAME_DTYPE(GRAFT_DTYPE_F16, GRAFT_F16);
RT_SAME_DTYPE(GRAFT_DTYPE_BF16, GRAFT_BF16);
RT_SAME_DTYPE(GRAFT_DTYPE_I64, GRAFT_I64);
RT_SAME_DTYPE(GRAFT_DTYPE_I32, GRAFT_I32);
RT_SAME_DTYPE(GRAFT_DTYPE_I16, GRAFT_I16);
RT_SAME_DTYPE(GRAFT_DTYPE_I8, GRAFT_I8);
RT_SAME_DTYPE(GRAFT_DTYPE_U8, GRAFT_U8);
RT_SAME_DTYPE(GRAFT_DTYPE_BOOL, GRAFT_BOOL);
RT_SAME_DTYPE(GRAFT_DTYPE_BOOL + 1, GRAFT_NDTYPES);

struct graft_runtime {
    lua_State *L;
    int nargs;              /* pending arguments, at stack slots 1..nargs */
    int nres;               /* results of the last run or call, at slots 1..nres */
    int pending;            /* status of a failed push, reported by the next run or call */
    char *msg;              /* the last error message (malloc'd), NULL when none */
    const char *static_msg; /* the message when msg could not be allocated */
    const void *tensor_mt;  /* the tensor metatable, to recognise tensors without allocating */
    struct rt_pool *pool;   /* the Lua allocator's free lists */
};

/* ---- the Lua allocator ----
 * Scripts create and drop a tensor userdata (and often a small table or string) per
 * op; Lua's collector then frees them in large batches, which makes glibc's malloc
 * consolidate chunks over and over. Small blocks are kept on per-size free lists of
 * the runtime instead (a lua_State is single-threaded, so no locks), up to a cap. */
#define POOL_CLASSES 16     /* 16-byte classes: 16 .. 256 bytes */
#define POOL_MAX_BYTES ((size_t)64 << 20)

struct rt_pool {
    void *free[POOL_CLASSES];
    size_t pooled;
};

static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    struct rt_pool *P = ud;
    if (ptr == NULL) osize = 0; /* osize is a type tag for new blocks */
    size_t oc = osize ? (osize + 15) / 16 : 0, nc = nsize ? (nsize + 15) / 16 : 0;
    if (nsize == 0) {
        if (!ptr) return NULL;
        if (oc <= POOL_CLASSES && P->pooled + oc * 16 <= POOL_MAX_BYTES) {
            *(void **)ptr = P->free[oc - 1];
            P->free[oc - 1] = ptr;
            P->pooled += oc * 16;
        } else {
            free(ptr);
        }
        return NULL;
    }
    if (ptr && oc == nc) return ptr; /* same class: the block already fits */
    if (ptr && oc > POOL_CLASSES && nc > POOL_CLASSES) return realloc(ptr, nsize);
    void *q;
    if (nc <= POOL_CLASSES && P->free[nc - 1]) {
        q = P->free[nc - 1];
        P->free[nc - 1] = *(void **)q;
        P->pooled -= nc * 16;
    } else {
        q = malloc(nc <= POOL_CLASSES ? nc * 16 : nsize);
        if (!q) return NULL;
    }
    if (ptr) {
        memcpy(q, ptr, osize < nsize ? osize : nsize);
        rt_alloc(ud, ptr, osize, 0);
    }
    return q;
}

static void rt_pool_free(struct rt_pool *P) {
    if (!P) return;
    for (int c = 0; c < POOL_CLASSES; c++) {
        while (P->free[c]) {
            void *next = *(void **)P->free[c];
            free(P->free[c]);
            P->free[c] = next;
        }
    }
    free(P);
}

static int rt_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "graft: unprotected error in call to Lua API (%s)\n", msg ? msg : "error object is not a string");
    return 0;
}

/* Lua's warning system, as lauxlib's: off until "@on", messages may come in pieces. */
static void rt_warn_on(void *ud, const char *msg, int tocont);
static void rt_warn_off(void *ud, const char *msg, int tocont) {
    if (tocont || msg[0] != '@') return;
    if (strcmp(msg, "@on") == 0) lua_setwarnf((lua_State *)ud, rt_warn_on, ud);
}
static void rt_warn_cont(void *ud, const char *msg, int tocont) {
    fputs(msg, stderr);
    if (tocont) return;
    fputc('\n', stderr);
    lua_setwarnf((lua_State *)ud, rt_warn_on, ud);
}
static void rt_warn_on(void *ud, const char *msg, int tocont) {
    if (!tocont && msg[0] == '@') {
        if (strcmp(msg, "@off") == 0) lua_setwarnf((lua_State *)ud, rt_warn_off, ud);
        return;
    }
    fputs("Lua warning: ", stderr);
    rt_warn_cont(ud, msg, tocont);
    if (tocont) lua_setwarnf((lua_State *)ud, rt_warn_cont, ud);
}

/* Why the last graft_open on this thread failed. */
static _Thread_local char rt_open_error[1024];

/* ---- error messages ---- */

static void rt_set_message(graft_runtime *rt, const char *s, size_t len) {
    free(rt->msg);
    rt->msg = malloc(len + 1);
    rt->static_msg = NULL;
    if (!rt->msg) {
        rt->static_msg = "not enough memory (for the error message)";
        return;
    }
    memcpy(rt->msg, s, len);
    rt->msg[len] = '\0';
}

/* Sets the message (printf-style) and returns status, for failures found in C. */
static int rt_fail(graft_runtime *rt, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rt_fail(graft_runtime *rt, int status, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    rt_set_message(rt, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    return status;
}

static int rt_status_of(int lua_status) {
    switch (lua_status) {
    case LUA_OK: return GRAFT_RUN_OK;
    case LUA_ERRSYNTAX: return GRAFT_RUN_ESYNTAX;
    case LUA_ERRMEM: return GRAFT_RUN_ENOMEM;
    case LUA_ERRFILE: return GRAFT_RUN_EFILE;
    default: return GRAFT_RUN_ERUNTIME;
    }
}

/* Keeps the error object on top of the stack as the message and pops it. Only reads
 * it: converting a non-string could allocate, which is not allowed outside a pcall. */
static int rt_take_error(graft_runtime *rt, int status) {
    lua_State *L = rt->L;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        rt_set_message(rt, s, len);
    } else {
        rt_fail(rt, status, "(error object is a %s value)", luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return status;
}

/* The message handler of every run and call, as lua.c's msghandler: the message (or
 * the error object's __tostring) with a traceback. */
int graft_traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Whether the value at idx is a tensor userdata (no allocation, so usable unprotected). */
static graft_tensor **rt_tensor_slot(graft_runtime *rt, int idx) {
    lua_State *L = rt->L;
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
    int is_tensor = lua_topointer(L, -1) == rt->tensor_mt;
    lua_pop(L, 1);
    return is_tensor ? lua_touserdata(L, idx) : NULL;
}

/* Pushes the value at a dotted path from the globals ("graft.version"); nil when a
 * step is nil. Indexing may run metamethods, so callers are protected. */
static void rt_getpath(lua_State *L, const char *name, size_t len) {
    lua_pushglobaltable(L);
    const char *p = name, *end = name + len;
    while (p <= end && !lua_isnil(L, -1)) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        if (!dot) break;
        p = dot + 1;
    }
}

static int rt_getpath_k(lua_State *L) {
    const char *name = lua_touserdata(L, 1);
    rt_getpath(L, name, strlen(name));
    return 1;
}

/* ---- the runtime ---- */

/* graft._isatty(fd) -> whether fd (0 stdin, 1 stdout, 2 stderr) is a terminal. */
static int rt_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
    return 1;
}

/* graft._term_width(fd) -> the terminal's columns, or nil when fd is not a terminal. */
static int rt_term_width(lua_State *L) {
    struct winsize ws;
    if (ioctl((int)luaL_checkinteger(L, 1), TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) return 0;
    lua_pushinteger(L, ws.ws_col);
    return 1;
}

static int rt_open_k(lua_State *L) {
    luaL_openlibs(L);
    luaL_requiref(L, "graft", luaopen_graft, 1);
    /* Terminal queries for graft.progress (stock lua5.4 falls back to `test -t`). */
    lua_pushcfunction(L, rt_isatty);
    lua_setfield(L, -2, "_isatty");
    lua_pushcfunction(L, rt_term_width);
    lua_setfield(L, -2, "_term_width");
    luaL_getmetatable(L, LG_TENSOR_MT);
    return 1;
}

graft_runtime *graft_open(void) {
    graft_runtime *rt = calloc(1, sizeof *rt);
    struct rt_pool *pool = rt ? calloc(1, sizeof *pool) : NULL;
    lua_State *L = pool ? lua_newstate(rt_alloc, pool) : NULL;
    if (L) {
        lua_atpanic(L, rt_panic);
        lua_setwarnf(L, rt_warn_off, L);
    }
    if (!L) {
        free(pool);
        free(rt);
        snprintf(rt_open_error, sizeof rt_open_error, "graft_open: not enough memory");
        return NULL;
    }
    rt->L = L;
    rt->pool = pool;
    lua_pushcfunction(L, graft_traceback);
    lua_pushcfunction(L, rt_open_k);
    if (lua_pcall(L, 0, 1, 1) != LUA_OK) {
        snprintf(rt_open_error, sizeof rt_open_error, "graft_open: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "not enough memory");
        lua_close(L);
        rt_pool_free(pool);
        free(rt);
        return NULL;
    }
    rt->tensor_mt = lua_topointer(L, -1);
    lua_settop(L, 0);
    /* Tensor scripts make many short-lived objects (one userdata per op result):
     * Lua 5.4's generational collector frees them in cheap minor collections
     * (measured: a + b on small tensors 1.6x faster than in incremental mode). */
    lua_gc(L, LUA_GCGEN, 0, 0);
    return rt;
}

void graft_close(graft_runtime *rt) {
    if (!rt) return;
    lua_close(rt->L); /* collects every tensor: host buffers are released here */
    rt_pool_free(rt->pool);
    free(rt->msg);
    free(rt);
    graft_alloc_empty_cache();
}

const char *graft_error_message(graft_runtime *rt) {
    if (!rt) return rt_open_error;
    if (rt->msg) return rt->msg;
    return rt->static_msg ? rt->static_msg : "";
}

lua_State *graft_state(graft_runtime *rt) { return rt ? rt->L : NULL; }

/* The hook graft_interrupt sets, as lua.c's lstop: clear itself, then raise. */
static void rt_stop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

void graft_interrupt(graft_runtime *rt) {
    if (rt) lua_sethook(rt->L, rt_stop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* ---- running code ---- */

enum { RT_FILE, RT_STRING, RT_CALL, RT_CFUNC };

typedef struct {
    int kind;
    const char *s;         /* the path, the code or the function's name */
    const char *chunkname; /* RT_STRING */
    lua_CFunction fn;      /* RT_CFUNC */
    void *ud;              /* RT_CFUNC */
    int status;            /* set by rt_prepare_k when preparing failed */
} rt_job;

/* Loads the chunk or finds the function. Returns it, or an error message with
 * job->status set. Runs protected (loading reports memory errors by raising). */
static int rt_prepare_k(lua_State *L) {
    rt_job *job = lua_touserdata(L, 1);
    int st = LUA_OK;
    switch (job->kind) {
    case RT_FILE:
        st = luaL_loadfilex(L, job->s, NULL);
        break;
    case RT_STRING:
        st = luaL_loadbufferx(L, job->s, strlen(job->s), job->chunkname ? job->chunkname : job->s, "t");
        break;
    case RT_CALL:
        rt_getpath(L, job->s, strlen(job->s));
        if (lua_isnil(L, -1)) {
            job->status = GRAFT_RUN_ENOTFOUND;
            lua_pushfstring(L, "graft_call: no global function '%s'", job->s);
            return 1;
        }
        if (lua_type(L, -1) != LUA_TFUNCTION && luaL_getmetafield(L, -1, "__call") == LUA_TNIL) {
            job->status = GRAFT_RUN_ETYPE;
            lua_pushfstring(L, "graft_call: '%s' is a %s, not a function", job->s, luaL_typename(L, -1));
            return 1;
        }
        lua_settop(L, 2);
        return 1;
    default:
        lua_pushcfunction(L, job->fn);
        return 1;
    }
    if (st != LUA_OK) job->status = rt_status_of(st);
    return 1;
}

/* Runs a job with the pending arguments. Phase one (prepare) is protected without a
 * traceback, so a syntax error reads as Lua reports it; phase two calls the function
 * under graft_traceback. The results stay at slots 1..nres. */
static int rt_run(graft_runtime *rt, rt_job *job) {
    if (!rt) return GRAFT_RUN_EARG;
    lua_State *L = rt->L;
    int nargs = rt->nargs, pending = rt->pending;
    if (rt->nres) lua_settop(L, 0);
    rt->nargs = rt->nres = rt->pending = 0;
    if (pending) {
        lua_settop(L, 0);
        return pending; /* its message was kept when the push failed */
    }
    if (!lua_checkstack(L, LUA_MINSTACK)) {
        lua_settop(L, 0);
        return rt_fail(rt, GRAFT_RUN_ENOMEM, "not enough memory (Lua stack)");
    }
    if (job->kind == RT_STRING && !job->s) {
        lua_settop(L, 0);
        return rt_fail(rt, GRAFT_RUN_EARG, "graft_run_string: code is NULL");
    }
    if (job->kind == RT_CALL && !job->s) {
        lua_settop(L, 0);
        return rt_fail(rt, GRAFT_RUN_EARG, "graft_call: name is NULL");
    }
    if (lua_gethook(L) == rt_stop) lua_sethook(L, NULL, 0, 0); /* a stale interrupt */
    job->status = GRAFT_RUN_OK;
    lua_pushcfunction(L, rt_prepare_k);
    lua_pushlightuserdata(L, job);
    int lst = lua_pcall(L, 1, 1, 0);
    if (lst != LUA_OK || job->status != GRAFT_RUN_OK) {
        int st = rt_take_error(rt, lst != LUA_OK ? rt_status_of(lst) : job->status);
        lua_settop(L, 0);
        return st;
    }
    lua_insert(L, 1);              /* [fn][args] */
    if (job->kind == RT_CFUNC) {   /* [fn][ud][args] */
        lua_pushlightuserdata(L, job->ud);
        lua_insert(L, 2);
        nargs++;
    }
    lua_pushcfunction(L, graft_traceback);
    lua_insert(L, 1);              /* [msgh][fn][args] */
    lst = lua_pcall(L, nargs, LUA_MULTRET, 1);
    lua_remove(L, 1);
    if (lst != LUA_OK) {
        int st = rt_take_error(rt, rt_status_of(lst));
        lua_settop(L, 0);
        return st;
    }
    rt->nres = lua_gettop(L);
    return GRAFT_RUN_OK;
}

int graft_run_file(graft_runtime *rt, const char *path) {
    rt_job job = {.kind = RT_FILE, .s = path};
    return rt_run(rt, &job);
}

int graft_run_string(graft_runtime *rt, const char *code, const char *chunkname) {
    rt_job job = {.kind = RT_STRING, .s = code, .chunkname = chunkname};
    return rt_run(rt, &job);
}

int graft_pcall(graft_runtime *rt, lua_CFunction fn, void *ud) {
    if (!fn) return rt ? rt_fail(rt, GRAFT_RUN_EARG, "graft_pcall: fn is NULL") : GRAFT_RUN_EARG;
    rt_job job = {.kind = RT_CFUNC, .fn = fn, .ud = ud};
    return rt_run(rt, &job);
}

int graft_call(graft_runtime *rt, const char *name) {
    rt_job job = {.kind = RT_CALL, .s = name};
    return rt_run(rt, &job);
}

/* ---- pending arguments ---- */

/* A failed push is remembered for the next run or call. */
static int rt_push_failed(graft_runtime *rt, int status) {
    rt->pending = status;
    return status;
}

/* Starts a push of one value: drops the last results; refuses after a failed push. */
static int rt_push_begin(graft_runtime *rt) {
    if (rt->nres) {
        lua_settop(rt->L, 0);
        rt->nres = 0;
    }
    if (rt->pending) return rt->pending;
    if (!lua_checkstack(rt->L, 4))
        return rt_push_failed(rt, rt_fail(rt, GRAFT_RUN_ENOMEM, "not enough memory for %d arguments",
                                          rt->nargs + 1));
    return GRAFT_RUN_OK;
}

/* Pushes the one value fn(L) returns (fn gets ud as a light userdata), protected. */
static int rt_push_protected(graft_runtime *rt, lua_CFunction fn, void *ud) {
    int st = rt_push_begin(rt);
    if (st) return st;
    lua_pushcfunction(rt->L, fn);
    lua_pushlightuserdata(rt->L, ud);
    int lst = lua_pcall(rt->L, 1, 1, 0);
    if (lst != LUA_OK) return rt_push_failed(rt, rt_take_error(rt, rt_status_of(lst)));
    rt->nargs++;
    return GRAFT_RUN_OK;
}

int graft_push_nil(graft_runtime *rt) {
    if (!rt) return GRAFT_RUN_EARG;
    int st = rt_push_begin(rt);
    if (st) return st;
    lua_pushnil(rt->L);
    rt->nargs++;
    return GRAFT_RUN_OK;
}

int graft_push_boolean(graft_runtime *rt, int b) {
    if (!rt) return GRAFT_RUN_EARG;
    int st = rt_push_begin(rt);
    if (st) return st;
    lua_pushboolean(rt->L, b);
    rt->nargs++;
    return GRAFT_RUN_OK;
}

int graft_push_integer(graft_runtime *rt, int64_t v) {
    if (!rt) return GRAFT_RUN_EARG;
    int st = rt_push_begin(rt);
    if (st) return st;
    lua_pushinteger(rt->L, (lua_Integer)v);
    rt->nargs++;
    return GRAFT_RUN_OK;
}

int graft_push_number(graft_runtime *rt, double v) {
    if (!rt) return GRAFT_RUN_EARG;
    int st = rt_push_begin(rt);
    if (st) return st;
    lua_pushnumber(rt->L, v);
    rt->nargs++;
    return GRAFT_RUN_OK;
}

static int rt_push_string_k(lua_State *L) {
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

int graft_push_string(graft_runtime *rt, const char *s) {
    if (!rt) return GRAFT_RUN_EARG;
    if (!s) return rt_push_failed(rt, rt_fail(rt, GRAFT_RUN_EARG, "graft_push_string: s is NULL"));
    return rt_push_protected(rt, rt_push_string_k, (void *)s);
}

int graft_push_global(graft_runtime *rt, const char *name) {
    if (!rt) return GRAFT_RUN_EARG;
    if (!name) return rt_push_failed(rt, rt_fail(rt, GRAFT_RUN_EARG, "graft_push_global: name is NULL"));
    return rt_push_protected(rt, rt_getpath_k, (void *)name);
}

/* [name][value]: sets the dotted path name to value. */
static int rt_setpath_k(lua_State *L) {
    const char *name = lua_touserdata(L, 1);
    const char *dot = strrchr(name, '.');
    if (!dot) {
        lua_pushvalue(L, 2);
        lua_setglobal(L, name);
        return 0;
    }
    rt_getpath(L, name, (size_t)(dot - name));
    if (!lua_istable(L, -1) && luaL_getmetafield(L, -1, "__newindex") == LUA_TNIL) {
        const char *type = luaL_typename(L, -1);
        return luaL_error(L, "graft_set_global: '%s' is a %s, not a table",
                          lua_pushlstring(L, name, (size_t)(dot - name)), type);
    }
    lua_settop(L, 3);
    lua_pushvalue(L, 2);
    lua_setfield(L, 3, dot + 1);
    return 0;
}

int graft_set_global(graft_runtime *rt, const char *name) {
    if (!rt) return GRAFT_RUN_EARG;
    if (rt->nres) {
        lua_settop(rt->L, 0);
        rt->nres = 0;
    }
    if (rt->pending) { /* the value to set is the one that failed to push */
        int st = rt->pending;
        lua_settop(rt->L, 0);
        rt->nargs = rt->pending = 0;
        return st;
    }
    if (!name) return rt_fail(rt, GRAFT_RUN_EARG, "graft_set_global: name is NULL");
    if (rt->nargs == 0) return rt_fail(rt, GRAFT_RUN_EARG, "graft_set_global: no pending argument to set '%s' to", name);
    if (!lua_checkstack(rt->L, 4)) return rt_fail(rt, GRAFT_RUN_ENOMEM, "not enough memory (Lua stack)");
    lua_State *L = rt->L;
    lua_pushcfunction(L, rt_setpath_k);
    lua_pushlightuserdata(L, (void *)name);
    lua_pushvalue(L, -3);
    int lst = lua_pcall(L, 2, 0, 0);
    int st = lst == LUA_OK ? GRAFT_RUN_OK : rt_take_error(rt, rt_status_of(lst));
    lua_pop(L, 1); /* the value leaves the pending arguments either way */
    rt->nargs--;
    return st;
}

/* ---- tensors ---- */

typedef struct {
    void *data;
    graft_dtype dtype;
    int ndim;
    const int64_t *shape;
    int64_t stride[GRAFT_MAX_DIMS];
    size_t nbytes;
    graft_release_fn release;
    void *ctx;
    int handed; /* the storage owns the release from here on */
} rt_buffer;

/* Wraps the buffer in a tensor userdata. The shell comes first, so that once the buffer
 * is wrapped nothing can fail before a userdata owns it. */
static int rt_push_buffer_k(lua_State *L) {
    rt_buffer *b = lua_touserdata(L, 1);
    graft_tensor **slot = lg_shell(L);
    graft_storage *s;
    if (graft_storage_wrap(&s, b->data, b->nbytes, graft_cpu, GRAFT_STORAGE_BORROWED, b->release, b->ctx))
        return lg_raise(L);
    b->handed = 1;
    graft_status st = graft_tensor_from_storage(slot, s, b->dtype, b->ndim, b->shape, b->stride, 0);
    graft_storage_release(s); /* the tensor holds it now; on failure this runs the release */
    if (st) return lg_raise(L);
    return 1;
}

/* Checks the geometry and computes the bytes it spans; 0 or an EARG status. */
static int rt_check_buffer(graft_runtime *rt, rt_buffer *b, int dtype, const int64_t *strides) {
    if (dtype < 0 || dtype >= GRAFT_NDTYPES)
        return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: unknown dtype %d", dtype);
    if (b->ndim < 0 || b->ndim > GRAFT_MAX_DIMS)
        return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: ndim %d is not in 0..%d", b->ndim, GRAFT_MAX_DIMS);
    if (b->ndim > 0 && !b->shape) return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: shape is NULL");
    b->dtype = (graft_dtype)dtype;
    int64_t numel = 1, hi = 0, run = 1;
    for (int i = b->ndim - 1; i >= 0; i--) {
        int64_t n = b->shape[i], s = strides ? strides[i] : run;
        if (n < 0) return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: negative size %lld in dim %d", (long long)n, i);
        if (s < 0) return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: negative stride %lld in dim %d", (long long)s, i);
        b->stride[i] = s;
        if (n > 0 && numel > INT64_MAX / n) goto overflow;
        numel *= n;
        if (n > 0) {
            if (s > 0 && n - 1 > (INT64_MAX - hi) / s) goto overflow;
            hi += (n - 1) * s;
        }
        if (!strides) {
            if (n > 0 && run > INT64_MAX / n) goto overflow;
            run *= n > 0 ? n : 1;
        }
    }
    size_t esz = graft_dtype_size(b->dtype);
    if (numel > 0 && (uint64_t)hi >= SIZE_MAX / esz - 1) goto overflow;
    b->nbytes = numel > 0 ? (size_t)(hi + 1) * esz : 0;
    if (numel > 0 && !b->data) return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: data is NULL");
    return GRAFT_RUN_OK;
overflow:
    return rt_fail(rt, GRAFT_RUN_EARG, "graft_push_buffer: the buffer's geometry overflows");
}

int graft_push_buffer(graft_runtime *rt, void *data, int dtype, int ndim, const int64_t *shape,
                      const int64_t *strides, graft_release_fn release, void *ctx) {
    rt_buffer b = {.data = data, .ndim = ndim, .shape = shape, .release = release, .ctx = ctx};
    int st = GRAFT_RUN_EARG;
    if (!rt) goto failed;
    st = rt_check_buffer(rt, &b, dtype, strides);
    if (st) {
        rt_push_failed(rt, st);
        goto failed;
    }
    st = rt_push_protected(rt, rt_push_buffer_k, &b);
    if (st) goto failed;
    return GRAFT_RUN_OK;
failed:
    /* Ownership of the release passed to graft with the call: run it once here, unless
     * a storage was made (then it has run, or will with the storage). */
    if (!b.handed && release) release(ctx, data, b.nbytes);
    return st;
}

static int rt_push_array_k(lua_State *L) {
    graft_tensor *t = lua_touserdata(L, 1);
    graft_tensor **slot = lg_shell(L);
    graft_tensor_retain(t);
    *slot = t;
    return 1;
}

int graft_push_array(graft_runtime *rt, const graft_array *a) {
    if (!rt) return GRAFT_RUN_EARG;
    if (!a || !a->handle)
        return rt_push_failed(rt, rt_fail(rt, GRAFT_RUN_EARG, "graft_push_array: the array is NULL or released"));
    return rt_push_protected(rt, rt_push_array_k, a->handle);
}

/* Fills a with t's geometry and one reference to t. */
static void rt_fill_array(graft_array *a, graft_tensor *t) {
    memset(a, 0, sizeof *a);
    graft_tensor_retain(t);
    a->handle = t;
    a->data = graft_tensor_data(t);
    a->dtype = (int)t->dtype;
    a->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) {
        a->shape[i] = t->shape[i];
        a->strides[i] = t->stride[i];
    }
    a->numel = graft_tensor_numel(t);
    a->itemsize = graft_dtype_size(t->dtype);
    a->is_contiguous = graft_tensor_is_contiguous(t);
    a->device = t->storage->device.type;
    a->device_index = t->storage->device.index;
}

/* The tensor at idx into *out, or an ETYPE status naming `what`. */
static int rt_array_at(graft_runtime *rt, int idx, graft_array *out, const char *fn, const char *what) {
    graft_tensor **slot = rt_tensor_slot(rt, idx);
    if (!slot) return rt_fail(rt, GRAFT_RUN_ETYPE, "%s: %s is a %s, not a tensor", fn, what, luaL_typename(rt->L, idx));
    if (!*slot) return rt_fail(rt, GRAFT_RUN_ETYPE, "%s: %s is a closed tensor", fn, what);
    rt_fill_array(out, *slot);
    return GRAFT_RUN_OK;
}

int graft_get_tensor(graft_runtime *rt, const char *name, graft_array *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!rt) return GRAFT_RUN_EARG;
    if (!name || !out) return rt_fail(rt, GRAFT_RUN_EARG, "graft_get_tensor: name or out is NULL");
    lua_State *L = rt->L;
    if (!lua_checkstack(L, 4)) return rt_fail(rt, GRAFT_RUN_ENOMEM, "not enough memory (Lua stack)");
    lua_pushcfunction(L, rt_getpath_k);
    lua_pushlightuserdata(L, (void *)name);
    int lst = lua_pcall(L, 1, 1, 0);
    if (lst != LUA_OK) return rt_take_error(rt, rt_status_of(lst));
    int st;
    if (lua_isnil(L, -1)) st = rt_fail(rt, GRAFT_RUN_ENOTFOUND, "graft_get_tensor: no global '%s'", name);
    else st = rt_array_at(rt, -1, out, "graft_get_tensor", name);
    lua_pop(L, 1);
    return st;
}

void graft_array_release(graft_array *a) {
    if (!a) return;
    graft_tensor_release(a->handle);
    memset(a, 0, sizeof *a);
}

/* ---- results ---- */

int graft_result_count(graft_runtime *rt) { return rt ? rt->nres : 0; }

static int rt_check_result(graft_runtime *rt, int i, const void *out, const char *fn) {
    if (!rt) return GRAFT_RUN_EARG;
    if (!out) return rt_fail(rt, GRAFT_RUN_EARG, "%s: out is NULL", fn);
    if (i < 1 || i > rt->nres)
        return rt_fail(rt, GRAFT_RUN_EARG, "%s: no result %d (the last run or call returned %d)", fn, i, rt->nres);
    return GRAFT_RUN_OK;
}

int graft_result_kind(graft_runtime *rt, int i) {
    if (!rt || i < 1 || i > rt->nres) return GRAFT_KIND_NONE;
    switch (lua_type(rt->L, i)) {
    case LUA_TNIL: return GRAFT_KIND_NIL;
    case LUA_TBOOLEAN: return GRAFT_KIND_BOOLEAN;
    case LUA_TNUMBER: return GRAFT_KIND_NUMBER;
    case LUA_TSTRING: return GRAFT_KIND_STRING;
    case LUA_TTABLE: return GRAFT_KIND_TABLE;
    case LUA_TFUNCTION: return GRAFT_KIND_FUNCTION;
    default: return rt_tensor_slot(rt, i) ? GRAFT_KIND_TENSOR : GRAFT_KIND_OTHER;
    }
}

int graft_result_boolean(graft_runtime *rt, int i, int *out) {
    int st = rt_check_result(rt, i, out, "graft_result_boolean");
    if (st) return st;
    *out = lua_toboolean(rt->L, i);
    return GRAFT_RUN_OK;
}

int graft_result_number(graft_runtime *rt, int i, double *out) {
    int st = rt_check_result(rt, i, out, "graft_result_number");
    if (st) return st;
    if (lua_type(rt->L, i) != LUA_TNUMBER)
        return rt_fail(rt, GRAFT_RUN_ETYPE, "graft_result_number: result %d is a %s, not a number", i,
                       luaL_typename(rt->L, i));
    *out = (double)lua_tonumber(rt->L, i);
    return GRAFT_RUN_OK;
}

int graft_result_integer(graft_runtime *rt, int i, int64_t *out) {
    int st = rt_check_result(rt, i, out, "graft_result_integer");
    if (st) return st;
    int ok = 0;
    lua_Integer v = lua_type(rt->L, i) == LUA_TNUMBER ? lua_tointegerx(rt->L, i, &ok) : 0;
    if (!ok)
        return rt_fail(rt, GRAFT_RUN_ETYPE, "graft_result_integer: result %d is a %s, not an integer", i,
                       lua_type(rt->L, i) == LUA_TNUMBER ? "non-integral number" : luaL_typename(rt->L, i));
    *out = (int64_t)v;
    return GRAFT_RUN_OK;
}

int graft_result_string(graft_runtime *rt, int i, const char **out, size_t *len) {
    int st = rt_check_result(rt, i, out, "graft_result_string");
    if (st) return st;
    if (lua_type(rt->L, i) != LUA_TSTRING)
        return rt_fail(rt, GRAFT_RUN_ETYPE, "graft_result_string: result %d is a %s, not a string", i,
                       luaL_typename(rt->L, i));
    *out = lua_tolstring(rt->L, i, len);
    return GRAFT_RUN_OK;
}

int graft_result_tensor(graft_runtime *rt, int i, graft_array *out) {
    if (out) memset(out, 0, sizeof *out);
    int st = rt_check_result(rt, i, out, "graft_result_tensor");
    if (st) return st;
    char what[32];
    snprintf(what, sizeof what, "result %d", i);
    return rt_array_at(rt, i, out, "graft_result_tensor", what);
}
