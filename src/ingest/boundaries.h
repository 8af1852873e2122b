/*
 * boundaries.h — which events lie near a partition boundary, where dedupe must look across it.
 */
#ifndef VOIPBIN_INGEST_BOUNDARIES_H
#define VOIPBIN_INGEST_BOUNDARIES_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * The width of a partition: voipbin.partition_interval, or a quarter of a
 * retention shorter than four intervals (the SQL that makes them agrees).
 */
extern int	partition_step_s(int interval_s, int retention_s);

extern bool boundary_within(const TimestampTz *b, int n, TimestampTz r, int64 window_us);
extern void boundaries_refresh(const char *schema);
extern void boundaries_forget(void);
extern bool boundaries_near(TimestampTz r, int window_s);

#endif
