/*
 * position.h — voipbin_journal: how far each journal is stored, saved in the transaction that stores its frames.
 */
#ifndef VOIPBIN_INGEST_POSITION_H
#define VOIPBIN_INGEST_POSITION_H

#include "postgres.h"
#include "datatype/timestamp.h"

#include "net/journal/journal.h"

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

#endif
