/*
 * boundaries.c — where the partitions of voipbin_events begin and end, so
 * that only the events next to a boundary pay for the look across it.
 *
 * Within a partition its unique dedupe index catches a copy whenever it
 * comes; a copy of an event stored just before a boundary lands past it, in
 * the next partition, and only a look back across the boundary finds it.
 * VoIPBIN's copies come seconds to minutes apart, so a row is looked back
 * for when a boundary lies less than the dedupe window before it; for every
 * other row the index suffices.  The bounds are read from
 * voipbin_partitions() at most every few seconds and whenever the worker has
 * changed the partitions.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ingest/boundaries.h"
#include "base/db.h"

#define BOUNDS_FRESH_MS 5000

static TimestampTz *bounds = NULL;	/* sorted, in TopMemoryContext */
static int	nbounds = 0;
static TimestampTz read_at = 0;

/* The shortest partition made when the retention is short (the SQL's floor). */
#define MIN_STEP_S 10

/*
 * The range of the partitions made: voipbin.partition_interval, or a
 * quarter of a retention shorter than four intervals.
 */
int
partition_step_s(int interval_s, int retention_s)
{
	if (retention_s > 0 && retention_s / 4 < interval_s)
		return Max(retention_s / 4, Min(MIN_STEP_S, interval_s));
	return interval_s;
}

/* Is some b[0..n) (sorted) in (r - window, r]?  Pure, for the unit tests too. */
bool
boundary_within(const TimestampTz *b, int n, TimestampTz r, int64 window_us)
{
	int			lo = 0,
				hi = n;

	/* the first b[i] > r - window */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (b[mid] > r - window_us)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo < n && b[lo] <= r;
}

static int
cmp_ts(const void *a, const void *b)
{
	TimestampTz x = *(const TimestampTz *) a,
				y = *(const TimestampTz *) b;

	return x < y ? -1 : x > y;
}

void
boundaries_forget(void)
{
	read_at = 0;
}

/*
 * Reads the bounds when they may be stale.  Needs a transaction and SPI; a
 * database at 1.0 (no partitions, one unique index on the whole table) has
 * none.
 */
void
boundaries_refresh(const char *schema)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *fn;
	int			rc;

	if (schema == NULL ||
		(read_at != 0 && !TimestampDifferenceExceeds(read_at, now, BOUNDS_FRESH_MS)))
		return;
	nbounds = 0;
	read_at = now;
	fn = psprintf("%s.voipbin_partitions()", schema);
	if (!db_function_exists(fn))
		return;
	rc = SPI_execute(psprintf("SELECT lower, upper FROM %s", fn), true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading the partitions failed: %s", SPI_result_code_string(rc));
	if (bounds)
		pfree(bounds);
	bounds = MemoryContextAlloc(TopMemoryContext, sizeof(TimestampTz) * (2 * SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
		for (int col = 1; col <= 2; col++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);

			if (!isnull)
				bounds[nbounds++] = DatumGetTimestampTz(d);
		}
	qsort(bounds, nbounds, sizeof(TimestampTz), cmp_ts);
}

/* Does an event received at r need the look back across a boundary? */
bool
boundaries_near(TimestampTz r, int window_s)
{
	return boundary_within(bounds, nbounds, r, (int64) window_s * USECS_PER_SEC);
}
