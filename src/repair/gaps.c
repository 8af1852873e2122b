/*
 * gaps.c — every outage of the live stream becomes a row of voipbin_gaps.
 *
 * VoIPBIN keeps no history for a WebSocket client: what it publishes while
 * the connection is down is gone, so the least the worker owes its users is
 * to say when that happened.  An outage starts when the connection is lost
 * (its last sign of life) and ends when the topics are sent again on a new
 * connection; a run of failed handshakes in between is one outage.  A worker
 * that starts where a connected one stopped (a crash, a restart) begins with
 * an outage of cause "restart" from the other's last sign of life.  Frames
 * the journal could not keep (voipbin_status().frames_lost) are a gap too:
 * the journal reports each overflow once it ends, with its first and last
 * arrival times.
 *
 * Rows are written from the worker's loop when the database takes them; until
 * then they wait here, so a gap is recorded even if it ended while the
 * database was unavailable.  Each row written starts a repair (repair.c).
 */
#include "voipbin.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "repair/gaps.h"
#include "base/db.h"
#include "base/guard.h"
#include "base/settings.h"
#include "base/time.h"
#include "base/status.h"
#include "repair/repair.h"

/* Gap rows that may wait for the database; past it the oldest is only logged. */
#define MAX_WAITING 100
#define RETRY_MS 1000

typedef struct WaitingGap
{
	TimestampTz started_at;
	TimestampTz ended_at;
	const char *cause;			/* "outage", "restart" or "overflow" */
	int64		frames_lost;
	const char *not_repaired;	/* why it will not be repaired, or NULL */
} WaitingGap;

static TimestampTz outage_started = 0;	/* 0: connected, or never was */
static const char *outage_cause = "outage";
static bool outage_config_changed = false;
static WaitingGap waiting[MAX_WAITING];
static int	n_waiting = 0;
static TimestampTz retry_at = 0;
static bool adopted = false;	/* the gaps an earlier worker left: taken over */

static void
wait_for_row(TimestampTz started_at, TimestampTz ended_at, const char *cause, int64 lost,
			 const char *not_repaired)
{
	if (n_waiting == MAX_WAITING)
	{
		ereport(LOG,
				(errmsg("voipbin: a gap from %s to %s could not be recorded: too many wait for the database",
						pstrdup(timestamptz_to_str(waiting[0].started_at)),
						pstrdup(timestamptz_to_str(waiting[0].ended_at)))));
		memmove(&waiting[0], &waiting[1], sizeof(WaitingGap) * (MAX_WAITING - 1));
		n_waiting--;
	}
	waiting[n_waiting].started_at = started_at;
	waiting[n_waiting].ended_at = Max(ended_at, started_at);
	waiting[n_waiting].cause = cause;
	waiting[n_waiting].frames_lost = lost;
	waiting[n_waiting].not_repaired = not_repaired;
	n_waiting++;
	retry_at = 0;
}

/*
 * The connection's last sign of life: the close itself, unless the close is
 * the idle timeout, which fires idle_timeout after the last frame or pong
 * (quiet_since, from the WebSocket thread, which saw them).  The cause comes
 * as a flag, not read from the words of the close, and the time from the
 * socket, not from the last frame taken from the journal, which may be a
 * webhook's: both were once so, and a frozen connection's gap began at its
 * close or at a webhook's arrival, the seconds before it lost unrecorded.
 */
void
gaps_connection_lost(TimestampTz closed_at, bool idle_timeout, TimestampTz quiet_since)
{
	TimestampTz started = closed_at;

	if (outage_started != 0)
		return;					/* still the same outage */
	if (idle_timeout)
	{
		started = TimestampTzPlusMilliseconds(closed_at, -(int64) voipbin_idle_timeout_s * 1000);
		if (quiet_since != 0)
			started = quiet_since;
		started = Min(started, closed_at);
	}
	outage_started = started;
	outage_cause = "outage";
	outage_config_changed = false;
}

