/* graft REPL: the interactive loop of the executable, modelled on lua.c's doREPL.
 *
 * On a terminal, lines come from readline (editing, persistent history, tab completion)
 * and otherwise from stdin, without prompts. A statement may span lines; expressions
 * print their value (tensors as PyTorch prints them, tables pretty-printed); errors
 * print a traceback and the REPL goes on; Ctrl-C interrupts the running statement.
 * The same loop serves pause-and-inspect (graft._repl, for graft.pause): statements run
 * in a given environment until continue() or stop(), and Ctrl-C in a script that asked
 * for it only raises a flag that the training loop polls (graft._interrupted).
 */
#include "repl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <lauxlib.h>
#include <readline/history.h>
#include <readline/readline.h>

#define REPL_PROMPT "> "
#define REPL_PROMPT2 ">> "
#define REPL_HISTORY_MAX 1000
#define REPL_HELPER "graft.repl" /* registry key of the REPL's Lua half */
#define REPL_EOF (-1)            /* loadline: no more input */
#define REPL_INTERRUPTED (-2)    /* loadline: Ctrl-C at the prompt */

/* The REPL's Lua half (format, complete, help), at the end of this file. */
static const char *repl_lua_source(void);

typedef struct {
    int tty;            /* stdin is a terminal: readline, prompts, history */
    const char *prompt; /* the first line's prompt */
    lua_State *owner;   /* pause mode: the caller's state, holding env and state below */
    int env;            /* pause mode: owner's index of the statements' environment */
    int state;          /* pause mode: owner's index of the table continue()/stop() mark */
} repl_ctx;

static graft_runtime *repl_rt;                  /* what Ctrl-C interrupts */
static lua_State *volatile repl_thread;         /* pause mode: the thread statements run on */
static lua_State *repl_L;                       /* for the completion callback */
static char *repl_history;                      /* the history file (malloc'd), NULL for none */
static int repl_rl_ready;                       /* readline is set up (once per process) */
static volatile sig_atomic_t repl_sigint;       /* Ctrl-C at the prompt */
static volatile sig_atomic_t repl_winch;        /* the terminal was resized */
static volatile sig_atomic_t repl_pause_asked;  /* Ctrl-C while a pause handler is installed */

/* ---- Ctrl-C ---- */

