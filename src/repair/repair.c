/*
 * repair.c — after an outage, what VoIPBIN sent meanwhile comes back over REST.
 *
 * VoIPBIN has no "events since T" (docs/voipbin.md, "The REST reads gap repair uses"), only current state, so a
 * repair rebuilds the events from the resources (same section):
 *   1. the topics are sent first (gaps.c starts a repair only then), so what
 *      changes from now on arrives live;
 *   2. GET /calls from the head, newest-created first, until past the
 *      outage's start minus REPAIR_MARGIN_S: new calls and recent changes;
 *   3. GET /calls/{id} for each call not settled before the outage ("When a call is settled")
 *      and not seen in the walk: 409 is a deleted call, 404 a gone one;
 *   4. for each call that changed: its transcribes, their transcripts (one
 *      request each: the endpoint ignores its page token, so following it
 *      would loop), its recordings, and its timeline for the intermediate
 *      states.
 * Every object fetched goes into the journal as if it had arrived on the
 * WebSocket, with source 'rest': the same classification and dedupe (what
 * the live stream also delivered is not stored twice), handlers and NOTIFY.
 *
 * All of it runs in the worker's loop through repair_http.c, a step at a
 * time: the live stream is never kept waiting, and no PostgreSQL call is
 * made from inside libcurl.  A repair that cannot finish (401, 5xx, no
 * answer) says so in voipbin_gaps.error and is tried again with backoff; a
 * newer outage takes it over, reaching back to the older one's start.
 */
#include "voipbin.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "repair/repair.h"
#include "base/backoff.h"
#include "base/db.h"
#include "base/endpoint.h"
#include "base/settings.h"
#include "base/status.h"
#include "net/http/http_client.h"
#include "net/journal/journal.h"
#include "repair/repair_http.h"
#include "repair/repair_job.h"
#include "repair/repair_walk.h"

static const char *abandon_why = NULL;

/* 5 s, doubling with each attempt, at most 5 min. */
static long
retry_delay_ms(int attempt)
{
	return (long) backoff_delay_ms(REPAIR_BACKOFF_MS, REPAIR_BACKOFF_MAX_MS, attempt, 0);
}

static int64
newest_gap(void)
{
	return *(int64 *) llast(repair_job.gap_ids);
}

/*
 * Outcomes not yet written on their gap rows (gaps.c writes them), oldest
 * first, in their own context: a job's context is reset by the next job.
 */
static MemoryContext outcome_cxt = NULL;
static MemoryContext answer_cxt = NULL;	/* one answer of VoIPBIN's and what it made, reset after it */
static List *outcomes = NIL;

/*
 * Gaps recorded while an attempt runs wait here for the next job, which
 * reaches back to the earliest of them.  The running attempt goes on: were
 * each new gap to start the walk again, outages closer together than a
 * repair takes would never see one finish (a 30-minute chaos run saw none
 * finish, its repair reaching back ever further).  What the new gaps cost
 * may postdate what the running attempt read, hence a job of their own.
 */
static int64 *next_ids = NULL;
static TimestampTz *next_starts = NULL;
static int	n_next = 0,
			max_next = 0;

static void
queue_next(int64 gap_id, TimestampTz started_at)
{
	if (n_next == max_next)
	{
		max_next = max_next ? max_next * 2 : 16;
		next_ids = next_ids ? repalloc(next_ids, sizeof(int64) * max_next) :
			MemoryContextAlloc(TopMemoryContext, sizeof(int64) * max_next);
		next_starts = next_starts ? repalloc(next_starts, sizeof(TimestampTz) * max_next) :
			MemoryContextAlloc(TopMemoryContext, sizeof(TimestampTz) * max_next);
	}
	next_ids[n_next] = gap_id;
	next_starts[n_next] = started_at;
	n_next++;
}

static void add_outcome(int64 gap_id, bool repaired, int64 events, const char *error);

/*
 * The gaps queued while the last attempt ran join the job: the next attempt
 * (after a failure) or the next job (after the last one ended).
 */
static void
take_queued(void)
{
	int			n = n_next;

	n_next = 0;
	for (int i = 0; i < n; i++)
		repair_start(next_ids[i], next_starts[i]);
}

/* The queued gaps will not be repaired either (the job was given up for why). */
static void
drop_queued(const char *why)
{
	for (int i = 0; i < n_next; i++)
		add_outcome(next_ids[i], false, 0, why);
	n_next = 0;
}

static void
add_outcome(int64 gap_id, bool repaired, int64 events, const char *error)
{
	MemoryContext old;
	RepairOutcome *o;

	if (outcome_cxt == NULL)
		outcome_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin repair outcomes",
											ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(outcome_cxt);
	o = palloc0(sizeof(RepairOutcome));
	o->gap_id = gap_id;
	o->repaired = repaired;
	o->events_repaired = events;
	o->error = error ? pstrdup(error) : NULL;
	outcomes = lappend(outcomes, o);
	MemoryContextSwitchTo(old);
}

