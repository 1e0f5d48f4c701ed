/* A host program on the embedding API (graft.h only): it hands host buffers to Lua as
 * tensors without copying, runs code, calls Lua functions by name, reads tensors back,
 * provokes errors, and checks that every release callback runs exactly once and when.
 * Prints `ok N - what` (or `not ok N - what`) per check; exits non-zero on a failure.
 * spec/host/host_spec.lua runs it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graft.h"

static int host_n, host_failed;

static void check(int cond, const char *what) {
    host_n++;
    if (!cond) host_failed = 1;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", host_n, what);
    fflush(stdout);
}

/* Shows the runtime's message when a status check fails. */
static void check_ok(graft_runtime *rt, int status, const char *what) {
    check(status == GRAFT_RUN_OK, what);
    if (status != GRAFT_RUN_OK) printf("#   status %d: %s\n", status, graft_error_message(rt));
}

/* A host buffer and the number of times graft released it. */
typedef struct {
    float data[6];
    int released;
    int bad_release; /* released with the wrong pointer or size */
} host_buffer;

static void host_release(void *ctx, void *data, size_t nbytes) {
    host_buffer *b = ctx;
    b->released++;
    if (data != b->data || nbytes != sizeof b->data) b->bad_release = 1;
}

static int contains(const char *s, const char *part) { return s && strstr(s, part) != NULL; }

/* Runs under graft_pcall: interrupts the runtime, then calls a Lua loop that never ends
 * by itself; the interrupt must stop it. */
static int host_interrupt_k(lua_State *L) {
    graft_runtime *rt = lua_touserdata(L, 1);
    graft_interrupt(rt);
    lua_getglobal(L, "spin");
    lua_call(L, 0, 0);
    return 0;
}

/* A Lua allocator that fails once the state has grown by more than `limit` bytes. */
typedef struct {
    lua_Alloc inner;
    void *inner_ud;
    long long grown, limit;
} host_limit;

static void *host_limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    host_limit *h = ud;
    long long old = ptr ? (long long)osize : 0;
    if (nsize > 0 && h->grown + (long long)nsize - old > h->limit) return NULL;
    void *p = h->inner(h->inner_ud, ptr, osize, nsize);
    if (p || nsize == 0) h->grown += (long long)nsize - old;
    return p;
}

