/* graft: the executable. Runs scripts, -e code, stdin and the REPL with lua5.4's options
 * and `arg` conventions, written on the embedding API of graft.h (the REPL is repl.c).
 * `graft NAME [args]` runs the subcommand module graft.cli.NAME when there is one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graft.h"
#include "repl.h"

#define MAIN_NAME "graft"
#define MAIN_VERSION MAIN_NAME " " GRAFT_VERSION " (" LUA_VERSION ")"

/* What the command line asks for (lua.c's has_* bits, plus --help and --version). */
enum { HAS_ERROR = 1, HAS_I = 2, HAS_V = 4, HAS_E = 8, HAS_HELP = 16, HAS_VERSION = 32 };

static void main_usage(FILE *f) {
    fprintf(f,
            "usage: " MAIN_NAME " [options] [script [args]]\n"
            "       " MAIN_NAME " COMMAND [args]\n"
            "Commands (" MAIN_NAME " COMMAND --help for each; any module graft.cli.NAME is one):\n"
            "  inspect   list the tensors of a checkpoint (.pth, .pt, .bin, .safetensors)\n"
            "  convert   convert a checkpoint between PyTorch's format and safetensors\n"
            "  diff      compare two checkpoints key by key\n"
            "  plot      draw a metrics file (.csv, .jsonl) with gnuplot\n"
            "Available options are:\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter interactive mode after executing 'script'\n"
            "  -l mod    require library 'mod' into global 'mod'\n"
            "  -l g=mod  require library 'mod' into global 'g'\n"
            "  -v        show version information\n"
            "  -W        turn warnings on\n"
            "  --        stop handling options\n"
            "  -         execute stdin and stop handling options\n"
            "  --help    show this help\n"
            "  --version show the version\n"
            "With no arguments: the REPL on a terminal, else the script read from stdin\n"
            "(-i: the REPL on stdin too, printing each value).\n");
}

static void main_message(const char *msg) {
    fflush(stdout);
    fprintf(stderr, MAIN_NAME ": %s\n", msg);
    fflush(stderr);
}

/* Reports a failed run on stderr and passes the status on. */
static int main_report(graft_runtime *rt, int status) {
    if (status != GRAFT_RUN_OK) main_message(graft_error_message(rt));
    return status;
}

/* Parses the options as lua.c's collectargs: returns the HAS_* bits and sets *first to
 * the script's index (argc when there is none). */
static int main_collectargs(char **argv, int *first) {
    int args = 0, i;
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        if (argv[i][0] != '-') return args; /* the script */
        switch (argv[i][1]) {
        case '-':
            if (argv[i][2] == '\0') { /* "--" */
                *first = i + 1;
                return args;
            }
            if (strcmp(argv[i], "--help") == 0) args |= HAS_HELP;
            else if (strcmp(argv[i], "--version") == 0) args |= HAS_VERSION;
            else return args | HAS_ERROR;
            break;
        case '\0': /* "-": the script is stdin */
            return args;
        case 'W':
            if (argv[i][2] != '\0') return args | HAS_ERROR;
            break;
        case 'i':
            args |= HAS_I;
            /* fall through */
        case 'v':
            if (argv[i][2] != '\0') return args | HAS_ERROR;
            if (argv[i][1] == 'v') args |= HAS_V;
            break;
        case 'e':
            args |= HAS_E;
            /* fall through */
        case 'l': /* both need an argument */
            if (argv[i][2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return args | HAS_ERROR;
            }
            break;
        default:
            return args | HAS_ERROR;
        }
    }
    *first = i;
    return args;
}

/* Runs the pending arguments' code with Ctrl-C interrupting it. */
static int main_run(graft_runtime *rt, const char *file, const char *code, const char *chunkname) {
    graft_repl_catch_sigint(rt);
    int status = code ? graft_run_string(rt, code, chunkname) : graft_run_file(rt, file);
    graft_repl_release_sigint();
    return main_report(rt, status);
}

/* Sets the global `arg` as lua5.4 does: arg[0] is the script, arg[1..] its arguments,
 * the negative indices the interpreter and its options. */
static int main_argtable(graft_runtime *rt, int argc, char **argv, int script) {
    if (script == argc) script = 0; /* no script: arg[0] is the interpreter */
    graft_push_integer(rt, script);
    for (int i = 0; i < argc; i++) graft_push_string(rt, argv[i]);
    return main_report(rt, graft_run_string(rt,
        "local a = table.pack(...)\n"
        "local arg = {}\n"
        "for i = 2, a.n do arg[i - 2 - a[1]] = a[i] end\n"
        "_G.arg = arg\n",
        "=(arg)"));
}

/* Runs the -e, -l and -W options in order, as lua.c's runargs. */
static int main_runargs(graft_runtime *rt, char **argv, int optlim) {
    for (int i = 1; i < optlim; i++) {
        char opt = argv[i][1];
        if (opt == 'W') {
            if (main_run(rt, NULL, "warn('@on')", "=(command line)")) return 0;
        } else if (opt == 'e' || opt == 'l') {
            const char *extra = argv[i][2] ? argv[i] + 2 : argv[++i];
            if (opt == 'e') {
                if (main_run(rt, NULL, extra, "=(command line)")) return 0;
            } else {
                const char *eq = strchr(extra, '=');
                size_t glen = eq ? (size_t)(eq - extra) : strlen(extra);
                char *global = malloc(glen + 1);
                if (!global) {
                    main_message("not enough memory");
                    return 0;
                }
                memcpy(global, extra, glen);
                global[glen] = '\0';
                graft_push_string(rt, global);
                graft_push_string(rt, eq ? eq + 1 : extra);
                free(global);
                if (main_run(rt, NULL, "local g, m = ...\n_G[g] = require(m)", "=(command line)")) return 0;
            }
        }
    }
    return 1;
}