/* The outcome for every gap of the job; the older ones were taken over. */
static void
record_outcome(bool repaired, int64 events, const char *error)
{
	ListCell   *lc;
	int64		newest = newest_gap();

	foreach(lc, repair_job.gap_ids)
	{
		int64		id = *(int64 *) lfirst(lc);

		if (id == newest)
			add_outcome(id, repaired, events, error);
		else
			add_outcome(id, repaired, 0,
						psprintf("%s%srepaired together with gap %lld",
								 error ? error : "", error ? "; " : "",
								 (long long) newest));
	}
}

const RepairOutcome *
repair_outcome_next(void)
{
	return outcomes != NIL ? (const RepairOutcome *) linitial(outcomes) : NULL;
}

void
repair_outcome_done(void)
{
	RepairOutcome *o;

	if (outcomes == NIL)
		return;
	o = linitial(outcomes);
	outcomes = list_delete_first(outcomes);
	if (o->error)
		pfree(o->error);
	pfree(o);
}

static void
begin_attempt(void)
{
	const char *schema;
	char	   *cred_error = NULL;
	CredentialKind kind;
	char	   *cred;
	const char *error;
	Endpoint	ep;

	MemoryContextReset(attempt_cxt);
	repair_job.walked = repair_job.open_calls = repair_job.changed = repair_job.again = NIL;
	repair_job.pages = 0;
	repair_job.list_done = false;
	repair_job.fatal = NULL;
	repair_job.deleted = repair_job.gone = repair_job.denied = repair_job.lost = 0;
	repair_job.last_pos = 0;
	resetStringInfo(&repair_job.notes);
	repair_job.attempt++;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema == NULL)
	{
		db_end_work();
		repair_job.fatal = "the extension is not installed in voipbin.database";
		return;
	}
	if (!repair_job.have_first_id)
	{
		bool		isnull;
		Datum		d;

		if (SPI_execute(psprintf("SELECT coalesce(max(id), 0) FROM %s.voipbin_events", schema),
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "voipbin: reading the last event id failed");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		repair_job.first_event_id = DatumGetInt64(d);
		repair_job.have_first_id = true;
	}
	repair_walk_load(schema);
	db_end_work();

	cred = credential_load(&kind, &cred_error);
	if (cred == NULL)
	{
		repair_job.fatal = MemoryContextStrdup(attempt_cxt, cred_error ? cred_error : "no credential");
		return;
	}
	if (!endpoint_parse(voipbin_api_url ? voipbin_api_url : "", &ep, &error) ||
		!rh_configure(voipbin_api_url, cred, kind, voipbin_ca_file, &error))
	{
		repair_job.fatal = MemoryContextStrdup(attempt_cxt, error);
		http_wipe(cred);
		return;
	}
	http_wipe(cred);
	ereport(LOG,
			(errmsg_plural("voipbin: repairing gap %lld (attempt %d): reading VoIPBIN's calls since %s, and %d call not settled",
						   "voipbin: repairing gap %lld (attempt %d): reading VoIPBIN's calls since %s, and %d calls not settled",
						   list_length(repair_job.open_calls),
						   (long long) newest_gap(), repair_job.attempt, timestamptz_to_str(repair_job.since),
						   list_length(repair_job.open_calls))));
	if (repair_job.topics == NIL)
	{
		/* nothing would have come live: nothing to read back */
		repair_note("no topic is subscribed");
		repair_job.list_done = true;
		repair_job.phase = JOB_DRAINING;
		repair_job.drain_until = GetCurrentTimestamp();
		return;
	}
	repair_walk_begin();
	repair_job.phase = JOB_RUNNING;
}

static void
attempt_failed(void)
{
	TimestampTz now = GetCurrentTimestamp();
	const char *why = repair_job.fatal;
	char	   *error;

	rh_cancel_all();
	rh_close_idle();
	if (repair_job.attempt >= REPAIR_MAX_ATTEMPTS)
	{
		error = psprintf("repair failed, gave up after %d attempts: %s", repair_job.attempt, why);
		repair_job.phase = JOB_IDLE;
	}
	else
	{
		long		ms = retry_delay_ms(repair_job.attempt);

		error = psprintf("repair failed (attempt %d, next in %ld s): %s", repair_job.attempt, ms / 1000, why);
		repair_job.retry_at = TimestampTzPlusMilliseconds(now, ms);
		repair_job.phase = JOB_BEGIN;
	}
	ereport(LOG, (errmsg("voipbin: gap %lld: %s", (long long) newest_gap(), error)));
	record_outcome(false, 0, error);
	take_queued();
}