int main(void) {
    static host_buffer a = {{1, 2, 3, 4, 5, 6}, 0, 0}; /* x: read back past graft_close */
    static host_buffer b = {{1, 2, 3, 4, 5, 6}, 0, 0}; /* xt: strided, freed by graft_close */
    static host_buffer c = {{0}, 0, 0};                /* tmp: collected while open */
    static host_buffer d = {{0}, 0, 0};                /* refused: a failed push */
    int64_t shape[2] = {2, 3}, tshape[2] = {3, 2}, tstrides[2] = {1, 3};
    double num;
    int64_t i64;
    const char *str;
    graft_array arr, xa;

    check(graft_error_message(NULL) != NULL, "graft_error_message(NULL) is a string");
    graft_runtime *rt = graft_open();
    check(rt != NULL, "graft_open opens a runtime");
    if (!rt) {
        printf("#   %s\n", graft_error_message(NULL));
        return 1;
    }
    check(graft_state(rt) != NULL, "graft_state exposes the lua_State");

    /* ---- a host buffer as a tensor, as a global ---- */
    check_ok(rt, graft_push_buffer(rt, a.data, GRAFT_DTYPE_F32, 2, shape, NULL, host_release, &a),
             "graft_push_buffer wraps a float buffer");
    check_ok(rt, graft_set_global(rt, "x"), "graft_set_global sets it as the global x");
    check_ok(rt, graft_run_string(rt, "return graft.is_tensor(x), x:dtype(), x:size(1), x:size(2), x[2][3]:item()", "=host"),
             "Lua sees x");
    int is_t = 0;
    graft_result_boolean(rt, 1, &is_t);
    check(is_t && graft_result_string(rt, 2, &str, NULL) == GRAFT_RUN_OK && strcmp(str, "float32") == 0,
          "x is a float32 tensor");
    check(graft_result_integer(rt, 3, &i64) == GRAFT_RUN_OK && i64 == 2 &&
              graft_result_integer(rt, 4, &i64) == GRAFT_RUN_OK && i64 == 3,
          "x has the host's shape [2, 3]");
    check(graft_result_number(rt, 5, &num) == GRAFT_RUN_OK && num == 6.0, "x[2][3] reads the host's element 6");
    check(graft_result_count(rt) == 5 && graft_result_kind(rt, 1) == GRAFT_KIND_BOOLEAN &&
              graft_result_kind(rt, 6) == GRAFT_KIND_NONE,
          "graft_result_count and graft_result_kind");

    /* Lua writes through to the host's memory: no copy was made. */
    check_ok(rt, graft_run_string(rt, "x[1]:fill_(7); x[2][2] = -1", "=host"), "Lua writes into x");
    check(a.data[0] == 7 && a.data[1] == 7 && a.data[2] == 7 && a.data[4] == -1 && a.data[3] == 4,
          "the writes land in the host buffer");

    /* ---- a strided buffer (a transposed view of b) ---- */
    check_ok(rt, graft_push_buffer(rt, b.data, GRAFT_DTYPE_F32, 2, tshape, tstrides, host_release, &b),
             "graft_push_buffer takes strides");
    check_ok(rt, graft_set_global(rt, "xt"), "set as the global xt");
    check_ok(rt, graft_run_string(rt,
                                  "local l = xt:tolist()\n"
                                  "return l[1][1], l[1][2], l[3][1], l[3][2], xt:is_contiguous()",
                                  "=host"),
             "Lua reads the strided tensor");
    double v[4] = {0};
    for (int i = 0; i < 4; i++) graft_result_number(rt, i + 1, &v[i]);
    int contig = 1;
    graft_result_boolean(rt, 5, &contig);
    check(v[0] == 1 && v[1] == 4 && v[2] == 3 && v[3] == 6 && !contig, "xt is b transposed, not contiguous");

    /* ---- calling a Lua function by name, tensors both ways ---- */
    check_ok(rt, graft_run_string(rt,
                                  "function scale_row(t, i, k)\n"
                                  "  local n = t:size(2)\n"
                                  "  local out = graft.zeros(n, {dtype = 'float64'})\n"
                                  "  for j = 1, n do out[j] = t[i][j]:item() * k end\n"
                                  "  return out, 'row ' .. i, n\n"
                                  "end\n"
                                  "function total(t)\n"
                                  "  local s = 0\n"
                                  "  for _, row in ipairs(t:tolist()) do for _, e in ipairs(row) do s = s + e end end\n"
                                  "  return s\n"
                                  "end\n"
                                  "function spin() while true do end end\n"
                                  "function fail(msg) error(msg) end\n"
                                  "not_a_function = 42\n",
                                  "=host"),
             "graft_run_string defines functions");
    graft_push_global(rt, "x");
    graft_push_integer(rt, 2);
    graft_push_number(rt, 0.5);
    check_ok(rt, graft_call(rt, "scale_row"), "graft_call(\"scale_row\") with a tensor, an integer, a number");
    check(graft_result_count(rt) == 3, "it returns three results");
    check_ok(rt, graft_result_tensor(rt, 1, &arr), "graft_result_tensor reads the returned tensor");
    check(arr.dtype == GRAFT_DTYPE_F64 && arr.ndim == 1 && arr.shape[0] == 3 && arr.itemsize == 8 &&
              arr.is_contiguous && arr.numel == 3 && arr.device == 0 && arr.handle != NULL,
          "its dtype, shape and layout");
    const double *row = arr.data;
    check(row && row[0] == 2.0 && row[1] == -0.5 && row[2] == 3.0, "its values are x[2] * 0.5");
    check(graft_result_string(rt, 2, &str, NULL) == GRAFT_RUN_OK && strcmp(str, "row 2") == 0 &&
              graft_result_integer(rt, 3, &i64) == GRAFT_RUN_OK && i64 == 3,
          "the string and integer results");
    check_ok(rt, graft_push_array(rt, &arr), "graft_push_array passes the tensor back");
    check_ok(rt, graft_call(rt, "graft.is_tensor"), "graft_call takes dotted names (graft.is_tensor)");
    int yes = 0;
    check(graft_result_boolean(rt, 1, &yes) == GRAFT_RUN_OK && yes, "the tensor went back to Lua");
    check(row[0] == 2.0 && row[2] == 3.0, "the returned tensor stays valid after later calls");
    graft_array_release(&arr);
    check(arr.handle == NULL && arr.data == NULL, "graft_array_release clears the array");
    graft_array_release(&arr); /* releasing twice is harmless */

    graft_push_global(rt, "xt");
    check_ok(rt, graft_call(rt, "total"), "graft_call(\"total\", xt)");
    check(graft_result_number(rt, 1, &num) == GRAFT_RUN_OK && num == 21.0, "total(xt) is 21");

    /* ---- a tensor read back from a global ---- */
    check_ok(rt, graft_get_tensor(rt, "x", &xa), "graft_get_tensor reads the global x");
    check(xa.data == (void *)a.data && xa.ndim == 2 && xa.shape[0] == 2 && xa.shape[1] == 3 &&
              xa.strides[0] == 3 && xa.strides[1] == 1 && xa.dtype == GRAFT_DTYPE_F32,
          "it is the host's own buffer, with its shape and strides");

    /* ---- a buffer collected while the runtime is open ---- */
    check_ok(rt, graft_push_buffer(rt, c.data, GRAFT_DTYPE_F32, 1, (int64_t[]){6}, NULL, host_release, &c),
             "push a third buffer");
    check_ok(rt, graft_set_global(rt, "tmp"), "set as tmp");
    check_ok(rt, graft_run_string(rt, "view = tmp[2]; tmp = nil; collectgarbage(); collectgarbage()", "=host"),
             "drop the global, keep a view");
    check(c.released == 0, "a live view keeps the buffer");
    check_ok(rt, graft_run_string(rt, "view = nil; collectgarbage(); collectgarbage()", "=host"), "drop the view");
    check(c.released == 1 && !c.bad_release, "the release runs once the last view dies");

    /* ---- errors ---- */
    int st = graft_run_string(rt, "x = = 1", "=snippet");
    check(st == GRAFT_RUN_ESYNTAX && contains(graft_error_message(rt), "snippet:1:"), "a syntax error: ESYNTAX and where");
    st = graft_call(rt, "fail");
    check(st == GRAFT_RUN_ERUNTIME, "a runtime error: ERUNTIME");
    graft_push_string(rt, "boom");
    st = graft_call(rt, "fail");
    check(st == GRAFT_RUN_ERUNTIME && contains(graft_error_message(rt), "boom") &&
              contains(graft_error_message(rt), "stack traceback") && graft_result_count(rt) == 0,
          "its message has a traceback");
    st = graft_call(rt, "no_such_function");
    check(st == GRAFT_RUN_ENOTFOUND && contains(graft_error_message(rt), "no_such_function"),
          "calling a missing function: ENOTFOUND, named");
    st = graft_call(rt, "not_a_function");
    check(st == GRAFT_RUN_ETYPE && contains(graft_error_message(rt), "number"), "calling a number: ETYPE");
    st = graft_run_string(rt, "return graft.zeros(2, 3) + nil", "=snippet");
    check(st == GRAFT_RUN_ERUNTIME, "a graft error inside Lua: ERUNTIME");
    st = graft_run_file(rt, "/no/such/file.lua");
    check(st == GRAFT_RUN_EFILE && contains(graft_error_message(rt), "/no/such/file.lua"), "a missing file: EFILE");
    graft_run_string(rt, "return 1.5, 'str'", NULL);
    check(graft_result_integer(rt, 1, &i64) == GRAFT_RUN_ETYPE, "a non-integral number is not an integer");
    check(graft_result_tensor(rt, 2, &arr) == GRAFT_RUN_ETYPE && arr.handle == NULL, "a string is not a tensor");
    check(graft_result_number(rt, 3, &num) == GRAFT_RUN_EARG, "a result index out of range: EARG");
    check(graft_get_tensor(rt, "nothing_here", &arr) == GRAFT_RUN_ENOTFOUND, "graft_get_tensor of a missing global");

    /* A refused buffer is released at once; the failed push fails the next call. */
    st = graft_push_buffer(rt, d.data, 99, 2, shape, NULL, host_release, &d);
    check(st == GRAFT_RUN_EARG && contains(graft_error_message(rt), "dtype"), "a bad dtype: EARG");
    check(d.released == 1, "a refused buffer is released before graft_push_buffer returns");
    graft_push_integer(rt, 1);
    st = graft_call(rt, "spin");
    check(st == GRAFT_RUN_EARG, "the next call fails with the push's status, without running");
    check_ok(rt, graft_run_string(rt, "return 1", NULL), "and the call after that runs");
    d.released = 0;
    graft_push_buffer(rt, d.data, GRAFT_DTYPE_F32, 1, (int64_t[]){-1}, NULL, host_release, &d);
    st = graft_set_global(rt, "refused");
    check(st == GRAFT_RUN_EARG && d.released == 1, "graft_set_global after a failed push fails too");
    check(graft_get_tensor(rt, "refused", &arr) == GRAFT_RUN_ENOTFOUND, "and sets nothing");

    /* Pending arguments are a chunk's `...`. */
    graft_push_string(rt, "a");
    graft_push_integer(rt, 2);
    check_ok(rt, graft_run_string(rt, "return select('#', ...), ...", "=host"), "a chunk gets the pending arguments");
    check(graft_result_integer(rt, 1, &i64) == GRAFT_RUN_OK && i64 == 2 &&
              graft_result_string(rt, 2, &str, NULL) == GRAFT_RUN_OK && strcmp(str, "a") == 0,
          "as its `...`");

    /* Out of memory inside Lua: a status, never a crash. */
    static host_buffer e = {{0}, 0, 0};
    host_limit lim = {0};
    lim.inner = lua_getallocf(graft_state(rt), &lim.inner_ud);
    lim.limit = 1 << 20;
    lua_setallocf(graft_state(rt), host_limited_alloc, &lim);
    st = graft_run_string(rt, "local t = {} for i = 1, 1e8 do t[i] = i end", "=host");
    check(st == GRAFT_RUN_ENOMEM && contains(graft_error_message(rt), "not enough memory"),
          "running out of memory in Lua: ENOMEM");
    lim.limit = -(1LL << 40); /* no allocation may grow the state any more */
    st = graft_push_buffer(rt, e.data, GRAFT_DTYPE_F32, 1, (int64_t[]){6}, NULL, host_release, &e);
    check(st == GRAFT_RUN_ENOMEM && e.released == 1, "a buffer push that runs out of memory releases it once");
    graft_run_string(rt, "return 0", NULL); /* reports (and forgets) the failed push */
    st = graft_push_string(rt, "no room for this");
    check(st == GRAFT_RUN_ENOMEM, "pushing a string without memory: ENOMEM");
    lua_setallocf(graft_state(rt), lim.inner, lim.inner_ud);
    check(graft_run_string(rt, "return 2", NULL) == GRAFT_RUN_ENOMEM, "the failed push fails the next run");
    check_ok(rt, graft_run_string(rt, "collectgarbage() return 3", NULL), "the runtime recovers");

    /* Interrupting the running code (what Ctrl-C does in the executable). */
    st = graft_pcall(rt, host_interrupt_k, rt);
    check(st == GRAFT_RUN_ERUNTIME && contains(graft_error_message(rt), "interrupted!"),
          "graft_interrupt stops a running loop");
    check_ok(rt, graft_run_string(rt, "return x[1][1]:item()", NULL), "the runtime works after errors");
    check(graft_result_number(rt, 1, &num) == GRAFT_RUN_OK && num == 7.0, "and keeps its state");

    /* ---- closing ---- */
    check(a.released == 0 && b.released == 0, "nothing else was released while open");
    graft_close(rt);
    check(b.released == 1 && !b.bad_release, "graft_close releases the buffers Lua held");
    check(a.released == 0 && ((float *)xa.data)[0] == 7.0f, "a host reference outlives graft_close");
    graft_array_release(&xa);
    check(a.released == 1 && !a.bad_release, "its release runs when the host lets go");
    check(c.released == 1 && d.released == 1 && e.released == 1, "every release ran exactly once");

    printf("%s\n", host_failed ? "FAILED" : "PASSED");
    return host_failed ? 1 : 0;
}
