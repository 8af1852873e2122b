/*
 * fault.c — named points where the test suite makes the worker die, or
 * plants a bug its chaos harness must catch.
 *
 * Some windows of the worker are too narrow for a test to hit with a kill
 * from outside (between two fsyncs at start, say); the suite starts the
 * server with VOIPBIN_FAULT naming one, and the worker dies there.
 *
 * Others plant a bug for one moment of each process (voipbin_fault_once):
 * test/chaos's account of every event must then fail, which is how the
 * harness itself is tested.
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

bool
voipbin_fault_once(const char *point)
{
	/* one VOIPBIN_FAULT at a time, so one flag serves every point */
	static bool fired = false;
	/* read once: some points are asked per stored row, on the hot path */
	static bool looked = false;
	static const char *want = NULL;

	if (!looked)
	{
		want = getenv("VOIPBIN_FAULT");
		looked = true;
	}
	if (fired || want == NULL || strcmp(want, point) != 0)
		return false;
	fired = true;
	return true;
}
