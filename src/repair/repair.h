/*
 * repair.h — gaps in the live stream: recorded in voipbin_gaps (gaps.c), and
 * read back over REST after each reconnection (repair.c, through the paced,
 * non-blocking client of repair_http.c).  All of it runs on the worker's main
 * thread, inside its loop: nothing here blocks.
 */
#ifndef VOIPBIN_REPAIR_H
#define VOIPBIN_REPAIR_H

#include "voipbin.h"

#include "nodes/pg_list.h"

/* ---- worker.c's hooks ---- */

/* The live connection is gone (closed_at: when the close was seen). */
extern void gaps_connection_lost(TimestampTz closed_at, const char *why);

/*
 * This worker starts where an earlier one, connected until about alive_at,
 * stopped (a crash, a restart of the server or of the worker).
 */
extern void gaps_worker_restarted(TimestampTz alive_at);

/*
 * The credential, URL or CA file changed: the outage under way, if any, is
 * recorded but not repaired (the new connection may be another account).
 */
extern void gaps_config_changed(void);

/* An overflow of the journal ended: count frames lost between first and last. */
extern void gaps_overflow(TimestampTz first, TimestampTz last, uint64 count);

/* The topics were sent on a new connection: an outage, if any, is over. */
extern void gaps_resubscribed(void);

/*
 * Does what is due (writes gap rows, watches the journal's lost frames,
 * drives a running repair); returns how many ms the loop may sleep, -1 for
 * as long as it likes.  Errors are caught and logged here.
 */
extern long repair_step(void);

/* A descriptor to wait on for readability (curl's sockets), or -1. */
extern int	repair_wait_fd(void);

/* ---- between gaps.c and repair.c ---- */

#define NOT_REPAIRED_CONFIG \
	"not repaired: the credential, voipbin.api_url or voipbin.ca_file changed since the outage"

/*
 * The repair under way, if any, is given up (the configuration changed: the
 * connection may now be another account's); its gaps say why.
 */
extern void repair_abandon(const char *why);

/* A gap row was written: repair it (it supersedes a repair still running). */
extern void repair_start(int64 gap_id, TimestampTz started_at);

/* Writes a repair's outcome on its gap row; errors propagate. */
extern void gaps_record_outcome(int64 gap_id, bool repaired, int64 events_repaired,
								const char *error);

/* Writes the gap rows that wait; errors propagate. */
extern long gaps_step(void);

#endif
