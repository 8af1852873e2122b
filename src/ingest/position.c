/*
 * position.c — how far the journal is stored, kept in voipbin_journal.
 *
 * The row is written in the transaction that stores a batch, so a batch and
 * the claim that it is stored commit or vanish together: after a crash the
 * worker replays exactly what no commit covered (the model is a logical
 * replication slot's confirmed_flush_lsn).  A database still at 1.0 has no
 * such table; the worker then keeps the frames in the journal and says why.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "ingest/position.h"
#include "base/db.h"
#include "net/journal/journal.h"

static SPIPlanPtr save_plan = NULL;
static SPIPlanPtr load_plan = NULL;
static SPIPlanPtr alive_plan = NULL;
static Oid	plans_ext = InvalidOid;

static void
forget(void)
{
	SPIPlanPtr *plans[] = {&save_plan, &load_plan, &alive_plan};

	db_free_plans(plans, lengthof(plans));
	plans_ext = InvalidOid;
}

/*
 * Plans for the installed extension's table, made again whenever the
 * extension is (re)created or updated.  Needs a transaction and SPI.
 */
static PositionState
prepare(void)
{
	Oid			ext = db_extension_oid();
	const char *schema;
	int			rc;

	if (ext == plans_ext && OidIsValid(ext) && save_plan)
		return POSITION_READY;
	forget();
	schema = db_extension_schema(NULL);
	if (!OidIsValid(ext) || schema == NULL)
		return POSITION_NO_EXTENSION;
	rc = SPI_execute(psprintf("SELECT 1 FROM pg_catalog.pg_class c"
							  " JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
							  "  AND d.objid = c.oid AND d.deptype = 'e' AND d.refobjid = %u"
							  " WHERE c.relname = 'voipbin_journal'", ext), true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: looking for voipbin_journal failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return POSITION_OLD_VERSION;
	{
		Oid			types[] = {TEXTOID, INT8OID};

		save_plan = db_keep_plan(psprintf("INSERT INTO %s.voipbin_journal AS j (journal_id, stored_upto)"
								  " VALUES ($1, $2)"
								  " ON CONFLICT (journal_id) DO UPDATE"
								  " SET stored_upto = GREATEST(j.stored_upto, EXCLUDED.stored_upto),"
								  "     updated_at = pg_catalog.now()", schema),
						 2, types);
		load_plan = db_keep_plan(psprintf("SELECT stored_upto, alive_at FROM %s.voipbin_journal"
								  " WHERE journal_id = $1", schema),
						 1, types);
		alive_plan = db_keep_plan(psprintf("INSERT INTO %s.voipbin_journal AS j (journal_id, stored_upto, alive_at)"
								   " VALUES ($1, 0, pg_catalog.now())"
								   " ON CONFLICT (journal_id) DO UPDATE SET alive_at = EXCLUDED.alive_at",
								   schema),
						  1, types);
	}
	plans_ext = ext;
	return POSITION_READY;
}

PositionState
position_ready(void)
{
	return prepare();
}

void
position_save(const char *journal_id, uint64 upto)
{
	Datum		values[2];
	int			rc;

	if (prepare() != POSITION_READY)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("voipbin: the extension has no table voipbin_journal"),
				 errhint("Run ALTER EXTENSION voipbin UPDATE.")));
	values[0] = CStringGetTextDatum(journal_id);
	values[1] = Int64GetDatum((int64) upto);
	rc = SPI_execute_plan(save_plan, values, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "voipbin: recording the journal position failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * alive_at is the worker's last sign of life while connected (see
 * position_alive()): after a restart, where the outage began.
 */
PositionState
position_load(const char *journal_id, uint64 *upto, TimestampTz *alive_at)
{
	PositionState st = prepare();
	Datum		values[1];
	int			rc;

	*upto = 0;
	*alive_at = 0;
	if (st != POSITION_READY)
		return st;
	values[0] = CStringGetTextDatum(journal_id);
	rc = SPI_execute_plan(load_plan, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading the journal position failed: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			*upto = (uint64) DatumGetInt64(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
			*alive_at = DatumGetTimestampTz(d);
	}
	return POSITION_READY;
}

/*
 * The worker is connected: a restart that follows loses what VoIPBIN sends
 * from about now, so now is when such an outage would start.  A journal with
 * nothing stored yet gets its row here, stored up to 0 as loading assumed.
 */
void
position_alive(const char *journal_id)
{
	Datum		values[1];
	int			rc;

	if (prepare() != POSITION_READY)
		return;
	values[0] = CStringGetTextDatum(journal_id);
	rc = SPI_execute_plan(alive_plan, values, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "voipbin: recording that the worker is alive failed: %s",
			 SPI_result_code_string(rc));
}
