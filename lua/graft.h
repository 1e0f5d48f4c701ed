/* graft: the embedding API.
 *
 * A host program opens a runtime (a Lua 5.4 state with the standard libraries and the
 * graft module loaded as the global `graft`), runs Lua code in it, calls Lua functions
 * by name, and hands tensors both ways without copying. Every function returns a
 * status (GRAFT_RUN_OK, or an error code) and never raises into the host: each Lua call
 * is protected, memory errors included, and graft_error_message() tells what failed
 * (runtime errors come with a Lua traceback). A runtime is used by one thread at a time.
 *
 *     graft_runtime *rt = graft_open();
 *     if (!rt) { fprintf(stderr, "%s\n", graft_error_message(NULL)); return 1; }
 *     float buf[6] = {1, 2, 3, 4, 5, 6};
 *     int64_t shape[2] = {2, 3};
 *     graft_push_buffer(rt, buf, GRAFT_DTYPE_F32, 2, shape, NULL, NULL, NULL);
 *     graft_set_global(rt, "x");                      // x is a 2x3 tensor on buf
 *     graft_run_string(rt, "function first_row(t) return t[1]:clone() end", NULL);
 *     graft_push_global(rt, "x");                     // arguments are pushed, then
 *     if (graft_call(rt, "first_row") != GRAFT_RUN_OK) // the call takes them all
 *         fprintf(stderr, "%s\n", graft_error_message(rt));
 *     graft_array a;                                  // results stay until the next push
 *     if (graft_result_tensor(rt, 1, &a) == GRAFT_RUN_OK) {
 *         const float *row = a.data;                  // a.shape[0] == 3
 *         graft_array_release(&a);
 *     }
 *     graft_close(rt);
 *
 * Build: `cc host.c $(pkg-config --static --cflags --libs graft)` after `make install`.
 */
#ifndef GRAFT_H
#define GRAFT_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#define GRAFT_VERSION "0.1.0"

/* Opens the graft module in L and leaves it on the stack (require "graft"). For hosts
 * that build their own lua_State; graft_open() does this for you. */
int luaopen_graft(lua_State *L);

/* ---- status codes: what the functions below return as int ---- */
typedef enum {
    GRAFT_RUN_OK = 0,
    GRAFT_RUN_ESYNTAX,   /* the code did not compile */
    GRAFT_RUN_ERUNTIME,  /* a Lua error while running (the message has a traceback) */
    GRAFT_RUN_ENOMEM,    /* out of memory */
    GRAFT_RUN_EFILE,     /* a file could not be opened or read */
    GRAFT_RUN_ENOTFOUND, /* no global (function or tensor) by that name */
    GRAFT_RUN_ETYPE,     /* a value is not of the kind asked for */
    GRAFT_RUN_EARG       /* a bad argument from the host (NULL, a bad dtype, an index out of range) */
} graft_run_status;

/* ---- element types: the same numbering as the core's graft_dtype ---- */
enum {
    GRAFT_DTYPE_F32 = 0, GRAFT_DTYPE_F64, GRAFT_DTYPE_F16, GRAFT_DTYPE_BF16,
    GRAFT_DTYPE_I64, GRAFT_DTYPE_I32, GRAFT_DTYPE_I16, GRAFT_DTYPE_I8, GRAFT_DTYPE_U8,
    GRAFT_DTYPE_BOOL
};
#define GRAFT_MAX_DIMS 16

/* ---- the runtime ---- */
typedef struct graft_runtime graft_runtime;

/* A new runtime: standard libraries, `graft` as a global and in package.loaded. NULL
 * when it cannot be created; graft_error_message(NULL) then says why. */
graft_runtime *graft_open(void);
/* Closes the Lua state (collecting every tensor) and frees rt. Accepts NULL. */
void graft_close(graft_runtime *rt);
/* The message of the last call on rt that failed ("" when none). Borrowed: valid until
 * the next failure or graft_close. With rt NULL: why the last graft_open failed. */
const char *graft_error_message(graft_runtime *rt);
/* The Lua state, for hosts that want the raw Lua API. Borrowed; leave its stack as
 * you found it, and protect your calls (lua_pcall or graft_pcall). */
lua_State *graft_state(graft_runtime *rt);
/* Makes the code running in rt fail with "interrupted!" at its next Lua instruction.
 * Safe to call from a signal handler (the executable calls it on Ctrl-C). */
void graft_interrupt(graft_runtime *rt);

/* ---- running code ----
 * Pending arguments (see below) are passed to the chunk as `...`. Whatever the chunk
 * returns becomes the results (graft_result_*). */

/* Runs a Lua file; path NULL reads stdin. A first line starting with '#' is skipped. */
int graft_run_file(graft_runtime *rt, const char *path);
/* Runs a string. chunkname follows Lua ("=name" or "@file"); NULL names it by its code. */
int graft_run_string(graft_runtime *rt, const char *code, const char *chunkname);
/* Runs fn(L) protected, with ud as a light userdata first argument then the pending
 * arguments; its return values become the results. For hosts using the raw API. */
