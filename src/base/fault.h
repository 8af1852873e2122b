/*
 * fault.h — named points where the test suite makes the worker die, or
 * plants a bug its chaos harness must catch.
 */
#ifndef VOIPBIN_FAULT_H
#define VOIPBIN_FAULT_H

#include <stdbool.h>

/*
 * True when the server was started with VOIPBIN_FAULT=<point> in its
 * environment: the caller then dies as a crash would (SIGKILL), at the one
 * moment a test could not hit from outside.  Never set in production.
 */
extern bool voipbin_fault(const char *point);

/*
 * True the first time in this process that VOIPBIN_FAULT names point, false
 * ever after: a planted bug that corrupts once rather than dies, so that
 * test/chaos can show its account catches it (test/test_chaos.py).
 */
extern bool voipbin_fault_once(const char *point);

#endif
