/*
 * time.h — time conversions the worker needs between PostgreSQL's timestamps, the Unix epoch of the network threads, and intervals.
 */
#ifndef VOIPBIN_BASE_TIME_H
#define VOIPBIN_BASE_TIME_H

#include "postgres.h"
#include "datatype/timestamp.h"

/* µs since the Unix epoch (what net/ records) to a timestamptz, and back. */
extern TimestampTz time_from_unix_us(int64 us);
extern int64 time_unix_us(TimestampTz t);

/* The shorter of two waits in ms, -1 meaning "as long as it likes". */
extern long time_shorter_ms(long a, long b);

/* An interval Datum of s seconds. */
extern Datum seconds_interval(int64 s);

#endif
