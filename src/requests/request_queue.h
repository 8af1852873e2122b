/*
 * request_queue.h — voipbin_requests as the worker reads and claims it:
 * where the table is, the due rows taken in queue order, when the next one
 * is due, how many wait.  Each needs the caller's transaction (db_begin_work).
 */
#ifndef VOIPBIN_REQUEST_QUEUE_H
#define VOIPBIN_REQUEST_QUEUE_H

#include "postgres.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "requests/request_rules.h"

/* A request the worker took to send (state 'sending' once claimed). */
typedef struct RequestRow
{
	int64		id;
	char	   *method;
	char	   *path;
	char	   *body;			/* the jsonb as JSON text, or NULL */
	TimestampTz created_at;
	int			attempts;		/* counting the one under way */
	RequestKind kind;
} RequestRow;

/*
 * The installed extension's schema (quoted) when it has voipbin_requests
 * (1.2 on), else NULL: an older or absent extension queues nothing.
 */
extern const char *request_queue_schema(void);

/*
 * Takes at most n due queued rows, oldest due first, and marks them
 * 'sending' (attempts + 1, sent_at); a list of RequestRow * in queue order,
 * allocated in cxt.  The caller commits before any of them is sent, so a
 * crash never forgets that a request may have left.
 */
extern List *request_queue_claim(const char *schema, int n, MemoryContext cxt);

/* The earliest next_attempt_at of a queued row; DT_NOEND when none. */
extern TimestampTz request_queue_next_due(const char *schema);

/* How many rows are queued (not counting those sending). */
extern int64 request_queue_count(const char *schema);

#endif
