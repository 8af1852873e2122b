/*
 * request_outcome.h — what an attempt at a request came to, written on its
 * row of voipbin_requests: done, failed, unknown (each with a NOTIFY
 * voipbin_requests in the same transaction), or queued again for later.
 */
#ifndef VOIPBIN_REQUEST_OUTCOME_H
#define VOIPBIN_REQUEST_OUTCOME_H

#include "postgres.h"

#include "base/loop_http.h"
#include "requests/request_queue.h"
#include "requests/request_rules.h"

/*
 * Judges the answer r to the attempt at row (request_rules.h) and writes the
 * verdict on the row, in the caller's transaction: VERDICT_RETRY when the
 * row is queued again, else the state it ended in.
 */
extern RequestVerdict request_outcome_record(const char *schema, const RequestRow *row,
											 const LhResult *r);

/*
 * Ends row id in final state (done, failed or unknown) with status (0: none)
 * and error, and queues its notification: the one way a request finishes.
 */
extern void request_outcome_finish(const char *schema, int64 id, RequestVerdict final,
								   int status, const char *error);

/* The counter of voipbin_status() that a request ending so adds to. */
extern void request_outcome_count(RequestVerdict final);

#endif
