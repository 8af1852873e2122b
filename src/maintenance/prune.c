/*
 * prune.c — retention row by row: events and dead letters past
 * voipbin.event_retention deleted in small batches, each its own
 * transaction, so that no lock is held for long.  Whole partitions past
 * retention are dropped by partitions.c; this trims the partition at the
 * edge and the default one.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "maintenance/prune.h"
#include "base/db.h"
#include "base/settings.h"
#include "base/time.h"

/* A pass stops after this long, with rows still due: the worker comes back soon. */
#define PRUNE_PASS_MS 2000
/* Rows are deleted a minute after they are due: a partition due is dropped whole meanwhile. */
#define PRUNE_GRACE_S 60

static Oid	plans_ext_oid = InvalidOid;
static SPIPlanPtr prune_events_plan = NULL;
static SPIPlanPtr prune_dead_plan = NULL;

/* The plans for the installed extension; false when it is not installed. */
static bool
plans_ready(void)
{
	Oid			ext;
	const char *schema = db_extension_schema(&ext);

	if (schema != NULL && ext == plans_ext_oid)
		return true;
	{
		SPIPlanPtr *plans[] = {&prune_events_plan, &prune_dead_plan};

		db_free_plans(plans, lengthof(plans));
		plans_ext_oid = InvalidOid;
	}
	if (schema == NULL)
		return false;
	{
		Oid			types[] = {INTERVALOID};

		/*
		 * small batches by the received_at index: no long locks.  Whole
		 * partitions past retention are dropped (partitions.c); this trims
		 * the one at the edge and the default one, which the condition on
		 * received_at leaves alone to be scanned.  By ctid, which is unique
		 * only within a partition: a row of another one with the same ctid
		 * is past retention too.  $1 is the retention and a minute's grace:
		 * a partition that becomes due is dropped within it, and deleting its
		 * rows first would only cost WAL and dead tuples.
		 */
		prune_events_plan = db_keep_plan(psprintf(
											   "DELETE FROM %s.voipbin_events"
											   " WHERE received_at < now() - $1 AND ctid = ANY (ARRAY("
											   "  SELECT ctid FROM %s.voipbin_events"
											   "  WHERE received_at < now() - $1 LIMIT 1000))",
											   schema, schema), 1, types);
		prune_dead_plan = db_keep_plan(psprintf(
											 "DELETE FROM %s.voipbin_dead_letters WHERE id IN"
											 " (SELECT id FROM %s.voipbin_dead_letters"
											 "  WHERE received_at < now() - $1 ORDER BY received_at LIMIT 1000)",
											 schema, schema), 1, types);
	}
	plans_ext_oid = ext;
	return true;
}

/*
 * A pass is bounded in time, not in rows, so that retention keeps up with
 * any rate the worker can store at: true says that it stopped with rows
 * still due, and the worker comes back soon rather than in a minute.
 * Errors propagate: the worker runs this through voipbin_guarded().
 */
bool
prune_step(void)
{
	Datum		events_cutoff[1];
	Datum		dead_cutoff[1];
	bool		more = true;
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PRUNE_PASS_MS);

	if (voipbin_event_retention_s <= 0)
		return false;
	events_cutoff[0] = seconds_interval((int64) voipbin_event_retention_s + PRUNE_GRACE_S);
	dead_cutoff[0] = seconds_interval(voipbin_event_retention_s);
	while (more)
	{
		uint64		deleted = 0;

		if (GetCurrentTimestamp() >= until)
		{
			return true;
		}
		db_begin_work();
		if (plans_ready())
		{
			SPI_execute_plan(prune_events_plan, events_cutoff, NULL, false, 0);
			deleted += SPI_processed;
			SPI_execute_plan(prune_dead_plan, dead_cutoff, NULL, false, 0);
			deleted += SPI_processed;
		}
		db_end_work();
		more = deleted > 0;
		CHECK_FOR_INTERRUPTS();
	}
	return false;
}