static void repl_signal(int sig, void (*handler)(int)) {
    struct sigaction sa;
    sa.sa_handler = handler;
    sa.sa_flags = 0; /* no SA_RESTART: select() must see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* The hook that stops a pause-mode statement, as graft_interrupt's: clear, then raise. */
static void repl_stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* Stops the running code at its next instruction: a pause-mode statement runs on its own
 * thread, everything else on the runtime's state. lua_sethook is signal-safe. */
static void repl_interrupt(void) {
    lua_State *T = repl_thread;
    if (T) lua_sethook(T, repl_stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    else graft_interrupt(repl_rt);
}

/* While code runs, as lua.c's laction: the first Ctrl-C sets a hook that stops the code
 * at its next instruction; a second one (say, inside a long C kernel) kills as usual. */
static void repl_on_sigint_running(int sig) {
    repl_signal(sig, SIG_DFL);
    repl_interrupt();
}

/* While a script polls for pauses (graft._pause_sigint): the first Ctrl-C only raises
 * the flag that graft._interrupted() reads at the next step; a second one before that
 * step interrupts the code as usual (a loop that never polls stays stoppable). */
static void repl_on_sigint_pause(int sig) {
    static const char msg[] = "\n[graft] pausing at the next step (Ctrl-C again to interrupt)\n";
    if (repl_pause_asked) {
        repl_on_sigint_running(sig);
        return;
    }
    repl_pause_asked = 1;
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
}

static void repl_on_sigint_prompt(int sig) {
    (void)sig;
    repl_sigint = 1;
}

static void repl_on_winch(int sig) {
    (void)sig;
    repl_winch = 1;
}

void graft_repl_catch_sigint(graft_runtime *rt) {
    repl_rt = rt;
    repl_signal(SIGINT, repl_on_sigint_running);
}

void graft_repl_release_sigint(void) { repl_signal(SIGINT, SIG_DFL); }

/* ---- reading lines ---- */

static char *repl_line;
static int repl_line_done;

static void repl_on_line(char *line) {
    repl_line = line;
    repl_line_done = 1;
    rl_callback_handler_remove();
}

/* Reads a line with readline's callback interface, so that Ctrl-C at the prompt can
 * abandon the line (readline() itself would only redraw it). Returns 1 with a malloc'd
 * line in *out, 0 at end of input, -1 on Ctrl-C. */
static int repl_read_tty(const char *prompt, char **out) {
    int fd = fileno(rl_instream ? rl_instream : stdin), r = 1;
    repl_sigint = 0;
    repl_line_done = 0;
    repl_line = NULL;
    repl_signal(SIGINT, repl_on_sigint_prompt);
    rl_callback_handler_install(prompt, repl_on_line);
    while (!repl_line_done) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(fd, &fds);
        int n = repl_sigint ? -1 : select(fd + 1, &fds, NULL, NULL, NULL);
        if (n < 0 && repl_winch) {
            repl_winch = 0;
            rl_resize_terminal();
            continue;
        }
        if (n < 0 && (repl_sigint || errno != EINTR)) {
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_cleanup_after_signal();
            rl_callback_handler_remove();
            r = repl_sigint ? -1 : 0;
            if (r < 0) fputs("\n", stdout);
            break;
        }
        if (n > 0) rl_callback_read_char();
    }
    graft_repl_catch_sigint(repl_rt); /* from here to the next prompt, Ctrl-C interrupts */
    fflush(stdout);
    if (r == 1 && !repl_line) r = 0;
    if (r == 1) *out = repl_line;
    return r;
}

/* A line of stdin without its newline (malloc'd); 0 at end of input. */
static int repl_read_pipe(char **out) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return 0;
    }
    if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
    *out = line;
    return 1;
}

/* Pushes the next line. 1: pushed; 0: end of input; -1: Ctrl-C at the prompt. */
static int repl_pushline(lua_State *L, repl_ctx *ctx, int firstline) {
    char *line;
    int r = ctx->tty ? repl_read_tty(firstline ? ctx->prompt : REPL_PROMPT2, &line) : repl_read_pipe(&line);
    if (r != 1) return r;
    lua_pushstring(L, line);
    free(line);
    return 1;
}

/* Keeps a statement in the history (memory and file); file errors are ignored. */
static void repl_saveline(repl_ctx *ctx, const char *line) {
    if (!ctx->tty || !line[0]) return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0) return;
    add_history(line);
    if (repl_history) append_history(1, repl_history);
}

/* ---- statements, as lua.c ---- */

/* A syntax error that ends at <eof> means the statement goes on at the next line. */
static int repl_incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* Tries the line as `return <line>;`, so that expressions print without `=`. */
static int repl_addreturn(lua_State *L, repl_ctx *ctx) {
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        repl_saveline(ctx, line);
        lua_remove(L, -2);
    } else {
        lua_pop(L, 2);
    }
    return status;
}

/* Reads continuation lines while the statement is incomplete (lua.c's multiline, plus
 * `return` tried on the joined lines, so multi-line expressions print too). Leaves the
 * function or the error message on top; REPL_INTERRUPTED when Ctrl-C abandons it. */
