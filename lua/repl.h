/* graft REPL: the executable's interactive loop (lua/repl.c) and its Ctrl-C handling,
 * which the executable also uses while a script runs, and the pause-and-inspect hooks
 * that graft.pause uses. Not part of the embedding API. */
#ifndef GRAFT_REPL_H
#define GRAFT_REPL_H

#include "graft.h"

/* Reads, runs and prints statements from stdin until end of input (Ctrl-D). On a
 * terminal: readline with history and completion, a banner, and help(). Returns a
 * GRAFT_RUN_* status (not GRAFT_RUN_OK only when the REPL itself failed). */
int graft_repl(graft_runtime *rt);

/* Until released, Ctrl-C interrupts the code running in rt ("interrupted!"); a second
 * Ctrl-C kills the process, as in lua.c. */
void graft_repl_catch_sigint(graft_runtime *rt);
/* Ctrl-C back to its default action. */
void graft_repl_release_sigint(void);

/* Adds to rt's graft table what graft.pause needs (executable only):
 *   graft._repl(env [, prompt]) -> "continue" | "stop"   the REPL with env as _ENV, until
 *                                   continue() or stop() (defined in env) or Ctrl-D
 *   graft._pause_sigint(on)     Ctrl-C raises a pause flag (on) or interrupts (off)
 *   graft._interrupted()        whether the flag was raised since the last call; clears it
 * Returns a GRAFT_RUN_* status. */
int graft_repl_register(graft_runtime *rt);

#endif
