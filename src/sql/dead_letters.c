/*
 * dead_letters.c — voipbin_retry_dead_letters(): dead letters stored again.
 *
 * For the user who fixed a handler or a trigger and wants its events back.
 * The frames go through the worker's own code (store_batch.h): classified,
 * deduplicated, their handlers run, NOTIFYs sent when the caller commits,
 * bad frames found by the same bisection; source and received_at are kept.
 * It runs in the calling backend, in the caller's transaction and with the
 * caller's privileges.  An error of the moment (a deadlock, a lock timeout)
 * is the caller's error: nothing changes, the call can simply be repeated.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "base/db.h"
#include "base/time.h"
#include "ingest/frame.h"
#include "ingest/store_batch.h"
#include "net/journal/journal.h"
#include "net/journal/record.h"

/* Like the worker's batches: enough to amortise a statement, bounded in memory. */
#define RETRY_MAX_FRAMES 2000
#define RETRY_MAX_BYTES (8 * 1024 * 1024)

static int
source_of(const char *name)
{
	if (strcmp(name, journal_source_name(JOURNAL_SRC_WEBHOOK)) == 0)
		return JOURNAL_SRC_WEBHOOK;
	if (strcmp(name, journal_source_name(JOURNAL_SRC_REST)) == 0)
		return JOURNAL_SRC_REST;
	return JOURNAL_SRC_WEBSOCKET;
}

/*
 * Stores the dead letters ids[0..n) that still exist, locking them first so
 * that two calls never store one twice.  Returns how many were removed
 * because their event is now in voipbin_events.
 */
static uint64
retry_chunk(const char *schema, Datum *ids, int n)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		arg[1];
	Oid			argtype[1] = {INT8ARRAYOID};
	int64	   *row_ids;
	JournalRecord    *evs;
	JournalRecord   **frames;
	const char **sources;
	StoreBatch	b;
	int			m;
	int			done = 0;
	Datum	   *stored;
	int			rc;

	arg[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = SPI_execute_with_args(psprintf("SELECT id, received_at, source, raw, error"
										" FROM %s.voipbin_dead_letters"
										" WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
										" ORDER BY id FOR UPDATE", schema),
							   1, argtype, arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: reading dead letters failed: %s", SPI_result_code_string(rc));
	m = (int) SPI_processed;
	if (m == 0)
		return 0;
	MemoryContextSwitchTo(cxt);	/* SPI left us in its own context */

	/* out of SPI's result, which the next statement frees */
	row_ids = palloc(sizeof(int64) * m);
	evs = palloc0(sizeof(JournalRecord) * m);
	frames = palloc(sizeof(JournalRecord *) * m);
	sources = palloc(sizeof(char *) * m);
	for (int i = 0; i < m; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bytea	   *raw;
		Datum		error;
		Datum		source;

		row_ids[i] = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		evs[i].at_us = time_unix_us(DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull)));
		source = SPI_getbinval(tup, desc, 3, &isnull);
		sources[i] = isnull ? journal_source_name(JOURNAL_SRC_WEBSOCKET) : TextDatumGetCString(source);
		evs[i].source = (uint8_t) source_of(sources[i]);
		raw = DatumGetByteaPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		evs[i].len = VARSIZE(raw) - VARHDRSZ;
		evs[i].data = VARDATA(raw);
		error = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
		{
			char	   *why = TextDatumGetCString(error);

			/*
			 * The table keeps neither the opcode nor a cut message's length;
			 * the worker's errors for them do, so the retry refuses them alike.
			 */
			evs[i].binary = strcmp(why, FRAME_BINARY_ERROR) == 0;
			evs[i].oversize_len = store_oversize_len(why);
		}
		frames[i] = &evs[i];
	}
	SPI_freetuptable(SPI_tuptable);

	MemoryContextSwitchTo(cxt);
	store_batch_init(&b, frames, m);
	b.sources = sources;
	store_batch_classify(&b);
	store_batch_resolve(&b, NULL);

	stored = palloc(sizeof(Datum) * m);
	for (int i = 0; i < m; i++)
	{
		if (b.errors[i] == NULL)
		{
			stored[done++] = Int64GetDatum(row_ids[i]);
			continue;
		}
		{
			Datum		args[2] = {Int64GetDatum(row_ids[i]), CStringGetTextDatum(b.errors[i])};
			Oid			types[2] = {INT8OID, TEXTOID};

			rc = SPI_execute_with_args(psprintf("UPDATE %s.voipbin_dead_letters SET error = $2"
												" WHERE id OPERATOR(pg_catalog.=) $1", schema),
									   2, types, args, NULL, false, 0);
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "voipbin: updating a dead letter failed: %s", SPI_result_code_string(rc));
		}
	}
	if (done > 0)
	{
		arg[0] = PointerGetDatum(construct_array(stored, done, INT8OID, 8, FLOAT8PASSBYVAL,
												 TYPALIGN_DOUBLE));
		rc = SPI_execute_with_args(psprintf("DELETE FROM %s.voipbin_dead_letters"
											" WHERE id OPERATOR(pg_catalog.=) ANY ($1)", schema),
								   1, argtype, arg, NULL, false, 0);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "voipbin: removing dead letters failed: %s", SPI_result_code_string(rc));
	}
	return (uint64) done;
}