static int repl_multiline(lua_State *L, repl_ctx *ctx) {
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!repl_incomplete(L, status)) {
            repl_saveline(ctx, line);
            return status;
        }
        int r = repl_pushline(L, ctx, 0);
        if (r == 0) { /* end of input inside a statement: report the <eof> error */
            repl_saveline(ctx, line);
            return status;
        }
        if (r < 0) return REPL_INTERRUPTED;
        lua_remove(L, -2); /* the <eof> message */
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
        /* The statement so far may be an expression over several lines: try it first. */
        const char *joined = lua_tostring(L, 1);
        const char *retline = lua_pushfstring(L, "return %s;", joined);
        if (luaL_loadbuffer(L, retline, strlen(retline), "=stdin") == LUA_OK) {
            repl_saveline(ctx, joined);
            lua_remove(L, -2);
            return LUA_OK;
        }
        lua_pop(L, 2);
    }
}

/* Reads a whole statement and compiles it: its function, or a status with the message
 * on the stack, REPL_EOF or REPL_INTERRUPTED. */
static int repl_loadline(lua_State *L, repl_ctx *ctx) {
    lua_settop(L, 0);
    int r = repl_pushline(L, ctx, 1);
    if (r <= 0) return r == 0 ? REPL_EOF : REPL_INTERRUPTED;
    int status = repl_addreturn(L, ctx);
    if (status != LUA_OK) status = repl_multiline(L, ctx);
    if (status == REPL_INTERRUPTED) return status;
    lua_remove(L, 1);
    return status;
}

/* Calls the function below narg arguments with a traceback; Ctrl-C interrupts it (the
 * REPL keeps that handler between prompts, so a Ctrl-C never kills it there). */
static int repl_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, graft_traceback);
    lua_insert(L, base);
    graft_repl_catch_sigint(repl_rt); /* again: a first Ctrl-C reset it to the default */
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

static void repl_report(lua_State *L, int status) {
    if (status == LUA_OK) return;
    const char *msg = lua_tostring(L, -1);
    fflush(stdout);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
}

/* Prints the statement's results through the Lua half's format(), tab-separated. */
static void repl_print(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0) return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getfield(L, LUA_REGISTRYINDEX, REPL_HELPER);
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    lua_insert(L, 1);
    int status = repl_docall(L, n, 1);
    if (status != LUA_OK) {
        repl_report(L, status);
        return;
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    fwrite(s, 1, len, stdout);
    fputs("\n", stdout);
    fflush(stdout);
    lua_pop(L, 1);
}

/* ---- tab completion ---- */

static char **repl_cands;
static size_t repl_ncands, repl_next_cand;

static int repl_complete_k(lua_State *L) {
    const char *text = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, REPL_HELPER);
    lua_getfield(L, -1, "complete");
    lua_pushstring(L, text);
    lua_call(L, 1, 1);
    return 1;
}

static char *repl_cand_gen(const char *text, int state) {
    (void)text;
    if (!state) repl_next_cand = 0;
    return repl_next_cand < repl_ncands ? strdup(repl_cands[repl_next_cand++]) : NULL;
}

/* Lists matches by their last name only ("zeros", not "graft.zeros"). */
static void repl_display_matches(char **matches, int n, int maxlen) {
    const char *first = matches[1] ? matches[1] : matches[0];
    const char *cut = strrchr(first, '.'), *colon = strrchr(first, ':');
    if (!cut || (colon && colon > cut)) cut = colon;
    size_t off = cut ? (size_t)(cut - first) + 1 : 0;
    char **shown = malloc(sizeof *shown * ((size_t)n + 2));
    if (!shown) return;
    for (int i = 0; i <= n; i++) shown[i] = strlen(matches[i]) >= off ? matches[i] + off : matches[i];
    shown[n + 1] = NULL;
    rl_display_match_list(shown, n, maxlen - (int)off);
    free(shown);
    rl_forced_update_display();
}

/* readline's completion hook: asks the Lua half (protected: a Lua error must not jump
 * through readline) for the names that complete `text`. */
