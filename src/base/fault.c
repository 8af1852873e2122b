/*
 * fault.c — named points where the test suite makes the worker die.
 *
 * Some windows of the worker are too narrow for a test to hit with a kill
 * from outside (between two fsyncs at start, say); the suite starts the
 * server with VOIPBIN_FAULT naming one, and the worker dies there.
 */
#include <stdlib.h>
#include <string.h>

#include "base/fault.h"

bool
voipbin_fault(const char *point)
{
	const char *want = getenv("VOIPBIN_FAULT");

	return want != NULL && strcmp(want, point) == 0;
}
