/*
 * gaps.h — gaps in the live stream: recorded in voipbin_gaps, handed to repair, and their outcome written back.
 */
#ifndef VOIPBIN_REPAIR_GAPS_H
#define VOIPBIN_REPAIR_GAPS_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * The live connection is gone (closed_at: when the close was seen); after an
 * idle timeout, quiet since its last frame or pong (0: not known).
 */
extern void gaps_connection_lost(TimestampTz closed_at, bool idle_timeout, TimestampTz quiet_since);

/*
 * This worker starts where an earlier one, connected until about alive_at,
 * stopped (a crash, a restart of the server or of the worker).
 */
extern void gaps_worker_restarted(TimestampTz alive_at);

/*
 * True while an outage is under way or a gap waits to be written: a worker
 * that died now would leave it unrecorded, so alive_at must not move past it.
 */
extern bool gaps_unrecorded(void);

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
 * Writes the gap rows that wait, starts their repair, records the outcomes
 * of repairs that ended, and drives the one under way; returns how many ms
 * the loop may sleep, -1 for as long as it likes.  Errors are caught and
 * logged here.
 */
extern long gaps_step(void);

#endif