static char **repl_complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never complete file names */
    rl_completion_append_character = '\0';
    lua_State *L = repl_L;
    int top = lua_gettop(L);
    repl_ncands = 0;
    if (!lua_checkstack(L, 4)) return NULL;
    lua_pushcfunction(L, repl_complete_k);
    lua_pushlightuserdata(L, (void *)text);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
        size_t n = lua_rawlen(L, -1);
        repl_cands = n ? calloc(n, sizeof *repl_cands) : NULL;
        for (size_t i = 0; repl_cands && i < n; i++) {
            if (lua_rawgeti(L, -1, (lua_Integer)i + 1) == LUA_TSTRING) {
                char *c = strdup(lua_tostring(L, -1));
                if (c) repl_cands[repl_ncands++] = c;
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    char **matches = repl_ncands ? rl_completion_matches(text, repl_cand_gen) : NULL;
    for (size_t i = 0; i < repl_ncands; i++) free(repl_cands[i]);
    free(repl_cands);
    repl_cands = NULL;
    repl_ncands = 0;
    return matches;
}

/* ---- the loop ---- */

static void repl_setup_readline(void) {
    if (repl_rl_ready) return;
    repl_rl_ready = 1;
    rl_readline_name = "graft";
    rl_catch_signals = 0; /* Ctrl-C and resizes are ours (repl_read_tty) */
    rl_catch_sigwinch = 0;
    repl_signal(SIGWINCH, repl_on_winch);
    rl_attempted_completion_function = repl_complete;
    rl_completion_display_matches_hook = repl_display_matches;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
    using_history();
    stifle_history(REPL_HISTORY_MAX);
    history_comment_char = '#';    /* entries delimited by "#<time>" lines in the file, */
    history_write_timestamps = 1;  /* so that multi-line statements read back whole */
    history_multiline_entries = 1;
    const char *path = getenv("GRAFT_HISTORY"), *home = getenv("HOME");
    if (path && path[0]) {
        repl_history = strdup(path);
    } else if (home && home[0]) {
        repl_history = malloc(strlen(home) + sizeof "/.graft_history");
        if (repl_history) sprintf(repl_history, "%s/.graft_history", home);
    }
    if (!repl_history) return;
    if (read_history(repl_history) != 0) write_history(repl_history); /* create it */
    history_truncate_file(repl_history, REPL_HISTORY_MAX);
}

/* Pushes the REPL's Lua half, loading it into the registry the first time. */
static void repl_push_helper(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, REPL_HELPER) == LUA_TTABLE) return;
    lua_pop(L, 1);
    const char *src = repl_lua_source();
    if (luaL_loadbuffer(L, src, strlen(src), "=graft.repl") != LUA_OK) lua_error(L);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REPL_HELPER);
}

/* Pause mode: whether continue() or stop() was called (state.leave is set). */
static int repl_leaving(repl_ctx *ctx) {
    if (!ctx->owner) return 0;
    int t = lua_getfield(ctx->owner, ctx->state, "leave");
    lua_pop(ctx->owner, 1);
    return t != LUA_TNIL;
}

/* Reads and runs statements until end of input or, in pause mode, continue()/stop(). */
static void repl_loop(lua_State *L, repl_ctx *ctx) {
    int status;
    while (!repl_leaving(ctx) && (status = repl_loadline(L, ctx)) != REPL_EOF) {
        if (status == REPL_INTERRUPTED) continue;
        if (status == LUA_OK && ctx->owner) { /* the chunk's _ENV is the pause scope */
            lua_pushvalue(ctx->owner, ctx->env);
            lua_xmove(ctx->owner, L, 1);
            lua_setupvalue(L, -2, 1);
        }
        if (status == LUA_OK) status = repl_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) repl_print(L);
        else repl_report(L, status);
    }
    lua_settop(L, 0);
}

static int repl_main_k(lua_State *L) {
    repl_ctx *ctx = lua_touserdata(L, 1);
    lua_settop(L, 0);
    repl_L = L;
    repl_push_helper(L);
    lua_getfield(L, -1, "help");
    lua_setglobal(L, "help");
    lua_pop(L, 1);
    if (ctx->tty) {
        repl_setup_readline();
        printf("graft %s (%s) \xe2\x80\x94 Ctrl-D to exit, help() for help\n", GRAFT_VERSION, LUA_VERSION);
        fflush(stdout);
    }
    repl_loop(L, ctx);
    if (ctx->tty) fputs("\n", stdout);
    fflush(stdout);
    return 0;
}