/* Runs the script at argv[0] ("-" is stdin, unless it came after "--") with the rest
 * of argv as its `...`. */
static int main_script(graft_runtime *rt, char **argv, int after_dashes) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && !after_dashes) fname = NULL;
    for (int i = 1; argv[i]; i++) graft_push_string(rt, argv[i]);
    return main_run(rt, fname, NULL, NULL);
}

/* ---- subcommands ---- */

/* Whether argv1 looks like a subcommand name (not a path, not an option). */
static int main_is_command_name(const char *s) {
    if (!(s[0] >= 'a' && s[0] <= 'z')) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) return 0;
    return 1;
}

/* Runs graft.cli.NAME when require can find that module (embedded, or on package.path):
 * *exit_code gets the exit status and 1 is returned; 0 when there is no such module
 * (the name is then a script path). The module is a function, or a table with a `main`
 * function, called with the arguments (`arg` as for a script named NAME); it returns an
 * exit status: nothing or true for 0, false for 1, or an integer. Its errors are
 * reported with a traceback, as a script's. */
static int main_command(graft_runtime *rt, int argc, char **argv, int *exit_code) {
    *exit_code = EXIT_FAILURE;
    graft_push_string(rt, argv[1]);
    int st = graft_run_string(rt,
        "local m = 'graft.cli.' .. ...\n"
        "return package.loaded[m] ~= nil or package.preload[m] ~= nil\n"
        "  or package.searchpath(m, package.path) ~= nil or package.searchpath(m, package.cpath) ~= nil\n",
        "=(graft)");
    if (main_report(rt, st)) return 1;
    int found = 0;
    graft_result_boolean(rt, 1, &found);
    if (!found) return 0;
    if (main_argtable(rt, argc, argv, 1)) return 1;
    for (int i = 1; i < argc; i++) graft_push_string(rt, argv[i]);
    st = main_run(rt, NULL,
                  "local name = ...\n"
                  "local mod = require('graft.cli.' .. name)\n"
                  "local main = type(mod) == 'table' and mod.main or mod\n"
                  "return main(select(2, ...))\n",
                  "=(graft)");
    if (st) return 1;
    int64_t code;
    int ok = 1;
    if (graft_result_integer(rt, 1, &code) == GRAFT_RUN_OK) *exit_code = (int)code;
    else *exit_code = (graft_result_count(rt) == 0 || graft_result_kind(rt, 1) == GRAFT_KIND_NIL ||
                       (graft_result_boolean(rt, 1, &ok) == GRAFT_RUN_OK && ok)) ? EXIT_SUCCESS : EXIT_FAILURE;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 1 || !argv[0]) return EXIT_FAILURE;
    int script = argc;
    int args = main_collectargs(argv, &script);
    if (args & HAS_ERROR) {
        const char *bad = argv[script];
        if (bad && (bad[1] == 'e' || bad[1] == 'l') && bad[2] == '\0')
            fprintf(stderr, MAIN_NAME ": '%s' needs argument\n", bad);
        else
            fprintf(stderr, MAIN_NAME ": unrecognized option '%s'\n", bad ? bad : "");
        main_usage(stderr);
        return EXIT_FAILURE;
    }
    if (args & HAS_HELP) {
        main_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (args & HAS_VERSION) {
        puts(MAIN_VERSION);
        return EXIT_SUCCESS;
    }

    graft_runtime *rt = graft_open();
    if (!rt) {
        main_message(graft_error_message(NULL));
        return EXIT_FAILURE;
    }
    int code = EXIT_FAILURE;
    if (main_report(rt, graft_repl_register(rt))) goto done;
    if (script == 1 && argc > 1 && main_is_command_name(argv[1])) {
        if (main_command(rt, argc, argv, &code)) goto done;
        if (access(argv[1], F_OK) != 0) { /* neither a command nor a file: say both */
            fprintf(stderr, MAIN_NAME ": '%s' is neither a command (inspect, convert, diff, plot) nor a script file\n",
                    argv[1]);
            goto done;
        }
    }
    if (args & HAS_V) puts(MAIN_VERSION);
    if (main_argtable(rt, argc, argv, script)) goto done;
    if (!main_runargs(rt, argv, script)) goto done;
    if (script < argc && main_script(rt, argv + script, strcmp(argv[script - 1], "--") == 0)) goto done;
    if (args & HAS_I) {
        graft_repl(rt);
    } else if (script == argc && !(args & (HAS_E | HAS_V))) {
        if (isatty(STDIN_FILENO)) graft_repl(rt);
        else if (main_run(rt, NULL, NULL, NULL)) goto done;
    }
    code = EXIT_SUCCESS;
done:
    fflush(stdout);
    graft_close(rt);
    return code;
}
