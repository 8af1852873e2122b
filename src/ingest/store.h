/*
 * store.h — what the worker's loop needs from store.c and subscriptions.c.
 */
#ifndef VOIPBIN_STORE_H
#define VOIPBIN_STORE_H

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "net/ws/ws_client.h"

typedef enum StoreResult
{
	STORE_DONE,					/* each frame is an event, a counted duplicate or a dead letter */
	STORE_NOT_READY,			/* the extension is not installed (or not at 1.1) */
	STORE_FAILED				/* an error of the moment: keep the frames, retry at *retry_at */
} StoreResult;

/*
 * Stores n frames in one transaction which also records that the journal
 * journal_id is stored up to upto (its position past frames[n-1]), so a
 * replay after a crash neither loses nor repeats anything.  journal_id NULL:
 * no position to record.  On STORE_FAILED *retry_at says when to call again.
 */
extern StoreResult store_frames(WsEvent **frames, int n, const char *journal_id, uint64 upto,
								TimestampTz *retry_at);
extern void store_prune(void);
extern bool store_prune_unfinished;

/* partitions.c: partitions ahead, retention by whole partitions */
extern int	partition_step_s(int interval_s, int retention_s);
extern Datum seconds_interval(int64 s);
extern void partitions_maintain(void);
extern TimestampTz partitions_next_drop;
extern bool store_function_exists(const char *signature);

/* before_triggers.c: can a BEFORE ROW INSERT trigger change the rows stored? */
extern bool events_before_row_triggers(const char *schema);

/* boundaries.c: which events are near a partition boundary (dedupe looks across) */
extern bool boundary_within(const TimestampTz *b, int n, TimestampTz r, int64 window_us);
extern void boundaries_refresh(const char *schema);
extern void boundaries_forget(void);
extern bool boundaries_near(TimestampTz r, int window_s);
extern const char *store_extension_schema(void);
extern void store_begin_work(void);
extern void store_end_work(void);

/*
 * SPI plans kept across transactions, for the installed extension's tables:
 * prepared and kept (an ERROR if SPI cannot), and freed, each pointer set to
 * NULL.  Used by store.c and position.c, which remake theirs whenever the
 * extension changes.
 */
extern SPIPlanPtr store_keep_plan(const char *sql, int nargs, Oid *types);
extern void store_free_plans(SPIPlanPtr **plans, int n);

/*
 * position.c: voipbin_journal, how far each journal is stored.  Each needs a
 * transaction and an SPI connection (store_begin_work()).
 */
typedef enum PositionState
{
	POSITION_READY,
	POSITION_NO_EXTENSION,		/* not installed in this database */
	POSITION_OLD_VERSION		/* installed at 1.0: ALTER EXTENSION voipbin UPDATE */
} PositionState;

extern PositionState position_ready(void);
extern void position_save(const char *journal_id, uint64 upto);	/* ERROR unless ready */
extern PositionState position_load(const char *journal_id, uint64 *upto,
								   TimestampTz *alive_at);
extern void position_alive(const char *journal_id);	/* ERROR unless ready */

/* subscriptions.c: the topics live on the current connection */
extern void subs_reset(void);
extern void subs_sync(void);
extern TimestampTz subs_next_deadline(void);
extern bool subs_promote_due(TimestampTz now);
extern void subs_connection_dropped(TimestampTz closed_at, const char *why);
extern int	subs_live_count(void);

#endif
