/*
 * partitions.c — the worker's upkeep of voipbin_events's partitions.
 *
 * The work itself is SQL, voipbin_maintain_partitions() (SECURITY DEFINER,
 * so that a worker running as voipbin.worker_role, which owns no table, can
 * still make and drop partitions): partitions for now and the next two
 * voipbin.partition_interval, the default partition's rows moved into
 * theirs, and whole partitions past voipbin.event_retention dropped.  Each
 * call is a transaction of its own, a few ranges of the default partition
 * each, so that no lock is held long.  A database still at 1.0 has no
 * partitions and no such function: nothing to do.
 *
 * The table's size under retention swings by one partition: it holds
 * retention's worth of rows just after a drop and one interval more just
 * before the next.  So a partition is never longer than a quarter of the
 * retention (with a 3-minute retention and the default 1-day interval, one
 * partition would otherwise hold everything and only the batched deletes
 * would keep up), and the worker comes back when the oldest partition
 * becomes due rather than at its next minute.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "maintenance/partitions.h"
#include "base/db.h"
#include "base/settings.h"
#include "base/time.h"
#include "ingest/boundaries.h"

/* Calls after which the rest of the default partition waits for the next pass. */
#define MAINTAIN_CALLS 25

/*
 * One call of voipbin_maintain_partitions(); true when it says there is more
 * to move.  *next_drop: when the oldest partition becomes due, 0 if none.
 */
static bool
maintain_once(int *created, int *dropped, TimestampTz *next_drop)
{
	bool		more = false;
	const char *schema;

	db_begin_work();
	schema = db_extension_schema(NULL);
	if (schema != NULL)
	{
		if (db_function_exists(psprintf("%s.voipbin_maintain_partitions(interval,interval)",
										   schema)))
		{
			Oid			types[2] = {INTERVALOID, INTERVALOID};
			Datum		values[2];
			bool		isnull;
			int			rc;

			values[0] = seconds_interval(partition_step_s(voipbin_partition_interval_s,
														  voipbin_event_retention_s));
			values[1] = seconds_interval(Max(voipbin_event_retention_s, 0));
			rc = SPI_execute_with_args(psprintf("SELECT created, dropped, more, next_drop"
												" FROM %s.voipbin_maintain_partitions($1, $2)",
												schema),
									   2, types, values, NULL, false, 1);
			if (rc != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "voipbin: voipbin_maintain_partitions() failed: %s",
					 SPI_result_code_string(rc));
			*created += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
			*dropped += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
			more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 3, &isnull));
			*next_drop = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 4, &isnull));
			if (isnull)
				*next_drop = 0;
		}
	}
	db_end_work();
	boundaries_forget();
	return more;
}

/*
 * Errors propagate: the worker runs this through voipbin_guarded().  Returns
 * when to come back for the next partition due (0: none).
 */
TimestampTz
partitions_maintain(void)
{
	int			created = 0;
	int			dropped = 0;
	TimestampTz next_drop = 0;

	for (int call = 0; call < MAINTAIN_CALLS; call++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!maintain_once(&created, &dropped, &next_drop))
			break;
	}
	if (created > 0 || dropped > 0)
		ereport(DEBUG1,
				(errmsg_plural("voipbin: %d partition of voipbin_events made, %d dropped past voipbin.event_retention",
							   "voipbin: %d partitions of voipbin_events made, %d dropped past voipbin.event_retention",
							   created,
							   created, dropped)));
	return next_drop;
}
