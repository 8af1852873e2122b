/*
 * request_worker.c — the worker's step for voipbin_requests (request_worker.h).
 *
 * Each pass, cheap when idle: the engine moves on; finished attempts are
 * taken; then, only when something is to be written or may be due, one
 * transaction records the outcomes, claims what may leave now (no more than
 * the pace lets leave at once, so a claimed row waits in no queue of ours),
 * and reads when the next row is due.  The claim commits before the requests
 * are handed to the engine: a crash after it leaves them 'sending', which the
 * next worker reads as "may have been sent" (request_recover.c).
 *
 * Rows are looked for when voipbin_request() committed (requests_changed),
 * when the earliest queued row is due, and once a minute whatever happens
 * (a row queued by other means, an extension created or updated meanwhile);
 * old finished rows are deleted at that minute too.
 */
#include "voipbin.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "requests/request_worker.h"
#include "base/backoff.h"
#include "base/db.h"
#include "base/guard.h"
#include "base/loop_http.h"
#include "base/status.h"
#include "base/time.h"
#include "requests/request_outcome.h"
#include "requests/request_queue.h"
#include "requests/request_recover.h"
#include "requests/request_retention.h"
#include "requests/request_send.h"

#define POLL_EVERY_MS 60000
/*
 * While requests are in flight, a transaction at most this often: the
 * outcomes that came meanwhile are written, and what may leave until the
 * next is claimed, together (a transaction per request cost the storing of
 * events a tenth of its pace at 17 requests a second).  A claimed row
 * waits in the engine up to this long for its turn.
 */
#define PASS_EVERY_MS 100
#define RETENTION_AGAIN_MS 1000		/* a full batch was deleted: more are due */
#define FAILED_MIN_MS 1000			/* the last transaction failed: wait, doubling ... */
#define FAILED_MAX_MS 60000			/* ... to a minute (a missing grant fails every time) */
#define NOTHING_CLAIMED_MS 1000		/* due rows there, none claimable (locked by a backend) */

/* A finished attempt, kept until its outcome is written. */
typedef struct Finished
{
	RequestRow *row;
	LhResult   *result;
} Finished;

static struct
{
	MemoryContext cxt;			/* the rows in flight and the finished attempts */
	bool		recovered;		/* the rows a stopped worker left 'sending' are dealt with */
	bool		look;			/* due rows may be waiting */
	TimestampTz next_due;		/* the earliest queued row's next_attempt_at; DT_NOEND: none */
	TimestampTz next_poll;		/* the once-a-minute look and retention */
	TimestampTz failed_until;	/* no transaction before, after a failed one */
	TimestampTz last_pass;		/* the last transaction's start */
	int			failures;		/* transactions failed in a row */
	List	   *finished;		/* Finished *, not written yet */
	int			in_flight;		/* rows handed to the engine, results not taken */
} rw = {NULL, false, true, 0, 0, 0, 0, 0, NIL, 0};

/* What one transaction does; filled before, read after. */
typedef struct Pass
{
	int			claim;			/* at most this many rows to claim */
	bool		retention;
	bool		count;			/* rows were queued: voipbin_status() counts them even when none is sent */
	/* results */
	bool		has_table;
	List	   *claimed;
	int			counts[4];		/* by RequestVerdict: what finished */
	bool		more_retention;
} Pass;

static void
recover(void *arg)
{
	const char *schema;

	db_begin_work();
	schema = request_queue_schema();
	if (schema != NULL)
	{
		int			unknown = request_recover(schema);

		for (int i = 0; i < unknown; i++)
			request_outcome_count(VERDICT_UNKNOWN);
	}
	db_end_work();
}

static void
run_pass(void *arg)
{
	Pass	   *p = arg;
	const char *schema;
	ListCell   *lc;

	db_begin_work();
	schema = request_queue_schema();
	p->has_table = schema != NULL;
	if (schema != NULL)
	{
		foreach(lc, rw.finished)
		{
			Finished   *f = lfirst(lc);

			p->counts[request_outcome_record(schema, f->row, f->result)]++;
		}
		if (p->claim > 0)
			p->claimed = request_queue_claim(schema, p->claim, rw.cxt);
		/* after the outcomes too: one sent again later is due then */
		rw.next_due = request_queue_next_due(schema);
		if (p->retention)
			p->more_retention = request_retention_step(schema);
		pg_atomic_write_u64(&voipbin_shared->requests_queued,
							(uint64) request_queue_count(schema) + rw.in_flight +
							list_length(p->claimed));
	}
	db_end_work();
}

static void
request_row_free(RequestRow *row)
{
	pfree(row->method);
	pfree(row->path);
	if (row->body)
		pfree(row->body);
	pfree(row);
}

static void
forget_finished(void)
{
	ListCell   *lc;

	foreach(lc, rw.finished)
	{
		Finished   *f = lfirst(lc);

		lh_result_free(f->result);
		request_row_free(f->row);
	}
	list_free_deep(rw.finished);
	rw.finished = NIL;
}