void
gaps_worker_restarted(TimestampTz alive_at)
{
	if (outage_started != 0 || alive_at == 0)
		return;
	outage_started = Min(alive_at, GetCurrentTimestamp());
	outage_cause = "restart";
	outage_config_changed = false;
}

bool
gaps_unrecorded(void)
{
	return outage_started != 0 || n_waiting > 0;
}

void
gaps_config_changed(void)
{
	if (outage_started != 0)
		outage_config_changed = true;
	repair_abandon(NOT_REPAIRED_CONFIG);
}

void
gaps_resubscribed(void)
{
	if (outage_started == 0)
		return;
	wait_for_row(outage_started, GetCurrentTimestamp(), outage_cause, 0,
				 outage_config_changed ? NOT_REPAIRED_CONFIG : NULL);
	outage_started = 0;
	outage_cause = "outage";
	outage_config_changed = false;
}

void
gaps_overflow(TimestampTz first, TimestampTz last, uint64 count)
{
	wait_for_row(first, last, "overflow", (int64) count, NULL);
}

/* Writes one waiting row; false when the extension cannot take it yet. */
static bool
write_row(const WaitingGap *g, int64 *id)
{
	const char *schema;
	bool		ok = false;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema &&
		SPI_execute(psprintf("SELECT to_regclass('%s.voipbin_gaps') IS NOT NULL", schema),
					true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (ok)
	{
		Oid			types[5] = {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, INT8OID, TEXTOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
		bool		isnull;

		values[0] = TimestampTzGetDatum(g->started_at);
		values[1] = TimestampTzGetDatum(g->ended_at);
		values[2] = CStringGetTextDatum(g->cause);
		values[3] = Int64GetDatum(g->frames_lost);
		if (g->not_repaired)
			values[4] = CStringGetTextDatum(g->not_repaired);
		else if (!voipbin_repair)
			values[4] = CStringGetTextDatum("not repaired: voipbin.repair is off");
		else
			nulls[4] = 'n';
		if (SPI_execute_with_args(psprintf("INSERT INTO %s.voipbin_gaps"
										   " (started_at, ended_at, cause, frames_lost, error)"
										   " VALUES ($1, $2, $3, $4, $5) RETURNING id", schema),
								  5, types, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "voipbin: inserting a gap failed");
		*id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	db_end_work();
	return ok;
}

/*
 * The gaps an earlier worker recorded but did not finish repairing (it
 * crashed, was killed or stopped while a repair ran or waited to be tried
 * again): the repair's state lived only in its memory.  Left alone, their rows
 * would say "next in 5 s" for ever, and what they lost before this worker's
 * own gap began would never come back (found by test/chaos, seed 1).  They
 * are taken over by this worker's first repair, which then reaches back to
 * the oldest of them; their rows end "repaired together with gap N".
 */
static void
adopt_unfinished(void)
{
	const char *schema;
	int64	   *ids = NULL;
	TimestampTz *starts = NULL;
	int			n = 0;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		if (SPI_execute(psprintf("SELECT id, started_at FROM %s.voipbin_gaps"
								 " WHERE repaired_at IS NULL"
								 " AND (error IS NULL OR (error NOT LIKE 'not repaired%%'"
								 "  AND error NOT LIKE 'repair failed, gave up%%'))"
								 " ORDER BY started_at, id", schema), true, 0) != SPI_OK_SELECT)
			elog(ERROR, "voipbin: reading the gaps left unrepaired failed");
		n = (int) SPI_processed;
		if (n > 0)
		{
			ids = MemoryContextAlloc(TopMemoryContext, sizeof(int64) * n);
			starts = MemoryContextAlloc(TopMemoryContext, sizeof(TimestampTz) * n);
		}
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
			starts[i] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2,
														  &isnull));
		}
	}
	db_end_work();
	for (int i = 0; i < n; i++)
	{
		ereport(LOG,
				(errmsg("voipbin: gap %lld, left unrepaired by an earlier worker, is repaired with this worker's first gap",
						(long long) ids[i])));
		repair_start(ids[i], starts[i]);
	}
	if (n > 0)
	{
		pfree(ids);
		pfree(starts);
	}
}

