/*
 * fault.h — named points where the test suite makes the worker die.
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

#endif
