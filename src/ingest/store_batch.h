/*
 * store_batch.h — the storing of a batch of frames, shared by the worker
 * (store_frames()) and voipbin_retry_dead_letters() (dead_letters.c), so
 * that a retried dead letter goes through exactly what a received frame does:
 * classification, dedupe, handlers, NOTIFY at commit, the same bisection.
 */
#ifndef VOIPBIN_STORE_BATCH_H
#define VOIPBIN_STORE_BATCH_H

#include "voipbin.h"

#include "utils/elog.h"

#include "ingest/frame.h"
#include "net/journal/record.h"

typedef struct StoreBatch
{
	JournalRecord   **frames;
	int			n;
	const char **sources;		/* source of each frame, NULL: from JournalRecord.source */
	MemoryContext cxt;			/* where what follows lives: outlives the transaction */
	FrameEvent *fes;			/* classified frames (event_type NULL until then) */
	char	  **errors;			/* why frame i is a dead letter, NULL if it is none */
	int		   *codes;			/* its SQLSTATE when inserting it failed, else 0 */
	char	  **contexts;		/* and that error's context (which trigger, which handler) */
	bool	   *copies;			/* a copy of a dead letter still there: no second one */
	uint64		dead_copies;	/* how many, in the last attempt */
	bool		classified;
	uint64		stored;			/* rows inserted, in subtransactions kept or at top level */
	uint64		duplicates;
	uint64		dead;
} StoreBatch;

/* Allocates in CurrentMemoryContext, which must outlive the transactions it is used in. */
extern void store_batch_init(StoreBatch *b, JournalRecord **frames, int n);

/*
 * The rest needs a transaction with SPI connected (db_begin_work()).
 * store_plans_ready(): false when the extension is not installed here.
 */
extern bool store_plans_ready(void);

/* Frames that are no event (not JSON, not an object …) become dead letters here. */
extern void store_batch_classify(StoreBatch *b);

/*
 * Stores the classified frames that are no dead letter, in subtransactions:
 * the whole first (unless failure says it already failed so), then halves of
 * what fails, until each frame that cannot be stored is known and marked
 * (b->errors).  An error of the moment is raised: the caller's transaction
 * must then abort, nothing of the batch is kept.
 */
extern void store_batch_resolve(StoreBatch *b, ErrorData *failure);

/* A dead letter's error for a message past voipbin.max_frame_size: its real length, else 0. */
extern uint64 store_oversize_len(const char *error);

/* The received time as stored in received_at, and back. */

#endif
