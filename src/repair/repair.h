/*
 * repair.h — repairing a gap: the calls, transcripts and recordings VoIPBIN can give back, read over REST after a reconnection, paced and non-blocking, into the journal.
 */
#ifndef VOIPBIN_REPAIR_REPAIR_H
#define VOIPBIN_REPAIR_REPAIR_H

#include "postgres.h"
#include "datatype/timestamp.h"

#define NOT_REPAIRED_CONFIG \
	"not repaired: the credential, voipbin.api_url or voipbin.ca_file changed since the outage"

/* What became of the repair of one gap: written on its row by gaps.c. */
typedef struct RepairOutcome
{
	int64		gap_id;
	bool		repaired;
	int64		events_repaired;
	char	   *error;			/* NULL: none */
} RepairOutcome;

/* A gap row was written: repair it (it supersedes a repair still running). */
extern void repair_start(int64 gap_id, TimestampTz started_at);

/*
 * The repair under way, if any, is given up (the configuration changed: the
 * connection may now be another account's); its gaps say why.
 */
extern void repair_abandon(const char *why);

/*
 * Drives the repair under way (non-blocking); returns how many ms the loop
 * may sleep, -1 for as long as it likes.  Errors propagate.
 */
extern long repair_step(void);

/* Whether a repair is under way: an attempt running, draining, or waited for. */
extern bool repair_running(void);

/* An error escaped gaps_step(): this attempt fails, the next comes later. */
extern void repair_step_failed(void);

/*
 * The oldest outcome not yet written on its gap row, or NULL; the caller
 * writes it, then calls repair_outcome_done().  An outcome stays until then,
 * so a failed write is tried again.
 */
extern const RepairOutcome *repair_outcome_next(void);
extern void repair_outcome_done(void);

#endif