/* The engine's finished attempts, kept until written. */
static void
take_results(void)
{
	LhResult   *r;

	while ((r = request_send_take()) != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(rw.cxt);
		Finished   *f = palloc(sizeof(Finished));

		f->row = (RequestRow *) r->tag;
		f->result = r;
		rw.finished = lappend(rw.finished, f);
		rw.in_flight--;
		MemoryContextSwitchTo(old);
	}
}

static long
ms_until(TimestampTz now, TimestampTz t)
{
	if (t == DT_NOEND)
		return -1;
	if (t <= now)
		return 0;
	return (long) ((t - now + 999) / 1000);
}

/* A transaction failed (and said why in the log): the next one waits, longer each time. */
static void
note_failure(TimestampTz now)
{
	rw.failures++;
	rw.failed_until = TimestampTzPlusMilliseconds(now, backoff_delay_ms(FAILED_MIN_MS, FAILED_MAX_MS,
																		rw.failures, 0.0));
}

long
request_worker_step(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Pass		p = {0};
	long		timeout;
	ListCell   *lc;

	if (rw.cxt == NULL)
	{
		rw.cxt = AllocSetContextCreate(TopMemoryContext, "voipbin requests", ALLOCSET_SMALL_SIZES);
		rw.next_due = DT_NOEND;
	}
	/* nothing of ours in it: whatever a failed pass left behind goes */
	if (rw.in_flight == 0 && rw.finished == NIL)
		MemoryContextReset(rw.cxt);
	if (rw.in_flight + list_length(rw.finished) > 0 &&
		now < TimestampTzPlusMilliseconds(rw.last_pass, PASS_EVERY_MS))
	{
		/* the engine goes on; the next transaction comes at its time */
		timeout = request_send_step();
		take_results();
		return time_shorter_ms(timeout, ms_until(now, TimestampTzPlusMilliseconds(rw.last_pass, PASS_EVERY_MS)));
	}
	if (pg_atomic_exchange_u32(&voipbin_shared->requests_changed, 0))
		rw.look = p.count = true;
	if (now >= rw.next_due)
		rw.look = true;
	if (now >= rw.next_poll)
	{
		rw.look = true;
		p.retention = true;
	}
	if (now < rw.failed_until)
	{
		/* transfers go on; their outcomes are written once a transaction may run */
		timeout = request_send_step();
		take_results();
		return time_shorter_ms(timeout, ms_until(now, rw.failed_until));
	}
	if (!rw.recovered)
	{
		/* before any claim: a row claimed now must not be taken for one left behind */
		if (!voipbin_guarded(recover, NULL, "recovering the requests left sending"))
		{
			note_failure(now);
			return ms_until(now, rw.failed_until);
		}
		rw.recovered = true;
	}

	timeout = request_send_step();
	take_results();

	if (rw.look && request_send_ready())
		p.claim = request_send_capacity(PASS_EVERY_MS);
	if (rw.finished != NIL || p.claim > 0 || p.retention || p.count)
	{
		if (p.claim > 0)
			rw.look = false;	/* unless the claim below says more wait */
		rw.last_pass = now;
		if (voipbin_guarded(run_pass, &p, "sending requests"))
		{
			rw.failures = 0;
			forget_finished();
			for (int v = 0; v < 4; v++)
				for (int i = 0; i < p.counts[v]; i++)
					request_outcome_count((RequestVerdict) v);
			if (p.claim > 0 && list_length(p.claimed) == p.claim)
				rw.look = true;
			else if (p.claim > 0 && rw.next_due <= now)
				rw.next_due = TimestampTzPlusMilliseconds(now, NOTHING_CLAIMED_MS);
			if (p.retention)
				rw.next_poll = TimestampTzPlusMilliseconds(now, p.more_retention ?
														   RETENTION_AGAIN_MS : POLL_EVERY_MS);
			foreach(lc, p.claimed)
			{
				request_send_submit((RequestRow *) lfirst(lc));
				rw.in_flight++;
			}
			list_free(p.claimed);
			if (p.claimed != NIL)
				timeout = request_send_step();
			if (!p.has_table)
				rw.next_due = DT_NOEND;
		}
		else
		{
			/* rolled back: nothing claimed, the outcomes are written next time */
			rw.look = true;
			note_failure(now);
			if (p.retention)
				rw.next_poll = TimestampTzPlusMilliseconds(now, POLL_EVERY_MS);
		}
	}

	if (rw.finished != NIL)
		timeout = time_shorter_ms(timeout, ms_until(now, Max(now, rw.failed_until)));
	if (rw.look && request_send_ready())
		timeout = time_shorter_ms(timeout, request_send_next_ms());
	/* one already due is rw.look's: the pace above says when */
	if (rw.next_due > now)
		timeout = time_shorter_ms(timeout, ms_until(now, rw.next_due));
	timeout = time_shorter_ms(timeout, ms_until(now, rw.next_poll));
	return timeout;
}

bool
request_worker_busy(void)
{
	return rw.in_flight > 0 || rw.finished != NIL;
}

void
request_worker_reloaded(void)
{
	request_send_reloaded();
	rw.look = true;
	/* a new voipbin.request_retention applies at once */
	rw.next_poll = 0;
}