int graft_repl(graft_runtime *rt) {
    repl_ctx ctx = {.tty = isatty(STDIN_FILENO), .prompt = REPL_PROMPT};
    repl_rt = rt;
    int status = graft_pcall(rt, repl_main_k, &ctx);
    graft_repl_release_sigint();
    if (status != GRAFT_RUN_OK) fprintf(stderr, "graft: %s\n", graft_error_message(rt));
    return status;
}

/* ---- pause-and-inspect: graft._repl, graft._interrupted, graft._pause_sigint ---- */

/* continue() and stop(): mark upvalue 1 (the loop's state table) with upvalue 2. */
static int repl_leave_k(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setfield(L, lua_upvalueindex(1), "leave");
    return 0;
}

/* Sets helper.scope (what names complete) to the value on top, popping it; pushes the old one. */
static void repl_swap_scope(lua_State *L) {
    repl_push_helper(L);
    lua_getfield(L, -1, "scope");
    lua_rotate(L, -3, -1); /* helper, old, new */
    lua_setfield(L, -3, "scope");
    lua_remove(L, -2);
}

/* graft._repl(env [, prompt]) -> "continue" | "stop": the REPL on stdin, with env as the
 * statements' _ENV (give it __index = _G to see the globals) and continue() and stop()
 * defined in it; end of input (Ctrl-D) is "continue". Statements run on a thread of
 * their own, which Ctrl-C interrupts; the caller's Ctrl-C handling is restored after. */
static int repl_pause_l(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *prompt = luaL_optstring(L, 2, REPL_PROMPT);
    if (!repl_rt) return luaL_error(L, "graft._repl: no REPL in this program");
    lua_settop(L, 2);
    lua_newtable(L); /* 3: the state table */
    const char *words[2] = {"continue", "stop"};
    for (int i = 0; i < 2; i++) {
        lua_pushvalue(L, 3);
        lua_pushstring(L, words[i]);
        lua_pushcclosure(L, repl_leave_k, 2);
        lua_setfield(L, 1, words[i]);
    }
    lua_getfield(L, 1, "help");
    if (lua_isnil(L, -1)) {
        repl_push_helper(L);
        lua_getfield(L, -1, "help");
        lua_setfield(L, 1, "help");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    repl_swap_scope(L); /* 4: the previous scope */
    lua_State *T = lua_newthread(L); /* 5: anchors the thread */
    repl_ctx ctx = {.tty = isatty(STDIN_FILENO), .prompt = prompt, .owner = L, .env = 1, .state = 3};
    struct sigaction saved;
    sigaction(SIGINT, NULL, &saved);
    lua_State *saved_L = repl_L, *saved_thread = repl_thread;
    repl_L = T;
    repl_thread = T;
    if (ctx.tty) repl_setup_readline();
    fflush(stdout);
    repl_loop(T, &ctx);
    int eof = !repl_leaving(&ctx);
    if (eof && ctx.tty) fputs("\n", stdout);
    fflush(stdout);
    repl_thread = saved_thread;
    repl_L = saved_L;
    repl_pause_asked = 0;
    sigaction(SIGINT, &saved, NULL);
    lua_pushvalue(L, 4);
    repl_swap_scope(L);
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "leave") == LUA_TNIL) lua_pushliteral(L, "continue");
    return 1;
}

/* graft._interrupted() -> whether Ctrl-C asked for a pause since the last call (clears it). */
static int repl_interrupted_l(lua_State *L) {
    lua_pushboolean(L, repl_pause_asked != 0);
    repl_pause_asked = 0;
    return 1;
}

