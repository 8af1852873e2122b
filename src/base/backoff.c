/*
 * backoff.c — exponential backoff, with optional jitter (see the header).
 */
#include "voipbin.h"

#include "common/pg_prng.h"

#include "base/backoff.h"

int64
backoff_delay_ms(int64 min_ms, int64 max_ms, int attempt, double jitter)
{
	int64		ms = min_ms;

	/* doubling stops at the cap: no overflow however many attempts */
	for (int i = 1; i < attempt && ms < max_ms; i++)
		ms *= 2;
	ms = Min(ms, max_ms);
	if (jitter > 0)
	{
		double		d = (double) ms + (double) ms * jitter * pg_prng_double(&pg_global_prng_state);

		ms = (int64) Min(d, (double) max_ms);
	}
	return Max(ms, min_ms);
}
