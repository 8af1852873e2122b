/*
 * guard.h — runs one database step of the worker so that an error is logged and survived.
 */
#ifndef VOIPBIN_BASE_GUARD_H
#define VOIPBIN_BASE_GUARD_H

#include "postgres.h"

/*
 * Runs step(arg) in the worker's error guard: an ERROR is logged, its
 * transaction aborted and its memory released, and false returned; the
 * worker goes on.  True when the step returned normally.
 */
extern bool voipbin_guarded(void (*step) (void *arg), void *arg, const char *what);

#endif
