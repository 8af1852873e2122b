/*
 * timers.h — what the worker does now and then: partitions made and
 * dropped, old events pruned, voipbin_journal.alive_at written, statistics
 * flushed.
 */
#ifndef VOIPBIN_WORKER_TIMERS_H
#define VOIPBIN_WORKER_TIMERS_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * Runs the timers that are due.  alive_wanted: the worker is connected and
 * keeps a position in voipbin_journal, so alive_at is written.
 */
extern void timers_run(bool alive_wanted);

/* When the next timer is due; logs the counts of failing handlers that are (store_report.c). */
extern TimestampTz timers_due(bool alive_wanted);

/* A reload: a new retention or partition interval applies at once. */
extern void timers_reloaded(void);

/* Flushes the worker's statistics promptly; says when they are due again (DT_NOEND: never). */
extern TimestampTz timers_flush_statistics(void);

#endif