/* Writes the gap rows that wait, and starts their repair; errors propagate. */
static long
write_waiting(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = -1;

	if (n_waiting == 0)
		return timeout;
	if (now < retry_at)
		return TimestampDifferenceMilliseconds(now, retry_at) + 1;

	while (n_waiting > 0)
	{
		WaitingGap	g = waiting[0];
		int64		id;

		/* a failure propagates; the row stays first in line */
		retry_at = TimestampTzPlusMilliseconds(now, RETRY_MS);
		/* once per worker, before its first repair: what an earlier one left */
		if (!adopted && voipbin_repair && g.not_repaired == NULL)
		{
			adopt_unfinished();
			adopted = true;
		}
		if (!write_row(&g, &id))
			return RETRY_MS;
		memmove(&waiting[0], &waiting[1], sizeof(WaitingGap) * (n_waiting - 1));
		n_waiting--;
		retry_at = 0;

		SpinLockAcquire(&voipbin_shared->mutex);
		voipbin_shared->last_gap_at = Max(voipbin_shared->last_gap_at, g.started_at);
		SpinLockRelease(&voipbin_shared->mutex);
		ereport(LOG,
				(errmsg("voipbin: gap %lld recorded: %s from %s to %s%s",
						(long long) id, g.cause,
						pstrdup(timestamptz_to_str(g.started_at)), pstrdup(timestamptz_to_str(g.ended_at)),
						g.not_repaired ? " (not repaired)" :
						voipbin_repair ? "" : " (voipbin.repair is off)")));
		if (voipbin_repair && g.not_repaired == NULL)
			repair_start(id, g.started_at);
	}
	return timeout;
}

/* Writes a repair's outcome on its gap row; errors propagate. */
static void
write_outcome(int64 gap_id, bool repaired, int64 events_repaired, const char *error)
{
	const char *schema;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema)
	{
		Oid			types[4] = {INT8OID, BOOLOID, INT8OID, TEXTOID};
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		values[0] = Int64GetDatum(gap_id);
		values[1] = BoolGetDatum(repaired);
		values[2] = Int64GetDatum(events_repaired);
		if (error)
			values[3] = CStringGetTextDatum(error);
		else
			nulls[3] = 'n';
		SPI_execute_with_args(psprintf("UPDATE %s.voipbin_gaps"
									   " SET repaired_at = CASE WHEN $2 THEN now() END,"
									   " events_repaired = $3, error = $4"
									   " WHERE id = $1", schema),
							  4, types, values, nulls, false, 0);
	}
	db_end_work();
}

static void
write_waiting_step(void *arg)
{
	*(long *) arg = write_waiting();
}

static void
repair_step_step(void *arg)
{
	*(long *) arg = repair_step();
}

static void
write_outcome_step(void *arg)
{
	const RepairOutcome *o = arg;

	write_outcome(o->gap_id, o->repaired, o->events_repaired, o->error);
}

long
gaps_step(void)
{
	long		rows = -1;
	long		repair = -1;
	const RepairOutcome *o;

	if (!voipbin_guarded(write_waiting_step, &rows, "recording a gap"))
		rows = RETRY_MS;
	if (!voipbin_guarded(repair_step_step, &repair, "gap repair"))
	{
		repair_step_failed();
		repair = RETRY_MS;
	}
	while ((o = repair_outcome_next()) != NULL)
	{
		/* an outcome not written stays first in line */
		if (!voipbin_guarded(write_outcome_step, (void *) o, "recording a gap's repair"))
		{
			repair = time_shorter_ms(repair, RETRY_MS);
			break;
		}
		repair_outcome_done();
	}
	return time_shorter_ms(rows, repair);
}
