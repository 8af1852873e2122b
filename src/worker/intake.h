/*
 * intake.h — frames from the journal into voipbin_events: a batch taken,
 * stored in one transaction, the journal told.
 */
#ifndef VOIPBIN_WORKER_INTAKE_H
#define VOIPBIN_WORKER_INTAKE_H

#include "postgres.h"
#include "datatype/timestamp.h"

/* The journal's memory cache: what voipbin.buffer_limit leaves the batch. */
extern size_t intake_cache_bytes(void);

/* Applies voipbin.spool_limit, voipbin.buffer_limit and voipbin.max_frame_size. */
extern void intake_set_limits(void);

/*
 * Takes frames from the journal and stores a batch of them.  True when it
 * stored one and more may follow; false when nothing waits, or the database
 * does not take them now (intake_due() says when to try again).
 */
extern bool intake_store_batch(void);

/* When intake_store_batch() is due: now, the retry after a failure, or DT_NOEND: when frames come. */
extern TimestampTz intake_due(void);

/* Logs what the journal has to say, and publishes the backlog in voipbin_status(). */
extern void intake_publish_backlog(void);

/* Whether the journal's position was read from voipbin_journal (or none is kept). */
extern bool intake_position_known(void);

/* What journal recovery reported, shown in last_error while connected; NULL if nothing. */
extern const char *intake_journal_problem(void);

#endif
