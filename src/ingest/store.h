/*
 * store.h — journal records stored as events, duplicates or dead letters, in one transaction with the journal position.
 */
#ifndef VOIPBIN_INGEST_STORE_H
#define VOIPBIN_INGEST_STORE_H

#include "postgres.h"
#include "datatype/timestamp.h"

#include "net/journal/journal.h"
#include "net/journal/record.h"

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
extern StoreResult store_frames(JournalRecord **frames, int n, const char *journal_id, uint64 upto,
								TimestampTz *retry_at);

#endif
