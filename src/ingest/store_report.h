/*
 * store_report.h — a dead letter made by a trigger or handler, told: a
 * WARNING (one line, then a count a minute) and last_error.
 */
#ifndef VOIPBIN_INGEST_STORE_REPORT_H
#define VOIPBIN_INGEST_STORE_REPORT_H

#include "postgres.h"
#include "datatype/timestamp.h"

/* How often a failure seen again is logged, with its count. */
#define STORE_REPORT_EVERY_MS (60 * 1000)

/*
 * The function an error's context names as the one that failed: "handler
 * public.f", "trigger function g()" …; NULL when it names none.  Pure.
 */
extern char *store_report_culprit(const char *context);

/*
 * An event became a dead letter when inserting it failed (err: its message,
 * SQLSTATE and context), after the commit that keeps the dead letter.
 */
extern void store_report_dead_letter(const char *event_type, const char *message, int sqlerrcode,
									 const char *context);

/* An event of event_type was stored: a last_error about that type is over. */
extern void store_report_stored(const char *event_type);

/* Logs the counts that are due; returns when the next is (0: none pending). */
extern TimestampTz store_report_flush(void);

#endif
