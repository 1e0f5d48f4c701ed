/* graft autograd: grad mode, a thread-local switch. Off, no op records a node (the
 * engine turns it off while rules run; graft.no_grad turns it off for a function). */
#include "autograd/autograd.h"

static _Thread_local bool grad_mode_off;

bool graft_grad_enabled(void) { return !grad_mode_off; }

bool graft_set_grad_enabled(bool on) {
    bool prev = !grad_mode_off;
    grad_mode_off = !on;
    return prev;
}