int graft_pcall(graft_runtime *rt, lua_CFunction fn, void *ud);
/* The message handler graft runs Lua code under (as lua.c's): the error message, or
 * its __tostring, followed by a traceback. For hosts' own lua_pcall calls. */
int graft_traceback(lua_State *L);

/* ---- calling Lua functions ----
 * Push the arguments, then call: the call takes every pending argument. Pushing clears
 * the results of the previous call. A failed push is remembered: the next call, run or
 * graft_set_global fails with its status and message without running anything, and
 * drops the pending arguments; so a host may push several values and check once. */

int graft_push_nil(graft_runtime *rt);
int graft_push_boolean(graft_runtime *rt, int b);
int graft_push_integer(graft_runtime *rt, int64_t v);
int graft_push_number(graft_runtime *rt, double v);
/* The string is copied. */
int graft_push_string(graft_runtime *rt, const char *s);
/* The value of a global; dotted names reach into tables ("graft.version"). */
int graft_push_global(graft_runtime *rt, const char *name);
/* Sets the global `name` (dotted names allowed) to the last pending argument, which is
 * taken off the pending arguments. */
int graft_set_global(graft_runtime *rt, const char *name);
/* Calls the global function `name` (dotted names allowed: "graft.zeros") with the
 * pending arguments. GRAFT_RUN_ENOTFOUND when there is no such global. */
int graft_call(graft_runtime *rt, const char *name);

/* ---- results of the last run or call (1-based), valid until the next push or call ---- */
enum {
    GRAFT_KIND_NONE = -1, /* no result at that index */
    GRAFT_KIND_NIL, GRAFT_KIND_BOOLEAN, GRAFT_KIND_NUMBER, GRAFT_KIND_STRING,
    GRAFT_KIND_TABLE, GRAFT_KIND_FUNCTION, GRAFT_KIND_TENSOR, GRAFT_KIND_OTHER
};
int graft_result_count(graft_runtime *rt);
/* GRAFT_KIND_* of result i. */
int graft_result_kind(graft_runtime *rt, int i);
/* Lua's truth of result i (false and nil are false). */
int graft_result_boolean(graft_runtime *rt, int i, int *out);
/* A number; GRAFT_RUN_ETYPE when result i is not one. */
int graft_result_number(graft_runtime *rt, int i, double *out);
/* An integer, or a float with an integral value; GRAFT_RUN_ETYPE otherwise. */
int graft_result_integer(graft_runtime *rt, int i, int64_t *out);
/* A string (not converted from a number). Borrowed: valid until the next push or call.
 * len may be NULL. */
int graft_result_string(graft_runtime *rt, int i, const char **out, size_t *len);

/* ---- tensors both ways ---- */

/* A tensor as the host sees it: its memory and geometry. Filled by graft_result_tensor
 * and graft_get_tensor with one reference to the tensor, which keeps data valid (even
 * after graft_close) until graft_array_release. */
typedef struct graft_array {
    void *data;                      /* the first element (storage offset applied) */
    int dtype;                       /* GRAFT_DTYPE_* */
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    int64_t strides[GRAFT_MAX_DIMS]; /* in elements; 0 for a broadcast dim */
    int64_t numel;
    size_t itemsize;                 /* bytes per element */
    int is_contiguous;               /* row-major without gaps: data[0 .. numel-1] */
    int device;                      /* 0 = CPU, 1 = CUDA (data is then device memory) */
    int device_index;
    void *handle;                    /* graft's reference; NULL once released */
} graft_array;

/* Called once when the last tensor on a host buffer dies, on the thread that drops it;
 * nbytes is the span of the buffer's shape and strides. */
typedef void (*graft_release_fn)(void *ctx, void *data, size_t nbytes);

/* Pushes a tensor on the host's CPU buffer, without copying: shape[ndim], strides[ndim]
 * in elements (NULL = contiguous, row-major; no negative strides). Ownership of the
 * release passes to graft here: release(ctx, data, nbytes) runs exactly once, when the
 * last tensor on the buffer dies (garbage collection, graft_close, or the release of
 * the last graft_array of it, whichever is last), or before this returns when it fails.
 * release may be NULL (the buffer must then outlive every tensor on it). */
int graft_push_buffer(graft_runtime *rt, void *data, int dtype, int ndim, const int64_t *shape,
                      const int64_t *strides, graft_release_fn release, void *ctx);
/* Pushes the tensor of an array (the same tensor, not a copy); a keeps its reference. */
int graft_push_array(graft_runtime *rt, const graft_array *a);
/* Fills *out from result i, with +1 reference (graft_array_release drops it);
 * GRAFT_RUN_ETYPE when it is not a tensor. On failure *out is zeroed. */
int graft_result_tensor(graft_runtime *rt, int i, graft_array *out);
/* Fills *out from the global `name` (dotted names allowed), with +1 reference;
 * GRAFT_RUN_ENOTFOUND when it is nil, GRAFT_RUN_ETYPE when it is not a tensor. */
int graft_get_tensor(graft_runtime *rt, const char *name, graft_array *out);
/* Drops the array's reference and clears it. Accepts a cleared or zeroed array. */
void graft_array_release(graft_array *a);

#endif
