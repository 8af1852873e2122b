/*
 * request_queue.c — claiming due rows of voipbin_requests (request_queue.h).
 *
 * A claim is an UPDATE ... FOR UPDATE SKIP LOCKED over the partial index
 * of queued rows: a row a backend holds (voipbin_cancel_request() running)
 * is passed over, not waited for, and picked up at the next look.
 */
#include "voipbin.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "requests/request_queue.h"
#include "base/db.h"

const char *
request_queue_schema(void)
{
	Oid			ext;
	Oid			nsp;
	const char *schema = db_extension_schema(&ext);

	if (schema == NULL || !db_extension_row(ext, &nsp, NULL))
		return NULL;
	if (!OidIsValid(get_relname_relid("voipbin_requests", nsp)))
		return NULL;
	return schema;
}

static char *
text_column(HeapTuple tup, TupleDesc desc, int col)
{
	char	   *v = SPI_getvalue(tup, desc, col);

	return v;					/* NULL for SQL NULL */
}

List *
request_queue_claim(const char *schema, int n, MemoryContext cxt)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(n)};
	List	   *rows = NIL;
	int			rc;

	if (n <= 0)
		return NIL;
	rc = SPI_execute_with_args(psprintf("WITH claimed AS ("
										"UPDATE %s.voipbin_requests r "
										"SET state = 'sending', attempts = r.attempts + 1, sent_at = now() "
										"WHERE r.id IN (SELECT q.id FROM %s.voipbin_requests q "
										"WHERE q.state = 'queued' AND q.next_attempt_at <= now() "
										"ORDER BY q.next_attempt_at, q.id LIMIT $1 FOR UPDATE SKIP LOCKED) "
										"RETURNING r.id, r.method, r.path, r.body::text, r.created_at, "
										"r.attempts, r.next_attempt_at) "
										"SELECT id, method, path, body, created_at, attempts "
										"FROM claimed ORDER BY next_attempt_at, id",
										schema, schema),
							   1, types, values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "voipbin: claiming queued requests: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		RequestRow *r = palloc0(sizeof(RequestRow));
		bool		isnull;

		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		r->method = text_column(tup, desc, 2);
		r->path = text_column(tup, desc, 3);
		r->body = text_column(tup, desc, 4);
		r->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		r->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		r->kind = request_kind(r->method, r->path);
		rows = lappend(rows, r);
		MemoryContextSwitchTo(old);
	}
	return rows;
}

TimestampTz
request_queue_next_due(const char *schema)
{
	bool		isnull;
	Datum		d;
	int			rc;

	/* not read_only: that would keep the snapshot from before this transaction's own updates */
	rc = SPI_execute(psprintf("SELECT min(next_attempt_at) FROM %s.voipbin_requests WHERE state = 'queued'",
							  schema), false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "voipbin: reading when the next request is due: %s", SPI_result_code_string(rc));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

int64
request_queue_count(const char *schema)
{
	bool		isnull;
	int			rc;

	rc = SPI_execute(psprintf("SELECT count(*) FROM %s.voipbin_requests WHERE state = 'queued'",
							  schema), false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "voipbin: counting queued requests: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