static void
finish_job(void)
{
	const char *schema;
	int64		events = 0;
	char	   *error;

	if (repair_job.deleted)
		repair_note(repair_job.deleted == 1 ?
					"%d call deleted meanwhile (VoIPBIN answers 409: its last state cannot be read)" :
					"%d calls deleted meanwhile (VoIPBIN answers 409: their last state cannot be read)",
					repair_job.deleted);
	if (repair_job.gone)
		repair_note(repair_job.gone == 1 ? "%d call or recording no longer exists (404)" :
					"%d calls or recordings no longer exist (404)", repair_job.gone);
	if (repair_job.denied)
		repair_note(repair_job.denied == 1 ? "%d object refused (403)" : "%d objects refused (403)",
					repair_job.denied);
	if (repair_job.lost)
		repair_note(repair_job.lost == 1 ?
					"%d object fetched could not be journaled (voipbin.spool_limit)" :
					"%d objects fetched could not be journaled (voipbin.spool_limit)", repair_job.lost);
	error = repair_job.notes.len > 0 ? psprintf("partial: %s", repair_job.notes.data) : NULL;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		Oid			types[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(repair_job.first_event_id)};
		bool		isnull;

		if (SPI_execute_with_args(psprintf("SELECT count(*) FROM %s.voipbin_events"
										   " WHERE id > $1 AND source = 'rest'", schema),
								  1, types, values, NULL, true, 1) == SPI_OK_SELECT)
			events = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	db_end_work();
	rh_close_idle();
	record_outcome(true, events, error);
	ereport(LOG,
			(errmsg_plural("voipbin: gap %lld repaired: %lld event stored from %d %s of calls and %d %s read%s%s",
						   "voipbin: gap %lld repaired: %lld events stored from %d %s of calls and %d %s read%s%s",
						   events,
						   (long long) newest_gap(), (long long) events,
						   repair_job.pages, repair_job.pages == 1 ? "page" : "pages",
						   list_length(repair_job.changed),
						   list_length(repair_job.changed) == 1 ? "call" : "calls",
						   error ? "; " : "", error ? error : "")));
	repair_job.phase = JOB_IDLE;
	take_queued();
}

void
repair_abandon(const char *why)
{
	abandon_why = why;
}

/* Gives the running repair up, if it was asked to; its gaps say why. */
static void
abandon_if_asked(void)
{
	const char *why = abandon_why;

	abandon_why = NULL;
	if (why == NULL || repair_cxt == NULL || repair_job.phase == JOB_IDLE)
		return;
	rh_cancel_all();
	rh_close_idle();
	repair_job.phase = JOB_IDLE;
	record_outcome(false, 0, why);
	drop_queued(why);
}

void
repair_start(int64 gap_id, TimestampTz started_at)
{
	TimestampTz since = TimestampTzPlusMilliseconds(started_at, -REPAIR_MARGIN_S * 1000);
	MemoryContext old;
	int64	   *idp;

	abandon_if_asked();
	if (repair_cxt != NULL && (repair_job.phase == JOB_RUNNING || repair_job.phase == JOB_DRAINING))
	{
		queue_next(gap_id, started_at);
		return;
	}
	if (repair_cxt == NULL)
	{
		repair_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin repair", ALLOCSET_DEFAULT_SIZES);
		memset(&repair_job, 0, sizeof(repair_job));
	}
	if (repair_job.phase == JOB_IDLE)
	{
		/* a fresh job: everything of the last one goes (its attempt context too) */
		MemoryContextReset(repair_cxt);
		attempt_cxt = AllocSetContextCreate(repair_cxt, "voipbin repair attempt", ALLOCSET_DEFAULT_SIZES);
		memset(&repair_job, 0, sizeof(repair_job));
		old = MemoryContextSwitchTo(repair_cxt);
		initStringInfo(&repair_job.notes);
		MemoryContextSwitchTo(old);
		repair_job.since = since;
	}
	else
	{
		/* a newer outage joins the job waiting for its next attempt, and reaches back as far */
		repair_job.since = Min(repair_job.since, since);
		repair_job.attempt = 0;
	}
	old = MemoryContextSwitchTo(repair_cxt);
	idp = palloc(sizeof(int64));
	*idp = gap_id;
	repair_job.gap_ids = lappend(repair_job.gap_ids, idp);
	MemoryContextSwitchTo(old);
	repair_job.phase = JOB_BEGIN;
	repair_job.retry_at = 0;
}

/*
 * Whether everything the repair journaled is stored: the journal's stored
 * position (committed with each batch) has passed the last record, or
 * without a journal on file, nothing waits to be stored.
 */
