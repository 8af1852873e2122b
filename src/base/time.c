/*
 * time.c — conversions between PostgreSQL's timestamps (µs since 2000), the
 * Unix-epoch µs the network threads record (they cannot use PostgreSQL's
 * clock), and intervals.
 */
#include "voipbin.h"

#include "datatype/timestamp.h"
#include "utils/timestamp.h"

#include "base/time.h"

#define UNIX_TO_PG_EPOCH_US \
	((TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC)

TimestampTz
time_from_unix_us(int64 us)
{
	return (TimestampTz) us - UNIX_TO_PG_EPOCH_US;
}

int64
time_unix_us(TimestampTz t)
{
	return (int64) (t + UNIX_TO_PG_EPOCH_US);
}

/* An interval of s seconds, as a Datum (palloc'd in the current context). */
Datum
seconds_interval(int64 s)
{
	Interval   *i = palloc0(sizeof(Interval));

	i->time = s * USECS_PER_SEC;
	return IntervalPGetDatum(i);
}

long
time_shorter_ms(long a, long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return Min(a, b);
}