/*
 * voipbin_retry_dead_letters(ids bigint[] DEFAULT NULL) RETURNS bigint:
 * stores the given dead letters again (all of them when ids is NULL), in id
 * order, as many at a time as the worker would; removes those whose event is
 * now stored (or was already: a duplicate), keeps the others with their new
 * error.  Returns how many were removed.
 */
PG_FUNCTION_INFO_V1(voipbin_retry_dead_letters);
Datum
voipbin_retry_dead_letters(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	const char *schema;
	Datum		arg[1];
	Oid			argtype[1] = {INT8ARRAYOID};
	char		nulls[1] = {' '};
	int			rc;
	int			total;
	int64	   *ids;
	int32	   *sizes;
	uint64		removed = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "voipbin: SPI_connect failed");
	if (!store_plans_ready() || (schema = db_extension_schema(NULL)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("voipbin: the extension is not installed in this database")));
	schema = pstrdup(schema);

	/* which ones, and how big, so that a chunk stays within RETRY_MAX_BYTES */
	if (PG_ARGISNULL(0))
		nulls[0] = 'n';
	else
		arg[0] = PG_GETARG_DATUM(0);
	rc = SPI_execute_with_args(psprintf("SELECT id, pg_catalog.octet_length(raw)"
										" FROM %s.voipbin_dead_letters"
										" WHERE $1 IS NULL OR id OPERATOR(pg_catalog.=) ANY ($1)"
										" ORDER BY id", schema),
							   1, argtype, arg, nulls, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: listing dead letters failed: %s", SPI_result_code_string(rc));
	total = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(total, 1));
	sizes = palloc(sizeof(int32) * Max(total, 1));
	for (int i = 0; i < total; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		sizes[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	chunk_cxt = AllocSetContextCreate(CurrentMemoryContext, "voipbin_retry_dead_letters",
									  ALLOCSET_DEFAULT_SIZES);
	for (int start = 0; start < total;)
	{
		Datum		chunk[RETRY_MAX_FRAMES];
		int			n = 0;
		int64		bytes = 0;
		MemoryContext old;

		while (start + n < total && n < RETRY_MAX_FRAMES &&
			   (n == 0 || bytes + sizes[start + n] <= RETRY_MAX_BYTES))
		{
			bytes += sizes[start + n];
			chunk[n] = Int64GetDatum(ids[start + n]);
			n++;
		}
		old = MemoryContextSwitchTo(chunk_cxt);
		removed += retry_chunk(schema, chunk, n);
		MemoryContextSwitchTo(old);
		MemoryContextReset(chunk_cxt);
		start += n;
		CHECK_FOR_INTERRUPTS();
	}

	SPI_finish();
	MemoryContextSwitchTo(outer);
	PG_RETURN_INT64((int64) removed);
}