static bool
journaled_is_stored(void)
{
	const char *jid = journal_id();
	const char *schema;
	bool		stored = false;

	if (repair_job.last_pos == 0)
		return true;
	if (jid == NULL)
		return pg_atomic_read_u64(&voipbin_shared->buffered_bytes) == 0 &&
			__atomic_load_n(&voipbin_shared->network_backlog, __ATOMIC_RELAXED) == 0;
	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(jid)};

		if (SPI_execute_with_args(psprintf("SELECT stored_upto FROM %s.voipbin_journal WHERE journal_id = $1",
										   schema), 1, types, values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			stored = !isnull && (uint64) DatumGetInt64(d) >= repair_job.last_pos;
		}
	}
	db_end_work();
	return stored;
}

/*
 * One answer, freed whatever happens, with all it allocated: its parsed body
 * and the text of each object journaled.  What outlives it (the requests it
 * asks, the ids it remembers, a note, the fatal error) is put in the
 * attempt's context by the function that keeps it.  Before, the answer's
 * scraps lived in the attempt's context to its end, and a repair reading
 * back some hundreds of calls held tens of megabytes past
 * voipbin.buffer_limit (a long chaos run under a heavier load found it).
 */
static void
handle(RhResult *r)
{
	MemoryContext old;

	if (answer_cxt == NULL)
		answer_cxt = AllocSetContextCreate(TopMemoryContext, "voipbin repair answer",
										   ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(answer_cxt);
	PG_TRY();
	{
		repair_walk_answer(r);
	}
	PG_CATCH();
	{
		rh_result_free(r);
		MemoryContextSwitchTo(old);
		MemoryContextReset(answer_cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	rh_result_free(r);
	MemoryContextSwitchTo(old);
	MemoryContextReset(answer_cxt);
}

static long
drive(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout;
	long		again_ms;
	RhResult   *r;

	abandon_if_asked();
	if (repair_job.phase == JOB_IDLE)
		return rh_step();		/* nothing runs; news of an idle socket is read */
	if (!voipbin_repair)
	{
		rh_cancel_all();
		rh_close_idle();
		repair_job.fatal = NULL;
		record_outcome(false, 0, "not repaired: voipbin.repair was turned off");
		drop_queued("not repaired: voipbin.repair was turned off");
		repair_job.phase = JOB_IDLE;
		return -1;
	}
	if (repair_job.phase == JOB_BEGIN)
	{
		if (now < repair_job.retry_at)
			return TimestampDifferenceMilliseconds(now, repair_job.retry_at) + 1;
		begin_attempt();
		if (repair_job.fatal)
		{
			attempt_failed();
			return -1;
		}
	}
	if (repair_job.phase == JOB_DRAINING)
	{
		/* what was journaled is stored in the loop's next rounds */
		if (journaled_is_stored() || now >= repair_job.drain_until)
		{
			finish_job();
			return repair_job.phase == JOB_BEGIN ? 0 : -1;
		}
		return 20;
	}

	again_ms = repair_walk_ask_again();
	/* answers queue new requests, which the next round may start at once */
	for (int round = 0; round < 8; round++)
	{
		bool		any = false;

		timeout = rh_step();
		while (repair_job.fatal == NULL && (r = rh_take()) != NULL)
		{
			any = true;
			handle(r);
		}
		if (!any || repair_job.fatal)
			break;
	}
	if (repair_job.fatal)
	{
		attempt_failed();
		return -1;
	}
	if (rh_outstanding() == 0 && repair_job.again != NIL)
		return again_ms >= 0 ? again_ms : 0;
	if (rh_outstanding() == 0)
	{
		if (!repair_job.list_done)
		{
			repair_set_fatal("the walk of GET /calls ended without an answer");
			attempt_failed();
			return -1;
		}
		repair_job.phase = JOB_DRAINING;
		repair_job.drain_until = TimestampTzPlusMilliseconds(now, REPAIR_DRAIN_MS);
		return 0;
	}
	if (again_ms >= 0 && (timeout < 0 || again_ms < timeout))
		return again_ms;
	return timeout;
}

/* An error in the middle of a repair: this attempt fails, the next one comes later. */
void
repair_step_failed(void)
{
	if (repair_cxt != NULL && repair_job.phase != JOB_IDLE && repair_job.gap_ids != NIL)
	{
		rh_cancel_all();
		repair_job.fatal = NULL;
		repair_job.retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), retry_delay_ms(repair_job.attempt));
		repair_job.phase = repair_job.attempt >= REPAIR_MAX_ATTEMPTS ? JOB_IDLE : JOB_BEGIN;
		take_queued();
	}
}

bool
repair_running(void)
{
	return repair_cxt != NULL && repair_job.phase != JOB_IDLE;
}

long
repair_step(void)
{
	if (repair_cxt == NULL)
		return -1;
	return drive();
}