/* graft._pause_sigint(on): Ctrl-C raises the pause flag (on) or interrupts the code as
 * usual (off). The executable restores its own handling when the script ends. */
static int repl_pause_sigint_l(lua_State *L) {
    repl_pause_asked = 0;
    if (lua_toboolean(L, 1)) repl_signal(SIGINT, repl_on_sigint_pause);
    else graft_repl_catch_sigint(repl_rt);
    return 0;
}

static int repl_register_k(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"_repl", repl_pause_l}, {"_interrupted", repl_interrupted_l}, {"_pause_sigint", repl_pause_sigint_l},
        {NULL, NULL}};
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "graft") != LUA_TTABLE) return luaL_error(L, "graft is not loaded");
    luaL_setfuncs(L, fns, 0);
    return 0;
}

int graft_repl_register(graft_runtime *rt) {
    repl_rt = rt;
    return graft_pcall(rt, repl_register_k, NULL);
}

/* ---- the Lua half (format, complete, help) ---- */

static const char *repl_lua_source(void) {
    return
        "-- The REPL's Lua half: formats results, completes names, and is help().\n"
        "local graft = require(\"graft\")\n"
        "local Tensor = graft._Tensor\n"
        "local M = {}\n"
        "\n"
        "local MAX_DEPTH, MAX_ITEMS, WIDTH = 4, 40, 78\n"
        "local KEYWORDS = {}\n"
        "for w in (\"and break do else elseif end false for function goto if in local nil not or repeat return then true until while\")\n"
        "    :gmatch(\"%a+\") do KEYWORDS[w] = true end\n"
        "\n"
        "local function is_tensor(v) return type(v) == \"userdata\" and getmetatable(v) == Tensor end\n"
        "local function is_name(s) return type(s) == \"string\" and s:match(\"^[%a_][%w_]*$\") and not KEYWORDS[s] end\n"
        "\n"
        "local function quote(s)\n"
        "  return (string.format(\"%q\", s):gsub(\"\\\\\\n\", \"\\\\n\"))\n"
        "end\n"
        "\n"
        "-- Keys in a stable order: numbers, then strings, then the rest, each sorted.\n"
        "local RANK = { number = 1, string = 2, boolean = 3 }\n"
        "local function key_before(a, b)\n"
        "  local ra, rb = RANK[type(a)] or 4, RANK[type(b)] or 4\n"
        "  if ra ~= rb then return ra < rb end\n"
        "  if ra <= 2 then return a < b end\n"
        "  return tostring(a) < tostring(b)\n"
        "end\n"
        "\n"
        "local format\n"
        "\n"
        "local function format_table(t, indent, depth, seen)\n"
        "  if seen[t] then return \"<cycle>\" end\n"
        "  if depth > MAX_DEPTH then return \"{...}\" end\n"
        "  seen[t] = true\n"
        "  local n = rawlen(t)\n"
        "  local keys = {}\n"
        "  for k in next, t do\n"
        "    if not (math.type(k) == \"integer\" and k >= 1 and k <= n) then keys[#keys + 1] = k end\n"
        "  end\n"
        "  table.sort(keys, key_before)\n"
        "  local inner = indent .. \"  \"\n"
        "  local items, total = {}, n + #keys\n"
        "  for i = 1, math.min(n, MAX_ITEMS) do items[#items + 1] = format(rawget(t, i), inner, depth + 1, seen) end\n"
        "  for i = 1, math.min(#keys, MAX_ITEMS - #items) do\n"
        "    local k = keys[i]\n"
        "    local ks = is_name(k) and k or \"[\" .. format(k, inner, depth + 1, seen) .. \"]\"\n"
        "    items[#items + 1] = ks .. \" = \" .. format(rawget(t, k), inner, depth + 1, seen)\n"
        "  end\n"
        "  seen[t] = nil\n"
        "  if total > #items then items[#items + 1] = (\"... (%d more)\"):format(total - #items) end\n"
        "  if #items == 0 then return \"{}\" end\n"
        "  local line = \"{\" .. table.concat(items, \", \") .. \"}\"\n"
        "  if #line + #indent <= WIDTH and not line:find(\"\\n\") then return line end\n"
        "  -- One item per line, except that short items share lines up to the width.\n"
        "  local lines, cur = {}, nil\n"
        "  for i, item in ipairs(items) do\n"
        "    item = item .. (i < #items and \",\" or \"\")\n"
        "    if cur and not item:find(\"\\n\") and not cur:find(\"\\n\") and #inner + #cur + 1 + #item <= WIDTH then\n"
        "      cur = cur .. \" \" .. item\n"
        "    else\n"
        "      lines[#lines + 1] = cur\n"
        "      cur = item\n"
        "    end\n"
        "  end\n"
        "  lines[#lines + 1] = cur\n"
        "  return \"{\\n\" .. inner .. table.concat(lines, \"\\n\" .. inner) .. \"\\n\" .. indent .. \"}\"\n"
        "end\n"
        "\n"
        "-- A value as the REPL shows it inside a table: strings quoted, tensors as they print.\n"
        "function format(v, indent, depth, seen)\n"
        "  if type(v) == \"string\" then return quote(v) end\n"
        "  if is_tensor(v) then return (tostring(v):gsub(\"\\n\", \"\\n\" .. indent)) end\n"
        "  if type(v) ~= \"table\" then return tostring(v) end\n"
        "  local mt = getmetatable(v)\n"
        "  if type(mt) == \"table\" and rawget(mt, \"__tostring\") then return tostring(v) end\n"
        "  return format_table(v, indent, depth, seen)\n"
        "end\n"
        "\n"
        "-- The results of a statement, tab-separated; a string at top level prints as print would.\n"
        "function M.format(...)\n"
        "  local out = {}\n"
        "  for i = 1, select(\"#\", ...) do\n"
        "    local v = select(i, ...)\n"
        "    out[i] = type(v) == \"string\" and v or format(v, \"\", 1, {})\n"
        "  end\n"
        "  return table.concat(out, \"\\t\")\n"
        "end\n"
        "\n"
        "-- ---- completion ----\n"
        "\n"
        "-- t[k] without calling functions: raw fields, then __index tables (as classes use).\n"
        "local function peek(t, k)\n"
        "  for _ = 1, 10 do\n"
        "    local v = rawget(t, k)\n"
        "    if v ~= nil then return v end\n"
        "    local mt = getmetatable(t)\n"
        "    local idx = type(mt) == \"table\" and rawget(mt, \"__index\")\n"
        "    if type(idx) ~= \"table\" then return nil end\n"
        "    t = idx\n"
        "  end\n"
        "end\n"
        "\n"
        "local function add_keys(names, t, only_functions)\n"
        "  for _ = 1, 10 do\n"
        "    for k, v in next, t do\n"
        "      if is_name(k) and (not only_functions or type(v) == \"function\" or type(v) == \"table\") then names[k] = true end\n"
        "    end\n"
        "    local mt = getmetatable(t)\n"
        "    local idx = type(mt) == \"table\" and rawget(mt, \"__index\")\n"
        "    if type(idx) ~= \"table\" then return end\n"
        "    t = idx\n"
        "  end\n"
        "end\n"
        "\n"
        "-- The completions of `text` (what precedes the cursor, from the last separator): global\n"
        "-- names and keywords, fields after `a.b.`, methods after `x:`, and a tensor's methods\n"
        "-- (and properties after `.`) from graft._methods and graft._getters.\n"
        "function M.complete(text)\n"
        "  local names, prefix, partial = {}, \"\", text\n"
        "  local path, sep, last = text:match(\"^([%a_][%w_%.]*)([%.:])([%w_]*)$\")\n"
        "  if path then\n"
        "    local v = M.scope or _G\n"
        "    for seg in (path .. \".\"):gmatch(\"([^%.]*)%.\") do\n"
        "      if seg == \"\" or type(v) ~= \"table\" then return {} end\n"
        "      v = peek(v, seg)\n"
        "    end\n"
        "    prefix, partial = path .. sep, last\n"
        "    if is_tensor(v) then\n"
        "      add_keys(names, graft._methods)\n"
        "      if sep == \".\" then add_keys(names, graft._getters) end\n"
        "    elseif type(v) == \"table\" then\n"
        "      add_keys(names, v, sep == \":\")\n"
        "    elseif type(v) == \"string\" and sep == \":\" then\n"
        "      add_keys(names, string)\n"
        "    else\n"
        "      return {}\n"
        "    end\n"
        "  elseif text:match(\"^[%a_]?[%w_]*$\") then\n"
        "    add_keys(names, M.scope or _G)\n"
        "    for k in pairs(KEYWORDS) do names[k] = true end\n"
        "  else\n"
        "    return {}\n"
        "  end\n"
        "  local out = {}\n"
        "  for name in pairs(names) do\n"
        "    if name:sub(1, #partial) == partial and (name:sub(1, 1) ~= \"_\" or partial:sub(1, 1) == \"_\") then\n"
        "      out[#out + 1] = prefix .. name\n"
        "    end\n"
        "  end\n"
        "  table.sort(out)\n"
        "  return out\n"
        "end\n"
        "\n"
        "-- ---- help() ----\n"
        "\n"
        "local HELP = [[\n"
        "graft ]] .. graft.version .. [[ -- fine-tuning runtime scripted in Lua 5.4\n"
        "  x = graft.randn(2, 3)   an expression or a statement; expressions print their value\n"
        "  graft.<TAB>  x:<TAB>    complete graft's functions, a tensor's methods, any field\n"
        "  help(x)                 the fields of a table, or the methods of a tensor\n"
        "  Ctrl-C                  interrupt the running statement (at the prompt: clear the line)\n"
        "  Ctrl-D                  exit\n"
        "Statements may span lines; `local` names last for one statement, as in lua.\n"
        "History: ~/.graft_history (or $GRAFT_HISTORY).]]\n"
        "\n"
        "local function columns(names)\n"
        "  table.sort(names)\n"
        "  local w = 0\n"
        "  for _, s in ipairs(names) do w = math.max(w, #s) end\n"
        "  local per = math.max(1, (WIDTH + 2) // (w + 2))\n"
        "  local lines = {}\n"
        "  for i = 1, #names, per do\n"
        "    local row = {}\n"
        "    for j = i, math.min(i + per - 1, #names) do row[#row + 1] = names[j] .. string.rep(\" \", w - #names[j]) end\n"
        "    lines[#lines + 1] = (table.concat(row, \"  \"):gsub(\"%s+$\", \"\"))\n"
        "  end\n"
        "  return table.concat(lines, \"\\n\")\n"
        "end\n"
        "\n"
        "function M.help(x)\n"
        "  if x == nil then\n"
        "    print(HELP)\n"
        "  elseif is_tensor(x) then\n"
        "    local names = {}\n"
        "    add_keys(names, graft._methods)\n"
        "    add_keys(names, graft._getters)\n"
        "    local list = {}\n"
        "    for k in pairs(names) do if k:sub(1, 1) ~= \"_\" then list[#list + 1] = k end end\n"
        "    print(\"tensor methods:\\n\" .. columns(list))\n"
        "  elseif type(x) == \"table\" then\n"
        "    local names = {}\n"
        "    add_keys(names, x)\n"
        "    local list = {}\n"
        "    for k in pairs(names) do if k:sub(1, 1) ~= \"_\" then list[#list + 1] = k end end\n"
        "    print(columns(list))\n"
        "  else\n"
        "    print((\"a %s: %s\"):format(type(x), tostring(x)))\n"
        "  end\n"
        "end\n"
        "\n"
        "return M\n";
}
